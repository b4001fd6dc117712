"""Shared helpers of :mod:`neurovar.perturb`: its domain checks (images and labels), RNG
handling, model-state guards. Generic checks (ints, reals, choices) are called from
:mod:`neurovar._validation` directly."""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from neurovar._progress import (  # noqa: F401  (the package's one progress policy, re-exported)
    AUTO_PROGRESS_AT_ONCE,
    AUTO_PROGRESS_DELAY_S,
    check_progress,
    inner_progress,
    progress_bar,
)
from neurovar._torch import model_device, noise_modules, reseeded_noise, seed_from, seeded_torch
from neurovar._validation import param_error

# re-exported for the attack modules; the device rule and noise discovery live in neurovar._torch
__all__ = ["model_device", "noise_modules", "reseeded_noise", "seed_from"]

RNGLike = None | int | np.random.Generator


def check_images_labels(images: Any, labels: Any, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch of images in [0, 1] with shape (N, C, H, W) and integer labels (N,)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise param_error("images", owner, "a torch.Tensor of shape (N, C, H, W)", shape)
    if not images.is_floating_point():
        raise param_error("images", owner, "a floating-point tensor in [0, 1]", images.dtype)
    if images.numel() and not bool(torch.isfinite(images).all()):
        n_bad = int((~torch.isfinite(images)).sum())
        raise param_error("images", owner, "finite values in [0, 1]", f"{n_bad} NaN/inf values")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        rng = (float(images.min()), float(images.max()))
        raise param_error("images", owner, "in the range [0, 1]", f"values in {rng}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        shape = tuple(labels.shape) if hasattr(labels, "shape") else type(labels).__name__
        raise param_error("labels", owner, "a 1-D torch.Tensor of class indices", shape)
    if labels.shape[0] != images.shape[0]:
        raise param_error(
            "labels", owner, f"of length N={images.shape[0]} (one per image)", labels.shape[0]
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise param_error("labels", owner, "an integer tensor", labels.dtype)
    if labels.numel() and int(labels.min()) < 0:
        raise param_error("labels", owner, "class indices >= 0", f"min label {int(labels.min())}")
    return images, labels.long()


def check_label_range(labels: torch.Tensor, n_classes: int, owner: str) -> None:
    """Refuse labels ``>= n_classes`` (the number of logits the model returns)."""
    if labels.numel() and int(labels.max()) >= n_classes:
        raise param_error(
            "labels",
            owner,
            f"class indices in [0, {n_classes - 1}] (the model has {n_classes} outputs)",
            f"max label {int(labels.max())}",
        )


def check_validation_common(owner: str, **values: Any) -> None:
    """Check the common keyword arguments of a public perturb function: ``rng`` (None, int
    seed >= 0, numpy or torch Generator) and flags (``progress``, ``warn``: bools)."""
    from neurovar._validation import check_bool, check_rng

    for name, value in values.items():
        if name == "rng":
            check_rng(value, owner=owner)
        else:
            check_bool(value, name=name, owner=owner)


#: The progress bar of the attack call in flight in this thread/task (None outside a call). A
#: context variable, not an attribute of the attack: one attack object may run in two threads.
CURRENT_BAR: contextvars.ContextVar[Any] = contextvars.ContextVar("neurovar_attack_bar", default=None)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A torch Generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _mode_snapshot(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


@contextlib.contextmanager
def preserved_state(model: nn.Module, device: torch.device, seed: int) -> Iterator[None]:
    """Seed the model's noise from ``seed``; restore train flags, buffers and all RNG streams.

    Noise layers such as :class:`torch.nn.Dropout` draw from the global torch RNG. Inside this
    context they draw from a stream seeded by ``seed`` (so results are reproducible from a
    seed), and after it the global RNG state is exactly what it was before
    (:func:`torch.random.fork_rng`). Noise modules of :mod:`neurovar.noise` (which draw from
    their own generators) are reseeded likewise and get their streams back afterwards
    (:func:`reseeded_noise`). The train/eval flag of every submodule and every buffer of the
    model and of its noise modules (BatchNorm running statistics, running noise-variance
    estimates, which forward passes in training mode update) are restored in ``finally``.
    """
    snapshot = _mode_snapshot(model)
    modules = [model, *noise_modules(model)]
    buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    try:
        with seeded_torch(seed, device), reseeded_noise(model, seed + 1):
            yield
    finally:
        for module, flag in snapshot:
            if module.training != flag:
                module.train(flag)
        with torch.no_grad():
            for buf, value in buffers:
                buf.copy_(value)


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Classification margin ``z_y - max_{j != y} z_j`` per example (negative = misclassified)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, labels[:, None], -torch.inf)
    return true - other.max(dim=1).values


def chunk_sizes(total: int, chunk: int) -> Iterator[int]:
    """Split ``total`` into consecutive chunks of at most ``chunk`` (lazily: ``total`` may be
    a count like ``eot_samples=10**12`` that must start running, not be listed first)."""
    for start in range(0, total, chunk):
        yield min(chunk, total - start)


@contextlib.contextmanager
def fixed_threads(num_threads: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(num_threads)``; the caller's count is restored.

    The number of intra-op threads changes the order of float reductions in CPU kernels (GEMM,
    convolutions), hence the last bits of logits and gradients, and so attack decisions at the
    margin (the sign of a near-zero gradient component, an argmax between near-equal logits).
    Fixing it makes results independent of the caller's setting (``OMP_NUM_THREADS``,
    ``torch.set_num_threads``). ``None`` leaves the count alone. CUDA kernels are not affected.
    """
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    if before != num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def renamed_kwarg(
    owner: str, old: str, new: str, old_value: Any, new_value: Any, default: Any
) -> Any:
    """Resolve a keyword renamed from ``old`` to ``new`` (old one kept for one release).

    Returns the value to use; warns with a :class:`FutureWarning` when ``old`` was given and
    raises when both were.
    """
    if old_value is None:
        return new_value
    if new_value is not default:
        raise TypeError(f"{owner} got both '{old}' (deprecated) and '{new}'; pass only '{new}'.")
    warnings.warn(
        f"The '{old}' parameter of {owner} is deprecated and will be removed in the next "
        f"release; use '{new}' instead.",
        FutureWarning,
        stacklevel=3,
    )
    return old_value
