"""Dimension names of the neurovar data model and the checks that give clear errors.

One layer's (or one brain area's) recording is an :class:`xarray.DataArray` with dims
``("trial", "stimulus", "unit")``. Every statistic in :mod:`neurovar.stats` reduces over
these *named* dims, so ANN units and cortical neurons are handled by the same code. Pairwise
results carry the dims ``("unit", "unit_j")`` (Elephant's ``_i``/``_j`` naming).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from ._validation import InvalidParameterError, check_bool, check_dim_names

TRIAL = "trial"
STIMULUS = "stimulus"
UNIT = "unit"
UNIT_J = "unit_j"
RESPONSE_DIMS: tuple[str, str, str] = (TRIAL, STIMULUS, UNIT)

__all__ = [
    "TRIAL",
    "STIMULUS",
    "UNIT",
    "UNIT_J",
    "RESPONSE_DIMS",
    "check_dims",
    "check_responses",
    "pair_dim",
    "unit_coords",
]


def pair_dim(dim: str) -> str:
    """Name of the second member of a pairwise dimension: ``"unit"`` -> ``"unit_j"``."""
    return f"{dim}_j"


def check_dims(
    obj: xr.DataArray | xr.Dataset,
    required: Iterable[str],
    *,
    name: str = "responses",
    allow_extra: bool = True,
    min_sizes: dict[str, int] | None = None,
    owner: str | None = None,
    params: dict[str, str] | None = None,
) -> None:
    """Raise a clear error unless ``obj`` has the ``required`` dims.

    Parameters
    ----------
    obj
        The xarray object to check.
    required
        Dimension names that must be present.
    name
        Name of the parameter, used in the error message.
    allow_extra
        If False, dims other than ``required`` are an error too.
    min_sizes
        Minimum length per dim, e.g. ``{"trial": 2}`` for a variance.
    owner
        The public function checking, named in the message.
    params
        ``{dim: parameter name}`` for dims that a parameter of ``owner`` chose (``trial_dim``,
        ``unit_dim``, ...): a missing one is then blamed on that parameter.

    Raises
    ------
    neurovar._validation.InvalidParameterError
        (a TypeError and a ValueError) If ``obj`` is not an xarray DataArray or Dataset, or
        naming the missing (or extra, or repeated) dims, the dims that exist, and how to rename.
    """
    of = f"The '{name}' parameter" + (f" of {owner}" if owner else "")

    def fail(message: str) -> InvalidParameterError:
        return InvalidParameterError(message, name=name, owner=owner)

    if isinstance(obj, xr.DataTree):
        layers = list(obj.children)
        raise fail(
            f"{of} must be an xarray.DataArray, got a DataTree (a recording of "
            f"layers {layers!r}); select one layer, e.g. tree[{(layers or ['layer'])[0]!r}]['activation']."
        )
    if not isinstance(obj, (xr.DataArray, xr.Dataset)):
        raise fail(
            f"{of} must be an xarray.DataArray with named dims. "
            f"Got {type(obj).__name__} instead; wrap arrays with "
            f"xr.DataArray(values, dims={RESPONSE_DIMS!r})."
        )
    required = list(required)
    params = dict(params or {})
    for d in required:
        if not isinstance(d, str):
            pname = params.get(d, "dims") if isinstance(d, Hashable) else "dims"
            raise InvalidParameterError(
                f"The '{pname}' parameter{' of ' + owner if owner else ''} must be a dimension "
                f"name (str). Got {d!r} instead.",
                name=pname,
                owner=owner,
            )
    repeated = sorted({str(d) for d in required if required.count(d) > 1})
    if repeated:
        raise fail(
            f"{of} is checked for the dims {tuple(required)!r}, which name {repeated!r} twice; "
            "each dim parameter (trial_dim, stimulus_dim, unit_dim, ...) must name a different dim."
        )
    have = list(obj.dims)
    missing = [d for d in required if d not in have]
    if missing:
        hint = ""
        spare = [d for d in have if d not in required]
        if spare and len(spare) >= len(missing):
            mapping = dict(zip(spare, missing))
            hint = f" If they are named differently, rename them, e.g. {name}.rename({mapping!r}),"
            hint += " or pass the dim names as keyword arguments."
        blamed = [params[d] for d in missing if d in params]
        prefix = ""
        if blamed:
            prefix = (
                f"The '{blamed[0]}' parameter{' of ' + owner if owner else ''} must name a "
                f"dimension of '{name}'. Got {missing[0]!r} instead. "
            )
        raise fail(
            f"{prefix}{of} must have dims {tuple(required)!r}; "
            f"missing {tuple(missing)!r}, found {tuple(have)!r}.{hint}"
        )
    if not allow_extra:
        extra = [d for d in have if d not in required]
        if extra:
            raise fail(
                f"{of} must have exactly the dims {tuple(required)!r}; "
                f"found extra dims {tuple(extra)!r}. Select or reduce them first, "
                f"e.g. {name}.isel({extra[0]}=0)."
            )
    empty = [d for d in required if obj.sizes[d] == 0]
    if empty:
        raise fail(f"{of} is empty along {tuple(empty)!r} (sizes {dict(obj.sizes)!r}).")
    for dim, size in (min_sizes or {}).items():
        if obj.sizes[dim] < size:
            raise fail(f"{of} needs at least {size} entries along '{dim}'; got {obj.sizes[dim]}.")


def check_responses(
    responses: xr.DataArray,
    *,
    trial_dim: str = TRIAL,
    stimulus_dim: str | None = STIMULUS,
    unit_dim: str = UNIT,
    name: str = "responses",
    min_trials: int = 1,
    owner: str | None = None,
) -> None:
    """Check a ``(trial, stimulus, unit)`` response array (dims may be renamed by keyword).

    ``stimulus_dim=None`` checks a single-condition array with dims ``(trial, unit)``. The dim
    names must be distinct strs (``trial_dim="unit"`` would silently reduce over units).
    """
    check_dim_names(
        {"trial_dim": trial_dim, "stimulus_dim": stimulus_dim, "unit_dim": unit_dim},
        owner=owner or "check_responses",
    )
    if isinstance(responses, xr.Dataset):
        raise InvalidParameterError(
            f"The '{name}' parameter must be a DataArray, got a Dataset with variables "
            f"{list(responses.data_vars)!r}; select one, e.g. ds['activation'].",
            name=name,
            owner=owner,
        )
    dims: Sequence[str] = [d for d in (trial_dim, stimulus_dim, unit_dim) if d is not None]
    params = {
        d: p
        for d, p in (
            (trial_dim, "trial_dim"),
            (stimulus_dim, "stimulus_dim"),
            (unit_dim, "unit_dim"),
        )
        if d is not None
    }
    check_dims(
        responses, dims, name=name, min_sizes={trial_dim: min_trials}, owner=owner, params=params
    )
    check_dims(responses, dims, name=name, min_sizes={trial_dim: min_trials})


def unit_coords(
    layer: str, shape: Sequence[int], *, pair: bool = False
) -> dict[str, tuple[str, np.ndarray]]:
    """Coordinates along ``unit`` for one layer's output of per-sample ``shape``: the one builder.

    Recording (:func:`neurovar.record.record_activations`) and fitting
    (:func:`neurovar.noise.fit_perturbation_covariance`) both use it, so a fitted covariance
    and a recording's noise covariance (:func:`neurovar.stats.noise_covariance`) line up unit
    by unit. ``(C, H, W)`` maps give ``channel``, ``y``, ``x``; every other shape gives
    ``channel`` = index along its first axis (``(F,)`` vectors: the feature index; a
    ``share="channel"`` covariance passes ``(C,)``). ``unit_id`` is the flat index (C-order,
    as ``tensor.flatten(1)``) and ``layer`` the layer name, like Brain-Score's neuroid
    coordinates.

    Parameters
    ----------
    layer
        Layer name (stored as the ``layer`` coordinate).
    shape
        Per-sample output shape (without the batch dim).
    pair
        Also return the twins on ``unit_j`` (``unit_id_j``, ``channel_j``, ...) for a pairwise
        ``(unit, unit_j)`` matrix.

    Returns
    -------
    dict
        ``{name: (dim, values)}``, ready for ``xr.DataArray(coords=...)``.
    """
    pair = check_bool(pair, name="pair", owner="unit_coords")
    shape = tuple(int(s) for s in shape)
    n_units = int(np.prod(shape)) if shape else 1
    coords: dict[str, tuple[str, np.ndarray]] = {
        "unit_id": (UNIT, np.arange(n_units)),
        "layer": (UNIT, np.full(n_units, layer, dtype=object)),
    }
    if len(shape) == 3:
        c, y, x = np.unravel_index(np.arange(n_units), shape)
        coords.update(channel=(UNIT, c), y=(UNIT, y), x=(UNIT, x))
    elif len(shape) >= 1:
        coords["channel"] = (UNIT, np.unravel_index(np.arange(n_units), shape)[0])
    if pair:
        coords.update({f"{name}_j": (UNIT_J, values) for name, (_, values) in coords.items()})
    return coords


# Imported last: when xarray is not imported yet, importing it registers the ``.nv`` accessor
# (see neurovar/__init__.py), which imports neurovar.stats, which imports names from this
# module; they must exist by then (``import neurovar.dims`` as a program's first import).
import xarray as xr  # noqa: E402
