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
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from neurovar._io import atomic_path
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
)
from neurovar.experiment.runner import RUN_FILE, lock_path
from neurovar.experiment.store import check_results_folder, done_cells

from ._figures import (
    plot_alignment_gain,
    plot_clean_cost,
    plot_masking,
    plot_robustness_curves,
    plot_transfer_matrix,
    save_figure,
)

__all__ = ["write_report", "report_main"]


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
        with atomic_path(out / "transfer_matrix.nc", overwrite=True, owner="write_report") as tmp:
            tm.to_netcdf(tmp, engine="h5netcdf")
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
                    save_figure(plot_robustness_curves(results, regime=regime,
                                                 noise_at_test=bool(flag),
                                                 magnitude=magnitude, layer=layer),
                          figs / name)
                    written.append(name)
    if tm.data_vars:
        for base in map(str, tm["baseline"].values):
            save_figure(plot_transfer_matrix(tm, baseline=base), figs / f"transfer_matrix_{base}.png")
            written.append(f"transfer_matrix_{base}.png")
    if not link_rows.empty:
        save_figure(plot_alignment_gain(link_rows, link_lines), figs / "alignment_gain.png")
        written.append("alignment_gain.png")
    save_figure(plot_clean_cost(cost), figs / "clean_cost.png")
    save_figure(plot_masking(masking), figs / "masking.png")
    written += ["clean_cost.png", "masking.png"]
    seconds = []
    for cell_id in done_cells(out):  # finished cells only: a running cell's .tmp is not read
        try:
            info = json.loads((out / "cells" / cell_id / "spec.json").read_text()).get("info", {})
            seconds.append(float(info.get("seconds", np.nan)))
        except (OSError, ValueError, TypeError, AttributeError):
            seconds.append(np.nan)  # a cell of another grid; its numbers are not in results
    from ._reproduction import reproduction_section

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        repro_lines, repro_figs = reproduction_section(out, cfg, results)
    written += repro_figs
    text = _markdown(cfg, results, tm, claim_list, cost, masking, messages, link_lines, written,
                     seconds)
    # the reproduction (positive controls first) comes before the grid's own claims
    text = text.replace("## The three claims\n", "\n".join(repro_lines)
                        + "\n## The three claims (structured vs isotropic noise)\n", 1)
    with atomic_path(out / "report.md", overwrite=True, owner="write_report") as tmp:
        tmp.write_text(text, encoding="utf-8")
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
    not_checked = list(masking.attrs.get("not_checked", []))
    flags = [m for m in messages if m not in not_checked]
    if flags:
        lines += ["Flags, each naming the condition and the attack:", ""] + \
            [f"- {m}" for m in flags]
    else:
        lines += ["No masking flag among the checks that ran"
                  + (" (those that did not are listed below)." if not_checked else
                     ": for every stochastic or noise-trained condition the CE attack was "
                     "within what the same evaluation leaves on the reference networks at "
                     "every eps, the black-box attack did not beat the gradient attacks, and "
                     "every attack reached chance at the large eps.")]
    if not_checked:
        lines += ["", "Not checked in this run (a check that did not run is not a pass):", ""] \
            + [f"- {m}" for m in not_checked]
    n_masked = int(masking["masking_suspected"].sum()) if not masking.empty else 0
    lines += ["", f"{n_masked} of {len(masking)} stochastic/noise-trained (condition, regime, "
              "noise at test) combinations have a masking flag among the checks that ran; the "
              "per-attack numbers are in "
              "`masking.csv`. Robustness numbers in this report are always the ensemble's worst "
              "case, never one attack alone.", "",
              "## Why: alignment and the link model", "",
              "Alignment = noise variance along the target's top-3 perturbation directions "
              "(activation change on the base network) relative to isotropic noise of the same "
              "total variance (`target_alignment`; 1 = isotropic). `gain ~ log2(alignment)` by "
              "OLS with two-way cluster-robust errors (clusters: seed, and condition x target, "
              "whose alignment every seed repeats), so the p is not pseudo-replicated:", ""]
    lines += [f"- {line}" for line in link_lines] or ["- not fitted (no isotropic condition)."]
    lines += ["", "## Files", "",
              "- `results.nc` (xarray; dims seed, regime, condition, magnitude, layer, "
              "noise_at_test, target, strength, stimulus, attack), `results.csv` (tidy, one row "
              "per cell x noise_at_test x target x strength; readable by `neurovar stats`), "
              "`transfer_matrix.nc`, `masking.csv`, `cells/` (one folder per cell: rebuild "
              "everything with `neurovar report DIR`).",
              "- figures: " + ", ".join(f"`figures/{f}`" for f in figures) + "."]
    return "\n".join(lines) + "\n"
