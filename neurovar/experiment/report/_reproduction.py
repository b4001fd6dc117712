"""The paper-reproduction part of ``report.md``: figures in the paper's terms and the claims.

Used by :func:`neurovar.experiment.report.write_report` for every run: the positive controls and the
target checks apply to any grid; the paper comparison appears when the config has
paper-protocol targets. Figures are built without pyplot and use one colour per condition
(:func:`neurovar.experiment.registry.condition_colour`) in every panel; intervals are the
crossed bootstrap over seeds and images of :func:`~neurovar.experiment.reproduction.
condition_accuracy`, the same as the report's text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from neurovar.experiment.registry import condition_colour, condition_label
from neurovar.experiment.reproduction import (
    condition_accuracy,
    matched_clean_gain,
    paper_comparison,
    reproduction_claims,
)
from neurovar.plot._style import panels, save_figure

__all__ = [
    "reproduction_section",
    "plot_protocol_curves",
    "plot_target_curves",
    "plot_source_target_heatmap",
    "plot_positive_controls",
    "plot_magnitude_sweep",
    "plot_robustness_vs_clean",
]

_X_LABELS = {"attack": "L-inf eps", "corruption": "severity", "paper_corruption": "severity (ImageNet-C, 28x28 as the paper)"}
_MOD_LABELS = {"pixel_noise": "pixel noise sigma", "obstruction": "obstruction scale",
               "random_rotation": "rotation scale (x 60 deg)", "rotation": "degrees",
               "gaussian_blur": "blur sigma (px)", "contrast": "contrast reduction",
               "brightness": "brightness shift", "occlusion": "occluded fraction"}


def _xlabel(cfg: Any, target: str) -> str:
    t = cfg.target(target)
    if t.family == "modification":
        return _MOD_LABELS.get(t.name, "strength")
    return _X_LABELS.get(t.family, "strength")


def _figure(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.4)):
    """Panels with room for the legend below them (:func:`neurovar.plot._style.panels`)."""
    return panels(n, ncols, size, min_width=7.0, extra_height=1.0)


def _legend(fig: Figure, axes: list) -> None:
    """One legend for the figure, below the panels, every condition once."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_"):
                seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center",
                   ncols=min(len(seen), 3), fontsize=7)


def _band(ax, sub: pd.DataFrame, colour: str, label: str, style: str = "-",
          marker: str = "o") -> None:
    sub = sub.sort_values("strength")
    ax.plot(sub["strength"], sub["accuracy"], style, color=colour, marker=marker, ms=3,
            label=label)
    ax.fill_between(sub["strength"], sub["ci_low"], sub["ci_high"], color=colour, alpha=0.15,
                    lw=0)


def _belongs(cfg: Any, condition: str, kind: str, target: str | None = None) -> bool:
    """Whether a condition is drawn in a panel of attack (``kind="attack"``) or naturalistic
    targets: source-free conditions always; a source's conditions with targets of its kind
    (the paper evaluates attack-source networks on attacks, naturalistic ones on their own
    modification); the positive control of pixel noise on every naturalistic panel."""
    from neurovar.experiment.registry import parse_condition

    entry, source, _ = parse_condition(condition)
    if source is None:
        return True
    return (cfg.source(source).family == "attack") == (kind == "attack")


def plot_protocol_curves(acc: pd.DataFrame, comparison: pd.DataFrame, cfg: Any) -> Figure:
    """Accuracy vs eps per condition for every paper-protocol attack target (solid, crossed
    bootstrap CI), the same networks' adaptive worst case (dotted), and the paper's published
    numbers (open squares, dashed; FashionMNIST, their table). One panel per (target,
    magnitude): the paper's "it works" figure beside the adaptive evaluation."""
    paper_t = [t.target_id for t in cfg.targets if t.protocol == "paper" and t.family == "attack"]
    adaptive = [t.target_id for t in cfg.targets if t.protocol == "adaptive"
                and t.family == "attack"]
    mags = sorted({float(m) for m in acc["magnitude"].unique()})
    attack_mags = sorted({m for s in cfg.sources if s.family == "attack"
                          for m in (s.magnitudes or cfg.magnitudes)}) or mags
    panels = [(t, m) for t in paper_t for m in attack_mags]
    fig, axes = _figure(max(len(panels), 1))
    noisy = acc[acc["noise_at_test"]]
    for ax, (t, m) in zip(axes, panels):
        sub = noisy[(noisy["magnitude"] == m)]
        for cond in sub["condition"].unique():
            c = sub[(sub["condition"] == cond) & (sub["target"] == t)]
            if c.empty or not _belongs(cfg, cond, "attack"):
                continue
            colour = condition_colour(cond)
            _band(ax, c, colour, condition_label(cond))
            for a in adaptive:
                ca = sub[(sub["condition"] == cond) & (sub["target"] == a)]
                if not ca.empty:
                    _band(ax, ca, colour, "_", style=":", marker="v")
            if not comparison.empty and "theirs" in comparison:
                th = comparison[(comparison["condition"] == cond) & (comparison["target"] == t)
                                & (comparison["magnitude"] == m)].dropna(subset=["theirs"])
                if not th.empty:
                    th = th.sort_values("strength")
                    ax.plot(th["strength"], th["theirs"], "--", color=colour, marker="s",
                            mfc="none", ms=4, lw=0.8)
        ax.set_title(f"{t}, magnitude {m:g}", fontsize=8)
        ax.set_xlabel(_xlabel(cfg, t))
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
    fig.suptitle("solid: paper protocol (band: 95% CI); dotted: the same networks under the "
                 "adaptive attack; open squares: the paper's published numbers", fontsize=8)
    _legend(fig, axes)
    return fig


def plot_target_curves(acc: pd.DataFrame, cfg: Any) -> Figure:
    """Accuracy vs strength per condition for every non-attack target (one panel per target
    and magnitude; the positive controls' targets included), with the per-panel unit."""
    targets = [t.target_id for t in cfg.targets if t.family != "attack"]
    mags = sorted({float(m) for m in acc["magnitude"].unique()})
    panels = [(t, m) for t in targets for m in mags]
    fig, axes = _figure(max(len(panels), 1))
    noisy = acc[acc["noise_at_test"]]
    for ax, (t, m) in zip(axes, panels):
        sub = noisy[(noisy["magnitude"] == m) & (noisy["target"] == t)]
        for cond in sub["condition"].unique():
            if not _belongs(cfg, cond, "naturalistic", target=t):
                continue
            _band(ax, sub[sub["condition"] == cond], condition_colour(cond),
                  condition_label(cond))
        ax.set_title(f"{t}, magnitude {m:g}", fontsize=8)
        ax.set_xlabel(_xlabel(cfg, t))
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
    _legend(fig, axes)
    return fig


def plot_source_target_heatmap(acc: pd.DataFrame, cfg: Any) -> Figure:
    """Accuracy of every condition (rows) under every target at its strongest level (columns),
    noise on, paper protocol where the target has it: the paper's source x modification
    heatmap, with the controls as extra rows."""
    noisy = acc[acc["noise_at_test"] & (acc["target"] != "clean")]
    cols = [t.target_id for t in cfg.targets]
    rows = list(dict.fromkeys(noisy["condition"]))
    mags = sorted({float(m) for m in noisy["magnitude"].unique()})
    fig, axes = _figure(len(mags), ncols=2, size=(1.0 + 0.9 * len(cols), 0.45 * len(rows) + 1.8))
    for ax, m in zip(axes, mags):
        mat = np.full((len(rows), len(cols)), np.nan)
        for i, c in enumerate(rows):
            for j, t in enumerate(cols):
                sub = noisy[(noisy["condition"] == c) & (noisy["target"] == t)
                            & (noisy["magnitude"] == m)]
                if not sub.empty:
                    mat[i, j] = sub.sort_values("strength")["accuracy"].iloc[-1]
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(rows)):
            for j in range(len(cols)):
                if np.isfinite(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if mat[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), [condition_label(r) for r in rows], fontsize=7)
        ax.set_title(f"accuracy at each target's strongest level (magnitude {m:g})",
                     fontsize=8)
        fig.colorbar(im, ax=ax, label="accuracy", shrink=0.8)
    return fig


def plot_positive_controls(rows: pd.DataFrame) -> Figure:
    """Gain of each positive control over ``none`` on its target, with the crossed-bootstrap
    CI: the gain the experiment must be able to see."""
    fig, (ax,) = _figure(1, size=(max(4.0, 1.2 * max(len(rows), 1) + 2), 3.2))
    if rows.empty:
        ax.text(0.5, 0.5, "no positive control in this run", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    labels = [f"{r.control}\nvs none on {r.target}\n({r.regime})" for r in rows.itertuples()]
    x = np.arange(len(rows))
    err = np.vstack([rows["difference"] - rows["ci_low"], rows["ci_high"] - rows["difference"]])
    ax.bar(x, rows["difference"], color=[condition_colour(c) for c in rows["control"]],
           yerr=err, capsize=4)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("accuracy gain over none")
    ax.set_title("positive controls (95% crossed-bootstrap CI)", fontsize=8)
    return fig


def plot_magnitude_sweep(acc: pd.DataFrame, cfg: Any) -> Figure | None:
    """Accuracy vs magnitude per condition at every target's middle strength (the paper's
    trace sweep), and vs layer when the run has several (their layer sweep). None when the
    run has one magnitude per condition and one layer."""
    noisy = acc[acc["noise_at_test"] & (acc["target"] != "clean")]
    multi_mag = noisy.groupby("condition")["magnitude"].nunique().max() > 1
    multi_layer = noisy["layer"].nunique() > 1
    if not (multi_mag or multi_layer):
        return None
    targets = [t.target_id for t in cfg.targets]
    fig, axes = _figure(len(targets))
    for ax, t in zip(axes, targets):
        sub = noisy[noisy["target"] == t]
        svals = sorted(sub["strength"].unique())
        mid = svals[len(svals) // 2] if svals else np.nan
        sub = sub[np.isclose(sub["strength"], mid)]
        key = "magnitude" if multi_mag else "layer"
        for cond in sub["condition"].unique():
            c = sub[sub["condition"] == cond].groupby(key)[["accuracy", "ci_low", "ci_high"]] \
                .mean().reset_index()
            ax.errorbar(c[key].astype(str) if key == "layer" else c[key], c["accuracy"],
                        yerr=[c["accuracy"] - c["ci_low"], c["ci_high"] - c["accuracy"]],
                        color=condition_colour(cond), marker="o", ms=3, capsize=2,
                        label=condition_label(cond))
        ax.set_title(f"{t} at {mid:g}", fontsize=8)
        ax.set_xlabel("magnitude (tr)" if key == "magnitude" else "layer")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
    _legend(fig, axes)
    return fig


def plot_robustness_vs_clean(acc: pd.DataFrame, cfg: Any) -> Figure:
    """Robustness against clean accuracy: per attack target (middle strength), one point per
    condition and magnitude, joined across magnitudes, with crossed-bootstrap CIs on both axes.

    A defence is only better if it is more robust *at the same clean accuracy*: a condition
    that buys robustness with clean accuracy sits on the trade-off every noise level draws, so
    compare points at matched clean accuracy, not gains at matched noise variance."""
    targets = [t.target_id for t in cfg.targets if t.family == "attack"]
    fig, axes = _figure(max(len(targets), 1))
    noisy = acc[acc["noise_at_test"]]
    clean = noisy[noisy["target"] == "clean"].set_index(["regime", "layer", "condition",
                                                         "magnitude"])
    for ax, t in zip(axes, targets):
        sub = noisy[noisy["target"] == t]
        if sub.empty:
            continue
        svals = sorted(sub["strength"].unique())
        mid = svals[len(svals) // 2]
        sub = sub[np.isclose(sub["strength"], mid)]
        for cond, part in sub.groupby("condition", sort=False):
            rows = []
            for r in part.sort_values("magnitude").itertuples():
                key = (r.regime, r.layer, r.condition, r.magnitude)
                if key in clean.index:
                    c = clean.loc[key]
                    c = c.iloc[0] if isinstance(c, pd.DataFrame) else c
                    rows.append((c["accuracy"], c["ci_low"], c["ci_high"], r.accuracy,
                                 r.ci_low, r.ci_high))
            if not rows:
                continue
            a = np.array(rows)
            ax.errorbar(a[:, 0], a[:, 3], xerr=[a[:, 0] - a[:, 1], a[:, 2] - a[:, 0]],
                        yerr=[a[:, 3] - a[:, 4], a[:, 5] - a[:, 3]], marker="o", ms=4,
                        capsize=2, color=condition_colour(cond), label=condition_label(cond))
        ax.set_title(f"{t} at {mid:g}", fontsize=8)
        ax.set_xlabel("clean accuracy")
        ax.set_ylabel("accuracy under the target")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
    _legend(fig, axes)
    return fig


def _fmt(v: Any, digits: int = 2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not np.isfinite(f) else f"{f:.{digits}f}"


def reproduction_section(out: Path, cfg: Any, results: Any) -> tuple[list[str], list[str]]:
    """Figures under ``out/figures`` and the markdown lines of the reproduction section.

    Writes ``accuracy.csv`` (every condition x target x strength with crossed-bootstrap CIs),
    ``paper_comparison.csv`` (ours beside theirs), ``claims_reproduction.csv`` and
    ``matched_clean_gain.csv`` (the gain at matched clean accuracy). Returns
    ``(lines, figure_names)``.
    """
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    acc = condition_accuracy(results, cfg, n_resamples=cfg.evaluation.n_bootstrap)
    acc.to_csv(out / "accuracy.csv", index=False)
    has_paper = any(t.protocol == "paper" for t in cfg.targets)
    comparison = paper_comparison(results, cfg, acc) if has_paper else pd.DataFrame()
    if not comparison.empty:
        comparison.to_csv(out / "paper_comparison.csv", index=False)
    claims = reproduction_claims(results, cfg, n_resamples=cfg.evaluation.n_bootstrap)
    frames = [c.to_frame().assign(claim=c.key) for c in claims if c.rows]
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(out / "claims_reproduction.csv",
                                                    index=False)
    written: list[str] = []
    if any(t.protocol == "paper" and t.family == "attack" for t in cfg.targets):
        save_figure(plot_protocol_curves(acc, comparison, cfg), figs / "paper_attacks.png")
        written.append("paper_attacks.png")
    if any(t.family != "attack" for t in cfg.targets):
        save_figure(plot_target_curves(acc, cfg), figs / "naturalistic_targets.png")
        written.append("naturalistic_targets.png")
    save_figure(plot_source_target_heatmap(acc, cfg), figs / "source_target_heatmap.png")
    written.append("source_target_heatmap.png")
    by_key = {c.key: c for c in claims}
    save_figure(plot_positive_controls(by_key["positive_control"].to_frame()),
          figs / "positive_controls.png")
    written.append("positive_controls.png")
    if any(t.family == "attack" for t in cfg.targets):
        save_figure(plot_robustness_vs_clean(acc, cfg), figs / "robustness_vs_clean.png")
        written.append("robustness_vs_clean.png")
    sweep = plot_magnitude_sweep(acc, cfg)
    if sweep is not None:
        save_figure(sweep, figs / "magnitude_layer_sweep.png")
        written.append("magnitude_layer_sweep.png")

    lines = ["## The paper's claims, reproduced and then attacked adaptively", ""]
    none_clean = acc[(acc["target"] == "clean") & (acc["condition"] == "none")
                     & acc["noise_at_test"]]
    if not none_clean.empty:
        lines.append("Clean accuracy (mean over seeds and test images, 95% crossed-bootstrap "
                     "CI): " + "; ".join(
                         f"`{r.condition}` ({r.regime}, m={r.magnitude:g}) {_fmt(r.accuracy)} "
                         f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
                         for r in acc[(acc["target"] == "clean") & acc["noise_at_test"]]
                         .drop_duplicates(["condition", "magnitude"]).itertuples()) + ".")
        lines.append("")
    titles = {"positive_control": "Positive controls (read first)",
              "it_works_attacks": "Claim: structured noise makes the network robust to attacks",
              "it_works_naturalistic": "Claim: structured noise helps against its own "
                                       "modification",
              "masking": "Gradient masking under the paper protocol",
              "targets_bite": "Do the targets bite?"}
    for c in claims:
        lines += [f"### {titles.get(c.key, c.key)}", "", c.statement, "",
                  f"**Answer from this run:** {c.answer}", ""]
        if c.key in ("positive_control", "it_works_attacks", "it_works_naturalistic") and c.rows:
            lines += ["| regime | m | condition | versus | target | protocol | difference "
                      "[95% CI] | verdict |", "|---|---|---|---|---|---|---|---|"]
            for r in c.rows:
                cond = r.get("control") or f"structured:{r.get('source')}"
                lines.append(f"| {r['regime']} | {r['magnitude']:g} | {cond} | "
                             f"{r.get('versus', 'none')} | {r['target']} | "
                             f"{r.get('protocol', 'paper')} | {r['difference']:+.3f} "
                             f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['verdict']} |")
            lines.append("")
    if not comparison.empty:
        lines += ["### Our numbers beside the paper's", "",
                  "Theirs: FashionMNIST, full 10,000 test images, 10 trials, mean +- 1.96 SE "
                  "(`neurovar/data/preble2026_reference.csv`, from their repository's "
                  "`saved/_figures/it_works_table.xlsx` at commit 450bcbd). Ours: this run's "
                  "data and budget (see the config header), crossed-bootstrap 95% CIs; "
                  "`adaptive` is the same network under the adaptive ensemble at the same eps. "
                  "Their table holds each attack's own-source network only: where our source "
                  "differs, their number is marked with its source.",
                  "", "| condition | target | strength | ours (paper protocol) | ours (adaptive) "
                  "| theirs |", "|---|---|---|---|---|---|"]
        for r in comparison.itertuples():
            ad = (f"{_fmt(getattr(r, 'ours_adaptive', np.nan))} "
                  f"[{_fmt(getattr(r, 'ours_adaptive_low', np.nan))}, "
                  f"{_fmt(getattr(r, 'ours_adaptive_high', np.nan))}]"
                  if np.isfinite(getattr(r, "ours_adaptive", np.nan)) else "-")
            th = (f"{_fmt(getattr(r, 'theirs', np.nan))}"
                  + ("" if bool(getattr(r, "same_source", True))
                     else f" ({getattr(r, 'theirs_source', '')} source)")
                  if np.isfinite(getattr(r, "theirs", np.nan)) else "-")
            lines.append(f"| {condition_label(r.condition)} | {r.target} | {r.strength:g} | "
                         f"{_fmt(r.ours_paper)} [{_fmt(r.ours_paper_low)}, "
                         f"{_fmt(r.ours_paper_high)}] | {ad} | {th} |")
        lines.append("")
    lines += _matched_clean_lines(out, cfg, results)
    lines += ["Figures: " + ", ".join(f"`figures/{f}`" for f in written) + ".", ""]
    return lines, written


def _matched_clean_lines(out: Path, cfg: Any, results: Any) -> list[str]:
    """The gain at matched clean accuracy (``matched_clean_gain.csv``) as a table and a
    sentence: the number behind ``figures/robustness_vs_clean.png``."""
    if not any(t.family == "attack" for t in cfg.targets):
        return []
    table = matched_clean_gain(results, cfg, n_resamples=cfg.evaluation.n_bootstrap)
    if table.empty:
        return []
    table.to_csv(out / "matched_clean_gain.csv", index=False)
    lines = ["### Gain at matched clean accuracy", "",
             "Each condition's robustness (attack target at its middle strength, noise on at "
             "test) interpolated along its magnitudes at the clean accuracy of the comparison, "
             "minus the comparison's robustness; 95% CI from the same crossed bootstrap over "
             "seeds and images (`matched_clean_gain.csv`). No extrapolation: a comparison "
             "whose clean accuracy lies outside the condition's range is not computable.", ""]
    ok = table[np.isfinite(table["gain"])]
    if ok.empty:
        reasons = sorted({str(n).split(":")[0] for n in table["note"] if n})
        lines += [f"Not computable in this run ({', '.join(reasons)}): the conditions' clean "
                  "accuracies do not overlap, or each ran at one magnitude.", ""]
        return lines
    shown = ok[ok["ci_low"] > 0]
    worse = ok[ok["ci_high"] < 0]
    lines += [f"{len(shown)} of {len(ok)} computable comparisons show a gain at matched clean "
              f"accuracy with a CI above 0, {len(worse)} a loss with a CI below 0 "
              f"({len(table) - len(ok)} not computable).", "",
              "| regime | target | condition | versus (m) | clean | robust: versus | "
              "robust: condition | gain [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for r in ok.itertuples():
        vm = "" if not np.isfinite(r.versus_magnitude) else f" ({r.versus_magnitude:g})"
        lines.append(f"| {r.regime} | {r.target} | {condition_label(r.condition)} | "
                     f"{r.versus}{vm} | {_fmt(r.clean_versus)} | {_fmt(r.robust_versus)} | "
                     f"{_fmt(r.robust_matched)} | {r.gain:+.3f} [{r.ci_low:+.3f}, "
                     f"{r.ci_high:+.3f}] |")
    lines.append("")
    return lines
