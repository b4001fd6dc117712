"""Checks of arrays, tensors, covariance matrices and memory budgets."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from ._base import _interval, param_error


def check_dim_names(
    dims: Mapping[str, Hashable | None],
    *,
    owner: str,
    have: Sequence[Hashable] | None = None,
    data_name: str = "responses",
) -> None:
    """Dim-name parameters (``{"trial_dim": "trial", ...}``) are hashable, distinct, and (when
    ``have`` is given) dims of the data. ``None`` entries are skipped."""
    seen: dict[Hashable, str] = {}
    for pname, dim in dims.items():
        if dim is None:
            continue
        try:
            hash(dim)
        except TypeError:
            raise param_error(pname, owner, "a dimension name (str)", dim) from None
        if not isinstance(dim, str):
            raise param_error(pname, owner, "a dimension name (str)", dim)
        if dim in seen:
            raise param_error(
                pname,
                owner,
                f"a dimension name different from {seen[dim]}={dim!r}",
                dim,
                hint="Each dim parameter must name a different dimension.",
            )
        seen[dim] = pname
        if have is not None and dim not in have:
            raise param_error(
                pname, owner, f"a dimension of {data_name!r} (one of {tuple(have)!r})", dim
            )


def check_array(
    value: Any,
    *,
    name: str,
    owner: str,
    ndim: int | Sequence[int] | None = None,
    allow_empty: bool = False,
    allow_nan: bool = False,
    allow_inf: bool = False,
    dtype: Any = np.float64,
) -> np.ndarray:
    """Array-like as a numeric numpy array: right ``ndim``, non-empty, finite (unless allowed)."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise param_error(name, owner, "a numeric array", type(value).__name__, raw=True) from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise param_error(name, owner, f"a {want} array", f"shape {arr.shape}", raw=True)
    if not allow_empty and arr.size == 0:
        raise param_error(name, owner, "a non-empty array", f"shape {arr.shape}", raw=True)
    if np.issubdtype(arr.dtype, np.inexact):
        n_nan = int(np.isnan(arr).sum()) if not allow_nan else 0
        n_inf = int(np.isinf(arr).sum()) if not allow_inf else 0
        if n_nan or n_inf:
            raise param_error(
                name,
                owner,
                "finite (no NaN or infinite values)",
                f"{n_nan} NaN and {n_inf} infinite value(s)",
                raw=True,
            )
    return arr


def check_square_matrix(mat: np.ndarray, *, name: str, owner: str) -> None:
    """Refuse anything but a non-empty square 2-D array."""
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
        raise param_error(
            name, owner, "a non-empty square 2-D matrix", f"shape {mat.shape}", raw=True
        )


def check_symmetric(mat: np.ndarray, *, name: str, owner: str, sym_tol: float = 1e-6) -> np.ndarray:
    r"""Refuse a square matrix that is not symmetric within a relative tolerance.

    :math:`\max_{ij} |C_{ij} - C_{ji}| \le \mathrm{sym\_tol} \cdot \max_{ij} |C_{ij}|`
    (an all-zero matrix is symmetric), so rounding error passes.

    Parameters
    ----------
    mat
        A finite square float array (checked by the caller; see :func:`check_square_matrix`).
    name, owner
        The parameter and the public function, for the message.
    sym_tol
        Relative tolerance.

    Returns
    -------
    numpy.ndarray
        The symmetrised matrix :math:`(C + C^T) / 2`.

    Raises
    ------
    InvalidParameterError
        Not symmetric: ``The 'cov' parameter of f must be a symmetric matrix (max |C - C^T| /
        max |C| <= 1e-06). Got a matrix with relative asymmetry 0.5 instead.``
    """
    scale = max(float(np.max(np.abs(mat))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(mat - mat.T))) / scale
    if asym > sym_tol:
        raise param_error(
            name,
            owner,
            f"a symmetric matrix (max |C - C^T| / max |C| <= {sym_tol:g})",
            f"a matrix with relative asymmetry {asym:.3g}",
            raw=True,
        )
    return 0.5 * (mat + mat.T)


def check_covariance_matrix(
    mat: np.ndarray,
    *,
    name: str,
    owner: str,
    sym_tol: float = 1e-6,
    psd_tol: float = 1e-6,
    eigenvectors: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    r"""Refuse a matrix that is not a covariance: square, symmetric, positive semi-definite.

    The one check of the package (statistics of :mod:`neurovar.stats` and noise models of
    :mod:`neurovar.noise` alike): symmetric within ``sym_tol`` (:func:`check_symmetric`), and
    the eigenvalues :math:`\lambda` of the symmetrised matrix satisfy
    :math:`\lambda_{\min} \ge -\mathrm{psd\_tol} \cdot \max |\lambda|`, so rounding error
    passes while ``-C`` or a non-symmetric matrix is an error instead of a plausible number.
    Slightly negative eigenvalues that pass are returned as they are (the caller clips them).

    Parameters
    ----------
    mat
        A finite float array (NaN units are the caller's business: drop them first).
    name, owner
        The parameter and the public function, for the message.
    sym_tol, psd_tol
        Relative tolerances of the symmetry and of the negative eigenvalues.
    eigenvectors
        Also return the eigenvectors (:func:`numpy.linalg.eigh`); False computes only the
        eigenvalues (:func:`numpy.linalg.eigvalsh`, cheaper).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray or None)
        The symmetrised matrix, its eigenvalues in ascending order, and its eigenvectors (as
        columns; None with ``eigenvectors=False``).

    Raises
    ------
    InvalidParameterError
        Not square, not symmetric, or not positive semi-definite: ``The 'cov' parameter of f
        must be a positive semi-definite matrix (smallest eigenvalue >= -1e-06 x largest
        |eigenvalue|). Got a matrix with smallest eigenvalue -3 (largest |eigenvalue| 3)
        instead. Fit it with a shrinkage estimator or clip its eigenvalues.``
    """
    check_square_matrix(mat, name=name, owner=owner)
    sym = check_symmetric(mat, name=name, owner=owner, sym_tol=sym_tol)
    if eigenvectors:
        evals, evecs = np.linalg.eigh(sym)
    else:
        evals, evecs = np.linalg.eigvalsh(sym), None
    top = max(float(np.max(np.abs(evals))), np.finfo(np.float64).tiny)
    if evals[0] < -psd_tol * top:
        raise param_error(
            name,
            owner,
            f"a positive semi-definite matrix (smallest eigenvalue >= -{psd_tol:g} x largest "
            "|eigenvalue|)",
            f"a matrix with smallest eigenvalue {float(evals[0]):.4g} (largest |eigenvalue| "
            f"{top:.4g})",
            raw=True,
            hint="Fit it with a shrinkage estimator or clip its eigenvalues.",
        )
    return sym, evals, evecs


def check_tensor(
    value: Any,
    *,
    name: str,
    owner: str,
    ndim: int | Sequence[int] | None = None,
    floating: bool | None = None,
    allow_empty: bool = False,
    finite: bool = False,
    low: float | None = None,
    high: float | None = None,
):
    """A :class:`torch.Tensor` with the given ``ndim``, floating or integer dtype, non-empty,
    finite and within ``[low, high]`` (each check only when asked for)."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise param_error(name, owner, "a torch.Tensor", type(value).__name__, raw=True)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise param_error(
                name, owner, f"a {want} tensor", f"shape {tuple(value.shape)}", raw=True
            )
    if floating is True and not value.is_floating_point():
        raise param_error(name, owner, "a floating-point tensor", f"dtype {value.dtype}", raw=True)
    if floating is False and (
        value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
    ):
        raise param_error(name, owner, "an integer tensor", f"dtype {value.dtype}", raw=True)
    if not allow_empty and value.numel() == 0:
        raise param_error(
            name, owner, "a non-empty tensor", f"shape {tuple(value.shape)}", raw=True
        )
    if value.numel() and value.is_floating_point():
        if (finite or low is not None or high is not None) and not bool(
            torch.isfinite(value).all()
        ):
            n_bad = int((~torch.isfinite(value)).sum())
            raise param_error(
                name,
                owner,
                "finite (no NaN or infinite values)",
                f"{n_bad} non-finite value(s)",
                raw=True,
            )
    if value.numel() and (low is not None or high is not None):
        lo, hi = float(value.min()), float(value.max())
        if (low is not None and lo < low) or (high is not None and hi > high):
            raise param_error(
                name,
                owner,
                f"in the range {_interval(low, high, False, False)}",
                f"values in ({lo:g}, {hi:g})",
                raw=True,
            )
    return value


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``psutil`` if present, else sysconf)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001  (psutil missing or unusable)
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 34  # 16 GiB: a conservative guess


def memory_limit(fraction: float = 0.5) -> float:
    """Bytes one allocation may take: ``fraction`` of the available memory
    (:func:`available_memory`), or the environment variable ``NEUROVAR_MAX_BYTES`` when set.

    The limit of :func:`check_memory`, and the memory budget of
    ``record_activations(batch_size="auto")``.
    """
    env = os.environ.get("NEUROVAR_MAX_BYTES")
    return float(env) if env else fraction * available_memory()


def check_memory(
    n_bytes: float,
    *,
    name: str,
    owner: str,
    value: Any,
    fraction: float = 0.5,
    what: str = "",
) -> None:
    """Refuse a parameter whose implied allocation (``n_bytes``) cannot fit.

    The limit is ``fraction`` of the currently available memory (the environment variable
    ``NEUROVAR_MAX_BYTES`` overrides it). Call this *before* allocating, with the estimated
    size of the largest array the parameter implies, so ``n_resamples=10**9`` is an immediate
    clear error instead of a minutes-long swap storm or a MemoryError deep inside numpy.
    """
    limit = memory_limit(fraction)
    if n_bytes > limit:
        need = _fmt_bytes(n_bytes)
        raise param_error(
            name,
            owner,
            f"small enough for its arrays to fit in memory (limit {_fmt_bytes(limit)})",
            value,
            hint=f"It needs about {need}{' for ' + what if what else ''}; reduce it or work in smaller pieces.",
        )


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover
