"""APGD: eps-ball, strength, reproducibility, EOT, and agreement with ART's AutoPGD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neurovar.perturb import APGD, PGD
from neurovar.perturb.attacks.apgd import apgd_checkpoints


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # tests may seed torch; the library never does
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)).eval()


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 4, 4, generator=gen)
    model = _model()
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_checkpoints_follow_croce_hein():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, sec. 3.2);
    # ceil of the float sums, as ART computes them (0.57 * 100 rounds up to 58)
    w = apgd_checkpoints(100)
    assert w[:3] == [0, 22, 41] and len(w) == 9 and w[-1] == 99
    assert all(b > a for a, b in zip(w, w[1:]))


def test_stays_in_the_ball_and_in_range(data):
    model, x, y = data
    adv = APGD(model, eps=0.05, steps=10, restarts=2, rng=0)(x, y)
    assert (adv - x).abs().max() <= 0.05 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_at_least_as_strong_as_pgd_with_the_same_steps(data):
    model, x, y = data
    eps = 0.1
    with torch.no_grad():  # APGD takes its gradients also inside no_grad
        x_apgd = APGD(model, eps=eps, eps_step=2 * eps, steps=20, restarts=1, rng=0)(x, y)
    x_pgd = PGD(model, eps=eps, steps=20, rng=0)(x, y)
    with torch.no_grad():
        acc_apgd = (model(x_apgd).argmax(1) == y).float().mean()
        acc_pgd = (model(x_pgd).argmax(1) == y).float().mean()
        clean = (model(x).argmax(1) == y).float().mean()
    assert acc_apgd < clean
    assert acc_apgd <= acc_pgd + 0.05


def test_reproducible_and_leaves_global_rng_alone(data):
    model, x, y = data
    state = torch.get_rng_state()
    a = APGD(model, eps=0.05, steps=5, restarts=2, rng=3)(x, y)
    b = APGD(model, eps=0.05, steps=5, restarts=2, rng=3)(x, y)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())


def test_refuses_bad_parameters(data):
    from neurovar._validation import InvalidParameterError

    model, x, y = data
    for kw, name in (({"steps": 0}, "steps"), ({"restarts": 0}, "restarts"),
                     ({"eps_step": -1.0}, "eps_step"), ({"loss": "margin"}, "loss"),
                     ({"fused": 1}, "fused")):
        with pytest.raises(InvalidParameterError, match=name):
            APGD(model, eps=0.1, **kw)(x, y)


class _GradientNoise(nn.Module):
    """``model`` plus a small, fast-oscillating random term: one draw changes the logits by at
    most 0.05 but its gradient (up to 10 |w|) swamps the model's, so a single-draw gradient
    points in a random direction and only an average over draws (EOT) recovers the model's."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        super().__init__()
        self.inner = model
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, z):
        w = torch.randn(z[0].numel(), 4, generator=self.gen)
        phase = 6.3 * torch.rand(4, generator=self.gen)
        return self.inner(z) + 0.05 * torch.sin(200.0 * z.flatten(1) @ w + phase)


@pytest.mark.parametrize("fused", [True, False])
def test_eot_averages_the_loss_over_noise_draws(data, fused):
    """With gradients dominated by noise, 16 draws per gradient lower the (deterministic)
    model's accuracy more than one draw does, with either order of the passes."""
    model, x, y = data
    accs = {}
    for k in (1, 16):
        adv = APGD(_GradientNoise(model, 0), eps=0.1, eps_step=0.2, steps=10, restarts=1,
                   eot_samples=k, fused=fused, rng=0)(x, y)
        with torch.no_grad():
            accs[k] = float((model(adv).argmax(1) == y).float().mean())
    assert accs[16] < accs[1] - 0.05, accs


class _Counting(nn.Module):
    """Records the batch size of every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.sizes: list[int] = []

    def forward(self, z):
        self.sizes.append(z.shape[0])
        return self.inner(z)


@pytest.mark.parametrize("loss,norm,eps", [("ce", "linf", 0.1), ("dlr", "linf", 0.05),
                                           ("ce", "l2", 0.5)])
def test_fused_passes_give_the_same_adversarial_examples(data, loss, norm, eps):
    """The fused order (each step's loss and next gradient from one pass) computes exactly
    what ART's order (a gradient pass and a separate loss pass) computes on a deterministic
    model: bit-identical adversarial examples, with restarts and step halvings (30 steps have
    7 checkpoints), in about half the passes."""
    model, x, y = data
    runs = {}
    for fused in (True, False):
        counted = _Counting(model)
        adv = APGD(counted, eps=eps, norm=norm, steps=30, restarts=3, loss=loss, fused=fused,
                   rng=4)(x, y)
        runs[fused] = (adv, counted.sizes)
    assert torch.equal(runs[True][0], runs[False][0])
    with torch.no_grad():
        assert (model(runs[True][0]).argmax(1) != y).any()  # the attack did something
    fused_passes, unfused_passes = len(runs[True][1]), len(runs[False][1])
    assert fused_passes < unfused_passes
    # per restart run: fused 1 check + 31 passes + 1 check, unfused 1 + 61 + 1
    assert unfused_passes - fused_passes >= 29


def test_fused_reuses_the_gradient_of_the_best_point():
    """A step halving moves an example back to its best point; the fused order reuses the
    gradient from the pass that evaluated that point. Checked by equality with ART's order on
    a model where halvings happen (a loss that the first steps overshoot)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64),
                          nn.Tanh(), nn.Linear(64, 4)).eval()
    x = torch.rand(128, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    a = APGD(model, eps=0.3, eps_step=0.6, steps=40, restarts=1, rng=1)(x, y)
    b = APGD(model, eps=0.3, eps_step=0.6, steps=40, restarts=1, fused=False, rng=1)(x, y)
    assert torch.equal(a, b)


def test_agrees_with_art_autopgd():
    """Our APGD at ART's defaults (eps_step 0.1) against ART's AutoProjectedGradientDescent on
    the same trained network and images: robust accuracies within 0.04 (the algorithms are the
    same; random starts differ)."""
    pytest.importorskip("art")
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from neurovar.datasets import load_mnist_embedded
    from neurovar.models import PrebleCNN, train

    data = load_mnist_embedded()
    model = PrebleCNN(rng=0)
    train(model, data, epochs=1, lr=1e-3, rng=0, progress=False)
    model.eval()
    x, y = data.x_test[:150], data.y_test[:150]
    for eps in (0.05, 0.1):
        clf = PyTorchClassifier(model=model, clip_values=(0.0, 1.0),
                                loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                                nb_classes=10)
        np.random.seed(0)  # ART draws its random start from numpy's global RNG
        x_art = AutoProjectedGradientDescent(estimator=clf, eps=eps, max_iter=20,
                                             nb_random_init=1, verbose=False).generate(
            x=x.numpy(), y=y.numpy())
        x_ours = APGD(model, eps=eps, steps=20, restarts=1, rng=0)(x, y)
        with torch.no_grad():
            acc_art = float((model(torch.from_numpy(x_art)).argmax(1) == y).float().mean())
            acc_ours = float((model(x_ours).argmax(1) == y).float().mean())
        assert abs(acc_art - acc_ours) <= 0.04, (eps, acc_art, acc_ours)
