"""The experiment's general figures: robustness curves, transfer matrices, alignment vs gain,
clean cost and masking diagnostics, drawn with :mod:`neurovar.plot`'s shared helpers (one
colour per condition from :func:`neurovar.experiment.registry.condition_colour`).

Every function takes the analysis objects of :mod:`neurovar.experiment.analysis` and returns a
pyplot-free :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from neurovar.experiment.registry import condition_colour
from neurovar.plot._style import panels, save_figure

__all__ = [
    "plot_robustness_curves",
    "plot_transfer_matrix",
    "plot_alignment_gain",
    "plot_clean_cost",
    "plot_masking",
    "save_figure",
]


#: The factors of a run that a figure or table must keep apart (one panel, bar or row each).
_GROUP = ("regime", "magnitude", "layer", "noise_at_test")


def _label(group: dict[str, Any]) -> str:
    noise = "noise on" if group["noise_at_test"] else "noise off"
    layer = f", {group['layer']}" if "layer" in group else ""
    return f"{group['regime']}, m={group['magnitude']:g}{layer}, {noise} at test"


def _group_label(key: dict[str, Any], varying: set[str], sep: str = ", ") -> str:
    """Short label of one (regime, magnitude, layer, noise_at_test) group: the regime and the
    noise flag always, the magnitude and the layer only when a run has several of them."""
    parts = [str(key.get("regime", ""))]
    if "magnitude" in varying:
        m = key.get("magnitude")
        parts.append(f"m={m:g}" if isinstance(m, (int, float, np.number)) and np.isfinite(m)
                     else f"m={m}")
    if "layer" in varying:
        parts.append(str(key.get("layer")))
    flag = key.get("noise_at_test")
    if flag is not None and not (isinstance(flag, float) and np.isnan(flag)):
        parts.append("on" if bool(flag) else "off")
    return sep.join(parts)


def _varying(table: pd.DataFrame) -> set[str]:
    """The group columns of ``table`` that take more than one value (NaN counts as one)."""
    return {c for c in _GROUP if c in table.columns and table[c].nunique(dropna=False) > 1}


def plot_robustness_curves(results: xr.Dataset, *, regime: str, noise_at_test: bool,
                           magnitude: float | None = None, layer: str | None = None) -> Figure:
    """Accuracy against strength per target, one line per condition (mean over seeds, with
    the spread of the per-seed Wilson CIs as a band: the mean of ``ci_low``/``ci_high``).

    One figure shows one regime, magnitude, layer and noise flag; ``magnitude`` and ``layer``
    default to the first of ``results`` (:func:`write_report` draws one figure for each)."""
    from neurovar._validation import check_bool, check_choice, check_real

    noise_at_test = check_bool(noise_at_test, name="noise_at_test", owner="plot_robustness_curves")
    magnitude = check_real(magnitude, name="magnitude", owner="plot_robustness_curves",
                           low=0.0, allow_none=True)
    magnitude = float(results["magnitude"].values[0]) if magnitude is None else magnitude
    layer = str(results["layer"].values[0]) if layer is None else layer
    check_choice(magnitude, name="magnitude", owner="plot_robustness_curves",
                 options=[float(m) for m in results["magnitude"].values])
    check_choice(layer, name="layer", owner="plot_robustness_curves",
                 options=[str(v) for v in results["layer"].values])
    sub = results.sel(regime=regime, noise_at_test=noise_at_test, magnitude=magnitude,
                      layer=layer)
    targets = [str(t) for t in results["target"].values]
    fig, axes = panels(len(targets), 3, (4.2, 3.4))
    n = results.sizes["stimulus"]
    from statsmodels.stats.proportion import proportion_confint

    for ax, t in zip(axes, targets):
        x = sub["strength_value"].sel(target=t).values
        valid = np.isfinite(x)
        for cond in map(str, results["condition"].values):
            acc = sub["accuracy"].sel(target=t, condition=cond)
            if not np.isfinite(acc.values).any():
                continue
            mean = acc.mean("seed", skipna=True).values[valid]
            n_seeds = int(np.isfinite(acc.values).any(axis=-1).sum())
            succ = np.round(mean * n * max(n_seeds, 1)).astype(int)
            lo, hi = proportion_confint(succ, n * max(n_seeds, 1), method="wilson")
            line, = ax.plot(x[valid], mean, "o-", lw=1.5, ms=3, label=cond, color=condition_colour(cond))
            line.set_gid(f"condition:{cond}")
            ax.fill_between(x[valid], lo, hi, color=line.get_color(), alpha=0.12, lw=0)
        ax.set_title(t)
        ax.set_xlabel("strength (eps / severity / degrees)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
    if axes:
        axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{regime}, m={magnitude:g}, noise {'on' if noise_at_test else 'off'} at "
                 f"test ({layer}); bands: Wilson 95% CI of the pooled accuracy")
    return fig


def plot_transfer_matrix(tm: xr.Dataset, *, baseline: str = "isotropic") -> Figure:
    """Heatmaps of the gain of ``structured:<source>`` over ``baseline``, source x target, one
    panel per regime x magnitude x noise_at_test; ``*`` marks q < 0.05 (FDR), ``o`` marks the
    diagonal (source = target perturbation)."""
    from neurovar._validation import check_choice

    check_choice(baseline, name="baseline", owner="plot_transfer_matrix",
                 options=tuple(map(str, tm["baseline"].values)) if "baseline" in tm.coords else ())
    sub = tm.sel(baseline=baseline)
    groups = []
    for regime in sub["regime"].values:
        for magnitude in sub["magnitude"].values:
            for layer in sub["layer"].values:
                for flag in sub["noise_at_test"].values:
                    g = sub.sel(regime=regime, magnitude=magnitude, layer=layer,
                                noise_at_test=flag)
                    if np.isfinite(g["gain"].values).any():
                        groups.append(({"regime": str(regime), "magnitude": float(magnitude),
                                        "layer": str(layer), "noise_at_test": bool(flag)}, g))
    fig, axes = panels(max(len(groups), 1), 2, (5.0, 3.6))
    lim = float(np.nanmax(np.abs(sub["gain"].values))) if np.isfinite(sub["gain"].values).any() else 1.0
    lim = max(lim, 1e-3)
    for ax, (g, m) in zip(axes, groups):
        gain = m["gain"].transpose("source", "target").values
        im = ax.imshow(gain, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        im.set_gid("transfer_matrix")
        q = m["q_value"].transpose("source", "target").values
        diag = tm["diagonal"].transpose("source", "target").values
        for i in range(gain.shape[0]):
            for j in range(gain.shape[1]):
                if not np.isfinite(gain[i, j]):
                    continue
                mark = ("*" if np.isfinite(q[i, j]) and q[i, j] < 0.05 else "") + (
                    " o" if diag[i, j] else "")
                ax.text(j, i, f"{gain[i, j]:+.2f}{mark}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(m.sizes["target"]), [str(t) for t in m["target"].values],
                      rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(m.sizes["source"]), [str(s) for s in m["source"].values], fontsize=7)
        ax.set_xlabel("target")
        ax.set_ylabel("source of structure")
        ax.set_title(_label(g), fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8, label=f"gain over {baseline}")
    fig.suptitle(f"transfer matrix: accuracy gain of structured noise over {baseline} "
                 "(* q<0.05 FDR, o diagonal)", fontsize=9)
    return fig


def plot_alignment_gain(rows: pd.DataFrame, lines: list[str] | None = None) -> Figure:
    """Gain over isotropic against log2 alignment (noise variance along the target's
    perturbation directions relative to isotropic), per regime x noise_at_test (the groups of
    the link model), with an ordinary least-squares line for the eye (the mixed model's slope
    is in the report). Colour: condition; marker: magnitude x layer when a run has several."""
    keys = sorted({(str(r), bool(f)) for r, f in
                   zip(rows.get("regime", []), rows.get("noise_at_test", []))})
    fig, axes = panels(max(len(keys), 1), 3, (4.2, 3.4))
    varying = _varying(rows) & {"magnitude", "layer"}
    inner = [c for c in ("magnitude", "layer") if c in varying]
    markers = "os^Dv<>ph*"
    kinds = (list(dict.fromkeys(rows[inner].itertuples(index=False, name=None)))
             if inner else [()])
    colours = {c: condition_colour(c) for c in dict.fromkeys(rows.get("condition", []))}
    for ax, (regime, flag) in zip(axes, keys):
        sub = rows[(rows["regime"].astype(str) == regime) & (rows["noise_at_test"] == flag)]
        for cond, part in sub.groupby("condition", sort=False):
            for k, kind in enumerate(kinds):
                pts = part
                for col, v in zip(inner, kind):
                    pts = pts[pts[col] == v]
                if pts.empty:
                    continue
                extra = " ".join(f"m={v:g}" if col == "magnitude" else str(v)
                                 for col, v in zip(inner, kind))
                ax.plot(pts["log_alignment"], pts["gain"], markers[k % len(markers)], ms=3,
                        alpha=0.7, color=colours[cond],
                        label=f"{cond} {extra}".strip())
        if len(sub) >= 3 and sub["log_alignment"].std() > 0:
            slope, icept = np.polyfit(sub["log_alignment"], sub["gain"], 1)
            xs = np.linspace(sub["log_alignment"].min(), sub["log_alignment"].max(), 20)
            line, = ax.plot(xs, icept + slope * xs, "k-", lw=1)
            line.set_gid("fit")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.axvline(0, color="0.6", lw=0.8)
        ax.set_xlabel("log2 variance along target directions / isotropic")
        ax.set_ylabel("gain over isotropic")
        ax.set_title(f"{regime}, noise {'on' if flag else 'off'} at test", fontsize=8)
    if keys:
        axes[0].legend(fontsize=6)
    return fig


def plot_clean_cost(cost: pd.DataFrame) -> Figure:
    """Clean-accuracy cost of every condition (minus ``none``), one group of bars per regime x
    magnitude x layer x noise_at_test (magnitude and layer named when a run has several).

    ``cost`` is :func:`neurovar.experiment.clean_cost`'s table. Rows that repeat a (group,
    condition) are averaged (mean cost, mean SD) rather than refused, so a table pooled from
    several runs still draws.
    """
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.add_subplot()
    if cost.empty:
        return fig
    keys = [c for c in _GROUP if c in cost.columns]
    varying = _varying(cost)
    cost = cost.copy()
    if "sd_over_seeds" not in cost.columns:
        cost["sd_over_seeds"] = np.nan
    cost["group"] = [_group_label(dict(zip(keys, vals)), varying, sep="\n")
                     for vals in cost[keys].itertuples(index=False, name=None)]
    # one value per (group, condition), in the table's order
    table = (cost.groupby(["group", "condition"], sort=False, dropna=False)
             [["clean_cost", "sd_over_seeds"]].mean())
    groups = list(dict.fromkeys(cost["group"]))
    conds = [c for c in dict.fromkeys(cost["condition"]) if c != "none"]
    if len(groups) > 8:
        fig.set_size_inches(max(8.0, 0.9 * len(groups)), 3.6)
    width = 0.8 / max(len(conds), 1)
    for i, c in enumerate(conds):
        part = table.xs(c, level="condition").reindex(groups)
        x = np.arange(len(groups)) + i * width
        bars = ax.bar(x, part["clean_cost"].to_numpy(float), width,
                      yerr=part["sd_over_seeds"].to_numpy(float), label=c,
                      color=condition_colour(c), capsize=2)
        for patch in bars.patches:
            patch.set_gid(f"condition:{c}")
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, fontsize=7)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("clean accuracy minus 'none'")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("clean-accuracy cost of each condition (mean ± SD over seeds)")
    return fig


def plot_masking(table: pd.DataFrame) -> Figure:
    """Masking diagnostics per condition, one panel per check that this run could make: the CE
    attack above the ensemble worst case (threshold 0.1), Square minus the best gradient
    attack (negative beyond -0.05: the black box wins), and accuracy at the large eps of each
    attack (must be near chance). A check without numbers gets no panel; with none at all the
    figure says so instead of showing empty axes."""
    fig = Figure(figsize=(10, max(3.8, 0.12 * len(table) + 1.0)), layout="constrained")
    if table.empty:
        return fig

    def finite(cols: list[str]) -> list[str]:
        return [c for c in cols if np.isfinite(pd.to_numeric(table[c], errors="coerce")).any()]

    ce = table.attrs.get("ce_attack") or "CE attack"
    tol = float(table.attrs.get("tol", 0.1))
    judged = finite([c for c in table.columns if c.startswith("ce_pgd_excess_max_low:")])
    panels = [
        # what the flag judges: the largest lower CI bound over eps of the CE attack's excess
        # over the reference networks' gap; the raw gap where no per-image outcome exists
        (judged, "bar", f"{ce}: excess over the reference gap, largest CI lower bound over "
         f"eps (flag > {tol:g})", tol) if judged else
        (finite([c for c in table.columns if c.startswith("ce_pgd_minus_worst:")]), "bar",
         f"{ce} accuracy minus ensemble worst case", tol),
        (finite([c for c in table.columns if c.startswith("square_minus_best_gradient:")]),
         "bar", "Square accuracy minus the best gradient attack's", -tol / 2),
        (finite([c for c in table.columns if c.startswith("large_eps:")]), "dot",
         "accuracy at the large eps (chance 0.1)", 0.1),
    ]
    panels = [p for p in panels if p[0]]
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no masking diagnostic could be computed in this run\n"
                "(report.md, 'Masking diagnostics', says which checks did not run and why)",
                ha="center", va="center", fontsize=9)
        return fig
    keys = [c for c in _GROUP if c in table.columns]
    varying = _varying(table)
    label = [f"{c} | " + _group_label(dict(zip(keys, vals)), varying, sep=" ")
             for c, vals in zip(table["condition"],
                                table[keys].itertuples(index=False, name=None))]
    y = np.arange(len(table))
    for pi, (cols, kind, xlabel, threshold) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), pi + 1)
        for i, col in enumerate(cols):
            name = col.split(":", 1)[1]
            if kind == "bar":
                ax.barh(y + 0.8 * i / len(cols), table[col], height=0.8 / len(cols), label=name)
            else:
                ax.plot(table[col], y, "o", ms=3, label=name, color=f"C{i}")
        ax.axvline(threshold, color="r", lw=0.8, ls="--")
        ax.set_yticks(y, label if pi == 0 else [""] * len(y), fontsize=5)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle("masking diagnostics (red: thresholds)", fontsize=9)
    return fig
