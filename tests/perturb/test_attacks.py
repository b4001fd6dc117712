"""Tests for neurovar.perturb.attacks: eps-ball, state/RNG hygiene, EOT sees the noise, peers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurovar.perturb import FGSM, PGD, Square, TargetedPGD
from neurovar.perturb._utils import preserved_state

ATTACKS = [
    (FGSM, {}),
    (PGD, {"steps": 5}),
    (TargetedPGD, {"steps": 3, "n_target_classes": 2}),
    (Square, {"n_queries": 30}),
]


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize(("cls", "kw"), ATTACKS)
def test_linf_ball_and_range(cls, kw, det_model, test_batch):
    x, y = test_batch
    eps = 0.1
    adv = cls(det_model, eps=eps, rng=0, **kw)(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert not torch.equal(adv, x)


@pytest.mark.parametrize("cls", [FGSM, PGD, TargetedPGD])
def test_l2_ball_and_range(cls, det_model, test_batch):
    x, y = test_batch
    eps = 1.0
    adv = cls(det_model, eps=eps, norm="l2", rng=0)(x, y)
    norms = (adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= eps + 1e-5
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float(norms.mean()) > 0.5 * eps  # it actually moves


@pytest.mark.parametrize(("cls", "kw"), ATTACKS)
def test_state_and_global_rng_preserved(cls, kw, noisy_model, det_model, test_batch, rng_guard):
    x, y = test_batch
    for model, mode in ((noisy_model, True), (det_model, False)):
        with rng_guard:
            cls(model, eps=0.1, eot_samples=2, rng=1, **kw)(x[:16], y[:16])
        assert all(m.training is mode for m in model.modules())


@pytest.mark.parametrize(("cls", "kw"), ATTACKS)
def test_reproducible_from_seed_on_stochastic_model(cls, kw, noisy_model, test_batch):
    x, y = test_batch
    a = cls(noisy_model, eps=0.1, eot_samples=2, rng=7, **kw)(x[:16], y[:16])
    b = cls(noisy_model, eps=0.1, eot_samples=2, rng=7, **kw)(x[:16], y[:16])
    c = cls(noisy_model, eps=0.1, eot_samples=2, rng=8, **kw)(x[:16], y[:16])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_attack_sees_the_noise(dropout_model, test_batch):
    """Dropout stays in train mode during our attack; torchattacks' default switches it off."""
    torchattacks = pytest.importorskip("torchattacks")
    x, y = test_batch
    dropout = next(m for m in dropout_model.modules() if isinstance(m, nn.Dropout))
    seen: list[bool] = []
    handle = dropout.register_forward_hook(lambda m, i, o: seen.append(m.training))
    try:
        PGD(dropout_model, eps=0.1, steps=2, eot_samples=3, rng=0)(x, y)
        ours = list(seen)
        seen.clear()
        torchattacks.PGD(dropout_model, eps=0.1, alpha=0.02, steps=2)(x, y)
        theirs = list(seen)
    finally:
        handle.remove()
    assert ours and all(ours)
    assert theirs and not any(theirs)  # the deterministic twin was attacked
    assert dropout_model.training


def test_eot_gradient_differs_between_draws_and_is_averaged(noisy_model, test_batch):
    """EOT with k draws: the averaged gradient varies less between seeds than a single draw."""
    x, y = test_batch
    x, y = x[:32], y[:32]

    def grads(k):
        out = []
        for seed in range(4):
            atk = PGD(noisy_model, eps=0.1, eot_samples=k, rng=seed)
            with preserved_state(noisy_model, torch.device("cpu"), seed):
                g, _ = atk._eot_grad(x, y, "ce", None, torch.device("cpu"))
            out.append(g)
        return torch.stack(out)

    g1, g16 = grads(1), grads(16)
    spread1 = (g1 - g1.mean(0)).pow(2).sum() / g1.pow(2).sum()
    spread16 = (g16 - g16.mean(0)).pow(2).sum() / g16.pow(2).sum()
    assert spread1 > 0  # the model is stochastic and the attack sees it
    assert spread16 < 0.5 * spread1


def test_folding_equals_loop_on_deterministic_model(det_model, test_batch):
    x, y = test_batch
    a = PGD(det_model, eps=0.1, eot_samples=4, eot_batch=1, rng=3)(x, y)
    b = PGD(det_model, eps=0.1, eot_samples=4, eot_batch=4, rng=3)(x, y)
    assert torch.allclose(a, b, atol=1e-6)


def test_pgd_at_least_as_strong_as_torchattacks(det_model, test_batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = test_batch
    accs_ours, accs_theirs = [], []
    for eps in (0.05, 0.1):
        ours = PGD(det_model, eps=eps, alpha=eps / 4, steps=10, rng=0)(x, y)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            theirs = torchattacks.PGD(det_model, eps=eps, alpha=eps / 4, steps=10)(x, y)
        accs_ours.append(_acc(det_model, ours, y))
        accs_theirs.append(_acc(det_model, theirs, y))
        assert float((theirs - x).abs().max()) <= eps + 1e-6
    # not weaker beyond noise (2 of 64 examples)
    for a, b in zip(accs_ours, accs_theirs, strict=True):
        assert a <= b + 2 / 64
    assert accs_ours[1] < _acc(det_model, x, y) - 0.3  # and it is a real attack


def test_stronger_with_eps(det_model, test_batch):
    x, y = test_batch
    accs = [_acc(det_model, PGD(det_model, eps=e, steps=10, rng=0)(x, y), y) for e in (0.02, 0.3)]
    assert accs[1] < accs[0]
    assert accs[1] <= 0.1


def test_margin_and_square_see_through_gradient_masking(det_model, saturated, test_batch):
    x, y = test_batch
    masked = saturated(det_model).eval()
    acc_ce = _acc(masked, PGD(masked, eps=0.1, steps=10, random_start=False, rng=0)(x, y), y)
    acc_dlr = _acc(masked, TargetedPGD(masked, eps=0.1, steps=10, rng=0)(x, y), y)
    acc_sq = _acc(masked, Square(masked, eps=0.1, n_queries=200, rng=0)(x, y), y)
    assert acc_ce > 0.9  # cross-entropy PGD is fooled by the masking
    assert acc_dlr < acc_ce - 0.3
    assert acc_sq < acc_ce - 0.3


def test_eps_zero_returns_input(det_model, test_batch):
    x, y = test_batch
    assert torch.equal(PGD(det_model, eps=0.0, rng=0)(x, y), x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, r"The 'eps' parameter of PGD must be a float in \[0.0, 1.0\]\. Got -0.1"),
        ({"eps": 0.1, "norm": "l3"}, r"'norm' parameter of PGD must be one of \['linf', 'l2'\]"),
        ({"eps": 0.1, "steps": 0}, r"'steps' parameter of PGD must be an int in \[1, inf\)"),
        ({"eps": 0.1, "loss": "hinge"}, r"'loss' parameter of PGD must be one of"),
        ({"eps": 0.1, "eot_samples": 0}, r"'eot_samples' parameter of PGD"),
    ],
)
def test_pgd_parameter_errors(kwargs, match, det_model, test_batch):
    x, y = test_batch
    with pytest.raises(ValueError, match=match):
        PGD(det_model, **kwargs)(x, y)


def test_input_errors(det_model, test_batch):
    x, y = test_batch
    atk = PGD(det_model, eps=0.1)
    with pytest.raises(
        ValueError, match=r"'images' parameter of PGD must be in the range \[0, 1\]"
    ):
        atk(x * 2, y)
    with pytest.raises(ValueError, match=r"'labels' parameter of PGD must be of length N=64"):
        atk(x, y[:10])
    with pytest.raises(ValueError, match=r"'images' parameter of PGD must be a torch.Tensor"):
        atk(x[0, 0], y)
    with pytest.raises(ValueError, match=r"'norm' parameter of Square must be one of \['linf'\]"):
        Square(det_model, eps=0.1, norm="l2")(x, y)


def _margin(model, x, y):
    with torch.no_grad():
        z = model(x)
    true = z.gather(1, y[:, None]).squeeze(1)
    return true - z.scatter(1, y[:, None], -torch.inf).max(1).values


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_returns_most_adversarial_iterate_last_included(
    input_recorder, norm, det_model, test_batch
):
    """Best-so-far over *all* iterates, the last one included: the returned example is an
    iterate the attack scored, with the lowest margin of all of them (large steps oscillate,
    so the last iterate is often not the best)."""
    x, y = test_batch
    rec = input_recorder(det_model).eval()
    eps = 0.1 if norm == "linf" else 1.0
    adv = PGD(rec, eps=eps, norm=norm, alpha=eps, steps=6, rng=0)(x, y)
    iterates = torch.stack(rec.seen)  # (n_forward, N, C, H, W), last one: the final iterate
    margins = torch.stack([_margin(det_model, it, y) for it in iterates])
    ours = _margin(det_model, adv, y)
    torch.testing.assert_close(ours, margins.min(0).values)
    assert ((iterates == adv[None]).flatten(2).all(-1)).any(0).all()  # it is one of them
    # and never less adversarial than the last iterate (what plain PGD returns)
    assert bool((ours <= margins[-1]).all())


class _NoisyLinear(nn.Module):
    """Two classes; true margin of class 0 is ``1 - w.(x - 0.5)`` (-1 at best inside an L-inf
    ball of 0.1), plus Gaussian noise of std ``sigma`` on logit 1 (global torch RNG)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x):
        z1 = -1.0 + (x.flatten(1) - 0.5).sum(1) * (20.0 / 64)
        if self.sigma:
            z1 = z1 + self.sigma * torch.randn_like(z1)
        return torch.stack([torch.zeros_like(z1), z1], 1)


def test_square_on_stochastic_model_does_not_stall_on_lucky_estimates():
    """With EOT the incumbent's loss is the lowest of noisy estimates (biased low); unless it is
    re-scored, proposals stop being accepted and examples stop on one lucky estimate. The mean
    *true* (noise-free) margin of the result shows it: about +0.03 without re-scoring, about
    -0.2 with it (threshold -0.15; best reachable -1)."""
    gen = torch.Generator().manual_seed(0)
    x = 0.5 + 0.2 * (torch.rand(256, 1, 8, 8, generator=gen) - 0.5)
    y = torch.zeros(256, dtype=torch.long)
    adv = Square(_NoisyLinear(0.7), eps=0.1, n_queries=300, eot_samples=2, rng=0)(x, y)
    with torch.no_grad():
        z = _NoisyLinear(0.0)(adv)
    assert float((z[:, 0] - z[:, 1]).mean()) < -0.15
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.tensor([5.0, 0.0]).expand(x.shape[0], 2)


def test_square_never_wastes_a_query_on_an_unchanged_image():
    """As the reference implementation: a proposal that changes no pixel is redrawn (on gray
    images with black background about half of them would be no-ops)."""
    model = _Constant()
    x = torch.zeros(32, 1, 8, 8)
    x[:, :, 2:6, 2:6] = 0.8
    Square(model, eps=0.1, n_queries=40, rng=0)(x, torch.zeros(32, dtype=torch.long))
    init, proposals = model.seen[0], torch.stack(model.seen[1:])  # all rejected: init stays
    assert proposals.shape[0] == 39
    unchanged = (proposals == init[None]).flatten(2).all(-1)
    assert not bool(unchanged.any())


def test_eot_pgd_scores_iterates_from_its_gradient_passes(input_recorder, noisy_model, test_batch):
    """With EOT (k > 1) PGD makes exactly steps x k forward passes (the iterates are scored from
    the logits of their gradient passes, no extra scoring pass), and returns per example the
    lowest-scored iterate if that fools the EOT-mean model, else the last iterate."""
    x, y = test_batch
    rec = input_recorder(noisy_model).train()
    steps, k = 4, 3
    adv = PGD(rec, eps=0.1, alpha=0.05, steps=steps, eot_samples=k, rng=0)(x, y)
    assert len(rec.seen) == steps * k
    iterates = torch.stack(rec.seen[::k])  # (steps, N, ...): x_0 .. x_{T-1}
    is_scored = (iterates == adv[None]).flatten(2).all(-1).any(0)
    # an example not returned as a scored iterate got the final one: inside the ball, and
    # one PGD step away from x_{T-1}
    delta = (adv - x).abs().flatten(1).max(1).values
    assert bool((delta <= 0.1 + 1e-6).all())
    last_step = (adv - iterates[-1]).abs().flatten(1).max(1).values
    assert bool((last_step[~is_scored] <= 0.05 + 1e-6).all())
    assert bool(is_scored.any()) and bool((~is_scored).any())
