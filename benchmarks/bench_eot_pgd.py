"""EOT-PGD (k=8, 10 steps): neurovar PGD vs torchattacks.EOTPGD on the same stochastic model.

Both attack the model in train mode (dropout on): torchattacks needs
``set_model_training_mode(model_training=True, dropout_training=True)`` -- with
``model_training=True`` alone it still switches every Dropout module to eval. Compares wall
time (median of repeats) and attack strength (worst-case accuracy over 10 evaluations), and
measures neurovar's EOT draws looped (eot_batch=1), chunked (4) and fully folded (8) into the
batch dimension, to choose the CPU default.

Run: ``python benchmarks/bench_eot_pgd.py [--threads 1] [--repeats 3]``; writes
``benchmarks/results/eot_pgd.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torchattacks
from sklearn.datasets import load_digits
from torch import nn

from neurovar.perturb import PGD, robust_accuracy

OUT = Path(__file__).resolve().parent / "results" / "eot_pgd.md"


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10)
    )


def cnn(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(steps):
        idx = torch.arange(i * 128, (i + 1) * 128) % x.shape[0]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model


def timed_interleaved(fns: dict, repeats: int) -> dict:
    """Run the candidates round-robin ``repeats`` times (fair under changing machine load);
    return name -> (min time, median time, last output)."""
    times = {name: [] for name in fns}
    outs = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {n: (min(t), statistics.median(t), outs[n]) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    data = load_digits()
    xd = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    yd = torch.tensor(data.target)
    cases = {
        "MLP, digits 1x8x8": (
            train(mlp(), xd[:-300], yd[:-300], 600),
            xd[-args.n :],
            yd[-args.n :],
        ),
        "CNN, digits 1x8x8": (
            train(cnn(1), xd[:-300], yd[:-300], 300),
            xd[-args.n :],
            yd[-args.n :],
        ),
        "CNN, random 3x32x32, batch 64 (timing only)": (
            cnn(3),
            torch.rand(64, 3, 32, 32),
            torch.randint(0, 10, (64,)),
        ),
    }
    eps, steps, k = 0.1, 10, 8
    alpha = eps / 4
    rows = []
    for case, (model, x, y) in cases.items():
        model = model.to(device).train()
        x, y = x.to(device), y.to(device)

        def ta(model=model, x=x, y=y):
            atk = torchattacks.EOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_iter=k)
            atk.set_model_training_mode(
                model_training=True, batchnorm_training=True, dropout_training=True
            )
            return atk(x, y)

        runs = {"torchattacks EOTPGD (loop)": ta}
        for b in (1, 4, 8):
            runs[f"neurovar PGD eot_batch={b}"] = lambda b=b, model=model, x=x, y=y: PGD(
                model, eps=eps, alpha=alpha, steps=steps, eot_samples=k, eot_batch=b, rng=0
            )(x, y)
        results = timed_interleaved(runs, args.repeats if x.shape[-1] <= 8 else 3)
        base = results["torchattacks EOTPGD (loop)"][0]
        for name, (t_min, t_med, adv) in results.items():
            res = robust_accuracy(model, None, adv, y, n_evaluations=10, rng=1)
            with torch.no_grad():
                mean_acc = float(
                    torch.stack([(model(adv).argmax(1) == y).float().mean() for _ in range(10)])
                    .mean()
                    .cpu()
                )
            rows.append((case, name, t_min, t_med, base / t_min, mean_acc, float(res.accuracy)))
            print(rows[-1], flush=True)
    lines = [
        "# EOT-PGD: neurovar vs torchattacks.EOTPGD",
        "",
        f"Command: `python benchmarks/bench_eot_pgd.py --threads {args.threads} "
        f"--repeats {args.repeats} --n {args.n}`",
        "",
        f"Device: {device} ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__}, torch threads = {args.threads}, torchattacks "
        f"{torchattacks.__version__}. Batch {args.n}, eps = {eps} (L-inf), alpha = {alpha}, "
        f"{steps} steps, k = {k} EOT draws; model in train mode (dropout on) for both "
        "libraries. Candidates run round-robin; time = best (min) and median over repeats (shared, "
        "loaded 2-core machine: medians are noisy, the min is the cleaner estimate). Accuracy on "
        "the adversarial images: mean over 10 evaluations, and worst case (correct in all 10). "
        "Accuracy is meaningless for the untrained 32x32 CNN (timing only).",
        "",
        "| model | attack | min time (s) | median (s) | speed vs torchattacks (min) | mean acc |"
        " worst-case acc |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case, name, t, tm, speed, macc, wacc in rows:
        lines.append(
            f"| {case} | {name} | {t:.3f} | {tm:.3f} | {speed:.2f}x | {macc:.3f} | {wacc:.3f} |"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    marker = "\n## Notes"
    if OUT.exists() and marker in OUT.read_text():
        text += marker + OUT.read_text().split(marker, 1)[1]
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
