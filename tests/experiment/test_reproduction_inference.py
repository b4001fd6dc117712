"""Inference of the reproduction section: gain at matched clean accuracy and the single-pass
protocol flag, on synthetic grids with known outcomes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from experiment_helpers import tiny_config

from neurovar._validation import InvalidParameterError
from neurovar.experiment import load_config
from neurovar.experiment.reproduction import matched_clean_gain, protocol_excess

N_STIM = 40
MAGS = [0.25, 0.5, 1.0]


def _outcomes(frac: float, n_seeds: int) -> np.ndarray:
    """(seed, stimulus) 0/1 with exactly ``frac`` of the stimuli correct in every seed."""
    row = (np.arange(N_STIM) < round(frac * N_STIM)).astype(float)
    return np.repeat(row[None], n_seeds, axis=0)


def _grid(cfg, curves: dict[str, tuple[list[float], list[float]]]) -> xr.Dataset:
    """clean_correct and correct with the given (clean, robust) fractions per magnitude; the
    attack target's middle strength carries the robust fraction."""
    conds = list(cfg.expanded_conditions())
    targets = list(cfg.target_ids)
    n_s = len(cfg.seeds)
    clean = np.full((n_s, 1, len(conds), len(MAGS), 1, 1, N_STIM), np.nan)
    corr = np.full((n_s, 1, len(conds), len(MAGS), 1, 1, len(targets), 2, N_STIM), np.nan)
    for ci, c in enumerate(conds):
        if c not in curves:
            continue
        for mi in range(len(MAGS)):
            clean[:, 0, ci, mi, 0, 0] = _outcomes(curves[c][0][mi], n_s)
            for ti in range(len(targets)):
                for k in range(2):
                    corr[:, 0, ci, mi, 0, 0, ti, k] = _outcomes(curves[c][1][mi], n_s)
    dims = ("seed", "regime", "condition", "magnitude", "layer", "noise_at_test")
    coords = {"seed": list(cfg.seeds), "regime": ["train-time"], "condition": conds,
              "magnitude": MAGS, "layer": ["relu3"], "noise_at_test": [True],
              "target": targets, "strength": [0, 1], "stimulus": np.arange(N_STIM),
              "strength_value": (("target", "strength"),
                                 np.array([t.strengths for t in cfg.targets], dtype=float))}
    return xr.Dataset({"clean_correct": (dims + ("stimulus",), clean),
                       "correct": (dims + ("target", "strength", "stimulus"), corr)},
                      coords=coords)


def test_gain_at_matched_clean_accuracy_interpolates_and_refuses_to_extrapolate():
    cfg = load_config(tiny_config(seeds=[0, 1, 2]))
    full = next(c for c in cfg.expanded_conditions() if c.startswith("structured:"))
    curves = {"isotropic": ([0.9, 0.8, 0.7], [0.2, 0.3, 0.4]),
              full: ([0.95, 0.85, 0.6], [0.25, 0.45, 0.5]),
              "none": ([0.975] * 3, [0.1] * 3)}
    res = _grid(cfg, curves)
    table = matched_clean_gain(res, cfg, n_resamples=299, rng=0)
    rows = table[(table["condition"] == full) & (table["versus"] == "isotropic")]
    rows = rows.set_index("versus_magnitude")
    # isotropic at m=0.5 has clean 0.8: the structured curve between (0.6, 0.5) and
    # (0.85, 0.45) gives 0.46 there, 0.16 above isotropic's 0.3
    assert rows.loc[0.5, "robust_matched"] == pytest.approx(0.46)
    assert rows.loc[0.5, "gain"] == pytest.approx(0.16)
    assert rows.loc[0.25, "gain"] == pytest.approx(0.15)
    assert rows.loc[1.0, "gain"] == pytest.approx(0.08)
    for m in MAGS:
        assert rows.loc[m, "ci_low"] <= rows.loc[m, "gain"] <= rows.loc[m, "ci_high"]
        assert rows.loc[m, "ci_low"] < rows.loc[m, "ci_high"]  # images resampled
    # 'none' (clean 0.975) lies outside the structured curve's clean range: no extrapolation
    none = table[(table["condition"] == full) & (table["versus"] == "none")]
    assert len(none) == 1 and np.isnan(none["gain"].iloc[0])
    assert none["note"].iloc[0].startswith("outside")
    with pytest.raises(InvalidParameterError, match="'cfg' parameter of matched_clean_gain"):
        matched_clean_gain(res, None)


def test_protocol_excess_flags_only_an_excess_over_the_reference():
    rng = np.random.default_rng(0)
    ref = (rng.random((5, 60)) < 0.1).astype(float)  # an ensemble beats one attack somewhat
    same = protocol_excess(ref.copy(), ref, n_resamples=499, rng=0)
    assert same["excess"] == 0 and not same["overstates"]
    more = np.clip(ref + (rng.random((5, 60)) < 0.3), 0, 1)
    flagged = protocol_excess(more, ref, n_resamples=499, rng=0)
    assert flagged["overstates"] and flagged["ci_low"] > 0
    assert flagged["excess"] == pytest.approx(float((more - ref).mean()))
    with pytest.raises(InvalidParameterError, match="'reference' parameter of protocol_excess"):
        protocol_excess(more, ref[:, :10])


def _paper_cfg():
    targets = [{"family": "attack", "norm": "linf", "strengths": [0.05, 0.1, 0.2],
                "protocol": "paper", "attacks": ["pgd"]},
               {"family": "attack", "norm": "linf", "strengths": [0.05, 0.1, 0.2]}]
    return load_config(tiny_config(seeds=[0, 1, 2, 3], targets=targets))


def test_masking_claim_flags_flat_accuracy_and_single_pass_overstatement():
    """A planted condition whose paper-protocol accuracy does not fall with eps and sits above
    the adaptive worst case is flagged on both counts; 'isotropic', which falls like 'none'
    and whose two protocols agree as on 'none', is not."""
    from neurovar.experiment.reproduction import reproduction_claims

    cfg = _paper_cfg()
    conds = list(cfg.expanded_conditions())
    planted = next(c for c in conds if c.startswith("structured:"))
    paper, adaptive = cfg.target_ids
    n_s, n = len(cfg.seeds), N_STIM
    falling = [0.8, 0.5, 0.1]
    corr = np.full((n_s, 1, len(conds), 1, 1, 1, 2, 3, n), np.nan)
    for ci, c in enumerate(conds):
        for k in range(3):
            a = falling[k] if c != planted else 0.1 * (k == 2) + 0.7 * (k < 2)
            corr[:, 0, ci, 0, 0, 0, 1, k] = _outcomes(a, n_s)  # adaptive worst case
            p = 0.8 if c == planted else falling[k]  # paper protocol: flat for the planted
            corr[:, 0, ci, 0, 0, 0, 0, k] = _outcomes(p, n_s)
    dims = ("seed", "regime", "condition", "magnitude", "layer", "noise_at_test", "target",
            "strength", "stimulus")
    res = xr.Dataset(
        {"correct": (dims, corr)},
        coords={"seed": list(cfg.seeds), "regime": ["train-time"], "condition": conds,
                "magnitude": [0.5], "layer": ["relu3"], "noise_at_test": [True],
                "target": [paper, adaptive], "strength": [0, 1, 2], "stimulus": np.arange(n),
                "strength_value": (("target", "strength"), np.array([[0.05, 0.1, 0.2]] * 2)),
                "target_protocol": ("target", ["paper", "adaptive"])})
    res["correct_single"] = res["correct"]
    res["accuracy"] = res["correct"].mean("stimulus")
    res["clean_accuracy"] = res["accuracy"].isel(target=0, strength=0, drop=True)
    claim = next(c for c in reproduction_claims(res, cfg, n_resamples=199)
                 if c.key == "masking")
    rows = {r["condition"]: r for r in claim.rows}
    assert rows[planted]["flat_in_eps"] and rows[planted]["overstates"]
    assert rows[planted]["paper_minus_adaptive"] == pytest.approx((0.1 + 0.1 + 0.7) / 3)
    assert not rows["isotropic"]["flat_in_eps"] and not rows["isotropic"]["overstates"]
    assert planted in claim.answer and "does not fall as eps grows" in claim.answer
