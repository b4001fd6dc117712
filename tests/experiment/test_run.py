"""End to end: files, resume after a real kill, refusal of a different config, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from experiment_helpers import tiny_config, to_toml

from neurovar.cli import main
from neurovar.experiment import load_config, plan

REPO = Path(__file__).resolve().parents[2]


def test_run_writes_results_figures_report(tiny_run):
    out, _ = tiny_run
    for name in ("results.nc", "results.csv", "report.md", "experiment.json",
                 "transfer_matrix.nc", "masking.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    for prefix in ("robustness_", "transfer_matrix_", "alignment_gain", "clean_cost", "masking"):
        assert any(f.startswith(prefix) for f in figs), (prefix, figs)
    df = pd.read_csv(out / "results.csv")
    for col in ("seed", "regime", "condition", "target", "strength", "accuracy",
                "noise_at_test", "magnitude", "ci_low", "ci_high", "target_alignment",
                "noise_to_signal"):
        assert col in df.columns, col
    assert ((df["ci_low"] <= df["accuracy"]) & (df["accuracy"] <= df["ci_high"])).all()
    # test-time cells have no noise-off rows; train-time cells have both
    assert not ((df["regime"] == "test-time") & ~df["noise_at_test"]).any()
    assert ((df["regime"] == "train-time") & ~df["noise_at_test"]).any()
    res = xr.open_dataset(out / "results.nc", engine="h5netcdf")
    for dim in ("seed", "regime", "condition", "magnitude", "target", "strength"):
        assert dim in res.dims
    # the tidy table is the Dataset's accuracy, row for row
    row = df[(df["condition"] == "isotropic") & (df["target"] == "gaussian_noise")].iloc[0]
    val = res["accuracy"].sel(seed=row["seed"], regime=row["regime"], condition="isotropic",
                              magnitude=row["magnitude"], layer=row["layer"],
                              noise_at_test=bool(row["noise_at_test"]), target="gaussian_noise")
    k = int(np.flatnonzero(res["strength_value"].sel(target="gaussian_noise").values
                           == row["strength"])[0])
    assert float(val.isel(strength=k)) == pytest.approx(row["accuracy"])
    report = (out / "report.md").read_text()
    for claim in ("Claim 1", "Claim 2", "Claim 3"):
        assert claim in report
    assert "Masking diagnostics" in report and "transfer matrix" in report.lower()


def test_rerun_resumes_without_recomputing(tiny_run, capsys):
    out, path = tiny_run
    before = xr.open_dataset(out / "results.nc", engine="h5netcdf").load()
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    msg = capsys.readouterr().out
    n = len(plan(load_config(path)))
    assert msg.startswith(f"0 cells computed, {n} resumed")
    after = xr.open_dataset(out / "results.nc", engine="h5netcdf").load()
    xr.testing.assert_identical(before, after)


def test_report_rebuilds_from_cells(tiny_run, tmp_path):
    import shutil

    out, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in ("report.md", "results.nc", "results.csv"):
        (copy / name).unlink()
    shutil.rmtree(copy / "figures")
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.md").read_text() == (out / "report.md").read_text()
    assert (copy / "figures" / "clean_cost.png").stat().st_size > 1000


def test_different_config_refused_unless_overwrite(tiny_run, tmp_path, capsys):
    import shutil

    out, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    other = tmp_path / "other.toml"
    other.write_text(to_toml(tiny_config(seeds=[5], regimes=["test-time"],
                                         conditions=["none", "isotropic"])))
    listing = sorted(p.name for p in copy.rglob("*"))
    assert main(["run", str(other), "--out", str(copy), "--no-progress"]) == 2
    assert "different config" in capsys.readouterr().err
    assert sorted(p.name for p in copy.rglob("*")) == listing
    assert main(["run", str(other), "--out", str(copy), "--no-progress", "--overwrite"]) == 0
    assert json.loads((copy / "experiment.json").read_text())["config"]["seeds"] == [5]
    assert not list(tmp_path.glob("copy.replaced-*"))  # the old run is dropped after success


def test_non_run_folder_refused(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    cfg = tmp_path / "c.toml"
    cfg.write_text(to_toml(tiny_config()))
    assert main(["run", str(cfg), "--out", str(folder), "--no-progress"]) == 2
    assert (folder / "notes.txt").read_text() == "keep me"
    assert "not a neurovar run" in capsys.readouterr().err


def test_killed_run_resumes_to_identical_results(tmp_path):
    cfg = tiny_config(seeds=[7], regimes=["test-time"],
                      conditions=["none", "isotropic", "structured"])
    path = tmp_path / "k.toml"
    path.write_text(to_toml(cfg))
    n_cells = len(plan(load_config(path)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "neurovar.cli", "run", str(path), "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    cells = killed / "cells"
    while time.time() < deadline:  # kill once a first cell is written, mid-grid
        done = [p for p in cells.glob("*") if not p.name.startswith(".")] if cells.is_dir() else []
        if done or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [p for p in cells.glob("*") if not p.name.startswith(".")]
    assert 1 <= len(finished) < n_cells, "the kill must land mid-grid"
    assert subprocess.run([*cmd, "--out", str(killed)], env=env, capture_output=True).returncode == 0
    fresh = tmp_path / "fresh"
    assert subprocess.run([*cmd, "--out", str(fresh)], env=env, capture_output=True).returncode == 0
    a = xr.open_dataset(killed / "results.nc", engine="h5netcdf").load()
    b = xr.open_dataset(fresh / "results.nc", engine="h5netcdf").load()
    xr.testing.assert_identical(a, b)
    assert not [p for p in cells.glob(".*")]  # no temporary cell folder left behind
