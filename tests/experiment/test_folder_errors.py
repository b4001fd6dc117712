"""Half-written or damaged results folders and bad paths (issue 21): every error names the
file and what is wrong, and no traceback reaches the command line."""

from __future__ import annotations

import json
import shutil

import pytest

from neurovar._validation import InvalidParameterError
from neurovar.cli import main
from neurovar.experiment.store import (
    CorruptCellError,
    MissingFolderError,
    done_cells,
    is_done,
    read_cell,
)


@pytest.fixture()
def copy(tiny_run, tmp_path):
    out, _ = tiny_run
    dest = tmp_path / "copy"
    shutil.copytree(out, dest)
    return dest


def _first_cell(folder):
    return sorted(p for p in (folder / "cells").iterdir() if not p.name.startswith("."))[0]


def test_report_names_a_half_written_run_file(copy, capsys):
    (copy / "experiment.json").write_text('{"config_hash": ')
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert str(copy / "experiment.json") in err and "not valid JSON" in err
    assert "Traceback" not in err


def test_damaged_run_file_resumes_with_the_same_config(copy, tiny_run, capsys):
    _, path = tiny_run
    n = len(done_cells(copy))
    (copy / "experiment.json").write_text('{"config_hash": ')
    assert main(["run", str(path), "--out", str(copy), "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"0 cells computed, {n} resumed")
    assert "config_hash" in json.loads((copy / "experiment.json").read_text())


def test_report_names_a_truncated_cell(copy, capsys):
    cell = _first_cell(copy)
    data = (cell / "result.nc").read_bytes()
    (cell / "result.nc").write_bytes(data[: len(data) // 3])
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert str(cell / "result.nc") in err and "truncated or damaged" in err
    assert "Traceback" not in err
    with pytest.raises(CorruptCellError, match="cannot be read as netCDF"):
        read_cell(copy, cell.name)
    # nothing was deleted: the user decides
    assert (cell / "result.nc").stat().st_size == len(data) // 3


def test_report_names_a_damaged_cell_spec(copy, capsys):
    cell = _first_cell(copy)
    (cell / "spec.json").write_text('{"seed": ')
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert str(cell / "spec.json") in err and "not valid JSON" in err


def test_report_ignores_a_cell_being_written(copy, capsys):
    """A running run's temporary cell folder (half-written spec.json) is not read."""
    tmp = copy / "cells" / ".0123abcd.deadbeef.tmp"
    tmp.mkdir()
    (tmp / "spec.json").write_text('{"seed": ')
    from neurovar.experiment.runner import lock_path

    lock_path(copy).write_text("{}")  # and the run's lock is there: the report says so
    assert main(["report", str(copy)]) == 0  # the CLI prints the warning as a line
    assert "warning: A run may still be writing" in capsys.readouterr().err
    assert tmp.is_dir() and lock_path(copy).exists()  # the report touches neither


def test_report_of_a_missing_path_says_it_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "path"
    assert main(["report", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "not an experiment folder" not in err
    assert not missing.exists()
    (tmp_path / "file.txt").write_text("x")
    assert main(["report", str(tmp_path / "file.txt")]) == 2
    assert "It is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a neurovar experiment folder" in capsys.readouterr().err


def test_store_refuses_missing_folders_and_path_like_cell_ids(copy, tmp_path):
    missing = tmp_path / "typo"
    for call in (lambda: is_done(missing, "abc"), lambda: done_cells(missing),
                 lambda: read_cell(missing, "abc")):
        with pytest.raises(MissingFolderError, match="does not exist"):
            call()
    with pytest.raises(FileNotFoundError):  # also an OSError for callers that catch those
        done_cells(missing)
    assert done_cells(tmp_path) == []  # an existing folder without cells: nothing done
    cell = _first_cell(copy)
    outside = copy / "cells"  # a "cell" two levels up would be the run folder's sibling
    shutil.copytree(cell, tmp_path / "evil")
    for bad in ("../../evil", "../" + cell.name, "/etc", ".hidden", "a/b", "..", ""):
        with pytest.raises(InvalidParameterError, match="'cell_id' parameter of read_cell"):
            read_cell(copy, bad)
        with pytest.raises(InvalidParameterError, match="'cell_id' parameter of is_done"):
            is_done(copy, bad)
    assert outside.is_dir() and read_cell(copy, cell.name)[1]["cell_id"] == cell.name


def test_report_main_is_one_line_per_user_error(copy, tmp_path, capsys):
    """report_main (what `neurovar report` can call): exit 2 and one line, no traceback,
    for a missing path, a damaged cell and a folder that cannot be written."""
    import os

    from neurovar.experiment.report import report_main

    assert report_main(tmp_path / "missing") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    cell = _first_cell(copy)
    good = (cell / "result.nc").read_bytes()
    (cell / "result.nc").write_bytes(good[:100])
    assert report_main(copy) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurovar report: error: The cell file") and err.count("\n") == 1
    (cell / "result.nc").write_bytes(good)
    if os.geteuid() != 0:  # root writes anywhere
        (copy / "figures").chmod(0o500)
        try:
            assert report_main(copy) == 2
            assert "cannot write the report" in capsys.readouterr().err
        finally:
            (copy / "figures").chmod(0o700)
    assert report_main(copy) == 0
    assert capsys.readouterr().out.startswith("report written to")
