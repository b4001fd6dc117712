"""Long loops whose length the caller chose show progress and can be interrupted (issue 12).

Attack steps, EOT draws and queries, gradient_snr and randomness_check repeats: the bar counts
the forward passes actually made, appears on its own only after a few seconds, and a
KeyboardInterrupt in the middle leaves the model, its noise and the global RNG as they were.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from neurovar import _progress as progress_policy
from neurovar._validation import InvalidParameterError
from neurovar.noise import IsotropicNoise, inject_noise
from neurovar.perturb import FGSM, PGD, Square, TargetedPGD, gradient_snr, randomness_check
from neurovar.perturb import _utils as putils
from neurovar.perturb import attacks as attacks_mod
from neurovar.perturb.attacks import _base as attacks_base


def _model(n_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, n_classes)
    ).train()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(5, 1, 4, 4, generator=gen), torch.tensor([0, 1, 2, 0, 1])


class _Counter:
    """Forward hook counting the model's forward calls."""

    def __init__(self, model: nn.Module) -> None:
        self.n = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, *_: object) -> None:
        self.n += 1


def _spy_bars(monkeypatch, *modules) -> list:
    """The progress bars ``modules`` create from now on (kept after they are closed)."""
    made = []

    def spy(**kwargs):
        bar = putils.progress_bar(**kwargs)
        made.append(bar)
        return bar

    for module in modules:
        monkeypatch.setattr(module, "progress_bar", spy)
    return made


@pytest.fixture
def bars(monkeypatch):
    """The progress bars the attacks create."""
    return _spy_bars(monkeypatch, attacks_base)  # Attack.__call__ makes the bar


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda m: FGSM(m, eps=0.1, eot_samples=3, eot_batch=1, rng=0), 3),
        (lambda m: PGD(m, eps=0.1, steps=4, rng=0), 4 + 1),  # + the final score
        (lambda m: PGD(m, eps=0.1, steps=4, eot_samples=3, eot_batch=1, rng=0), 12),
        # 3 classes: 2 target classes, not the 3 asked for
        (lambda m: TargetedPGD(m, eps=0.1, steps=2, eot_samples=2, eot_batch=1, rng=0), 2 + 2 * 4),
    ],
)
def test_bar_counts_every_forward_pass(bars, make, expected):
    model = _model()
    x, y = _batch()
    counter = _Counter(model)
    make(model)(x, y)
    (bar,) = bars
    assert counter.n == expected
    assert bar.n == expected
    assert bar.total == expected  # TargetedPGD corrects its plan to the classes it has


def test_folded_draws_count_as_passes(bars):
    """EOT draws folded into one batch (eot_batch=4) count as 4 passes in one forward call."""
    model = _model()
    x, y = _batch()
    counter = _Counter(model)
    PGD(model, eps=0.1, steps=3, eot_samples=4, eot_batch=4, rng=0)(x, y)
    assert counter.n == 3
    assert bars[0].n == bars[0].total == 12


def test_square_bar_stops_early_within_its_plan(bars):
    model = _model()
    x, y = _batch()
    Square(model, eps=0.3, n_queries=200, rng=0)(x, y)
    (bar,) = bars
    assert bar.total == 200
    assert 1 <= bar.n <= 200


def test_default_bar_waits_then_shows(monkeypatch, capsys):
    model = _model()
    x, y = _batch()
    PGD(model, eps=0.1, steps=3, rng=0)(x, y)  # default progress=None, a short call
    assert capsys.readouterr().err == ""
    PGD(model, eps=0.1, steps=3, rng=0, progress=True)(x, y)
    assert "PGD" in capsys.readouterr().err
    monkeypatch.setattr(progress_policy, "AUTO_PROGRESS_DELAY_S", 0.0)  # as if it had run long
    PGD(model, eps=0.1, steps=3, rng=0)(x, y)
    assert "PGD" in capsys.readouterr().err
    PGD(model, eps=0.1, steps=3, rng=0, progress=False)(x, y)
    assert capsys.readouterr().err == ""


def test_progress_does_not_change_the_result():
    model = _model()
    x, y = _batch()
    a = PGD(model, eps=0.1, steps=3, eot_samples=2, rng=0)(x, y)
    b = PGD(model, eps=0.1, steps=3, eot_samples=2, rng=0, progress=True)(x, y)
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", ["yes", 1, 0.5])
def test_progress_must_be_bool_or_none(bad):
    model = _model()
    x, y = _batch()
    with pytest.raises(InvalidParameterError, match="'progress' parameter of PGD must be True, False or None"):
        PGD(model, eps=0.1, progress=bad)(x, y)
    with pytest.raises(InvalidParameterError, match="'progress' parameter of gradient_snr"):
        gradient_snr(model, x, y, progress=bad)
    with pytest.raises(InvalidParameterError, match="'progress' parameter of randomness_check"):
        randomness_check(model, x, progress=bad)


def test_interrupt_restores_model_noise_and_rng(bars):
    """Ctrl-C in the middle of a 10**12-step attack: the caller gets everything back."""
    model = _model()
    noise = IsotropicNoise(0.5, rng=7)
    inject_noise(model, {"2": noise})
    x, y = _batch()
    torch_state = torch.get_rng_state()
    state = noise.get_rng_state()
    noise_draw_before = noise(torch.zeros(1, 24))
    noise.set_rng_state(state)
    calls = {"n": 0}

    def interrupt(*_):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt

    hook = model.register_forward_hook(interrupt)
    attack = PGD(model, eps=0.1, steps=10**12, eot_samples=2, rng=0)
    with pytest.raises(KeyboardInterrupt):
        attack(x, y)
    hook.remove()
    # its bar is closed, and the same object runs again
    (bar,) = bars
    assert bar.n == 49 and bar.disable  # tqdm marks a closed bar disabled
    attack.steps = 2
    assert attack(x, y).shape == x.shape
    assert calls["n"] == 50
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert torch.equal(noise(torch.zeros(1, 24)), noise_draw_before)
    assert putils.CURRENT_BAR.get() is None  # the interrupted call's bar is not left current


def test_gradient_snr_refuses_repeats_that_cannot_fit():
    model = _model()
    x, y = _batch()
    counter = _Counter(model)
    with pytest.raises(
        InvalidParameterError, match="'n_repeats' parameter of gradient_snr must be small enough"
    ):
        gradient_snr(model, x, y, n_repeats=10**12)
    with pytest.raises(
        InvalidParameterError,
        match="'n_repeats' parameter of randomness_check must be small enough",
    ):
        randomness_check(model, x, n_repeats=10**12)
    assert counter.n <= 1  # refused before the loop (randomness_check needs one pass to size it)


def test_diagnostic_bars_count_passes(monkeypatch):
    from neurovar.perturb import _stochastic, diagnostics

    made = _spy_bars(monkeypatch, diagnostics, _stochastic)
    model = _model()
    x, y = _batch()
    counter = _Counter(model)
    gradient_snr(model, x, y, eot_samples=(1, 3), n_repeats=4, rng=0)
    assert made[-1].n == made[-1].total == counter.n == 4 * (1 + 3)
    counter.n = 0
    randomness_check(model, x, n_repeats=5, rng=0)
    assert made[-1].n == made[-1].total == counter.n == 5


def test_huge_eot_starts_running_at_once():
    """eot_samples=10**12 runs (and can be stopped) instead of first listing its chunks."""
    model = _model()
    x, y = _batch()
    calls = {"n": 0}

    def interrupt(*_):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt

    model.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        FGSM(model, eps=0.1, eot_samples=10**12, rng=0)(x, y)
    assert calls["n"] == 20


def test_auto_eot_fold_is_bounded_on_cuda():
    """Folding on CUDA is capped, so eot_samples=10**12 never tries one 10**12-fold batch;
    (resolve_eot_batch only reads the device type: no GPU is needed to check the rule)."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert attacks_mod.resolve_eot_batch("auto", 10**12, cuda) == attacks_mod.CUDA_EOT_BATCH_MAX
    assert attacks_mod.resolve_eot_batch("auto", 8, cuda) == 8
    assert attacks_mod.resolve_eot_batch("auto", 10**12, cpu) == attacks_mod.CPU_EOT_BATCH
    assert attacks_mod.resolve_eot_batch(5, 3, cpu) == 3
    assert list(putils.chunk_sizes(10, 4)) == [4, 4, 2]
    assert next(iter(putils.chunk_sizes(10**12, 1))) == 1


def test_numpy_false_means_no_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress_policy, "AUTO_PROGRESS_DELAY_S", 0.0)
    model = _model()
    x, y = _batch()
    PGD(model, eps=0.1, steps=3, rng=0, progress=np.False_)(x, y)
    assert capsys.readouterr().err == ""


def test_one_attack_object_in_two_threads():
    """The bar belongs to the call, not to the object: two threads share one attack."""
    model = _model().eval()
    x, y = _batch()
    attack = PGD(model, eps=0.1, steps=30, rng=0, progress=True)
    reference = attack(x, y)
    results, errors = [None, None], []

    def work(i):
        try:
            results[i] = attack(x, y)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(torch.equal(r, reference) for r in results)


def test_evaluate_robustness_false_silences_the_attacks(monkeypatch, capsys):
    from neurovar.perturb import evaluate_robustness

    monkeypatch.setattr(progress_policy, "AUTO_PROGRESS_DELAY_S", 0.0)  # every automatic bar shows
    model = _model().eval()
    x, y = _batch()
    kw = dict(eps=[0.1], attacks=["pgd_ce"], steps=2, rng=0)
    evaluate_robustness(model, x, y, progress=False, **kw)
    assert capsys.readouterr().err == ""
    evaluate_robustness(model, x, y, **kw)  # None: the automatic bars, the attacks' included
    err = capsys.readouterr().err
    assert "evaluate_robustness" in err and "PGD" in err
    PGD(model, eps=0.1, steps=2, rng=0)(x, y)  # outside the call: automatic again
    assert "PGD" in capsys.readouterr().err
