"""The one progress-bar policy of the package (bottom floor: imports nothing of neurovar).

Every function with a ``progress=`` parameter reads it the same way:

``None`` (the default)
    Automatic: a bar appears only when the work is long -- once the loop has run
    :data:`AUTO_PROGRESS_DELAY_S` seconds (tqdm's ``delay``; in a notebook :mod:`tqdm.auto`
    picks the widget) -- so a loop of ``steps=10**12`` is visibly running (rate, ETA, Ctrl-C)
    while short calls print nothing. It is removed when the loop ends.
    Requested work of :data:`AUTO_PROGRESS_AT_ONCE` units or more (``steps=10**9``) shows its
    bar at once, with its total, so what it will cost is visible before the first pass ends.
``True``
    A bar at once, kept after the loop (also when stderr is not a TTY).
``False``
    Never a bar.

:func:`inner_progress` lets a caller's ``progress=False`` silence the bars of the functions it
calls that were left at ``None``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from neurovar._validation import param_error

__all__ = ["AUTO_PROGRESS_AT_ONCE", "AUTO_PROGRESS_DELAY_S", "check_progress", "inner_progress",
           "progress_bar"]

#: Seconds a loop left at ``progress=None`` runs before its bar appears.
AUTO_PROGRESS_DELAY_S = 5.0

#: Requested work (passes, draws, queries) from which an automatic bar appears at once.
AUTO_PROGRESS_AT_ONCE = 10_000

#: What ``progress=None`` means inside an enclosing call: None (automatic) or False (silenced).
_INNER: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "neurovar_progress_inner", default=None
)


@contextlib.contextmanager
def inner_progress(progress: bool | None) -> Iterator[None]:
    """Inside the block, bars left at ``progress=None`` stay hidden if ``progress`` is False."""
    token = _INNER.set(False if progress is False else _INNER.get())
    try:
        yield
    finally:
        _INNER.reset(token)


def check_progress(value: Any, *, owner: str, name: str = "progress") -> bool | None:
    """``value`` as the policy reads it: True, False or None (automatic)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise param_error(name, owner, "True, False or None (automatic)", value)


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    progress: bool | None,
    unit: str = "it",
    initial: int = 0,
) -> Any:
    """A :func:`tqdm.auto.tqdm` bar (over ``iterable`` or updated by hand) under the policy."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # as tqdm reads it, so the large-work rule sees it too
    if progress is None:
        progress = _INNER.get()
    if progress is None:  # automatic: long (or large) work only
        large = total is not None and total >= AUTO_PROGRESS_AT_ONCE
        kw = {"disable": False, "delay": 0.0 if large else AUTO_PROGRESS_DELAY_S, "leave": False}
    else:
        kw = {"disable": not progress, "delay": 0.0, "leave": bool(progress)}
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, **kw)
