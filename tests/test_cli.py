import subprocess
import sys

import numpy as np
import pytest

from neurovar.cli import main


def test_console_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "neurovar.cli", "demo", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for flag in ("--out", "--overwrite", "--scheduler", "--no-progress"):
        assert flag in proc.stdout


HELP_WITHOUT_TORCH = """
import sys
from neurovar.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    assert exc.code == 0, exc.code
heavy = sorted(m for m in ("torch", "torchvision", "xarray", "sklearn", "matplotlib")
               if m in sys.modules)
{check}
print("HEAVY", heavy)
"""


@pytest.mark.parametrize(
    "argv", [["--help"], ["demo", "--help"], ["run", "--help"], ["report", "--help"],
             ["stats", "--help"], ["--version"]]
)
def test_help_does_not_import_torch(argv):
    # 'stats' needs the statistics stack for its choices (xarray, scipy), never torch; every
    # other command's help imports nothing heavy at all
    check = ("assert 'torch' not in heavy and 'torchvision' not in heavy, heavy"
             if argv[0] == "stats" else "assert not heavy, heavy")
    code = HELP_WITHOUT_TORCH.format(argv=argv, check=check)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY" in proc.stdout
    if argv[0] == "--help":
        for name in ("demo", "run", "report", "stats"):
            assert name in proc.stdout
    elif argv[0] == "run":
        assert "--scheduler" in proc.stdout and "config" in proc.stdout
    elif argv[0] == "stats":
        assert "--compare" in proc.stdout and "--n-permutations" in proc.stdout


def test_full_parser_and_lazy_parser_agree():
    from neurovar.cli import _COMMANDS, build_parser

    full = build_parser()
    for name in _COMMANDS:
        lazy = build_parser(name, all_commands=False)
        assert _sub_options(lazy, name) == _sub_options(full, name)
        assert _sub_options(lazy, name)  # populated
        others = [o for o in _COMMANDS if o != name]
        assert all(_sub_options(lazy, o) == {"-h", "--help"} for o in others)


def _sub_options(parser, name):
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {s for a in sub.choices[name]._actions for s in (a.option_strings or [a.dest])}


def test_import_neurovar_is_light_and_accessor_still_registers():
    code = (
        "import sys, neurovar\n"
        "assert not [m for m in ('torch', 'xarray', 'scipy') if m in sys.modules]\n"
        "import numpy as np, xarray as xr\n"
        "da = xr.DataArray(np.arange(1.0, 25.0).reshape(2, 3, 4) ** [[[1.0]], [[1.5]]],"
        " dims=('trial', 'stimulus', 'unit'))\n"
        "assert da.nv.fano_factor().shape == (3, 4)\n"
        "assert xr.__spec__.loader is xr.__loader__ and type(xr.__loader__).__name__ != "
        "'_AfterXarrayLoader'\n"
        "assert 'torch' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


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
