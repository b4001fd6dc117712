"""One finished tiny grid shared by the read-only tests."""

from __future__ import annotations

import pytest
from experiment_helpers import TINY, to_toml


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished tiny grid (run through the CLI) shared by the read-only tests."""
    from neurovar.cli import main

    root = tmp_path_factory.mktemp("tiny_run")
    path = root / "tiny.toml"
    path.write_text(to_toml(TINY))
    out = root / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return out, path
