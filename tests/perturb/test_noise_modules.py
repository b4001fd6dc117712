"""Attacks, evaluation and twins on models with :mod:`neurovar.noise` modules injected.

Those modules draw from their own seeded generators (not the global torch RNG), in eval mode
too: the attack must still see the noise, be reproducible from its ``rng``, and give the
module's stream back untouched; the twins must remove / freeze that noise as well.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neurovar.noise import suspend_noise
from neurovar.perturb import (
    FGSM,
    PGD,
    FrozenNoiseTwin,
    NoiseFreeTwin,
    Square,
    TargetedPGD,
    evaluate_robustness,
    is_stochastic,
    robust_accuracy,
)
from neurovar.perturb.evaluate import correct_matrix

ATTACKS = [
    (FGSM, {}),
    (PGD, {"steps": 3}),
    (TargetedPGD, {"steps": 2, "n_target_classes": 2}),
    (Square, {"n_queries": 20}),
]


def _next_draw(noise) -> torch.Tensor:
    """The next standard-normal draw of the module's own stream (advances a copy)."""
    gen = noise._generator(torch.device("cpu"))
    copy = torch.Generator().manual_seed(0)
    copy.set_state(gen.get_state())
    return torch.randn(8, generator=copy)


@pytest.mark.parametrize(("cls", "kw"), ATTACKS)
def test_attack_reproducible_and_noise_stream_untouched(cls, kw, injected_model, test_batch):
    model, noise = injected_model
    x, y = test_batch
    x, y = x[:16], y[:16]
    assert is_stochastic(model, x)
    before = _next_draw(noise)
    a = cls(model, eps=0.1, eot_samples=2, rng=7, **kw)(x, y)
    assert torch.equal(_next_draw(noise), before)  # the module's stream was not advanced
    # a forward that advances the module's stream must not change the attack's result
    with torch.no_grad():
        model(x)
    b = cls(model, eps=0.1, eot_samples=2, rng=7, **kw)(x, y)
    c = cls(model, eps=0.1, eot_samples=2, rng=8, **kw)(x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float((a - x).abs().max()) <= 0.1 + 1e-6


def test_attack_sees_injected_noise(injected_model, test_batch):
    """EOT gradients on the noisy model differ between draws (noise on during the attack)."""
    model, _ = injected_model
    x, y = test_batch
    a = PGD(model, eps=0.1, steps=1, random_start=False, rng=0)(x, y)
    b = PGD(model, eps=0.1, steps=1, random_start=False, rng=1)(x, y)
    assert not torch.equal(a, b)  # no random start: only the noise draws differ


def test_repeated_evaluations_draw_different_noise(injected_model, noisy_model, test_batch):
    """n_evaluations are independent draws (not one draw repeated), for global-RNG noise and for
    injected noise alike; and reproducible from the seed."""
    x, y = test_batch
    for model in (injected_model[0], noisy_model):
        logits: list[torch.Tensor] = []

        def record(m, i, o, logits=logits):
            logits.append(o.detach().clone())

        handle = model.register_forward_hook(record)
        try:
            mat = correct_matrix(model, x, y, n_evaluations=4, rng=3)
        finally:
            handle.remove()
        assert len(logits) == 4
        for i in range(4):
            for j in range(i):
                assert not torch.equal(logits[i], logits[j])
        assert mat.shape == (4, 64)
        assert (mat.any(0) & ~mat.all(0)).any()  # some example flips between evaluations
        np.testing.assert_array_equal(mat, correct_matrix(model, x, y, n_evaluations=4, rng=3))


def test_evaluate_robustness_on_injected_noise(injected_model, test_batch, rng_guard):
    model, noise = injected_model
    x, y = test_batch
    before = _next_draw(noise)
    kw = dict(eps=0.1, attacks=["fgsm"], n_evaluations=3)
    with rng_guard:
        a = evaluate_robustness(model, x[:24], y[:24], rng=2, **kw)
    b = evaluate_robustness(model, x[:24], y[:24], rng=2, **kw)
    assert a.attrs["stochastic"] == 1 and a.attrs["eot_samples"] == 8
    np.testing.assert_array_equal(a.correct_fraction, b.correct_fraction)
    assert torch.equal(_next_draw(noise), before)
    res = robust_accuracy(model, None, x, y, n_evaluations=5, rng=0)
    frac = res.correct_fraction.values
    assert ((frac > 0) & (frac < 1)).any()  # evaluations differ


def test_twins_remove_and_freeze_injected_noise(injected_model, test_batch):
    model, noise = injected_model
    x, _ = test_batch
    free, frozen = NoiseFreeTwin(model), FrozenNoiseTwin(model, rng=3)
    assert not is_stochastic(free, x)
    assert not is_stochastic(frozen, x)
    assert is_stochastic(model, x)
    with torch.no_grad(), suspend_noise(model):
        clean = model(x)
    with torch.no_grad():
        torch.testing.assert_close(free(x), clean)
        assert not torch.equal(frozen(x), clean)  # frozen noise is still noise


def test_attack_restores_buffers(test_batch):
    """BatchNorm running statistics (updated by forwards in train mode) are restored."""
    x, y = test_batch
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Dropout(0.2), nn.Linear(32, 10)
        ).train()
    bn = model[2]
    mean, var, n = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    PGD(model, eps=0.1, steps=2, eot_samples=2, rng=0)(x, y)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert int(bn.num_batches_tracked) == n
    assert model.training
