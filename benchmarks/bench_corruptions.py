"""The 15 corruptions on batches of 32x32 RGB images: neurovar (batched torch) vs the
``imagecorruptions`` package (numpy/cv2/skimage, image by image), side by side.

imagecorruptions implements the ImageNet-C parameters; for a like-for-like comparison neurovar's
kernels are also timed with *those* parameters ("same params"), besides the public
``corrupt(images, name, severity=3)`` with the CIFAR-10-C parameters. imagecorruptions 1.1.2
needs three shims to run today (``pkg_resources``, ``np.float_``, skimage ``multichannel``);
they do not change its work.

Both sides run in the same process, interleaved corruption by corruption, ``--runs`` times per
batch size, so that a load spike on a shared machine hits both; every run gives one speedup per
corruption, and the results file reports min / median / max over the runs.

Run: ``python benchmarks/bench_corruptions.py [--threads 1] [--n 64 256] [--runs 5]``; writes
``benchmarks/results/corruptions.md`` (the part above its ``## Notes``) and
``benchmarks/results/corruptions.png``. ``--only NAME [NAME ...]`` times only those corruptions
and prints the table without writing the results file (for quick iterations). ``--paper N`` instead times
:func:`neurovar.perturb.corrupt_paper` on N MNIST-like digits against the paper's pipeline
(``imagecorruptions`` image by image) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from neurovar.perturb import CORRUPTIONS, corrupt

RESULTS = Path(__file__).resolve().parent / "results"

# imagecorruptions' severity-3 parameters (ImageNet-C), fed to neurovar's kernels
IC_SEV3 = {
    "gaussian_noise": 0.18,
    "shot_noise": 12,
    "impulse_noise": 0.09,
    "defocus_blur": (6, 0.5),
    "glass_blur": (1, 2, 3),
    "motion_blur": (15, 8),
    "zoom_blur": tuple(np.arange(1, 1.21, 0.02)),
    "snow": (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    "frost": (0.7, 0.7),
    "fog": (2.5, 1.7),
    "brightness": 0.3,
    "contrast": 0.2,
    "elastic_transform": (250 * 0.085 * 0.16 / 32, 0.01, 0.0),
    "pixelate": 0.4,
    "jpeg_compression": 15,
}


def imagecorruptions_module():
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda pkg, path: os.path.join(
                os.path.dirname(sys.modules[pkg].__file__), path
            )
            sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):
        setattr(np, "float_", np.float64)  # noqa: B010 (numpy 2 removed it)
    import imagecorruptions.corruptions as icc
    import skimage.filters

    gaussian = skimage.filters.gaussian

    def compat(*args, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return gaussian(*args, **kwargs)

    icc.gaussian = compat
    return icc


def images(n: int) -> np.ndarray:
    imgs = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        im = imgs[i % 2]
        r, c = rng.integers(0, im.shape[0] - 32), rng.integers(0, im.shape[1] - 32)
        out.append(im[r : r + 32, c : c + 32])
    return np.stack(out)


def best_of(fn, repeats: int) -> float:
    """Least CPU time of the process (``time.process_time``) over ``repeats`` calls of ``fn``:
    on a shared machine, CPU time does not count the time this process waits for a core."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def one_run(
    icc, n: int, inner: int, run: int, names: list[str] | None = None
) -> dict[str, tuple[float, float, float]]:
    """name -> (reference s, neurovar same-params s, neurovar corrupt s) for one run, over
    ``names`` (default: all 15)."""
    pil = [Image.fromarray(p) for p in images(n)]
    x = torch.tensor(images(n), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    np.random.seed(run)  # noqa: NPY002 - the reference draws from numpy's global RNG
    out = {}
    for name in names or CORRUPTIONS:
        fn = getattr(icc, name)
        t_ref = best_of(lambda fn=fn: [np.uint8(fn(p, 3)) for p in pil], 1)
        kernel = CORRUPTIONS[name].kernel
        gen = torch.Generator().manual_seed(run)
        t_same = best_of(
            lambda kernel=kernel, name=name, gen=gen: kernel(x, IC_SEV3[name], gen).clamp(0, 1),
            inner,
        )
        t_cifar = best_of(lambda name=name: corrupt(x, name, severity=3, rng=run), inner)
        out[name] = (t_ref, t_same, t_cifar)
    return out


def paper_table(n: int, runs: int) -> str:
    """``corrupt_paper`` on n MNIST-like digits vs the paper's ``_corrupt`` image by image."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "perturb"))
    import skimage
    import torchvision.transforms.v2 as v2
    from test_imagenet_c import _digits  # MNIST-like digits from sklearn's 8x8 digits

    from neurovar.perturb import PAPER_CORRUPTIONS, corrupt_paper

    imagecorruptions_module()
    from imagecorruptions import corrupt as ic_corrupt

    def paper_one(img, name):  # data_utils.py lines 138-156
        f = np.pad(img.numpy(), ((0,), (2,), (2,)), constant_values=(0, 0)).squeeze()
        c = ic_corrupt(skimage.img_as_ubyte(f), severity=3, corruption_name=name)[2:30, 2:30, :]
        r = torch.from_numpy(skimage.img_as_float32(c)).permute(2, 0, 1)
        return v2.Grayscale()(r) if name in ("impulse_noise", "gaussian_noise") else r[0]

    x = _digits(min(n, 1797))
    x = x.repeat(-(-n // len(x)), 1, 1, 1)[:n]
    lines = [
        f"| corruption ({n} digits, severity 3) | paper's pipeline (ms) | corrupt_paper (ms) | "
        "speedup |",
        "|---|---:|---:|---:|",
    ]
    for name in PAPER_CORRUPTIONS:
        ref, ours = [], []
        for run in range(runs):
            np.random.seed(run)  # noqa: NPY002 - the reference draws from numpy's global RNG
            t0 = time.process_time()
            for img in x:
                paper_one(img, name)
            ref.append(time.process_time() - t0)
            ours.append(best_of(lambda name=name: corrupt_paper(x, name, severity=3, rng=0), 1))
        sp = [a / b for a, b in zip(ref, ours, strict=True)]
        ms = ([t * 1e3 for t in ref], [t * 1e3 for t in ours])
        lines.append(f"| {name} | {_mmm(ms[0])} | {_mmm(ms[1])} | {_mmm(sp)}x |")
    return "\n".join(lines)


def _mmm(values) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--inner", type=int, default=3, help="neurovar: best of this many calls")
    parser.add_argument(
        "--paper",
        type=int,
        default=0,
        help="instead: corrupt_paper on this many digits vs the paper's pipeline (prints only)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(CORRUPTIONS),
        metavar="NAME",
        help="time only these corruptions; prints the table, writes no results file",
    )
    args = parser.parse_args()
    names = list(args.only) if args.only else list(CORRUPTIONS)
    torch.set_num_threads(args.threads)
    if args.paper:
        print(paper_table(args.paper, args.runs))
        return
    icc = imagecorruptions_module()
    # warm-up (lazy imports, caches: frost photographs, torchvision's JPEG codec)
    one_run(icc, 4, 1, 0, names)
    runs = {n: [] for n in args.n}
    for run in range(args.runs):
        for n in args.n:
            runs[n].append(one_run(icc, n, args.inner, run, names))
            tot = [sum(v[i] for v in runs[n][-1].values()) for i in range(3)]
            print(f"run {run} n={n}: ref {tot[0]:.2f}s, same {tot[1]:.3f}s, corrupt {tot[2]:.3f}s")
    cmd = (
        f"python benchmarks/bench_corruptions.py --threads {args.threads} --n "
        f"{' '.join(map(str, args.n))} --runs {args.runs} --inner {args.inner}"
        + (f" --only {' '.join(names)}" if args.only else "")
    )
    lines = [
        "# Corruptions: neurovar (batched torch) vs imagecorruptions (image by image)",
        "",
        f"Command: `{cmd}`",
        "",
        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with "
        f"other jobs), torch {torch.__version__}, torch threads = {args.threads}; RGB 32x32 "
        f"images, severity 3. Each of {args.runs} runs times both sides one after the other for "
        "every corruption: imagecorruptions one pass over the images, neurovar best of "
        f"{args.inner} calls (CPU time of the process). Speedup = reference time / neurovar time of the same run; cells "
        "give **min / median / max over the runs**. 'same params' runs neurovar's kernel with "
        "the imagecorruptions (ImageNet-C) parameters; 'corrupt' is the public "
        "`corrupt(x, name, severity=3, rng=...)` with the CIFAR-10-C parameters, validation "
        "and clipping included.",
        "",
    ]
    for n in args.n:
        rs = runs[n]
        lines += [
            f"### {n} images",
            "",
            "| corruption | imagecorruptions (ms) | neurovar corrupt (ms) | speedup corrupt | "
            "speedup same params |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in names:
            ref = [r[name][0] * 1e3 for r in rs]
            cif = [r[name][2] * 1e3 for r in rs]
            sp_c = [r[name][0] / r[name][2] for r in rs]
            sp_s = [r[name][0] / r[name][1] for r in rs]
            lines.append(f"| {name} | {_mmm(ref)} | {_mmm(cif)} | {_mmm(sp_c)}x | {_mmm(sp_s)}x |")
        tot_ref = [sum(v[0] for v in r.values()) for r in rs]
        tot_s = [sum(v[1] for v in r.values()) for r in rs]
        tot_c = [sum(v[2] for v in r.values()) for r in rs]
        lines.append(
            f"| **all {len(names)}** | {_mmm([t * 1e3 for t in tot_ref])} | "
            f"{_mmm([t * 1e3 for t in tot_c])} | "
            f"{_mmm([a / b for a, b in zip(tot_ref, tot_c, strict=True)])}x | "
            f"{_mmm([a / b for a, b in zip(tot_ref, tot_s, strict=True)])}x |"
        )
        lines.append("")
    if args.only:
        print("\n".join(lines))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "corruptions.md"
    text = "\n".join(lines)
    marker = "\n## Notes"
    if out.exists() and marker in out.read_text():
        text += marker + out.read_text().split(marker, 1)[1]
    out.write_text(text)
    print(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = list(CORRUPTIONS)
        width = 0.8 / len(args.n)
        for k, n in enumerate(args.n):
            med = [statistics.median(r[m][0] / r[m][2] for r in runs[n]) for m in names]
            ax.bar(np.arange(len(names)) + k * width, med, width, label=f"{n} images")
        ax.axhline(5, color="k", ls="--", lw=1, label="target 5x")
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("speedup vs imagecorruptions")
        ax.set_title("corrupt(severity=3), RGB 32x32, 1 CPU thread, median over runs")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "corruptions.png", dpi=100)
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":
    main()
