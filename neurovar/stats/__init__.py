"""Variability statistics for ANN units and cortical neurons alike.

Every function takes xarray objects with named dims (default ``trial``, ``stimulus``,
``unit``; overridable with ``trial_dim=``, ``stimulus_dim=``, ``unit_dim=``) and returns xarray;
pairwise results have dims ``("unit", "unit_j")``. Importing this module registers the
``.nv`` DataArray accessor (``da.nv.fano_factor()``).
"""

from __future__ import annotations

from . import accessor as _accessor  # noqa: F401  (registers the .nv accessor)
from .alignment import alignment_index, principal_angles, top_subspace, variance_along
from .correlation import noise_correlation, signal_correlation
from .covariance import noise_covariance, signal_covariance
from .information import differential_correlation_strength, linear_fisher_information
from .shared import shared_variance
from .spectrum import eigenspectrum, participation_ratio, power_law_exponent
from .variability import fano_factor, mean_matched_fano_factor

__all__ = [
    "fano_factor",
    "mean_matched_fano_factor",
    "noise_correlation",
    "signal_correlation",
    "noise_covariance",
    "signal_covariance",
    "eigenspectrum",
    "participation_ratio",
    "power_law_exponent",
    "variance_along",
    "alignment_index",
    "principal_angles",
    "top_subspace",
    "linear_fisher_information",
    "differential_correlation_strength",
    "shared_variance",
]
