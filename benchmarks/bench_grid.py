"""Grid throughput: cells per minute in-process vs a dask ``LocalCluster`` of 2 workers.

Cells go through :func:`neurovar.experiment.executor.run_cells` exactly as a grid's cells do
(submit, as_completed, atomic netCDF write of every cell, resume check), with two kinds of
cell so that the cost of scheduling can be told apart from the work:

- ``trivial``: returns a one-number Dataset: the time per cell *is* the executor's overhead
  (scheduling, pickling, the write of a small netCDF file);
- ``work``: a single-threaded, seeded numpy computation of about ``--work`` seconds, like a
  small CPU cell.

With ``--demo K`` the first K cells of the shipped ``demo`` config (the real experiment cell:
training, fitting, attacks; ``--demo 24`` is the whole demo grid) run with the default
compute, in-process and on the cluster, alternating, ``--repeats`` times each, every run from
cold caches (a fresh results folder, the in-memory caches of this process and of the workers
cleared). Wall time and CPU time (this process, plus the workers' processes for the cluster)
are recorded, and the cells of every cluster run are compared, every number bitwise, with the
in-process run's.

Cluster start-up (scheduler and 2 worker processes importing neurovar and the experiment cell)
is measured separately and reported once; it is paid once per run.

Run: ``python benchmarks/bench_grid.py [--n-trivial 40] [--n-work 12] [--work 1.0]
[--demo 0] [--repeats 2]``; writes ``benchmarks/results/grid.md``.
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


def _cpu() -> float:
    return time.process_time()


def _same_cells(specs, a: Path, b: Path) -> None:
    from neurovar.experiment import read_cell

    for spec in specs:
        x, _ = read_cell(a, spec.cell_id)
        y, _ = read_cell(b, spec.cell_id)
        if set(x.variables) != set(y.variables) or any(
                x[v].values.tobytes() != y[v].values.tobytes() for v in x.variables):
            raise RuntimeError(f"cell {spec.label}: cluster result differs from in-process")


def paper_config(n_seeds: int):
    """The shipped ``preble2026`` grid's shape at the ``demo`` config's budget.

    Every grid axis, source and target of ``preble2026`` (its 23 cells per seed: 6 conditions
    with ``diagonal:*`` over its 9 sources, 2 magnitudes; 4 paper attacks at 11 eps, the
    adaptive ensemble at 5, 4 corruptions at 5 severities, obstruction), so the shared work
    the cells depend on is the paper's (a base network per seed, 9 fitted sources per seed
    and layer), with the demo's data, training and evaluation budgets (embedded MNIST, 200
    fit / 80 evaluation images, 3 epochs, 5-20 attack steps) and its first ``n_seeds`` seeds.
    """
    import tomllib

    from neurovar.experiment import load_config

    root = Path(__file__).resolve().parents[1] / "neurovar" / "configs"
    paper = tomllib.loads((root / "preble2026.toml").read_text())
    demo = tomllib.loads((root / "demo.toml").read_text())
    paper.update(name="preble2026-at-demo-budget", seeds=paper["seeds"][:n_seeds],
                 device="cpu", data=demo["data"], training=demo["training"],
                 evaluation={**demo["evaluation"], "attacks": paper["evaluation"]["attacks"]})
    return load_config(paper)


def demo_cells(k: int, per_seed: int = 0, threads: int = 0, paper: int = 0) -> list:
    """The first ``k`` cells of the demo grid, or (``per_seed``) the first ``per_seed`` cells
    of each of its seeds; ``threads``: torch threads per cell instead of the config's;
    ``paper``: the grid of :func:`paper_config` with that many seeds instead of the demo's."""
    from neurovar.experiment import load_config, plan

    cfg = paper_config(paper) if paper else load_config("demo")
    if threads:
        cfg = load_config({**cfg.to_dict(), "threads": threads})
    cells = plan(cfg)
    if per_seed:
        seen: dict[int, int] = {}
        cells = [c for c in cells if seen.setdefault(c.seed, 0) < per_seed
                 and not seen.__setitem__(c.seed, seen[c.seed] + 1)]
    return cells[:k]


def demo_runs(client, k: int, repeats: int, workers: int, per_seed: int = 0,
              threads: int = 0, paper: int = 0) -> list[tuple[str, int, float, float]]:
    """The demo cells (:func:`demo_cells`), in-process and on the cluster, alternating, from
    cold caches; (where, run, wall s, CPU s) per run. Every cluster run's cells are compared
    bitwise with the in-process run's."""
    from neurovar.experiment import cell

    demo = demo_cells(k, per_seed, threads, paper)
    where_c = f"LocalCluster {workers} workers, write=worker"
    out_rows = []
    for r in range(repeats):
        dirs = {}
        for where in ("in-process", where_c):
            out = Path(tempfile.mkdtemp(prefix="bench-grid-demo-"))
            dirs[where] = out
            cell.clear_caches()
            cluster_side = where != "in-process"
            if cluster_side:
                client.run(cell.clear_caches)
                w0 = sum(client.run(_cpu).values())
            c0, t0 = time.process_time(), time.perf_counter()
            res = run_cells(demo, out, scheduler=client if cluster_side else None,
                            progress=False)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0
            if cluster_side:
                cpu += sum(client.run(_cpu).values()) - w0
            if res.failed or len(res.completed) != len(demo):
                raise RuntimeError(res.summary())
            out_rows.append((where, r, wall, cpu))
            print(out_rows[-1], flush=True)
        _same_cells(demo, dirs["in-process"], dirs[where_c])
        for out in dirs.values():
            shutil.rmtree(out, ignore_errors=True)
    return out_rows


def demo_table(demo_rows, args) -> list[str]:
    n = len(demo_cells(args.demo, args.per_seed, args.threads, args.paper))
    which = (f"the first {args.per_seed} cells of each seed ({n} cells)" if args.per_seed
             else f"the first {n} cells")
    grid = (f"the `preble2026` grid at the demo's budget ({args.paper} seeds, "
            "`paper_config`)" if args.paper else "the shipped `demo` config")
    lines = ["", f"## {which} of {grid}", "",
             f"Torch threads per cell: {args.threads or 'the config' + chr(39) + 's (2)'}. "
             f"Default compute (shared work as tasks the cells depend on), {args.repeats} runs "
             "of each side alternating, each from cold caches (new results folder, in-memory "
             "caches cleared in this process and on the workers). CPU s: this process's CPU "
             "time, plus the workers' for the cluster. Every cluster run's cells were checked "
             "bitwise equal to the in-process run's (every variable of every cell).", "",
             "| run | where | wall s | cells/min | CPU s |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {r} | {w} | {wall:.1f} | {60 * n / wall:.1f} | {cpu:.1f} |"
              for w, r, wall, cpu in demo_rows]
    inproc = [wall for w, _, wall, _ in demo_rows if w == "in-process"]
    clus = [wall for w, _, wall, _ in demo_rows if w != "in-process"]
    ratios = [a / b for a, b in zip(inproc, clus)]
    lines += ["", "Throughput of the cluster over in-process, run by run (in-process wall / "
              "cluster wall of the same repeat): " + ", ".join(f"{x:.2f}x" for x in ratios)
              + f"; median {np.median(ratios):.2f}x."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trivial", type=int, default=40)
    parser.add_argument("--n-work", type=int, default=12)
    parser.add_argument("--work", type=float, default=1.0, help="seconds per work cell")
    parser.add_argument("--demo", type=int, default=0, help="also time the first K demo cells")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side (demo)")
    parser.add_argument("--threads", type=int, default=0,
                        help="with --demo: torch threads per cell, both sides (default: the "
                        "config's, 2)")
    parser.add_argument("--per-seed", type=int, default=0,
                        help="with --demo: the first this many cells of each seed instead")
    parser.add_argument("--paper", type=int, default=0,
                        help="with --demo: the preble2026 grid at the demo's budget with this "
                        "many seeds (paper_config) instead of the demo grid")
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

    if trivial:
        row("trivial", len(trivial), "in-process", timed(trivial, **fns))
    if work:
        row("work", len(work), "in-process", timed(work, **fns))

    import importlib

    import distributed

    t0 = time.perf_counter()
    cluster = local_cluster(args.workers)
    client = distributed.Client(cluster)
    client.run(importlib.import_module, "neurovar.experiment.executor")  # workers import neurovar
    if args.demo:
        importlib.import_module("neurovar.experiment.cell")
        client.run(importlib.import_module, "neurovar.experiment.cell")
    startup = time.perf_counter() - t0
    demo_rows: list[tuple[str, int, float, float]] = []
    try:
        latency = float("nan")
        if trivial:
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
                row("trivial", len(trivial), where,
                    timed(trivial, scheduler=client, write=write, **fns))
        if work:
            row("work", len(work), f"LocalCluster {args.workers} workers, write=worker",
                timed(work, scheduler=client, **fns))
        if args.demo:
            demo_rows = demo_runs(client, args.demo, args.repeats, args.workers,
                                  args.per_seed, args.threads, args.paper)
    finally:
        client.close()
        cluster.close()

    by = {(k, w): s for k, _, w, s, _, _ in rows}
    n_triv = len(trivial)
    overhead = {  # worker-seconds per cell beyond the in-process cost of the same cell
        w: (args.workers * by[("trivial", w)] - by[("trivial", "in-process")]) / n_triv
        for (k, w) in by if k == "trivial" and w != "in-process"
    }
    load = os.getloadavg()
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
        lines += demo_table(demo_rows, args)
    lines += ["", f"Load average at the end of the run (1, 5, 15 min): "
              f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on {cores} cores."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
