"""What the grid says: transfer matrix, masking diagnostics, link model, the three claims.

Every number here is computed from the assembled results (:func:`neurovar.experiment.store.
assemble`) through :mod:`neurovar.inference` (permutation tests, crossed bootstrap, FDR,
mixed models); nothing is tuned to make an expected answer appear.

Per (regime, magnitude, layer, noise_at_test), source ``s`` and target ``t`` the **gain** of
``structured:s`` over a baseline ``b`` (``isotropic`` or ``none``) is

.. math:: g_{s,t} = \\frac{1}{S N}\\sum_{k=1}^{S}\\sum_{n=1}^{N} d_{kn}, \\qquad
   d_{kn} = \\bar c^{\\,structured:s}_{t,kn} - \\bar c^{\\,b}_{t,kn},

with :math:`\\bar c_{t,kn}` the outcome of test image ``n`` of seed ``k`` averaged over the
target's strengths (attack targets: worst case over the ensemble, 0/1; corruption targets:
fraction of repeated evaluations correct). Its CI is a crossed bootstrap over seeds and images
(the same test images serve every seed; :func:`neurovar.experiment.reproduction.
crossed_bootstrap`); ``p_example`` is a paired
sign-flip permutation test over the (seed, image) pairs (treats images as independent within
a seed); ``p_seed`` is the exact paired permutation test over seeds (with S seeds it cannot go
below :math:`2^{1-S}`: 0.25 with 3 seeds); ``q_value`` is Benjamini-Hochberg over the whole
matrix. The diagonal (source and target the same perturbation: the same corruption or
modification, or an attack of the same norm) and the off-diagonal are summarised separately.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from neurovar.inference import correct_pvalues, permutation_test
from neurovar.perturb.masking import (
    black_box_beats_every_gradient_attack,
    eot_helps,
    near_worst_case,
    reaches_chance,
)

from .config import ExperimentConfig
from .registry import CE_ATTACKS, GRID_DIMS, ce_attack

__all__ = [
    "transfer_matrix",
    "masking_diagnostics",
    "link_model",
    "clean_cost",
    "claims",
    "Claim",
    "is_diagonal",
]

_GROUP = ("regime", "magnitude", "layer", "noise_at_test")


def is_diagonal(cfg: ExperimentConfig, source_id: str, target_id: str) -> bool:
    """Whether a source and a target are the same perturbation (the transfer matrix diagonal):
    the same corruption/modification, or an attack source and an attack target of one norm."""
    from neurovar._validation import check_choice

    check_choice(source_id, name="source_id", owner="is_diagonal", options=cfg.source_ids)
    check_choice(target_id, name="target_id", owner="is_diagonal", options=cfg.target_ids)
    s, t = cfg.source(source_id), cfg.target(target_id)
    if s.family == "attack":
        return t.family == "attack" and t.norm == s.norm
    return t.family == s.family and t.name == s.name


def _outcomes(results: xr.Dataset, condition: str, target: str) -> xr.DataArray:
    """Per-image outcome averaged over the target's strengths: dims (seed, ..., stimulus)."""
    c = results["correct"].sel(condition=condition, target=target)
    return c.mean("strength", skipna=True)


def _pair_test(a: np.ndarray, b: np.ndarray, *, n_permutations: int, n_bootstrap: int,
               confidence_level: float, rng: int) -> dict[str, float]:
    """Paired statistics of per-image outcomes ``a`` and ``b`` of shape (seed, stimulus)."""
    out = {"gain": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
           "p_example": float("nan"), "p_seed": float("nan"), "cohens_d": float("nan"),
           "n_seeds": 0}
    keep = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    a, b = a[keep], b[keep]
    if a.shape[0] == 0:
        return out
    d = a - b
    out["gain"] = float(d.mean())
    out["n_seeds"] = int(a.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few seeds / constant differences are reported as such
        # the same test images serve every seed: resample seeds and images independently
        # (crossed design; resampling images within each seed would understate the spread)
        from .reproduction import crossed_bootstrap

        _, out["ci_low"], out["ci_high"] = crossed_bootstrap(
            d, n_resamples=n_bootstrap, confidence_level=confidence_level, rng=rng)
        # alpha only gates permutation_test's refusal of designs that cannot reach it; the
        # exact attainable p-value is what is reported (with few seeds it is large)
        if np.any(d != 0):
            flat_a = xr.DataArray(a.ravel(), dims="obs")
            flat_b = xr.DataArray(b.ravel(), dims="obs")
            res = permutation_test(flat_a, flat_b, paired=True, dim="obs",
                                   n_permutations=n_permutations, alpha=0.99, rng=rng)
            out["p_example"] = float(res["p_value"])
            out["cohens_d"] = float(res["cohens_d"])
        else:
            out["p_example"], out["cohens_d"] = 1.0, 0.0
        if a.shape[0] >= 2:
            sa = xr.DataArray(a.mean(axis=1), dims="seed")
            sb = xr.DataArray(b.mean(axis=1), dims="seed")
            if np.any(sa.values != sb.values):
                res = permutation_test(sa, sb, paired=True, dim="seed",
                                       n_permutations=n_permutations, alpha=0.99, rng=rng)
                out["p_seed"] = float(res["p_value"])
            else:
                out["p_seed"] = 1.0
    return out


def _groups(results: xr.Dataset) -> list[dict[str, Any]]:
    out = []
    for regime in results["regime"].values:
        for magnitude in results["magnitude"].values:
            for layer in results["layer"].values:
                for flag in results["noise_at_test"].values:
                    sel = results["accuracy"].sel(regime=regime, magnitude=magnitude,
                                                  layer=layer, noise_at_test=flag)
                    if np.isfinite(sel.values).any():
                        out.append({"regime": str(regime), "magnitude": float(magnitude),
                                    "layer": str(layer), "noise_at_test": bool(flag)})
    return out


def transfer_matrix(results: xr.Dataset, cfg: ExperimentConfig) -> xr.Dataset:
    """Gain of ``structured:<source>`` over ``isotropic`` and over ``none``, source x target.

    Returns
    -------
    xarray.Dataset
        Dims ``(regime, magnitude, layer, noise_at_test, baseline, source, target)``:
        ``gain``, ``ci_low``, ``ci_high``, ``p_example``, ``p_seed``, ``q_value`` (FDR over
        sources x targets within each regime/magnitude/layer/noise_at_test and baseline),
        ``cohens_d`` (paired, per image), ``n_seeds``; coords ``diagonal`` (source, target)
        and ``source_kind`` / ``target_kind``. ``attrs`` name the test behind every p-value.
    """
    ev = cfg.evaluation
    sources = [s for s in cfg.source_ids if f"structured:{s}" in results["condition"].values]
    targets = list(cfg.target_ids)
    baselines = [b for b in ("isotropic", "none") if b in results["condition"].values]
    groups = _groups(results)
    if not (sources and baselines and groups):
        return xr.Dataset()  # nothing to compare (no structured condition or no baseline)
    names = ("gain", "ci_low", "ci_high", "p_example", "p_seed", "cohens_d", "n_seeds")
    shape = (len(groups), len(baselines), len(sources), len(targets))
    arrays = {n: np.full(shape, np.nan) for n in names}
    for gi, g in enumerate(groups):
        sub = results.sel(regime=g["regime"], magnitude=g["magnitude"], layer=g["layer"],
                          noise_at_test=g["noise_at_test"])
        for bi, base in enumerate(baselines):
            for si, s in enumerate(sources):
                for ti, t in enumerate(targets):
                    a = _outcomes(sub, f"structured:{s}", t).transpose("seed", "stimulus").values
                    b = _outcomes(sub, base, t).transpose("seed", "stimulus").values
                    stats = _pair_test(a, b, n_permutations=ev.n_permutations,
                                       n_bootstrap=ev.n_bootstrap,
                                       confidence_level=ev.confidence_level,
                                       rng=1000 * gi + 100 * bi + 10 * si + ti)
                    for n in names:
                        arrays[n][gi, bi, si, ti] = stats[n]
    index = xr.Coordinates.from_pandas_multiindex(
        pd.MultiIndex.from_frame(pd.DataFrame(groups)), "group")
    ds = xr.Dataset(
        {n: (("group", "baseline", "source", "target"), v) for n, v in arrays.items()},
        coords={"baseline": baselines, "source": sources, "target": targets},
    ).assign_coords(index)
    q = np.full(shape, np.nan)
    for gi in range(len(groups)):
        for bi in range(len(baselines)):
            p = xr.DataArray(arrays["p_example"][gi, bi], dims=("source", "target"))
            if np.isfinite(p.values).any():
                q[gi, bi] = correct_pvalues(p, method="fdr_bh").values
    ds["q_value"] = (("group", "baseline", "source", "target"), q)
    ds = ds.unstack("group")
    ds = ds.assign_coords(
        diagonal=(("source", "target"),
                  np.array([[is_diagonal(cfg, s, t) for t in targets] for s in sources])),
        source_kind=("source", [cfg.source(s).kind for s in sources]),
        target_kind=("target", [cfg.target(t).kind for t in targets]),
    )
    ds.attrs.update(
        gain="mean over seeds and test images of the paired difference in per-image outcome "
             "(averaged over the target's strengths), structured minus baseline",
        ci=f"{ev.confidence_level:g} crossed percentile bootstrap (seeds and images resampled independently)",
        p_example="paired sign-flip permutation test over (seed, image) pairs",
        p_seed="exact paired permutation test over seeds (min 2^(1-S))",
        q_value="Benjamini-Hochberg FDR of p_example over the sources x targets matrix",
        cohens_d="paired Cohen's d_z of the per-image differences",
    )
    return ds


@dataclass
class Claim:
    """One claim of the paper, answered from this run's numbers."""

    number: int
    text: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def verdict(low: float, high: float) -> str:
        if not (np.isfinite(low) and np.isfinite(high)):
            return "inconclusive (not testable here)"
        if low > 0:
            return "supported"
        if high < 0:
            return "not supported (the opposite holds)"
        return "inconclusive"


def _pooled_contrast(results: xr.Dataset, g: dict[str, Any], pairs: list[tuple[str, str, str]],
                     cfg: ExperimentConfig, rng: int, minus: list[list[tuple[str, str, str]]]
                     | None = None) -> dict[str, float]:
    """Pooled per-image gain over (condition, baseline, target) triples, optionally minus the
    mean of other triples (per image), with a crossed bootstrap CI (seeds x images)."""
    ev = cfg.evaluation
    sub = results.sel(regime=g["regime"], magnitude=g["magnitude"], layer=g["layer"],
                      noise_at_test=g["noise_at_test"])

    def gain(c: str, b: str, t: str) -> np.ndarray:
        a = _outcomes(sub, c, t).transpose("seed", "stimulus").values
        z = _outcomes(sub, b, t).transpose("seed", "stimulus").values
        return a - z

    if not pairs:
        return {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "p_example": float("nan")}
    d = np.mean([gain(*p) for p in pairs], axis=0)
    if minus:
        d = d - np.mean([np.mean([gain(*p) for p in group], axis=0) for group in minus], axis=0)
    keep = np.isfinite(d).all(axis=1)
    d = d[keep]
    stats = _pair_test(d, np.zeros_like(d), n_permutations=ev.n_permutations,
                       n_bootstrap=ev.n_bootstrap, confidence_level=ev.confidence_level, rng=rng)
    return {"estimate": stats["gain"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
            "p_example": stats["p_example"], "p_seed": stats["p_seed"]}


def claims(results: xr.Dataset, cfg: ExperimentConfig) -> list[Claim]:
    """The three claims of Preble et al. (2026), each answered per regime and noise_at_test.

    1. Structured noise beats isotropic noise of the same total variance: the pooled diagonal
       gain over ``isotropic`` (every source against its own target).
    2. Naturalistic structure helps most against the same modification and transfers poorly:
       for naturalistic sources, the diagonal gain minus the mean off-diagonal gain.
    3. Adversarial structure generalises across attacks: for adversarial sources, the pooled
       gain over ``isotropic`` on every adversarial target (each target is an ensemble of
       attacks, scored by its worst case).

    Verdicts: ``supported`` (CI above 0), ``not supported (the opposite holds)`` (CI below
    0), ``inconclusive`` (CI includes 0).
    """
    conds = set(map(str, results["condition"].values))
    src = [s for s in cfg.source_ids if f"structured:{s}" in conds]
    nat = [s for s in src if cfg.source(s).kind == "naturalistic"]
    adv = [s for s in src if cfg.source(s).kind == "adversarial"]
    adv_targets = [t for t in cfg.target_ids if cfg.target(t).kind == "adversarial"]
    c1 = Claim(1, "noise with covariance from modified-vs-clean activations improves "
                  "robustness over isotropic noise of the same total variance (diagonal of the "
                  "transfer matrix, gain over isotropic)")
    c2 = Claim(2, "structure from naturalistic modifications helps most against the same "
                  "modification and transfers poorly (diagonal minus off-diagonal gain, "
                  "naturalistic sources)")
    c3 = Claim(3, "structure from adversarial attacks generalises across attacks (gain over "
                  "isotropic of adversarial sources on every adversarial target)")
    if "isotropic" not in conds:
        return [c1, c2, c3]
    for gi, g in enumerate(_groups(results)):
        diag = [(f"structured:{s}", "isotropic", t) for s in src for t in cfg.target_ids
                if is_diagonal(cfg, s, t)]
        c1.rows.append({**g, **_pooled_contrast(results, g, diag, cfg, rng=10 * gi)})
        rows2 = []
        for s in nat:
            d = [(f"structured:{s}", "isotropic", t) for t in cfg.target_ids
                 if is_diagonal(cfg, s, t)]
            off = [(f"structured:{s}", "isotropic", t) for t in cfg.target_ids
                   if not is_diagonal(cfg, s, t)]
            if d and off:
                rows2.append((d, off))
        if rows2:
            diag_pairs = [p for d, _ in rows2 for p in d]
            minus = [off for _, off in rows2]
            c2.rows.append({**g, **_pooled_contrast(results, g, diag_pairs, cfg, rng=10 * gi + 1,
                                                    minus=minus)})
        pairs3 = [(f"structured:{s}", "isotropic", t) for s in adv for t in adv_targets]
        if pairs3:
            c3.rows.append({**g, **_pooled_contrast(results, g, pairs3, cfg, rng=10 * gi + 2)})
    for c in (c1, c2, c3):
        # groups where the contrast does not exist (a source's conditions run only at its own
        # magnitudes; noise-off rows of a grid evaluated with the noise on only) are left out
        c.rows = [r for r in c.rows if np.isfinite(r["estimate"])]
        for r in c.rows:
            r["verdict"] = Claim.verdict(r["ci_low"], r["ci_high"])
    return [c1, c2, c3]


def clean_cost(results: xr.Dataset) -> pd.DataFrame:
    """Clean accuracy of every condition minus that of ``none`` (mean over seeds, with the
    per-seed spread), per regime, magnitude, layer and noise_at_test."""
    clean = results["clean_accuracy"]
    if "none" not in clean["condition"].values:
        return pd.DataFrame()
    cost = clean - clean.sel(condition="none")
    df = cost.to_dataframe(name="cost").reset_index()
    df = df[np.isfinite(df["cost"])]
    agg = df.groupby(["regime", "magnitude", "layer", "noise_at_test", "condition"])["cost"]
    out = agg.agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"mean": "clean_cost", "std": "sd_over_seeds", "count": "n_seeds"})
    base = clean.sel(condition="none").to_dataframe(name="clean_none").reset_index()
    base = base.groupby(["regime", "magnitude", "layer", "noise_at_test"])["clean_none"].mean()
    return out.merge(base.reset_index(), on=["regime", "magnitude", "layer", "noise_at_test"])


def _ce_label(ce: str) -> str:
    """``"CE-PGD (pgd_ce)"``, ``"APGD-CE (apgd_ce)"``: the CE attack in a flag's words."""
    return f"{ {'pgd_ce': 'CE-PGD', 'apgd_ce': 'APGD-CE'}.get(ce, 'CE attack') } ({ce})"


def _references(cond: str, conditions: Any) -> list[str]:
    """The reference networks of ``cond``'s masking flag: ``none`` and ``isotropic``, those of
    the run other than ``cond`` itself."""
    names = [str(c) for c in conditions]
    return [r for r in ("none", "isotropic") if r != cond and r in names]


def _reference_gap(sub: xr.Dataset, cond: str, target: str, last: int, *, ce: str) -> float:
    """The CE attack ``ce`` minus the worst case on the reference networks of the same group
    (:func:`_references`): the larger of their gaps, 0 when absent (the reference of
    :func:`calibrated_gap_flag`)."""
    if ce not in sub["attack"].values:
        return 0.0
    refs = []
    for r in _references(cond, sub["condition"].values):
        c = sub.sel(condition=r)
        g = float(c["attack_accuracy"].sel(target=target, attack=ce).isel(strength=last)
                  - c["accuracy"].sel(target=target).isel(strength=last))
        if np.isfinite(g):
            refs.append(g)
    return max(refs) if refs else 0.0


def calibrated_gap_flag(gap: float, reference_gaps: Sequence[float], tol: float) -> bool:
    r"""The experiment's calibrated CE-PGD flag: the gap exceeds the references' by more than
    ``tol``.

    .. math:: \mathrm{flag} = (g - \max(0, \max_r g_r)) > \mathrm{tol}, \qquad
       g = \mathrm{acc}_{\mathrm{CE\text{-}PGD}} - \bar w

    with :math:`\bar w` the ensemble worst case and :math:`g_r` the same gap on the
    reference networks (``none`` and ``isotropic``) under the same repeated evaluation. A
    worst case over attacks x repeated evaluations sits below any one attack on every
    stochastic network, so the raw gap alone flags honest noisy networks; only the excess
    over what the evaluation itself leaves on networks without masking is read (Athalye et al.
    2018, Sec. 3.1; false-positive rate measured in ``benchmarks/results/masking_flags.md``).
    A NaN gap is not flagged; NaN references are ignored.
    """
    refs = [float(r) for r in reference_gaps if np.isfinite(r)]
    ref = max(refs) if refs else 0.0
    g = float(gap)
    return bool(np.isfinite(g) and not near_worst_case(g - max(ref, 0.0), tol))


def every_eps_excess(gap: Any, reference_gaps: Sequence[Any], *, tol: float,
                     confidence_level: float = 0.95, n_resamples: int = 999,
                     rng: int = 0) -> dict[str, np.ndarray]:
    r"""The calibrated CE-PGD flag at every eps, per image, with a crossed-bootstrap CI.

    With per-(seed, image) gaps :math:`d_{ikn} = c^{\mathrm{CE}}_{ikn} - w_{ikn}` at eps
    :math:`i` (CE-PGD correct minus ensemble worst case correct, 0/1, both under the same
    repeated evaluation) and the same gaps :math:`d^{(r)}_{ikn}` on each reference network
    :math:`r` (``none``, ``isotropic``) of the same seeds and images, the excess at eps
    :math:`i` is

    .. math:: e_i = \frac{1}{SN}\sum_{k,n} \big(d_{ikn} - d^{(r_i)}_{ikn}\big),
       \qquad r_i = \arg\max_r \bar d^{(r)}_i

    (the reference that leaves the larger mean gap: the max of :func:`calibrated_gap_flag`;
    no reference: 0). Its percentile CI comes from the crossed bootstrap over seeds and images
    (:func:`neurovar.experiment.reproduction.protocol_excess`), at level
    :math:`1 - (1 - \mathrm{confidence\_level}) / I` per eps (Bonferroni over the ``I``
    eps judged, so that looking at every eps does not raise the false-positive rate). Eps
    ``i`` is flagged when :math:`\mathrm{CI}_{low,i} > \mathrm{tol}`: the evaluation's own
    noise (a worst case over attacks x repeated evaluations, few images) cannot raise it.

    Parameters
    ----------
    gap
        Array (eps, seed, stimulus) of :math:`d`; NaN seeds are left out at that eps.
    reference_gaps
        Arrays of the same shape, one per reference network (may be empty).
    tol
        Excess that counts as masking (``masking_diagnostics``' ``tol``).
    confidence_level, n_resamples, rng
        Of the bootstrap (family-wise level over the eps).

    Returns
    -------
    dict
        Arrays over eps: ``excess``, ``ci_low``, ``ci_high``, ``flagged`` (bool),
        ``reference`` (index into ``reference_gaps`` used, -1 for none); scalar
        ``level`` (the per-eps confidence level).
    """
    from neurovar._validation import check_int, check_real, param_error

    from .reproduction import protocol_excess

    owner = "every_eps_excess"
    tol = check_real(tol, name="tol", owner=owner, low=0.0)
    check_real(confidence_level, name="confidence_level", owner=owner, low=0, high=1,
               low_open=True, high_open=True)
    n_resamples = check_int(n_resamples, name="n_resamples", owner=owner, low=1, high=10**6)
    d = np.asarray(gap, dtype=float)
    if d.ndim != 3:
        raise param_error("gap", owner, "a numeric (eps, seed, stimulus) array", d.shape)
    refs = [np.asarray(r, dtype=float) for r in reference_gaps]
    for r in refs:
        if r.shape != d.shape:
            raise param_error("reference_gaps", owner,
                              f"arrays of the shape of 'gap' {d.shape}", r.shape)
    n_eps = d.shape[0]
    level = 1 - (1 - float(confidence_level)) / max(n_eps, 1)
    out = {k: np.full(n_eps, np.nan) for k in ("excess", "ci_low", "ci_high")}
    out["flagged"] = np.zeros(n_eps, dtype=bool)
    out["reference"] = np.full(n_eps, -1)
    for i in range(n_eps):
        ref = np.zeros_like(d[i])
        means = [float(np.nanmean(r[i])) if np.isfinite(r[i]).any() else -np.inf
                 for r in refs]
        if refs and np.isfinite(max(means)):
            out["reference"][i] = int(np.argmax(means))
            ref = refs[out["reference"][i]][i]
        e = protocol_excess(d[i], ref, n_resamples=n_resamples, rng=int(rng) + i,
                            confidence_level=level)
        out["excess"][i], out["ci_low"][i], out["ci_high"][i] = (
            e["excess"], e["ci_low"], e["ci_high"])
        out["flagged"][i] = bool(np.isfinite(e["ci_low"]) and e["ci_low"] > tol)
    out["level"] = level
    return out


def _per_image_gaps(results: xr.Dataset, g: dict[str, Any], cond: str, target: str,
                    ks: list[int]) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Per (eps, seed, image): the CE attack correct minus the worst case correct on ``cond`` and on
    its reference networks of the same group (those of :func:`_reference_gap`)."""
    sub = results.sel(regime=g["regime"], magnitude=g["magnitude"], layer=g["layer"],
                      noise_at_test=g["noise_at_test"], target=target).isel(strength=ks)

    def gaps(c: str) -> np.ndarray:
        x = sub.sel(condition=c)
        return (x["ce_attack_correct"] - x["correct"]).transpose("strength", "seed",
                                                              "stimulus").values

    refs = _references(cond, results["condition"].values)
    return gaps(cond), [gaps(r) for r in refs], refs


def _every_eps_flag(results: xr.Dataset, g: dict[str, Any], cond: str, t: str, ks: list[int],
                    values: np.ndarray, row: dict[str, Any], messages: list[str], where: str,
                    *, tol: float, confidence_level: float, n_resamples: int,
                    rng: int, ce: str) -> list[str]:
    """:func:`every_eps_excess` of one (group, condition, target) into ``row`` and
    ``messages``; the flag names it raises."""
    d, refs, names = _per_image_gaps(results, g, cond, t, ks)
    e = every_eps_excess(d, refs, tol=tol, confidence_level=confidence_level,
                         n_resamples=n_resamples, rng=rng)
    low = e["ci_low"]
    if not np.isfinite(low).any():
        row[f"ce_pgd_excess_max_low:{t}"] = float("nan")
        row[f"ce_pgd_excess_max_low_eps:{t}"] = float("nan")
        return []
    i = int(np.nanargmax(low))
    row[f"ce_pgd_excess_max_low:{t}"] = float(low[i])
    row[f"ce_pgd_excess_max_low_eps:{t}"] = float(values[ks[i]])
    if not e["flagged"].any():
        return []
    ref = names[e["reference"][i]] if e["reference"][i] >= 0 else "no reference network"
    others = [f"{values[ks[j]]:g}" for j in np.flatnonzero(e["flagged"]) if j != i]
    messages.append(
        f"{where}: {_ce_label(ce)} alone sits {e['excess'][i]:+.2f} "
        f"[{e['ci_low'][i]:+.2f}, {e['ci_high'][i]:+.2f}] above the ensemble worst case on {t} "
        f"at eps {values[ks[i]]:g} beyond the gap the same evaluation leaves on {ref} "
        f"({100 * e['level']:.4g}% CI over seeds x images, Bonferroni over {len(ks)} eps; "
        f"lower bound above tol {tol:g})"
        + (f", also at eps {', '.join(others)}" if others else "")
        + f" — {_ce_label(ce)} is masked here; quote the worst case.")
    return ["ce_pgd_overstates"]


#: Square queries from which "the black box beats every gradient attack" is a real check
#: (measured on 8x8 digits: benchmarks/results/masking_flags.md).
SQUARE_CHECK_QUERIES = 300


def masking_diagnostics(results: xr.Dataset, cfg: ExperimentConfig, *, n_classes: int = 10,
                        tol: float = 0.1, drop_tol: float = 0.05
                        ) -> tuple[pd.DataFrame, list[str]]:
    r"""Gradient-masking checks for every stochastic or noise-trained condition, per attack.

    **The CE attack above the worst case, at every eps.** The ensemble's cross-entropy gradient
    attack (``pgd_ce``, else ``apgd_ce``: :data:`~.registry.CE_ATTACKS`; the columns keep the
    name ``ce_pgd``; ``table.attrs["ce_attack"]`` says which). Per image :math:`n`, seed
    :math:`k` and strength :math:`i` of each attack target, :math:`d_{ikn}` = CE attack correct
    minus the ensemble worst case correct (both under the same repeated evaluation;
    ``ce_attack_correct`` and ``correct`` of the results); the excess over the reference networks of the same group
    (``none``, and ``isotropic`` for the other conditions: the larger of their mean gaps) is

    .. math:: e_i = \overline{d_{i} - d^{(ref)}_{i}} \quad\text{(mean over seeds x images)}

    with a crossed-bootstrap CI over seeds and images (Bonferroni over the target's
    strengths; :func:`every_eps_excess`). ``ce_pgd_overstates`` fires where the lower bound
    exceeds ``tol`` at any eps, so the spread of a worst case over attacks x repeated
    evaluations and the sampling of few images alone cannot raise it. Columns:
    ``ce_pgd_excess_max_low:<t>`` (the largest lower bound over eps) and
    ``ce_pgd_excess_max_low_eps:<t>`` (the eps where it is attained); the seed-averaged point
    values at the largest strength stay as ``ce_pgd_minus_worst:<t>`` (CE-PGD accuracy minus
    the worst case) and ``ce_pgd_excess:<t>`` (that gap minus the references', the rule of
    :func:`calibrated_gap_flag`). Results without ``ce_attack_correct`` (stores written before
    it existed) fall back to :func:`calibrated_gap_flag` at the largest strength, and say so.

    **CE-PGD accuracy does not fall as eps grows** (``flat_in_eps``, column
    ``ce_pgd_flat_in_eps:<t>``): seed-averaged CE-PGD accuracy at the largest strength within
    ``drop_tol`` of the smallest-strength one while ``none``'s falls by more than 0.2 (the
    rule of claim 4, :func:`neurovar.experiment.reproduction.flat_in_eps`).

    Also ``square_minus_best_gradient`` (negative: the black-box attack beats every gradient
    attack), accuracy of every attack at the large eps (must reach chance ``1/n_classes``),
    ``eot_gap`` (CE-PGD without EOT minus with EOT), ``gradient_snr``, and ``apparent_gain``
    flags: a condition whose gain over isotropic under one attack exceeds ``tol`` while its
    worst-case gain does not.

    The checks are those of :func:`neurovar.perturb.check_robustness_result` and
    :func:`neurovar.perturb.eot_check` (one definition each, in
    :mod:`neurovar.perturb.diagnostics`), applied at each target's largest strength: near the
    worst case (within ``tol``), the black box beating every gradient attack (by more than
    ``tol / 2``), reaching chance (within ``tol``), EOT helping (by more than ``tol``).

    Parameters
    ----------
    results
        The assembled grid (:func:`neurovar.experiment.store.assemble`).
    cfg
        The run's config (its targets; ``evaluation.n_bootstrap`` and
        ``evaluation.confidence_level`` for the every-eps CI).
    n_classes
        Chance is ``1 / n_classes``.
    tol
        Excess (CI lower bound) / gap that counts as masking.
    drop_tol
        How far CE-PGD accuracy must fall over the eps range not to count as flat.

    Returns
    -------
    (pandas.DataFrame, list of str)
        One row per regime x magnitude x layer x noise_at_test x condition, and the flags in
        words, each naming the condition, the attack and (for the CE-attack flag) the eps and
        CI. The messages begin with the checks this run could not make, each with its reason
        (also in ``table.attrs["not_checked"]``; the CE attack used is
        ``table.attrs["ce_attack"]``).
    """
    from neurovar._validation import check_int, check_real

    from .reproduction import flat_in_eps

    owner = "masking_diagnostics"
    n_classes = check_int(n_classes, name="n_classes", owner=owner, low=2)
    tol = check_real(tol, name="tol", owner=owner, low=0.0)
    drop_tol = check_real(drop_tol, name="drop_tol", owner=owner, low=0.0)
    ev = cfg.evaluation
    attacks = [str(a) for a in results["attack"].values]
    adv_targets = [t for t in cfg.target_ids if cfg.target(t).family == "attack"]
    chance = 1.0 / n_classes
    # each target's own ensemble (the attacks with numbers for it) and its CE attack: targets
    # may run different ensembles, and a paper-protocol target runs one attack
    ran = {t: [a for a in attacks if np.isfinite(
        results["attack_accuracy"].sel(target=t, attack=a).values).any()] for t in adv_targets}
    target_ce = {t: ce_attack(ran[t]) for t in adv_targets}
    per_image = "ce_attack_correct" in results
    # the targets whose per-image CE outcome the cells stored (else the point rule)
    stored = {t: per_image and bool(np.isfinite(
        results["ce_attack_correct"].sel(target=t).values).any()) for t in adv_targets}
    rows: list[dict[str, Any]] = []
    not_checked = _checks_not_run(results, cfg, attacks, target_ce, per_image,
                                  bool(adv_targets))
    messages = list(not_checked)
    mean = results.mean("seed", skipna=True)
    for gi, g in enumerate(_groups(results)):
        sub = mean.sel(regime=g["regime"], magnitude=g["magnitude"], layer=g["layer"],
                       noise_at_test=g["noise_at_test"])
        for ci, cond in enumerate(map(str, results["condition"].values)):
            c = sub.sel(condition=cond)
            if cond == "none" and g["noise_at_test"]:
                continue  # no noise to switch on: the same network as its noise-off row
            stochastic = g["noise_at_test"] and cond != "none"
            trained = g["regime"] != "test-time"
            if not (stochastic or trained):
                continue
            if not np.isfinite(c["accuracy"].values).any():
                continue  # not in this grid (a source's other magnitude; noise off not run)
            where = f"{cond} [{g['regime']}, m={g['magnitude']:g}, noise {'on' if g['noise_at_test'] else 'off'} at test]"
            row: dict[str, Any] = {**g, "condition": cond, "stochastic": stochastic}
            flagged = []
            for ti, t in enumerate(adv_targets):
                ce = target_ce[t]
                gradient = [a for a in ran[t] if a != "square"]
                at = c["attack_accuracy"].sel(target=t)
                values = c["strength_value"].sel(target=t).values
                ks = [int(k) for k in np.flatnonzero(np.isfinite(values))]
                last = ks[-1]
                worst = float(c["accuracy"].sel(target=t).isel(strength=last))
                eps = float(values[last])
                if ce is not None:
                    gap = float(at.sel(attack=ce).isel(strength=last)) - worst
                    row[f"ce_pgd_minus_worst:{t}"] = gap
                    # calibrated: a worst case over attacks x repeated evaluations sits below
                    # any one attack on every stochastic network; only the excess over the gap
                    # the same evaluation leaves on the reference conditions is read
                    ref = _reference_gap(sub, cond, t, last, ce=ce)
                    row[f"ce_pgd_excess:{t}"] = gap - ref
                    if stored[t]:
                        flagged += _every_eps_flag(
                            results, g, cond, t, ks, values, row, messages, where, tol=tol,
                            confidence_level=ev.confidence_level, n_resamples=ev.n_bootstrap,
                            rng=100_000 * gi + 1000 * ci + 10 * ti, ce=ce)
                    elif calibrated_gap_flag(gap, [ref], tol):
                        flagged.append("ce_pgd_overstates")
                        messages.append(f"{where}: {_ce_label(ce)} alone says {worst + gap:.2f} on {t} at "
                                        f"eps {eps:g}, the ensemble worst case {worst:.2f} — "
                                        f"{_ce_label(ce)} is masked here; quote the worst "
                                        "case.")
                    # accuracy under CE-PGD that does not fall as eps grows (claim 4's rule)
                    curve = at.sel(attack=ce).isel(strength=ks).values
                    none = (sub.sel(condition="none")["attack_accuracy"]
                            .sel(target=t, attack=ce).isel(strength=ks).values
                            if "none" in results["condition"].values
                            else np.full(len(ks), np.nan))
                    flat = flat_in_eps(curve, none, drop_tol)
                    row[f"ce_pgd_flat_in_eps:{t}"] = flat
                    if flat:
                        flagged.append("flat_in_eps")
                        messages.append(
                            f"{where}: {_ce_label(ce)} accuracy does not fall as eps grows on {t} "
                            f"({curve[0]:.2f} at eps {values[ks[0]]:g}, {curve[-1]:.2f} at eps "
                            f"{eps:g}) while on 'none' it falls from {none[0]:.2f} to "
                            f"{none[-1]:.2f} — its gradients do not lead anywhere here "
                            "(masking); quote the worst case.")
                if "square" in ran[t] and gradient:
                    sq = float(at.sel(attack="square").isel(strength=last))
                    best = float(at.sel(attack=gradient).isel(strength=last).min())
                    row[f"square_minus_best_gradient:{t}"] = sq - best
                    if (np.isfinite(sq) and np.isfinite(best)
                            and black_box_beats_every_gradient_attack([best], [sq], tol / 2)):
                        flagged.append("black_box_stronger")
                        messages.append(f"{where}: the black-box square attack ({sq:.2f}) beats "
                                        f"every gradient attack (best {best:.2f}) on {t} at eps "
                                        f"{eps:g} — gradient masking suspected.")
            for a in attacks:
                v = float(c["large_eps_accuracy"].sel(attack=a))
                row[f"large_eps:{a}"] = v
                if np.isfinite(v) and not reaches_chance(v, chance, tol):
                    flagged.append("not_chance")
                    messages.append(f"{where}: {a} leaves accuracy {v:.2f} at L-inf eps "
                                    f"{cfg.evaluation.large_eps:g} (chance {chance:.2f}) — this "
                                    "attack does not work on this network; its numbers are not "
                                    "evidence of robustness.")
            row["eot_gap"] = float(c["eot_gap"])
            row["gradient_snr"] = float(c["gradient_snr"])
            if np.isfinite(row["eot_gap"]) and eot_helps(row["eot_gap"], tol):
                messages.append(f"{where}: CE-PGD without EOT leaves {row['eot_gap']:+.2f} more "
                                "accuracy than with EOT — an attack that ignores the noise "
                                "overstates robustness.")
            # apparent gains: one attack shows a gain over isotropic that the worst case does not
            for base_cond in [b for b in ("isotropic", "none")
                              if cond.startswith("structured")
                              and b in results["condition"].values]:
                iso = sub.sel(condition=base_cond)
                for t in adv_targets:
                    gain_wc = float((c["accuracy"].sel(target=t)
                                     - iso["accuracy"].sel(target=t)).mean("strength"))
                    for a in attacks:
                        ga = float((c["attack_accuracy"].sel(target=t, attack=a)
                                    - iso["attack_accuracy"].sel(target=t, attack=a))
                                   .mean("strength"))
                        if np.isfinite(ga) and ga > tol and gain_wc <= tol / 2:
                            flagged.append("apparent_gain")
                            messages.append(
                                f"{where}: an apparent gain over {base_cond} of {ga:+.2f} under "
                                f"{a} on {t} is not in the worst case ({gain_wc:+.2f}) — do "
                                "not report it as robustness.")
            row["flags"] = ",".join(sorted(set(flagged)))
            row["masking_suspected"] = bool({"ce_pgd_overstates", "black_box_stronger",
                                             "not_chance", "flat_in_eps"} & set(flagged))
            rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["ce_attack"] = next((c for c in target_ce.values() if c is not None), None)
    table.attrs["tol"] = tol
    table.attrs["not_checked"] = list(not_checked)
    return table, messages


def _checks_not_run(results: xr.Dataset, cfg: ExperimentConfig, attacks: list[str],
                    target_ce: dict[str, str | None], per_image: bool,
                    has_attack_targets: bool) -> list[str]:
    """The checks of :func:`masking_diagnostics` that this run cannot make, each in words with
    the reason (a check that did not run must never read as a check that passed)."""
    out: list[str] = []
    if not has_attack_targets:
        return ["No attack target in this run: none of the masking checks apply."]
    if "square" in attacks and cfg.evaluation.n_queries < SQUARE_CHECK_QUERIES:
        out.append(
            f"Square ran {cfg.evaluation.n_queries} queries, below the ~{SQUARE_CHECK_QUERIES} at "
            "which it is a real black-box check (on an honest network it stays above the best "
            "gradient attack by 0.44 at 30 queries and 0.03 from 300, benchmarks/masking_flags.py"
            "): 'black box beats the gradient attacks' cannot fire in this run.")
    elif "square" not in attacks:
        out.append("No black-box attack (square) in the ensemble: 'black box beats the "
                   "gradient attacks' was not checked.")
    missing = [t for t, c in target_ce.items() if c is None]
    if missing:
        paper = [t for t in missing if cfg.target(t).protocol == "paper"]
        out.append(
            f"Target(s) {', '.join(missing)} run no cross-entropy gradient attack "
            f"({' or '.join(CE_ATTACKS)}): the CE-attack-versus-worst-case and 'does not fall "
            "as eps grows' checks did not run for them"
            + (" (a paper-protocol target runs one attack alone; whether that overstates "
               "robustness is the reproduction's protocol flag, against the adaptive worst "
               "case)" if paper else "") + ".")
    with_ce = [c for c in target_ce.values() if c is not None]
    if with_ce and not per_image:
        out.append(
            "These results hold no per-image CE-attack outcome (ce_attack_correct: a store "
            f"written before it existed): the {with_ce[0]} flag is the point rule at each "
            "target's largest strength only, without a CI.")
    if with_ce and "none" not in [str(c) for c in results["condition"].values]:
        out.append("No 'none' condition: 'does not fall as eps grows' (judged against none's "
                   "curve) and the reference gap of the CE flag (isotropic only) are limited.")
    if not np.isfinite(results["large_eps_accuracy"].values).any():
        out.append("The large-eps, EOT-gap and gradient-SNR diagnostics were not run "
                   "(evaluation.diagnostics = false): 'every attack reaches chance at a large "
                   "eps' and 'EOT helps' were not checked.")
    return out


#: What :func:`link_model` fits, in the words its output lines use.
LINK_MODEL_METHOD = ("OLS gain ~ log2(alignment) with two-way cluster-robust standard errors "
                     "(clusters: seed and condition x target; Cameron, Gelbach & Miller 2011), "
                     "t reference with min(clusters) - 1 df")


def _link_rows(results: xr.Dataset) -> pd.DataFrame:
    """One row per (seed, regime, noise_at_test, condition, magnitude, layer, target): the
    gain over isotropic (mean over strengths) and the target alignment."""
    acc = results["accuracy"].mean("strength", skipna=True)
    gain = acc - acc.sel(condition="isotropic")
    df = gain.to_dataframe(name="gain").reset_index()
    align = results["target_alignment"].to_dataframe(name="target_alignment").reset_index()
    df = df.merge(align, on=[*GRID_DIMS, "target"])
    df = df[~df["condition"].isin(["none", "isotropic"])]
    df = df[np.isfinite(df["gain"]) & np.isfinite(df["target_alignment"])
            & (df["target_alignment"] > 0)].copy()
    df["log_alignment"] = np.log2(df["target_alignment"])
    # the unit that carries an alignment: one (condition, magnitude, layer, target), repeated
    # over seeds -- the second cluster
    df["pair"] = (df["condition"].astype(str) + "|" + df["magnitude"].astype(str) + "|"
                  + df["layer"].astype(str) + "|" + df["target"].astype(str))
    return df


def _two_way_cluster_slope(sub: pd.DataFrame, level: float = 0.95) -> dict[str, float]:
    r"""Slope of ``gain ~ log_alignment`` (OLS) with the two-way cluster-robust covariance
    :math:`V = V_{seed} + V_{pair} - V_{seed \cap pair}` (Cameron, Gelbach & Miller 2011;
    statsmodels ``cov_type="cluster"`` with two group columns, small-sample factor on) and a
    t reference with :math:`\min(G_{seed}, G_{pair}) - 1` degrees of freedom."""
    import statsmodels.formula.api as smf
    from scipy import stats
    from statsmodels.stats.sandwich_covariance import cov_cluster_2groups

    seeds = pd.factorize(sub["seed"])[0]
    pairs = pd.factorize(sub["pair"])[0]
    fit = smf.ols("gain ~ log_alignment", sub).fit()
    both, v_seed, v_pair = cov_cluster_2groups(fit, seeds, pairs, use_correction=True)
    k = list(fit.params.index).index("log_alignment")
    var = float(both[k, k])
    # the additive two-way estimate can be negative in small samples; then the larger one-way
    # variance (Cameron, Gelbach & Miller 2011, Sec. 2.3)
    fallback = not var > 0
    if fallback:
        var = max(float(v_seed[k, k]), float(v_pair[k, k]))
    est = float(fit.params["log_alignment"])
    se = float(np.sqrt(var)) if var > 0 else float("nan")
    dof = min(seeds.max() + 1, pairs.max() + 1) - 1
    t = est / se
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return {"estimate": est, "se": se, "ci_low": est - half, "ci_high": est + half,
            "p_value": float(2 * stats.t.sf(abs(t), dof)), "df": float(dof),
            "n_seeds": int(seeds.max() + 1), "n_pairs": int(pairs.max() + 1), "n_obs": len(sub),
            "one_way_fallback": fallback}


def link_model(results: xr.Dataset, cfg: ExperimentConfig) -> tuple[pd.DataFrame, list[str]]:
    r"""Gain on alignment across conditions, with errors that respect the crossed design.

    For every noisy condition other than ``isotropic`` and every target: ``gain`` = accuracy
    minus isotropic's (mean over strengths), ``log_alignment`` = :math:`\log_2` of the noise
    variance along the target's top perturbation directions relative to isotropic
    (``target_alignment``; 0 = isotropic). Per regime and noise_at_test the slope of

    .. math:: \mathrm{gain}_{kp} = \beta_0 + \beta_1 \log_2 a_p + e_{kp}

    (seed :math:`k`, condition x magnitude x layer x target :math:`p`) is fitted by OLS with
    two-way cluster-robust standard errors, clustered by seed (the seeds share their networks'
    training runs) and by :math:`p` (one alignment per :math:`p`, repeated over seeds), with a
    t reference on :math:`\min(G_{seed}, G_p) - 1` degrees of freedom (Cameron, Gelbach &
    Miller 2011). The rows share seeds and alignments, so a model that treats them as
    independent (or with a seed intercept only) gives a pseudo-replicated p (Hurlbert 1984);
    with 3 seeds the t reference has 2 df and the interval is wide -- as it should be.

    Parameters
    ----------
    results
        The assembled grid (:func:`neurovar.experiment.store.assemble`).
    cfg
        The run's :class:`~neurovar.experiment.ExperimentConfig` (its seeds say how many
        clusters the fit can have).

    Returns
    -------
    (pandas.DataFrame, list of str)
        The rows used (for the figure), and one summary line per fit (slope, CI, p, the
        clusters and degrees of freedom, and the method in words).

    References
    ----------
    Cameron, A. C., Gelbach, J. B. & Miller, D. L. (2011). Robust inference with multiway
    clustering. J. Bus. Econ. Stat. 29(2), 238-249.
    Hurlbert, S. H. (1984). Pseudoreplication and the design of ecological field experiments.
    Ecol. Monogr. 54(2), 187-211.
    """
    from neurovar._validation import check_instance

    check_instance(cfg, ExperimentConfig, name="cfg", owner="link_model",
                   expected="the run's ExperimentConfig")
    check_instance(results, xr.Dataset, name="results", owner="link_model",
                   expected="the assembled results Dataset")
    if "isotropic" not in results["condition"].values:
        return pd.DataFrame(), []
    df = _link_rows(results)
    lines = []
    for (regime, flag), sub in df.groupby(["regime", "noise_at_test"]):
        label = f"{regime}, noise {'on' if flag else 'off'} at test"
        n_seeds, n_pairs = sub["seed"].nunique(), sub["pair"].nunique()
        if n_seeds < 2 or n_pairs < 3 or sub["log_alignment"].nunique() < 2:
            lines.append(f"{label}: not fitted ({n_seeds} seed(s), {n_pairs} condition x target "
                         "pair(s); two-way clustering needs at least 2 seeds, 3 pairs and "
                         "alignments that differ).")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels' few-clusters notes: df says it
            try:
                r = _two_way_cluster_slope(sub)
            except (ValueError, np.linalg.LinAlgError) as err:
                lines.append(f"{label}: not fitted ({err}).")
                continue
        lines.append(
            f"{label}: gain per doubling of alignment {r['estimate']:+.3f} "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], p = {r['p_value']:.3g} "
            f"({r['n_obs']} rows in {r['n_seeds']} seeds x {r['n_pairs']} condition x target "
            f"pairs; {LINK_MODEL_METHOD}: {r['df']:g} df"
            + (f" of {len(cfg.seeds)} configured seeds" if len(cfg.seeds) != r["n_seeds"] else "")
            + ("; the two-way variance was not positive, the larger one-way variance is used"
               if r["one_way_fallback"] else "") + ")")
    return df, lines
