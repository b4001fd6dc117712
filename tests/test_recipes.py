"""The recipes of docs/architecture.md: a newcomer adds a noise model, an attack, a condition
(a control) and a regime by one registration each, and the package then uses it.

Each test registers a toy one through the public registry, shows that the code that draws
names from that registry builds and uses it, and removes it again. (A statistic has no
registry: see the recipe in docs/architecture.md.)
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from neurovar.noise import (
    NOISE_KINDS,
    NoiseModule,
    inject_noise,
    noise_from_covariance,
    register_noise_kind,
)
from neurovar.perturb import (
    Attack,
    attack_names,
    evaluate_robustness,
    register_attack,
    unregister_attack,
)
from neurovar.record import record_activations


# ------------------------------------------------------------------------------ noise model
class FirstUnitNoise(NoiseModule):
    """Toy noise model: variance ``var`` on the first unit, none on the others."""

    def __init__(self, var: float, *, n_units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.var = float(var)
        self.n_units_ = int(n_units)

    def _add_noise(self, x3, draws, s):
        eps = torch.zeros_like(x3)
        eps[:, 0] = draws[0][:, 0] * (s * self.var**0.5)
        return x3 + eps

    def dense_covariance(self) -> torch.Tensor:
        cov = torch.zeros(self.n_units_, self.n_units_, dtype=torch.float64)
        cov[0, 0] = self.var
        return cov


def test_a_noise_model_is_one_registration_and_records_its_covariance():
    def factory(cov, *, rank, **kwargs):
        assert rank is None
        cov = np.asarray(cov)
        return FirstUnitNoise(cov[0, 0], n_units=cov.shape[0], **kwargs)

    register_noise_kind("toy-first-unit", factory)
    try:
        cov = np.diag([4.0, 9.0, 9.0, 9.0])
        noise = noise_from_covariance(cov, kind="toy-first-unit", rng=0)
        assert isinstance(noise, FirstUnitNoise)
        assert torch.equal(noise.diagonal(), torch.tensor([4.0, 0.0, 0.0, 0.0], dtype=torch.float64))
        model = nn.Sequential(nn.Linear(3, 4), nn.Identity()).eval()
        inject_noise(model, {"0": noise})
        x = torch.rand(5, 3, generator=torch.Generator().manual_seed(0))
        tree = record_activations(model, x, layers=["1"], n_trials=400, rng=0, progress=False)
        var = tree["1"]["activation"].var("trial").mean("stimulus").values
        # the recorded trial variance is the registered model's covariance: 4 on unit 0, 0 else
        assert var[0] == pytest.approx(4.0, rel=0.2)
        assert np.all(var[1:] < 1e-9)  # round-off of a constant, not noise
    finally:
        NOISE_KINDS.pop("toy-first-unit", None)
    assert "toy-first-unit" not in NOISE_KINDS


# ------------------------------------------------------------------------------ attack
class ShiftUp(Attack):
    """Toy attack: every pixel up by eps (inside the eps-ball and [0, 1])."""

    name = "toy_shift"

    def _perturb(self, x, y, gen, device):
        return self._project(x + self.eps, x)


class MeanThreshold(nn.Module):
    """Class 1 when the mean pixel is below 0.5, else class 0."""

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True) - 0.5
        return torch.cat([m, -m], dim=1) * 100


def test_an_attack_is_one_registration_and_evaluate_robustness_runs_it():
    @register_attack("toy_shift")
    def factory(model, *, eps, norm, eot_samples, rng, device):
        return ShiftUp(model, eps=eps, norm=norm, eot_samples=eot_samples, rng=rng, device=device)

    try:
        assert "toy_shift" in attack_names()
        images = torch.full((6, 1, 4, 4), 0.45)
        labels = torch.ones(6, dtype=torch.long)
        res = evaluate_robustness(
            MeanThreshold(), images, labels, eps=[0.01, 0.1], attacks=["toy_shift"],
            n_evaluations=1, eot_samples=1, rng=0, progress=False,
        )  # fmt: skip
        acc = res["accuracy"].sel(attack="toy_shift")
        # a shift of 0.01 keeps the mean below 0.5 (correct); 0.1 moves it above (wrong)
        assert float(acc.sel(eps=0.01)) == 1.0
        assert float(acc.sel(eps=0.1)) == 0.0
    finally:
        unregister_attack("toy_shift")
    assert "toy_shift" not in attack_names()


# ------------------------------------------------------------------------------ condition, regime
TINY = {
    "name": "recipes",
    "seeds": [0],
    "layers": ["relu3"],
    "regimes": ["test-time"],
    "conditions": ["none", "isotropic"],
    "magnitudes": [0.5],
    "device": "cpu",
    "data": {"n_fit": 48, "n_eval": 20},
    "model": {"channels": [4, 8], "hidden": 16},
    "training": {"epochs": 1, "finetune_epochs": 1},
    "sources": [{"family": "attack", "name": "pgd_ce", "strength": 0.1}],
    "targets": [{"family": "attack", "norm": "linf", "strengths": [0.05]}],
}


def test_a_condition_and_a_regime_are_one_registration_each_and_the_grid_plans_them():
    from neurovar.experiment import plan, registry
    from neurovar.experiment.config import parse_config

    condition = registry.register_condition(
        registry.Condition(
            "toy-half", "noise", "identity on half the units", "#000000",
            shape=lambda ctx, source, param: registry.Shape(
                np.r_[np.ones(ctx.n_units // 2), np.zeros(ctx.n_units - ctx.n_units // 2)]
            ),
        )
    )  # fmt: skip
    regime = registry.register_regime(
        registry.Regime("toy-eval", "base", None, None, None, "noise at evaluation only (toy)")
    )
    try:
        cfg = copy.deepcopy(TINY)
        cfg.update(conditions=["none", condition.name], regimes=["test-time", regime.name])
        cells = plan(parse_config(cfg))
        pairs = {(c.regime, c.condition) for c in cells}
        assert ("toy-eval", "toy-half") in pairs and ("test-time", "toy-half") in pairs
        # and the names are validated against the registries: a typo is refused
        cfg["conditions"] = ["none", "toy-hlf"]
        with pytest.raises(Exception, match="did you mean 'toy-half'"):
            parse_config(cfg)
    finally:
        del registry.CONDITIONS[condition.name]
        del registry.REGIMES[regime.name]
    cfg = copy.deepcopy(TINY)
    cfg["regimes"] = ["toy-eval"]
    with pytest.raises(Exception, match="toy-eval"):
        parse_config(cfg)
