"""The ``.nv`` accessor: ``da.nv.fano_factor()`` etc. delegate to :mod:`neurovar.stats`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import xarray as xr

from . import alignment, correlation, covariance, information, shared, spectrum, variability

__all__ = ["NeurovarAccessor"]


def _delegate(func: Callable[..., Any]) -> Callable[..., Any]:
    """Method that calls ``func(self._obj, *args, **kwargs)``, with ``func``'s docstring."""

    @functools.wraps(func)
    def method(self: NeurovarAccessor, *args: Any, **kwargs: Any) -> Any:
        return func(self._obj, *args, **kwargs)

    return method


@xr.register_dataarray_accessor("nv")
class NeurovarAccessor:
    """Variability statistics of a ``(trial, stimulus, unit)`` DataArray (or a covariance).

    Every method is the function of the same name in :mod:`neurovar.stats` with this
    DataArray as its first argument, e.g. ``da.nv.noise_correlation()`` is
    ``neurovar.stats.noise_correlation(da)`` and ``cov.nv.alignment_index(other, n_components=3)``
    is ``neurovar.stats.alignment_index(cov, other, n_components=3)``.
    """

    def __init__(self, xarray_obj: xr.DataArray) -> None:
        self._obj = xarray_obj

    fano_factor = _delegate(variability.fano_factor)
    mean_matched_fano_factor = _delegate(variability.mean_matched_fano_factor)
    noise_correlation = _delegate(correlation.noise_correlation)
    signal_correlation = _delegate(correlation.signal_correlation)
    noise_covariance = _delegate(covariance.noise_covariance)
    signal_covariance = _delegate(covariance.signal_covariance)
    eigenspectrum = _delegate(spectrum.eigenspectrum)
    participation_ratio = _delegate(spectrum.participation_ratio)
    power_law_exponent = _delegate(spectrum.power_law_exponent)
    variance_along = _delegate(alignment.variance_along)
    alignment_index = _delegate(alignment.alignment_index)
    principal_angles = _delegate(alignment.principal_angles)
    top_subspace = _delegate(alignment.top_subspace)
    linear_fisher_information = _delegate(information.linear_fisher_information)
    differential_correlation_strength = _delegate(information.differential_correlation_strength)
    shared_variance = _delegate(shared.shared_variance)
