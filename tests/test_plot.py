"""Tests of neurovar.plot: the drawn data are the results' numbers, errors name the parameter."""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402

from neurovar import plot, stats  # noqa: E402
from neurovar.perturb import corrupt, evaluate_robustness  # noqa: E402


# ---------------------------------------------------------------------------- helpers
def _by_gid(ax, gid):
    found = [a for a in ax.get_children() if a.get_gid() == gid]
    assert len(found) == 1, f"expected one artist with gid {gid!r}, found {len(found)}"
    return found[0]


def _fake_result(*, stochastic: int = 1, n_classes: int | None = None, seed: int = 0):
    """A Dataset in the format of evaluate_robustness, from random per-example correctness.

    eps deliberately unsorted, so the plot has to sort it.
    """
    gen = np.random.default_rng(seed)
    eps = np.array([0.2, 0.0, 0.1])
    attacks = ["pgd_ce", "pgd_dlr_targeted", "square"]
    n = 40
    p_correct = {0.0: 0.95, 0.1: 0.6, 0.2: 0.3}
    correct = np.stack(
        [gen.random((len(attacks), n)) < p_correct[float(e)] for e in eps]
    )  # (eps, attack, stimulus)
    worst = correct.all(axis=1)
    attrs = {
        "norm": "linf",
        "n_evaluations": 10 if stochastic else 1,
        "eot_samples": 8 if stochastic else 1,
        "stochastic": stochastic,
        "confidence_level": 0.95,
        "attacks": json.dumps(attacks),
    }
    if n_classes is not None:
        attrs["n_classes"] = n_classes
    return xr.Dataset(
        {
            "accuracy": (("eps", "attack"), correct.mean(axis=2)),
            "correct": (("eps", "attack", "stimulus"), correct),
            "worst_case_accuracy": (("eps",), worst.mean(axis=1)),
            "worst_case_correct": (("eps", "stimulus"), worst),
            "ci_low": (("eps",), np.clip(worst.mean(axis=1) - 0.1, 0, 1)),
            "ci_high": (("eps",), np.clip(worst.mean(axis=1) + 0.1, 0, 1)),
            "clean_accuracy": ((), 0.95),
        },
        coords={"eps": eps, "attack": attacks, "stimulus_id": ("stimulus", np.arange(n))},
        attrs=attrs,
    )


@pytest.fixture
def no_new_pyplot_figures():
    before = list(plt.get_fignums())
    yield
    assert plt.get_fignums() == before, "a plot function registered a figure with pyplot"


# ---------------------------------------------------------------------------- plot_robustness
def test_robustness_lines_are_the_accuracies(no_new_pyplot_figures):
    res = _fake_result()
    fig = plot.plot_robustness(res)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    order = np.argsort(res["eps"].values)
    for attack in res["attack"].values:
        line = _by_gid(ax, f"attack:{attack}")
        np.testing.assert_allclose(line.get_xdata(), res["eps"].values[order])
        np.testing.assert_allclose(
            line.get_ydata(), res["accuracy"].sel(attack=attack).values[order]
        )
    worst = _by_gid(ax, "worst_case")
    np.testing.assert_allclose(worst.get_ydata(), res["worst_case_accuracy"].values[order])
    assert worst.get_linewidth() > max(
        _by_gid(ax, f"attack:{a}").get_linewidth() for a in res["attack"].values
    )
    np.testing.assert_allclose(_by_gid(ax, "clean").get_ydata(), [0.95, 0.95])


def test_robustness_ci_band_spans_ci_low_to_ci_high():
    res = _fake_result()
    ax = plot.plot_robustness(res).axes[0]
    verts = _by_gid(ax, "worst_case_ci").get_paths()[0].vertices
    lo, hi = res["ci_low"].values, res["ci_high"].values
    for x, y in verts:
        i = int(np.argmin(np.abs(res["eps"].values - x)))
        assert lo[i] - 1e-12 <= y <= hi[i] + 1e-12
    assert np.isclose(verts[:, 1].min(), lo.min()) and np.isclose(verts[:, 1].max(), hi.max())


def test_robustness_chance_line_and_title():
    res = _fake_result(stochastic=1)
    ax = plot.plot_robustness(res, n_classes=10).axes[0]
    np.testing.assert_allclose(_by_gid(ax, "chance").get_ydata(), [0.1, 0.1])
    assert "stochastic" in ax.get_title() and "EOT 8" in ax.get_title()
    assert "10 evaluations" in ax.get_title()
    # no n_classes anywhere: no chance line
    ax = plot.plot_robustness(res).axes[0]
    assert not [a for a in ax.get_children() if a.get_gid() == "chance"]
    # from the attrs
    ax = plot.plot_robustness(_fake_result(stochastic=0, n_classes=4)).axes[0]
    np.testing.assert_allclose(_by_gid(ax, "chance").get_ydata(), [0.25, 0.25])
    assert "deterministic" in ax.get_title() and "EOT" not in ax.get_title().replace("no EOT", "")


def test_robustness_draws_into_given_axes():
    fig, axes = plt.subplots(1, 2)
    try:
        out = plot.plot_robustness(_fake_result(), ax=axes[1])
        assert out is fig
        assert len(axes[1].get_lines()) >= 4 and len(axes[0].get_lines()) == 0
    finally:
        plt.close(fig)


def test_robustness_errors_name_the_parameter():
    res = _fake_result()
    with pytest.raises(ValueError, match=r"'result'.*worst_case_accuracy"):
        plot.plot_robustness(res.drop_vars("worst_case_accuracy"))
    with pytest.raises(ValueError, match=r"'result'.*'accuracy' must have dims"):
        plot.plot_robustness(res.assign(accuracy=res["accuracy"].transpose("attack", "eps")))
    with pytest.raises(TypeError, match="'result'"):
        plot.plot_robustness(res["accuracy"])
    with pytest.raises(ValueError, match="'n_classes'"):
        plot.plot_robustness(res, n_classes=1)
    with pytest.raises(TypeError, match="'ax'"):
        plot.plot_robustness(res, ax="left")


def test_robustness_comparison_lines_per_condition():
    a, b = _fake_result(seed=0), _fake_result(seed=1, stochastic=0)
    ax = plot.plot_robustness_comparison({"noise": a, "none": b}, n_classes=10).axes[0]
    order = np.argsort(a["eps"].values)
    np.testing.assert_allclose(
        _by_gid(ax, "worst_case:noise").get_ydata(), a["worst_case_accuracy"].values[order]
    )
    np.testing.assert_allclose(
        _by_gid(ax, "worst_case:none").get_ydata(), b["worst_case_accuracy"].values[order]
    )
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "noise (stochastic)" in labels and "none (deterministic)" in labels
    with pytest.raises(ValueError, match="'results'"):
        plot.plot_robustness_comparison({})
    with pytest.raises(ValueError, match=r"results\['bad'\]"):
        plot.plot_robustness_comparison({"bad": a.drop_vars("ci_low")})


def test_robustness_marks_attacks_suspected_of_masking():
    from neurovar.perturb import check_robustness_result

    res = _fake_result(n_classes=10)
    # plant a masked pgd_ce: far above the worst case and above chance at the largest eps
    res["accuracy"].loc[{"attack": "pgd_ce", "eps": 0.2}] = 0.9
    diag = check_robustness_result(res, n_classes=10, warn=False)
    assert "pgd_ce" in diag.masked_attacks
    ax = plot.plot_robustness(res, diagnosis=diag).axes[0]
    assert _by_gid(ax, "attack:pgd_ce").get_linestyle() == "--"
    assert _by_gid(ax, "attack:square").get_linestyle() == "-"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "pgd_ce (masking suspected)" in labels
    with pytest.raises(ValueError, match="'diagnosis' parameter of plot_robustness"):
        plot.plot_robustness(res, diagnosis={"pgd_ce": True})


def test_robustness_comparison_of_a_joined_dataset():
    a = _fake_result(seed=0).assign_coords(condition="isotropic")
    b = _fake_result(seed=1).assign_coords(condition="structured")
    joined = xr.concat([a, b], dim="condition")
    ax = plot.plot_robustness_comparison(joined).axes[0]
    order = np.argsort(a["eps"].values)
    np.testing.assert_allclose(
        _by_gid(ax, "worst_case:structured").get_ydata(), b["worst_case_accuracy"].values[order]
    )
    with pytest.raises(ValueError, match="'dim' parameter of plot_robustness_comparison"):
        plot.plot_robustness_comparison(joined, dim="seed")


class _Noisy(nn.Module):
    """Additive Gaussian noise from its own generator (stochastic in eval mode too)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x):
        return x + self.sigma * torch.randn(x.shape, generator=self.gen)


def test_robustness_of_a_real_evaluation(global_rng_guard):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:200] / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target[:200])
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # nn.Linear's init draws from the global generator
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), _Noisy(0.3), nn.Linear(32, 10)
        )
    with torch.no_grad():  # a fixed, seeded init (never the global generator)
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    res = evaluate_robustness(
        model,
        x[:16],
        y[:16],
        eps=[0.05, 0.2],
        steps=2,
        n_queries=10,
        n_evaluations=2,
        eot_samples=2,
        rng=0,
    )
    ax = plot.plot_robustness(res, n_classes=10).axes[0]
    worst = _by_gid(ax, "worst_case").get_ydata()
    np.testing.assert_allclose(worst, res["worst_case_accuracy"].values)
    for attack in res["attack"].values:
        line = _by_gid(ax, f"attack:{attack}").get_ydata()
        np.testing.assert_allclose(line, res["accuracy"].sel(attack=attack).values)
        assert np.all(worst <= line + 1e-12)
    assert "stochastic model" in ax.get_title() and "EOT 2" in ax.get_title()


# ---------------------------------------------------------------------------- variability
def _responses(n_trials=12, n_stim=5, n_units=7, seed=0):
    gen = np.random.default_rng(seed)
    rates = gen.uniform(1, 20, size=(n_stim, n_units))
    counts = gen.poisson(rates, size=(n_trials, n_stim, n_units)).astype(float)
    return xr.DataArray(counts, dims=("trial", "stimulus", "unit"), name="v1")


def test_variance_vs_mean_points_are_trial_moments(global_rng_guard, no_new_pyplot_figures):
    da = _responses()
    da[0, 0, 0] = np.nan  # skipped, not propagated
    ax = plot.plot_variance_vs_mean(da).axes[0]
    pts = _by_gid(ax, "variability").get_offsets()
    mean = np.nanmean(da.values, axis=0).ravel()
    var = np.nanvar(da.values, axis=0, ddof=1).ravel()
    ok = (mean > 0) & (var > 0)
    np.testing.assert_allclose(pts[:, 0], mean[ok])
    np.testing.assert_allclose(pts[:, 1], var[ok])
    line = _by_gid(ax, "poisson")
    np.testing.assert_allclose(line.get_xdata(), line.get_ydata())
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    label = _by_gid(ax, "variability").get_label()
    ff = float(re.search(r"median FF ([0-9.]+)", label).group(1))
    assert abs(ff - np.median(var[ok] / mean[ok])) < 0.006
    assert 0.5 < ff < 1.6  # Poisson counts


def test_variance_vs_mean_ddof_and_subsampling(global_rng_guard):
    da = _responses(n_stim=20, n_units=30)
    pts0 = _by_gid(plot.plot_variance_vs_mean(da, ddof=0).axes[0], "variability").get_offsets()
    np.testing.assert_allclose(pts0[:, 1], np.var(da.values, axis=0).ravel())
    a = _by_gid(plot.plot_variance_vs_mean(da, max_points=50, rng=3).axes[0], "variability")
    b = _by_gid(plot.plot_variance_vs_mean(da, max_points=50, rng=3).axes[0], "variability")
    assert a.get_offsets().shape == (50, 2)
    np.testing.assert_array_equal(a.get_offsets(), b.get_offsets())
    assert "600 of 600 pairs" in a.get_label()  # counts use all pairs


def test_variance_vs_mean_errors_name_the_parameter():
    da = _responses()
    with pytest.raises(ValueError, match="'responses'.*missing"):
        plot.plot_variance_vs_mean(da.rename(stimulus="image"))
    with pytest.raises(ValueError, match="'responses'.*at least 2"):
        plot.plot_variance_vs_mean(da.isel(trial=[0]))
    with pytest.raises(ValueError, match="'responses'.*no .*positive"):
        plot.plot_variance_vs_mean(xr.zeros_like(da))
    with pytest.raises(ValueError, match="'ddof'"):
        plot.plot_variance_vs_mean(da, ddof=-1)
    with pytest.raises(ValueError, match="'max_points'"):
        plot.plot_variance_vs_mean(da, max_points=0)


# ---------------------------------------------------------------------------- noise correlations
def test_noise_correlation_histogram_counts_finite_pairs():
    gen = np.random.default_rng(1)
    shared = gen.normal(size=(30, 4, 1))
    counts = shared + gen.normal(size=(30, 4, 9))
    counts[:, :, 3] = 5.0  # a unit with no variance -> NaN row and column
    da = xr.DataArray(counts, dims=("trial", "stimulus", "unit"))
    with pytest.warns(RuntimeWarning, match="zero trial-to-trial"):
        rsc = stats.noise_correlation(da)
    ax = plot.plot_noise_correlations(rsc, bins=10).axes[0]
    heights = [p.get_height() for p in ax.patches]
    n_finite = 8 * 7 // 2  # 9 units, one without variance
    assert sum(heights) == n_finite
    upper = rsc.values[np.triu_indices(9, k=1)]
    np.testing.assert_allclose(_by_gid(ax, "mean").get_xdata(), [np.nanmean(upper)] * 2)
    assert np.nanmean(upper) > 0.2  # the shared term, so the mean is not trivially ~0
    assert "28 pairs of 9 units (8 non-finite left out)" in ax.get_title()


def test_noise_correlation_errors_name_the_parameter():
    rsc = xr.DataArray(np.eye(3), dims=("unit", "unit_j"))
    with pytest.raises(ValueError, match="'rsc'.*extra dims"):
        plot.plot_noise_correlations(rsc.expand_dims(stimulus=2))
    with pytest.raises(ValueError, match="'rsc'.*missing"):
        plot.plot_noise_correlations(rsc.rename(unit_j="other"))
    with pytest.raises(ValueError, match="'rsc'.*square"):
        plot.plot_noise_correlations(rsc.isel(unit_j=[0, 1]))
    with pytest.raises(ValueError, match="'rsc'.*no finite"):
        plot.plot_noise_correlations(rsc * np.nan)
    with pytest.raises(TypeError, match="'rsc'"):
        plot.plot_noise_correlations(np.eye(3))


# ---------------------------------------------------------------------------- spectrum
def _cov(n=12, seed=0):
    gen = np.random.default_rng(seed)
    a = gen.normal(size=(n, n)) * np.geomspace(1, 0.01, n)
    return xr.DataArray(a @ a.T, dims=("unit", "unit_j"))


def test_spectrum_line_is_eigenvalues_and_pr_in_legend():
    cov = _cov()
    ax = plot.plot_spectrum(cov).axes[0]
    line = _by_gid(ax, "spectrum")
    expected = np.sort(np.linalg.eigvalsh(cov.values))[::-1]
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-10)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 13))
    pr = float(stats.participation_ratio(cov))
    assert 1.0 < pr < 12.0
    assert line.get_label() == f"PR = {pr:.1f} of 12"
    # the same from the eigenspectrum or plain arrays
    for arg in (stats.eigenspectrum(cov), expected, cov.values):
        y = _by_gid(plot.plot_spectrum(arg).axes[0], "spectrum").get_ydata()
        np.testing.assert_allclose(y, expected, rtol=1e-10)
    ynorm = _by_gid(plot.plot_spectrum(cov, normalize=True).axes[0], "spectrum").get_ydata()
    np.testing.assert_allclose(ynorm.sum(), 1.0)


def test_spectrum_overlay_and_errors():
    fig = plot.plot_spectrum(_cov(seed=0), label="a")
    plot.plot_spectrum(_cov(seed=1), label="b", ax=fig.axes[0])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 2 and labels[0].startswith("a: PR") and labels[1].startswith("b: PR")
    with pytest.raises(ValueError, match="'cov_or_eigs'.*found"):
        plot.plot_spectrum(_cov().expand_dims(layer=2))
    with pytest.raises(ValueError, match="'cov_or_eigs'"):
        plot.plot_spectrum(np.ones((2, 3)))
    with pytest.raises(ValueError, match="'cov_or_eigs'.*no finite"):
        plot.plot_spectrum(np.full(4, np.nan))


# ---------------------------------------------------------------------------- corruptions
@pytest.fixture(scope="module")
def few_digits():
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().images[:3] / 16.0, dtype=torch.float32)[:, None]


def test_corruption_grid_panels(few_digits, global_rng_guard, no_new_pyplot_figures):
    names, sev = ["contrast", "gaussian_noise"], (1, 3, 5)
    fig = plot.plot_corruptions(few_digits, names=names, severities=sev)
    gids = [ax.get_gid() for ax in fig.axes]
    assert len(fig.axes) == len(names) * (len(sev) + 1)
    assert sorted(g for g in gids if not g.endswith(":clean")) == sorted(
        f"panel:{n}:{s}" for n in names for s in sev
    )
    fig = plot.plot_corruptions(few_digits, names=names, severities=sev, show_clean=False)
    assert len(fig.axes) == len(names) * len(sev)
    # a deterministic corruption: the panel shows corrupt(images) side by side (gap 1 px)
    panel = next(ax for ax in fig.axes if ax.get_gid() == "panel:contrast:5")
    shown = np.asarray(panel.get_images()[0].get_array())
    out = corrupt(few_digits, "contrast", severity=5).double().numpy()
    assert shown.shape == (8, 3 * 8 + 2)
    for i in range(3):
        np.testing.assert_allclose(shown[:, i * 9 : i * 9 + 8], out[i, 0])
    np.testing.assert_allclose(shown[:, 8], 1.0)


def test_corruption_grid_is_reproducible_and_rgb(few_digits, global_rng_guard):
    def data(fig, gid):
        ax = next(a for a in fig.axes if a.get_gid() == gid)
        return np.asarray(ax.get_images()[0].get_array())

    kw = dict(names=["gaussian_noise"], severities=(5,), show_clean=False)
    a = data(plot.plot_corruptions(few_digits, rng=1, **kw), "panel:gaussian_noise:5")
    b = data(plot.plot_corruptions(few_digits, rng=1, **kw), "panel:gaussian_noise:5")
    c = data(plot.plot_corruptions(few_digits, rng=2, **kw), "panel:gaussian_noise:5")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rgb = few_digits[0].expand(3, 8, 8).contiguous()  # one (C, H, W) RGB image
    shown = data(plot.plot_corruptions(rgb, rng=0, **kw), "panel:gaussian_noise:5")
    assert shown.shape == (8, 8, 3)


def test_corruption_errors_name_the_parameter(few_digits):
    with pytest.raises(ValueError, match="'names'.*not_a_corruption"):
        plot.plot_corruptions(few_digits, names=["contrast", "not_a_corruption"])
    with pytest.raises(ValueError, match="'severities'"):
        plot.plot_corruptions(few_digits, names=["contrast"], severities=(0, 3))
    with pytest.raises(ValueError, match="'images'"):
        plot.plot_corruptions(few_digits.expand(3, 2, 8, 8), names=["contrast"])  # 2 channels
    with pytest.raises(ValueError, match="'images'"):
        plot.plot_corruptions(few_digits * 2, names=["contrast"])
    with pytest.raises(ValueError, match="'images'"):
        plot.plot_corruptions(few_digits[None], names=["contrast"])  # 5-D
    with pytest.raises(ValueError, match="'images'"):
        plot.plot_corruptions(np.zeros((1, 1, 8, 8)), names=["contrast"])
