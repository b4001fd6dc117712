"""EOT-PGD (k=8, 10 steps): neurovar PGD vs torchattacks.EOTPGD on the same stochastic model.

Both attack the model in train mode (dropout on): torchattacks needs
``set_model_training_mode(model_training=True, dropout_training=True)`` -- with
``model_training=True`` alone it still switches every Dropout module to eval and silently
attacks the deterministic twin. Compares wall time (min and median of interleaved repeats) and
attack strength: robust accuracy (correct in all 10 evaluations, as ``evaluate_robustness``
counts) and mean accuracy over 10 evaluations, each averaged over ``--seeds`` attack seeds.

Run: ``python benchmarks/bench_eot_pgd.py [--threads 1] [--repeats 7] [--n 512] [--seeds 3]``;
writes ``benchmarks/results/eot_pgd.md`` (the "## Notes" section of an existing file is kept).
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
    return name -> (min wall time, median wall time, min CPU time, median CPU time, last
    output).

    The CPU time of this process (``time.process_time``) is what to compare on a shared,
    oversubscribed machine: with one torch thread it counts the work done, not the time spent
    waiting for a core.
    """
    times = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    outs = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {
        n: (min(t), statistics.median(t), min(cpu[n]), statistics.median(cpu[n]), outs[n])
        for n, t in times.items()
    }


def strength(model: nn.Module, adv: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(robust accuracy: correct in all 10 evaluations, mean accuracy over the 10)."""
    res = robust_accuracy(model, None, adv, y, n_evaluations=10, rng=1)
    return float(res.accuracy), float(res.correct_fraction.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="no 3x32x32 timing case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    data = load_digits()
    xd = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    yd = torch.tensor(data.target)
    n_train = xd.shape[0] - args.n
    cases = {
        "MLP, digits 1x8x8": (
            train(mlp(), xd[:n_train], yd[:n_train], 600),
            xd[n_train:],
            yd[n_train:],
        ),
        "CNN, digits 1x8x8": (
            train(cnn(1), xd[:n_train], yd[:n_train], 300),
            xd[n_train:],
            yd[n_train:],
        ),
    }
    if not args.skip_large:
        cases["CNN, random 3x32x32, batch 64 (timing only)"] = (
            cnn(3),
            torch.rand(64, 3, 32, 32),
            torch.randint(0, 10, (64,)),
        )
    eps, steps, k = 0.1, 10, 8
    alpha = eps / 4
    rows = []
    for case, (model, x, y) in cases.items():
        model = model.to(device).train()
        x, y = x.to(device), y.to(device)

        def ta(seed=0, model=model, x=x, y=y):
            torch.manual_seed(seed)  # torchattacks draws from the global RNG
            atk = torchattacks.EOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_iter=k)
            # without dropout_training=True torchattacks attacks the deterministic twin
            atk.set_model_training_mode(
                model_training=True, batchnorm_training=True, dropout_training=True
            )
            return atk(x, y)

        def nv(seed=0, model=model, x=x, y=y):
            return PGD(
                model, eps=eps, alpha=alpha, steps=steps, eot_samples=k, rng=seed, progress=False
            )(x, y)

        runs = {"torchattacks EOTPGD": ta, "neurovar PGD": nv}
        timing = x.shape[-1] > 8
        results = timed_interleaved(runs, 3 if timing else args.repeats)
        base = results["torchattacks EOTPGD"][0]
        base_med = results["torchattacks EOTPGD"][1]
        base_cpu = results["torchattacks EOTPGD"][2]
        base_cpu_med = results["torchattacks EOTPGD"][3]
        for name, (t_min, t_med, c_min, c_med, _adv) in results.items():
            if timing:
                rob = mean = float("nan")
            else:
                s = [strength(model, runs[name](seed=100 + i), y) for i in range(args.seeds)]
                rob = statistics.mean(v[0] for v in s)
                mean = statistics.mean(v[1] for v in s)
            rows.append(
                (
                    case,
                    name,
                    t_min,
                    t_med,
                    base / t_min,
                    base_med / t_med,
                    c_min,
                    c_med,
                    base_cpu / c_min,
                    base_cpu_med / c_med,
                    mean,
                    rob,
                )
            )
            print(rows[-1], flush=True)
    lines = [
        "# EOT-PGD: neurovar vs torchattacks.EOTPGD",
        "",
        f"Command: `python benchmarks/bench_eot_pgd.py --threads {args.threads} "
        f"--repeats {args.repeats} --n {args.n} --seeds {args.seeds}"
        f"{' --skip-large' if args.skip_large else ''}`",
        "",
        f"Device: {device} ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__}, torch threads = {args.threads}, torchattacks "
        f"{torchattacks.__version__}. {args.n} digits, eps = {eps} (L-inf), alpha = {alpha}, "
        f"{steps} steps, k = {k} EOT draws; model in train mode (dropout on) for both "
        "libraries (torchattacks: `set_model_training_mode(model_training=True, "
        "dropout_training=True)`). Candidates run round-robin; time = best (min) and median "
        "over repeats, and the min and median CPU time of the process (`time.process_time`; on a shared, "
        "oversubscribed machine the CPU time is the estimate to trust, wall times include "
        "waiting for a core). Strength on the adversarial images, mean over "
        f"{args.seeds} attack seeds: robust accuracy (correct in all 10 evaluations, as "
        "`evaluate_robustness` counts; lower = stronger attack) and mean accuracy over the 10 "
        "evaluations. The untrained 32x32 CNN is timing only.",
        "",
        "| model | attack | min wall (s) | median wall (s) | speed (min / median wall) "
        "| min CPU (s) | median CPU (s) | speed (min / median CPU) | mean acc | robust acc |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, name, t, tm, speed, speed_med, c, cm, cspeed, cspeed_med, macc, wacc in rows:
        lines.append(
            f"| {case} | {name} | {t:.3f} | {tm:.3f} | {speed:.2f}x / {speed_med:.2f}x "
            f"| {c:.3f} | {cm:.3f} | {cspeed:.2f}x / {cspeed_med:.2f}x | {macc:.3f} | {wacc:.3f} |"
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
