"""Tests for neurovar.inference.permutation: calibration, power, exactness, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import xarray as xr
from scipy import stats as sps

from neurovar.inference import cohens_d, permutation_test, rank_biserial


def _datasets(rng, n_sets, n_a, n_b, shift=0.0):
    a = xr.DataArray(rng.normal(shift, 1.0, (n_sets, n_a)), dims=("dataset", "seed"))
    b = xr.DataArray(rng.normal(0.0, 1.0, (n_sets, n_b)), dims=("dataset", "seed"))
    return a, b


# ------------------------------------------------------------------------------ calibration


def test_type_one_error_exact_independent():
    # 2000 null data sets, 6 + 6 samples: C(12, 6) = 924 rearrangements, enumerated exactly.
    rng = np.random.default_rng(20261125)
    a, b = _datasets(rng, 2000, 6, 6)
    res = permutation_test(a, b, dim="seed", n_permutations=9999, batch=200, rng=0)
    assert res.attrs["exact"] == 1 and res.attrs["n_resamples"] == 924
    rate = float((res.p_value <= 0.05).mean())
    assert abs(rate - 0.05) <= 0.015, rate


def test_type_one_error_exact_paired():
    # 2000 null data sets of 10 pairs with a shared pair effect: 2**10 sign flips, exact.
    rng = np.random.default_rng(11)
    pair = rng.normal(0, 3.0, (2000, 10))
    a = xr.DataArray(pair + rng.normal(size=(2000, 10)), dims=("dataset", "stimulus"))
    b = xr.DataArray(pair + rng.normal(size=(2000, 10)), dims=("dataset", "stimulus"))
    res = permutation_test(a, b, dim="stimulus", paired=True, batch=256, rng=0)
    assert res.attrs["exact"] == 1 and res.attrs["n_resamples"] == 1024
    rate = float((res.p_value <= 0.05).mean())
    assert abs(rate - 0.05) <= 0.015, rate


@pytest.mark.parametrize("statistic", ["mean_difference", "t"])
def test_type_one_error_monte_carlo(statistic):
    # 2000 null data sets, 12 + 12 samples (2.7 million rearrangements): random permutations.
    # Data sets are tested in 100 calls of 20 so that the Monte Carlo draws (shared within a
    # vectorized call) do not make the 2000 rejections strongly dependent.
    rng = np.random.default_rng(5)
    rejections = []
    for k in range(100):
        a, b = _datasets(rng, 20, 12, 12)
        res = permutation_test(a, b, dim="seed", statistic=statistic, n_permutations=199, rng=k)
        assert res.attrs["exact"] == 0 and res.sizes["permutation"] == 199
        rejections.append((res.p_value <= 0.05).values)
    rate = float(np.mean(rejections))
    assert abs(rate - 0.05) <= 0.015, rate


def test_power_against_known_shift():
    # shift of 1 SD with 20 + 20 samples: the t test has power ~0.87 at alpha = 0.05
    rng = np.random.default_rng(3)
    rejections = []
    for k in range(25):
        a, b = _datasets(rng, 20, 20, 20, shift=1.0)
        res = permutation_test(a, b, dim="seed", n_permutations=199, rng=k)
        rejections.append((res.p_value <= 0.05).values)
    power = float(np.mean(rejections))
    assert 0.75 <= power <= 0.97, power
    # and one-sided tests point the right way
    res = permutation_test(a, b, dim="seed", n_permutations=199, alternative="greater", rng=0)
    res_less = permutation_test(a, b, dim="seed", n_permutations=199, alternative="less", rng=0)
    assert float(res.p_value.median()) < 0.05 < float(res_less.p_value.median())


# ------------------------------------------------------------------------------ correctness


def test_matches_scipy_one_dimensional():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.5, 1, 15), rng.normal(0, 1, 17)
    ours = permutation_test(a, b, n_permutations=999, rng=42)
    ref = sps.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        vectorized=True,
        n_resamples=999,
        rng=np.random.default_rng(42),
    )
    assert float(ours.statistic) == pytest.approx(ref.statistic)
    assert float(ours.p_value) == pytest.approx(ref.pvalue)
    np.testing.assert_allclose(ours.null_distribution.values, ref.null_distribution)
    assert float(ours.statistic) == pytest.approx(a.mean() - b.mean())


def test_paired_exact_matches_brute_force_sign_flips():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 1, 7), rng.normal(0, 1, 7)
    res = permutation_test(a, b, paired=True, n_permutations=9999)
    d = a - b
    null = np.array([np.mean(d * s) for s in itertools.product([1, -1], repeat=7)])
    t = d.mean()
    p = min(1.0, 2 * min(np.mean(null >= t - 1e-12), np.mean(null <= t + 1e-12)))
    assert res.attrs["exact"] == 1
    assert float(res.p_value) == pytest.approx(p)
    np.testing.assert_allclose(np.sort(res.null_distribution.values), np.sort(null))


def test_studentized_statistic_close_to_welch_t_test():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.6, 1, 40), rng.normal(0, 2, 30)
    res = permutation_test(a, b, statistic="t", n_permutations=9999, rng=0)
    welch = sps.ttest_ind(a, b, equal_var=False)
    assert float(res.statistic) == pytest.approx(welch.statistic)
    assert float(res.p_value) == pytest.approx(welch.pvalue, abs=0.02)


def test_callable_statistic_and_median():
    rng = np.random.default_rng(4)
    a, b = rng.normal(2, 1, 9), rng.normal(0, 1, 9)

    def trimmed(x, y, axis):
        return sps.trim_mean(x, 0.2, axis=axis) - sps.trim_mean(y, 0.2, axis=axis)

    res = permutation_test(a, b, statistic=trimmed, n_permutations=499, rng=0)
    assert float(res.statistic) == pytest.approx(trimmed(a, b, axis=0))
    assert res.attrs["statistic"] == "trimmed"
    med = permutation_test(a, b, statistic="median_difference", n_permutations=499, rng=0)
    assert float(med.statistic) == pytest.approx(np.median(a) - np.median(b))
    ref = sps.permutation_test(
        (a, b),
        lambda x, y, axis: np.median(x, axis=axis) - np.median(y, axis=axis),
        vectorized=True,
        n_resamples=499,
        rng=np.random.default_rng(0),
    )
    assert float(med.p_value) == pytest.approx(ref.pvalue)
    assert float(med.p_value) < 0.05  # a 2-SD shift with 9 + 9 samples


def test_keeps_dims_coords_and_reports_effect_sizes():
    rng = np.random.default_rng(6)
    coords = {"layer": ["conv1", "conv2"], "unit": [10, 11, 12], "channel": ("unit", [0, 0, 1])}
    a = xr.DataArray(rng.normal(1, 1, (2, 15, 3)), dims=("layer", "trial", "unit"), coords=coords)
    b = xr.DataArray(rng.normal(0, 1, (2, 12, 3)), dims=("layer", "trial", "unit"), coords=coords)
    a = a.assign_coords(trial=np.arange(15))
    b = b.assign_coords(trial=np.arange(100, 112))
    res = permutation_test(a, b, dim="trial", n_permutations=199, rng=0)
    assert res.p_value.dims == ("layer", "unit")
    assert res.null_distribution.dims == ("layer", "unit", "permutation")
    assert list(res.layer.values) == ["conv1", "conv2"]
    assert list(res.channel.values) == [0, 0, 1]
    assert "trial" not in res.coords
    xr.testing.assert_allclose(res.cohens_d, cohens_d(a, b, dim="trial").rename("cohens_d"))
    xr.testing.assert_allclose(
        res.rank_biserial, rank_biserial(a, b, dim="trial").rename("rank_biserial")
    )
    assert int(res.n_a[0, 0]) == 15 and int(res.n_b[0, 0]) == 12
    np.testing.assert_allclose(res.mean_a.values, a.mean("trial").values)
    # every position agrees with a 1-D test using the same permutations
    one = permutation_test(
        a.isel(layer=1, unit=2), b.isel(layer=1, unit=2), dim="trial", n_permutations=199, rng=0
    )
    assert float(one.p_value) == pytest.approx(float(res.p_value.isel(layer=1, unit=2)))


def test_nan_omit_equals_dropping_by_hand():
    rng = np.random.default_rng(8)
    a = xr.DataArray(rng.normal(1, 1, (2, 7)), dims=("unit", "trial"))
    b = xr.DataArray(rng.normal(0, 1, (2, 7)), dims=("unit", "trial"))
    a[0, 3] = np.nan
    b[1, 0] = np.nan
    res = permutation_test(a, b, dim="trial", nan_policy="omit")
    ref0 = permutation_test(np.delete(a[0].values, 3), b[0].values)
    ref1 = permutation_test(a[1].values, np.delete(b[1].values, 0))
    assert float(res.p_value[0]) == pytest.approx(float(ref0.p_value))
    assert float(res.p_value[1]) == pytest.approx(float(ref1.p_value))
    assert list(res.n_a.values) == [6, 7] and list(res.n_b.values) == [7, 6]
    # paired: the NaN pair is dropped on both sides
    pres = permutation_test(a, b, dim="trial", paired=True, nan_policy="omit")
    pref = permutation_test(np.delete(a[0].values, 3), np.delete(b[0].values, 3), paired=True)
    assert float(pres.p_value[0]) == pytest.approx(float(pref.p_value))
    assert int(pres.n_a[0]) == 6


def test_reproducible_and_global_rng_untouched():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=30), rng.normal(size=30)
    state = np.random.get_state()[1].copy()
    r1 = permutation_test(a, b, n_permutations=99, rng=123)
    r2 = permutation_test(a, b, n_permutations=99, rng=np.random.default_rng(123))
    r3 = permutation_test(a, b, n_permutations=99, rng=124)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    xr.testing.assert_identical(r1, r2)
    assert not np.array_equal(r1.null_distribution.values, r3.null_distribution.values)


# ------------------------------------------------------------------------------ errors


def test_errors_are_clear():
    rng = np.random.default_rng(10)
    a = xr.DataArray(rng.normal(size=(10, 3)), dims=("seed", "layer"))
    with pytest.raises(ValueError, match="same dims apart from 'seed'"):
        permutation_test(
            a, xr.DataArray(rng.normal(size=(10, 3)), dims=("seed", "unit")), dim="seed"
        )
    with pytest.raises(ValueError, match="same size along 'layer'"):
        permutation_test(
            a, xr.DataArray(rng.normal(size=(10, 4)), dims=("seed", "layer")), dim="seed"
        )
    labelled = a.assign_coords(layer=["x", "y", "z"])
    with pytest.raises(ValueError, match="identical coordinate labels"):
        permutation_test(labelled, labelled.assign_coords(layer=["x", "y", "w"]), dim="seed")
    with pytest.raises(ValueError, match="'dim' parameter must name"):
        permutation_test(a, a)
    with pytest.raises(ValueError, match="must be a dimension of 'a'"):
        permutation_test(a, a, dim="trial")
    nan = a.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN.*nan_policy='omit'"):
        permutation_test(nan, a, dim="seed")
    with pytest.raises(ValueError, match="cannot reach p <= alpha=0.05.*3 pairs"):
        permutation_test(a[:3], a[:3] + 1, dim="seed", paired=True)
    with pytest.raises(ValueError, match="n_permutations=10"):
        permutation_test(a, a + 1, dim="seed", n_permutations=10)
    with pytest.raises(ValueError, match="at least 2 samples"):
        permutation_test(a[:1], a, dim="seed")
    with pytest.raises(ValueError, match="'seed' coordinate labels differ"):
        permutation_test(
            a.assign_coords(seed=np.arange(10)),
            a.assign_coords(seed=np.arange(10)[::-1]),
            dim="seed",
            paired=True,
        )
    with pytest.raises(ValueError, match="same length along 'seed' when paired"):
        permutation_test(a, a[:8], dim="seed", paired=True)
    with pytest.raises(ValueError, match="'alternative' parameter.*Got 'bigger'"):
        permutation_test(a, a, dim="seed", alternative="bigger")
    with pytest.raises(ValueError, match="'statistic' parameter"):
        permutation_test(a, a, dim="seed", statistic="mean")
    with pytest.raises(ValueError, match="'n_permutations' parameter.*int in \\[1, inf\\)"):
        permutation_test(a, a, dim="seed", n_permutations=0)
    with pytest.raises(ValueError, match="'nan_policy'"):
        permutation_test(a, a, dim="seed", nan_policy="propagate")
    with pytest.raises(ValueError, match="shape \\(10, 3\\)"):
        permutation_test(a.values, a.values)


def test_dask_backed_inputs_give_the_same_result():
    pytest.importorskip("dask")
    rng = np.random.default_rng(12)
    a = xr.DataArray(rng.normal(size=(3, 10)), dims=("unit", "trial"))
    b = xr.DataArray(rng.normal(size=(3, 10)), dims=("unit", "trial"))
    eager = permutation_test(a, b, dim="trial", n_permutations=99, rng=0)
    lazy = permutation_test(
        a.chunk({"unit": 1}), b.chunk({"unit": 1}), dim="trial", n_permutations=99, rng=0
    )
    xr.testing.assert_allclose(eager, lazy)


def test_batched_by_default_without_changing_the_result(scipy_batches):
    # scipy evaluates every rearrangement at once unless told otherwise; the default batch
    # bounds memory for many positions (units x stimuli) and leaves the draws unchanged
    batches = scipy_batches("permutation_test", max_values=10_000)
    rng = np.random.default_rng(13)
    a = xr.DataArray(rng.normal(size=(20, 10)), dims=("unit", "trial"))
    b = xr.DataArray(rng.normal(size=(20, 15)), dims=("unit", "trial"))
    res = permutation_test(a, b, dim="trial", n_permutations=999, rng=4)
    assert batches == [20]  # 10_000 values / (200 + 300) per rearrangement
    full = permutation_test(a, b, dim="trial", n_permutations=999, batch=999, rng=4)
    xr.testing.assert_identical(res, full)


def test_recording_like_input_along_every_dim():
    # dims and coords as neurovar.record produces them, with `channel` a non-dimension index
    rng = np.random.default_rng(14)
    coords = {
        "trial": np.arange(8),
        "stimulus_id": ("stimulus", np.arange(7)),
        "label": ("stimulus", [0, 1, 0, 1, 2, 2, 0]),
        "unit_id": ("unit", np.arange(6)),
        "channel": ("unit", [0, 0, 0, 1, 1, 1]),
    }

    def rec(shift):
        da = xr.DataArray(
            rng.normal(shift, 1, (8, 7, 6)), dims=("trial", "stimulus", "unit"), coords=coords
        )
        return da.set_xindex("channel")

    a, b = rec(1.0), rec(0.0)
    kept = {"trial": {"label", "channel"}, "stimulus": {"trial", "channel"}, "unit": {"label"}}
    for dim, paired in [("trial", False), ("stimulus", True), ("unit", False)]:
        res = permutation_test(a, b, dim=dim, paired=paired, n_permutations=99, rng=0)
        assert set(res.p_value.dims) == {"trial", "stimulus", "unit"} - {dim}
        assert kept[dim] <= set(res.coords) and not {dim} & set(res.coords)
        if "channel" in kept[dim]:
            assert res.p_value.sel(channel=1).sizes["unit"] == 3
        one = {d: 2 for d in res.p_value.dims}
        d = (a - b).isel(one).values if paired else None
        expected = d.mean() / d.std(ddof=1) if paired else float(cohens_d(a.isel(one), b.isel(one)))
        assert float(res.cohens_d.isel(one)) == pytest.approx(expected)
