"""Shared helpers of :mod:`neurovar.perturb`: validation, RNG handling, model-state guards."""

from __future__ import annotations

import contextlib
import contextvars
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from neurovar._torch import model_device, noise_modules, reseeded_noise, seed_from, seeded_torch
from neurovar._validation import InvalidParameterError
from neurovar._validation import param_error as _param_error

# re-exported for the attack modules; the device rule and noise discovery live in neurovar._torch
__all__ = ["model_device", "noise_modules", "reseeded_noise", "seed_from"]

RNGLike = None | int | np.random.Generator


def param_error(owner: str, name: str, expected: str, got: Any) -> InvalidParameterError:
    """Build the uniform sklearn-style error (:class:`neurovar._validation.InvalidParameterError`)."""
    return _param_error(name, owner, expected, got)


def check_number(
    value: Any,
    name: str,
    owner: str,
    *,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    low_inclusive: bool = True,
) -> None:
    """Raise a clear ``ValueError`` unless ``value`` is a (bounded) real number."""
    kind = "an int" if integer else "a float"
    ok_type = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, (bool, np.bool_)) or not ok_type:
        raise param_error(owner, name, kind, value)
    if not integer and not np.isfinite(value) and (low is not None or high is not None):
        raise param_error(owner, name, f"a finite {kind[2:]}", value)  # NaN passes comparisons
    if low is not None and high is not None:
        if not (low <= value <= high) or (not low_inclusive and value == low):
            bracket = "[" if low_inclusive else "("
            raise param_error(owner, name, f"{kind} in {bracket}{low}, {high}]", value)
    elif low is not None:
        bad = value < low if low_inclusive else value <= low
        if bad:
            rel = ">=" if low_inclusive else ">"
            raise param_error(owner, name, f"{kind} {rel} {low}", value)


def check_choice(value: Any, name: str, owner: str, options: tuple[str, ...]) -> None:
    """Raise a clear ``ValueError`` unless ``value`` is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise param_error(owner, name, f"one of {list(options)}", value)


def check_images_labels(images: Any, labels: Any, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch of images in [0, 1] with shape (N, C, H, W) and integer labels (N,)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise param_error(owner, "images", "a torch.Tensor of shape (N, C, H, W)", shape)
    if not images.is_floating_point():
        raise param_error(owner, "images", "a floating-point tensor in [0, 1]", images.dtype)
    if images.numel() and not bool(torch.isfinite(images).all()):
        n_bad = int((~torch.isfinite(images)).sum())
        raise param_error(owner, "images", "finite values in [0, 1]", f"{n_bad} NaN/inf values")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        rng = (float(images.min()), float(images.max()))
        raise param_error(owner, "images", "in the range [0, 1]", f"values in {rng}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        shape = tuple(labels.shape) if hasattr(labels, "shape") else type(labels).__name__
        raise param_error(owner, "labels", "a 1-D torch.Tensor of class indices", shape)
    if labels.shape[0] != images.shape[0]:
        raise param_error(
            owner, "labels", f"of length N={images.shape[0]} (one per image)", labels.shape[0]
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise param_error(owner, "labels", "an integer tensor", labels.dtype)
    if labels.numel() and int(labels.min()) < 0:
        raise param_error(owner, "labels", "class indices >= 0", f"min label {int(labels.min())}")
    return images, labels.long()


def check_label_range(labels: torch.Tensor, n_classes: int, owner: str) -> None:
    """Refuse labels ``>= n_classes`` (the number of logits the model returns)."""
    if labels.numel() and int(labels.max()) >= n_classes:
        raise param_error(
            owner,
            "labels",
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


#: Seconds an automatic progress bar (``progress=None``) waits before it appears: short calls
#: stay quiet, a call that runs long (``steps=10**9``) shows its bar, rate and ETA.
AUTO_PROGRESS_DELAY_S = 5.0


#: The progress bar of the attack call in flight in this thread/task (None outside a call). A
#: context variable, not an attribute of the attack: one attack object may run in two threads.
CURRENT_BAR: contextvars.ContextVar[Any] = contextvars.ContextVar("neurovar_attack_bar", default=None)

#: What ``progress=None`` means inside an enclosing call: None (automatic bars) or False (the
#: caller asked for no bars at all, e.g. ``evaluate_robustness(progress=False)``).
_INNER_PROGRESS: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "neurovar_inner_progress", default=None
)


@contextlib.contextmanager
def inner_progress(progress: bool | None) -> Iterator[None]:
    """Inside the block, calls left at ``progress=None`` show no bar if ``progress`` is False
    (a caller's ``progress=False`` silences the attacks and checks it runs, too)."""
    token = _INNER_PROGRESS.set(False if progress is False else _INNER_PROGRESS.get())
    try:
        yield
    finally:
        _INNER_PROGRESS.reset(token)


def check_progress(value: Any, owner: str) -> bool | None:
    """``progress`` is True (always show a bar), False (never) or None (after a few seconds)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    raise param_error(owner, "progress", "a bool (True or False) or None", value)


def progress_bar(*, total: int | None, desc: str, progress: bool | None, unit: str = "it") -> Any:
    """A tqdm bar for a loop whose length the caller chose (attack steps, EOT draws, repeats).

    ``progress=None`` shows it only once the loop has run :data:`AUTO_PROGRESS_DELAY_S`
    seconds (tqdm's ``delay``) and removes it at the end, so a loop of ``steps=10**12`` is
    visibly running (rate, ETA) and can be interrupted with Ctrl-C, while ordinary calls print
    nothing. ``True`` shows it at once and keeps it; ``False`` never shows it. Inside
    :func:`inner_progress` (False), ``None`` means False.
    """
    if progress is None:
        progress = _INNER_PROGRESS.get()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=progress is not None and not progress,
        delay=0.0 if progress else AUTO_PROGRESS_DELAY_S,
        leave=bool(progress),
    )


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
