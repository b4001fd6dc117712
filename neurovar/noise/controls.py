r"""Controls at matched magnitude: separate the *structure* of a noise covariance from its *amount*.

For a structured covariance :math:`\Sigma` the controls are, all at the same total variance
:math:`\mathrm{tr}\,\Sigma`:

- isotropic: :math:`(\mathrm{tr}\,\Sigma / D)\, I`;
- diagonal: :math:`\mathrm{diag}(\Sigma)` (per-unit variances, no correlations);
- rotated spectrum: :math:`Q \Lambda Q^T` with the eigenvalues :math:`\Lambda` of
  :math:`\Sigma` and a Haar-random orthogonal :math:`Q` (same dimensionality and amount,
  random directions).

Every function takes a covariance (numpy array, torch tensor or DataArray with dims
``("unit", "unit_j")``; the same type comes back, DataArray coords and attrs kept) or, where it
makes sense, a noise module (a new module comes back; the input is not modified).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import xarray as xr

from neurovar._validation import InvalidParameterError, check_memory, check_rng, public_caller

from ._utils import as_numpy_matrix, check_int, check_nonneg_float, check_square, psd_factor
from .models import (
    CovarianceNoise,
    DiagonalNoise,
    IsotropicNoise,
    LowRankNoise,
    NoiseModule,
    PoissonLikeNoise,
)

__all__ = [
    "match_total_variance",
    "diagonal_control",
    "isotropic_control",
    "rotate_spectrum",
    "random_orthogonal",
    "matched_controls",
    "noise_from_covariance",
]

CovLike = np.ndarray | torch.Tensor | xr.DataArray


def _wrap_like(original: Any, arr: np.ndarray, control: str) -> Any:
    if isinstance(original, xr.DataArray):
        out = original.copy(data=arr)
        out.attrs = {**original.attrs, "control": control}
        return out
    if isinstance(original, torch.Tensor):
        return torch.as_tensor(arr, dtype=original.dtype, device=original.device)
    return arr


def _copy_module(noise: NoiseModule) -> NoiseModule:
    """Deep copy whose draws restart from the same seed; a user generator is shared, not copied
    (CUDA generators cannot be deep-copied)."""
    gens, user = noise._generators, noise._user_generator
    noise._generators, noise._user_generator = {}, None
    try:
        out = copy.deepcopy(noise)
    finally:
        noise._generators, noise._user_generator = gens, user
    out._user_generator = user
    return out


def _module_kwargs(noise: NoiseModule) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "share": noise.share,
        "scale": noise.scale,
        "relative_scale": noise.relative_scale,
        "momentum": noise.momentum,
        "track_snr": noise.track_snr,
    }
    if noise._user_generator is not None:
        kwargs["generator"] = noise._user_generator
    else:
        kwargs["seed"] = noise.seed
    return kwargs


def _check_rng(rng: Any, owner: str) -> np.random.Generator:
    # a control called by another (matched_controls -> rotate_spectrum) names the caller
    return np.random.default_rng(check_rng(rng, owner=public_caller(owner), torch_ok=False))


def _as_covariance(cov: Any, owner: str) -> np.ndarray:
    """A square, symmetric matrix with a non-negative diagonal (cheap necessary PSD checks)."""
    arr = as_numpy_matrix(cov, name="noise_or_cov", owner=owner)
    check_square(arr, name="noise_or_cov", owner=owner)
    scale = max(float(np.max(np.abs(arr))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(arr - arr.T))) / scale
    if asym > 1e-6:
        raise InvalidParameterError(
            f"The 'noise_or_cov' parameter of {owner} must be a symmetric covariance matrix; "
            f"max |C - C^T| / max |C| = {asym:.3g}."
        )
    if np.any(np.diag(arr) < 0):
        raise InvalidParameterError(
            f"The 'noise_or_cov' parameter of {owner} must be a covariance matrix (variances on "
            f"the diagonal >= 0). Got a minimum diagonal entry of {np.diag(arr).min():.4g}."
        )
    return arr


def _check_fixed_covariance(noise: NoiseModule, owner: str) -> None:
    if isinstance(noise, PoissonLikeNoise):
        raise TypeError(
            f"{owner} needs a fixed covariance; PoissonLikeNoise's variance follows its input. "
            "Calibrate it with neurovar.noise.scale_to_activation_variance instead."
        )


def _module_cov(noise: NoiseModule, owner: str) -> np.ndarray:
    """Dense covariance of a module at scale 1, in float64."""
    _check_fixed_covariance(noise, owner)
    if isinstance(noise, CovarianceNoise):
        factor = noise.factor.detach().to("cpu", torch.float64)
        return (factor @ factor.T).numpy()
    scale = noise.scale
    if scale == 0:
        raise ValueError(f"{owner}: the noise module has scale 0 (no covariance to work from).")
    return noise.covariance.detach().to("cpu", torch.float64).numpy() / scale**2


def _module_diag(noise: NoiseModule, owner: str) -> np.ndarray:
    """Diagonal of a module's covariance at scale 1, without forming the dense ``D x D`` matrix
    (which for a flat conv layer would need tens of GiB)."""
    _check_fixed_covariance(noise, owner)
    noise._trace()  # errors for modules that do not know their number of units
    if isinstance(noise, LowRankNoise):
        f = noise.factors.detach().to("cpu", torch.float64)
        diag = f.pow(2).sum(1) + noise.diagonal.detach().to("cpu", torch.float64)
    elif isinstance(noise, CovarianceNoise):
        diag = noise.factor.detach().to("cpu", torch.float64).pow(2).sum(1)
    elif isinstance(noise, DiagonalNoise):
        diag = noise.variance.detach().to("cpu", torch.float64)
    elif isinstance(noise, IsotropicNoise):
        diag = torch.full((int(noise.n_units),), noise.std**2, dtype=torch.float64)
    else:
        return np.diag(_module_cov(noise, owner)).copy()
    return diag.numpy()


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
    target = check_nonneg_float(total_variance, name="total_variance", owner=owner)
    if isinstance(noise_or_cov, NoiseModule):
        _check_fixed_covariance(noise_or_cov, owner)
        if noise_or_cov.relative_scale is not None:
            raise ValueError(
                f"{owner}: the noise module follows the layer (relative_scale="
                f"{noise_or_cov.relative_scale}); its total variance is set by relative_scale."
            )
        base = noise_or_cov._trace()
        if base <= 0:
            raise ValueError(f"{owner}: the noise module's covariance has zero trace.")
        out = _copy_module(noise_or_cov)
        out.scale = float(np.sqrt(target / base))
        return out
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
    n = check_int(n, name="n", owner=owner)
    check_memory(3 * 8.0 * n * n, name="n", owner=owner, value=n, what="an n x n matrix")
    k = n if k is None else check_int(k, name="k", owner=owner, high=n)
    gen = _check_rng(rng, owner)
    z = gen.standard_normal((n, k))
    q, r = np.linalg.qr(z)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs[None, :]


def rotate_spectrum(noise_or_cov: Any, rng: Any = None) -> Any:
    r"""Same eigenvalues, random orthonormal eigenvectors: :math:`Q \Lambda Q^T`.

    With :math:`\Sigma = V \Lambda V^T` and :math:`Q` Haar-distributed on the orthogonal group
    (:func:`random_orthogonal`), the result has the spectrum (hence trace, effective
    dimensionality) of :math:`\Sigma` but directions unrelated to it.

    Parameters
    ----------
    noise_or_cov
        Covariance (ndarray, tensor, DataArray), :class:`CovarianceNoise`, or
        :class:`LowRankNoise` with a constant diagonal (:math:`Q(FF^T + dI)Q^T =
        (QF)(QF)^T + dI`, so the result stays low-rank: only a random ``D x r`` frame is drawn).
    rng
        None, int seed or :class:`numpy.random.Generator`.

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
    if isinstance(noise_or_cov, LowRankNoise):
        diag = noise_or_cov.diagonal.double()
        if not torch.allclose(diag, diag[0].expand_as(diag), rtol=1e-6, atol=0.0):
            raise ValueError(
                f"{owner}: a LowRankNoise with a non-constant diagonal does not stay low-rank "
                "under rotation; rotate its dense covariance instead: "
                "rotate_spectrum(noise.covariance / noise.scale**2)."
            )
        f = noise_or_cov.factors.double().numpy()
        u, s, _ = np.linalg.svd(f, full_matrices=False)
        frame = random_orthogonal(f.shape[0], k=f.shape[1], rng=gen)
        return LowRankNoise(
            frame * s[None, :], noise_or_cov.diagonal.clone(), **_module_kwargs(noise_or_cov)
        )
    if isinstance(noise_or_cov, NoiseModule):
        if not isinstance(noise_or_cov, CovarianceNoise):
            raise TypeError(
                f"{owner} takes a covariance, CovarianceNoise or LowRankNoise. "
                f"Got {type(noise_or_cov).__name__}; build a CovarianceNoise from its covariance."
            )
        rotated = _rotate(_module_cov(noise_or_cov, owner), gen, owner)
        return CovarianceNoise(rotated, **_module_kwargs(noise_or_cov))
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
        "rotated": rotate_spectrum(cov, rng),
    }


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
    kind
        ``"full"`` (:class:`CovarianceNoise`), ``"low_rank"`` (:meth:`LowRankNoise.from_covariance`
        with ``rank`` and the residual on the diagonal, same trace), ``"diagonal"``
        (:class:`DiagonalNoise` of ``diag(cov)``) or ``"isotropic"`` (:class:`IsotropicNoise`
        at matched trace).
    rank
        Rank for ``kind="low_rank"``.
    **kwargs
        ``seed``, ``generator``, ``scale``, ``share``, ... (see :class:`NoiseModule`).

    Returns
    -------
    NoiseModule

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (controls at matched total
    variance).
    """
    owner = "noise_from_covariance"
    kinds = ("full", "low_rank", "diagonal", "isotropic")
    if kind not in kinds:
        raise InvalidParameterError(
            f"The 'kind' parameter of {owner} must be one of {kinds!r}. Got {kind!r} instead."
        )
    if isinstance(cov, xr.DataArray) and "share" in cov.attrs:
        kwargs.setdefault("share", cov.attrs["share"])
    if kind == "low_rank":
        if rank is None:
            raise InvalidParameterError(
                f"The 'rank' parameter of {owner} must be an int >= 1: kind='low_rank' needs the "
                "'rank' parameter. Got None instead.",
                name="rank",
                owner=owner,
            )
        return LowRankNoise.from_covariance(cov, rank, **kwargs)
    if rank is not None:
        raise InvalidParameterError(
            f"The 'rank' parameter of {owner} must be None: 'rank' applies to kind='low_rank' only "
            f"(kind={kind!r}). "
            f"Got {rank!r} instead.",
            name="rank",
            owner=owner,
        )
    if kind == "full":
        return CovarianceNoise(cov, **kwargs)
    arr = as_numpy_matrix(cov, name="cov", owner=owner)
    check_square(arr, name="cov", owner=owner)
    if kind == "diagonal":
        return DiagonalNoise(np.diag(arr).copy(), **kwargs)
    d = arr.shape[0]
    return IsotropicNoise(float(np.sqrt(max(np.trace(arr), 0.0) / d)), n_units=d, **kwargs)
