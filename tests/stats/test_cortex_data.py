"""The statistics on real cortical recordings (skipped when the shared data are absent).

Cowley et al. (2023) V4 spike counts have unequal repeats padded with NaN; Semedo et al.
(2019) V1 data are residuals of 400 repeats of one grating. Checked against the ranges in the
literature (Cohen & Kohn 2011): awake V4 with 100 ms bins r_sc ~0.01-0.1, anesthetized V1
r_sc ~0.1-0.25 for ~1 s counts, Fano factors ~1.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import neurovar.stats as nvs

CORTEX = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cortex"
V4 = CORTEX / "cowley2023_v4" / "responses_210325.npy"
V1 = CORTEX / "semedo2019_v1v2" / "sample_data.mat"


def _off_diagonal(r: xr.DataArray) -> np.ndarray:
    return r.values[~np.eye(r.shape[0], dtype=bool)]


@pytest.fixture(scope="module")
def v4() -> xr.DataArray:
    if not V4.exists():
        pytest.skip(f"cortical data not found at {V4}")
    x = np.load(V4)  # (neuron, image, repeat), NaN where an image had fewer repeats
    return xr.DataArray(x.transpose(2, 1, 0), dims=("trial", "stimulus", "unit"))


def test_v4_nan_padded_repeats(v4):
    assert np.isnan(v4.values).any()  # the data really are padded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # silent (neuron, image) pairs
        ff = nvs.fano_factor(v4)
    assert 0.5 < float(ff.median()) < 2.0
    r = nvs.noise_correlation(v4)
    assert np.all(np.isfinite(r.values))
    assert 0.0 < float(np.mean(_off_diagonal(r))) < 0.1
    # chunked (dask) input gives the same numbers on the real data
    np.testing.assert_allclose(
        nvs.noise_correlation(v4.chunk({"stimulus": 100})).values, r.values, atol=1e-12
    )
    cov = nvs.noise_covariance(v4)
    n_valid = int((~np.isnan(v4.values[:, :, 0])).sum())
    assert cov.attrs["dof"] == n_valid - 640


def test_v1_anesthetized_noise_correlations():
    if not V1.exists():
        pytest.skip(f"cortical data not found at {V1}")
    from scipy.io import loadmat

    x = loadmat(V1)["X"].reshape(400, 10, 79)  # trial-major: (trial, time bin, neuron)
    counts = xr.DataArray(x.sum(axis=1), dims=("trial", "unit"))  # 1 s residual counts
    r = nvs.noise_correlation(counts, stimulus_dim=None)
    assert 0.1 < float(np.nanmean(_off_diagonal(r))) < 0.3
