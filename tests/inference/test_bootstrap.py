"""Tests for neurovar.inference.bootstrap: coverage in simulation, hierarchy, errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats as sps

from neurovar.inference import bootstrap_ci


def _coverage(res, truth):
    return float(((res.ci_low <= truth) & (res.ci_high >= truth)).mean())


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_flat_coverage_of_the_mean(method):
    # 1000 normal data sets of 100 observations; the 95% interval must cover the true mean
    # 95 +- 2.5 % of the time.
    rng = np.random.default_rng(2026)
    data = xr.DataArray(rng.normal(3.0, 2.0, (1000, 100)), dims=("dataset", "trial"))
    res = bootstrap_ci(data, "mean", dim="trial", n_resamples=999, method=method, batch=100, rng=1)
    cov = _coverage(res, 3.0)
    assert abs(cov - 0.95) <= 0.025, cov
    # sharper: on the same data sets the exact t interval's coverage is matched closely
    # (these 1000 data sets happen to give the t interval 97.1% coverage)
    x = data.values
    half = sps.t.ppf(0.975, 99) * x.std(axis=1, ddof=1) / 10
    t_cov = np.mean(np.abs(x.mean(axis=1) - 3.0) <= half)
    assert abs(cov - t_cov) <= 0.015, (cov, t_cov)
    # SE of the mean is sigma / sqrt(n) = 0.2
    assert float(res.standard_error.mean()) == pytest.approx(0.2, rel=0.05)


def test_hierarchical_coverage_and_flat_bootstrap_fails_on_nested_data():
    # 1000 data sets of 40 seeds x 5 units; seed effect SD 1, unit SD 1, true mean 0.
    rng = np.random.default_rng(77)
    x = rng.normal(0, 1, (1000, 40, 1)) + rng.normal(0, 1, (1000, 40, 5))
    data = xr.DataArray(x, dims=("dataset", "seed", "unit"))
    res = bootstrap_ci(
        data, "mean", dim="unit", group_dim="seed", n_resamples=299, method="percentile", rng=3
    )
    cov = _coverage(res, 0.0)
    assert abs(cov - 0.95) <= 0.025, cov
    # true SE of the grand mean: sqrt(1/40 + 1/200); two stages over-estimate it slightly
    assert float(res.standard_error.mean()) == pytest.approx(np.sqrt(1 / 40 + 1 / 200), rel=0.1)
    # treating the 200 units as independent ignores the seed effect: far too narrow
    sub = data.isel(dataset=slice(0, 200)).stack(obs=("seed", "unit"))
    flat = bootstrap_ci(
        sub, "mean", dim="obs", n_resamples=299, method="percentile", batch=50, rng=3
    )
    assert _coverage(flat, 0.0) < 0.75


def test_flat_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.exponential(size=40)
    ours = bootstrap_ci(x, "median", n_resamples=999, rng=5)
    ref = sps.bootstrap((x,), np.median, n_resamples=999, rng=np.random.default_rng(5))
    assert float(ours.ci_low) == pytest.approx(ref.confidence_interval.low)
    assert float(ours.ci_high) == pytest.approx(ref.confidence_interval.high)
    assert float(ours.statistic) == pytest.approx(np.median(x))
    assert float(ours.standard_error) == pytest.approx(ref.standard_error)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_hierarchical_with_one_unit_per_group_equals_scipy_bootstrap(method):
    # With one unit per group the two-stage bootstrap is the ordinary bootstrap of the groups;
    # our hand-written BCa (group jackknife) must reproduce scipy's exactly, same draws.
    rng = np.random.default_rng(0)
    x = rng.exponential(size=25)
    data = xr.DataArray(x[:, None], dims=("seed", "unit"))
    ours = bootstrap_ci(
        data, dim="unit", group_dim="seed", n_resamples=5000, batch=5000, method=method, rng=1
    )
    ref = sps.bootstrap(
        (x,), np.mean, n_resamples=5000, method=method, rng=np.random.default_rng(1)
    )
    assert float(ours.ci_low) == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert float(ours.ci_high) == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert float(ours.standard_error) == pytest.approx(ref.standard_error, rel=1e-12)


def test_hierarchical_keeps_coords_and_counts():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (2, 15, 1)) + rng.normal(0, 1, (2, 15, 8))
    data = xr.DataArray(
        x, dims=("layer", "seed", "unit"), coords={"layer": ["conv", "fc"], "seed": np.arange(15)}
    )
    bca = bootstrap_ci(data, dim="unit", group_dim="seed", n_resamples=999, rng=0)
    assert bca.ci_low.dims == ("layer",) and list(bca.layer.values) == ["conv", "fc"]
    assert bca.bootstrap_distribution.dims == ("layer", "resample")
    assert "seed" not in bca.coords
    np.testing.assert_allclose(bca.statistic, x.mean(axis=(1, 2)))
    assert np.all(bca.ci_low < bca.statistic) and np.all(bca.statistic < bca.ci_high)
    assert list(bca.n_groups.values) == [15, 15] and list(bca.n.values) == [120, 120]
    # each layer equals a separate call with the same draws
    one = bootstrap_ci(data.isel(layer=1), dim="unit", group_dim="seed", n_resamples=999, rng=0)
    assert float(one.ci_high) == pytest.approx(float(bca.ci_high[1]))


def test_resample_within_false_uses_group_means_only():
    # with resample_within=False and equal group sizes, the bootstrap distribution of the mean
    # is the bootstrap of the group means; its SE ~ SD(group means) * sqrt((S-1)/S) / sqrt(S)
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (1, 20, 1)) + rng.normal(0, 1, (1, 20, 6))
    data = xr.DataArray(x[0], dims=("seed", "unit"))
    res = bootstrap_ci(
        data, dim="unit", group_dim="seed", resample_within=False, n_resamples=4000, rng=0
    )
    means = x[0].mean(axis=1)
    expected = means.std(ddof=0) / np.sqrt(20)
    assert float(res.standard_error) == pytest.approx(expected, rel=0.05)
    both = bootstrap_ci(data, dim="unit", group_dim="seed", n_resamples=4000, rng=0)
    assert float(both.standard_error) > float(res.standard_error)


def test_ragged_groups_with_nan_omit():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (12, 6))
    x[0, 3:] = np.nan  # seed 0 has only 3 units
    x[5, 1:] = np.nan
    data = xr.DataArray(x, dims=("seed", "unit"))
    with pytest.raises(ValueError, match="nan_policy='omit'"):
        bootstrap_ci(data, dim="unit", group_dim="seed")
    res = bootstrap_ci(
        data,
        dim="unit",
        group_dim="seed",
        nan_policy="omit",
        n_resamples=999,
        method="percentile",
        rng=0,
    )
    assert float(res.statistic) == pytest.approx(np.nanmean(x))
    assert int(res.n) == 12 * 6 - 3 - 5
    assert np.isfinite(res.bootstrap_distribution).all()
    assert float(res.ci_low) < float(res.statistic) < float(res.ci_high)


def test_flat_nan_omit_and_reproducibility():
    rng = np.random.default_rng(4)
    x = xr.DataArray(rng.normal(size=(2, 30)), dims=("unit", "trial"))
    x[0, 0] = np.nan
    res = bootstrap_ci(x, dim="trial", nan_policy="omit", n_resamples=499, rng=1)
    assert int(res.n[0]) == 29 and int(res.n[1]) == 30
    assert float(res.statistic[0]) == pytest.approx(float(x[0, 1:].mean()))
    state = np.random.get_state()[1].copy()
    r1 = bootstrap_ci(x[1], n_resamples=199, rng=7)
    r2 = bootstrap_ci(x[1], n_resamples=199, rng=7)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    xr.testing.assert_identical(r1, r2)


def test_errors_and_warning():
    data = xr.DataArray(np.ones((3, 4)), dims=("seed", "unit"))
    with pytest.raises(ValueError, match="'dim' parameter must name"):
        bootstrap_ci(data)
    with pytest.raises(ValueError, match="'group_dim' parameter.*'animal'"):
        bootstrap_ci(data, dim="unit", group_dim="animal")
    with pytest.raises(ValueError, match="must differ"):
        bootstrap_ci(data, dim="unit", group_dim="unit")
    with pytest.raises(ValueError, match="'dim' parameter.*units within each 'seed'"):
        bootstrap_ci(data, group_dim="seed")
    with pytest.raises(ValueError, match="'method' parameter.*'studentized'"):
        bootstrap_ci(data, dim="unit", method="studentized")
    with pytest.raises(ValueError, match="'confidence_level'.*Got 95"):
        bootstrap_ci(data, dim="unit", confidence_level=95)
    with pytest.raises(ValueError, match="at least 2 non-empty groups"):
        bootstrap_ci(data.isel(seed=[0]), dim="unit", group_dim="seed")
    with pytest.raises(TypeError, match="'statistic' parameter"):
        bootstrap_ci(data, 3, dim="unit")
    rng = np.random.default_rng(0)
    few = xr.DataArray(rng.normal(size=(5, 4)), dims=("seed", "unit"))
    with pytest.warns(UserWarning, match="only 5 groups"):
        bootstrap_ci(few, dim="unit", group_dim="seed", n_resamples=99, rng=0)


def test_flat_bootstrap_is_batched_by_default_without_changing_the_result(scipy_batches):
    # scipy evaluates every resample at once unless told otherwise (B x n x positions values;
    # 80 GB for 1000 units x 1000 trials x 9999 resamples); the default batch bounds that
    batches = scipy_batches("bootstrap", max_values=20_000)
    x = xr.DataArray(np.random.default_rng(5).normal(size=(4, 100)), dims=("unit", "trial"))
    res = bootstrap_ci(x, dim="trial", n_resamples=999, rng=2)
    assert batches == [50]  # 20_000 values / (4 x 100) per resample
    full = bootstrap_ci(x, dim="trial", n_resamples=999, batch=999, rng=2)
    xr.testing.assert_identical(res, full)


@pytest.mark.parametrize("group_dim", [None, "seed"])
def test_basic_interval_is_the_percentile_interval_reflected_about_the_estimate(group_dim):
    rng = np.random.default_rng(3)
    data = xr.DataArray(rng.exponential(size=(12, 8)), dims=("seed", "unit"))
    if group_dim is None:
        data = data.isel(seed=0)
    kw = dict(dim="unit", group_dim=group_dim, n_resamples=500, rng=7)
    pct = bootstrap_ci(data, "mean", method="percentile", **kw)
    basic = bootstrap_ci(data, "mean", method="basic", **kw)
    theta = float(pct.statistic)
    np.testing.assert_allclose(float(basic.ci_low), 2 * theta - float(pct.ci_high))
    np.testing.assert_allclose(float(basic.ci_high), 2 * theta - float(pct.ci_low))
    assert basic.attrs["method"] == "basic"


def test_too_few_resamples_for_the_level_warns_naming_them():
    """A 99.9% BCa interval from 99 resamples: each tail (0.0005) lies beyond the most extreme
    of 99 resamples, so the limits are the sample's min and max, whatever the level says."""
    import warnings

    data = xr.DataArray(np.random.default_rng(0).normal(size=50), dims=("trial",))
    with pytest.warns(UserWarning, match=r"n_resamples=99 is too few for a 99.9% BCa.*>= 1999"):
        res = bootstrap_ci(data, "mean", n_resamples=99, confidence_level=0.999, rng=0)
    assert np.isfinite(float(res.ci_low))
    with pytest.warns(UserWarning, match=r"n_resamples=99 is too few for a 99% percentile"):
        bootstrap_ci(data, "mean", n_resamples=99, confidence_level=0.99, method="percentile",
                     rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bootstrap_ci(data, "mean", n_resamples=1999, confidence_level=0.999, rng=0)
        bootstrap_ci(data, "mean", n_resamples=99, confidence_level=0.95, rng=0)
        bootstrap_ci(data, "mean", n_resamples=39, confidence_level=0.95, rng=0)  # the floor
    with pytest.warns(UserWarning, match="n_resamples=38"):
        bootstrap_ci(data, "mean", n_resamples=38, confidence_level=0.95, rng=0)
