import subprocess
import sys

import numpy as np

from neurovar.cli import main


def test_console_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "neurovar.cli", "demo", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for flag in ("--out", "--overwrite", "--scheduler", "--no-progress"):
        assert flag in proc.stdout


def test_demo_refuses_a_folder_with_other_files(tmp_path, capsys):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "mine.txt").write_text("data")
    assert main(["demo", "--out", str(folder), "--no-progress"]) == 2
    assert "not a neurovar run" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]


def test_demo_out_under_a_file_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neurovar demo: error:")


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
