"""Private helpers shared by the noise subpackage: its domain checks (``share``, a
calibration), seeds, covariance factors. Generic checks (ints, reals, seeds) are called from
:mod:`neurovar._validation` directly."""

from __future__ import annotations

import warnings
from numbers import Real
from typing import Any

import numpy as np
import torch
import xarray as xr

from neurovar._validation import (
    Interval,
    InvalidParameterError,
    Options,
    Satisfies,
    check_covariance_matrix,
    check_param,
    check_params,
    param_error,
)

SHARES = ("flat", "channel")


def check_share(share: Any, *, owner: str) -> str:
    """Validate the ``share`` option (how a covariance is laid over a layer's units)."""
    return check_param(share, [Options(str, SHARES)], name="share", owner=owner)


def fresh_seed() -> int:
    """A fresh 63-bit seed from OS entropy, without touching any global RNG."""
    return int(np.random.SeedSequence().generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


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


#: The constraints of :class:`neurovar.noise.NoiseCalibration`'s fields, stated as data: a
#: variance ratio and variances are finite and >= 0; the SNR may be inf (m = 0).
CALIBRATION_CONSTRAINTS: dict[str, list[Any]] = {
    "layer": [Satisfies(lambda v: isinstance(v, str) and bool(v), "a non-empty str")],
    "m": [Interval(Real, 0, None)],
    "activation_variance": [Interval(Real, 0, None)],
    "noise_variance": [Interval(Real, 0, None)],
    "snr": [Interval(Real, 0, None, allow_inf=True)],
    "snr_db": [Interval(Real, None, None, allow_inf=True)],
    "scale": [Interval(Real, 0, None)],
}


def check_calibration(calibration: Any) -> None:
    """Check a :class:`neurovar.noise.NoiseCalibration` against
    :data:`CALIBRATION_CONSTRAINTS` (its ``__post_init__``)."""
    check_params({k: getattr(calibration, k) for k in CALIBRATION_CONSTRAINTS},
                 CALIBRATION_CONSTRAINTS, owner="NoiseCalibration")
