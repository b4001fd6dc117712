"""The error class, the one message shape of every check, and the helpers every room shares."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import numpy as np


class InvalidParameterError(ValueError, TypeError):
    """A parameter of a public function or class has a wrong type or value.

    Inherits from both :class:`ValueError` and :class:`TypeError` (as scikit-learn's error of
    the same name does), so existing ``except ValueError`` / ``except TypeError`` handlers and
    tests keep working. ``name`` and ``owner`` are kept as attributes.
    """

    def __init__(self, message: str, *, name: str | None = None, owner: str | None = None):
        super().__init__(message)
        self.name = name
        self.owner = owner


def describe(value: Any, *, limit: int = 80) -> str:
    """Short ``repr`` of ``value`` for an error message (arrays by shape and dtype)."""
    shape = getattr(value, "shape", None)
    if shape is not None and not np.isscalar(value) and getattr(value, "ndim", 0) > 0:
        dtype = getattr(value, "dtype", None)
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def param_error(
    name: str, owner: str, expected: str, got: Any, *, raw: bool = False, hint: str = ""
) -> InvalidParameterError:
    """The one message shape: "The '{name}' parameter of {owner} must be {expected}. Got {got}
    instead." (``got`` is shown with :func:`describe` unless ``raw=True``, then as given)."""
    shown = got if raw else describe(got)
    message = f"The {name!r} parameter of {owner} must be {expected}. Got {shown} instead."
    if hint:
        message = f"{message} {hint}"
    return InvalidParameterError(message, name=name, owner=owner)


def public_caller(default: str = "neurovar") -> str:
    """Name of the outermost public neurovar function or class on the call stack: the one
    the user called.

    For shared helpers (seed and device resolution, a public function called by another) that
    are called from many public functions: the error then names the function the user called
    (a function listed in its module's ``__all__``, or the class of a method's ``self``).
    """
    frame = inspect.currentframe()
    found = None
    try:
        frame = frame.f_back if frame is not None else None
        while frame is not None:
            glb = frame.f_globals
            mod = glb.get("__name__", "")
            if mod == "neurovar" or mod.startswith("neurovar."):
                public = glb.get("__all__", ())
                name = frame.f_code.co_name
                self_obj = frame.f_locals.get("self")
                if name in public:
                    found = name
                elif self_obj is not None and type(self_obj).__name__ in getattr(
                    sys.modules.get(type(self_obj).__module__), "__all__", ()
                ):
                    found = type(self_obj).__name__
            frame = frame.f_back
    finally:
        del frame
    return found or default


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _interval(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    lb = "(" if low_open or low is None else "["
    rb = ")" if high_open or high is None else "]"
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    return f"{lb}{lo}, {hi}{rb}"
