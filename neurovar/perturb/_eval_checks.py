"""Argument checks of :func:`~neurovar.perturb.evaluate_robustness` and
:func:`~neurovar.perturb.robust_accuracy` (one job: refuse bad input with a clear message).

Every check raises :class:`neurovar._validation.InvalidParameterError` naming the parameter, the
function and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Number
from typing import Any

import numpy as np

from neurovar._validation import (
    check_int,
    check_real,
    param_error,  # one order: (name, owner, ...)
)
from neurovar.dims import STIMULUS

from ._utils import renamed_kwarg

__all__: list[str] = []

#: Name of the stimulus id coordinate; the stimulus dim is :data:`neurovar.dims.STIMULUS`.
STIMULUS_ID = "stimulus_id"

#: Default confidence level of the intervals (one object: ``renamed_kwarg`` tells a passed
#: ``confidence_level`` from the default by identity).
CONFIDENCE_LEVEL = 0.95

_RESERVED_COORDS = ("eps", "attack", STIMULUS, STIMULUS_ID, "label")


def confidence_level(owner: str, confidence_level: Any, alpha: Any) -> float:
    """Resolve ``confidence_level`` and its deprecated complement ``alpha`` (FutureWarning)."""
    if alpha is not None:
        check_real(alpha, name="alpha", owner=owner, low=0.0, high=1.0, low_open=True)
        alpha = 1.0 - float(alpha)
    level = renamed_kwarg(
        owner, "alpha", "confidence_level", alpha, confidence_level, CONFIDENCE_LEVEL
    )
    check_real(level, name="confidence_level", owner=owner, low=0.0, high=1.0, low_open=True)
    if level == 1.0:
        raise param_error("confidence_level", owner, "a float in (0, 1)", level)
    return float(level)


def check_common(owner: str, n_evaluations: Any, batch_size: Any, num_threads: Any) -> None:
    """``n_evaluations >= 1``, ``batch_size`` None or >= 1, ``num_threads`` None or in [1, 4096]."""
    check_int(n_evaluations, name="n_evaluations", owner=owner, low=1)
    if batch_size is not None:
        check_int(batch_size, name="batch_size", owner=owner, low=1)
    if num_threads is not None:
        # torch.set_num_threads takes a C int; more threads than that is never meant
        check_int(num_threads, name="num_threads", owner=owner, low=1, high=4096)


def check_tags(tags: Any, owner: str) -> dict[str, Any]:
    """Tags: a mapping of str to a scalar (str, bool, int, float), stored as scalar coords."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise param_error("tags", owner, "a mapping {name: scalar} or None", tags)
    out = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key.isidentifier() or key in _RESERVED_COORDS:
            raise param_error(
                "tags",
                owner,
                f"a mapping whose keys are identifiers other than {list(_RESERVED_COORDS)}",
                key,
            )
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, (str, bool, Number)):
            raise param_error("tags", owner, "a mapping to scalars (str, bool, int, float)", value)
        out[key] = value
    return out


def check_eps_list(eps: Any, norm: str, owner: str) -> list[Any]:
    """One radius or a non-empty sequence of distinct radii: >= 0, and <= 1 for ``"linf"``.

    ``eps = 0`` is allowed: it is the clean point of a sweep (see
    :func:`neurovar.perturb.spec.check_strength`).
    """
    eps_list = [eps] if np.isscalar(eps) else list(eps)
    if not eps_list:
        raise param_error("eps", owner, "a number or a non-empty sequence of numbers", eps)
    for e in eps_list:
        if norm == "linf":
            check_real(e, name="eps", owner=owner, low=0.0, high=1.0)
        else:
            check_real(e, name="eps", owner=owner, low=0.0)
    if len(set(eps_list)) != len(eps_list):
        raise param_error("eps", owner, "a sequence of distinct values", eps)
    return eps_list


def check_budget(owner: str, steps: Any, n_queries: Any, n_target_classes: Any) -> dict[str, Any]:
    """The attack budget (each an int >= 1), as the keywords the attack factories take."""
    for name, value in (
        ("steps", steps),
        ("n_queries", n_queries),
        ("n_target_classes", n_target_classes),
    ):
        check_int(value, name=name, owner=owner, low=1)
    return {"steps": steps, "n_queries": n_queries, "n_target_classes": n_target_classes}
