"""Eigenspectrum and dimensionality of a covariance matrix."""

from __future__ import annotations

import numpy as np
import xarray as xr

from neurovar._validation import check_int
from neurovar.dims import UNIT, check_dims

from ._util import (
    check_square,
    check_symmetric_psd,
    drop_nan_units,
    is_dask,
    warn_nan,
)

__all__ = ["eigenspectrum", "participation_ratio", "power_law_exponent"]

COMPONENT = "component"


def _dead_units(c: np.ndarray) -> np.ndarray:
    """Mask of units whose variance is zero relative to the largest (``<= n eps max``).

    Dead ReLU units (constant 0) have a zero row and column; the rounding error of the
    eigendecomposition then gives eigenvalues like 1e-64 that are not a spectrum.
    """
    diag = np.diagonal(c, axis1=-2, axis2=-1)
    top = np.max(diag, initial=0.0)
    return diag <= c.shape[-1] * np.finfo(float).eps * top


def _numerically_zero(lam: np.ndarray) -> np.ndarray:
    """Eigenvalues indistinguishable from 0 given the largest: ``|lambda| <= n eps lambda_1``.

    The tolerance is the one :func:`numpy.linalg.matrix_rank` uses for the rank.
    """
    finite = lam[np.isfinite(lam)]
    top = np.max(np.abs(finite), initial=0.0)
    return np.isfinite(lam) & (np.abs(lam) <= lam.size * np.finfo(float).eps * top)


def _eigvals_desc(c: np.ndarray) -> np.ndarray:
    """Eigenvalues (largest first) of one matrix, units with a non-finite variance left out.

    Units with zero variance (relative to the largest) are left out too, and eigenvalues
    numerically zero relative to the largest are set to exactly 0. The spectrum is padded with
    NaN to the full number of units; a matrix with non-finite entries between the remaining
    units gives all NaN.
    """
    sub, _ = drop_nan_units(c)
    out = np.full(c.shape[-1], np.nan)
    if np.all(np.isfinite(sub)):
        sub = sub[np.ix_(~_dead_units(sub), ~_dead_units(sub))]
        lam = np.linalg.eigvalsh(sub)[::-1]
        lam[_numerically_zero(lam)] = 0.0
        out[: sub.shape[0]] = lam
    return out


def _report_dead(cov: xr.DataArray, unit_dim: str, unit_j: str) -> None:
    """Warn how many units of finite variance have zero variance and are left out."""
    if is_dask(cov):
        return
    n = cov.sizes[unit_dim]
    mats = np.asarray(cov.transpose(..., unit_dim, unit_j).values, dtype=np.float64)
    mats = mats.reshape(-1, n, n)
    n_dead = 0
    for m in mats:
        sub, _ = drop_nan_units(m)
        if np.all(np.isfinite(sub)):
            n_dead += int(np.sum(_dead_units(sub)))
    where = "units" if mats.shape[0] == 1 else f"units (over {mats.shape[0]} matrices)"
    warn_nan(
        n_dead,
        mats.shape[0] * n,
        where,
        "have zero variance (relative to the largest; e.g. dead ReLU units)",
        consequence="they were left out of the eigenspectrum, which is padded with NaN",
        stacklevel=4,
    )


def _participation_ratio(c: np.ndarray) -> float:
    """tr(C)^2 / sum_ij C_ij^2 of one matrix, units with a non-finite variance left out."""
    sub, _ = drop_nan_units(c)
    frob = float(np.sum(sub * sub))
    if not np.all(np.isfinite(sub)) or frob <= 0:
        return np.nan
    return float(np.trace(sub)) ** 2 / frob


def _report_nan(cov: xr.DataArray, unit_dim: str, unit_j: str, func: str = "eigenspectrum") -> int:
    """Warn how many units were left out and how many matrices are NaN; return the latter.

    Dask-backed input stays lazy and is not inspected.
    """
    if is_dask(cov):
        return 0
    n = cov.sizes[unit_dim]
    mats = np.asarray(cov.transpose(..., unit_dim, unit_j).values, dtype=np.float64)
    mats = mats.reshape(-1, n, n)
    check_symmetric_psd(mats, "cov", func)
    n_left_out = n_bad = 0
    for m in mats:
        sub, keep = drop_nan_units(m)
        n_left_out += int(np.sum(~keep))
        n_bad += int(not np.all(np.isfinite(sub)))
    where = "units" if mats.shape[0] == 1 else f"units (over {mats.shape[0]} matrices)"
    warn_nan(
        n_left_out,
        mats.shape[0] * n,
        where,
        "have a non-finite variance on the diagonal (e.g. zero-variance units of a "
        "correlation matrix, or units without valid trials)",
        consequence="they were left out",
        stacklevel=4,
    )
    warn_nan(
        n_bad,
        mats.shape[0],
        "matrices",
        "have non-finite entries between units with a finite variance",
        stacklevel=4,
    )
    return n_bad


def eigenspectrum(cov: xr.DataArray, *, unit_dim: str = UNIT) -> xr.DataArray:
    r"""Eigenvalues of a covariance matrix, largest first.

    :math:`\Sigma = U \Lambda U^\top`, :math:`\lambda_1 \ge \lambda_2 \ge \dots`, computed
    with :func:`numpy.linalg.eigvalsh` (the matrix is taken as symmetric). Extra dims (e.g.
    layers) are kept; dask-backed input is computed block by block.

    Units whose diagonal entry is NaN (a noise correlation of a zero-variance unit, a
    covariance of a unit without valid trials) are left out, with a warning that says how
    many, and the spectrum of the remaining units is padded with NaN at the end; any other
    non-finite entry gives an all-NaN spectrum, with a warning.

    Units with zero variance (diagonal :math:`\le N \epsilon \max_i \Sigma_{ii}`, e.g. dead
    ReLU units) are left out the same way, with a counted warning: their rounding-error
    eigenvalues (1e-64 and the like) are not a spectrum. Eigenvalues numerically zero
    relative to the largest, :math:`|\lambda_k| \le N \epsilon \lambda_1` (the tolerance of
    :func:`numpy.linalg.matrix_rank`; e.g. beyond the rank of a covariance from fewer trials
    than units), are returned as exactly 0.

    Parameters
    ----------
    cov
        Covariance with dims ``(unit, unit_j)``, e.g. from :func:`noise_covariance`.
    unit_dim
        Name of the unit dim; the second dim is ``unit_dim + "_j"``.

    Returns
    -------
    xarray.DataArray
        ``"eigenvalue"`` over dim ``component`` whose coordinate is the rank 1, 2, ...

    References
    ----------
    Stringer, C. et al. (2019). High-dimensional geometry of population responses in visual
    cortex. Nature 571, 361-365.
    """
    unit_j = check_square(cov, "cov", unit_dim, "eigenspectrum")
    n = cov.sizes[unit_dim]
    _report_nan(cov, unit_dim, unit_j, "eigenspectrum")
    _report_dead(cov, unit_dim, unit_j)
    out = xr.apply_ufunc(
        _eigvals_desc,
        cov,
        input_core_dims=[[unit_dim, unit_j]],
        output_core_dims=[[COMPONENT]],
        vectorize=True,
        dask="parallelized",
        output_dtypes=[float],
        dask_gufunc_kwargs={"output_sizes": {COMPONENT: n}},
    )
    out = out.assign_coords({COMPONENT: np.arange(1, n + 1)})
    out.name = "eigenvalue"
    return out


def participation_ratio(cov: xr.DataArray, *, unit_dim: str = UNIT) -> xr.DataArray:
    r"""Participation ratio, an effective dimensionality of a covariance matrix.

    .. math::

        \mathrm{PR} = \frac{\left(\sum_k \lambda_k\right)^2}{\sum_k \lambda_k^2}
                    = \frac{\operatorname{tr}(\Sigma)^2}{\operatorname{tr}(\Sigma^2)},

    between 1 (one dimension) and N (isotropic). Computed from the trace and the Frobenius
    norm (for symmetric :math:`\Sigma`, :math:`\operatorname{tr}\Sigma^2 = \sum_{ij}
    \Sigma_{ij}^2`), without an eigendecomposition. Units with a NaN diagonal entry are left
    out as in :func:`eigenspectrum`; a zero matrix gives NaN, with a warning.

    Parameters
    ----------
    cov
        Covariance with dims ``(unit, unit_j)``; extra dims are kept.
    unit_dim
        Name of the unit dim.

    Returns
    -------
    xarray.DataArray
        ``"participation_ratio"``, with the unit dims reduced.

    References
    ----------
    Gao, P. et al. (2017). A theory of multineuronal dimensionality, dynamics and measurement.
    bioRxiv 214262. Recanatesi, S. et al. (2022). A scale-dependent measure of system
    dimensionality. Patterns 3, 100555.
    """
    unit_j = check_square(cov, "cov", unit_dim, "participation_ratio")
    n_bad = _report_nan(cov, unit_dim, unit_j, "participation_ratio")
    pr = xr.apply_ufunc(
        _participation_ratio,
        cov,
        input_core_dims=[[unit_dim, unit_j]],
        vectorize=True,
        dask="parallelized",
        output_dtypes=[float],
    )
    pr.name = "participation_ratio"
    if not is_dask(pr):
        warn_nan(int(pr.isnull().sum()) - n_bad, pr.size, "covariance matrices", "are all zero")
    return pr


def _fit_exponent(lam: np.ndarray, min_rank: int, max_rank: int | None) -> float:
    ranks = np.arange(1, lam.size + 1)
    hi = lam.size if max_rank is None else min(max_rank, lam.size)
    usable = (lam > 0) & np.isfinite(lam) & ~_numerically_zero(lam)
    sel = (ranks >= min_rank) & (ranks <= hi) & usable
    if sel.sum() < 2:
        return np.nan
    slope = np.polyfit(np.log(ranks[sel]), np.log(lam[sel]), 1)[0]
    return -slope


def _n_excluded(lam: np.ndarray, min_rank: int, max_rank: int | None) -> float:
    """Eigenvalues in the rank range that are finite but <= 0 or numerically zero."""
    ranks = np.arange(1, lam.size + 1)
    hi = lam.size if max_rank is None else min(max_rank, lam.size)
    in_range = (ranks >= min_rank) & (ranks <= hi) & np.isfinite(lam)
    bad = (lam <= 0) | _numerically_zero(lam)
    return float(np.sum(in_range & bad))


def power_law_exponent(
    cov: xr.DataArray,
    *,
    min_rank: int = 1,
    max_rank: int | None = None,
    unit_dim: str = UNIT,
) -> xr.DataArray:
    r"""Exponent :math:`\alpha` of a power-law eigenspectrum :math:`\lambda_n \propto n^{-\alpha}`.

    Least-squares fit of :math:`\log\lambda_n = c - \alpha \log n` over ranks
    ``min_rank <= n <= max_rank`` (positive eigenvalues only; eigenvalues numerically zero
    relative to the largest, :math:`\lambda_n \le N \epsilon \lambda_1`, never enter the fit,
    and a warning counts those left out of the range). Stringer et al. (2019) found
    :math:`\alpha \approx 1` in mouse V1 fitting ranks 11 to 500; the tail of an estimated
    spectrum falls off with too few trials, so choose the range deliberately.

    Parameters
    ----------
    cov
        Either a covariance with dims ``(unit, unit_j)`` or an eigenspectrum from
        :func:`eigenspectrum` (dim ``component``, largest first).
    min_rank, max_rank
        Range of ranks (1-based, inclusive) to fit; ``max_rank=None`` uses all.
    unit_dim
        Name of the unit dim.

    Returns
    -------
    xarray.DataArray
        ``"power_law_exponent"`` (:math:`\alpha`); NaN if fewer than 2 positive eigenvalues
        lie in the range.

    References
    ----------
    Stringer, C., Pachitariu, M., Steinmetz, N., Carandini, M. & Harris, K. D. (2019).
    High-dimensional geometry of population responses in visual cortex. Nature 571, 361-365.
    """
    func = "power_law_exponent"
    min_rank = check_int(min_rank, name="min_rank", owner=func, low=1)
    if max_rank is not None:
        max_rank = check_int(max_rank, name="max_rank", owner=func, low=min_rank + 1)
    if isinstance(cov, xr.DataArray) and COMPONENT in cov.dims:
        spec = cov
    else:
        check_dims(cov, [unit_dim], name="cov", owner=func, params={unit_dim: "unit_dim"})
        spec = eigenspectrum(cov, unit_dim=unit_dim)
    if not is_dask(spec):
        lam = np.asarray(spec.transpose(..., COMPONENT).values, dtype=float)
        lam = lam.reshape(-1, lam.shape[-1])
        warn_nan(
            int(sum(_n_excluded(row, min_rank, max_rank) for row in lam)),
            int(np.isfinite(lam).sum()),
            "eigenvalues",
            "in the fitted rank range are zero or numerically zero relative to the largest "
            "(|lambda| <= n eps lambda_1)",
            consequence="they were left out of the power-law fit",
        )
    out = xr.apply_ufunc(
        _fit_exponent,
        spec,
        input_core_dims=[[COMPONENT]],
        kwargs={"min_rank": min_rank, "max_rank": max_rank},
        vectorize=True,
        dask="parallelized",
        output_dtypes=[float],
    )
    out.name = "power_law_exponent"
    out.attrs = {"min_rank": min_rank, "max_rank": "all" if max_rank is None else max_rank}
    return out
