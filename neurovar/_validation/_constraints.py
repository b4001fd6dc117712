"""Constraints stated as data (:class:`Interval`, :class:`Options`, ...) and their checkers."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

from ._base import InvalidParameterError, _interval, _is_bool, param_error
from ._scalars import check_rng

# ----------------------------------------------------------------------------- declarative
# Constraints stated as data next to a signature, in the spirit of scikit-learn's
# ``utils/_param_validation.py``: ``{"eps": [Interval(Real, 0, 1, closed="right")],
# "norm": [Options(str, {"linf", "l2"})], "rng": ["random_state"], "steps": [Interval(
# Integral, 1, None)], "callback": [callable, None]}``. A value is valid when it satisfies
# *any* constraint of its list; otherwise one :class:`InvalidParameterError` in the one
# message shape names the parameter, the owner, every accepted form and the value.


def did_you_mean(word: Any, options: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``word`` (:mod:`difflib`, ratio >=
    0.6), or ``""`` when none is close (or ``word`` is not a str)."""
    import difflib

    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Constraint:
    """A rule a parameter value may satisfy: :meth:`is_satisfied_by` and a description
    (``str(constraint)``) that completes "must be ..." in the error message."""

    def is_satisfied_by(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def hint(self, value: Any) -> str:
        """Extra words for the message when ``value`` fails (e.g. "did you mean")."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self})"


class Interval(Constraint):
    """A real or integral number in an interval.

    Parameters
    ----------
    type
        :class:`numbers.Integral` (Python and numpy ints; never bool, never float) or
        :class:`numbers.Real` (ints and floats; never bool, never NaN).
    left, right
        Bounds; ``None`` is unbounded (``-inf`` / ``inf``, which a Real may then equal only if
        ``allow_inf``).
    closed
        ``"both"`` (default), ``"left"``, ``"right"`` or ``"neither"``: which bounds are
        included.
    allow_inf
        Accept ``+-inf`` for an unbounded side (Real only).
    """

    def __init__(
        self,
        type: type,
        left: float | None,
        right: float | None,
        *,
        closed: str = "both",
        allow_inf: bool = False,
    ) -> None:
        if type not in (Integral, Real):
            raise TypeError("Interval type must be numbers.Integral or numbers.Real")
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError("closed must be 'both', 'left', 'right' or 'neither'")
        if left is not None and right is not None and right < left:
            raise ValueError(f"empty interval: right {right} < left {left}")
        self.type, self.left, self.right, self.closed = type, left, right, closed
        self.allow_inf = allow_inf

    def is_satisfied_by(self, value: Any) -> bool:
        if _is_bool(value):
            return False
        if self.type is Integral:
            if not isinstance(value, (Integral, np.integer)):
                return False
        else:
            if not isinstance(value, (Real, np.floating, np.integer)):
                return False
            v = float(value)
            if math.isnan(v) or (math.isinf(v) and not self.allow_inf):
                return False
        left_in = self.closed in ("both", "left")
        right_in = self.closed in ("both", "right")
        if self.left is not None and (value < self.left if left_in else value <= self.left):
            return False
        if self.right is not None and (value > self.right if right_in else value >= self.right):
            return False
        return True

    def __str__(self) -> str:
        kind = "an int" if self.type is Integral else "a float"
        if self.left is None and self.right is None:
            return kind
        return f"{kind} in " + _interval(
            self.left,
            self.right,
            self.closed in ("right", "neither"),
            self.closed in ("left", "neither"),
        )


class Options(Constraint):
    """One of a set of values of a given type (``Options(str, {"linf", "l2"})``); a str that
    is not one gets a "did you mean" hint. ``options`` may be a callable returning the values,
    read at every check, for a registry that grows after the constraint is made."""

    def __init__(self, type: type, options: Iterable[Any] | Callable[[], Iterable[Any]]) -> None:
        self.type = type
        self._options = options if callable(options) else tuple(options)

    @property
    def options(self) -> tuple[Any, ...]:
        """The allowed values now."""
        return tuple(self._options()) if callable(self._options) else self._options

    def is_satisfied_by(self, value: Any) -> bool:
        if not isinstance(value, self.type) or (_is_bool(value) and self.type is not bool):
            return False
        try:
            return value in self.options
        except TypeError:
            return False

    def hint(self, value: Any) -> str:
        return did_you_mean(value, self.options).strip()

    def __str__(self) -> str:
        return f"one of {list(self.options)!r}"


class InstanceOf(Constraint):
    """An instance of a type (or one of a tuple of types); ``bool`` never counts as an int."""

    def __init__(self, types: type | tuple[type, ...], description: str | None = None) -> None:
        self.types = types if isinstance(types, tuple) else (types,)
        self.description = description

    def is_satisfied_by(self, value: Any) -> bool:
        if _is_bool(value) and not any(t in (bool, np.bool_, object) for t in self.types):
            return False
        return isinstance(value, self.types)

    def __str__(self) -> str:
        if self.description:
            return self.description
        names = [t.__qualname__ if t.__module__ == "builtins" else
                 f"{t.__module__}.{t.__qualname__}" for t in self.types]
        return "an instance of " + " or ".join(names)


class Satisfies(Constraint):
    """A value for which ``predicate(value)`` is true (described as ``description``)."""

    def __init__(self, predicate: Any, description: str) -> None:
        self.predicate = predicate
        self.description = description

    def is_satisfied_by(self, value: Any) -> bool:
        try:
            return bool(self.predicate(value))
        except Exception:  # noqa: BLE001 - a predicate that cannot judge refuses
            return False

    def __str__(self) -> str:
        return self.description


class _NoneConstraint(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


class _Boolean(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return _is_bool(value)

    def __str__(self) -> str:
        return "a bool"


class _Callable(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return callable(value)

    def __str__(self) -> str:
        return "a callable"


class _RandomState(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        try:
            check_rng(value, owner="-")
        except InvalidParameterError:
            return False
        return True

    def __str__(self) -> str:
        return "None, an int seed >= 0, a numpy Generator or a torch.Generator"


_NAMED = {"boolean": _Boolean, "callable": _Callable, "random_state": _RandomState}


def make_constraint(constraint: Any) -> Constraint:
    """A :class:`Constraint` from its short form: ``None``, ``callable`` or ``"callable"``,
    ``"boolean"`` (or ``bool``), ``"random_state"``, ``int`` (an :class:`Interval` of
    :class:`~numbers.Integral`: no bool), ``float`` (a finite Real: no bool, no NaN), ``str``
    or another type (:class:`InstanceOf`), or a :class:`Constraint` as is."""
    if isinstance(constraint, Constraint):
        return constraint
    if constraint is None:
        return _NoneConstraint()
    if constraint is callable:
        return _Callable()
    if isinstance(constraint, str):
        if constraint not in _NAMED:
            raise ValueError(f"unknown constraint {constraint!r}; valid: {tuple(_NAMED)}")
        return _NAMED[constraint]()
    if constraint is bool:
        return _Boolean()
    if constraint in (int, Integral):
        return Interval(Integral, None, None)
    if constraint in (float, Real):
        return Interval(Real, None, None)
    if isinstance(constraint, type) or (
        isinstance(constraint, tuple) and all(isinstance(t, type) for t in constraint)
    ):
        return InstanceOf(constraint)
    raise TypeError(f"cannot make a constraint from {constraint!r}")


def expected_text(constraints: Sequence[Any]) -> str:
    """"a float in (0, 1] or None": the accepted forms of a constraint list, for messages."""
    parts = [str(make_constraint(c)) for c in constraints]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def check_param(value: Any, constraints: Sequence[Any], *, name: str, owner: str) -> Any:
    """``value`` unchanged if it satisfies any of ``constraints`` (see
    :func:`make_constraint`), else the one :class:`InvalidParameterError`:
    ``The 'norm' parameter of pgd must be one of ('linf', 'l2'). Got 'l3' instead. (did you
    mean 'l2'?)``."""
    made = [make_constraint(c) for c in constraints]
    if any(c.is_satisfied_by(value) for c in made):
        return value
    hint = " ".join(h for h in (c.hint(value) for c in made) if h)
    raise param_error(name, owner, expected_text(made), value, hint=hint)


def check_params(
    values: Mapping[str, Any], constraints: Mapping[str, Sequence[Any]], *, owner: str
) -> None:
    """Check every parameter of ``values`` that has constraints (see :func:`check_param`);
    the first failing one raises. Parameters without constraints are not checked."""
    for name, value in values.items():
        if name in constraints:
            check_param(value, constraints[name], name=name, owner=owner)


def validate_params(constraints: Mapping[str, Sequence[Any]], *, owner: str | None = None):
    """Decorator: check the arguments of every call against ``constraints`` before the body
    runs (the call's bound arguments, defaults included).

    ``owner`` (default: the function's ``__qualname__``) names the function in the message.
    Every key of ``constraints`` must be a parameter of the function (checked when
    decorating, so a typo in the table is an error at import, not a silently unchecked
    parameter).
    """
    import functools

    def decorate(func: Any) -> Any:
        sig = inspect.signature(func)
        unknown = set(constraints) - set(sig.parameters)
        if unknown:
            raise ValueError(f"validate_params of {func.__qualname__}: no parameter(s) "
                             f"{sorted(unknown)}")
        name = owner or func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            check_params(bound.arguments, constraints, owner=name)
            return func(*args, **kwargs)

        wrapper.__wrapped_constraints__ = dict(constraints)  # for the generated API tests
        return wrapper

    return decorate


def check_int(
    value: Any,
    *,
    name: str,
    owner: str,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """An integer (Python or numpy, not bool, not float) in ``[low, high]``: the
    :class:`Interval` constraint of :class:`~numbers.Integral` (or ``None`` if allowed)."""
    constraints: list[Any] = [Interval(Integral, low, high)]
    if allow_none:
        constraints.append(None)
    value = check_param(value, constraints, name=name, owner=owner)
    return None if value is None else int(value)


def check_real(
    value: Any,
    *,
    name: str,
    owner: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
    allow_none: bool = False,
    coerce: bool = False,
) -> float | None:
    """A real number (not bool, not NaN; not +-inf unless ``allow_inf``) in the interval: the
    :class:`Interval` constraint of :class:`~numbers.Real` (or ``None`` if allowed).

    With ``coerce=True`` the value is first converted with ``float()``, so a 0-d numpy array
    or a one-element tensor (a ``std`` or ``scale`` computed with numpy or torch) passes; the
    interval is then checked on the converted float (and named in the message as usual). A
    str, bytes or bool is never converted, and a value ``float()`` refuses gets the same
    message as any value outside the interval."""
    closed = {(False, False): "both", (True, False): "right", (False, True): "left",
              (True, True): "neither"}[(bool(low_open), bool(high_open))]
    constraints: list[Any] = [Interval(Real, low, high, closed=closed, allow_inf=allow_inf)]
    if allow_none:
        constraints.append(None)
    if coerce and value is not None:
        if isinstance(value, (str, bytes)) or _is_bool(value):
            converted = None
        else:
            try:
                converted = float(value)
            except (TypeError, ValueError):
                converted = None
        if converted is None:
            raise param_error(name, owner, expected_text(constraints), value)
        value = converted
    value = check_param(value, constraints, name=name, owner=owner)
    return None if value is None else float(value)


def check_confidence_level(
    value: Any, *, owner: str, name: str = "confidence_level"
) -> float:
    """A confidence level: a float strictly inside ``(0, 1)`` (:func:`check_real` with both
    bounds open), returned as a Python float.

    The one rule of every ``confidence_level=`` of the statistics and inference functions:
    ``The 'confidence_level' parameter of bootstrap_ci must be a float in (0, 1). Got 1
    instead.``"""
    return check_real(value, name=name, owner=owner, low=0, high=1, low_open=True,
                      high_open=True)
