"""All 15 corruptions on a batch of 256 32x32 RGB images: neurovar (batched torch) vs the
``imagecorruptions`` package (numpy/cv2/skimage, image by image).

imagecorruptions implements the ImageNet-C parameters; for a like-for-like comparison neurovar's
kernels are also timed with *those* parameters ("same params"), besides the public
``corrupt(images, name, severity=3)`` with the CIFAR-10-C parameters. imagecorruptions 1.1.2
needs three shims to run today (``pkg_resources``, ``np.float_``, skimage ``multichannel``);
they do not change its work.

Run: ``python benchmarks/bench_corruptions.py [--threads 1] [--n 256]``; writes
``benchmarks/results/corruptions.md`` and ``benchmarks/results/corruptions.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
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
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    icc = imagecorruptions_module()
    pil = [Image.fromarray(p) for p in images(args.n)]
    x = torch.tensor(images(args.n), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    np.random.seed(0)  # noqa: NPY002 - the reference draws from numpy's global RNG
    rows = []
    for name in CORRUPTIONS:
        fn = getattr(icc, name)
        t_ref = best_of(lambda fn=fn: [np.uint8(fn(p, 3)) for p in pil], 1)
        t_cifar = best_of(lambda name=name: corrupt(x, name, severity=3, rng=0), args.repeats)
        kernel = CORRUPTIONS[name].kernel
        gen = torch.Generator().manual_seed(0)
        t_same = best_of(
            lambda kernel=kernel, name=name, gen=gen: kernel(x, IC_SEV3[name], gen).clamp(0, 1),
            args.repeats,
        )
        rows.append((name, t_ref, t_same, t_cifar))
        print(f"{name:18s} ref {t_ref:.3f}s  same-params {t_same:.4f}s  cifar {t_cifar:.4f}s")
    tot = [sum(r[i] for r in rows) for i in (1, 2, 3)]
    lines = [
        "# Corruptions: neurovar (batched torch) vs imagecorruptions (image by image)",
        "",
        f"Command: `python benchmarks/bench_corruptions.py --threads {args.threads} --n {args.n}"
        f" --repeats {args.repeats}`",
        "",
        f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, torch "
        f"threads = {args.threads}; {args.n} RGB 32x32 images, severity 3. neurovar: best of "
        f"{args.repeats}; imagecorruptions: one pass (it is slow). Throughput speedup = "
        "reference time / neurovar time. 'same params' runs neurovar's kernel with the "
        "imagecorruptions (ImageNet-C) parameters; 'CIFAR params' is `corrupt(..., severity=3)`.",
        "",
        "| corruption | imagecorruptions (s) | neurovar, same params (s) | speedup | "
        "neurovar, CIFAR params (s) | speedup |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, t_ref, t_same, t_cifar in rows:
        lines.append(
            f"| {name} | {t_ref:.3f} | {t_same:.4f} | {t_ref / t_same:.1f}x | {t_cifar:.4f} | "
            f"{t_ref / t_cifar:.1f}x |"
        )
    lines.append(
        f"| **all 15** | {tot[0]:.3f} | {tot[1]:.4f} | {tot[0] / tot[1]:.1f}x | {tot[2]:.4f} | "
        f"{tot[0] / tot[2]:.1f}x |"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "corruptions.md"
    text = "\n".join(lines) + "\n"
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
        names = [r[0] for r in rows]
        ax.bar(names, [r[1] / r[2] for r in rows], color="tab:blue")
        ax.axhline(20, color="k", ls="--", lw=1, label="target 20x")
        ax.set_yscale("log")
        ax.set_ylabel("throughput vs imagecorruptions")
        ax.set_title(f"{args.n} RGB 32x32 images, severity 3, same parameters, CPU")
        ax.tick_params(axis="x", rotation=60)
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "corruptions.png", dpi=100)
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":
    main()
