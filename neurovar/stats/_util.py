"""Shared helpers of :mod:`neurovar.stats`: parameter checks, warnings, pairwise coords."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import xarray as xr

from neurovar.dims import UNIT, check_dims, pair_dim

__all__: list[str] = []


def require_counts(responses: xr.DataArray, name: str, func: str) -> None:
    """Refuse responses marked as mean-subtracted residuals (``attrs["mean_subtracted"]``).

    Residuals (e.g. the Semedo et al. 2019 sample data) keep noise covariances exact but have
    lost the means, so a Fano factor computed from them would be a wrong number, not a value.
    """
    flag = getattr(responses, "attrs", {}).get("mean_subtracted", 0)  # type checks come later
    if isinstance(flag, (bool, Integral, np.integer, np.bool_)) and int(flag):
        raise ValueError(
            f"The '{name}' parameter of {func} holds mean-subtracted residuals "
            "(attrs['mean_subtracted'] = 1): the trial means are gone, so a Fano factor cannot "
            "be computed. Noise correlations and covariances are still valid on such data."
        )


def check_int(value: Any, name: str, func: str, *, low: int | None = None) -> int:
    """Return ``value`` as int or raise a sklearn-style error."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"The '{name}' parameter of {func} must be an int. Got {value!r} instead.")
    if low is not None and value < low:
        raise ValueError(
            f"The '{name}' parameter of {func} must be an int >= {low}. Got {value!r} instead."
        )
    return int(value)


def check_real(
    value: Any,
    name: str,
    func: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as float or raise a sklearn-style error naming the valid range."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(
            f"The '{name}' parameter of {func} must be a finite number in {lb}{lo}, {hi}{rb}. "
            f"Got {value!r} instead."
        )
    return float(value)


def check_option(value: Any, name: str, func: str, options: Sequence[str]) -> str:
    """Raise unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(
            f"The '{name}' parameter of {func} must be one of {tuple(options)!r}. "
            f"Got {value!r} instead."
        )
    return value


def warn_nan(
    n_bad: int,
    n_total: int,
    what: str,
    reason: str,
    *,
    consequence: str = "their values are NaN",
    stacklevel: int = 3,
) -> None:
    """Warn that ``n_bad`` of ``n_total`` entries were set to NaN (or left out), and why."""
    if n_bad > 0:
        warnings.warn(
            f"{n_bad} of {n_total} {what} {reason}; {consequence}.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


def is_dask(obj: xr.DataArray) -> bool:
    """True if ``obj`` is backed by a dask array."""
    return obj.chunks is not None


def unit_coords(responses: xr.DataArray, unit_dim: str) -> dict[Hashable, xr.Variable]:
    """Coordinates of ``responses`` that lie along ``unit_dim`` only."""
    return {
        name: coord.variable
        for name, coord in responses.coords.items()
        if coord.dims == (unit_dim,)
    }


def pairwise_dataarray(
    values: Any,
    coords: dict[Hashable, xr.Variable],
    *,
    unit_dim: str = UNIT,
    leading: Sequence[tuple[str, Any]] = (),
    name: str | None = None,
    attrs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """Wrap a ``(..., N, N)`` array with dims ``(..., unit, unit_j)``.

    Coordinates along ``unit_dim`` are attached to both axes; those on ``unit_j`` are renamed
    with the suffix ``_j`` (``unit_id`` -> ``unit_id_j``), the index coordinate named like the
    dim becomes ``unit_j``. ``leading`` gives ``(dim, coord_values_or_None)`` for extra leading
    axes.
    """
    unit_j = pair_dim(unit_dim)
    dims = [d for d, _ in leading] + [unit_dim, unit_j]
    out_coords: dict[Hashable, Any] = {}
    for d, c in leading:
        if c is not None:
            out_coords[d] = c
    for cname, var in coords.items():
        out_coords[cname] = (unit_dim, var.values, var.attrs)
        jname = unit_j if cname == unit_dim else f"{cname}_j"
        out_coords[jname] = (unit_j, var.values, var.attrs)
    return xr.DataArray(values, dims=dims, coords=out_coords, name=name, attrs=attrs or {})


def check_square(cov: xr.DataArray, name: str, unit_dim: str) -> str:
    """Check a pairwise ``(unit, unit_j)`` matrix; return the name of the second dim."""
    unit_j = pair_dim(unit_dim)
    check_dims(cov, [unit_dim, unit_j], name=name)
    if cov.sizes[unit_dim] != cov.sizes[unit_j]:
        raise ValueError(
            f"The '{name}' parameter must be square over ({unit_dim!r}, {unit_j!r}); "
            f"got sizes {cov.sizes[unit_dim]} and {cov.sizes[unit_j]}."
        )
    return unit_j


def resolve_rng(rng: None | int | np.random.Generator, func: str) -> np.random.Generator:
    """``np.random.default_rng(rng)`` with a clear error for anything else."""
    if rng is None or isinstance(rng, (np.random.Generator, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    if isinstance(rng, Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"The 'rng' parameter of {func} must be None, an int seed or a numpy Generator. "
        f"Got {type(rng).__name__} instead."
    )
