"""Tests of neurovar.stats.shared: factor-analysis shared variance."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurovar.stats import shared_variance


def _fa_population(rng, n_units=12, n_latent=2, n_trials=60, n_stim=8):
    loading = rng.standard_normal((n_units, n_latent)) * 0.8
    private = rng.uniform(0.3, 1.0, n_units)
    z = rng.standard_normal((n_trials, n_stim, n_latent))
    noise = rng.standard_normal((n_trials, n_stim, n_units)) * np.sqrt(private)
    means = rng.normal(3.0, 2.0, (1, n_stim, n_units))
    x = z @ loading.T + noise + means
    shared = np.sum(loading**2, axis=1)
    da = xr.DataArray(
        x, dims=("trial", "stimulus", "unit"), coords={"unit_id": ("unit", np.arange(n_units))}
    )
    return da, 100 * shared / (shared + private)


def test_recovers_percent_shared_and_dimensionality(global_rng_guard):
    rng = np.random.default_rng(0)
    da, true_pct = _fa_population(rng)
    out = shared_variance(da, rng=0, max_factors=4)
    assert int(out.n_factors) == 2
    assert int(out.shared_dimensionality) == 2
    np.testing.assert_allclose(out.percent_shared.values, true_pct, atol=8.0)
    assert out.loading.dims == ("unit", "factor")
    assert "unit_id" in out.coords
    assert out.cv_log_likelihood.sizes["n_factors_tried"] == 5


def test_independent_noise_selects_zero_factors():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 6, 8)) * rng.uniform(0.5, 2, 8)
    out = shared_variance(xr.DataArray(x, dims=("trial", "stimulus", "unit")), rng=1)
    assert int(out.n_factors) == 0
    np.testing.assert_allclose(out.percent_shared.values, 0.0)
    assert int(out.shared_dimensionality) == 0


def test_fixed_n_factors_and_errors():
    rng = np.random.default_rng(2)
    da, _ = _fa_population(rng)
    out = shared_variance(da, n_factors=3)
    assert int(out.n_factors) == 3 and "cv_log_likelihood" not in out
    with pytest.raises(ValueError, match="'n_factors' parameter of shared_variance"):
        shared_variance(da, n_factors=12)
    with pytest.raises(ValueError, match="'threshold' parameter"):
        shared_variance(da, threshold=0.0)


def test_shared_plus_private_is_the_unbiased_noise_variance():
    # With 4 trials per stimulus, the maximum-likelihood variance of pooled residuals (divide
    # by rows) is 25% low; the FA variances must add up to noise_covariance's unbiased one.
    from neurovar.stats import noise_covariance

    rng = np.random.default_rng(3)
    da, _ = _fa_population(rng, n_trials=4, n_stim=60)
    cov = noise_covariance(da)
    for k in (None, 0, 2):
        out = shared_variance(da, n_factors=k, rng=0, max_factors=3)
        np.testing.assert_allclose(
            out.shared_variance.values + out.private_variance.values,
            np.diag(cov.values),
            rtol=2e-3,  # sklearn stops EM (tol on the log-likelihood) just before its psi update
        )


def test_zero_variance_and_missing_units_are_nan_with_a_warning():
    rng = np.random.default_rng(4)
    da, _ = _fa_population(rng)
    x = da.values.copy()
    x[:, :, 3] = 0.1  # a silent unit (constant, inexact mean)
    x[:, :, 5] = np.nan  # a unit never recorded
    with pytest.warns(RuntimeWarning) as caught:
        out = shared_variance(da.copy(data=x), n_factors=2)
    messages = " ".join(str(w.message) for w in caught)
    assert "1 of 12 units have zero trial-to-trial variance" in messages
    assert "1 of 12 units have no valid (non-NaN) value" in messages
    pct = out.percent_shared.values
    assert np.isnan(pct[3]) and np.isnan(pct[5])
    assert out.shared_variance.values[3] == 0 and out.private_variance.values[3] == 0
    assert np.isnan(out.private_variance.values[5])
    keep = [i for i in range(12) if i not in (3, 5)]
    ref = shared_variance(da.isel(unit=keep), n_factors=2)
    np.testing.assert_allclose(pct[keep], ref.percent_shared.values, rtol=1e-6)
    assert out.loading.shape == (12, 2)
