"""Shared helpers of :mod:`neurovar.stats`: its domain checks (counts, dim names, square and
covariance matrices), warnings, pairwise coords. Generic checks (ints, reals, choices) are
called from :mod:`neurovar._validation` directly."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import xarray as xr

from neurovar import _validation as _v
from neurovar._validation import InvalidParameterError, check_covariance_matrix, param_error
from neurovar._validation import check_dim_names as _check_dim_names
from neurovar.dims import UNIT, check_dims, pair_dim

__all__: list[str] = []


def require_counts(responses: xr.DataArray, name: str, func: str) -> None:
    """Refuse responses marked as mean-subtracted residuals (``attrs["mean_subtracted"]``).

    Residuals (e.g. the Semedo et al. 2019 sample data) keep noise covariances exact but have
    lost the means, so a Fano factor computed from them would be a wrong number, not a value.
    """
    flag = getattr(responses, "attrs", {}).get("mean_subtracted", 0)  # type checks come later
    if isinstance(flag, np.ndarray) and flag.size == 1:
        flag = flag.item()
    if not isinstance(flag, (bool, Integral, np.integer, np.bool_)) or int(flag) not in (0, 1):
        raise param_error(
            name,
            func,
            "marked with attrs['mean_subtracted'] as 0 or 1 (an int or bool)",
            flag,
            hint="A string such as '1' is ambiguous: set the attr to 0 (counts) or 1 (residuals).",
        )
    if int(flag):
        raise InvalidParameterError(
            f"The '{name}' parameter of {func} holds mean-subtracted residuals "
            "(attrs['mean_subtracted'] = 1): the trial means are gone, so a Fano factor cannot "
            "be computed. Noise correlations and covariances are still valid on such data.",
            name=name,
            owner=func,
        )


def check_dim_names(func: str, responses: Any = None, **dims: Any) -> None:
    """Dim-name parameters (``trial_dim="trial"``, ...) are distinct strs and, when
    ``responses`` is a DataArray, dims of it (named by parameter and function)."""
    have = tuple(responses.dims) if isinstance(responses, (xr.DataArray, xr.Dataset)) else None
    _check_dim_names(dims, owner=func, have=have)


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


class UnitCoords(dict):
    """Coordinates along the unit dim (name -> Variable); ``indexed`` lists those that carry a
    non-dimension index in the source (e.g. ``channel`` after ``set_xindex("channel")``)."""

    indexed: tuple[Hashable, ...] = ()


def unit_coords(responses: xr.DataArray, unit_dim: str) -> UnitCoords:
    """Coordinates of ``responses`` that lie along ``unit_dim`` only (computed if lazy)."""
    out = UnitCoords(
        {
            name: coord.variable.compute()
            for name, coord in responses.coords.items()
            if coord.dims == (unit_dim,)
        }
    )
    out.indexed = tuple(name for name in out if name != unit_dim and name in responses.xindexes)
    return out


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
    dim becomes ``unit_j``. Coordinates listed in ``coords.indexed`` (see :func:`unit_coords`)
    get an index on both axes. ``leading`` gives ``(dim, coord_values_or_None)`` for extra leading
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
    out = xr.DataArray(values, dims=dims, coords=out_coords, name=name, attrs=attrs or {})
    # keep selectable non-dimension indexes (``r.sel(channel=3, channel_j=5)``)
    for cname in getattr(coords, "indexed", ()):
        out = out.set_xindex(cname).set_xindex(f"{cname}_j")
    return out


def check_square(cov: xr.DataArray, name: str, unit_dim: str, func: str | None = None) -> str:
    """Check a pairwise ``(unit, unit_j)`` matrix; return the name of the second dim."""
    if not isinstance(unit_dim, str):
        raise param_error("unit_dim", func or "check_square", "a dimension name (str)", unit_dim)
    unit_j = pair_dim(unit_dim)
    check_dims(cov, [unit_dim, unit_j], name=name, owner=func, params={unit_dim: "unit_dim"})
    if cov.sizes[unit_dim] != cov.sizes[unit_j]:
        raise InvalidParameterError(
            f"The '{name}' parameter{' of ' + func if func else ''} must be square over "
            f"({unit_dim!r}, {unit_j!r}); got sizes {cov.sizes[unit_dim]} and {cov.sizes[unit_j]}.",
            name=name,
            owner=func,
        )
    return unit_j


def resolve_rng(rng: None | int | np.random.Generator, func: str) -> np.random.Generator:
    """``np.random.default_rng(rng)`` after :func:`neurovar._validation.check_rng` (numpy
    only: None, an int seed >= 0, a Generator or SeedSequence)."""
    return np.random.default_rng(_v.check_rng(rng, owner=func, torch_ok=False))


def check_symmetric_psd(
    mats: np.ndarray,
    name: str,
    func: str,
    *,
    sym_tol: float = 1e-6,
    psd_tol: float = 1e-6,
) -> None:
    """Refuse covariance matrices (``(..., N, N)``) that are not symmetric or not positive
    semi-definite within a relative tolerance (units with a non-finite diagonal left out).

    Each matrix goes through :func:`neurovar._validation.check_covariance_matrix`, the
    package's one check: ``max |C - C^T| <= sym_tol * max |C|`` and
    ``lambda_min >= -psd_tol * max |lambda|``; rounding error passes, ``-C`` or a
    non-symmetric matrix is an error instead of a plausible number.
    """
    mats = np.asarray(mats, dtype=np.float64)
    n = mats.shape[-1]
    for m in mats.reshape(-1, n, n):
        sub, _ = drop_nan_units(m)
        if sub.size == 0 or not np.all(np.isfinite(sub)):
            continue
        check_covariance_matrix(
            sub, name=name, owner=func, sym_tol=sym_tol, psd_tol=psd_tol, eigenvectors=False
        )


def drop_nan_units(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows/columns of a square matrix whose diagonal is finite, and that mask.

    Units without a finite variance (all-NaN units of a covariance, zero-variance units of a
    correlation matrix) are treated as absent rather than poisoning the whole matrix.
    """
    keep = np.isfinite(np.diagonal(c, axis1=-2, axis2=-1))
    return c[np.ix_(keep, keep)], keep


def center(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """``x`` minus its mean along ``axis``, exactly 0 where ``x`` is constant along ``axis``.

    The mean of equal floats is not always exact (ten copies of 0.1 average to
    0.10000000000000002), so a constant unit would otherwise get a variance of ~1e-33 and
    z-scores of +-1 made of rounding error instead of being reported as zero-variance.
    """
    resid = x - x.mean(axis=axis, keepdims=True)
    const = np.ptp(x, axis=axis, keepdims=True) == 0
    return np.where(const, 0.0, resid)
