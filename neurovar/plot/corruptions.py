"""Corruption figures: a montage of images under each corruption and severity."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .._validation import param_error

__all__ = ['plot_corruptions']


def _montage(x: np.ndarray, gap: int = 1) -> np.ndarray:
    """Images (N, C, H, W) side by side with ``gap`` white columns: (H, N W + gaps[, 3])."""
    n, c, h, w = x.shape
    out = np.ones((h, n * w + (n - 1) * gap, c))
    for i in range(n):
        out[:, i * (w + gap) : i * (w + gap) + w] = x[i].transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


def plot_corruptions(
    images: Any,
    *,
    names: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 3, 5),
    show_clean: bool = True,
    rng: None | int | np.random.Generator = 0,
) -> Figure:
    r"""Grid of example images under CIFAR-10-C corruptions: one row per corruption, one column per severity.

    Every panel shows all ``images`` side by side after
    ``neurovar.perturb.corrupt(images, name, severity=s, rng=seed_name)``; the seed of a
    corruption is drawn once from ``rng`` and reused across its severities, so the columns of a
    row differ in strength only (common random numbers), and the figure is reproducible.

    Parameters
    ----------
    images
        Float tensor in [0, 1], shape (N, C, H, W) or (C, H, W), C = 1 (gray) or 3 (RGB);
        pass a few (1-6) images.
    names
        Corruptions (keys of :data:`neurovar.perturb.CORRUPTIONS`); default all 15.
    severities
        Severities 1-5 to show (columns).
    show_clean
        Add a first column with the clean images.
    rng
        None, int or numpy Generator for the per-corruption seeds.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(names) x (len(severities) + show_clean)`` panels; corrupted panels have gid
        ``"panel:<name>:<severity>"``, clean ones ``"panel:<name>:clean"``.

    Raises
    ------
    ValueError
        Bad ``images`` shape, range or channels; unknown ``names``; ``severities`` not in 1-5.

    References
    ----------
    Hendrycks, D. & Dietterich, T. (2019). Benchmarking neural network robustness to common
    corruptions and perturbations. ICLR.
    """
    import torch

    from ..perturb import CORRUPTIONS, SEVERITIES, corrupt

    owner = "plot_corruptions"
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise param_error("images", owner, "a torch.Tensor of shape (N, C, H, W) or (C, H, W)", shape)
    x = images[None] if images.ndim == 3 else images
    if x.shape[0] < 1:
        raise param_error("images", owner, "at least one image", tuple(x.shape))
    if x.shape[1] not in (1, 3):
        raise param_error("images", owner, "1 (gray) or 3 (RGB) channels in dim 1", x.shape[1])
    if not x.is_floating_point() or x.min() < 0 or x.max() > 1:
        raise param_error("images", owner, "a floating-point tensor with values in [0, 1]", x.dtype)
    if names is None:
        names = list(CORRUPTIONS)
    elif isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if not names or unknown:
        raise param_error(
            "names", owner, f"a non-empty list from {sorted(CORRUPTIONS)}", unknown or names
        )
    severities = [severities] if isinstance(severities, Integral) else list(severities)
    bad = [s for s in severities if isinstance(s, bool) or s not in SEVERITIES]
    if not severities or bad:
        raise param_error("severities", owner, f"a non-empty list from {list(SEVERITIES)}", severities)
    gen = np.random.default_rng(rng)
    seeds = {name: int(gen.integers(2**62)) for name in names}
    x = x.detach()
    clean = _montage(x.cpu().double().numpy())
    columns: list[Any] = (["clean"] if show_clean else []) + severities
    n_img = x.shape[0]
    fig = Figure(
        figsize=(1.0 + 0.9 * n_img * len(columns), 0.3 + 1.0 * len(names)), layout="constrained"
    )
    axes = fig.subplots(len(names), len(columns), squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None
    for i, name in enumerate(names):
        for j, col in enumerate(columns):
            ax = axes[i, j]
            if col == "clean":
                panel = clean
            else:
                out = corrupt(x, name, severity=int(col), rng=seeds[name])
                panel = _montage(out.cpu().double().numpy())
            ax.imshow(panel, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_gid(f"panel:{name}:{col}")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col if col == "clean" else f"severity {col}", fontsize=8)
            if j == 0:
                ax.set_ylabel(
                    name.replace("_", " "), fontsize=7, rotation=0, ha="right", va="center"
                )
    fig.suptitle("CIFAR-10-C corruptions (Hendrycks & Dietterich 2019)", fontsize=9)
    return fig
