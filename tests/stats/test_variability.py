"""Tests of neurovar.stats.variability: Fano factor and mean-matched Fano factor."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from neurovar.stats import fano_factor, mean_matched_fano_factor


def test_poisson_fano_is_one(make_responses):
    rng = np.random.default_rng(0)
    rates = rng.uniform(2.0, 20.0, size=(1, 10, 8))
    counts = rng.poisson(rates, size=(400, 10, 8)).astype(float)
    ff = fano_factor(make_responses(counts))
    assert ff.dims == ("stimulus", "unit")
    assert ff.name == "fano_factor"
    assert abs(float(ff.mean()) - 1.0) < 0.03
    # every entry is a noisy estimate near 1 (sd ~ sqrt(2/399) ~ 0.07)
    assert float(np.abs(ff - 1).max()) < 0.35


def test_gamma_poisson_matches_analytic_value(make_responses):
    # rate ~ Gamma(k, theta) on every trial, counts ~ Poisson(rate):
    # mean = k theta, var = k theta + k theta^2, so F = 1 + theta.
    rng = np.random.default_rng(1)
    k, theta = 4.0, 1.5
    rate = rng.gamma(k, theta, size=(2000, 4, 5))
    counts = rng.poisson(rate).astype(float)
    ff = fano_factor(make_responses(counts))
    np.testing.assert_allclose(float(ff.mean()), 1.0 + theta, rtol=0.03)


def test_matches_brute_force_numpy_and_ddof(make_responses):
    rng = np.random.default_rng(2)
    x = rng.gamma(2.0, 3.0, size=(15, 4, 3))
    for ddof in (0, 1, 2):
        expect = x.var(axis=0, ddof=ddof) / x.mean(axis=0)
        np.testing.assert_allclose(fano_factor(make_responses(x), ddof=ddof).values, expect)


def test_agrees_with_elephant_fanofactor(make_responses):
    # Elephant computes counts.var() / counts.mean(), i.e. ddof=0, from spike trains (the
    # docstring says so); Elephant is in the 'peers' extra.
    elephant_statistics = pytest.importorskip("elephant.statistics")
    rng = np.random.default_rng(3)
    counts = rng.poisson(6.0, size=(25, 3, 4))
    ours = fano_factor(make_responses(counts.astype(float)), ddof=0)
    for s in range(3):
        for u in range(4):
            trains = [np.sort(rng.uniform(0, 1, size=c)) for c in counts[:, s, u]]
            theirs = elephant_statistics.fanofactor(trains)
            np.testing.assert_allclose(ours.values[s, u], theirs, rtol=1e-12)
    # the default (ddof=1) is n / (n - 1) times Elephant's value, as documented
    n = counts.shape[0]
    default = fano_factor(make_responses(counts.astype(float)))
    np.testing.assert_allclose(default.values, ours.values * n / (n - 1), rtol=1e-12)
    assert not np.allclose(default.values, ours.values)


def test_nan_padded_trials_are_skipped(make_responses):
    rng = np.random.default_rng(4)
    x = rng.poisson(5.0, size=(10, 3, 2)).astype(float)
    x[7:, 0, :] = np.nan  # stimulus 0 has only 7 repeats
    x[9:, 2, :] = np.nan
    ff = fano_factor(make_responses(x))
    expect = np.nanvar(x, axis=0, ddof=1) / np.nanmean(x, axis=0)
    np.testing.assert_allclose(ff.values, expect)
    assert np.all(np.isfinite(ff.values))


def test_zero_mean_gives_nan_with_count_in_warning(make_responses):
    x = 1.0 + np.random.default_rng(3).poisson(2.0, size=(5, 2, 3))  # variable, positive
    x[:, 0, 1] = 0.0
    x[:, 1, 2] = 0.0
    with pytest.warns(RuntimeWarning, match="2 of 6"):
        ff = fano_factor(make_responses(x))
    assert np.isnan(ff.values[0, 1]) and np.isnan(ff.values[1, 2])
    assert np.sum(np.isnan(ff.values)) == 2
    assert not np.any(np.isinf(ff.values))


def test_dask_input_stays_lazy_and_matches(make_responses):
    rng = np.random.default_rng(5)
    da = make_responses(rng.poisson(3.0, size=(12, 6, 5)).astype(float) + 0.5)
    lazy = fano_factor(da.chunk({"stimulus": 2}))
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.compute().values, fano_factor(da).values)


def test_renamed_dims_and_clear_errors(make_responses):
    rng = np.random.default_rng(6)
    da = make_responses(rng.poisson(3.0, size=(8, 2, 3)).astype(float) + 1)
    renamed = da.rename(trial="repeat", unit="neuron")
    ff = fano_factor(renamed, trial_dim="repeat", unit_dim="neuron")
    np.testing.assert_allclose(ff.values, fano_factor(da).values)
    with pytest.raises(ValueError, match="missing"):
        fano_factor(renamed)
    with pytest.raises(ValueError, match="'ddof' parameter of fano_factor"):
        fano_factor(da, ddof=-1)
    with pytest.raises(TypeError, match="'responses' parameter"):
        fano_factor(da.values)


def test_mean_matched_poisson_is_one(make_responses, global_rng_guard):
    rng = np.random.default_rng(7)
    rates = rng.gamma(2.0, 3.0, size=(1, 20, 30))
    counts = rng.poisson(rates, size=(50, 20, 30)).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a few all-zero points
        out = mean_matched_fano_factor(make_responses(counts), n_resamples=5, rng=0)
    assert set(out.data_vars) >= {"fano_factor", "ci_low", "ci_high"}
    ff = float(out.fano_factor[0])
    assert abs(ff - 1.0) < 0.05
    assert float(out.ci_low[0]) < ff < float(out.ci_high[0])


def _rate_dependent_counts(rng, rates, n_trials):
    """Counts whose Fano factor grows with rate: F = 1 + rate / 10 (gamma-Poisson)."""
    theta = rates / 10.0
    shape = rates / theta
    lam = rng.gamma(shape, theta, size=(n_trials,) + rates.shape[1:])
    return rng.poisson(lam).astype(float)


def test_mean_matching_removes_rate_confound(global_rng_guard):
    # Same rate -> Fano relation in both conditions, but condition B has higher rates, so its
    # raw Fano factor is higher. Matching the mean distributions makes them equal.
    rng = np.random.default_rng(8)
    n_trial, n_stim, n_unit = 40, 10, 40
    rates_a = rng.uniform(1.0, 12.0, size=(1, n_stim, n_unit))
    rates_b = rng.uniform(4.0, 20.0, size=(1, n_stim, n_unit))
    x = np.stack([_rate_dependent_counts(rng, r, n_trial) for r in (rates_a, rates_b)], axis=-1)
    da = xr.DataArray(
        x, dims=("trial", "stimulus", "unit", "window"), coords={"window": ["pre", "post"]}
    )
    out = mean_matched_fano_factor(da, condition="window", n_bins=8, n_resamples=20, rng=1)
    assert list(out.window.values) == ["pre", "post"]
    raw = out.fano_factor_raw.values
    matched = out.fano_factor.values
    assert raw[1] - raw[0] > 0.2  # confounded by rate
    assert abs(matched[1] - matched[0]) < 0.5 * (raw[1] - raw[0])
    assert abs(matched[1] - matched[0]) < 0.12
    assert out.n_points.values[0] == out.n_points.values[1] > 0


def test_mean_matched_condition_from_stimulus_coordinate_and_rng(make_responses):
    rng = np.random.default_rng(9)
    da = make_responses(rng.poisson(rng.uniform(1, 10, (1, 12, 10)), (20, 12, 10)) + 0.0)
    a = mean_matched_fano_factor(da, condition="label", n_resamples=4, rng=3)
    b = mean_matched_fano_factor(da, condition="label", n_resamples=4, rng=3)
    c = mean_matched_fano_factor(da, condition="label", n_resamples=4, rng=4)
    assert a.sizes["label"] == 3
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a.fano_factor.values, c.fano_factor.values)


def test_mean_matched_bad_parameters(make_responses):
    da = make_responses(np.ones((4, 2, 2)))
    with pytest.raises(ValueError, match="'condition' parameter"):
        mean_matched_fano_factor(da, condition="nope")
    with pytest.raises(ValueError, match="'n_resamples' parameter"):
        mean_matched_fano_factor(da, n_resamples=0)
    with pytest.raises(ValueError, match="'confidence_level' parameter"):
        mean_matched_fano_factor(da, confidence_level=1.5)
    with pytest.raises(TypeError, match="'rng' parameter"):
        mean_matched_fano_factor(da, rng="seed")


def test_regression_matches_statsmodels_wls():
    import statsmodels.api as sm

    from neurovar.stats.variability import _weights, _wls_origin

    rng = np.random.default_rng(10)
    m = rng.uniform(1, 10, 50)
    v = 1.3 * m + rng.normal(0, 1, 50)
    n = rng.integers(5, 30, 50).astype(float)
    slope, lo, hi = _wls_origin(m, v, _weights(m, n), 0.95)
    fit = sm.WLS(v, m[:, None], weights=_weights(m, n)).fit()
    np.testing.assert_allclose(slope, fit.params[0])
    np.testing.assert_allclose([lo, hi], fit.conf_int(0.05)[0])


def test_negative_means_warn(make_responses):
    x = np.ones((4, 1, 2)) * 2.0
    x[:, 0, 1] = [-1.0, -2.0, -1.5, -3.0]
    with pytest.warns(RuntimeWarning, match="1 .stimulus, unit. entries have a negative mean"):
        fano_factor(make_responses(x))


def test_mean_matched_accepts_dask_input(make_responses):
    rng = np.random.default_rng(11)
    da = make_responses(rng.poisson(rng.uniform(1, 10, (1, 8, 6)), (15, 8, 6)) + 0.0)
    eager = mean_matched_fano_factor(da, n_resamples=3, rng=2)
    lazy = mean_matched_fano_factor(da.chunk({"stimulus": 3}), n_resamples=3, rng=2)
    xr.testing.assert_allclose(eager, lazy)


def test_fano_factor_refuses_mean_subtracted_residuals():
    import numpy as np
    import pytest
    import xarray as xr

    from neurovar.stats import fano_factor, mean_matched_fano_factor, noise_correlation

    gen = np.random.default_rng(0)
    counts = gen.poisson(5.0, size=(20, 3, 4)).astype(float)
    resid = xr.DataArray(counts - counts.mean(0), dims=("trial", "stimulus", "unit"))
    resid.attrs["mean_subtracted"] = 1
    for func in (fano_factor, mean_matched_fano_factor):
        with pytest.raises(ValueError, match="mean-subtracted residuals"):
            func(resid)
    noise_correlation(resid)  # still valid on residuals
    resid.attrs["mean_subtracted"] = 0
    assert fano_factor(xr.DataArray(counts, dims=resid.dims)).notnull().all()


def test_dataset_input_is_a_clear_error_and_float32_matches_float64(make_responses):
    rng = np.random.default_rng(12)
    da = make_responses(rng.poisson(4.0, size=(12, 3, 4)) + 0.5)
    with pytest.raises(TypeError, match="'responses' parameter must be a DataArray"):
        fano_factor(da.to_dataset(name="activation"))
    with pytest.raises(TypeError, match="'responses' parameter must be a DataArray"):
        mean_matched_fano_factor(da.to_dataset(name="activation"))
    f32 = fano_factor(da.astype(np.float32))
    assert f32.dtype == np.float64
    np.testing.assert_allclose(f32.values, fano_factor(da).values, rtol=1e-12)


def test_dask_fano_is_free_of_numpy_warnings(make_responses):
    x = np.ones((5, 4, 3))
    x[:, :, 1] = 0.0  # zero mean
    lazy = fano_factor(make_responses(x).chunk({"stimulus": 2}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = lazy.compute().values
    assert np.isnan(values[:, 1]).all() and not np.isinf(values).any()


def test_zero_variance_gives_nan_with_a_count():
    import numpy as np
    import pytest
    import xarray as xr

    from neurovar.stats import fano_factor

    counts = np.random.default_rng(1).poisson(4.0, size=(12, 2, 3)).astype(float)
    counts[:, 0, 1] = 3.0  # deterministic, positive mean
    counts[:, 1, 2] = 0.0  # silent
    da = xr.DataArray(counts, dims=("trial", "stimulus", "unit"))
    with pytest.warns(RuntimeWarning, match="2 of 6"):
        ff = fano_factor(da)
    assert np.isnan(ff.values[0, 1]) and np.isnan(ff.values[1, 2])
    assert int(ff.isnull().sum()) == 2 and np.isfinite(ff.values).sum() == 4


def test_mean_matched_fano_factor_pinned_by_hand(make_responses):
    """Weights w = (n - 1) / (2 m^2) (inverse sampling variance of a Poisson-like variance).

    Three (stimulus, unit) points, worked out by hand (ddof=1):
      A: trials 1, 2, 3, 2      -> m = 2, v = 2/3, n = 4
      B: trials 4, 8, 6, 6      -> m = 6, v = 8/3, n = 4
      C: trials 3, 5, NaN, NaN  -> m = 4, v = 2,   n = 2
    F = sum(w m v) / sum(w m^2) = sum((n-1) v/m) / sum(n-1) = (1 + 4/3 + 1/2) / 7 = 17/42.
    (Weights 1/m would give 3/7, equal weights 23/54: both must fail.)
    """
    x = np.array([[1, 4, 3], [2, 8, 5], [3, 6, np.nan], [2, 6, np.nan]], float)[:, :, None]
    res = mean_matched_fano_factor(
        make_responses(x), n_bins=1, n_resamples=1, confidence_level=0.9, rng=0
    ).squeeze("condition")
    assert float(res.fano_factor) == pytest.approx(17 / 42, rel=1e-12)
    assert float(res.fano_factor_raw) == pytest.approx(17 / 42, rel=1e-12)
    assert int(res.n_points) == 3
    # t-interval of the weighted slope through the origin, k - 1 = 2 degrees of freedom
    m, v, n = np.array([2.0, 6.0, 4.0]), np.array([2 / 3, 8 / 3, 2.0]), np.array([4.0, 4.0, 2.0])
    w = (n - 1) / (2 * m**2)
    sxx = np.sum(w * m**2)  # = 7/2
    assert sxx == pytest.approx(3.5)
    s2 = np.sum(w * (v - 17 / 42 * m) ** 2) / 2
    half = 2.9199855803537242 * np.sqrt(s2 / sxx)  # scipy.stats.t.ppf(0.95, 2)
    assert float(res.ci_low) == pytest.approx(17 / 42 - half, rel=1e-9)
    assert float(res.ci_high) == pytest.approx(17 / 42 + half, rel=1e-9)
