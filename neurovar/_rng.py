"""Explicit randomness shared by the package: seeds from ``rng=``, forked torch RNG, noise streams.

Library functions never touch the caller's global RNG state. Built-in stochastic layers
(dropout) draw from torch's global generator, so those forward passes run inside
:func:`seeded_torch`, a fork of the global state seeded from the call's ``rng``; noise modules
of :mod:`neurovar.noise` draw from their own generators and are reseeded (and restored) by
:func:`reseeded_noise`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["seed_from", "seeded_torch", "noise_modules", "reseeded_noise"]


def seed_from(rng: Any) -> int:
    """A 62-bit seed from ``rng``: None (fresh OS entropy), int, numpy or torch Generator.

    An int is used as the seed itself, so ``attrs["seed"]`` of a result shows the number the
    user passed; a Generator is advanced by one draw. The global RNGs are never touched.
    """
    from ._validation import check_rng

    check_rng(rng)  # names the public function the user called
    if isinstance(rng, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=rng).item())
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return int(rng)
    return int(np.random.default_rng(rng).integers(0, 2**62))


@contextlib.contextmanager
def seeded_torch(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with torch's CPU generator (and ``device``'s CUDA generator) seeded from
    ``seed``; the caller's generator states are restored on exit (:func:`torch.random.fork_rng`).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    )
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


def noise_modules(model: nn.Module) -> list[nn.Module]:
    """Noise modules of :mod:`neurovar.noise` in ``model``: submodules and injected (hooked) ones."""
    from neurovar.noise import NoiseModule, find_noise_hooks  # local: keep imports light

    found: dict[int, nn.Module] = {id(m): m for m in model.modules() if isinstance(m, NoiseModule)}
    for _, hook in find_noise_hooks(model):
        if isinstance(hook.noise, NoiseModule):
            found.setdefault(id(hook.noise), hook.noise)
    return list(found.values())


@contextlib.contextmanager
def reseeded_noise(model: nn.Module, seed: int) -> Iterator[None]:
    """Inside the block every :mod:`neurovar.noise` module of ``model`` draws from a fresh stream
    seeded from ``seed`` (one independent stream per module, :class:`numpy.random.SeedSequence`).

    On exit each module gets its own generators (untouched, so their states are exactly as
    before), seed and frozen draw back: the caller's noise streams are not advanced.
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
