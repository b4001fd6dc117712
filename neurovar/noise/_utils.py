"""Private helpers shared by the noise subpackage: validation, seeds, covariance factors."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import xarray as xr

from neurovar._validation import (
    InvalidParameterError,
    check_covariance_matrix,
    param_error,
)

SHARES = ("flat", "channel")


def check_share(share: Any, *, owner: str) -> str:
    """Validate the ``share`` option (how a covariance is laid over a layer's units)."""
    if not isinstance(share, str) or share not in SHARES:
        raise param_error("share", owner, f"one of {SHARES!r}", share)
    return share


def check_nonneg_float(value: Any, *, name: str, owner: str, positive: bool = False) -> float:
    """A finite real number in ``[0, inf)`` (``(0, inf)`` with ``positive=True``)."""
    interval = "(0, inf)" if positive else "[0, inf)"
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise param_error(name, owner, f"a real number in {interval}", value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise param_error(name, owner, f"a real number in {interval}", value) from None
    if not math.isfinite(out) or (out <= 0 if positive else out < 0):
        raise param_error(name, owner, f"in {interval}", value)
    return out


def check_int(value: Any, *, name: str, owner: str, low: int = 1, high: int | None = None) -> int:
    """An int (not bool) in ``[low, high]`` (``[low, inf)`` when ``high`` is None)."""
    ok = (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, (int, np.integer))
        and low <= value
        and (high is None or value <= high)
    )
    if not ok:
        interval = f"[{low}, {'inf)' if high is None else f'{high}]'}"
        raise param_error(name, owner, f"an int in {interval}", value)
    return int(value)


def fresh_seed() -> int:
    """A fresh 63-bit seed from OS entropy, without touching any global RNG."""
    return int(np.random.SeedSequence().generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


def check_seed(seed: Any, *, owner: str) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise param_error("seed", owner, "a non-negative int or None", seed)
    return int(seed)


def as_numpy_matrix(cov: Any, *, name: str, owner: str) -> np.ndarray:
    """Covariance-like input (ndarray, tensor, DataArray) as a float64 numpy array."""
    if isinstance(cov, xr.DataArray):
        arr = np.asarray(cov.values, dtype=np.float64)
    elif isinstance(cov, torch.Tensor):
        arr = cov.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(cov, dtype=np.float64)
        except (TypeError, ValueError):
            raise param_error(
                name, owner, "a numeric array, tensor or DataArray", type(cov).__name__, raw=True
            ) from None
    if not np.all(np.isfinite(arr)):
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} contains NaN or infinite values.",
            name=name,
            owner=owner,
        )
    return arr


def psd_factor(
    cov: np.ndarray,
    *,
    name: str,
    owner: str,
    sym_tol: float = 1e-6,
    psd_tol: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Validate a covariance matrix and return ``(eigenvalues, eigenvectors, factor, info)``.

    The factor ``L = V diag(sqrt(max(lambda, 0)))`` satisfies ``L L^T = cov`` for any positive
    semi-definite ``cov``, singular or not (a Cholesky factor fails on singular matrices, which
    are the rule for covariances fitted from fewer samples than units).

    Eigenvalues in ``[-psd_tol * max|lambda|, 0)`` are rounding error and are clipped to 0;
    the clipping is reported in ``info`` (and warned about when larger than 1e-9 of the
    largest eigenvalue). The checks (square, symmetric within ``sym_tol``, positive
    semi-definite within ``psd_tol``) are the package's one covariance check,
    :func:`neurovar._validation.check_covariance_matrix`.
    """
    _, evals, evecs = check_covariance_matrix(
        cov, name=name, owner=owner, sym_tol=sym_tol, psd_tol=psd_tol
    )
    top = max(float(np.max(np.abs(evals))), np.finfo(np.float64).tiny)
    min_eval = float(evals[0])
    negative = evals < 0
    n_clipped = int(np.sum(negative))
    if n_clipped and -min_eval > 1e-9 * top:
        warnings.warn(
            f"{owner}: clipped {n_clipped} slightly negative eigenvalue(s) of '{name}' "
            f"(smallest {min_eval:.3g}, largest {top:.3g}) to 0.",
            RuntimeWarning,
            stacklevel=3,
        )
    evals = np.clip(evals, 0.0, None)
    factor = evecs * np.sqrt(evals)[None, :]
    positive = evals > 1e-12 * top
    info = {
        "min_eigenvalue": min_eval,
        "max_eigenvalue": float(evals[-1]),
        "n_clipped": n_clipped,
        "rank": int(np.sum(positive)),
        "condition_number": float(evals[-1] / evals[0]) if evals[0] > 0 else float("inf"),
    }
    return evals, evecs, factor, info
