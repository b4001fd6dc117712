"""Does fusing APGD's loss and gradient passes change its robust accuracy on a noisy network?

On a deterministic network the fused order and ART's order give bit-identical adversarial
examples (``tests/perturb/test_apgd.py``). On a stochastic one they differ only in which noise
draw a loss or gradient comes from, so the question is statistical: this runs both orders with
the same seeds on the benchmark's noisy PrebleCNN (``bench_paper_protocol.py``: low-rank
full-covariance noise at tanh1, tr 2 N) and reports the paired difference of the robust
accuracy (10-pass mean-logit prediction) with its standard error.

Run: ``python benchmarks/bench_apgd_fused_accuracy.py [--seeds 8] [--n 128] [--steps 100]
[--restarts 1]`` (by default one random start per run: one APGD trajectory per image).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from neurovar.datasets import load_mnist_embedded
from neurovar.models import MeanLogits, PrebleCNN, train
from neurovar.noise import LowRankNoise, inject_noise
from neurovar.perturb import APGD


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_mnist_embedded()
    model = PrebleCNN(rng=0)
    train(model, data, epochs=2, lr=1e-3, rng=0, progress=False)
    model.eval()
    x, y = data.x_test[: args.n], data.y_test[: args.n]
    f = np.random.default_rng(0).standard_normal((3136, 199)) * 0.05
    scale = 2.0 * 3136 / np.trace(f @ f.T + 1e-4 * np.eye(3136))
    inject_noise(model, {"tanh1": LowRankNoise(f * np.sqrt(scale), 1e-4 * scale, rng=0)})
    defended = MeanLogits(model, 10, branch_at="tanh1")
    res: dict[bool, list[float]] = {True: [], False: []}
    for s in range(args.seeds):
        for fused in (True, False):
            xa = APGD(model, eps=0.1, steps=args.steps, restarts=args.restarts, fused=fused,
                      rng=100 + s,
                      progress=False)(x, y)
            with torch.no_grad():
                res[fused].append(float((defended(xa).argmax(1) == y).float().mean()))
        print(f"seed {s}: fused {res[True][-1]:.3f}, ART order {res[False][-1]:.3f}", flush=True)
    d = np.array(res[True]) - np.array(res[False])
    for fused in (True, False):
        print(f"{'fused' if fused else 'ART order'}: mean {np.mean(res[fused]):.3f}, "
              f"sd {np.std(res[fused], ddof=1):.3f}")
    print(f"fused - ART order, paired: {d.mean():+.4f} (se {d.std(ddof=1) / np.sqrt(d.size):.4f}"
          f", {args.seeds} seeds, {args.restarts} random starts)")


if __name__ == "__main__":
    main()
