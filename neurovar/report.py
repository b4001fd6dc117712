"""Figures and ``report.md`` of an experiment folder, rebuilt from its saved cells.

:func:`write_report` (``neurovar report DIR``) reads ``DIR/experiment.json`` and ``DIR/cells``,
re-assembles ``results.nc`` / ``results.csv``, computes the transfer matrix, the masking
diagnostics, the link model and the three claims (:mod:`neurovar.experiment.analysis`), and
writes ``transfer_matrix.nc``, ``figures/*.png`` and ``report.md``. The report is written from
the run's own numbers, null results included.

Figure functions take the analysis objects and return a :class:`matplotlib.figure.Figure`
built without pyplot (``ax=`` draws into an existing axes where it makes sense), like
:mod:`neurovar.plot`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from neurovar.experiment import (
    ExperimentConfig,
    claims,
    clean_cost,
    collect,
    link_model,
    masking_diagnostics,
    transfer_matrix,
)
from neurovar.experiment.registry import (
    CONDITIONS,
    MAGNITUDE_RULES,
    REGIMES,
    condition_colour,
)
from neurovar.experiment.runner import RUN_FILE, lock_path
from neurovar.experiment.store import check_results_folder, done_cells

__all__ = [
    "write_report",
    "report_main",
    "plot_robustness_curves",
    "plot_transfer_matrix",
    "plot_alignment_gain",
    "plot_clean_cost",
    "plot_masking",
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


def _panels(n: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    return fig, axes


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
    fig, axes = _panels(len(targets), 3, (4.2, 3.4))
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
    fig, axes = _panels(max(len(groups), 1), 2, (5.0, 3.6))
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
    fig, axes = _panels(max(len(keys), 1), 3, (4.2, 3.4))
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
    """Masking diagnostics per condition: CE-PGD above the ensemble worst case, and accuracy
    at the large eps of each attack (must be near chance)."""
    fig = Figure(figsize=(10, max(3.8, 0.12 * len(table) + 1.0)), layout="constrained")
    if table.empty:
        return fig
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    keys = [c for c in _GROUP if c in table.columns]
    varying = _varying(table)
    label = [f"{c} | " + _group_label(dict(zip(keys, vals)), varying, sep=" ")
             for c, vals in zip(table["condition"],
                                table[keys].itertuples(index=False, name=None))]
    gap_cols = [c for c in table.columns if c.startswith("ce_pgd_minus_worst:")]
    y = np.arange(len(table))
    for i, col in enumerate(gap_cols):
        ax1.barh(y + 0.8 * i / max(len(gap_cols), 1), table[col], height=0.8 / max(len(gap_cols), 1),
                 label=col.split(":", 1)[1])
    ax1.axvline(0.1, color="r", lw=0.8, ls="--")
    ax1.set_yticks(y, label, fontsize=5)
    ax1.set_xlabel("CE-PGD accuracy minus ensemble worst case")
    if gap_cols:
        ax1.legend(fontsize=6)
    eps_cols = [c for c in table.columns if c.startswith("large_eps:")]
    for i, col in enumerate(eps_cols):
        ax2.plot(table[col], y, "o", ms=3, label=col.split(":", 1)[1], color=f"C{i}")
    ax2.axvline(0.1, color="r", lw=0.8, ls="--")
    ax2.set_yticks(y, [""] * len(y))
    ax2.set_xlabel("accuracy at the large eps (chance 0.1)")
    ax2.legend(fontsize=6)
    fig.suptitle("masking diagnostics (red: thresholds)", fontsize=9)
    return fig


def _save(fig: Figure, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


def _read_run_config(marker: Path) -> ExperimentConfig:
    """The resolved config recorded in ``experiment.json``; a damaged file is named."""
    fix = ("the folder is half-written or damaged; run the same config into it again to "
           "rewrite it (its finished cells are kept and skipped)")
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"The run file {str(marker)!r} is not valid JSON ({err}): {fix}.") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"The run file {str(marker)!r} holds no 'config' object: {fix}.")
    try:
        return ExperimentConfig.model_validate(meta["config"])
    except (ValueError, TypeError, KeyError) as err:
        first = (str(err).splitlines() or [""])[0]
        raise ValueError(f"The run file {str(marker)!r} does not hold a valid experiment "
                         f"config ({first}): {fix}.") from err


def write_report(out_dir: str | Path, *, results: xr.Dataset | None = None) -> Path:
    """Rebuild results, analysis, figures and ``report.md`` in ``out_dir`` from its cells.

    ``results`` (the Dataset :func:`neurovar.experiment.run` just assembled and wrote) skips
    re-assembling ``results.nc`` from ``cells/``. Returns the path of ``report.md``.

    Raises
    ------
    MissingFolderError
        ``out_dir`` does not exist (a ``FileNotFoundError`` and a ``ValueError``).
    FileNotFoundError
        ``out_dir`` is not an experiment folder (no ``experiment.json``), or has no finished
        cell.
    ValueError
        ``out_dir`` is a file; ``experiment.json`` is damaged (the message names it); a cell
        file cannot be read (:class:`~neurovar.experiment.store.CorruptCellError`, naming
        the file).
    OSError
        The folder cannot be written (permissions, disk full).
    """
    out = check_results_folder(out_dir, owner="write_report")
    marker = out / RUN_FILE
    if not marker.is_file():
        raise FileNotFoundError(f"{str(out)!r} is not a neurovar experiment folder (no {RUN_FILE}).")
    cfg = _read_run_config(marker)
    if lock_path(out).exists():
        warnings.warn(f"A run may still be writing {str(out)!r} (its lock file "
                      f"{str(lock_path(out))!r} exists): the report covers the cells finished "
                      "so far.", UserWarning, stacklevel=2)
    if results is None:
        results = collect(out, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tm = transfer_matrix(results, cfg)
        claim_list = claims(results, cfg)
        cost = clean_cost(results)
        masking, messages = masking_diagnostics(results, cfg)
        link_rows, link_lines = link_model(results, cfg)
    if tm.data_vars:
        tmp = out / f".transfer_matrix.nc.{os.getpid()}.tmp"
        tm.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, out / "transfer_matrix.nc")
    masking.to_csv(out / "masking.csv", index=False)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    written = []
    several_m = results.sizes.get("magnitude", 1) > 1
    several_layers = results.sizes.get("layer", 1) > 1
    for regime in map(str, results["regime"].values):
        for magnitude in map(float, results["magnitude"].values):
            for layer in map(str, results["layer"].values):
                for flag in results["noise_at_test"].values:
                    acc = results["accuracy"].sel(regime=regime, magnitude=magnitude,
                                                  layer=layer, noise_at_test=flag)
                    if not np.isfinite(acc.values).any():
                        continue
                    name = (f"robustness_{regime}" + (f"_m{magnitude:g}" if several_m else "")
                            + (f"_{layer}" if several_layers else "")
                            + f"_noise-{'on' if flag else 'off'}.png")
                    _save(plot_robustness_curves(results, regime=regime,
                                                 noise_at_test=bool(flag),
                                                 magnitude=magnitude, layer=layer),
                          figs / name)
                    written.append(name)
    if tm.data_vars:
        for base in map(str, tm["baseline"].values):
            _save(plot_transfer_matrix(tm, baseline=base), figs / f"transfer_matrix_{base}.png")
            written.append(f"transfer_matrix_{base}.png")
    if not link_rows.empty:
        _save(plot_alignment_gain(link_rows, link_lines), figs / "alignment_gain.png")
        written.append("alignment_gain.png")
    _save(plot_clean_cost(cost), figs / "clean_cost.png")
    _save(plot_masking(masking), figs / "masking.png")
    written += ["clean_cost.png", "masking.png"]
    seconds = []
    for cell_id in done_cells(out):  # finished cells only: a running cell's .tmp is not read
        try:
            info = json.loads((out / "cells" / cell_id / "spec.json").read_text()).get("info", {})
            seconds.append(float(info.get("seconds", np.nan)))
        except (OSError, ValueError, TypeError, AttributeError):
            seconds.append(np.nan)  # a cell of another grid; its numbers are not in results
    from neurovar.report_reproduction import reproduction_section

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        repro_lines, repro_figs = reproduction_section(out, cfg, results)
    written += repro_figs
    text = _markdown(cfg, results, tm, claim_list, cost, masking, messages, link_lines, written,
                     seconds)
    # the reproduction (positive controls first) comes before the grid's own claims
    text = text.replace("## The three claims\n", "\n".join(repro_lines)
                        + "\n## The three claims (structured vs isotropic noise)\n", 1)
    tmp = out / f".report.md.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / "report.md")
    return out / "report.md"


def report_main(results: str | Path, *, prog: str = "neurovar report") -> int:
    """``neurovar report RESULTS``: rebuild the report; returns the exit status.

    A user error (missing path, not an experiment folder, a damaged file, a folder that
    cannot be written) is one line on stderr naming the file and what is wrong, with exit
    status 2, never a traceback. Warnings (a run still writing the folder) are printed as
    ``warning:`` lines.
    """
    import sys

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            path = write_report(results)
        except (FileNotFoundError, NotADirectoryError, ValueError) as err:
            code, message = 2, (str(err).splitlines() or [""])[0]
        except OSError as err:  # permissions, disk full: name the file
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            code, message = 2, (f"cannot write the report into {str(results)!r}: "
                                f"{err.strerror or err}{where}")
        else:
            code, message = 0, ""
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"{prog}: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if code:
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code
    print(f"report written to {path}")
    return 0


def _epochs_text(cfg: ExperimentConfig, regime: str) -> str:
    from neurovar.experiment.cell import _epochs_lr

    epochs, lr = _epochs_lr(cfg, regime)
    return f"{epochs} epoch(s) at lr {lr:g}"


def _markdown(cfg, results, tm, claim_list, cost, masking, messages, link_lines, figures,
              seconds) -> str:
    ev = cfg.evaluation
    n_cells, n_done = results.attrs.get("n_cells"), results.attrs.get("n_done")
    lines = [
        f"# neurovar experiment: {cfg.name}",
        "",
        "Does structured (correlated) noise injected into a layer make the network more robust, "
        "which structure transfers, and why? (Preble, Venkatesh, Mihalas & Harris 2026.) "
        "Every number below is computed from this run's cells; nothing was tuned to make an "
        "expected answer appear.",
        "",
        "## What was run",
        "",
        f"- data `{cfg.data.name}` ({cfg.data.n_fit} training images to fit covariances, "
        f"{results.sizes['stimulus']} test images evaluated per cell); model `{cfg.model.name}`; "
        f"noise at layer(s) {', '.join(cfg.layers)}; seeds {list(cfg.seeds)}.",
        f"- regimes: {', '.join(cfg.regimes)}; conditions: {', '.join(cfg.expanded_conditions())}; "
        f"magnitudes m = {', '.join(f'{m:g}' for m in cfg.all_magnitudes)} (rule "
        f"`{cfg.magnitude_rule}`: total noise variance = "
        f"{MAGNITUDE_RULES[cfg.magnitude_rule].description}, the same for every noise condition "
        "of a magnitude)" + "".join(
            f"; source `{s.source_id}` at m = {', '.join(f'{m:g}' for m in s.magnitudes)}"
            for s in cfg.sources if s.magnitudes) + ".",
        "- what each regime does: " + "; ".join(f"`{r}`: {REGIMES[r].description}"
                                               for r in cfg.regimes)
        + f"; prediction of a noisy network: mean logits of {ev.prediction_passes} pass(es).",
        "- sources: " + "; ".join(
            f"`{s.source_id}` ({s.family} {s.name}{' ' + s.norm if s.family == 'attack' else ''} "
            f"at {s.strength:g}, fit `{s.method or cfg.fit.method}`)" for s in cfg.sources) + ".",
        "- targets: " + "; ".join(
            f"`{t.target_id}` at {', '.join(f'{v:g}' for v in t.strengths)}"
            + (f" (worst case of {', '.join(cfg.target_attacks(t.target_id))})"
               if t.family == "attack" else " (accuracy under it)") for t in cfg.targets) + ".",
        f"- attack budget: {ev.steps} PGD steps, {ev.n_queries} Square queries, "
        f"{ev.eot_samples} EOT draws and {ev.n_evaluations} repeated evaluations for noisy "
        "networks (an example counts as robust only if it survives every evaluation); "
        f"diagnostics at L-inf eps {ev.large_eps:g}.",
        "- conditions: " + "; ".join(
            f"`{name}`: {CONDITIONS[name].description}" for name in dict.fromkeys(
                c.split(":")[0] for c in cfg.expanded_conditions())) + ".",
        "- training: " + "; ".join(
            f"`{r}` {_epochs_text(cfg, r)}" for r in cfg.regimes if REGIMES[r].trains)
        + (f" (the adaptive regime re-fits every {cfg.training.adapt_every} epoch(s))"
           if "train-time-adaptive" in cfg.regimes else "") + "; `none` and the positive "
        "controls are trained the same way without noise.",
        f"- cells: {n_done} of {n_cells} finished; compute time {np.nansum(seconds):.0f} s in "
        f"all, {np.nanmedian(seconds) if seconds else float('nan'):.1f} s median per cell "
        f"(threads per cell: {cfg.threads}; device {cfg.device}).",
        "",
        "## The three claims",
        "",
    ]
    for c in claim_list:
        lines += [f"**Claim {c.number}**: {c.text}.", ""]
        if not c.rows:
            lines += ["Not testable with this grid (it needs the sources/targets/conditions "
                      "named above).", ""]
            continue
        lines += ["| regime | m | layer | noise at test | estimate | 95% CI | p (per image) | p (seeds) | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in c.rows:
            lines.append(
                f"| {r['regime']} | {r['magnitude']:g} | {r.get('layer', '')} | "
                f"{'on' if r['noise_at_test'] else 'off'} | "
                f"{r['estimate']:+.3f} | [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | "
                f"{_fmt(r['p_example'])} | {_fmt(r.get('p_seed', float('nan')))} | {r['verdict']} |")
        lines.append("")
    lines += [
        "Estimates are accuracy differences (structured minus isotropic, per test image, "
        "averaged over the target's strengths); CIs are crossed percentile bootstraps "
        "(seeds and the shared test images resampled independently); p (per image) is a paired sign-flip permutation test over "
        "(seed, image) pairs, p (seeds) the exact paired permutation test over seed means "
        f"(it cannot go below {2 ** (1 - len(cfg.seeds)):.3g} with {len(cfg.seeds)} seeds). "
        "Verdict: supported if the CI lies above 0, not supported if below, inconclusive "
        "otherwise.",
        "",
        "## Transfer matrix (gain over isotropic)",
        "",
    ]
    if tm.data_vars:
        sub = tm.sel(baseline="isotropic") if "isotropic" in tm["baseline"].values else tm.isel(baseline=0)
        for regime in map(str, sub["regime"].values):
            for magnitude in sub["magnitude"].values:
                for layer in map(str, sub["layer"].values):
                    for flag in sub["noise_at_test"].values:
                        g = sub.sel(regime=regime, magnitude=magnitude, layer=layer, noise_at_test=flag)
                        if not np.isfinite(g["gain"].values).any():
                            continue
                        lines += [f"*{regime}, m={float(magnitude):g}, {layer}, noise "
                                  f"{'on' if flag else 'off'} at test* (gain [CI], q; **bold** = diagonal)", "",
                                  "| source \\ target | " + " | ".join(map(str, g["target"].values)) + " |",
                                  "|---|" + "---|" * g.sizes["target"]]
                        for s in map(str, g["source"].values):
                            cells = []
                            for t in map(str, g["target"].values):
                                v = g.sel(source=s, target=t)
                                txt = (f"{float(v['gain']):+.2f} [{float(v['ci_low']):+.2f}, "
                                       f"{float(v['ci_high']):+.2f}], q={_fmt(float(v['q_value']), 2)}")
                                cells.append(f"**{txt}**" if bool(tm["diagonal"].sel(source=s, target=t)) else txt)
                            lines.append(f"| {s} | " + " | ".join(cells) + " |")
                        lines.append("")
    lines += ["## Clean-accuracy cost", "",
              "| regime | m | layer | noise at test | condition | clean accuracy minus none | SD over seeds |",
              "|---|---|---|---|---|---|---|"]
    for _, r in cost.iterrows():
        if r["condition"] == "none":
            continue
        lines.append(f"| {r['regime']} | {r['magnitude']:g} | {r['layer']} | "
                     f"{'on' if r['noise_at_test'] else 'off'} | {r['condition']} "
                     f"| {r['clean_cost']:+.3f} | {_fmt(r['sd_over_seeds'], 2)} |")
    lines += ["", "## Masking diagnostics", ""]
    if messages:
        lines += ["Flags, each naming the condition and the attack (numbers are means over "
                  "seeds):", ""] + [f"- {m}" for m in messages]
    else:
        lines += ["No masking flag: for every stochastic or noise-trained condition CE-PGD was "
                  "within 0.1 of the ensemble's worst case, the black-box attack did not beat "
                  "the gradient attacks, and every attack reached chance at the large eps."]
    n_masked = int(masking["masking_suspected"].sum()) if not masking.empty else 0
    lines += ["", f"{n_masked} of {len(masking)} stochastic/noise-trained (condition, regime, "
              "noise at test) combinations have a masking flag; the per-attack numbers are in "
              "`masking.csv`. Robustness numbers in this report are always the ensemble's worst "
              "case, never one attack alone.", "",
              "## Why: alignment and the link model", "",
              "Alignment = noise variance along the target's top-3 perturbation directions "
              "(activation change on the base network) relative to isotropic noise of the same "
              "total variance (`target_alignment`; 1 = isotropic). Mixed model `gain ~ "
              "log2(alignment)` with a random intercept per seed:", ""]
    lines += [f"- {line}" for line in link_lines] or ["- not fitted (no isotropic condition)."]
    lines += ["", "## Files", "",
              "- `results.nc` (xarray; dims seed, regime, condition, magnitude, layer, "
              "noise_at_test, target, strength, stimulus, attack), `results.csv` (tidy, one row "
              "per cell x noise_at_test x target x strength; readable by `neurovar stats`), "
              "`transfer_matrix.nc`, `masking.csv`, `cells/` (one folder per cell: rebuild "
              "everything with `neurovar report DIR`).",
              "- figures: " + ", ".join(f"`figures/{f}`" for f in figures) + "."]
    return "\n".join(lines) + "\n"
