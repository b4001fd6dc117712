"""signal_covariance and top_subspace: hand computations and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import neurovar.stats as nvs


def _responses(rng, n_trials=6, n_stim=15, n_units=4):
    return xr.DataArray(rng.normal(size=(n_trials, n_stim, n_units)),
                        dims=("trial", "stimulus", "unit"),
                        coords={"unit_id": ("unit", np.arange(n_units))})


def test_signal_covariance_is_the_covariance_of_trial_means():
    rng = np.random.default_rng(0)
    r = _responses(rng)
    ref = np.cov(r.values.mean(axis=0), rowvar=False, ddof=1)
    out = nvs.signal_covariance(r)
    np.testing.assert_allclose(out.values, ref, rtol=1e-12)
    assert out.dims == ("unit", "unit_j") and out.attrs["n_stimuli"] == 15
    np.testing.assert_allclose(nvs.signal_covariance(r, ddof=0).values, ref * 14 / 15)
    assert np.allclose(r.nv.signal_covariance().values, out.values)


def test_signal_covariance_skips_nan_padded_trials():
    rng = np.random.default_rng(1)
    r = _responses(rng).copy()
    r[4:, 0, :] = np.nan  # stimulus 0 shown 4 times only
    means = np.stack([np.nanmean(r.values[:, s], axis=0) for s in range(r.sizes["stimulus"])])
    np.testing.assert_allclose(nvs.signal_covariance(r).values, np.cov(means, rowvar=False))


def test_signal_covariance_refuses_bad_ddof():
    with pytest.raises((ValueError, TypeError), match="'ddof'"):
        nvs.signal_covariance(_responses(np.random.default_rng(2)), ddof=-1)


def test_top_subspace_is_the_top_eigenvectors():
    cov = xr.DataArray(np.diag([1.0, 5.0, 3.0, 0.5]), dims=("unit", "unit_j"))
    basis = nvs.top_subspace(cov, 2)
    assert basis.dims == ("unit", "component")
    np.testing.assert_allclose(basis.values, [[0, 0], [1, 0], [0, 1], [0, 0]], atol=1e-12)
    np.testing.assert_allclose(basis["eigenvalue"].values, [5.0, 3.0])
    # a random rotation: the basis spans the rotated top-2 subspace (principal angles 0)
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    rot = cov.copy(data=q @ cov.values @ q.T)
    angles = nvs.principal_angles(nvs.top_subspace(rot, 2),
                                  xr.DataArray(q[:, [1, 2]], dims=("unit", "component")))
    np.testing.assert_allclose(angles.values, 0.0, atol=1e-6)


def test_top_subspace_refuses_a_non_unique_subspace():
    cov = xr.DataArray(np.diag([1.0, 0.0, 0.0]), dims=("unit", "unit_j"))
    with pytest.raises(ValueError, match="not unique"):
        nvs.top_subspace(cov, 2)
    with pytest.raises((ValueError, TypeError), match="'n_components'"):
        nvs.top_subspace(cov, 4)
