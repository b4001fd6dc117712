"""atomic_path: all-or-nothing writes of files and directories."""

from __future__ import annotations

import pytest

from neurovar._io import atomic_path
from neurovar._validation import InvalidParameterError


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_file_written_in_place_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and not tmp.exists()
        tmp.write_text("one")
        assert not target.exists()  # invisible until the block succeeds
    assert target.read_text() == "one" and _names(target.parent) == ["out.txt"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_path(target) as tmp:
            raise AssertionError("the block must not run")  # pragma: no cover
    with pytest.raises(KeyError):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text("two, half")
            raise KeyError("fail")
    assert target.read_text() == "one" and _names(target.parent) == ["out.txt"]
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("two")
    assert target.read_text() == "two"


def test_directory_replaced_only_on_success(tmp_path):
    target = tmp_path / "results"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.csv").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "b.csv").write_text("2")
            raise KeyboardInterrupt
    assert _names(target) == ["a.csv"] and _names(tmp_path) == ["results"]
    with atomic_path(target, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "b.csv").write_text("2")
    assert _names(target) == ["b.csv"] and _names(tmp_path) == ["results"]


def test_nothing_written_and_string_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "x"):
            pass
    with pytest.raises(InvalidParameterError, match="'overwrite' parameter of atomic_path"):
        with atomic_path(tmp_path / "x", overwrite="False"):
            pass  # pragma: no cover
    assert _names(tmp_path) == []
