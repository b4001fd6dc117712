"""Shared helpers of :mod:`neurovar.perturb`: validation, RNG handling, model-state guards."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

RNGLike = None | int | np.random.Generator


def param_error(owner: str, name: str, expected: str, got: Any) -> ValueError:
    """Build the uniform sklearn-style error message."""
    return ValueError(f"The '{name}' parameter of {owner} must be {expected}. Got {got!r} instead.")


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
    if isinstance(value, bool) or not ok_type:
        raise param_error(owner, name, kind, value)
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
    if value not in options:
        raise param_error(owner, name, f"one of {list(options)}", value)


def check_images_labels(images: Any, labels: Any, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch of images in [0, 1] with shape (N, C, H, W) and integer labels (N,)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise param_error(owner, "images", "a torch.Tensor of shape (N, C, H, W)", shape)
    if not images.is_floating_point():
        raise param_error(owner, "images", "a floating-point tensor in [0, 1]", images.dtype)
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
    if labels.is_floating_point():
        raise param_error(owner, "labels", "an integer tensor", labels.dtype)
    return images, labels.long()


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``device`` if given, else the model's parameters' device."""
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def seed_from(rng: RNGLike | torch.Generator) -> int:
    """Draw a 63-bit seed from ``rng`` (None, int, numpy Generator or torch Generator).

    ``np.random.default_rng(rng)`` is used, so ``None`` gives fresh OS entropy and an int gives a
    reproducible stream; a numpy Generator is advanced. The global RNGs are never touched.
    """
    if isinstance(rng, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=rng).item())
    return int(np.random.default_rng(rng).integers(0, 2**62))


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A torch Generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _mode_snapshot(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def noise_modules(model: nn.Module) -> list[nn.Module]:
    """Noise modules of :mod:`neurovar.noise` in ``model``: submodules and injected (hooked) ones.

    They draw from their own seeded :class:`torch.Generator`, not from the global torch RNG.
    """
    from neurovar.noise import NoiseModule, find_noise_hooks  # local: keep import light

    found: dict[int, nn.Module] = {id(m): m for m in model.modules() if isinstance(m, NoiseModule)}
    for _, hook in find_noise_hooks(model):
        if isinstance(hook.noise, NoiseModule):
            found.setdefault(id(hook.noise), hook.noise)
    return list(found.values())


@contextlib.contextmanager
def reseeded_noise(model: nn.Module, seed: int) -> Iterator[None]:
    """Inside the block every :mod:`neurovar.noise` module of ``model`` draws from a fresh stream
    seeded from ``seed`` (one independent stream per module, ``numpy.random.SeedSequence``).

    On exit each module gets its own generators (left untouched, so their states are exactly
    as before), seed and frozen draw back: the caller's noise streams are not advanced.
    """
    modules = noise_modules(model)
    saved = [(m, m.seed, m._user_generator, m._generators, m._frozen_draw) for m in modules]
    try:
        for m, child in zip(modules, np.random.SeedSequence(seed).spawn(len(modules))):
            m.manual_seed(int(child.generate_state(1, dtype=np.uint64)[0] >> 1))
        yield
    finally:
        for m, m_seed, user_gen, gens, frozen_draw in saved:
            m.seed, m._user_generator, m._generators = m_seed, user_gen, gens
            m._frozen_draw = frozen_draw


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
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), reseeded_noise(model, seed + 1):
            # inside fork_rng: both streams are restored on exit
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
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


def chunk_sizes(total: int, chunk: int) -> list[int]:
    """Split ``total`` into consecutive chunks of at most ``chunk``."""
    return [min(chunk, total - start) for start in range(0, total, chunk)]
