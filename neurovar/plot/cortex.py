"""ANN-vs-cortex figures: each statistic of the networks beside the published bands of cortex."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._validation import param_error
from ._style import _figure_and_axes

__all__ = ['plot_comparison', 'COMPARISON_DETAIL_PANELS']


#: Summary panels drawn with a published reference, and the reference statistic they use.
_REFERENCE_STATISTIC = {
    "fano_factor": "fano_factor",
    "mean_matched_fano_factor": "fano_factor",
    "noise_correlation": "r_sc",
}
#: Raw-value panels of :func:`plot_comparison` (beside one summary panel per statistic).
COMPARISON_DETAIL_PANELS = ("fano_vs_mean", "rsc_distribution", "rsc_vs_signal", "eigenspectrum")


def _comparison_label(key: tuple[str, str, str]) -> str:
    return f"{key[0]}:{key[1]}" + (f" [{key[2]}]" if key[2] else "")


def _short_citation(text: str) -> str:
    first = str(text).split(";")[0]
    return first.split(" Nat")[0].split(" J ")[0].split(" Science")[0].strip()


def _summary_panel(ax: Axes, table: Any, stat: str, reference: Any) -> None:
    """Value and CI per layer/area and condition; matched published bands on cortex rows."""
    from ..cortex.reference import match_reference

    sub = table[table["statistic"] == stat].reset_index(drop=True)
    labels = [
        f"{r.source}:{r.layer}" + (f" [{r.condition}]" if r.condition else "")
        for r in sub.itertuples()
    ]
    y = np.arange(len(sub))
    colors = ["tab:blue" if s == "ann" else "tab:red" for s in sub["source"]]
    lo = (sub["value"] - sub["ci_low"]).clip(lower=0).fillna(0)
    hi = (sub["ci_high"] - sub["value"]).clip(lower=0).fillna(0)
    ax.errorbar(sub["value"], y, xerr=[lo, hi], fmt="none", ecolor="k", lw=1, gid="ci")
    ax.scatter(sub["value"], y, c=colors, zorder=3, gid="value")
    ax.set_yticks(y, labels, fontsize=7)
    title = stat
    if "scale_dependent" in sub and sub["scale_dependent"].astype(bool).any():
        title += "\n(ANN values scale-dependent: not comparable with counts)"
    ref_name = _REFERENCE_STATISTIC.get(stat)
    if reference is not None and ref_name is not None:
        details = table.attrs.get("details") or {}
        notes = []
        for i, r in enumerate(sub.itertuples()):
            if r.source != "cortex":
                continue
            prep = details.get((r.source, r.layer, r.condition), {}).get("preparation") or None
            window = getattr(r, "count_window", "") or None
            ref = match_reference(
                reference, statistic=ref_name, area=str(r.layer), count_window=window,
                preparation=prep,
            )  # fmt: skip
            if ref.empty:
                notes.append(f"{r.layer} ({window or 'window unknown'}): no published match")
                continue
            for p in ref.itertuples():
                if np.isfinite(p.value_low) and np.isfinite(p.value_high):
                    ax.fill_betweenx(
                        [i - 0.4, i + 0.4], p.value_low, p.value_high, color="0.85", zorder=0,
                        gid=f"reference:{r.layer}",
                    )  # fmt: skip
                if np.isfinite(p.value):
                    ax.vlines(p.value, i - 0.4, i + 0.4, color="0.5", ls=":", lw=1,
                              gid=f"reference:{r.layer}")  # fmt: skip
                notes.append(
                    f"{r.layer}: {p.area} {p.preparation}, {p.count_window_ms} ms "
                    f"({_short_citation(p.citation)})"
                )
        if notes:
            title += "\ngrey: published, same area & count window"
            ax.text(0.01, -0.02, "\n".join(notes), transform=ax.transAxes, fontsize=5,
                    va="top", ha="left", gid="reference_note")  # fmt: skip
    ax.set_title(title, fontsize=8)


def _detail_panel(ax: Axes, table: Any, panel: str) -> bool:
    """Draw one raw-value panel; False when the table has no data for it."""
    from ..cortex.compare import _slope

    details = table.attrs.get("details") or {}
    keys = list(details)
    if panel == "fano_vs_mean":
        with_means = [k for k in keys if "mean" in details[k]]
        if not with_means:
            return False
        lims = [np.inf, -np.inf]
        for k in with_means:
            m, v = details[k]["mean"], details[k]["var"]
            ok = (m > 0) & (v > 0)
            if not ok.any():
                continue
            pts = ax.scatter(m[ok], v[ok], s=3, alpha=0.3, label=_comparison_label(k))
            lims = [min(lims[0], m[ok].min()), max(lims[1], m[ok].max())]
            b, a = details[k].get("variance_mean_fit", (np.nan, np.nan))
            if np.isfinite(b):
                xs = np.geomspace(m[ok].min(), m[ok].max(), 50)
                ax.plot(xs, a * xs**b, color=pts.get_facecolor()[0][:3], lw=1.5)
        if np.isfinite(lims[0]):
            ax.plot(lims, lims, "k--", lw=1, label="Poisson (var = mean)", gid="poisson")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("mean response")
        ax.set_ylabel("variance across trials")
    elif panel == "rsc_distribution":
        with_rsc = [k for k in keys if "rsc" in details[k]]
        if not with_rsc:
            return False
        bins = np.linspace(-1, 1, 81)
        for k in with_rsc:
            r = details[k]["rsc"]
            ax.hist(r[np.isfinite(r)], bins=bins, density=True, histtype="step",
                    label=_comparison_label(k))  # fmt: skip
        ax.set_xlabel("noise correlation r_sc")
        ax.set_ylabel("density")
    elif panel == "rsc_vs_signal":
        with_sig = [k for k in keys if "rsig" in details[k]]
        if not with_sig:
            return False
        for k in with_sig:
            x, y = details[k]["rsig"], details[k]["rsc"]
            ax.scatter(x, y, s=2, alpha=0.2, label=_comparison_label(k))
            b = _slope(x, y)
            if np.isfinite(b):
                xs = np.array([-1.0, 1.0])
                ok = np.isfinite(x) & np.isfinite(y)
                ax.plot(xs, y[ok].mean() + b * (xs - x[ok].mean()), lw=1.5)
        ax.set_xlabel("signal correlation")
        ax.set_ylabel("noise correlation r_sc")
    elif panel == "eigenspectrum":
        with_eig = [k for k in keys if "eigenvalues" in details[k]]
        if not with_eig:
            return False
        for k in with_eig:
            lam = np.asarray(details[k]["eigenvalues"], dtype=float)
            lam = lam[np.isfinite(lam) & (lam > 0)]  # dead units / zero eigenvalues: absent
            if lam.size:
                ax.plot(np.arange(1, lam.size + 1), lam / lam.sum(), label=_comparison_label(k),
                        gid=f"spectrum:{_comparison_label(k)}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rank")
        ax.set_ylabel("fraction of noise variance")
    ax.legend(fontsize=6)
    return True


def plot_comparison(
    table: Any,
    *,
    reference: Any = None,
    panel: str | None = None,
    ax: Axes | None = None,
) -> Any:
    """Figures of a :func:`neurovar.cortex.compare` table: summary with CIs, raw values.

    Parameters
    ----------
    table
        Output of :func:`neurovar.cortex.compare`.
    reference
        Optional :func:`neurovar.cortex.load_reference_values` table. Published ranges
        (grey bands) and values (dotted ticks) are drawn on the row of each cortical area
        they match in area, count window and preparation
        (:func:`neurovar.cortex.match_reference`); the panel says which study each band comes
        from, or that none matches. ANN rows get no band.
    panel
        ``None``: every figure, as a dict. A statistic of the table (``"noise_correlation"``)
        or one of ``"fano_vs_mean"``, ``"rsc_distribution"``, ``"rsc_vs_signal"``,
        ``"eigenspectrum"``: that one panel, drawn into ``ax``.
    ax
        Axes to draw one ``panel`` into (a new figure if None). Only with ``panel``.

    Returns
    -------
    dict or matplotlib.figure.Figure
        With ``panel=None``: figures ``"summary"`` (one panel per statistic), and, when the
        table carries raw values (``table.attrs["details"]``), ``"fano_vs_mean"`` (variance vs
        mean, log-log, Poisson line and fitted power law), ``"rsc_distribution"``,
        ``"rsc_vs_signal"`` and ``"eigenspectrum"`` (normalised noise eigenvalues vs rank;
        dead units and zero eigenvalues left out). Otherwise the figure of ``ax``.
    """
    owner = "plot_comparison"
    missing = [c for c in ("source", "layer", "condition", "statistic", "value") if c not in table]
    if missing:
        raise ValueError(
            f"The 'table' parameter of {owner} must be the output of compare(); missing "
            f"columns {missing!r}."
        )
    from ..cortex.compare import STATISTICS

    present = [s for s in STATISTICS if s in set(table["statistic"])]
    present += sorted(set(table["statistic"]) - set(present))
    if panel is not None:
        if panel in present:
            fig, axes = _figure_and_axes(ax, owner, (4.5, 3.5))
            _summary_panel(axes, table, panel, reference)
            return fig
        if panel in COMPARISON_DETAIL_PANELS:
            fig, axes = _figure_and_axes(ax, owner, (4.5, 4))
            if not _detail_panel(axes, table, panel):
                raise ValueError(
                    f"The 'table' parameter of {owner} has no raw values for panel {panel!r} "
                    "(table.attrs['details'] lacks them; compute the matching statistic)."
                )
            return fig
        raise param_error("panel", owner, f"None, one of {present + list(COMPARISON_DETAIL_PANELS)}",
                     panel)  # fmt: skip
    if ax is not None:
        raise ValueError(
            f"The 'ax' parameter of {owner} needs 'panel': with panel=None several figures "
            "are built."
        )
    figures: dict[str, Any] = {}
    n = max(len(present), 1)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for a, stat in zip(axes, present):
        _summary_panel(a, table, stat, reference)
    for a in axes[len(present) :]:
        a.set_visible(False)
    figures["summary"] = fig
    for name in COMPARISON_DETAIL_PANELS:
        fig = Figure(figsize=(4.5, 4), layout="constrained")
        if _detail_panel(fig.add_subplot(), table, name):
            figures[name] = fig
    return figures
