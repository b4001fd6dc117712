"""Benchmark: pooled noise correlation / covariance against a naive loop and the compute floor.

Compares, in one run and on the same data (S stimuli x T trials x N units, float64):

* ``neurovar.stats.noise_correlation`` and ``noise_covariance`` on a numpy-backed DataArray;
* the same on a dask-backed DataArray generated lazily in stimulus chunks (never materialised),
  to show that memory is bounded by the chunk size;
* the naive per-stimulus loop: ``np.corrcoef`` of each stimulus' (T, N) block, averaged;
* the compute floor: one matrix product ``R.T @ R`` of the already-computed pooled residual
  matrix R (S*T x N), i.e. the least work any pooled estimator must do.

Wall time is the best of ``--repeats`` interleaved rounds (time.perf_counter), and the ratio
to the floor is the median over rounds of the within-round ratio; peak memory is the peak of
Python-tracked allocations (tracemalloc, which numpy reports to) during one extra run, beyond
what was allocated before the call (so the input array itself is not counted).

Run: ``python benchmarks/bench_noise_correlation.py`` (defaults S=200, T=50, N=2000); the
results are written to ``benchmarks/results/noise_correlation.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from neurovar.stats import noise_correlation, noise_covariance

HERE = Path(__file__).resolve().parent


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_memory(fn: Callable[[], object]) -> float:
    """Peak traced allocation (MiB) above the level at the start of the call."""
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (peak - base) / 2**20


def naive_loop(x: np.ndarray) -> np.ndarray:
    """Average of per-stimulus Pearson noise correlations, one np.corrcoef per stimulus."""
    acc = np.zeros((x.shape[2], x.shape[2]))
    for s in range(x.shape[1]):
        acc += np.corrcoef(x[:, s, :], rowvar=False)
    return acc / x.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-stimuli", type=int, default=200)
    parser.add_argument("--n-trials", type=int, default=50)
    parser.add_argument("--n-units", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dask-chunk", type=int, default=20, help="stimuli per dask chunk")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "noise_correlation.md")
    args = parser.parse_args()
    s, t, n = args.n_stimuli, args.n_trials, args.n_units

    rng = np.random.default_rng(0)
    x = rng.standard_normal((t, s, n)) + rng.standard_normal((1, s, n)) * 3
    da = xr.DataArray(x, dims=("trial", "stimulus", "unit"))
    lazy = xr.DataArray(
        dsa.random.default_rng(0).standard_normal((t, s, n), chunks=(t, args.dask_chunk, n)),
        dims=("trial", "stimulus", "unit"),
    )
    resid = (x - x.mean(axis=0)).reshape(-1, n)

    cases: dict[str, Callable[[], object]] = {
        "floor: one `R.T @ R` of the pooled residuals": lambda: resid.T @ resid,
        "neurovar `noise_covariance` (numpy)": lambda: noise_covariance(da),
        "neurovar `noise_correlation` (numpy)": lambda: noise_correlation(da),
        f"neurovar `noise_correlation` (dask, {args.dask_chunk} stimuli/chunk)": lambda: (
            noise_correlation(lazy)
        ),
        "naive per-stimulus `np.corrcoef` loop": lambda: naive_loop(x),
    }
    # correctness: our covariance equals the floor's product divided by the dof
    np.testing.assert_allclose(noise_covariance(da).values, resid.T @ resid / (s * t - s))

    # Rounds interleave the methods so that load from other processes on a shared machine
    # hits all of them alike; each method's ratio to the floor is taken within a round.
    names = list(cases)
    times = {name: [] for name in names}
    with dask.config.set(scheduler="threads"):
        for fn in cases.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name in names:
                times[name].append(best_time(cases[name], 1))
        rows = []
        for name in names:
            ratio = np.median(np.asarray(times[name]) / np.asarray(times[names[0]]))
            rows.append((name, min(times[name]), ratio, peak_memory(cases[name])))
        # memory bound: 5x more stimuli (never materialised) should need about the same memory
        big = xr.DataArray(
            dsa.random.default_rng(1).standard_normal(
                (t, 5 * s, n), chunks=(t, args.dask_chunk, n)
            ),
            dims=("trial", "stimulus", "unit"),
        )
        big_name = (
            f"neurovar `noise_correlation` (dask, S={5 * s}: {5 * x.nbytes / 2**20:.0f} MiB "
            "never in memory; one run)"
        )
        t0 = time.perf_counter()
        mem = peak_memory(lambda: noise_correlation(big))
        big_sec = time.perf_counter() - t0
        rows.append((big_name, big_sec, big_sec / min(times[names[0]]), mem))

    input_mib = x.nbytes / 2**20
    lines = [
        "# Noise correlation / covariance benchmark",
        "",
        f"Data: S={s} stimuli x T={t} trials x N={n} units, float64 "
        f"(input {input_mib:.0f} MiB; pooled residual matrix {resid.nbytes / 2**20:.0f} MiB, "
        f"one N x N matrix {n * n * 8 / 2**20:.0f} MiB).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs "
        f"(shared with other jobs while this ran), numpy {np.__version__}, "
        f"Python {platform.python_version()}.",
        f"Command: `python benchmarks/bench_noise_correlation.py --n-stimuli {s} --n-trials {t} "
        f"--n-units {n} --repeats {args.repeats} --dask-chunk {args.dask_chunk}`",
        "",
        "| method | best wall time (s) | x floor (median of paired rounds) "
        "| peak traced memory (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for name, sec, ratio, mem in rows:
        lines.append(f"| {name} | {sec:.3f} | {ratio:.2f} | {mem:.0f} |")
    lines += [
        "",
        "Peak memory is what the call allocates beyond its input (tracemalloc); the numpy "
        "input itself is not counted, the dask input is generated chunk by chunk inside the "
        "call. The naive loop estimates a slightly different quantity (mean of per-stimulus "
        "correlations rather than the correlation of pooled z-scores). The S=5x row is timed "
        "once, under tracemalloc, and its ratio is to the best floor time of the S run "
        "(it does 5x the work).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
