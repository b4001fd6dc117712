"""Figures and report of runs with several magnitudes and layers (issue 20).

A grid with 2 magnitudes x 2 layers used to run to the end and then fail in
``plot_clean_cost`` ("cannot reindex on an axis with duplicate labels"), and so did
``neurovar report DIR``. These tests draw every figure from tables shaped like real runs:
several magnitudes and layers, repeated group labels, all-NaN columns.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from experiment_helpers import tiny_config

from neurovar.experiment.report import (
    plot_alignment_gain,
    plot_clean_cost,
    plot_masking,
    plot_robustness_curves,
    write_report,
)

MAGNITUDES = (0.25, 0.5)
LAYERS = ("relu2", "relu3")


def _cost_table() -> pd.DataFrame:
    """clean_cost's table for 2 regimes x 2 magnitudes x 2 layers x noise on/off: every
    (regime, noise) label repeats across magnitudes and layers; an all-NaN SD column."""
    rows = []
    k = 0
    for regime in ("test-time", "train-time"):
        for m in MAGNITUDES:
            for layer in LAYERS:
                for flag in (True, False):
                    if regime == "test-time" and not flag:
                        continue
                    for cond in ("none", "isotropic", "structured:pgd_ce"):
                        k += 1
                        rows.append({"regime": regime, "magnitude": m, "layer": layer,
                                     "noise_at_test": flag, "condition": cond,
                                     "clean_cost": 0.0 if cond == "none" else k / 100,
                                     "sd_over_seeds": np.nan, "n_seeds": 1,
                                     "clean_none": 0.9})
    return pd.DataFrame(rows)


def _bars(fig, cond):
    ax = fig.axes[0]
    return [p for p in ax.patches if p.get_gid() == f"condition:{cond}"]


def test_clean_cost_one_bar_per_magnitude_layer_group():
    cost = _cost_table()
    fig = plot_clean_cost(cost)
    for cond in ("isotropic", "structured:pgd_ce"):
        want = cost[cost["condition"] == cond]["clean_cost"].to_numpy()
        bars = _bars(fig, cond)
        # 2 test-time + 4 train-time groups per (magnitude, layer): 12 groups, no pooling
        assert len(bars) == len(want) == 12
        np.testing.assert_allclose(sorted(b.get_height() for b in bars), sorted(want))
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(set(ticks)) == 12  # every group named apart: magnitude and layer in the label
    assert any("m=0.25" in t and "relu2" in t for t in ticks)


def test_clean_cost_single_magnitude_layer_labels_stay_short():
    cost = _cost_table()
    cost = cost[(cost["magnitude"] == 0.5) & (cost["layer"] == "relu3")]
    fig = plot_clean_cost(cost)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["test-time\non", "train-time\non", "train-time\noff"]


def test_clean_cost_repeated_rows_are_averaged_not_a_crash():
    cost = _cost_table()
    twice = pd.concat([cost, cost.assign(clean_cost=cost["clean_cost"] + 0.02)])
    bars = _bars(plot_clean_cost(twice), "isotropic")
    want = cost[cost["condition"] == "isotropic"]["clean_cost"].to_numpy() + 0.01
    np.testing.assert_allclose(sorted(b.get_height() for b in bars), sorted(want))


def test_masking_rows_labelled_by_magnitude_and_layer():
    cost = _cost_table()
    table = cost[cost["condition"] != "none"][["regime", "magnitude", "layer",
                                                "noise_at_test", "condition"]].copy()
    table["ce_pgd_minus_worst:linf"] = 0.05
    table["large_eps:pgd_ce"] = np.nan  # an all-NaN column, as when an attack was not run
    fig = plot_masking(table.reset_index(drop=True))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == len(table) == len(set(labels))


def test_alignment_gain_keeps_magnitudes_and_layers_apart():
    rng = np.random.default_rng(0)
    rows = []
    for m in MAGNITUDES:
        for layer in LAYERS:
            for seed in range(3):
                rows.append({"seed": seed, "regime": "test-time", "noise_at_test": True,
                             "magnitude": m, "layer": layer, "condition": "structured:pgd_ce",
                             "target": "linf", "gain": rng.normal(), "target_alignment": 2.0,
                             "log_alignment": rng.normal()})
    fig = plot_alignment_gain(pd.DataFrame(rows))
    labels = {line.get_label() for line in fig.axes[0].lines if line.get_gid() != "fit"}
    for m in MAGNITUDES:
        for layer in LAYERS:
            assert f"structured:pgd_ce m={m:g} {layer}" in labels


@pytest.fixture(scope="module")
def grid_run(tiny_run, tmp_path_factory):
    """The tiny run widened to 2 magnitudes x 2 layers (values shifted per copy) in a folder
    whose experiment.json names that grid: the shape of a real multi-magnitude run."""
    from neurovar.experiment import load_config

    out, _ = tiny_run
    folder = tmp_path_factory.mktemp("grid") / "run"
    shutil.copytree(out, folder)
    res = xr.open_dataset(out / "results.nc", engine="h5netcdf").load()
    parts = []
    for i, m in enumerate(MAGNITUDES):
        for j, layer in enumerate(LAYERS):
            part = res.isel(magnitude=[0], layer=[0]).assign_coords(magnitude=[m], layer=[layer])
            shift = 0.01 * (2 * i + j)
            part["accuracy"] = (part["accuracy"] - shift).clip(0, 1)
            parts.append(part)
    wide = xr.combine_by_coords(parts, combine_attrs="override")
    assert wide.sizes["magnitude"] == 2 and wide.sizes["layer"] == 2
    cfg = load_config(tiny_config(magnitudes=list(MAGNITUDES), layers=list(LAYERS)))
    meta = json.loads((folder / "experiment.json").read_text())
    meta["config"] = cfg.to_dict()
    (folder / "experiment.json").write_text(json.dumps(meta))
    shutil.rmtree(folder / "figures")
    return folder, wide


def test_report_of_a_multi_magnitude_multi_layer_run(grid_run):
    folder, wide = grid_run
    path = write_report(folder, results=wide)
    text = path.read_text()
    figs = {p.name for p in (folder / "figures").glob("*.png")}
    for m in MAGNITUDES:
        for layer in LAYERS:
            assert f"robustness_test-time_m{m:g}_{layer}_noise-on.png" in figs
            assert f"robustness_train-time_m{m:g}_{layer}_noise-off.png" in figs
    assert {"clean_cost.png", "masking.png", "alignment_gain.png"} <= figs
    # the clean-cost table names magnitude and layer on every row
    table = text.split("## Clean-accuracy cost", 1)[1].split("##", 1)[0]
    rows = [r for r in table.splitlines() if r.startswith("| test-time") or r.startswith("| train")]
    assert {r.split("|")[2].strip() for r in rows} == {"0.25", "0.5"}
    assert {r.split("|")[3].strip() for r in rows} == set(LAYERS)
    # the gain at matched clean accuracy: a section, and its table on disk with a CI or a reason
    assert "### Gain at matched clean accuracy" in text
    gain = pd.read_csv(folder / "matched_clean_gain.csv")
    assert set(gain["versus"]) <= {"isotropic", "none"} and len(gain)
    ok = np.isfinite(gain["gain"])
    assert (gain.loc[ok, "ci_low"] <= gain.loc[ok, "gain"] + 1e-12).all()
    assert gain.loc[~ok, "note"].astype(str).str.len().gt(0).all()
    assert "two-way cluster-robust" in text


def test_robustness_curves_refuses_a_magnitude_not_in_the_run(grid_run):
    _, wide = grid_run
    with pytest.raises(ValueError, match="'magnitude' parameter of plot_robustness_curves"):
        plot_robustness_curves(wide, regime="test-time", noise_at_test=True, magnitude=0.3)
    with pytest.raises(ValueError, match="'layer' parameter of plot_robustness_curves"):
        plot_robustness_curves(wide, regime="test-time", noise_at_test=True, layer="fc9")
    fig = plot_robustness_curves(wide, regime="test-time", noise_at_test=True, magnitude=0.5,
                                 layer="relu2")
    assert "m=0.5" in fig.get_suptitle() and "relu2" in fig.get_suptitle()
