"""Noise models: torch modules that add structured Gaussian (or Poisson-like) noise to activations.

Every model maps a layer output ``x`` of shape ``(B, ...)`` to ``x + s * eps`` with
``eps`` drawn independently for each batch element from a zero-mean distribution with a given
covariance, and ``s`` the module's ``scale``. Randomness comes only from a
:class:`torch.Generator` (given as ``rng``, or created lazily per device from the seed ``rng``);
the global torch RNG is never touched.

Writing your own noise model: subclass :class:`NoiseModule`, implement ``_add_noise`` (the
draw) and :meth:`NoiseModule.dense_covariance` (its covariance), and every control of
:mod:`neurovar.noise.controls` works with it (:meth:`NoiseModule.diagonal` and the trace
follow from the covariance unless you override them with something faster).

How a covariance is laid over a layer's units is chosen with ``share``:

``"flat"``
    the covariance is ``D x D`` over all ``D = prod(x.shape[1:])`` flattened units (in
    ``torch.flatten`` order, i.e. channel-major ``(c, y, x)``).
``"channel"``
    the covariance is ``C x C`` over channels (``C = x.shape[1]``) and applied independently at
    every spatial position, so a convolutional layer with 16k units needs only a ``C x C`` matrix.

References
----------
Dapello, J. et al. (2020). Simulating a primary visual cortex at the front of CNNs improves
robustness to image perturbations. NeurIPS (VOneNet; Poisson-like activation noise).
Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (structured noise from perturbations).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from neurovar._validation import (
    InvalidParameterError,
    check_bool,
    check_int,
    check_real,
    param_error,
)

from .._compat import renamed_parameters
from ._random import RandomStreams, seed_of
from ._running import RunningScale
from ._utils import as_numpy_matrix, check_share, fresh_seed, psd_factor

__all__ = [
    "NoiseModule",
    "IsotropicNoise",
    "DiagonalNoise",
    "CovarianceNoise",
    "LowRankNoise",
    "PoissonLikeNoise",
]


def _share_from_attrs(cov: Any, kwargs: dict[str, Any]) -> None:
    """Default ``share`` to the one a fitted covariance DataArray records in its attrs."""
    if isinstance(cov, xr.DataArray) and "share" in cov.attrs:
        kwargs.setdefault("share", cov.attrs["share"])


def _as_vector(value: Any, *, name: str, owner: str) -> torch.Tensor:
    """A non-negative 1-D float vector (scalars become length-1 vectors)."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise param_error(name, owner, "a non-negative number or array of numbers", value)
    if isinstance(value, torch.Tensor):
        arr = value.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(getattr(value, "values", value), dtype=np.float64)
    arr = np.atleast_1d(arr).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be finite and non-empty."
        )
    if np.any(arr < 0):
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be non-negative. "
            f"Got a minimum of {arr.min():.4g} instead."
        )
    return torch.as_tensor(arr, dtype=torch.float32)


class NoiseModule(RandomStreams, RunningScale, nn.Module):
    r"""Base class of the noise models: :math:`\tilde h = h + s\,\epsilon`, one draw per sample.

    Parameters
    ----------
    share
        ``"flat"`` (covariance over all flattened units) or ``"channel"`` (``C x C`` covariance
        shared over spatial positions, draws independent across positions).
    scale
        Multiplier :math:`s` of the noise standard deviation (the covariance is multiplied by
        ``scale**2``). Ignored when ``relative_scale`` is set.
    relative_scale
        If set to ``m > 0``, the noise follows the layer: its expected total variance is kept at

        .. math:: E\|s\,\epsilon\|^2 = m\, \widehat{\mathrm{tr}\,\Sigma}_h, \qquad
                  \mathrm{tr}\,\Sigma_h = \sum_i \frac{1}{B - 1} \sum_{b=1}^{B}
                  (h_{bi} - \bar h_i)^2,

        the total variance (unbiased, ddof=1, across the ``B`` samples of a batch, summed over
        all units ``i`` of the layer output ``h`` before this noise is added), tracked as a
        running estimate :math:`\widehat{\mathrm{tr}\,\Sigma}_h` (like BatchNorm's
        ``running_var``) while the module is in training mode, and frozen in eval mode (where a
        forward without any estimate is an error). The scale is detached from the graph, so a
        network trained with it cannot make the noise negligible by growing its activations.
    momentum
        Momentum of the running estimates, ``r <- (1 - momentum) r + momentum * batch`` (the
        first batch initialises them).
    track_snr
        Track running estimates of activation and noise variance even when ``relative_scale``
        is None, to report :attr:`effective_snr`.
    rng
        Source of the draws. An int seeds the generators created lazily on each device;
        ``None`` takes a fresh seed from OS entropy; a :class:`numpy.random.Generator` gives
        one seed (one draw from it). The seed is stored in :attr:`seed` so the run can be
        reproduced. A :class:`torch.Generator` is used as it is (shared, not copied; :attr:`seed`
        is then None): draws are made on the generator's device and moved to the activation's
        device when they differ.

    Notes
    -----
    Each batch element gets an independent draw, whatever the batch size, so a recorder can
    expand the batch (trials) before the noise is applied. :meth:`freeze` replays one draw
    (for attacks and debugging), :meth:`freezing` inside a block only; :meth:`get_rng_state` /
    :meth:`set_rng_state` save and restore the random streams; :meth:`clone` copies the module
    with its draws restarting from the seed.

    Subclasses implement ``_add_noise(x3, draws, s)`` (``x3 + s * eps`` in the layout
    ``(B, D, P)``) and :meth:`dense_covariance` (the ``D x D`` covariance of ``eps``), and may
    override :meth:`diagonal` and ``_draw_shapes`` for speed or for several draws.

    Running estimates are updated only when the module is in
    training mode; :func:`neurovar.noise.inject_noise` keeps that mode in sync with the hooked
    layer, so ``model.train()`` / ``model.eval()`` control it.

    References
    ----------
    Ioffe, S. & Szegedy, C. (2015). Batch normalization. ICML (running estimates with momentum).
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (noise relative to the layer).
    """

    _neurovar_noise_module = True  # the marker neurovar._torch.is_noise_module looks for

    @renamed_parameters({"seed": "rng", "generator": "rng"})
    def __init__(
        self,
        *,
        share: str = "flat",
        scale: float = 1.0,
        relative_scale: float | None = None,
        momentum: float = 0.1,
        track_snr: bool = False,
        rng: int | np.random.Generator | torch.Generator | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.share = check_share(share, owner=owner)
        self.scale = check_real(scale, name="scale", owner=owner, low=0, coerce=True)
        self.relative_scale = (
            None
            if relative_scale is None
            else check_real(relative_scale, name="relative_scale", owner=owner, low=0, coerce=True)
        )
        self.momentum = check_real(momentum, name="momentum", owner=owner, low=0, coerce=True)
        if not 0 < self.momentum <= 1:
            raise InvalidParameterError(
                f"The 'momentum' parameter of {owner} must be in (0, 1]. Got {momentum!r} instead."
            )
        self.track_snr = check_bool(track_snr, name="track_snr", owner=owner)
        generator = rng if isinstance(rng, torch.Generator) else None
        seed = None if generator is not None else seed_of(rng, owner)
        self.seed: int | None = (
            None if generator is not None else (fresh_seed() if seed is None else seed)
        )
        self._user_generator = generator
        self._generators: dict[str, torch.Generator] = {}
        self._frozen = False
        self._frozen_draw: tuple[torch.Tensor, ...] | None = None
        self.register_buffer("running_activation_variance", torch.zeros((), dtype=torch.float64))
        self.register_buffer("running_noise_variance", torch.zeros((), dtype=torch.float64))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ layout
    def _layout(self, x: torch.Tensor) -> tuple[int, int, int]:
        """``(B, D, P)``: batch, covariance size, positions sharing the covariance."""
        if x.ndim < 2:
            raise ValueError(
                f"{type(self).__name__} needs a layer output with a batch dim and at least one "
                f"unit dim, shape (B, ...). Got shape {tuple(x.shape)} instead."
            )
        batch = x.shape[0]
        if self.share == "flat":
            return batch, math.prod(x.shape[1:]), 1
        return batch, x.shape[1], math.prod(x.shape[2:])

    @property
    def n_units(self) -> int | None:
        """Size of the covariance (units for ``"flat"``, channels for ``"channel"``)."""
        return None

    def _check_layout(self, x: torch.Tensor) -> tuple[int, int, int]:
        batch, d, p = self._layout(x)
        n = self.n_units
        if n is not None and n != d:
            what = "flattened units" if self.share == "flat" else "channels (x.shape[1])"
            other = (
                f"; with share='channel' it would need {x.shape[1]} channels"
                if self.share == "flat"
                else f"; with share='flat' it would need {math.prod(x.shape[1:])} units"
            )
            raise ValueError(
                f"{type(self).__name__} was built for {n} {what} (share={self.share!r}; its "
                "'n_units' or covariance size), but the "
                f"layer output has shape {tuple(x.shape)}, i.e. {d} {what}{other}."
            )
        return batch, d, p

    def _draw_shapes(self, batch: int, d: int, p: int) -> list[tuple[int, ...]]:
        return [(batch, d, p)]

    # ------------------------------------------------------------------ subclass API
    def _add_noise(
        self, x3: torch.Tensor, draws: tuple[torch.Tensor, ...], s: float
    ) -> torch.Tensor:
        """``x3 + s * eps`` in layout ``(B, D, P)`` (fused ops: these tensors can be large)."""
        raise NotImplementedError

    def dense_covariance(self) -> torch.Tensor:
        r"""The ``D x D`` covariance :math:`\Sigma` of the draw :math:`\epsilon` (before ``scale``).

        ``D`` is :attr:`n_units` (flattened units for ``share="flat"``, channels for
        ``"channel"``); the noise added to the layer has covariance ``scale**2 * Sigma``
        (:attr:`covariance` where a model defines it). Subclasses override this; the controls
        of :mod:`neurovar.noise.controls` use it for any noise model.

        Returns
        -------
        torch.Tensor
            float64, on the CPU, detached.

        Raises
        ------
        TypeError
            The model has no fixed covariance (e.g. its variance follows the input).
        ValueError
            The model does not know its number of units.
        """
        raise TypeError(
            f"{type(self).__name__} does not define its covariance; implement "
            "dense_covariance() (and optionally diagonal()) to use it with the controls."
        )

    def diagonal(self) -> torch.Tensor:
        r"""Per-unit variances :math:`\Sigma_{ii}` of the draw :math:`\epsilon` (before ``scale``).

        Shape ``(D,)``, float64 on the CPU. The default takes the diagonal of
        :meth:`dense_covariance`; the models override it without forming the ``D x D`` matrix
        (which for a flat conv layer would need tens of GiB).
        """
        return torch.diagonal(self.dense_covariance()).clone()

    def _trace(self) -> float:
        """Trace of the covariance at scale 1 (per position for ``"channel"``)."""
        return float(self.diagonal().sum())

    def _rotated_spectrum(
        self, random_frame: Callable[[int, int], np.ndarray], kwargs: dict[str, Any]
    ) -> NoiseModule | None:
        """A cheaper module with the spectrum of this one and random eigenvectors, or None.

        :func:`neurovar.noise.rotate_spectrum` calls it with ``random_frame(n, k)`` (a
        Haar-random ``n x k`` orthonormal frame) and the keyword arguments of the new module;
        None (the default) makes it rotate :meth:`dense_covariance` into a
        :class:`CovarianceNoise`.
        """
        return None

    def _base_total_variance(self, x3: torch.Tensor) -> torch.Tensor:
        """Expected total noise variance per sample at scale 1, summed over all units."""
        return torch.as_tensor(self._trace() * x3.shape[2], dtype=torch.float64)

    # ------------------------------------------------------------------ public API
    @property
    def trace(self) -> float:
        """Trace of the noise covariance at the current ``scale``, ``scale**2 * tr(Sigma)``.

        For ``share="channel"`` it is the trace of the ``C x C`` matrix, i.e. the total noise
        variance *per spatial position*; multiply by the number of positions for the layer total.
        """
        return self.scale**2 * self._trace()

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description (for the ``attrs`` of recordings)."""
        return {
            "type": type(self).__name__,
            "share": self.share,
            "scale": self.scale,
            "relative_scale": self.relative_scale,
            "n_units": self.n_units,
            "seed": self.seed,
            **self._extra_config(),
        }

    def _extra_config(self) -> dict[str, Any]:
        return {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + scale * eps`` with an independent draw of ``eps`` per batch element."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__} expects a tensor layer output. Got {type(x).__name__}."
            )
        if not torch.is_floating_point(x):
            raise TypeError(f"{type(self).__name__} expects a floating tensor. Got {x.dtype}.")
        batch, d, p = self._check_layout(x)
        self._follow_device(x)
        x3 = x.reshape(batch, d, p)
        draws = self._draws(x, batch, d, p)
        tracking = self.training and (self.relative_scale is not None or self.track_snr)
        if self.relative_scale is not None:
            base = float(self._base_total_variance(x3.detach()))
            s = self._effective_scale(x, base, update=tracking)
        else:
            s = self.scale
            if tracking:
                self._update("running_activation_variance", self._batch_variance(x))
        out = self._add_noise(x3, draws, float(s))
        if tracking:
            noise = (out.detach() - x3.detach()).flatten(1).to(torch.float64)
            self._update("running_noise_variance", noise.pow(2).sum(1).mean())
            self.num_batches_tracked.add_(1)
        return out.reshape(x.shape)

    def _follow_device(self, x: torch.Tensor) -> None:
        buf = self.running_noise_variance
        if buf.device != x.device:
            self.to(x.device)

    def extra_repr(self) -> str:
        parts = [f"share={self.share!r}", f"scale={self.scale:g}"]
        if self.relative_scale is not None:
            parts.append(f"relative_scale={self.relative_scale:g}")
        parts.append(f"rng={self.seed}")
        return ", ".join(parts)


class IsotropicNoise(NoiseModule):
    r"""Isotropic Gaussian noise, :math:`\epsilon \sim \mathcal N(0, \sigma^2 I)`.

    Parameters
    ----------
    std
        Standard deviation :math:`\sigma \ge 0` of every unit.
    n_units
        Optional number of units (``"flat"``) or channels (``"channel"``); needed for
        :attr:`trace` and checked against the layer when given.
    **kwargs
        ``share``, ``scale``, ``relative_scale``, ``momentum``, ``track_snr``, ``seed``,
        ``generator`` (see :class:`NoiseModule`).

    References
    ----------
    Rasmussen, C. E. & Williams, C. K. I. (2006). Gaussian Processes for Machine Learning.
    MIT Press, appendix A.2 (sampling :math:`\epsilon = L z`, :math:`L L^T = \Sigma`).
    """

    def __init__(self, std: float, *, n_units: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.std = check_real(std, name="std", owner="IsotropicNoise", low=0, coerce=True)
        self._n_units = (
            None
            if n_units is None
            else check_int(n_units, name="n_units", owner="IsotropicNoise", low=1)
        )

    @property
    def n_units(self) -> int | None:
        return self._n_units

    def _add_noise(self, x3, draws, s):
        return torch.add(x3, draws[0], alpha=s * self.std)

    def _trace(self) -> float:
        if self._n_units is None:
            raise ValueError(
                "IsotropicNoise needs 'n_units' to know its trace; build it with "
                "IsotropicNoise(std, n_units=D) or use expected_total_variance(x)."
            )
        return self.std**2 * self._n_units

    def _base_total_variance(self, x3):
        return torch.as_tensor(self.std**2 * x3.shape[1] * x3.shape[2], dtype=torch.float64)

    @property
    def covariance(self) -> torch.Tensor:
        """The ``n_units x n_units`` covariance at the current scale."""
        return (self.scale * self.std) ** 2 * torch.eye(self._trace_units())

    def _trace_units(self) -> int:
        self._trace()
        return int(self._n_units)

    def diagonal(self) -> torch.Tensor:
        return torch.full((self._trace_units(),), self.std**2, dtype=torch.float64)

    def dense_covariance(self) -> torch.Tensor:
        return self.std**2 * torch.eye(self._trace_units(), dtype=torch.float64)

    def _extra_config(self):
        return {"std": self.std}


class DiagonalNoise(NoiseModule):
    r"""Independent Gaussian noise per unit, :math:`\epsilon \sim \mathcal N(0, \mathrm{diag}(v))`.

    Parameters
    ----------
    variance
        Per-unit variances :math:`v \ge 0`, shape ``(D,)`` for ``"flat"`` (or the layer's
        unit shape, flattened) or ``(C,)`` for ``"channel"``; a scalar applies to every unit
        (the trace is then only known for a given layer output, see
        :meth:`expected_total_variance`).
    **kwargs
        See :class:`NoiseModule`.

    References
    ----------
    Rasmussen, C. E. & Williams, C. K. I. (2006). Gaussian Processes for Machine Learning.
    MIT Press, appendix A.2 (sampling :math:`\epsilon = L z`, :math:`L L^T = \Sigma`).
    """

    def __init__(self, variance: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register_buffer(
            "variance", _as_vector(variance, name="variance", owner="DiagonalNoise")
        )

    @property
    def n_units(self) -> int | None:
        n = int(self.variance.numel())
        return None if n == 1 else n  # a scalar variance applies to every unit

    def _add_noise(self, x3, draws, s):
        sd = self.variance.to(x3.dtype).sqrt()[None, :, None]
        return torch.addcmul(x3, sd, draws[0], value=s)

    def _trace(self) -> float:
        if self.n_units is None:
            raise ValueError(
                "DiagonalNoise with a scalar 'variance' does not know its number of units, hence "
                "its trace; pass one variance per unit (or use expected_total_variance(x))."
            )
        return float(self.variance.double().sum())

    def _base_total_variance(self, x3):
        # a scalar variance v applies to all D units at all P positions: D P v
        per_unit = x3.shape[1] if self.n_units is None else 1
        return torch.as_tensor(
            float(self.variance.double().sum()) * per_unit * x3.shape[2], dtype=torch.float64
        )

    @property
    def covariance(self) -> torch.Tensor:
        """The diagonal covariance matrix at the current scale."""
        self._trace()
        return self.scale**2 * torch.diag(self.variance)

    def diagonal(self) -> torch.Tensor:
        self._trace()
        return self.variance.detach().to("cpu", torch.float64).clone()

    def dense_covariance(self) -> torch.Tensor:
        return torch.diag(self.diagonal())


class CovarianceNoise(NoiseModule):
    r"""Gaussian noise with a full covariance, :math:`\epsilon = L z`, :math:`L L^T = \Sigma`.

    The factor is computed once from the eigendecomposition
    :math:`\Sigma = V \Lambda V^T`, :math:`L = V \Lambda_+^{1/2}`, which works for singular
    (rank-deficient) covariances too; slightly negative eigenvalues from rounding are clipped
    to zero and reported in :attr:`factor_info`. Sampling costs ``O(B P D^2)``.

    Parameters
    ----------
    cov_matrix
        Symmetric positive semi-definite ``D x D`` matrix (ndarray, tensor or DataArray with
        dims ``("unit", "unit_j")``); ``D`` = flattened units (``"flat"``) or channels
        (``"channel"``).
    psd_tol
        Relative tolerance for negative eigenvalues (``min eig >= -psd_tol * max |eig|``).
    **kwargs
        See :class:`NoiseModule`.

    Raises
    ------
    ValueError
        ``cov_matrix`` not square, not symmetric (relative tolerance 1e-6), not positive
        semi-definite beyond ``psd_tol``, or not finite.

    References
    ----------
    Rasmussen, C. E. & Williams, C. K. I. (2006). Gaussian Processes for Machine Learning.
    MIT Press, appendix A.2 (sampling :math:`\epsilon = L z`, :math:`L L^T = \Sigma`).
    """

    def __init__(self, cov_matrix: Any, *, psd_tol: float = 1e-6, **kwargs: Any) -> None:
        _share_from_attrs(cov_matrix, kwargs)
        super().__init__(**kwargs)
        psd_tol = check_real(psd_tol, name="psd_tol", owner="CovarianceNoise", low=0, coerce=True)
        cov = as_numpy_matrix(cov_matrix, name="cov_matrix", owner="CovarianceNoise")
        evals, _, factor, info = psd_factor(
            cov, name="cov_matrix", owner="CovarianceNoise", psd_tol=psd_tol
        )
        self.factor_info: dict[str, Any] = info
        self.register_buffer("factor", torch.as_tensor(factor, dtype=torch.float32))
        self.register_buffer("eigenvalues", torch.as_tensor(evals, dtype=torch.float32))

    @property
    def n_units(self) -> int:
        return int(self.factor.shape[0])

    def _add_noise(self, x3, draws, s):
        factor = self.factor.to(x3.dtype)
        z = draws[0]
        if z.shape[2] == 1:  # flat: one GEMM, x + s * z L^T
            return torch.addmm(x3[:, :, 0], z[:, :, 0], factor.T, alpha=s)[:, :, None]
        return torch.add(x3, torch.matmul(factor, z), alpha=s)

    def _trace(self) -> float:
        return float(self.factor.double().pow(2).sum())

    @property
    def covariance(self) -> torch.Tensor:
        """The covariance ``scale**2 * L L^T``."""
        return self.scale**2 * (self.factor @ self.factor.T)

    def diagonal(self) -> torch.Tensor:
        return self.factor.detach().to("cpu", torch.float64).pow(2).sum(1)

    def dense_covariance(self) -> torch.Tensor:
        factor = self.factor.detach().to("cpu", torch.float64)
        return factor @ factor.T


class LowRankNoise(NoiseModule):
    r"""Low-rank plus diagonal Gaussian noise, :math:`\Sigma = F F^T + \mathrm{diag}(d)`.

    Sampled as :math:`\epsilon = F z_1 + d^{1/2} \odot z_2` with :math:`z_1 \sim \mathcal N(0,
    I_r)`, :math:`z_2 \sim \mathcal N(0, I_D)`, costing ``O(B P D r)`` instead of ``O(B P D^2)``
    (the factor-analysis form of a covariance).

    Parameters
    ----------
    factors
        ``(D, r)`` matrix :math:`F`.
    diagonal
        Non-negative per-unit variances :math:`d`, shape ``(D,)``, or a scalar (isotropic
        residual); 0 gives a purely low-rank covariance. Stored as the buffer
        :attr:`residual_variance` (:meth:`diagonal` is the whole diagonal of
        :math:`\Sigma`, :math:`\mathrm{diag}(FF^T) + d`).
    **kwargs
        See :class:`NoiseModule`.

    See Also
    --------
    LowRankNoise.from_covariance : top-``r`` eigenvectors plus the residual diagonal.

    References
    ----------
    Bishop, C. M. (2006). Pattern Recognition and Machine Learning. Springer, sec. 12.2.4
    (factor analysis, :math:`\Sigma = F F^T + \mathrm{diag}(d)`).
    """

    def __init__(self, factors: Any, diagonal: Any = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        f = as_numpy_matrix(factors, name="factors", owner="LowRankNoise")
        if f.ndim == 1:
            f = f[:, None]
        if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
            raise InvalidParameterError(
                "The 'factors' parameter of LowRankNoise must be a (D, r) matrix. "
                f"Got shape {f.shape} instead."
            )
        d = _as_vector(diagonal, name="diagonal", owner="LowRankNoise")
        if d.numel() == 1:
            d = d.expand(f.shape[0]).clone()
        if d.numel() != f.shape[0]:
            raise InvalidParameterError(
                f"The 'diagonal' parameter of LowRankNoise must have {f.shape[0]} entries (one "
                f"per row of 'factors') or be a scalar. Got {d.numel()} instead."
            )
        self.register_buffer("factors", torch.as_tensor(f, dtype=torch.float32))
        self.register_buffer("residual_variance", d)

    @classmethod
    def from_covariance(
        cls, cov_matrix: Any, rank: int, *, residual: str = "diagonal", **kwargs: Any
    ) -> LowRankNoise:
        r"""Build from the top-``rank`` eigenpairs of a covariance.

        :math:`F = V_r \Lambda_r^{1/2}`; with ``residual="diagonal"`` the diagonal is
        :math:`d = \mathrm{diag}(\Sigma - F F^T) \ge 0`, so :math:`\mathrm{tr}(FF^T +
        \mathrm{diag}(d)) = \mathrm{tr}(\Sigma)` (same total variance); with ``"none"`` the
        residual is dropped (pure truncation, smaller trace).

        Parameters
        ----------
        cov_matrix
            Symmetric positive semi-definite ``D x D`` matrix (a DataArray's
            ``attrs["share"]`` is used unless ``share`` is given).
        rank
            Number of eigenpairs kept, in ``[1, D]``.
        residual
            ``"diagonal"`` or ``"none"``.
        **kwargs
            See :class:`NoiseModule`.

        Returns
        -------
        LowRankNoise

        References
        ----------
        Eckart, C. & Young, G. (1936). The approximation of one matrix by another of lower rank.
        Psychometrika 1, 211-218 (the top eigenpairs give the best rank-``r`` approximation).
        """
        cov = as_numpy_matrix(cov_matrix, name="cov_matrix", owner="LowRankNoise.from_covariance")
        evals, evecs, _, _ = psd_factor(
            cov, name="cov_matrix", owner="LowRankNoise.from_covariance"
        )
        n = cov.shape[0]
        rank = check_int(rank, name="rank", owner="LowRankNoise.from_covariance", low=1, high=n)
        if residual not in ("diagonal", "none"):
            raise InvalidParameterError(
                "The 'residual' parameter of LowRankNoise.from_covariance must be 'diagonal' or "
                f"'none'. Got {residual!r} instead."
            )
        f = evecs[:, ::-1][:, :rank] * np.sqrt(evals[::-1][:rank])[None, :]
        if residual == "diagonal":
            d = np.clip(np.diag(cov) - np.sum(f**2, axis=1), 0.0, None)
        else:
            d = np.zeros(n)
        _share_from_attrs(cov_matrix, kwargs)
        return cls(f, d, **kwargs)

    @property
    def n_units(self) -> int:
        return int(self.factors.shape[0])

    @property
    def rank(self) -> int:
        """Number of columns of the factor matrix."""
        return int(self.factors.shape[1])

    def _draw_shapes(self, batch, d, p):
        return [(batch, self.rank, p), (batch, d, p)]

    def _add_noise(self, x3, draws, s):
        f = self.factors.to(x3.dtype)
        sd = self.residual_variance.to(x3.dtype).sqrt()[None, :, None]
        z1, z2 = draws
        out = torch.addcmul(x3, sd, z2, value=s)
        if z1.shape[2] == 1:  # flat: x + s (d^1/2 * z2) + s z1 F^T, O(B D r)
            return out[:, :, 0].addmm_(z1[:, :, 0], f.T, alpha=s)[:, :, None]
        return out.add_(torch.matmul(f, z1), alpha=s)

    def _trace(self) -> float:
        return float(self.factors.double().pow(2).sum() + self.residual_variance.double().sum())

    @property
    def covariance(self) -> torch.Tensor:
        """The dense covariance ``scale**2 (F F^T + diag(d))``."""
        return self.scale**2 * (self.factors @ self.factors.T + torch.diag(self.residual_variance))

    def diagonal(self) -> torch.Tensor:
        f = self.factors.detach().to("cpu", torch.float64)
        return f.pow(2).sum(1) + self.residual_variance.detach().to("cpu", torch.float64)

    def _rotated_spectrum(self, random_frame, kwargs):
        # Q (F F^T + d I) Q^T = (Q F)(Q F)^T + d I: only a random D x r frame is needed
        diag = self.residual_variance.double()
        if not torch.allclose(diag, diag[0].expand_as(diag), rtol=1e-6, atol=0.0):
            raise ValueError(
                "rotate_spectrum: a LowRankNoise with a non-constant diagonal does not stay "
                "low-rank under rotation; rotate its dense covariance instead: "
                "rotate_spectrum(noise.dense_covariance())."
            )
        f = self.factors.double().numpy()
        _, s, _ = np.linalg.svd(f, full_matrices=False)
        frame = random_frame(f.shape[0], f.shape[1])
        return LowRankNoise(frame * s[None, :], self.residual_variance.clone(), **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of neurovar 0.1 stored the residual variance under the key "diagonal"
        old = prefix + "diagonal"
        if old in state_dict and prefix + "residual_variance" not in state_dict:
            state_dict[prefix + "residual_variance"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def dense_covariance(self) -> torch.Tensor:
        f = self.factors.detach().to("cpu", torch.float64)
        return f @ f.T + torch.diag(self.residual_variance.detach().to("cpu", torch.float64))

    def _extra_config(self):
        return {"rank": self.rank}


class PoissonLikeNoise(NoiseModule):
    r"""Gaussian noise with variance proportional to the rectified activation (Poisson-like).

    .. math:: x_{noisy} = x + \mathrm{scale} \cdot \sqrt{F\,(\max(x, 0) + \varepsilon)}\; z,
              \qquad z \sim \mathcal N(0, 1)

    so the variance is :math:`F` times the (rectified) mean, a Fano factor :math:`F` as in
    cortex; this is VOneNet's stochastic layer (Dapello et al. 2020), whose
    :math:`\varepsilon = 10^{-5}` keeps the gradient of the square root finite at 0.
    Draws are independent across units (no covariance).

    Parameters
    ----------
    fano
        Fano factor :math:`F \ge 0`: a scalar, or one per unit (``"flat"``) / channel
        (``"channel"``).
    eps
        Small variance floor :math:`\varepsilon \ge 0`.
    **kwargs
        See :class:`NoiseModule`.

    References
    ----------
    Dapello, J., Marques, T., Schrimpf, M., Geiger, F., Cox, D. D. & DiCarlo, J. J. (2020).
    Simulating a primary visual cortex at the front of CNNs improves robustness to image
    perturbations. NeurIPS.
    """

    def __init__(self, fano: Any = 1.0, *, eps: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.register_buffer("fano", _as_vector(fano, name="fano", owner="PoissonLikeNoise"))
        self.eps = check_real(eps, name="eps", owner="PoissonLikeNoise", low=0, coerce=True)

    @property
    def n_units(self) -> int | None:
        n = int(self.fano.numel())
        return None if n == 1 else n

    def _variance(self, x3: torch.Tensor) -> torch.Tensor:
        fano = self.fano.to(x3.dtype)[None, :, None]
        return fano * (torch.relu(x3) + self.eps)

    def _add_noise(self, x3, draws, s):
        return torch.addcmul(x3, self._variance(x3).sqrt(), draws[0], value=s)

    def _trace(self) -> float:
        raise TypeError(
            "PoissonLikeNoise has no fixed covariance: its variance follows the input. "
            "Use expected_total_variance(x) or neurovar.noise.scale_to_activation_variance."
        )

    def dense_covariance(self) -> torch.Tensor:
        self._trace()  # raises: no fixed covariance
        raise AssertionError  # pragma: no cover

    def diagonal(self) -> torch.Tensor:
        self._trace()  # raises: no fixed covariance
        raise AssertionError  # pragma: no cover

    def _base_total_variance(self, x3):
        return self._variance(x3.to(torch.float64)).sum(dim=(1, 2)).mean()

    def _extra_config(self):
        fano = self.fano.tolist()
        return {"fano": fano[0] if len(fano) == 1 else fano, "eps": self.eps}
