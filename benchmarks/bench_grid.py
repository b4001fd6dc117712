"""Grid throughput: cells per minute in-process vs a dask ``LocalCluster`` of 2 workers.

Cells go through :func:`neurovar.experiment.executor.run_cells` exactly as a grid's cells do
(submit, as_completed, atomic netCDF write of every cell, resume check), with two kinds of
cell so that the cost of scheduling can be told apart from the work:

- ``trivial``: returns a one-number Dataset: the time per cell *is* the executor's overhead
  (scheduling, pickling, the write of a small netCDF file);
- ``work``: a single-threaded, seeded numpy computation of about ``--work`` seconds, like a
  small CPU cell.

With ``--demo K`` the first K cells of the shipped ``demo`` config (the real experiment cell:
training, fitting, attacks) are timed too, in-process and on the cluster.

Cluster start-up (scheduler and 2 worker processes importing neurovar) is measured separately
and reported once; it is paid once per run.

Run: ``python benchmarks/bench_grid.py [--n-trivial 40] [--n-work 12] [--work 1.0]
[--demo 0]``; writes ``benchmarks/results/grid.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from neurovar.experiment.executor import local_cluster, run_cells

OUT = Path(__file__).resolve().parent / "results" / "grid.md"


@dataclass(frozen=True)
class Spec:
    cell_id: str
    seed: int
    work: float = 0.0  # seconds of numpy work
    label: str = ""
    resources: dict = field(default_factory=dict)


def compute(spec: Spec) -> xr.Dataset:
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(spec.seed)
    if spec.work <= 0:
        return xr.Dataset({"x": ("i", rng.standard_normal(1))})
    a = rng.standard_normal((160, 160))
    acc = 0.0
    t_end = time.perf_counter() + spec.work
    n = 0
    with threadpool_limits(1):
        while time.perf_counter() < t_end:  # time-bounded: same cost on every executor
            acc += float(np.linalg.eigvalsh(a @ a.T + n)[-1])
            n += 1
    return xr.Dataset({"x": ("i", [acc]), "n": ((), n)})


def writer(out_dir: Path, spec: Spec, result: xr.Dataset) -> None:
    d = Path(out_dir) / "cells" / spec.cell_id
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".r-{uuid.uuid4().hex}.nc"
    result.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, d / "result.nc")


def done(out_dir: Path, cell_id: str) -> bool:
    return (Path(out_dir) / "cells" / cell_id / "result.nc").is_file()


def timed(specs, scheduler=None, write="worker", **kw) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    try:
        t0 = time.perf_counter()
        res = run_cells(specs, out, scheduler=scheduler, write=write, progress=False, **kw)
        dt = time.perf_counter() - t0
        if res.failed or len(res.completed) != len(specs):
            raise RuntimeError(res.summary())
        return dt
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trivial", type=int, default=40)
    parser.add_argument("--n-work", type=int, default=12)
    parser.add_argument("--work", type=float, default=1.0, help="seconds per work cell")
    parser.add_argument("--demo", type=int, default=0, help="also time the first K demo cells")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    trivial = [Spec(f"t{i:03d}", i) for i in range(args.n_trivial)]
    work = [Spec(f"w{i:03d}", i, work=args.work) for i in range(args.n_work)]
    fns = dict(compute=compute, writer=writer, done=done)
    rows = []

    def row(kind, n, where, seconds):
        rows.append((kind, n, where, seconds, 60.0 * n / seconds, seconds / n))
        print(rows[-1], flush=True)

    row("trivial", len(trivial), "in-process", timed(trivial, **fns))
    row("work", len(work), "in-process", timed(work, **fns))

    import distributed

    t0 = time.perf_counter()
    cluster = local_cluster(args.workers)
    client = distributed.Client(cluster)
    client.run(__import__, "neurovar.experiment.executor")  # workers import neurovar
    startup = time.perf_counter() - t0
    try:
        timed(trivial[:4], scheduler=client, **fns)  # warm the connection
        lat = []
        for spec in trivial[:20]:  # one task at a time: the round trip of one cell
            t1 = time.perf_counter()
            client.submit(compute, spec, pure=False).result()
            lat.append(time.perf_counter() - t1)
        t1 = time.perf_counter()
        for spec in trivial[:20]:
            compute(spec)
        local_call = (time.perf_counter() - t1) / 20
        latency = float(np.median(lat)) - local_call
        for write in ("worker", "client"):
            where = f"LocalCluster {args.workers} workers, write={write}"
            row("trivial", len(trivial), where, timed(trivial, scheduler=client, write=write, **fns))
        row("work", len(work), f"LocalCluster {args.workers} workers, write=worker",
            timed(work, scheduler=client, **fns))
        if args.demo:
            from neurovar.experiment import load_config, plan

            demo = plan(load_config("demo"))[: args.demo]
            row("demo cell", len(demo), "in-process", timed(demo))
            row("demo cell", len(demo), f"LocalCluster {args.workers} workers, write=worker",
                timed(demo, scheduler=client))
    finally:
        client.close()
        cluster.close()

    by = {(k, w): s for k, _, w, s, _, _ in rows}
    n_triv = len(trivial)
    overhead = {  # worker-seconds per cell beyond the in-process cost of the same cell
        w: (args.workers * by[("trivial", w)] - by[("trivial", "in-process")]) / n_triv
        for (k, w) in by if k == "trivial" and w != "in-process"
    }
    cores = os.cpu_count()
    lines = [
        "# Grid throughput: in-process vs dask LocalCluster",
        "",
        f"Machine: {platform.machine()}, {cores} cores (shared), Python {sys.version.split()[0]}, "
        f"dask.distributed {distributed.__version__}. Command: `python benchmarks/bench_grid.py "
        + " ".join(sys.argv[1:]) + "`.",
        "",
        f"Cluster start-up (scheduler + {args.workers} worker processes importing neurovar): "
        f"{startup:.1f} s, once per run.",
        "",
        "| cells | n | where | wall s | cells/min | s/cell |",
        "|---|---:|---|---:|---:|---:|",
    ]
    lines += [f"| {k} | {n} | {w} | {s:.2f} | {cpm:.1f} | {spc:.3f} |" for k, n, w, s, cpm, spc in rows]
    lines += [
        "",
        "Scheduling overhead per cell: round trip of one trivial task (submit, run on a "
        f"worker, result back; median of 20, minus the call itself): {1000 * latency:.1f} ms. "
        "In worker time, over a batch of trivial cells (workers x cluster wall - in-process "
        "wall, per cell; the trivial cell includes its netCDF write): "
        + "; ".join(f"{w}: {1000 * o:.0f} ms" for w, o in overhead.items())
        + ".",
        "",
        f"`work` cells are {args.work:g} s of single-threaded numpy each, so the ideal is "
        f"{60 / args.work:.0f} cells/min in-process and {args.workers * 60 / args.work:.0f} "
        f"on {args.workers} workers when the cores are free.",
    ]
    if args.demo:
        lines += [
            "",
            f"`demo cell`: the first {args.demo} cells of the shipped demo grid (seed 0). They share "
            "seed 0's base network: in-process it is trained once and kept in memory; on the "
            "cluster both workers start at once, so each trains it (the disk cache under "
            "`out/cache` only helps cells that start after it is written) and each imports the "
            "experiment modules on its first cell. With a handful of cells that start-up cost "
            "dominates; a cluster pays off on grids of many cells per worker (the `work` rows).",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
