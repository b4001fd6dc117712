"""Tests of neurovar.stats.correlation: noise (r_sc) and signal correlations."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neurovar.stats import noise_correlation, noise_covariance, signal_correlation


def _brute_force_rsc(x: np.ndarray) -> np.ndarray:
    """z-score each unit within each stimulus (ddof=1, NaN trials dropped), pool, corrcoef."""
    pooled = []
    for s in range(x.shape[1]):
        xs = x[:, s, :]
        xs = xs[~np.isnan(xs).any(axis=1)]
        pooled.append((xs - xs.mean(axis=0)) / xs.std(axis=0, ddof=1))
    return np.corrcoef(np.concatenate(pooled), rowvar=False)


def test_independent_noise_gives_zero_correlation(make_responses):
    rng = np.random.default_rng(0)
    x = rng.poisson(rng.uniform(2, 10, size=(1, 20, 10)), size=(50, 20, 10)).astype(float)
    r = noise_correlation(make_responses(x)).values
    off = r[~np.eye(10, dtype=bool)]
    # 980 residual dof: sd of each r is ~0.032
    assert abs(off.mean()) < 0.015
    assert np.abs(off).max() < 0.15
    np.testing.assert_allclose(np.diag(r), 1.0)


def test_recovers_known_correlation(gaussian_population):
    da, cov = gaussian_population
    true = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    r = noise_correlation(da)
    dof = 60 * 12 - 12
    # elementwise: within 4 standard errors, se(r) ~ (1 - rho^2) / sqrt(dof)
    assert np.all(np.abs(r.values - true) <= 4 * (1 - true**2) / np.sqrt(dof) + 1e-12)
    np.testing.assert_allclose(r.values, r.values.T)


def test_matches_brute_force_numpy(gaussian_population):
    da, _ = gaussian_population
    np.testing.assert_allclose(
        noise_correlation(da).values, _brute_force_rsc(da.values), atol=1e-12
    )


def test_per_stimulus_matches_corrcoef(gaussian_population):
    da, _ = gaussian_population
    r = noise_correlation(da, method="per_stimulus")
    assert r.dims == ("stimulus", "unit", "unit_j")
    assert "stimulus_id" in r.coords
    for s in range(da.sizes["stimulus"]):
        np.testing.assert_allclose(
            r.values[s], np.corrcoef(da.values[:, s, :], rowvar=False), atol=1e-12
        )


def test_pairwise_coords_are_suffixed(gaussian_population):
    da, _ = gaussian_population
    r = noise_correlation(da)
    assert r.dims == ("unit", "unit_j")
    assert list(r.unit_id_j.values) == list(da.unit_id.values)
    assert r.unit_id.dims == ("unit",) and r.channel_j.dims == ("unit_j",)
    picked = r.isel(unit=int(np.flatnonzero(r.unit_id == "u1")[0]))
    picked = picked.isel(unit_j=int(np.flatnonzero(r.unit_id_j == "u2")[0]))
    assert float(picked) == float(r[1, 2])


def test_nan_padded_trials_match_dropping_them(make_responses):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 5, 4)) + rng.standard_normal((1, 5, 4))
    x[9:, 1, :] = np.nan
    x[6:, 3, :] = np.nan
    np.testing.assert_allclose(
        noise_correlation(make_responses(x)).values, _brute_force_rsc(x), atol=1e-12
    )


def test_zero_variance_unit_is_nan_with_warning(make_responses):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 4, 5))
    x[:, :, 3] = 7.0
    with pytest.warns(RuntimeWarning, match="1 of 5 units"):
        r = noise_correlation(make_responses(x))
    assert np.all(np.isnan(r.values[3])) and np.all(np.isnan(r.values[:, 3]))
    assert np.all(np.isfinite(np.delete(np.delete(r.values, 3, 0), 3, 1)))


def test_unit_constant_within_one_stimulus_is_counted(make_responses):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 4, 3))
    x[:, 2, 0] = 0.0  # unit 0 silent to stimulus 2
    r = noise_correlation(make_responses(x))
    assert r.attrs["n_constant_cells"] == 1
    assert np.all(np.isfinite(r.values))


def test_dask_backed_input_gives_identical_results(make_responses):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((15, 9, 6)) + rng.standard_normal((1, 9, 6)) * 4
    x[11:, 4, :] = np.nan
    da = make_responses(x)
    expect = noise_correlation(da).values
    for chunks in (1, 2, 4):
        got = noise_correlation(da.chunk({"stimulus": chunks}))
        np.testing.assert_allclose(got.values, expect, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(noise_correlation(da, chunk_size=2).values, expect, atol=1e-14)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    offsets=arrays(
        np.float64,
        (6, 4),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    )
)
def test_per_stimulus_offsets_leave_noise_statistics_unchanged(offsets):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 6, 4)) @ np.array(
        [[1, 0.5, 0, 0], [0, 1, 0.3, 0], [0, 0, 1, 0.2], [0, 0, 0, 1.0]]
    )
    x[8:, 2, :] = np.nan
    base = xr.DataArray(x, dims=("trial", "stimulus", "unit"))
    shifted = base + offsets[None]
    np.testing.assert_allclose(
        noise_correlation(shifted).values, noise_correlation(base).values, atol=1e-9
    )
    np.testing.assert_allclose(
        noise_covariance(shifted).values, noise_covariance(base).values, atol=1e-9
    )


def test_signal_correlation_matches_corrcoef_of_means(make_responses):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 10, 4)) + rng.standard_normal((1, 10, 4)) * 3
    x[6:, 0, :] = np.nan
    got = signal_correlation(make_responses(x))
    np.testing.assert_allclose(
        got.values, np.corrcoef(np.nanmean(x, axis=0), rowvar=False), atol=1e-12
    )
    assert got.dims == ("unit", "unit_j")


def test_signal_correlation_flat_tuning_warns(make_responses):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 5, 3))
    x[:, :, 1] = 2.0
    with pytest.warns(RuntimeWarning, match="1 of 3 units"):
        got = signal_correlation(make_responses(x))
    assert np.isnan(got.values[1, 0])


def test_bad_input_errors(make_responses):
    da = make_responses(np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="'method' parameter of noise_correlation"):
        noise_correlation(da, method="mean")
    with pytest.raises(ValueError, match="extra dims"):
        noise_correlation(da.expand_dims(layer=2))
    with pytest.raises(ValueError, match="at least 2 entries along 'trial'"):
        noise_correlation(da.isel(trial=[0]))
    with pytest.raises(TypeError, match="real numbers"):
        noise_correlation(da.astype(bool))
    renamed = da.rename(unit="neuron")
    with pytest.raises(ValueError, match="neuron"):
        noise_correlation(renamed)


def test_dask_input_is_computed_one_stimulus_chunk_at_a_time():
    import dask.array as dsa

    rng = np.random.default_rng(8)
    values = rng.standard_normal((9, 10, 5)) + rng.standard_normal((1, 10, 5))
    seen = []

    def load(block, block_info=None):
        seen.append(block.shape)
        return block

    lazy = dsa.from_array(values, chunks=(9, 2, 5)).map_blocks(load, dtype=float)
    got = noise_correlation(xr.DataArray(lazy, dims=("trial", "stimulus", "unit")))
    real_calls = [s for s in seen if s != (0, 0, 0) and np.prod(s) > 1]
    assert len(real_calls) == 5  # each of the 5 chunks loaded exactly once
    assert all(s[1] <= 2 for s in real_calls)  # never more than one chunk of stimuli
    np.testing.assert_allclose(got.values, _brute_force_rsc(values), atol=1e-12)


def test_progress_bar_option(gaussian_population, capsys):
    da, _ = gaussian_population
    quiet = noise_correlation(da, chunk_size=4)
    loud = noise_correlation(da, chunk_size=4, progress=True)
    xr.testing.assert_identical(quiet, loud)
    assert "noise_correlation" in capsys.readouterr().err


def test_per_stimulus_and_signal_correlation_on_dask(gaussian_population):
    da, _ = gaussian_population
    lazy = da.chunk({"stimulus": 5})
    per = noise_correlation(lazy, method="per_stimulus")
    xr.testing.assert_allclose(per, noise_correlation(da, method="per_stimulus"))
    assert per.stimulus_id.chunks is None  # coordinates come back computed
    xr.testing.assert_allclose(signal_correlation(lazy), signal_correlation(da))


def test_constant_unit_with_inexact_mean_is_zero_variance(make_responses):
    # Ten copies of 0.1 average to 0.10000000000000002: the residuals must be exactly 0, not
    # rounding error that z-scores to +-1 and correlates with everything.
    rng = np.random.default_rng(9)
    x = rng.standard_normal((10, 4, 3)) + 1.0
    x[:, :, 1] = 0.1
    da = make_responses(x)
    with pytest.warns(RuntimeWarning, match="1 of 3 units have zero trial-to-trial variance"):
        r = noise_correlation(da)
    assert np.isnan(r.values[1]).all() and np.isnan(r.values[:, 1]).all()
    np.testing.assert_allclose(r.values[np.ix_([0, 2], [0, 2])], _brute_force_rsc(x[..., [0, 2]]))
    assert noise_covariance(da).values[1, 1] == 0.0
    with pytest.warns(RuntimeWarning, match="1 of 3 units have the same mean response"):
        s = signal_correlation(da)
    assert np.isnan(s.values[1]).all()


def test_signal_correlation_unit_without_trials_is_nan_not_an_error(make_responses):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 8, 4)) + rng.standard_normal((1, 8, 4)) * 2
    x[:, :, 2] = np.nan  # a neuron that was never recorded
    x[4:, 3, :] = np.nan  # and unequal repeats
    with pytest.warns(RuntimeWarning, match="1 of 4 units"):
        got = signal_correlation(make_responses(x))
    keep = [0, 1, 3]
    expect = np.corrcoef(np.nanmean(x[..., keep], axis=0), rowvar=False)
    np.testing.assert_allclose(got.values[np.ix_(keep, keep)], expect, atol=1e-12)
    assert np.isnan(got.values[2]).all()


def test_pairwise_results_keep_the_channel_index(make_responses):
    rng = np.random.default_rng(11)
    da = make_responses(rng.standard_normal((8, 3, 8))).set_xindex("channel")
    for r in (noise_correlation(da), signal_correlation(da), noise_covariance(da)):
        picked = r.sel(channel=1, channel_j=2)
        assert picked.dims == ("unit", "unit_j") and picked.shape == (2, 2)
        np.testing.assert_array_equal(picked.unit_id.values, ["u1", "u5"])
        np.testing.assert_array_equal(picked.unit_id_j.values, ["u2", "u6"])
