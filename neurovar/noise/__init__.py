"""Structured noise: noise models, injection into layers, fitting from perturbations, controls.

- :mod:`~neurovar.noise.models`: :class:`IsotropicNoise`, :class:`DiagonalNoise`,
  :class:`CovarianceNoise`, :class:`LowRankNoise`, :class:`PoissonLikeNoise` (torch modules,
  seeded generators, ``share="flat"`` or ``"channel"``).
- :mod:`~neurovar.noise.inject`: :func:`inject_noise` (forward hooks; context manager or
  persistent handle), :func:`frozen_noise`, :func:`suspend_noise`.
- :mod:`~neurovar.noise.fit`: :func:`fit_perturbation_covariance` and noise magnitude relative
  to the layer's activation variance (:func:`scale_to_activation_variance`).
- :mod:`~neurovar.noise.controls`: matched-trace controls (:func:`match_total_variance`,
  :func:`diagonal_control`, :func:`isotropic_control`, :func:`rotate_spectrum`), for any noise
  model through :meth:`NoiseModule.diagonal` / :meth:`NoiseModule.dense_covariance`; the kinds of
  :func:`noise_from_covariance` are a registry (:data:`NOISE_KINDS`, :func:`register_noise_kind`).
- :mod:`~neurovar.noise.factor`: :class:`FactorCovariance`, ``F F^T + diag(d)``
  without the dense matrix; the controls and :func:`noise_from_covariance` keep that form.
"""

from __future__ import annotations

from .controls import (
    NOISE_KINDS,
    diagonal_control,
    isotropic_control,
    match_total_variance,
    matched_controls,
    noise_from_covariance,
    random_orthogonal,
    register_noise_kind,
    rotate_spectrum,
)
from .factor import FactorCovariance
from .fit import (
    ESTIMATORS,
    METHODS,
    NoiseCalibration,
    collect_layer_activations,
    fit_perturbation_covariance,
    layer_activation_covariance,
    layer_total_variance,
    perturbation_directions,
    scale_to_activation_variance,
)
from .inject import (
    NoiseHook,
    NoiseInjection,
    find_noise_hooks,
    frozen_noise,
    inject_noise,
    suspend_noise,
)
from .models import (
    CovarianceNoise,
    DiagonalNoise,
    IsotropicNoise,
    LowRankNoise,
    NoiseModule,
    PoissonLikeNoise,
)

__all__ = [
    # models
    "NoiseModule",
    "IsotropicNoise",
    "DiagonalNoise",
    "CovarianceNoise",
    "LowRankNoise",
    "PoissonLikeNoise",
    # injection
    "inject_noise",
    "NoiseInjection",
    "NoiseHook",
    "frozen_noise",
    "suspend_noise",
    "find_noise_hooks",
    # fitting and magnitude
    "fit_perturbation_covariance",
    "perturbation_directions",
    "collect_layer_activations",
    "layer_activation_covariance",
    "layer_total_variance",
    "scale_to_activation_variance",
    "NoiseCalibration",
    "METHODS",
    "ESTIMATORS",
    # controls
    "match_total_variance",
    "diagonal_control",
    "isotropic_control",
    "rotate_spectrum",
    "random_orthogonal",
    "matched_controls",
    "noise_from_covariance",
    "NOISE_KINDS",
    "FactorCovariance",
    "register_noise_kind",
]
