"""Recording speed: per-trial loop vs trials folded at the input vs branching at the noise site.

Run: ``python benchmarks/bench_record.py [--threads 1] [--repeats 5]`` (writes
``benchmarks/results/record.md``; the "## Notes" section of an existing file is kept).

Three ways to record ``T`` trials of ``N`` stimuli from a model with noise at one layer:
- ``loop``: the naive baseline, ``T`` forward passes over all stimuli (batched over stimuli);
- ``fold``: ``record_activations(branch="input")``, trials folded into the batch at the input;
- ``branch``: ``record_activations(branch="auto")``, prefix once per stimulus, trials from the
  noise site on.

``limit`` is the best a branched recording can do against the loop: the loop's time over
that of one forward pass of all stimuli branched into all trials at the noise site (the
prefix once, the noise and the rest of the network ``T`` times), with no chunking, probe
passes or bookkeeping. Every candidate runs round-robin ``--repeats`` times; the table gives the median
and the range (min-max) of the CPU time of the process, and the speed-up of medians.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision

from neurovar.models import SmallCNN
from neurovar.noise import IsotropicNoise, inject_noise
from neurovar.record import record_activations
from neurovar.record._forward import _forward_trials

OUT = Path(__file__).resolve().parent / "results" / "record.md"


@torch.no_grad()
def loop(model, x, layer, n_trials, per_pass):
    out = []
    mod = model.get_submodule(layer)
    h = mod.register_forward_hook(lambda m, i, o: out.append(o.flatten(1)))
    try:
        for _ in range(n_trials):
            for s in range(0, len(x), per_pass):
                model(x[s : s + per_pass])
    finally:
        h.remove()
    return out


@torch.no_grad()
def floor(model, x, layer, site, n_trials):
    """The compute floor of branching: one forward pass of all stimuli, branched into all
    trials at ``site`` (no chunking, no probe passes, no bookkeeping, no xarray)."""
    return _forward_trials(model, x, [layer], n_trials, (site, "output"))


def timed(fns: dict, repeats: int) -> dict:
    """CPU time of this process per call (``time.process_time``), round-robin: on a shared,
    oversubscribed machine it counts the work done, not the time spent waiting for a core."""
    times = {name: [] for name in fns}
    for fn in fns.values():  # one untimed round: the first call of each pays its warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
    return times


def case(label, model, x, site, record_layer, n_trials, batch_size, loop_pass, repeats):
    """Time loop / fold / branch; ``batch_size`` is record_activations' (samples per pass),
    ``loop_pass`` the stimuli per pass of the loop."""
    model.eval()
    kw = dict(
        layers=[record_layer],
        n_trials=n_trials,
        rng=0,
        progress=False,
        device="cpu",
    )
    if batch_size is not None:  # None: the default call (batch_size="auto")
        kw["batch_size"] = batch_size
    with inject_noise(model, {site: IsotropicNoise(0.1, rng=0)}):
        tree = record_activations(model, x, **kw)  # warm-up (imports, allocator)
        # the batch size used (code before batch_size="auto": no attr, the default was 512)
        used = tree.attrs.get("batch_size", 512 if batch_size is None else batch_size)
        fns = {
            "loop": lambda: loop(model, x, record_layer, n_trials, loop_pass),
            "floor": lambda: floor(model, x, record_layer, site, n_trials),
            "fold": lambda: record_activations(model, x, branch="input", **kw),
            "branch": lambda: record_activations(model, x, branch="auto", **kw),
        }
        t = timed(fns, repeats)
    med = {k: statistics.median(v) for k, v in t.items()}
    limit = med["floor"]
    return {
        "label": label,
        "n": len(x),
        "trials": n_trials,
        "site": site,
        "batch_size": str(batch_size) if batch_size is not None else f"default: {used}",
        "loop_pass": loop_pass,
        "times": t,
        "med": med,
        "limit": limit,
    }


def fmt(values):
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    digits = torch.rand(256, 1, 8, 8, generator=g)
    small = torch.rand(500, 1, 8, 8, generator=g)
    images = torch.rand(32, 3, 32, 32, generator=g)
    r = args.repeats
    resnet = lambda: torchvision.models.resnet18(num_classes=10)  # noqa: E731
    # not reported: the first case of a process ran slower than the same case later (its
    # allocations and caches are cold), which would penalise whichever row comes first
    case("SmallCNN 8x8", SmallCNN(), digits, "relu3", "relu3", 50, None, 256, r)
    rows = [
        # issue 22: 50 trials x 256 stimuli, noise at the last hidden layer: the default call
        # (batch_size="auto"), the old default 512, and one pass
        case("SmallCNN 8x8", SmallCNN(), digits, "relu3", "relu3", 50, None, 256, r),
        case("SmallCNN 8x8", SmallCNN(), digits, "relu3", "relu3", 50, 512, 256, r),
        case("SmallCNN 8x8", SmallCNN(), digits, "relu3", "relu3", 50, 256 * 50, 256, r),
        case("SmallCNN 8x8", SmallCNN(), small, "relu2", "fc2", 50, None, 20 * 50, r),
        case("SmallCNN 8x8", SmallCNN(), small, "relu2", "fc2", 50, 20 * 50, 20 * 50, r),
        case("ResNet-18 32x32", resnet(), images, "layer3", "fc", 16, None, 8 * 16, r),
        case("ResNet-18 32x32", resnet(), images, "layer3", "fc", 16, 8 * 16, 8 * 16, r),
        case("ResNet-18 32x32", resnet(), images, "layer1", "fc", 16, None, 8 * 16, r),
        case("ResNet-18 32x32", resnet(), images, "layer1", "fc", 16, 8 * 16, 8 * 16, r),
    ]
    lines = [
        "# Recording speed (CPU)",
        "",
        f"Command: `python benchmarks/bench_record.py --threads {args.threads} --repeats "
        f"{args.repeats}`",
        "",
        f"Machine: {platform.machine()} CPU, 2 cores shared with other jobs, torch "
        f"{torch.__version__} with {args.threads} thread(s), no GPU. CPU seconds of the process "
        f"(`time.process_time`; wall times on this oversubscribed machine mostly measure the "
        f"wait for a core): median (min-max) of {args.repeats} round-robin repeats. `loop` = T forward passes over all stimuli "
        "(`loop pass` stimuli per pass); `fold` = trials folded at the input; `branch` = prefix "
        'once per stimulus, trials from the noise site on (the default, `branch="auto"`); '
        "`batch_size` = record_activations' samples (stimuli x trials) per pass (`default: n`: "
        "the call without batch_size, which used n). `limit` = "
        "the loop over the compute floor of branching: one forward pass of all stimuli "
        "branched into all T trials at the noise site, with no chunking, probe passes or "
        "bookkeeping (the prefix once, the noise and the rest of the network T times).",
        "",
        "| model | stimuli | trials | noise at | batch_size | loop pass | loop (s) | fold (s) "
        "| branch (s) | branch vs loop | limit vs loop |",
        "|---|---:|---:|---|---:|---:|---|---|---|---:|---:|",
    ]
    for row in rows:
        t, med = row["times"], row["med"]
        lines.append(
            f"| {row['label']} | {row['n']} | {row['trials']} | {row['site']} | "
            f"{row['batch_size']} | {row['loop_pass']} | {fmt(t['loop'])} | {fmt(t['fold'])} | "
            f"{fmt(t['branch'])} | {med['loop'] / med['branch']:.1f}x | "
            + (f"{med['loop'] / row['limit']:.1f}x |" if row["limit"] > 0 else "n/a |")
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
