r"""Running estimates of a noise model: activation and noise variance, relative scale, SNR.

:class:`RunningScale` is one of the bases of :class:`neurovar.noise.NoiseModule`. With
``relative_scale = m`` the noise scale follows the layer,

.. math:: s = \sqrt{m\, \widehat{\mathrm{tr}\,\Sigma}_h / E\|\epsilon\|^2},

where :math:`\widehat{\mathrm{tr}\,\Sigma}_h` is a running (momentum) estimate of the layer's
total activation variance across the batch (ddof=1), updated in training mode only, as
BatchNorm's ``running_var`` (Ioffe & Szegedy 2015).

References
----------
Ioffe, S. & Szegedy, C. (2015). Batch normalization. ICML (running estimates with momentum).
"""

from __future__ import annotations

import math

import torch

from neurovar._validation import param_error

__all__: list[str] = []


class RunningScale:
    """Running variance estimates and the relative scale (a base of :class:`NoiseModule`).

    It expects the buffers registered by ``NoiseModule.__init__``
    (``running_activation_variance``, ``running_noise_variance``, ``num_batches_tracked``),
    the attributes ``scale``, ``relative_scale`` and ``momentum``, and the methods
    ``_check_layout`` and ``_base_total_variance`` of :class:`NoiseModule`.
    """

    def expected_total_variance(self, x: torch.Tensor) -> float:
        """Expected total noise variance per sample, summed over all units of layer output ``x``.

        ``E ||x_noisy - x||^2`` at the current scale (or at the relative scale, using the
        running activation variance when it exists and ``x``'s batch variance otherwise).
        """
        base = self.unit_scale_total_variance(x)
        return float(self._effective_scale(x, base, update=False, batch_fallback=True)) ** 2 * base

    def unit_scale_total_variance(self, x: torch.Tensor) -> float:
        r"""Expected total noise variance per sample at ``scale = 1``, for layer output ``x``.

        :math:`E\|\epsilon(x)\|^2`, summed over all units of ``x`` (``(B, ...)``); for
        ``share="channel"`` the ``C x C`` trace times the number of positions, for
        :class:`PoissonLikeNoise` averaged over the batch (its variance follows ``x``).
        :func:`neurovar.noise.scale_to_activation_variance` sets ``scale`` from it.

        Raises
        ------
        ValueError
            ``x`` does not fit the module (see the layout rules of :class:`NoiseModule`).
        """
        if not isinstance(x, torch.Tensor):
            raise param_error(
                "x",
                f"{type(self).__name__}.unit_scale_total_variance",
                "a torch.Tensor of shape (B, ...)",
                x,
            )
        batch, d, p = self._check_layout(x)
        # no float64 copy here: only PoissonLikeNoise reads the values (and casts them itself)
        return float(self._base_total_variance(x.detach().reshape(batch, d, p)))

    @property
    def effective_snr(self) -> float:
        r"""Running signal-to-noise ratio ``tr(Cov_batch(x)) / E||noise||^2`` (NaN if untracked).

        Tracked in training mode when ``relative_scale`` is set or ``track_snr=True``.
        """
        if int(self.num_batches_tracked) == 0:
            return float("nan")
        return float(self.running_activation_variance / self.running_noise_variance)

    @staticmethod
    def _batch_variance(x: torch.Tensor) -> torch.Tensor:
        # total variance across the batch, ddof=1: sum_i Var_b(x_bi)
        return x.detach().flatten(1).to(torch.float64).var(dim=0, correction=1).sum()

    def _effective_scale(
        self, x: torch.Tensor, base: float, *, update: bool, batch_fallback: bool = False
    ) -> float:
        if self.relative_scale is None:
            return self.scale
        owner = type(self).__name__
        untracked = int(self.num_batches_tracked) == 0
        if untracked and not update and not batch_fallback:
            # Eval mode without a running estimate. Using this batch's variance instead would make
            # one sample's noise depend on the others in the batch, and a batch of trial copies
            # of one stimulus (as record_activations builds) has variance 0: no noise at all.
            raise ValueError(
                f"{owner} with relative_scale={self.relative_scale:g} has no running estimate of "
                "the layer's activation variance yet (it is tracked in training mode only). Run "
                "it in training mode on clean activations first, e.g. `noise.train(); "
                "noise(collect_layer_activations(model, images, layer=...))`, or use a fixed "
                "scale (neurovar.noise.scale_to_activation_variance)."
            )
        if (update or untracked) and x.shape[0] < 2:
            raise ValueError(
                f"{owner} with relative_scale needs a running activation variance or a batch of "
                f"at least 2 samples to estimate it; got batch size {x.shape[0]} before any "
                "training-mode forward."
            )
        if update:
            self._update("running_activation_variance", self._batch_variance(x))
            act_var = float(self.running_activation_variance)
        elif int(self.num_batches_tracked) > 0:
            act_var = float(self.running_activation_variance)
        else:
            act_var = float(self._batch_variance(x))
        if base <= 0:
            return 0.0
        return math.sqrt(self.relative_scale * act_var / base)

    def _update(self, name: str, value: torch.Tensor) -> None:
        buf = getattr(self, name)
        value = value.to(buf.device, buf.dtype)
        if int(self.num_batches_tracked) == 0:
            buf.copy_(value)
        else:
            buf.mul_(1 - self.momentum).add_(self.momentum * value)
