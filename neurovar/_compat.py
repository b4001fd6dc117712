"""Renamed parameters: keep an old keyword working for one release, with a ``FutureWarning``.

Bottom floor of the package (imports nothing from :mod:`neurovar`). Every rename goes through
:func:`renamed_parameters`, so old spellings all warn the same way and the signature that
:func:`inspect.signature` and the docs show has only the new names; a renamed attribute keeps its
old name as a read-only alias with :func:`renamed_attribute`.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["renamed_parameters", "warn_renamed", "renamed_attribute"]

F = TypeVar("F", bound=Callable[..., Any])

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_stacklevel() -> int:
    """Stack level of the first frame outside :mod:`neurovar` (the user's line), for warnings."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR + os.sep):
            return level
        frame = frame.f_back
        level += 1
    return level


def warn_renamed(owner: str, old: str, new: str, *, since: str = "0.2") -> None:
    """Emit the one ``FutureWarning`` for a renamed parameter ``old`` -> ``new`` of ``owner``."""
    warnings.warn(
        f"The '{old}' parameter of {owner} was renamed to '{new}' in neurovar {since}; "
        f"'{old}' still works for this release and will then be removed. Use {new}=... instead.",
        FutureWarning,
        stacklevel=_caller_stacklevel(),
    )


def renamed_attribute(old: str, new: str, *, since: str = "0.2") -> property:
    """A property ``old`` that reads and sets attribute ``new``, with a ``FutureWarning``.

    Use it in a class body, ``layer_name = renamed_attribute("layer_name", "layer")``; the
    warning names the class of the instance and reads like the one of :func:`warn_renamed`:
    "The 'layer_name' attribute of NoiseHook was renamed to 'layer' in neurovar 0.2; ...".

    Parameters
    ----------
    old, new
        The old and the new attribute name.
    since
        Release in which the rename happened (shown in the warning).

    Returns
    -------
    property
        Getting or setting ``old`` warns and gets or sets ``new``.
    """

    def warn(self: Any) -> None:
        warnings.warn(
            f"The '{old}' attribute of {type(self).__name__} was renamed to '{new}' in neurovar "
            f"{since}; '{old}' still works for this release and will then be removed. Use "
            f".{new} instead.",
            FutureWarning,
            stacklevel=_caller_stacklevel(),
        )

    def getter(self: Any) -> Any:
        warn(self)
        return getattr(self, new)

    def setter(self: Any, value: Any) -> None:
        warn(self)
        setattr(self, new, value)

    return property(getter, setter, doc=f"Deprecated alias of :attr:`{new}` (renamed in {since}).")


def renamed_parameters(
    renames: Mapping[str, str] | None = None,
    *,
    positional: tuple[str, ...] = (),
    since: str = "0.2",
) -> Callable[[F], F]:
    """Decorator: accept old keyword names (and old positional use) with a ``FutureWarning``.

    Parameters
    ----------
    renames
        ``{old_name: new_name}``. A call with ``old_name=value`` warns and is passed on as
        ``new_name=value``; giving both is a ``TypeError``. Several old names may map to the
        same new name (then at most one of them may be given).
    positional
        Names of keyword-only parameters that used to be positional, in their old order:
        extra positional arguments are passed on as these keywords, with a warning.
    since
        Release in which the rename happened (shown in the warning).

    Examples
    --------
    >>> @renamed_parameters({"seed": "rng"})
    ... def train(model, *, rng=0): ...
    """
    renames = dict(renames or {})

    def decorate(func: F) -> F:
        sig = inspect.signature(func)
        n_positional = sum(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in sig.parameters.values()
        )
        owner = func.__qualname__.replace(".__init__", "")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # a constructor names the class actually built (a subclass passes kwargs up)
            where = type(args[0]).__name__ if func.__name__ == "__init__" and args else owner
            if positional and len(args) > n_positional:
                extra = args[n_positional:]
                if len(extra) > len(positional):
                    raise TypeError(
                        f"{where} takes at most {n_positional + len(positional)} positional "
                        f"arguments; got {len(args)}."
                    )
                args = args[:n_positional]
                for name, value in zip(positional, extra):
                    if name in kwargs:
                        raise TypeError(f"{where} got multiple values for argument '{name}'.")
                    warnings.warn(
                        f"Passing '{name}' of {where} positionally is deprecated since neurovar "
                        f"{since}; it is keyword-only now. Use {name}=... instead.",
                        FutureWarning,
                        stacklevel=_caller_stacklevel(),
                    )
                    kwargs[name] = value
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(
                        f"{where}: pass either '{new}' or the old name '{old}', not both."
                    )
                warn_renamed(where, old, new, since=since)
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
