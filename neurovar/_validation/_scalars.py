"""Checks of scalar arguments: bools, ints, reals, choices, strings, types, RNGs, devices."""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral
from typing import Any

import numpy as np

from ._base import _is_bool, param_error, public_caller


def check_bool(value: Any, *, name: str, owner: str | None = None) -> bool:
    """A flag: ``bool`` or ``numpy.bool_`` only (``"False"``, ``0``, ``None`` are refused).

    ``owner=None`` names the public function on the call stack (:func:`public_caller`)."""
    if not _is_bool(value):
        raise param_error(name, owner or public_caller(), "a bool (True or False)", value)
    return bool(value)








def check_choice(value: Any, *, name: str, owner: str, options: Iterable[Any]) -> Any:
    """One of ``options`` (compared with ``==``; unhashable values are refused cleanly)."""
    options = tuple(options)
    try:
        hash(value)  # arrays, lists, dicts are never a choice
        ok = any(_is_bool(value) == _is_bool(o) and bool(value == o) for o in options)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise param_error(name, owner, f"one of {options!r}", value)
    return value


def check_str(value: Any, *, name: str, owner: str, allow_empty: bool = False) -> str:
    """A ``str`` (non-empty unless ``allow_empty``)."""
    if not isinstance(value, str) or (not allow_empty and not value):
        raise param_error(name, owner, "a non-empty str" if not allow_empty else "a str", value)
    return value


def check_instance(
    value: Any,
    types: type | tuple[type, ...],
    *,
    name: str,
    owner: str,
    expected: str | None = None,
) -> Any:
    """An instance of ``types`` (described as ``expected`` in the message)."""
    if not isinstance(value, types):
        if expected is None:
            tt = types if isinstance(types, tuple) else (types,)
            expected = "an instance of " + " or ".join(
                f"{t.__module__}.{t.__qualname__}" for t in tt
            )
        raise param_error(name, owner, expected, type(value).__name__, raw=True)
    return value


def check_rng(
    value: Any, *, name: str = "rng", owner: str | None = None, torch_ok: bool = True
) -> Any:
    """``None``, a non-negative int seed, a numpy ``Generator``/``SeedSequence`` (or, with
    ``torch_ok``, a ``torch.Generator``); returned unchanged (ints as Python ints).

    ``owner=None`` names the public function on the call stack (:func:`public_caller`)."""
    if owner is None and not (
        value is None
        or isinstance(value, (np.random.Generator, np.random.SeedSequence))
        or (isinstance(value, (Integral, np.integer)) and not _is_bool(value) and value >= 0)
    ):
        owner = public_caller()
    if value is None or isinstance(value, (np.random.Generator, np.random.SeedSequence)):
        return value
    if isinstance(value, (Integral, np.integer)) and not _is_bool(value):
        if value < 0:
            raise param_error(name, owner, "a non-negative int seed", value)
        return int(value)
    if torch_ok:
        import torch

        if isinstance(value, torch.Generator):
            return value
    expected = "None, an int seed >= 0, a numpy Generator" + (
        " or a torch.Generator" if torch_ok else ""
    )
    raise param_error(name, owner, expected, value)


def check_device(
    value: Any, *, name: str = "device", owner: str | None = None, allow_none: bool = True
):
    """A usable torch device (``None`` -> CUDA when available, else CPU).

    Refuses unknown strings (``"bogus"``) and devices that this machine does not have
    (``"cuda"`` without CUDA, ``"cuda:3"`` with one GPU, ``"mps"`` off Apple). ``owner=None``
    names the public function on the call stack (:func:`public_caller`).
    """
    import torch

    if owner is None:
        if isinstance(value, torch.device) and value.type == "cpu":
            return value
        owner = public_caller()

    if value is None:
        if not allow_none:
            raise param_error(name, owner, "a torch device such as 'cpu' or 'cuda'", value)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(value, (str, torch.device)) or _is_bool(value):
        raise param_error(
            name, owner, "None, a str such as 'cpu' or 'cuda', or a torch.device", value
        )
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise param_error(
            name, owner, "a torch device such as 'cpu', 'cuda' or 'cuda:0'", value
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise param_error(
                name,
                owner,
                "an available device",
                value,
                hint="CUDA is not available here; use 'cpu'.",
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise param_error(
                name,
                owner,
                f"an available device (this machine has {torch.cuda.device_count()} "
                "CUDA device(s))",
                value,
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise param_error(
                name, owner, "an available device", value, hint="MPS is not available here."
            )
    elif dev.type not in ("cpu", "meta"):
        raise param_error(name, owner, "a torch device such as 'cpu' or 'cuda'", value)
    return dev
