import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from neurovar.cortex import (  # noqa: E402
    compare,
    load_cowley_v4,
    load_reference_values,
    load_semedo_v1v2,
)
from neurovar.plot import plot_comparison

FAST = ["fano_factor", "variance_mean_exponent", "noise_correlation", "participation_ratio"]


def _poisson(rng, n_trials=30, n_stimuli=20, n_units=12, gain_sd=0.0):
    """Poisson counts; gain_sd > 0 adds a shared multiplicative gain per trial (r_sc > 0)."""
    rates = rng.uniform(2, 12, size=(1, n_stimuli, n_units))
    gain = np.exp(gain_sd * rng.standard_normal((n_trials, n_stimuli, 1)) - gain_sd**2 / 2)
    counts = rng.poisson(rates * gain).astype(float)
    return xr.DataArray(counts, dims=("trial", "stimulus", "unit"))


def _row(table, statistic, layer=None, source=None):
    sub = table[table["statistic"] == statistic]
    if layer is not None:
        sub = sub[sub["layer"] == layer]
    if source is not None:
        sub = sub[sub["source"] == source]
    assert len(sub) == 1, sub
    return sub.iloc[0]


def test_poisson_independent_vs_shared_gain():
    rng = np.random.default_rng(0)
    ann = {"indep": _poisson(rng), "gain": _poisson(rng, gain_sd=0.4)}
    state = np.random.get_state()[1].copy()
    table = compare(ann, None, statistics=FAST, n_resamples=100, rng=1)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG untouched
    assert list(table.columns[:8]) == [
        "source", "layer", "condition", "statistic", "value", "ci_low", "ci_high", "n"
    ]  # fmt: skip
    ff = _row(table, "fano_factor", "indep")
    assert 0.85 < ff.value < 1.15 and ff.ci_low < 1.0 < ff.ci_high
    slope = _row(table, "variance_mean_exponent", "indep")
    assert 0.8 < slope.value < 1.2
    r_ind = _row(table, "noise_correlation", "indep")
    assert abs(r_ind.value) < 0.03 and r_ind.ci_low < 0 < r_ind.ci_high
    assert r_ind.n == 12 * 11 // 2
    r_gain = _row(table, "noise_correlation", "gain")
    assert r_gain.ci_low > 0.05  # shared gain -> positive r_sc, clearly above independent
    assert _row(table, "fano_factor", "gain").value > 1.2  # gain fluctuations: super-Poisson
    pr_ind = _row(table, "participation_ratio", "indep").value
    pr_gain = _row(table, "participation_ratio", "gain").value
    assert pr_gain < pr_ind <= 12  # one shared mode lowers the dimensionality
    assert (table["ci_low"] <= table["ci_high"]).all()
    # reproducible from the seed
    again = compare(ann, None, statistics=FAST, n_resamples=100, rng=1)
    np.testing.assert_array_equal(again["ci_low"].values, table["ci_low"].values)


def test_input_forms_and_conditions():
    rng = np.random.default_rng(2)
    a, b, c = _poisson(rng), _poisson(rng), _poisson(rng, n_units=8)
    nested = {"clean": {"conv1": a, "fc": b}, "isotropic": {"conv1": c}}
    table = compare(nested, c.assign_attrs(area="V4"), statistics=["noise_correlation"],
                    n_resamples=20, rng=0)  # fmt: skip
    got = set(zip(table["source"], table["layer"], table["condition"]))
    assert got == {
        ("ann", "conv1", "clean"),
        ("ann", "fc", "clean"),
        ("ann", "conv1", "isotropic"),
        ("cortex", "V4", ""),
    }
    tree = xr.DataTree.from_dict(
        {"conv1": a.to_dataset(name="activation"), "fc": b.to_dataset(name="activation")}
    )
    from_tree = compare(tree, None, statistics=["noise_correlation"], n_resamples=20, rng=0)
    assert sorted(from_tree["layer"]) == ["conv1", "fc"]
    v = _row(from_tree, "noise_correlation", "conv1").value
    clean = table[(table["layer"] == "conv1") & (table["condition"] == "clean")]
    assert v == clean["value"].iloc[0]  # same array, same point estimate
    # units subsampled to max_units, reported
    sub = compare(a, None, statistics=["noise_correlation"], max_units=5, n_resamples=5, rng=0)
    assert sub["n_units"].iloc[0] == 5 and sub["n_units_total"].iloc[0] == 12
    assert sub["n"].iloc[0] == 10


def test_bad_parameters():
    da = _poisson(np.random.default_rng(3))
    with pytest.raises(ValueError, match="'statistics' parameter"):
        compare(da, None, statistics=["fano"])
    with pytest.raises(ValueError, match="'n_resamples' parameter"):
        compare(da, None, n_resamples=1)
    with pytest.raises(ValueError, match="'confidence_level' parameter"):
        compare(da, None, confidence_level=95.0)
    with pytest.raises(ValueError, match="cannot both be None"):
        compare(None, None)
    with pytest.raises(TypeError, match="'ann_responses' parameter"):
        compare(np.zeros((2, 3, 4)), None)
    with pytest.raises(ValueError, match="'cortical_responses' parameter must have dims"):
        compare(None, da.rename(unit="neuron"), statistics=["noise_correlation"])


def test_plot_comparison_figures():
    rng = np.random.default_rng(4)
    table = compare({"a": _poisson(rng)}, {"V4": _poisson(rng)},
                    statistics=FAST + ["signal_correlation", "rsc_signal_slope"],
                    n_resamples=10, rng=0)  # fmt: skip
    figs = plot_comparison(table, reference=load_reference_values())
    assert set(figs) == {
        "summary", "fano_vs_mean", "rsc_distribution", "rsc_vs_signal", "eigenspectrum"
    }  # fmt: skip
    summary = figs["summary"]
    assert sum(ax.get_visible() for ax in summary.axes) == 6
    import matplotlib.pyplot as plt

    for fig in figs.values():
        plt.close(fig)
    with pytest.raises(ValueError, match="'table' parameter"):
        plot_comparison(table.drop(columns=["value"]))


def test_v4_statistics_in_literature_range(cortex_dir):
    """Awake V4, 100 ms counts: r_sc within the published awake range, Fano near Poisson."""
    v4 = load_cowley_v4(data_home=cortex_dir)
    table = compare(
        None,
        v4,
        statistics=["fano_factor", "mean_matched_fano_factor", "noise_correlation"],
        n_resamples=200,
        rng=0,
    )
    ref = load_reference_values(statistic="r_sc")
    awake_short = ref[(ref["area"] == "V1/V4") & (ref["preparation"] == "awake")].iloc[0]
    rsc = _row(table, "noise_correlation", "V4")
    # found: mean r_sc = 0.030 (95% CI about 0.02-0.04) over 1225 pairs
    assert awake_short.value_low <= rsc.value <= awake_short.value_high
    assert rsc.ci_low > 0
    # found: mean Fano factor 0.89, mean-matched 0.89: slightly sub-Poisson in 100 ms windows
    # (below the 1-2 usually quoted for longer windows / spontaneous activity)
    for stat in ("fano_factor", "mean_matched_fano_factor"):
        assert 0.7 < _row(table, stat, "V4").value < 1.3


def test_semedo_v1_rsc(cortex_dir):
    """Anesthetized V1 (Semedo et al. 2019 sample): mean r_sc ~0.2 in whole-trial counts."""
    summed = load_semedo_v1v2(data_home=cortex_dir, bins="summed")["V1"]
    source = summed.isel(unit=summed["population"].values == "X")  # the 79 'X' V1 neurons
    table = compare(None, {"V1": source}, n_resamples=100, rng=0,
                    statistics=["noise_correlation"])  # fmt: skip
    r = _row(table, "noise_correlation", "V1").value
    assert 0.15 < r < 0.25  # found: 0.212
    # per 100 ms bin, correlations are about half as large (found: 0.10)
    per_bin = load_semedo_v1v2(data_home=cortex_dir)["V1"]
    per_bin = per_bin.isel(unit=per_bin["population"].values == "X")
    r_bin = _row(compare(None, {"V1": per_bin}, statistics=["noise_correlation"],
                         n_resamples=10, rng=0), "noise_correlation", "V1").value  # fmt: skip
    assert 0.05 < r_bin < r


def test_mean_subtracted_refuses_fano(cortex_dir):
    data = load_semedo_v1v2(data_home=cortex_dir)
    with pytest.raises(ValueError, match="mean-subtracted"):
        compare(None, data, statistics=["fano_factor"])
    auto = compare(None, {"V2": data["V2"]}, n_resamples=10, n_factors=2, rng=0)
    assert "fano_factor" not in set(auto["statistic"])
    assert "signal_correlation" not in set(auto["statistic"])
    assert {"noise_correlation", "participation_ratio", "shared_variance"} <= set(auto["statistic"])


def test_regression_fano_ci_is_a_bootstrap_over_units():
    """Cells of one unit share its Fano factor: the CI must reflect the few units, not the cells."""
    rng = np.random.default_rng(5)
    n_units, fanos = 8, np.linspace(0.5, 2.0, 8)
    rates = rng.uniform(4, 20, size=(1, 300, n_units))
    # a scaled Poisson count a * Poisson(rate / a) has Fano factor a
    counts = fanos * rng.poisson(rates / fanos, size=(20, 300, n_units))
    da = xr.DataArray(counts, dims=("trial", "stimulus", "unit"))
    table = compare(da, None, statistics=["mean_matched_fano_factor"], n_resamples=300, rng=0)
    row = _row(table, "mean_matched_fano_factor")
    assert "over units" in row.ci_method
    # 8 units with Fano factors 0.5..2: the unit-level spread dominates; a t-interval over
    # the 2400 cells as if independent would be about +-0.01 wide
    assert row.ci_high - row.ci_low > 0.3
    assert row.ci_low < row.value < row.ci_high


def test_regression_fano_decomposition_matches_stats():
    """The bootstrap's per-unit decomposition reproduces the stats module's estimate."""
    from neurovar.cortex.compare import _regression_fano_parts
    from neurovar.stats import fano_factor, mean_matched_fano_factor

    da = _poisson(np.random.default_rng(6), n_trials=7).copy()
    da[5:, :4] = np.nan  # unequal repeats
    ff = fano_factor(da)
    w = (da.count("trial") - 1).where(ff.notnull() & (da.mean("trial") > 0))
    mm = mean_matched_fano_factor(da, rng=0).squeeze()
    np.testing.assert_allclose(float((w * ff).sum() / w.sum()), float(mm["fano_factor_raw"]))
    # the per-unit sums that bootstrap_ci resamples give the same ratio on all units
    num, den = _regression_fano_parts(da)
    np.testing.assert_allclose(np.nansum(num) / np.nansum(den), float(mm["fano_factor_raw"]))


def test_shared_variance_factor_cap_is_reported_and_warned():
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(7)
    latent = rng.standard_normal((60, 10, 3))  # 3 shared factors, strong
    loading = rng.standard_normal((3, 12))
    x = latent @ loading + 0.5 * rng.standard_normal((60, 10, 12))
    da = xr.DataArray(x, dims=("trial", "stimulus", "unit"))
    threads = [p["num_threads"] for p in threadpool_info()]
    with pytest.warns(UserWarning, match="largest candidate number of factors"):
        table = compare(da, None, statistics=["shared_variance"], max_factors=1, rng=0,
                        n_resamples=20)  # fmt: skip
    assert "cross-validation over 0..1" in _row(table, "shared_variance").ci_method
    assert [p["num_threads"] for p in threadpool_info()] == threads  # BLAS threads restored
    fixed = compare(da, None, statistics=["shared_variance"], n_factors=3, n_resamples=20, rng=0)
    assert "3 factors, fixed" in _row(fixed, "shared_variance").ci_method
    with pytest.raises(TypeError, match="'max_factors' parameter"):
        compare(da, None, max_factors=2.5)
    with pytest.raises(ValueError, match="'max_factors' parameter"):
        compare(da, None, max_factors=-1)


def _gaussian(rng, cov, n_stimuli=30, n_trials=12):
    """Gaussian noise with covariance ``cov`` around random means; unequal repeats (NaN)."""
    chol = np.linalg.cholesky(cov)
    noise = rng.standard_normal((n_trials, n_stimuli, cov.shape[0])) @ chol.T
    x = noise + rng.uniform(0, 5, size=(1, n_stimuli, cov.shape[0]))
    x[8:, ::2] = np.nan  # half of the stimuli shown 8 times, the others 12
    return xr.DataArray(x, dims=("trial", "stimulus", "unit"))


def test_intervals_cover_the_true_value_in_simulation():
    """Percentile intervals (the default) cover known values at about the nominal rate."""
    rng = np.random.default_rng(0)
    lam = np.array([3.0, 1.5, 1.0, 0.6, 0.4, 0.3])
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    cov = (q * lam) @ q.T
    true_pr = lam.sum() ** 2 / np.sum(lam**2)
    # Fano factors of a population of units: a * Poisson(rate / a) has Fano factor a
    fano_population = np.linspace(0.6, 1.6, 200)
    hits = {"participation_ratio": 0, "fano_factor": 0}
    n_sets = 60
    for k in range(n_sets):
        pr = compare(_gaussian(rng, cov), None, statistics=["participation_ratio"],
                     n_resamples=150, rng=k)  # fmt: skip
        row = _row(pr, "participation_ratio")
        hits["participation_ratio"] += row.ci_low <= true_pr <= row.ci_high
        a = rng.choice(fano_population, size=15)
        counts = a * rng.poisson(rng.uniform(5, 15, size=(1, 10, 15)) / a, size=(20, 10, 15))
        ff = compare(xr.DataArray(counts, dims=("trial", "stimulus", "unit")), None,
                     statistics=["fano_factor"], n_resamples=150, rng=k)  # fmt: skip
        row = _row(ff, "fano_factor")
        hits["fano_factor"] += row.ci_low <= fano_population.mean() <= row.ci_high
        assert row.ci_method.startswith("percentile bootstrap over units")
    coverage = {s: h / n_sets for s, h in hits.items()}
    # nominal 95%; measured 0.88 (participation ratio: 6 units, 300 trials) and 0.93 (Fano)
    assert coverage["participation_ratio"] >= 0.8, coverage
    assert coverage["fano_factor"] >= 0.85, coverage


def test_ci_methods_and_basic_is_the_reflected_percentile():
    da = _poisson(np.random.default_rng(8))
    stats = ["fano_factor", "noise_correlation", "participation_ratio"]
    pct = compare(da, None, statistics=stats, n_resamples=100, rng=3)
    basic = compare(da, None, statistics=stats, n_resamples=100, rng=3, ci_method="basic")
    np.testing.assert_allclose(pct.value, basic.value)
    # same resamples: basic = [2 theta - q_hi, 2 theta - q_lo]
    np.testing.assert_allclose(basic.ci_low, 2 * pct.value - pct.ci_high, atol=1e-12)
    np.testing.assert_allclose(basic.ci_high, 2 * pct.value - pct.ci_low, atol=1e-12)
    bca = compare(da, None, statistics=["fano_factor"], n_resamples=200, rng=3, ci_method="BCa")
    row = _row(bca, "fano_factor")
    assert row.ci_low < row.value < row.ci_high and row.ci_method.startswith("BCa")
    assert pct.attrs["ci_method"] == "percentile"
    with pytest.raises(ValueError, match="'ci_method' parameter"):
        compare(da, None, ci_method="studentized")


def test_dead_units_never_enter_the_spectrum():
    rng = np.random.default_rng(9)
    live = _gaussian(rng, np.diag(1.0 / np.arange(1, 9)), n_stimuli=40)
    dead = xr.zeros_like(live.isel(unit=slice(0, 4))).where(live.isel(unit=slice(0, 4)).notnull())
    layer = xr.concat([live, dead], dim="unit")  # 4 dead ReLU units
    stats = ["participation_ratio", "eigenspectrum_exponent"]
    with pytest.warns(RuntimeWarning, match="4 of 12 units have zero variance"):
        table = compare(layer, None, statistics=stats, n_resamples=50, rng=0)
    ref = compare(live, None, statistics=stats, n_resamples=50, rng=0)
    np.testing.assert_allclose(table.value, ref.value, rtol=1e-10)
    lam = next(iter(table.attrs["details"].values()))["eigenvalues"]
    assert np.isnan(lam[8:]).all() and (lam[:8] > 1e-3).all()  # no 1e-64 left for the figure


def test_shared_dimensionality_needs_cross_validated_factors():
    rng = np.random.default_rng(10)
    latent = rng.standard_normal((80, 10, 2))  # 2 strong shared factors
    x = latent @ (2 * rng.standard_normal((2, 10))) + rng.standard_normal((80, 10, 10))
    da = xr.DataArray(x, dims=("trial", "stimulus", "unit"))
    with pytest.raises(ValueError, match="'shared_dimensionality' needs n_factors=None"):
        compare(da, None, statistics=["shared_dimensionality"], n_factors=3, rng=0)
    auto = compare(da, None, n_factors=3, n_resamples=20, rng=0)
    assert "shared_dimensionality" not in set(auto.statistic)
    cv = compare(da, None, statistics=["shared_dimensionality"], n_resamples=20, rng=0)
    row = _row(cv, "shared_dimensionality")
    assert row.value == 2 and "chosen by cross-validation" in row.ci_method


def test_scale_dependent_statistics_are_flagged_in_a_column():
    rng = np.random.default_rng(11)
    counts = _poisson(rng, gain_sd=0.3)
    stats = ["fano_factor", "mean_matched_fano_factor", "variance_mean_exponent",
             "noise_correlation", "participation_ratio", "eigenspectrum_exponent"]  # fmt: skip
    one = compare({"a": counts}, {"V4": counts}, statistics=stats, n_resamples=20, rng=0)
    three = compare({"a": 3 * counts}, {"V4": counts}, statistics=stats, n_resamples=20, rng=0)
    ann1, ann3 = one[one.source == "ann"], three[three.source == "ann"]
    changed = ~np.isclose(ann1.value.to_numpy(), ann3.value.to_numpy(), rtol=1e-8)
    # flagged exactly where multiplying the activations by 3 changes the value
    np.testing.assert_array_equal(ann1.scale_dependent.to_numpy(), changed)
    assert set(ann1.statistic[ann1.scale_dependent]) == {"fano_factor", "mean_matched_fano_factor"}
    assert not one[one.source == "cortex"].scale_dependent.any()  # spike counts


def test_rsc_reference_band_matches_area_and_count_window():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(12)
    v4 = _poisson(rng, gain_sd=0.2).assign_attrs(count_window="100 ms", preparation="awake")
    it = _poisson(rng).assign_attrs(count_window="100 ms", preparation="awake")
    table = compare({"relu": _poisson(rng)}, {"V4": v4, "IT": it},
                    statistics=["noise_correlation"], n_resamples=20, rng=0)  # fmt: skip
    ref = load_reference_values()
    fig = plot_comparison(table, reference=ref, panel="noise_correlation")
    ax = fig.axes[0]
    bands = [p for p in ax.collections if p.get_gid() == "reference:V4"]
    assert len(bands) == 1  # only the awake V1/V4 100-200 ms range, not all 0.01-0.25
    xs = bands[0].get_paths()[0].vertices[:, 0]
    np.testing.assert_allclose([xs.min(), xs.max()], [0.01, 0.1])
    assert not [p for p in ax.collections if str(p.get_gid()).startswith("reference:IT")]
    note = next(t for t in ax.texts if t.get_gid() == "reference_note").get_text()
    assert "V1/V4 awake, 100-200 ms" in note and "IT (100 ms): no published match" in note
    assert "same area & count window" in ax.get_title()
    # ax= draws into a given axes; nothing is registered with pyplot
    fig2, ax2 = plt.subplots()
    assert plot_comparison(table, panel="rsc_distribution", ax=ax2) is fig2
    plt.close(fig2)
    n_open = len(plt.get_fignums())
    plot_comparison(table, reference=ref)
    assert len(plt.get_fignums()) == n_open


def test_cortex_does_not_import_the_plot_module():
    import subprocess
    import sys

    code = (
        "import sys, neurovar.cortex; "
        "assert 'neurovar.plot' not in sys.modules, 'plot imported'; "
        "assert 'matplotlib.pyplot' not in sys.modules; "
        "assert not hasattr(neurovar.cortex, 'plot_comparison')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_interval_does_not_depend_on_what_else_was_computed():
    rng = np.random.default_rng(13)
    arrays = {"a": _poisson(rng), "b": _poisson(rng)}
    alone = compare(arrays, None, statistics=["noise_correlation"], n_resamples=50, rng=4)
    more = compare(
        arrays,
        None,
        n_resamples=50,
        rng=4,
        max_units=10,
        statistics=["fano_factor", "noise_correlation", "participation_ratio"],
    )
    fewer = compare(arrays, None, n_resamples=50, rng=4, max_units=10,
                    statistics=["noise_correlation"])  # fmt: skip
    for layer in ("a", "b"):
        # one random stream per array and per statistic (and one for the unit draw)
        r1, r2 = _row(more, "noise_correlation", layer), _row(fewer, "noise_correlation", layer)
        assert (r1.value, r1.ci_low, r1.ci_high) == (r2.value, r2.ci_low, r2.ci_high)
    assert _row(alone, "noise_correlation", "b").n_units == 12


def test_all_nan_units_are_dropped_with_a_warning_and_not_counted():
    rng = np.random.default_rng(0)
    clean = _poisson(rng)
    holed = clean.copy()
    holed[:, :, [3, 7]] = np.nan  # two units never recorded
    with pytest.warns(UserWarning, match=r"2 of 12 units of 'cortical_responses' \(V4\)"):
        table = compare(None, {"V4": holed}, statistics=FAST, n_resamples=100, rng=1)
    assert (table["n_units"] == 10).all() and (table["n_units_total"] == 12).all()
    assert np.isfinite(table[["value", "ci_low", "ci_high"]].to_numpy()).all()
    assert _row(table, "noise_correlation").n == 10 * 9 // 2
    # the same as giving the 10 recorded units only
    kept = clean.isel(unit=[i for i in range(12) if i not in (3, 7)])
    ref = compare(None, {"V4": kept}, statistics=FAST, n_resamples=100, rng=1)
    np.testing.assert_allclose(table["value"], ref["value"])
    np.testing.assert_allclose(table["ci_low"], ref["ci_low"])
    with pytest.raises(ValueError, match="all 12 units are NaN"):
        compare(None, {"V4": clean * np.nan}, statistics=FAST, n_resamples=100, rng=1)


def test_n_bootstrap_is_the_old_name_of_n_resamples():
    """``n_bootstrap`` (the old keyword) warns once and gives the table ``n_resamples`` gives."""
    da = _poisson(np.random.default_rng(3))
    new = compare(da, None, statistics=["fano_factor", "noise_correlation"], n_resamples=30, rng=2)
    with pytest.warns(FutureWarning, match="'n_bootstrap' parameter of compare was renamed"):
        old = compare(
            da, None, statistics=["fano_factor", "noise_correlation"], n_bootstrap=30, rng=2
        )
    pd.testing.assert_frame_equal(old, new)
    assert "(30)" in new["ci_method"].iloc[0]  # the resample count the interval used
    with pytest.raises(TypeError, match="not both"):
        compare(da, None, n_bootstrap=30, n_resamples=30)
