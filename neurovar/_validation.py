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

This module is a bottom floor: it imports only numpy at module level (torch lazily, for the
device and tensor checks).
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from collections.abc import Hashable, Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = [
    "InvalidParameterError",
    "param_error",
    "public_caller",
    "describe",
    "check_bool",
    "check_int",
    "check_real",
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
]


class InvalidParameterError(ValueError, TypeError):
    """A parameter of a public function or class has a wrong type or value.

    Inherits from both :class:`ValueError` and :class:`TypeError` (as scikit-learn's error of
    the same name does), so existing ``except ValueError`` / ``except TypeError`` handlers and
    tests keep working. ``name`` and ``owner`` are kept as attributes.
    """

    def __init__(self, message: str, *, name: str | None = None, owner: str | None = None):
        super().__init__(message)
        self.name = name
        self.owner = owner


def describe(value: Any, *, limit: int = 80) -> str:
    """Short ``repr`` of ``value`` for an error message (arrays by shape and dtype)."""
    shape = getattr(value, "shape", None)
    if shape is not None and not np.isscalar(value) and getattr(value, "ndim", 0) > 0:
        dtype = getattr(value, "dtype", None)
        return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def param_error(
    name: str, owner: str, expected: str, got: Any, *, raw: bool = False, hint: str = ""
) -> InvalidParameterError:
    """The one message shape: "The '{name}' parameter of {owner} must be {expected}. Got {got}
    instead." (``got`` is shown with :func:`describe` unless ``raw=True``, then as given)."""
    shown = got if raw else describe(got)
    message = f"The {name!r} parameter of {owner} must be {expected}. Got {shown} instead."
    if hint:
        message = f"{message} {hint}"
    return InvalidParameterError(message, name=name, owner=owner)


def public_caller(default: str = "neurovar") -> str:
    """Name of the outermost public neurovar function or class on the call stack: the one
    the user called.

    For shared helpers (seed and device resolution, a public function called by another) that
    are called from many public functions: the error then names the function the user called
    (a function listed in its module's ``__all__``, or the class of a method's ``self``).
    """
    frame = inspect.currentframe()
    found = None
    try:
        frame = frame.f_back if frame is not None else None
        while frame is not None:
            glb = frame.f_globals
            mod = glb.get("__name__", "")
            if mod == "neurovar" or mod.startswith("neurovar."):
                public = glb.get("__all__", ())
                name = frame.f_code.co_name
                self_obj = frame.f_locals.get("self")
                if name in public:
                    found = name
                elif self_obj is not None and type(self_obj).__name__ in getattr(
                    sys.modules.get(type(self_obj).__module__), "__all__", ()
                ):
                    found = type(self_obj).__name__
            frame = frame.f_back
    finally:
        del frame
    return found or default


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_bool(value: Any, *, name: str, owner: str | None = None) -> bool:
    """A flag: ``bool`` or ``numpy.bool_`` only (``"False"``, ``0``, ``None`` are refused).

    ``owner=None`` names the public function on the call stack (:func:`public_caller`)."""
    if not _is_bool(value):
        raise param_error(name, owner or public_caller(), "a bool (True or False)", value)
    return bool(value)


def _interval(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    lb = "(" if low_open or low is None else "["
    rb = ")" if high_open or high is None else "]"
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    return f"{lb}{lo}, {hi}{rb}"


def check_int(
    value: Any,
    *,
    name: str,
    owner: str,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """An integer (Python or numpy, not bool, not float) in ``[low, high]``."""
    if value is None and allow_none:
        return None
    kind = "an int" + (" or None" if allow_none else "")
    bounded = low is not None or high is not None
    expected = f"{kind} in {_interval(low, high, False, False)}" if bounded else kind
    if _is_bool(value) or not isinstance(value, (Integral, np.integer)):
        raise param_error(name, owner, expected, value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise param_error(name, owner, expected, value)
    return int(value)


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
) -> float | None:
    """A real number (not bool, not NaN; not +-inf unless ``allow_inf``) in the interval."""
    if value is None and allow_none:
        return None
    kind = "a float" + (" or None" if allow_none else "")
    expected = f"{kind} in {_interval(low, high, low_open, high_open)}"
    if _is_bool(value) or not isinstance(value, (Real, np.floating, np.integer)):
        raise param_error(name, owner, expected, value)
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise param_error(name, owner, expected, value)
    if low is not None and (v <= low if low_open else v < low):
        raise param_error(name, owner, expected, value)
    if high is not None and (v >= high if high_open else v > high):
        raise param_error(name, owner, expected, value)
    return v


def check_choice(value: Any, *, name: str, owner: str, options: Iterable[Any]) -> Any:
    """One of ``options`` (compared with ``==``; unhashable values are refused cleanly)."""
    options = tuple(options)
    try:
        hash(value)  # arrays, lists, dicts are never a choice
        ok = any(_is_bool(value) == _is_bool(o) and bool(value == o) for o in options)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise param_error(name, owner, f"one of {options!r}", value)
    return value


def check_str(value: Any, *, name: str, owner: str, allow_empty: bool = False) -> str:
    """A ``str`` (non-empty unless ``allow_empty``)."""
    if not isinstance(value, str) or (not allow_empty and not value):
        raise param_error(name, owner, "a non-empty str" if not allow_empty else "a str", value)
    return value


def check_instance(
    value: Any,
    types: type | tuple[type, ...],
    *,
    name: str,
    owner: str,
    expected: str | None = None,
) -> Any:
    """An instance of ``types`` (described as ``expected`` in the message)."""
    if not isinstance(value, types):
        if expected is None:
            tt = types if isinstance(types, tuple) else (types,)
            expected = "an instance of " + " or ".join(
                f"{t.__module__}.{t.__qualname__}" for t in tt
            )
        raise param_error(name, owner, expected, type(value).__name__, raw=True)
    return value


def check_rng(
    value: Any, *, name: str = "rng", owner: str | None = None, torch_ok: bool = True
) -> Any:
    """``None``, a non-negative int seed, a numpy ``Generator``/``SeedSequence`` (or, with
    ``torch_ok``, a ``torch.Generator``); returned unchanged (ints as Python ints).

    ``owner=None`` names the public function on the call stack (:func:`public_caller`)."""
    if owner is None and not (
        value is None
        or isinstance(value, (np.random.Generator, np.random.SeedSequence))
        or (isinstance(value, (Integral, np.integer)) and not _is_bool(value) and value >= 0)
    ):
        owner = public_caller()
    if value is None or isinstance(value, (np.random.Generator, np.random.SeedSequence)):
        return value
    if isinstance(value, (Integral, np.integer)) and not _is_bool(value):
        if value < 0:
            raise param_error(name, owner, "a non-negative int seed", value)
        return int(value)
    if torch_ok:
        import torch

        if isinstance(value, torch.Generator):
            return value
    expected = "None, an int seed >= 0, a numpy Generator" + (
        " or a torch.Generator" if torch_ok else ""
    )
    raise param_error(name, owner, expected, value)


def check_device(
    value: Any, *, name: str = "device", owner: str | None = None, allow_none: bool = True
):
    """A usable torch device (``None`` -> CUDA when available, else CPU).

    Refuses unknown strings (``"bogus"``) and devices that this machine does not have
    (``"cuda"`` without CUDA, ``"cuda:3"`` with one GPU, ``"mps"`` off Apple). ``owner=None``
    names the public function on the call stack (:func:`public_caller`).
    """
    import torch

    if owner is None:
        if isinstance(value, torch.device) and value.type == "cpu":
            return value
        owner = public_caller()

    if value is None:
        if not allow_none:
            raise param_error(name, owner, "a torch device such as 'cpu' or 'cuda'", value)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(value, (str, torch.device)) or _is_bool(value):
        raise param_error(
            name, owner, "None, a str such as 'cpu' or 'cuda', or a torch.device", value
        )
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise param_error(
            name, owner, "a torch device such as 'cpu', 'cuda' or 'cuda:0'", value
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise param_error(
                name,
                owner,
                "an available device",
                value,
                hint="CUDA is not available here; use 'cpu'.",
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise param_error(
                name,
                owner,
                f"an available device (this machine has {torch.cuda.device_count()} "
                "CUDA device(s))",
                value,
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise param_error(
                name, owner, "an available device", value, hint="MPS is not available here."
            )
    elif dev.type not in ("cpu", "meta"):
        raise param_error(name, owner, "a torch device such as 'cpu' or 'cuda'", value)
    return dev


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
    env = os.environ.get("NEUROVAR_MAX_BYTES")
    limit = float(env) if env else fraction * available_memory()
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
