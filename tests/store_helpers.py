"""Fault-test helpers shared by the store tests: a recording subprocess killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def chunks_written(path: Path) -> int:
    """Chunks a streamed recording store reports on disk (0 before the store exists)."""
    import zarr

    try:
        return int(zarr.open_group(str(path), mode="r").attrs.get("neurovar_chunks_written", 0))
    except Exception:  # noqa: BLE001  (store not created yet)
        return 0


def kill_after_chunks(source: str, path: Path, n_chunks: int, *, timeout: float = 120) -> None:
    """Run ``source`` (Python code recording into ``sys.argv[1]``) in a subprocess with this
    checkout on its path, and ``kill -9`` it once ``n_chunks`` chunks of ``path`` are written.

    Fails if the subprocess ends first or the chunks take longer than ``timeout`` seconds.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", source, str(path)], env=env)
    try:
        deadline = time.monotonic() + timeout
        while chunks_written(path) < n_chunks:
            assert proc.poll() is None, f"the recording subprocess ended before {n_chunks} chunks"
            assert time.monotonic() < deadline, f"{n_chunks} chunks not written within {timeout} s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
