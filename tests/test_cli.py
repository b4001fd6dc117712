import json
import subprocess
import sys

import numpy as np
import xarray as xr

from neurovar.cli import main
from neurovar.record import load_recording


def test_demo_writes_results_folder(tmp_path, capsys):
    out = tmp_path / "results"
    args = [
        "demo",
        "--out",
        str(out),
        "--epochs",
        "3",
        "--n-trials",
        "6",
        "--n-stimuli",
        "30",
        "--no-progress",
    ]
    assert main(args) == 0
    for name in ("recording.nc", "summary.nc", "mean_variance.png", "config.json", "report.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    tree = load_recording(out / "recording.nc")
    cfg = json.loads((out / "config.json").read_text())
    for layer in cfg["layers"]:
        act = tree[layer]["activation"]
        assert act.sizes["trial"] == 6 and act.sizes["stimulus"] == 30
    summary = xr.open_datatree(out / "summary.nc", engine="h5netcdf")
    layer = cfg["layers"][-1]
    expected = tree[layer]["activation"].values.astype("float64").var(axis=0, ddof=1)
    np.testing.assert_allclose(summary[layer]["variance"].values, expected, rtol=1e-10)
    report = (out / "report.md").read_text()
    assert "test accuracy" in report and "30 test images" in report
    # an existing, non-empty folder is never overwritten by accident
    before = (out / "report.md").read_text()
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "report.md").read_text() == before


def test_console_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "neurovar.cli", "demo", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--n-trials" in proc.stdout


def test_demo_rejects_bad_numbers(tmp_path, capsys):
    try:
        main(["demo", "--out", str(tmp_path / "r"), "--n-trials", "0"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "--n-trials must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_stats_subcommand_is_wired(tmp_path, capsys):
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "condition": ["iso"] * 20 + ["struct"] * 20,
            "value": np.r_[rng.normal(0, 1, 20), rng.normal(3, 1, 20)],
        }
    )
    df.to_csv(tmp_path / "r.csv", index=False)
    out = tmp_path / "out.csv"
    code = main(
        [
            "stats",
            str(tmp_path / "r.csv"),
            "--compare",
            "struct",
            "iso",
            "--seed",
            "0",
            "--n-permutations",
            "999",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    table = pd.read_csv(out)
    assert table["p_value"].iloc[0] < 0.01 and table["statistic"].iloc[0] > 2
