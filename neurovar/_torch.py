"""Lowest floor of the torch side: layer names, the device rule, noise discovery, seeded RNG.

Everything that :mod:`neurovar.record`, :mod:`neurovar.noise`, :mod:`neurovar.perturb` and
:mod:`neurovar.models` share about a torch model lives here, so those modules never import
each other in a circle (the layout xarray uses for ``core/utils.py``). This module imports
nothing from :mod:`neurovar`.

The device rule (one, everywhere)
---------------------------------
:func:`resolve_device`: an explicit ``device=`` wins; otherwise a call that gets a model runs
where the model already is (the device of its first parameter, else of its first buffer); a
model without parameters or buffers, or a call without a model, runs on the CPU. Nothing is
moved to a GPU behind the caller's back: pass ``device="cuda"`` to use one.

Noise discovery (duck-typed, so this floor does not import :mod:`neurovar.noise`)
---------------------------------------------------------------------------------
- A *noise hook* is a forward hook with the attribute ``_neurovar_noise`` (its value is true
  while it adds noise), e.g. :class:`neurovar.noise.NoiseHook`; it may carry the noise module
  as ``hook.noise``.
- A *noise module* is a :class:`torch.nn.Module` whose class sets
  ``_neurovar_noise_module = True`` (:class:`neurovar.noise.NoiseModule` does) and that
  offers ``manual_seed(seed)``, ``get_rng_state()`` and ``set_rng_state(state)``.

Randomness
----------
Library functions never touch the caller's global RNG state. Built-in stochastic layers
(dropout) draw from torch's global generator, so those forward passes run inside
:func:`seeded_torch`, a fork of the global state seeded from the call's ``rng``; noise modules
draw from their own generators and are reseeded (and restored) by :func:`reseeded_noise`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "layer_names",
    "resolve_device",
    "model_device",
    "model_dtype",
    "NOISE_HOOK_MARKER",
    "NOISE_MODULE_MARKER",
    "is_noise_hook",
    "is_noise_module",
    "noise_hooks",
    "find_noise_hooks",
    "noise_modules",
    "seed_from",
    "seeded_torch",
    "reseeded_noise",
]

NOISE_HOOK_MARKER = "_neurovar_noise"
NOISE_MODULE_MARKER = "_neurovar_noise_module"


# ---------------------------------------------------------------------------------- layers
def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of all submodules of ``model`` (as accepted by ``layers=`` / ``layer=``).

    Parameters
    ----------
    model
        The network.

    Returns
    -------
    list of str
        ``[name for name, _ in model.named_modules() if name]``, in definition order.
    """
    return [name for name, _ in model.named_modules() if name]


# ---------------------------------------------------------------------------------- device
def resolve_device(
    device: str | torch.device | None = None,
    *,
    model: nn.Module | None = None,
    owner: str | None = None,
) -> torch.device:
    """The device a call runs on: the package's one device rule.

    1. ``device`` if given (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a :class:`torch.device`);
    2. else the device of ``model``'s first parameter, or of its first buffer;
    3. else the CPU.

    Parameters
    ----------
    device
        Explicit device, or None.
    model
        The model the call runs, if any.
    owner
        The public function asking, named in the error for an unknown or unavailable device.

    Returns
    -------
    torch.device
    """
    if device is not None:
        from ._validation import check_device  # refuses "bogus", "cuda" without CUDA, ...

        return check_device(device, owner=owner)
    if model is not None:
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    return torch.device("cpu")


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """:func:`resolve_device` with the model first (the argument order of the perturb code)."""
    return resolve_device(device, model=model)


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """dtype of the model's first floating-point parameter (inputs are cast to it), else None."""
    for tensor in model.parameters():
        if torch.is_floating_point(tensor):
            return tensor.dtype
    return None


# ---------------------------------------------------------------------------------- noise
def is_noise_hook(hook: Any) -> bool:
    """Whether ``hook`` is a neurovar noise hook (has the ``_neurovar_noise`` marker)."""
    return hasattr(hook, NOISE_HOOK_MARKER)


def is_noise_module(obj: Any) -> bool:
    """Whether ``obj`` is a neurovar noise module (its class sets ``_neurovar_noise_module``)."""
    return isinstance(obj, nn.Module) and bool(getattr(type(obj), NOISE_MODULE_MARKER, False))


def noise_hooks(module: nn.Module, *, active_only: bool = False) -> list[Any]:
    """Noise hooks registered on ``module`` itself (not its children), in registration order.

    With ``active_only=True`` only hooks whose marker is true (enabled, not suspended).
    """
    return [
        h
        for h in module._forward_hooks.values()
        if is_noise_hook(h) and (not active_only or bool(getattr(h, NOISE_HOOK_MARKER)))
    ]


def find_noise_hooks(model: nn.Module, *, active_only: bool = False) -> list[tuple[str, Any]]:
    """``[(layer, hook), ...]`` for all neurovar noise hooks registered in ``model``.

    Parameters
    ----------
    model
        The network.
    active_only
        Keep only hooks that currently add noise (marker true).

    Returns
    -------
    list of (str, hook)
        In ``model.named_modules()`` order (the order layers are defined, which is the forward
        order for sequential models), then registration order; ``""`` is the model itself.
    """
    from ._validation import check_bool

    active_only = check_bool(active_only, name="active_only", owner="find_noise_hooks")
    return [
        (name, hook)
        for name, module in model.named_modules()
        for hook in noise_hooks(module, active_only=active_only)
    ]


def noise_modules(model: nn.Module) -> list[nn.Module]:
    """Noise modules of ``model``: its submodules that are noise modules, then the noise
    modules of its noise hooks (``hook.noise``), each once, in discovery order."""
    found: dict[int, nn.Module] = {id(m): m for m in model.modules() if is_noise_module(m)}
    for _, hook in find_noise_hooks(model):
        noise = getattr(hook, "noise", None)
        if is_noise_module(noise):
            found.setdefault(id(noise), noise)
    return list(found.values())


# ---------------------------------------------------------------------------------- RNG
def seed_from(rng: Any) -> int:
    """A 62-bit seed from ``rng``: None (fresh OS entropy), int, numpy or torch Generator.

    An int is used as the seed itself, so ``attrs["seed"]`` of a result shows the number the
    user passed; a Generator is advanced by one draw. The global RNGs are never touched.
    """
    from ._validation import check_rng  # the bottom floor too; names the user's function

    check_rng(rng)
    if isinstance(rng, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=rng, device=rng.device).item())
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


@contextlib.contextmanager
def reseeded_noise(model: nn.Module, seed: int) -> Iterator[None]:
    """Inside the block every noise module of ``model`` draws from a fresh stream seeded from
    ``seed`` (one independent stream per module, :class:`numpy.random.SeedSequence`).

    Each module's random state is saved with its public ``get_rng_state()`` before and put back
    with ``set_rng_state()`` on exit (also after an exception): the caller's noise streams are
    not advanced.
    """
    modules = noise_modules(model)
    saved = [(m, m.get_rng_state()) for m in modules]
    try:
        for m, child in zip(modules, np.random.SeedSequence(seed).spawn(len(modules))):
            m.manual_seed(int(child.generate_state(1, dtype=np.uint64)[0] >> 1))
        yield
    finally:
        for m, state in saved:
            m.set_rng_state(state)
