"""One validation layer for every public call: one error class, one message shape.

Modelled on scikit-learn's ``sklearn/utils/_param_validation.py``: every check raises
:class:`InvalidParameterError` with the message

    The 'eps' parameter of PGD must be a float in [0, 1]. Got -0.1 instead.

so a user always learns *which* parameter of *which* function was wrong, what was expected and
what was given. :class:`InvalidParameterError` subclasses both :class:`ValueError` and
:class:`TypeError`, so ``except ValueError`` and ``except TypeError`` both keep working.

The checkers take the value first, then ``name`` (the parameter) and ``owner`` (the public
function or class that received it) as keywords, and return the normalised value (a Python
``int``/``float``/``bool``, a :class:`torch.device`, ...), so call sites read
``n = check_int(n, name="n_trials", owner="record_activations", low=1)``.

Constraints can also be stated as data next to a signature (:class:`Interval`,
:class:`Options`, :class:`InstanceOf`, :class:`Satisfies`, ``None``, ``callable``,
``"boolean"``, ``"random_state"``) and checked by :func:`check_param` /
:func:`check_params` or the :func:`validate_params` decorator; the imperative checkers above
(:func:`check_int`, :func:`check_real`, :func:`check_confidence_level`) are built on the same
:class:`Interval`. These are the package's only integer, real and choice checkers: every
subpackage calls them directly, with ``name=`` and ``owner=`` (a choice among strs with a "did
you mean" hint is ``check_param(value, [Options(str, options)], ...)``; any other choice,
bools included, is :func:`check_choice`). Only the rules of a subpackage's domain stay in it
(``noise._utils.check_share``, ``stats._util.check_square``, ...). The experiment config
(:mod:`neurovar.experiment.config`) states its rules with the same constraints.

This package is a bottom floor: it imports only numpy at module level (torch lazily, for the
device and tensor checks). Rooms: ``_base`` (the error, its message and shared helpers), ``_scalars``,
``_arrays``, ``_constraints`` (the declarative layer), ``_model`` (a model's input).
"""

from __future__ import annotations

from ._arrays import (
    available_memory,
    check_array,
    check_covariance_matrix,
    check_dim_names,
    check_memory,
    check_square_matrix,
    check_symmetric,
    check_tensor,
    memory_limit,
)
from ._base import (
    InvalidParameterError,
    describe,
    param_error,
    public_caller,
)
from ._constraints import (
    Constraint,
    InstanceOf,
    Interval,
    Options,
    Satisfies,
    check_confidence_level,
    check_int,
    check_param,
    check_params,
    check_real,
    did_you_mean,
    expected_text,
    make_constraint,
    validate_params,
)
from ._model import (
    check_model_input,
)
from ._scalars import (
    check_bool,
    check_choice,
    check_device,
    check_instance,
    check_rng,
    check_str,
)

__all__ = [
    "InvalidParameterError",
    "param_error",
    "public_caller",
    "describe",
    "check_bool",
    "check_int",
    "check_real",
    "check_confidence_level",
    "check_choice",
    "check_str",
    "check_instance",
    "check_rng",
    "check_device",
    "check_dim_names",
    "check_array",
    "check_tensor",
    "check_square_matrix",
    "check_symmetric",
    "check_covariance_matrix",
    "check_memory",
    "available_memory",
    "memory_limit",
    "Constraint",
    "Interval",
    "Options",
    "InstanceOf",
    "Satisfies",
    "make_constraint",
    "expected_text",
    "check_param",
    "check_params",
    "validate_params",
    "did_you_mean",
    "check_model_input",
]

for _name in __all__:  # tracebacks, docs and pickles show the package path
    globals()[_name].__module__ = __name__
del _name
