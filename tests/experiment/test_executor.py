"""The grid executors: in-process loop and dask.distributed (LocalCluster on loopback)."""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from pathlib import Path

import executor_cells as ec
import numpy as np
import pytest

from neurovar.experiment.executor import GridOutcome, local_cluster, parse_scheduler, run_cells

distributed = pytest.importorskip("distributed")

FUNCS = dict(compute=ec.compute, writer=ec.writer, done=ec.done)


def run(specs, out, **kw) -> GridOutcome:
    return run_cells(specs, out, progress=False, **FUNCS, **kw)


def assert_same_results(specs, out_a: Path, out_b: Path, ignore_attrs=()) -> None:
    """Cell for cell, every variable bitwise equal (and same coords/attrs)."""
    for s in specs:
        a, b = ec.load(out_a, s.cell_id), ec.load(out_b, s.cell_id)
        for key in ignore_attrs:
            a.attrs.pop(key), b.attrs.pop(key)
        assert a.identical(b), s.cell_id
        for name in a.data_vars:
            assert a[name].values.tobytes() == b[name].values.tobytes(), (s.cell_id, name)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on 127.0.0.1; always closed."""
    cluster = local_cluster(2)
    try:
        c = distributed.Client(cluster)
        try:
            c.run(importlib.import_module, "neurovar.experiment.executor")  # warm the workers
            yield c
        finally:
            c.close()
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process run every cluster run must equal."""
    out = tmp_path_factory.mktemp("inproc")
    specs = ec.grid(5)
    outcome = run(specs, out)
    assert outcome.completed == [s.cell_id for s in specs] and outcome.ok
    return specs, out


# ------------------------------------------------------------------ parse_scheduler


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("local:2", "local:2"),
        ("LOCAL:03", "local:3"),
        ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("localhost:8786", "tcp://localhost:8786"),
        ("tls://sched.example.org:8786", "tls://sched.example.org:8786"),
        ("tcp://[::1]:8786", "tcp://[::1]:8786"),
    ],
)
def test_parse_scheduler_valid(text, expected):
    assert parse_scheduler(text) == expected


@pytest.mark.parametrize(
    "text", ["local", "local:0", "local:-1", "local:two", "tcp://host", "host:99999", "http//x:1",
             "tcp://a b:80", "missing.json", 3],
)
def test_parse_scheduler_rejects_malformed(text):
    with pytest.raises(ValueError, match="'scheduler' parameter"):
        parse_scheduler(text)


def test_parse_scheduler_file(tmp_path):
    f = tmp_path / "scheduler.json"
    f.write_text("{}")
    assert parse_scheduler(str(f)) == str(f)


def test_bad_arguments_run_nothing(tmp_path):
    specs = ec.grid(2, tmp_path / "log")
    with pytest.raises(ValueError, match="'write' parameter"):
        run(specs, tmp_path / "out", write="disk")
    with pytest.raises(ValueError, match="'retries' parameter"):
        run(specs, tmp_path / "out", retries=-1)
    with pytest.raises(ValueError, match="'scheduler' parameter"):
        run(specs, tmp_path / "out", scheduler="local:x")
    with pytest.raises(ValueError, match="twice"):
        run(specs + specs[:1], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "log").exists()


# ------------------------------------------------------------------ in-process


def test_in_process_resume_skips_done_cells(tmp_path):
    specs = ec.grid(4, tmp_path / "log")
    first = run(specs, tmp_path / "out")
    ids = [s.cell_id for s in specs]
    assert first.completed == ids and first.skipped == [] and first.ok
    again = run(specs, tmp_path / "out")
    assert again.completed == [] and again.skipped == ids
    ec.result_path(tmp_path / "out", "c02").unlink()
    third = run(specs, tmp_path / "out")
    assert third.completed == ["c02"] and third.skipped == ["c00", "c01", "c03"]
    attempts = sorted(cid for cid, _ in ec.log_entries(tmp_path / "log", "attempt"))
    assert attempts == ["c00", "c01", "c02", "c02", "c03"]


def test_results_are_seeded_by_the_cell_not_the_order(tmp_path):
    specs = ec.grid(4)
    run(specs, tmp_path / "fwd")
    run(specs[::-1], tmp_path / "rev")
    assert_same_results(specs, tmp_path / "fwd", tmp_path / "rev")
    a, b = ec.load(tmp_path / "fwd", "c00"), ec.load(tmp_path / "fwd", "c01")
    assert not np.array_equal(a["eig"].values, b["eig"].values)  # cells differ from each other


def test_failing_cell_reported_others_kept_rerun_redoes_only_it(tmp_path):
    broken = tmp_path / "broken"
    broken.touch()
    specs = ec.grid(4, tmp_path / "log")
    specs[1] = ec.FakeSpec("c01", 101, label="planted", log_dir=str(tmp_path / "log"),
                           fail_while=str(broken))
    outcome = run(specs, tmp_path / "out")
    assert list(outcome.failed) == ["c01"] and not outcome.ok
    tb = outcome.failed["c01"]
    assert "Traceback" in tb and "planted failure in cell c01" in tb and "in compute" in tb
    assert outcome.completed == ["c00", "c02", "c03"]
    assert "FAILED c01 (planted): ValueError: planted failure" in outcome.summary()
    assert not ec.result_path(tmp_path / "out", "c01").parent.exists()
    broken.unlink()
    rerun = run(specs, tmp_path / "out")
    assert rerun.completed == ["c01"] and rerun.skipped == ["c00", "c02", "c03"] and rerun.ok
    assert sorted(cid for cid, _ in ec.log_entries(tmp_path / "log", "write")) == [
        "c00", "c01", "c02", "c03"
    ]


# ------------------------------------------------------------------ LocalCluster


@pytest.mark.parametrize("write", ["worker", "client"])
def test_cluster_equals_in_process(client, reference, tmp_path, write):
    specs, ref_out = reference
    specs = [ec.FakeSpec(s.cell_id, s.seed, s.label, log_dir=str(tmp_path / "log")) for s in specs]
    outcome = run(specs, tmp_path / "out", scheduler=client, write=write)
    assert outcome.completed == [s.cell_id for s in specs] and outcome.ok
    assert_same_results(specs, ref_out, tmp_path / "out")
    worker_pids = set(client.run(os.getpid).values())
    writers = {pid for _, pid in ec.log_entries(tmp_path / "log", "write")}
    computed_on = {pid for _, pid in ec.log_entries(tmp_path / "log", "attempt")}
    assert computed_on <= worker_pids  # really computed on the workers
    assert writers == ({os.getpid()} if write == "client" else computed_on)
    assert len(ec.log_entries(tmp_path / "log", "write")) == len(specs)  # once each
    assert client.run(lambda: 1)  # the client is left open


def test_worker_thread_count_does_not_change_the_numbers(client, tmp_path):
    specs = [ec.FakeSpec(f"t{i}", 7 + i, torch_threads=1) for i in range(2)]
    run(specs, tmp_path / "here")
    run(specs, tmp_path / "there", scheduler=client)
    assert_same_results(specs, tmp_path / "here", tmp_path / "there", ["threads_on_entry"])
    # the environments really differ: dask workers start with OMP_NUM_THREADS=1
    there = {ec.load(tmp_path / "there", s.cell_id).attrs["threads_on_entry"] for s in specs}
    assert there == {1}


def test_cluster_failure_has_remote_traceback_and_rest_goes_on(client, reference, tmp_path):
    specs, ref_out = reference
    broken = tmp_path / "broken"
    broken.touch()
    specs = list(specs)
    specs[2] = ec.FakeSpec("c02", specs[2].seed, "planted", fail_while=str(broken))
    outcome = run(specs, tmp_path / "out", scheduler=client)
    assert list(outcome.failed) == ["c02"]
    assert "planted failure in cell c02" in outcome.failed["c02"]
    assert "executor_cells.py" in outcome.failed["c02"]  # the frames of the worker
    assert outcome.completed == ["c00", "c01", "c03", "c04"]
    broken.unlink()
    rerun = run(specs, tmp_path / "out", scheduler=client, write="client")
    assert rerun.completed == ["c02"] and len(rerun.skipped) == 4
    assert_same_results(specs, ref_out, tmp_path / "out")


def test_cells_needing_a_missing_resource_are_refused_before_running(client, tmp_path):
    specs = ec.grid(2, tmp_path / "log")
    specs[1] = ec.FakeSpec("c01", 1, "gpu cell", resources={"GPU": 1})
    with pytest.raises(ValueError, match=r"needs worker resources \{'GPU': 1\}.*--resources GPU=1"):
        run(specs, tmp_path / "out", scheduler=client)
    assert not (tmp_path / "log").exists()  # nothing ran


def test_killed_worker_mid_cell_is_retried_nothing_lost_or_duplicated(client, reference, tmp_path):
    specs, ref_out = reference
    log, flag = tmp_path / "log", tmp_path / "flags" / "go"
    flag.parent.mkdir()
    specs = [ec.FakeSpec(s.cell_id, s.seed, s.label, log_dir=str(log)) for s in specs]
    specs[0] = ec.FakeSpec("c00", specs[0].seed, "blocker", log_dir=str(log), wait_for=str(flag))
    killed: list[int] = []

    def killer():
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                started = list(flag.parent.glob("started-c00-*"))
                if started:
                    pid = int(started[0].name.rsplit("-", 1)[1])
                    assert pid in client.run(os.getpid).values() and pid != os.getpid()
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.05)
        finally:
            flag.touch()  # let the retried attempt through (and never hang the test)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        outcome = run(specs, tmp_path / "out", scheduler=client, retries=2)
    finally:
        thread.join(timeout=130)
    assert killed, "the blocking cell never started"
    assert outcome.ok, outcome.failed
    assert sorted(outcome.completed) == [s.cell_id for s in specs]
    assert_same_results(specs, ref_out, tmp_path / "out")
    attempts = ec.log_entries(log, "attempt")
    blocker = [pid for cid, pid in attempts if cid == "c00"]
    assert len(blocker) == 2 and blocker.count(killed[0]) == 1  # killed once, redone elsewhere
    assert sorted(cid for cid, _ in attempts if cid != "c00") == ["c01", "c02", "c03", "c04"]
    assert sorted(cid for cid, _ in ec.log_entries(log, "write")) == [s.cell_id for s in specs]
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


@pytest.mark.slow
def test_local_n_starts_and_closes_its_own_cluster(reference, tmp_path):
    psutil = pytest.importorskip("psutil")
    specs, ref_out = reference
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    outcome = run(specs[:3], tmp_path / "out", scheduler="local:1", write="client")
    assert outcome.completed == [s.cell_id for s in specs[:3]]
    assert_same_results(specs[:3], ref_out, tmp_path / "out")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [
            p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        ]
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"worker processes left running: {left}"


# ------------------------------------------------------------------ the experiment's own cells


def _untimed(meta: dict) -> dict:
    """spec.json without the wall-clock times (which differ from run to run)."""
    info = {k: v for k, v in meta["info"].items() if not k.endswith("seconds")}
    return {**meta, "info": info}


@pytest.mark.slow
def test_real_cells_identical_in_process_and_on_the_cluster(client, tmp_path):
    """Real cells (training, fitting, attacks) with the default compute/writer/done: the
    numbers of a LocalCluster run equal the in-process run's bitwise, whichever write mode."""
    from experiment_helpers import tiny_config

    from neurovar.experiment import load_config, plan, read_cell

    cfg = load_config(tiny_config(seeds=[0], regimes=["test-time"],
                                  conditions=["none", "structured"]))
    specs = plan(cfg)[:2]
    here = run_cells(specs, tmp_path / "here", progress=False)
    there = run_cells(specs, tmp_path / "there", scheduler=client, progress=False)
    client_side = run_cells(specs, tmp_path / "client", scheduler=client, write="client",
                            progress=False)
    assert here.ok and there.ok and client_side.ok, (here.failed, there.failed)
    for s in specs:
        a, meta = read_cell(tmp_path / "here", s.cell_id)
        for other in ("there", "client"):
            b, meta_b = read_cell(tmp_path / other, s.cell_id)
            assert set(a.variables) == set(b.variables)
            for name in a.variables:  # every number, bitwise
                assert a[name].values.tobytes() == b[name].values.tobytes(), (s.label, name)
            assert _untimed(meta) == _untimed(meta_b), (s.label, other)
    assert meta["cell_id"] == specs[-1].cell_id
    # the default compute shares the base network through out_dir/cache in-process and with
    # write="worker"; with write="client" nothing but cells/ is written to the results folder
    assert any((tmp_path / "here" / "cache").iterdir())
    assert any((tmp_path / "there" / "cache").iterdir())
    assert not (tmp_path / "client" / "cache").exists()
