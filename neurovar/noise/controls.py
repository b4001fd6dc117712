r"""Controls at matched magnitude: separate the *structure* of a noise covariance from its *amount*.

For a structured covariance :math:`\Sigma` the controls are, all at the same total variance
:math:`\mathrm{tr}\,\Sigma`:

- isotropic: :math:`(\mathrm{tr}\,\Sigma / D)\, I`;
- diagonal: :math:`\mathrm{diag}(\Sigma)` (per-unit variances, no correlations);
- rotated spectrum: :math:`Q \Lambda Q^T` with the eigenvalues :math:`\Lambda` of
  :math:`\Sigma` and a Haar-random orthogonal :math:`Q` (same dimensionality and amount,
  random directions).

Every function takes a covariance (numpy array, torch tensor or DataArray with dims
``("unit", "unit_j")``; the same type comes back, DataArray coords and attrs kept), a
:class:`~neurovar.noise.FactorCovariance` (kept in factor form, no ``D x D`` matrix) or, where it
makes sense, a noise module (a new module comes back; the input is not modified).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import xarray as xr

from neurovar._validation import (
    InvalidParameterError,
    check_bool,
    check_int,
    check_memory,
    check_real,
    check_rng,
    check_square_matrix,
    check_str,
    check_symmetric,
    param_error,
    public_caller,
)

from .._compat import renamed_parameters
from ._utils import as_numpy_matrix, psd_factor
from .factor import FactorCovariance
from .models import CovarianceNoise, DiagonalNoise, IsotropicNoise, LowRankNoise, NoiseModule

__all__ = [
    "match_total_variance",
    "diagonal_control",
    "isotropic_control",
    "rotate_spectrum",
    "random_orthogonal",
    "matched_controls",
    "noise_from_covariance",
    "NOISE_KINDS",
    "register_noise_kind",
]

CovLike = np.ndarray | torch.Tensor | xr.DataArray | FactorCovariance


def _wrap_like(original: Any, arr: np.ndarray, control: str) -> Any:
    if isinstance(original, xr.DataArray):
        out = original.copy(data=arr)
        out.attrs = {**original.attrs, "control": control}
        return out
    if isinstance(original, torch.Tensor):
        return torch.as_tensor(arr, dtype=original.dtype, device=original.device)
    return arr


def _module_kwargs(noise: NoiseModule) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "share": noise.share,
        "scale": noise.scale,
        "relative_scale": noise.relative_scale,
        "momentum": noise.momentum,
        "track_snr": noise.track_snr,
        "rng": noise.generator if noise.generator is not None else noise.seed,
    }
    return kwargs


def _check_rng(rng: Any, owner: str) -> np.random.Generator:
    # a control called by another (matched_controls -> rotate_spectrum) names the caller
    return np.random.default_rng(check_rng(rng, owner=public_caller(owner), torch_ok=False))


def _as_covariance(cov: Any, owner: str) -> np.ndarray:
    """A square, symmetric matrix with a non-negative diagonal (cheap necessary PSD checks)."""
    arr = as_numpy_matrix(cov, name="noise_or_cov", owner=owner)
    check_square_matrix(arr, name="noise_or_cov", owner=owner)
    check_symmetric(arr, name="noise_or_cov", owner=owner)  # the package's one symmetry check
    if np.any(np.diag(arr) < 0):
        raise param_error(
            "noise_or_cov",
            owner,
            "a covariance matrix (variances on the diagonal >= 0)",
            f"a minimum diagonal entry of {np.diag(arr).min():.4g}",
            raw=True,
        )
    return arr


def _module_matrix(noise: NoiseModule, owner: str, what: str) -> np.ndarray:
    """``noise.diagonal()`` or ``noise.dense_covariance()`` (scale 1) as float64 numpy, with
    the control's name on the error of a module without a fixed covariance."""
    try:
        out = noise.diagonal() if what == "diagonal" else noise.dense_covariance()
    except (TypeError, ValueError) as err:
        hint = (
            " Calibrate it with neurovar.noise.scale_to_activation_variance instead."
            if isinstance(err, TypeError)
            else ""
        )
        raise type(err)(f"{owner} needs a fixed covariance: {err}{hint}") from err
    return torch.as_tensor(out).detach().to("cpu", torch.float64).numpy()


def _module_cov(noise: NoiseModule, owner: str) -> np.ndarray:
    """Dense covariance of a module at scale 1 (:meth:`NoiseModule.dense_covariance`)."""
    return _module_matrix(noise, owner, "dense")


def _module_diag(noise: NoiseModule, owner: str) -> np.ndarray:
    """Per-unit variances of a module at scale 1 (:meth:`NoiseModule.diagonal`), without
    forming the dense ``D x D`` matrix where the model knows how."""
    return _module_matrix(noise, owner, "diagonal")


def match_total_variance(noise_or_cov: Any, total_variance: float) -> Any:
    r"""Rescale so the total variance (trace) equals ``total_variance`` exactly.

    .. math:: \Sigma' = \Sigma \cdot \frac{v}{\mathrm{tr}\,\Sigma}

    Parameters
    ----------
    noise_or_cov
        A covariance matrix (ndarray, tensor, DataArray), or a noise module with a fixed
        covariance; for a module, a copy is returned whose ``scale`` makes
        ``copy.trace == total_variance`` (per spatial position for ``share="channel"``).
        The copy has the same seed, its draws restarting from it (common random numbers).
    total_variance
        Target trace :math:`v \ge 0`.

    Returns
    -------
    same type as ``noise_or_cov``
        Array/tensor/DataArray (coords kept, ``attrs["control"]`` set) or a new noise module.

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (controls at matched total
    variance).
    """
    owner = "match_total_variance"
    target = check_real(total_variance, name="total_variance", owner=owner, low=0, coerce=True)
    if isinstance(noise_or_cov, NoiseModule):
        diag = _module_diag(noise_or_cov, owner)  # errors without a fixed covariance
        if noise_or_cov.relative_scale is not None:
            raise ValueError(
                f"{owner}: the noise module follows the layer (relative_scale="
                f"{noise_or_cov.relative_scale}); its total variance is set by relative_scale."
            )
        base = float(diag.sum())
        if base <= 0:
            raise ValueError(f"{owner}: the noise module's covariance has zero trace.")
        out = noise_or_cov.clone()
        out.scale = float(np.sqrt(target / base))
        return out
    if isinstance(noise_or_cov, FactorCovariance):
        return noise_or_cov.scaled(target)
    cov = _as_covariance(noise_or_cov, owner)
    trace = float(np.trace(cov))
    if trace <= 0:
        raise InvalidParameterError(
            f"The 'noise_or_cov' parameter of {owner} must have a positive trace. Got {trace:g}."
        )
    return _wrap_like(noise_or_cov, cov * (target / trace), "matched_total_variance")


def diagonal_control(noise_or_cov: Any) -> Any:
    r"""The diagonal of a covariance as its own control, :math:`\mathrm{diag}(\Sigma)`.

    Same per-unit variances, hence the same trace, and no correlations.

    Parameters
    ----------
    noise_or_cov
        Covariance (ndarray, tensor, DataArray), or a noise module with a fixed covariance:
        then a :class:`DiagonalNoise` with the same share, scale and seed comes back.

    Returns
    -------
    same type as ``noise_or_cov``

    References
    ----------
    Preble et al. (2026), arXiv 2606.13801: the diagonal control of a structured covariance.
    """
    owner = "diagonal_control"
    if isinstance(noise_or_cov, NoiseModule):
        diag = _module_diag(noise_or_cov, owner)
        return DiagonalNoise(diag, **_module_kwargs(noise_or_cov))
    if isinstance(noise_or_cov, FactorCovariance):
        return FactorCovariance(noise_or_cov.diag_of())
    cov = _as_covariance(noise_or_cov, owner)
    return _wrap_like(noise_or_cov, np.diag(np.diag(cov)), "diagonal")


def isotropic_control(noise_or_cov: Any) -> Any:
    r"""Isotropic covariance at matched trace, :math:`(\mathrm{tr}\,\Sigma / D)\, I_D`.

    Parameters
    ----------
    noise_or_cov
        A covariance, or a noise module with a fixed covariance (an :class:`IsotropicNoise`
        with ``n_units`` and the module's share, scale and seed comes back).

    Returns
    -------
    same type as ``noise_or_cov``, or :class:`IsotropicNoise`

    References
    ----------
    Preble et al. (2026), arXiv 2606.13801: isotropic noise as the unstructured control.
    """
    owner = "isotropic_control"
    if isinstance(noise_or_cov, NoiseModule):
        diag = _module_diag(noise_or_cov, owner)
        d = diag.shape[0]
        std = float(np.sqrt(diag.sum() / d))
        return IsotropicNoise(std, n_units=d, **_module_kwargs(noise_or_cov))
    if isinstance(noise_or_cov, FactorCovariance):
        n = noise_or_cov.n_units
        return FactorCovariance(np.full(n, noise_or_cov.trace / n))
    cov = _as_covariance(noise_or_cov, owner)
    d = cov.shape[0]
    return _wrap_like(noise_or_cov, np.eye(d) * (np.trace(cov) / d), "isotropic")


def random_orthogonal(n: int, *, k: int | None = None, rng: Any = None) -> np.ndarray:
    r"""Haar-random ``n x k`` matrix with orthonormal columns (``k = n``: orthogonal matrix).

    .. math:: Z = Q R,\; Z_{ij} \sim \mathcal N(0, 1) \quad\Rightarrow\quad
              Q' = Q\,\mathrm{diag}(\mathrm{sign}\, R_{ii})

    QR decomposition of a standard Gaussian matrix with the signs of :math:`\mathrm{diag}(R)`
    moved into :math:`Q` (without this fix LAPACK's QR is not Haar-distributed). Written here instead of ``scipy.stats.ortho_group``
    because one blocked LAPACK QR is much faster for large ``n`` than scipy's loop of
    Householder reflections, and because it gives the first ``k`` columns (a uniformly random
    ``k``-frame) in ``O(n k^2)``; the distribution is the same (checked against scipy in the
    tests).

    Parameters
    ----------
    n
        Number of rows (the dimension).
    k
        Number of columns, in ``[1, n]`` (default ``n``).
    rng
        None, int seed or :class:`numpy.random.Generator`.

    Returns
    -------
    numpy.ndarray
        ``(n, k)`` with :math:`Q'^T Q' = I_k`.

    References
    ----------
    Mezzadri, F. (2007). How to generate random matrices from the classical compact groups.
    Notices of the AMS 54, 592-604.
    """
    owner = "random_orthogonal"
    n = check_int(n, name="n", owner=owner, low=1)
    k = n if k is None else check_int(k, name="k", owner=owner, low=1, high=n)
    # the Gaussian draw, Q and R: about three n x k float64 arrays
    check_memory(3 * 8.0 * n * k, name="n" if k == n else "k", owner=owner,
                 value=n if k == n else k, what=f"an n x k = {n} x {k} matrix")
    gen = _check_rng(rng, owner)
    z = gen.standard_normal((n, k))
    q, r = np.linalg.qr(z)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs[None, :]


@renamed_parameters(positional=("rng",))
def rotate_spectrum(noise_or_cov: Any, *, rng: Any = None) -> Any:
    r"""Same eigenvalues, random orthonormal eigenvectors: :math:`Q \Lambda Q^T`.

    With :math:`\Sigma = V \Lambda V^T` and :math:`Q` Haar-distributed on the orthogonal group
    (:func:`random_orthogonal`), the result has the spectrum (hence trace, effective
    dimensionality) of :math:`\Sigma` but directions unrelated to it.

    Parameters
    ----------
    noise_or_cov
        Covariance (ndarray, tensor, DataArray), or a noise module with a fixed covariance
        (:meth:`NoiseModule.dense_covariance`): a :class:`CovarianceNoise` of the rotated
        covariance comes back, with the module's share, scale and seed. A
        :class:`LowRankNoise` with a constant diagonal stays low-rank
        (:math:`Q(FF^T + dI)Q^T = (QF)(QF)^T + dI`: only a random ``D x r`` frame is drawn).
    rng
        None, int seed or :class:`numpy.random.Generator` (keyword-only).

    Returns
    -------
    same type as ``noise_or_cov``
        A new module for module input.

    References
    ----------
    Mezzadri, F. (2007). How to generate random matrices from the classical compact groups.
    Notices of the AMS 54, 592-604.
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (controls at matched total
    variance).
    """
    owner = "rotate_spectrum"
    gen = _check_rng(rng, owner)
    if isinstance(noise_or_cov, NoiseModule):
        rotated = noise_or_cov._rotated_spectrum(
            lambda n, k: random_orthogonal(n, k=k, rng=gen), _module_kwargs(noise_or_cov)
        )
        if rotated is not None:
            return rotated
        cov = _rotate(_module_cov(noise_or_cov, owner), gen, owner)
        return CovarianceNoise(cov, **_module_kwargs(noise_or_cov))
    if isinstance(noise_or_cov, FactorCovariance):
        return noise_or_cov.rotated(lambda n, k: random_orthogonal(n, k=k, rng=gen))
    cov = as_numpy_matrix(noise_or_cov, name="noise_or_cov", owner=owner)
    return _wrap_like(noise_or_cov, _rotate(cov, gen, owner), "rotated_spectrum")


def _rotate(cov: np.ndarray, gen: np.random.Generator, owner: str) -> np.ndarray:
    """``Q Lambda Q^T`` for the (validated, clipped) eigenvalues of ``cov``; exactly symmetric."""
    evals, _, _, _ = psd_factor(cov, name="noise_or_cov", owner=owner)
    q = random_orthogonal(cov.shape[0], rng=gen)
    rotated = (q * evals[None, :]) @ q.T
    return 0.5 * (rotated + rotated.T)


def matched_controls(cov: CovLike, *, rng: Any = None) -> dict[str, Any]:
    r"""The structured covariance and its controls, all with the trace of ``cov``.

    :math:`\Sigma`, :math:`\mathrm{diag}(\Sigma)`, :math:`(\mathrm{tr}\,\Sigma / D) I` and
    :math:`Q \Lambda Q^T` (see :func:`diagonal_control`, :func:`isotropic_control`,
    :func:`rotate_spectrum`).

    Parameters
    ----------
    cov
        ``D x D`` covariance (ndarray, tensor, DataArray).
    rng
        Seed of the random rotation.

    Returns
    -------
    dict
        ``{"structured": cov, "diagonal": ..., "isotropic": ..., "rotated": ...}``, each of the
        type of ``cov``. The "no noise" control is simply not injecting noise.

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (controls at matched total
    variance).
    """
    return {
        "structured": cov,
        "diagonal": diagonal_control(cov),
        "isotropic": isotropic_control(cov),
        "rotated": rotate_spectrum(cov, rng=rng),
    }


NoiseKindFactory = Callable[..., NoiseModule]

NOISE_KINDS: dict[str, NoiseKindFactory] = {}
"""The kinds of :func:`noise_from_covariance`: ``{kind: factory(cov, rank=..., **kwargs)}``.

Add one with :func:`register_noise_kind`.
"""


def register_noise_kind(kind: str, factory: NoiseKindFactory, *, overwrite: bool = False) -> None:
    """Make ``noise_from_covariance(cov, kind=kind, ...)`` build ``factory(cov, rank=rank,
    **kwargs)``.

    Parameters
    ----------
    kind
        Name of the kind.
    factory
        ``factory(cov, *, rank, **kwargs) -> NoiseModule``. ``cov`` is what the caller passed
        (ndarray, tensor or DataArray; ``kwargs`` already hold a DataArray's ``share``),
        ``rank`` is None unless given; a factory that takes no rank should refuse one.
    overwrite
        Allow replacing a registered kind.
    """
    owner = "register_noise_kind"
    check_str(kind, name="kind", owner=owner)
    overwrite = check_bool(overwrite, name="overwrite", owner=owner)
    if not callable(factory):
        raise param_error("factory", owner, "callable", type(factory).__name__, raw=True)
    if kind in NOISE_KINDS and not overwrite:
        raise param_error(
            "kind",
            owner,
            f"a kind that is not already registered (registered: {sorted(NOISE_KINDS)!r})",
            kind,
            hint="Pass overwrite=True to replace it.",
        )
    NOISE_KINDS[kind] = factory


def _no_rank(kind: str, rank: int | None) -> None:
    if rank is not None:
        raise InvalidParameterError(
            "The 'rank' parameter of noise_from_covariance must be None: 'rank' applies to "
            f"kind='low_rank' only (kind={kind!r}). Got {rank!r} instead.",
            name="rank",
            owner="noise_from_covariance",
        )


def _square(cov: Any) -> np.ndarray:
    arr = as_numpy_matrix(cov, name="cov", owner="noise_from_covariance")
    check_square_matrix(arr, name="cov", owner="noise_from_covariance")
    return arr


def _factor_module(cov: FactorCovariance, **kwargs: Any) -> NoiseModule:
    """The module that samples :math:`F F^T + \\mathrm{diag}(d)` exactly, without the dense
    matrix: isotropic for a constant diagonal, diagonal without factors, else low-rank."""
    if cov.factors is None:
        if cov.is_isotropic:
            return IsotropicNoise(float(np.sqrt(cov.diagonal[0])), n_units=cov.n_units, **kwargs)
        return DiagonalNoise(cov.diagonal.copy(), **kwargs)
    return LowRankNoise(cov.factors, cov.diagonal.copy(), **kwargs)


def _full_kind(cov: Any, *, rank: int | None = None, **kwargs: Any) -> NoiseModule:
    _no_rank("full", rank)
    if isinstance(cov, FactorCovariance):
        return _factor_module(cov, **kwargs)
    return CovarianceNoise(cov, **kwargs)


def _low_rank_kind(cov: Any, *, rank: int | None = None, **kwargs: Any) -> NoiseModule:
    if rank is None:
        raise InvalidParameterError(
            "The 'rank' parameter of noise_from_covariance must be an int >= 1: kind='low_rank' "
            "needs the 'rank' parameter. Got None instead.",
            name="rank",
            owner="noise_from_covariance",
        )
    if isinstance(cov, FactorCovariance):
        n = cov.n_units
        check_memory(3 * 8.0 * n * n, name="cov", owner="noise_from_covariance", value=n,
                     what=f"the dense {n} x {n} covariance that kind='low_rank' decomposes")
        cov = cov.dense()
    return LowRankNoise.from_covariance(cov, rank, **kwargs)


def _diagonal_kind(cov: Any, *, rank: int | None = None, **kwargs: Any) -> NoiseModule:
    _no_rank("diagonal", rank)
    if isinstance(cov, FactorCovariance):
        return DiagonalNoise(cov.diag_of(), **kwargs)
    return DiagonalNoise(np.diag(_square(cov)).copy(), **kwargs)


def _isotropic_kind(cov: Any, *, rank: int | None = None, **kwargs: Any) -> NoiseModule:
    _no_rank("isotropic", rank)
    if isinstance(cov, FactorCovariance):
        return _factor_module(isotropic_control(cov), **kwargs)  # (tr / N) I, sampled
    arr = _square(cov)
    d = arr.shape[0]
    return IsotropicNoise(float(np.sqrt(max(np.trace(arr), 0.0) / d)), n_units=d, **kwargs)


register_noise_kind("full", _full_kind)
register_noise_kind("low_rank", _low_rank_kind)
register_noise_kind("diagonal", _diagonal_kind)
register_noise_kind("isotropic", _isotropic_kind)


def noise_from_covariance(
    cov: CovLike,
    *,
    kind: str = "full",
    rank: int | None = None,
    **kwargs: Any,
) -> NoiseModule:
    r"""Build a noise module from a covariance (e.g. the output of fit_perturbation_covariance).

    The module adds :math:`\epsilon \sim \mathcal N(0, \Sigma_{kind})` with
    :math:`\Sigma_{full} = \Sigma`, :math:`\Sigma_{low\_rank} = V_r \Lambda_r V_r^T +
    \mathrm{diag}(\Sigma - V_r \Lambda_r V_r^T)`, :math:`\Sigma_{diagonal} =
    \mathrm{diag}(\Sigma)` or :math:`\Sigma_{isotropic} = (\mathrm{tr}\,\Sigma / D) I`, all with
    the trace of :math:`\Sigma`.

    Parameters
    ----------
    cov
        ``D x D`` covariance; a DataArray's ``attrs["share"]`` is used unless ``share`` is given.
        A :class:`~neurovar.noise.FactorCovariance` :math:`F F^T + \mathrm{diag}(d)` is sampled
        without its dense matrix (``"full"``: :class:`LowRankNoise`, or :class:`DiagonalNoise`
        / :class:`IsotropicNoise` without factors).
    kind
        A key of :data:`NOISE_KINDS`: ``"full"`` (:class:`CovarianceNoise`), ``"low_rank"``
        (:meth:`LowRankNoise.from_covariance` with ``rank`` and the residual on the diagonal,
        same trace), ``"diagonal"`` (:class:`DiagonalNoise` of ``diag(cov)``),
        ``"isotropic"`` (:class:`IsotropicNoise` at matched trace), or one added with
        :func:`register_noise_kind`.
    rank
        Rank for ``kind="low_rank"``.
    **kwargs
        ``rng``, ``scale``, ``share``, ... (see :class:`NoiseModule`).

    Returns
    -------
    NoiseModule

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (controls at matched total
    variance).
    """
    owner = "noise_from_covariance"
    if kind not in NOISE_KINDS:
        raise InvalidParameterError(
            f"The 'kind' parameter of {owner} must be one of {tuple(NOISE_KINDS)!r}. "
            f"Got {kind!r} instead.",
            name="kind",
            owner=owner,
        )
    if isinstance(cov, xr.DataArray) and "share" in cov.attrs:
        kwargs.setdefault("share", cov.attrs["share"])
    return NOISE_KINDS[kind](cov, rank=rank, **kwargs)
