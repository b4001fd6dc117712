"""One writer per results folder (issue 21): two ``neurovar run`` into one folder both ran."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from experiment_helpers import tiny_config, to_toml

from neurovar.cli import main
from neurovar.experiment.runner import RunLockedError, lock_path, run_lock

REPO = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_run_into_a_folder_is_refused_naming_the_first(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(to_toml(tiny_config(seeds=[7], regimes=["test-time"],
                                       conditions=["none", "isotropic", "structured"])))
    out = tmp_path / "out"
    lock = lock_path(out)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "neurovar.cli", "run", str(cfg), "--out",
                              str(out), "--no-progress"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not lock.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert lock.exists(), "the first run must hold the lock while it runs"
        held = json.loads(lock.read_text())
        assert held["pid"] == first.pid and held["host"] == socket.gethostname()
        assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "being written by another neurovar run" in err
        assert f"pid {first.pid}" in err and "Nothing was written" in err
        assert first.poll() is None  # the refusal did not disturb the first run
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed: its lock is left behind but stale (pid dead on this host), so a new run takes it
    assert lock.exists()
    with run_lock(out) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_lock_released_after_a_run_and_after_a_refused_one(tiny_run, tmp_path):
    out, path = tiny_run
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert not lock_path(out).exists()
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    assert main(["run", str(path), "--out", str(folder), "--no-progress"]) == 2
    assert not lock_path(folder).exists()
    assert (folder / "notes.txt").read_text() == "keep me"


def test_live_lock_in_another_process_refused(tmp_path):
    """A lock held by a live process (here: a helper that takes it and waits)."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = ("import sys; from neurovar.experiment.runner import run_lock\n"
            f"with run_lock({str(out)!r}):\n    print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} on host"):
            with run_lock(out):
                pass
        assert isinstance(RunLockedError("x"), FileExistsError)  # cli reports it as such
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0 and not lock_path(out).exists()  # released in finally


def test_stale_and_foreign_locks(tmp_path):
    out = tmp_path / "out"
    lock = lock_path(out)
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(),
                                "started": time.time() - 60}))
    with run_lock(out):  # stale: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": 0}))
    with pytest.raises(RunLockedError, match="cannot see processes on 'elsewhere.example'"):
        with run_lock(out):
            pass
    assert json.loads(lock.read_text())["host"] == "elsewhere.example"  # never deleted
    lock.write_text("")  # a run killed between creating and filling the lock
    with pytest.raises(RunLockedError, match="unknown process.*delete the lock file"):
        with run_lock(out):
            pass
    assert lock.exists()


def test_lock_released_when_the_run_raises(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with run_lock(out):
            raise KeyboardInterrupt
    assert not lock_path(out).exists()


def test_lock_inside_the_folder_when_its_parent_is_read_only(tmp_path, monkeypatch):
    from neurovar.experiment import runner

    out = tmp_path / "shared" / "results"
    out.mkdir(parents=True)
    real = os.access
    monkeypatch.setattr(runner.os, "access",
                        lambda p, mode: False if Path(p) == out.parent else real(p, mode))
    assert lock_path(out) == out / ".neurovar-lock"
    with run_lock(out) as path:
        assert path.parent == out and json.loads(path.read_text())["pid"] == os.getpid()
        # the lock alone does not make the folder "files that are not a neurovar run"
        from neurovar.experiment import load_config

        cfg = load_config(tiny_config(seeds=[7], regimes=["test-time"],
                                      conditions=["none", "isotropic"]))
        assert runner.prepare_folder(out, cfg) is None
        with pytest.raises(RunLockedError):
            with run_lock(out):
                pass
    assert not (out / ".neurovar-lock").exists()
