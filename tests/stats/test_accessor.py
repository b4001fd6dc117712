"""Tests of the .nv accessor: it delegates to the free functions."""

from __future__ import annotations

import numpy as np
import xarray as xr

import neurovar.stats as nvs


def test_accessor_delegates(gaussian_population):
    da, _ = gaussian_population
    positive = da - float(da.min()) + 1.0
    xr.testing.assert_identical(positive.nv.fano_factor(ddof=0), nvs.fano_factor(positive, ddof=0))
    xr.testing.assert_identical(da.nv.noise_correlation(), nvs.noise_correlation(da))
    cov = da.nv.noise_covariance(estimator="oas")
    xr.testing.assert_identical(cov, nvs.noise_covariance(da, estimator="oas"))
    xr.testing.assert_identical(cov.nv.participation_ratio(), nvs.participation_ratio(cov))
    xr.testing.assert_identical(
        cov.nv.alignment_index(cov, n_components=2), nvs.alignment_index(cov, cov, n_components=2)
    )
    assert da.nv.noise_correlation.__doc__ == nvs.noise_correlation.__doc__


def test_every_public_function_is_on_the_accessor():
    da = xr.DataArray(np.zeros((2, 2, 2)), dims=("trial", "stimulus", "unit"))
    for name in nvs.__all__:
        assert callable(getattr(da.nv, name)), name
