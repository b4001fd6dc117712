"""One statistic, one implementation: recording and fitting share unit coords and shrinkage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from neurovar import record_activations, stats
from neurovar.noise import IsotropicNoise, fit_perturbation_covariance, inject_noise


def _model() -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 5)
        )


@pytest.mark.parametrize("layer", ["0", "3"])  # a (C, H, W) map and a 1-D layer
def test_fitted_and_recorded_noise_covariances_line_up_unit_by_unit(layer):
    model = _model()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 4, 4, generator=gen)
    fitted = fit_perturbation_covariance(
        model, x, x + 0.1 * torch.rand(x.shape, generator=gen), layer=layer
    )
    with inject_noise(model, {layer: IsotropicNoise(0.1, rng=0)}):
        tree = record_activations(model, x, layers=layer, n_trials=4, rng=0, progress=False)
    recorded = stats.noise_covariance(tree[layer]["activation"])
    assert set(fitted.coords) == set(recorded.coords)
    for name in recorded.coords:
        np.testing.assert_array_equal(fitted[name].values, recorded[name].values, err_msg=name)
    assert set(fitted.xindexes) == set(recorded.xindexes) == {"channel", "channel_j"}
    a, b = xr.align(fitted, recorded, join="exact")
    assert a.shape == b.shape == fitted.shape
    if layer == "3":  # a 1-D layer has no spatial position (the fit used to invent y = x = 0)
        assert "y" not in fitted.coords and "x" not in fitted.coords


@pytest.mark.parametrize("estimator", ["sample", "ledoit_wolf", "oas"])
def test_fit_and_noise_covariance_shrink_the_same_samples_alike(estimator):
    samples = np.random.default_rng(2).multivariate_normal(
        np.zeros(6), np.diag([4.0, 2.0, 1.0, 1.0, 0.5, 0.2]) + 0.3, size=9
    )
    # fit: the covariance of h(perturbed) around its own mean, h = identity
    fitted = fit_perturbation_covariance(
        nn.Sequential(nn.Identity()),
        torch.zeros(9, 6, dtype=torch.float64),
        torch.as_tensor(samples),
        layer="0",
        method="perturbed",
        estimator=estimator,
    )
    # stats: one stimulus, nine trials, the same samples
    da = xr.DataArray(samples[:, None, :], dims=("trial", "stimulus", "unit"))
    pooled = stats.noise_covariance(da, estimator=estimator)
    np.testing.assert_allclose(fitted.values, pooled.values, rtol=1e-12, atol=1e-14)
    if estimator != "sample":
        assert fitted.attrs["shrinkage"] == pytest.approx(pooled.attrs["shrinkage"], rel=1e-12)
        assert 0 < fitted.attrs["shrinkage"] < 1
