"""Fixtures for the statistics tests: small simulated recordings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import xarray as xr


def as_responses(values: np.ndarray) -> xr.DataArray:
    """Wrap a ``(trial, stimulus, unit)`` array with the data model's dims and coords."""
    n_trial, n_stim, n_unit = values.shape
    return xr.DataArray(
        values,
        dims=("trial", "stimulus", "unit"),
        coords={
            "stimulus_id": ("stimulus", np.arange(n_stim)),
            "label": ("stimulus", np.arange(n_stim) % 3),
            "unit_id": ("unit", [f"u{i}" for i in range(n_unit)]),
            "channel": ("unit", np.arange(n_unit) % 4),
        },
    )


@pytest.fixture
def make_responses() -> Callable[[np.ndarray], xr.DataArray]:
    return as_responses


@pytest.fixture
def gaussian_population() -> tuple[xr.DataArray, np.ndarray]:
    """Correlated Gaussian noise around random per-stimulus means, and its true covariance."""
    rng = np.random.default_rng(42)
    n_trial, n_stim, n_unit = 60, 12, 6
    a = rng.standard_normal((n_unit, n_unit))
    cov = a @ a.T / n_unit + 0.5 * np.eye(n_unit)
    noise = rng.multivariate_normal(np.zeros(n_unit), cov, size=(n_trial, n_stim))
    means = rng.normal(5.0, 3.0, size=(1, n_stim, n_unit))
    return as_responses(noise + means), cov
