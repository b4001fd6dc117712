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

from ._utils import as_numpy_matrix, check_square, psd_factor
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
    if rng is not None and not isinstance(rng, (int, np.integer, np.random.Generator)):
        raise TypeError(
            f"The 'rng' parameter of {owner} must be None, an int or a numpy Generator. "
            f"Got {type(rng).__name__} instead."
        )
    return np.random.default_rng(rng)


def _module_cov(noise: NoiseModule, owner: str) -> np.ndarray:
    """Covariance of a module at scale 1."""
    if isinstance(noise, PoissonLikeNoise):
        raise TypeError(
            f"{owner} needs a fixed covariance; PoissonLikeNoise's variance follows its input. "
            "Calibrate it with neurovar.noise.scale_to_activation_variance instead."
        )
    scale = noise.scale
    if scale == 0:
        raise ValueError(f"{owner}: the noise module has scale 0 (no covariance to work from).")
    return noise.covariance.detach().to("cpu", torch.float64).numpy() / scale**2


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
    """
    owner = "match_total_variance"
    try:
        target = float(total_variance)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"The 'total_variance' parameter of {owner} must be a number. Got {total_variance!r}."
        ) from err
    if not np.isfinite(target) or target < 0:
        raise ValueError(
            f"The 'total_variance' parameter of {owner} must be in [0, inf). "
            f"Got {total_variance!r} instead."
        )
    if isinstance(noise_or_cov, NoiseModule):
        if isinstance(noise_or_cov, PoissonLikeNoise):
            _module_cov(noise_or_cov, owner)
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
    cov = as_numpy_matrix(noise_or_cov, name="noise_or_cov", owner=owner)
    check_square(cov, name="noise_or_cov", owner=owner)
    trace = float(np.trace(cov))
    if trace <= 0:
        raise ValueError(
            f"The 'noise_or_cov' parameter of {owner} must have a positive trace. Got {trace:g}."
        )
    return _wrap_like(noise_or_cov, cov * (target / trace), "matched_total_variance")


def diagonal_control(noise_or_cov: Any) -> Any:
    r"""The diagonal of a covariance as its own control, :math:`\mathrm{diag}(\Sigma)`.

    Same per-unit variances, hence the same trace, and no correlations. For a noise module a
    :class:`DiagonalNoise` with the same share, scale and seed comes back.
    """
    owner = "diagonal_control"
    if isinstance(noise_or_cov, NoiseModule):
        cov = _module_cov(noise_or_cov, owner)
        return DiagonalNoise(np.diag(cov).copy(), **_module_kwargs(noise_or_cov))
    cov = as_numpy_matrix(noise_or_cov, name="noise_or_cov", owner=owner)
    check_square(cov, name="noise_or_cov", owner=owner)
    return _wrap_like(noise_or_cov, np.diag(np.diag(cov)), "diagonal")


def isotropic_control(noise_or_cov: Any) -> Any:
    r"""Isotropic covariance at matched trace, :math:`(\mathrm{tr}\,\Sigma / D)\, I_D`.

    For a noise module an :class:`IsotropicNoise` (with ``n_units``) comes back.
    """
    owner = "isotropic_control"
    if isinstance(noise_or_cov, NoiseModule):
        cov = _module_cov(noise_or_cov, owner)
        d = cov.shape[0]
        std = float(np.sqrt(np.trace(cov) / d))
        return IsotropicNoise(std, n_units=d, **_module_kwargs(noise_or_cov))
    cov = as_numpy_matrix(noise_or_cov, name="noise_or_cov", owner=owner)
    check_square(cov, name="noise_or_cov", owner=owner)
    d = cov.shape[0]
    return _wrap_like(noise_or_cov, np.eye(d) * (np.trace(cov) / d), "isotropic")


def random_orthogonal(n: int, *, k: int | None = None, rng: Any = None) -> np.ndarray:
    r"""Haar-random ``n x k`` matrix with orthonormal columns (``k = n``: orthogonal matrix).

    QR decomposition of a standard Gaussian matrix with the signs of :math:`\mathrm{diag}(R)`
    moved into :math:`Q` (Mezzadri 2007, "How to generate random matrices from the classical
    compact groups", Notices AMS 54, 592). Written here instead of ``scipy.stats.ortho_group``
    because one blocked LAPACK QR is much faster for large ``n`` than scipy's loop of
    Householder reflections, and because it gives the first ``k`` columns (a uniformly random
    ``k``-frame) in ``O(n k^2)``; the distribution is the same (checked against scipy in the
    tests).
    """
    owner = "random_orthogonal"
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"The 'n' parameter of {owner} must be a positive int. Got {n!r}.")
    k = n if k is None else k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"The 'k' parameter of {owner} must be an int in [1, {n}]. Got {k!r}.")
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
        cov = _module_cov(noise_or_cov, owner)
        evals, _, _, _ = psd_factor(cov, name="noise_or_cov", owner=owner)
        q = random_orthogonal(cov.shape[0], rng=gen)
        return CovarianceNoise((q * evals[None, :]) @ q.T, **_module_kwargs(noise_or_cov))
    cov = as_numpy_matrix(noise_or_cov, name="noise_or_cov", owner=owner)
    evals, _, _, _ = psd_factor(cov, name="noise_or_cov", owner=owner)
    q = random_orthogonal(cov.shape[0], rng=gen)
    rotated = (q * evals[None, :]) @ q.T
    return _wrap_like(noise_or_cov, 0.5 * (rotated + rotated.T), "rotated_spectrum")


def matched_controls(cov: CovLike, *, rng: Any = None) -> dict[str, Any]:
    """The structured covariance and its controls, all with the trace of ``cov``.

    Returns
    -------
    dict
        ``{"structured": cov, "diagonal": ..., "isotropic": ..., "rotated": ...}``, each of the
        type of ``cov``. The "no noise" control is simply not injecting noise.
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
    """Build a noise module from a covariance (e.g. the output of fit_perturbation_covariance).

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
    """
    owner = "noise_from_covariance"
    kinds = ("full", "low_rank", "diagonal", "isotropic")
    if kind not in kinds:
        raise ValueError(
            f"The 'kind' parameter of {owner} must be one of {kinds!r}. Got {kind!r} instead."
        )
    if isinstance(cov, xr.DataArray) and "share" in cov.attrs:
        kwargs.setdefault("share", cov.attrs["share"])
    if kind == "low_rank":
        if rank is None:
            raise ValueError(f"{owner}: kind='low_rank' needs the 'rank' parameter.")
        return LowRankNoise.from_covariance(cov, rank, **kwargs)
    if rank is not None:
        raise ValueError(f"{owner}: 'rank' applies to kind='low_rank' only; got kind={kind!r}.")
    if kind == "full":
        return CovarianceNoise(cov, **kwargs)
    arr = as_numpy_matrix(cov, name="cov", owner=owner)
    check_square(arr, name="cov", owner=owner)
    if kind == "diagonal":
        return DiagonalNoise(np.diag(arr).copy(), **kwargs)
    d = arr.shape[0]
    return IsotropicNoise(float(np.sqrt(max(np.trace(arr), 0.0) / d)), n_units=d, **kwargs)
