"""Coverage of ``neurovar.cortex.compare``'s intervals in simulation, per ``ci_method``.

Not a speed benchmark: how often nominal 95% intervals contain the true value, for a
spectrum statistic (participation ratio of Gaussian noise with a power-law covariance, whose
plug-in estimate is biased by the finite number of trials) and a unit average (mean Fano
factor of a population of units, unbiased).

Run: ``python benchmarks/coverage_compare_intervals.py [--n-sets 100]``; writes
``benchmarks/results/compare_interval_coverage.md``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from neurovar.cortex import compare

METHODS = ("percentile", "basic", "BCa")


def _gaussian(rng, chol, n_stimuli, n_trials):
    noise = rng.standard_normal((n_trials, n_stimuli, chol.shape[0])) @ chol.T
    means = rng.uniform(0, 5, size=(1, n_stimuli, chol.shape[0]))
    return xr.DataArray(noise + means, dims=("trial", "stimulus", "unit"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-sets", type=int, default=100)
    parser.add_argument("--n-bootstrap", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n_units, n_stimuli, n_trials = 30, 40, 8
    lam = 1.0 / np.arange(1, n_units + 1)
    q, _ = np.linalg.qr(rng.standard_normal((n_units, n_units)))
    chol = np.linalg.cholesky((q * lam) @ q.T)
    true_pr = lam.sum() ** 2 / np.sum(lam**2)
    fano_population = np.linspace(0.6, 1.6, 200)
    hits = {(s, m): 0 for s in ("participation_ratio", "fano_factor") for m in METHODS}
    below = dict.fromkeys(METHODS, 0)
    t0 = time.time()
    for k in range(args.n_sets):
        da = _gaussian(rng, chol, n_stimuli, n_trials)
        a = rng.choice(fano_population, size=15)
        counts = a * rng.poisson(rng.uniform(5, 15, size=(1, 10, 15)) / a, size=(20, 10, 15))
        ff_da = xr.DataArray(counts, dims=("trial", "stimulus", "unit"))
        for m in METHODS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pr = compare(da, None, statistics=["participation_ratio"], ci_method=m,
                             n_bootstrap=args.n_bootstrap, rng=k).iloc[0]  # fmt: skip
                ff = compare(ff_da, None, statistics=["fano_factor"], ci_method=m,
                             n_bootstrap=args.n_bootstrap, rng=k).iloc[0]  # fmt: skip
            hits[("participation_ratio", m)] += bool(pr.ci_low <= true_pr <= pr.ci_high)
            below[m] += bool(pr.ci_high < true_pr)
            hits[("fano_factor", m)] += bool(ff.ci_low <= fano_population.mean() <= ff.ci_high)
    elapsed = time.time() - t0
    lines = [
        "# Coverage of compare()'s nominal 95% intervals in simulation",
        "",
        f"{args.n_sets} simulated data sets, {args.n_bootstrap} bootstrap resamples; "
        f"`python benchmarks/coverage_compare_intervals.py --n-sets {args.n_sets}` "
        f"({elapsed:.0f} s on this machine).",
        "",
        f"- participation ratio: {n_units} units, Gaussian noise with eigenvalues 1/k, "
        f"{n_stimuli} stimuli x {n_trials} trials (true PR {true_pr:.2f}); resampled over "
        "pooled residual trials.",
        "- Fano factor: 15 units drawn from a population with Fano factors 0.6-1.6 "
        f"(mean {fano_population.mean():.2f}), 10 stimuli x 20 trials; resampled over units.",
        "",
        "| ci_method | participation ratio | (interval below the truth) | Fano factor |",
        "|---|---|---|---|",
    ]
    for m in METHODS:
        lines.append(
            f"| {m} | {hits[('participation_ratio', m)] / args.n_sets:.2f} | "
            f"{below[m] / args.n_sets:.2f} | {hits[('fano_factor', m)] / args.n_sets:.2f} |"
        )
    out = Path(__file__).parent / "results" / "compare_interval_coverage.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
