"""Trial-to-trial variability of single units: Fano factor and mean-matched Fano factor."""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats as sps

from neurovar._compat import renamed_parameters
from neurovar._progress import check_progress, progress_bar
from neurovar._validation import (
    InvalidParameterError,
    check_confidence_level,
    check_int,
    check_memory,
    param_error,
)
from neurovar.dims import STIMULUS, TRIAL, UNIT, check_responses

from ._util import is_dask, require_counts, resolve_rng, warn_nan

__all__ = ["fano_factor", "mean_matched_fano_factor"]


def _moments(
    responses: xr.DataArray,
    *,
    trial_dim: str,
    stimulus_dim: str | None,
    unit_dim: str,
    ddof: int,
    func: str,
) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """Validate; NaN-aware count, mean and variance over trials (NaN if < ddof+1 trials).

    Computed in float64 (recordings are often float32), lazily for dask-backed input.
    """
    require_counts(responses, "responses", func)
    n_trials = (
        getattr(responses, "sizes", {}).get(trial_dim) if isinstance(trial_dim, str) else None
    )
    if n_trials is not None and 0 < n_trials <= ddof:
        raise param_error(
            "ddof",
            func,
            f"smaller than the number of trials along {trial_dim!r} ({n_trials})",
            ddof,
        )
    check_responses(
        responses,
        trial_dim=trial_dim,
        stimulus_dim=stimulus_dim,
        unit_dim=unit_dim,
        min_trials=ddof + 1,
        owner=func,
    )
    if responses.dtype != np.float64:
        responses = responses.astype(np.float64)
    count = responses.count(dim=trial_dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices, dof <= 0
        mean = responses.mean(dim=trial_dim, skipna=True)
        var = responses.var(dim=trial_dim, ddof=ddof, skipna=True)
    var = var.where(count > ddof)
    return count, mean, var


def fano_factor(
    responses: xr.DataArray,
    *,
    ddof: int = 1,
    trial_dim: str = TRIAL,
    stimulus_dim: str | None = STIMULUS,
    unit_dim: str = UNIT,
) -> xr.DataArray:
    r"""Fano factor: variance over mean of the response across repeated trials.

    .. math::

        F_{si} = \frac{\hat\sigma^2_{si}}{\bar x_{si}}, \qquad
        \hat\sigma^2_{si} = \frac{1}{n_{si} - \mathrm{ddof}} \sum_t (x_{tsi} - \bar x_{si})^2,

    per stimulus and unit, where :math:`n_{si}` counts the valid (non-NaN) trials, so
    NaN-padded unequal repeats are handled. A Poisson process has :math:`F = 1`
    (Fano 1947; Tolhurst et al. 1983). Works lazily on dask-backed input.

    Conventions of peers: the default ``ddof=1`` divides by :math:`n - 1` (the unbiased
    variance, ``numpy.var(ddof=1)``, MATLAB's ``var``). Elephant's
    ``elephant.statistics.fanofactor`` divides by :math:`n` (``numpy.var`` with its default
    ``ddof=0``): ``fano_factor(counts, ddof=0)`` equals it to rounding (tested), and the
    default is :math:`n / (n - 1)` times Elephant's value (4% more with 25 trials).

    Entries with zero mean, zero variance (no trial-to-trial variability, e.g. ANN units
    before the noise site: the Fano factor is not a meaningful variability measure there) or
    fewer than ``ddof + 1`` valid trials give NaN; for in-memory input a warning says how many (dask-backed input stays lazy and is not counted). The
    Fano factor assumes non-negative responses (spike counts, rectified activations); a
    warning is given if any mean is negative.

    Parameters
    ----------
    responses
        Responses with a trial dim and a unit dim (and usually a stimulus dim); any other
        dims are kept.
    ddof
        Delta degrees of freedom of the variance: 1 (default, unbiased) or 0 (Elephant's
        ``fanofactor``).
    trial_dim, stimulus_dim, unit_dim
        Names of the dims; ``stimulus_dim=None`` if there is none.

    Returns
    -------
    xarray.DataArray
        The Fano factor with the trial dim reduced, named ``"fano_factor"``.

    References
    ----------
    Fano, U. (1947). Ionization yield of radiations. II. Phys. Rev. 72, 26-29.
    Tolhurst, D. J., Movshon, J. A. & Dean, A. F. (1983). The statistical reliability of
    signals in single neurons in cat and monkey visual cortex. Vision Res. 23, 775-785.
    """
    func = "fano_factor"
    ddof = check_int(ddof, name="ddof", owner=func, low=0)
    dims = {"trial_dim": trial_dim, "stimulus_dim": stimulus_dim, "unit_dim": unit_dim}
    count, mean, var = _moments(responses, **dims, ddof=ddof, func=func)
    # var is already NaN where count <= ddof; masking the zero means keeps lazy (dask)
    # evaluation free of 0/0 warnings too.
    ff = (var / mean.where(mean != 0)).where(var != 0)
    ff.name = "fano_factor"
    ff.attrs = {"ddof": ddof, "long_name": "Fano factor (variance / mean over trials)"}
    if not is_dask(ff):
        bad = int(ff.isnull().sum())
        warn_nan(
            bad,
            ff.size,
            "(stimulus, unit) entries",
            f"have zero mean, zero variance or fewer than {ddof + 1} valid trials",
        )
        if bool((mean < 0).any()):
            warnings.warn(
                f"{int((mean < 0).sum())} (stimulus, unit) entries have a negative mean; the "
                "Fano factor is meant for non-negative responses (counts, rectified rates).",
                RuntimeWarning,
                stacklevel=2,
            )
    return ff


def _wls_origin(m: np.ndarray, v: np.ndarray, w: np.ndarray, conf: float) -> tuple:
    """Weighted least squares of v on m through the origin: slope, CI low, CI high."""
    k = m.size
    sxx = np.sum(w * m * m)
    slope = np.sum(w * m * v) / sxx
    if k < 2:
        return slope, np.nan, np.nan
    s2 = np.sum(w * (v - slope * m) ** 2) / (k - 1)
    half = sps.t.ppf(0.5 + conf / 2, k - 1) * np.sqrt(s2 / sxx)
    return slope, slope - half, slope + half


def _weights(m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Inverse sampling variance of a variance estimate, 2 sigma^4 / (n - 1), with sigma^2 ~ m."""
    return np.maximum(n - 1.0, 1.0) / (2.0 * m**2)


def _groups(
    mean: xr.DataArray, condition: Hashable | None, func: str
) -> tuple[list[Hashable], list[xr.DataArray], str]:
    """Split the per-(stimulus, unit) moments into conditions."""
    if condition is None:
        return ["all"], [mean], "condition"
    if condition in mean.dims:
        labels = (
            list(mean.coords[condition].values)
            if condition in mean.coords
            else list(range(mean.sizes[condition]))
        )
        return labels, [mean.isel({condition: k}) for k in range(len(labels))], str(condition)
    if condition in mean.coords and mean.coords[condition].ndim == 1:
        coord = mean.coords[condition]
        labels = list(pd.unique(np.asarray(coord.values)))
        along = coord.dims[0]
        parts = [
            mean.isel({along: np.flatnonzero(np.asarray(coord.values) == lab)}) for lab in labels
        ]
        return labels, parts, str(condition)
    raise InvalidParameterError(
        f"The 'condition' parameter of {func} must name a dim or a 1-D coordinate of "
        f"'responses'. Got {condition!r}; dims are {tuple(mean.dims)!r} and coordinates "
        f"{tuple(mean.coords)!r}."
    )


@renamed_parameters({"confidence": "confidence_level"})
def mean_matched_fano_factor(
    responses: xr.DataArray,
    *,
    condition: Hashable | None = None,
    n_bins: int = 10,
    n_resamples: int = 50,
    confidence_level: float = 0.95,
    ddof: int = 1,
    rng: None | int | np.random.Generator = None,
    trial_dim: str = TRIAL,
    stimulus_dim: str | None = STIMULUS,
    unit_dim: str = UNIT,
    progress: bool | None = None,
) -> xr.Dataset:
    r"""Mean-matched Fano factor (Churchland et al. 2010), compared across conditions.

    For every (stimulus, unit) point the trial mean :math:`\bar x` and variance
    :math:`\hat\sigma^2` (``ddof``, NaN trials skipped) are computed. The Fano factor of a
    condition is the slope of a weighted regression of variance on mean through the origin,

    .. math::

        F = \frac{\sum_k w_k \bar x_k \hat\sigma^2_k}{\sum_k w_k \bar x_k^2}, \qquad
        w_k = \frac{n_k - 1}{2 \bar x_k^2},

    with weights the inverse sampling variance of :math:`\hat\sigma^2` under a Poisson-like
    model (:math:`\mathrm{var}(\hat\sigma^2) \approx 2\sigma^4/(n-1)`). Because the Fano
    factor of real neurons depends on the rate, conditions are compared at a *matched
    distribution of means*: the means of all conditions are binned into ``n_bins`` common
    equal-width bins, the greatest common distribution is the bin-wise minimum count over
    conditions, and in each of ``n_resamples`` repetitions every condition keeps a random
    subset of its points in each bin with exactly that count. The reported factor and its
    confidence limits (t-interval of the regression slope) are averaged over resamples, as
    in Churchland et al. (2010). Points with zero mean or fewer than ``ddof + 1`` valid
    trials are left out, with a warning that says how many.

    Parameters
    ----------
    responses
        Responses with dims ``(trial, stimulus, unit)``, possibly with a condition dim.
    condition
        What to compare: the name of a dim of ``responses`` (e.g. ``"time"`` windows), or of a
        1-D coordinate (e.g. the stimulus coordinate ``"perturbation"``) whose values define
        groups. ``None`` pools everything into one condition ``"all"``.
    n_bins
        Number of common bins of the mean.
    n_resamples
        Number of random mean-matched subsamplings.
    confidence_level
        Two-sided confidence level of the interval, in (0, 1).
    ddof
        Delta degrees of freedom of the per-point variance: 1 (the default) divides by
        :math:`n - 1` like MATLAB's ``var``; 0 divides by :math:`n` like Elephant's
        ``fanofactor`` (see :func:`fano_factor`). The regression weights use
        :math:`n - 1` either way.
    rng
        Seed or numpy Generator for the subsampling.
    trial_dim, stimulus_dim, unit_dim
        Names of the dims; ``stimulus_dim=None`` if there is none.
    progress
        Progress bar over resamples: ``None`` (default) shows it only when the work is long
        (after a few seconds) and a terminal or notebook can show it, ``True`` always,
        ``False`` never.

    Returns
    -------
    xarray.Dataset
        Over dim ``condition`` (named after ``condition``): ``fano_factor``, ``ci_low``,
        ``ci_high`` (mean-matched), ``fano_factor_raw`` (regression on all points, no
        matching), ``resample_sd`` (spread of the slope over resamples) and ``n_points``
        (points kept per condition after matching).

    References
    ----------
    Churchland, M. M. et al. (2010). Stimulus onset quenches neural variability: a widespread
    cortical phenomenon. Nat. Neurosci. 13, 369-378.
    """
    func = "mean_matched_fano_factor"
    progress = check_progress(progress, owner=func)
    n_bins = check_int(n_bins, name="n_bins", owner=func, low=1)
    check_memory(
        8.0 * 4 * n_bins, name="n_bins", owner=func, value=n_bins, what="the bin edges and counts"
    )
    n_resamples = check_int(n_resamples, name="n_resamples", owner=func, low=1)
    ddof = check_int(ddof, name="ddof", owner=func, low=0)
    confidence_level = check_confidence_level(confidence_level, owner=func)
    gen = resolve_rng(rng, func)
    if condition is not None and condition == trial_dim:
        raise InvalidParameterError(
            f"The 'condition' parameter of {func} must not be the trial dim {trial_dim!r}."
        )
    dims = {"trial_dim": trial_dim, "stimulus_dim": stimulus_dim, "unit_dim": unit_dim}
    count, mean, var = _moments(responses, **dims, ddof=ddof, func=func)
    moments = xr.Dataset({"n": count, "mean": mean, "var": var}).compute()
    labels, parts, cond_name = _groups(moments, condition, func)

    points = _usable_points(parts, labels, ddof=ddof, func=func)
    edges, bins, common = _common_bins(points, n_bins, func=func)
    n_cond = len(points)
    slopes, lows, highs = _matched_slopes(
        points, bins, common, n_resamples=n_resamples, confidence_level=confidence_level,
        gen=gen, progress=progress, func=func,
    )  # fmt: skip
    raw = np.array([_wls_origin(m, v, _weights(m, n), confidence_level)[0] for m, v, n in points])
    data_vars = {
        "fano_factor": (cond_name, slopes.mean(axis=0)),
        "ci_low": (cond_name, lows.mean(axis=0)),
        "ci_high": (cond_name, highs.mean(axis=0)),
        "fano_factor_raw": (cond_name, raw),
        "resample_sd": (
            cond_name,
            slopes.std(axis=0, ddof=1) if n_resamples > 1 else np.full(n_cond, np.nan),
        ),
        "n_points": (cond_name, np.full(n_cond, int(common.sum()))),
    }
    return xr.Dataset(
        data_vars,
        coords={cond_name: np.asarray(labels)},
        attrs={
            "method": "mean-matched Fano factor (Churchland et al. 2010)",
            "n_bins": n_bins,
            "n_resamples": n_resamples,
            "confidence_level": confidence_level,
            "ddof": ddof,
            "bin_edges": edges,
        },
    )


def _usable_points(
    parts: list[xr.Dataset], labels: list[Any], *, ddof: int, func: str
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(mean, var, n)`` of each condition's (stimulus, unit) points with a positive mean and
    more than ``ddof`` valid trials (a warning counts the others; an empty condition raises)."""
    points = []
    n_dropped = n_all = 0
    for part in parts:
        m = np.asarray(part["mean"].values, float).ravel()
        v = np.asarray(part["var"].values, float).ravel()
        n = np.asarray(part["n"].values, float).ravel()
        ok = np.isfinite(m) & np.isfinite(v) & (m > 0) & (n > ddof)
        n_all += m.size
        n_dropped += int(np.sum(~ok))
        points.append((m[ok], v[ok], n[ok]))
    warn_nan(
        n_dropped,
        n_all,
        "(stimulus, unit) points",
        "have zero (or negative) mean or too few valid trials",
        consequence="they were left out of the regression",
        stacklevel=4,  # the caller of mean_matched_fano_factor
    )
    if any(p[0].size == 0 for p in points):
        empty = [lab for lab, p in zip(labels, points) if p[0].size == 0]
        raise InvalidParameterError(
            f"The 'responses' parameter of {func} has no usable (positive-mean) points in "
            f"conditions {empty!r}."
        )

    return points


def _common_bins(
    points: list[tuple[np.ndarray, ...]], n_bins: int, *, func: str
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Common equal-width bins of the means of all conditions: edges, each point's bin, and
    the greatest common distribution (bin-wise minimum count over conditions)."""
    all_means = np.concatenate([p[0] for p in points])
    lo, hi = float(all_means.min()), float(all_means.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, n_bins + 1)
    bins = [np.clip(np.searchsorted(edges, p[0], side="right") - 1, 0, n_bins - 1) for p in points]
    counts = np.array([np.bincount(b, minlength=n_bins) for b in bins])
    common = counts.min(axis=0)
    if common.sum() == 0:
        raise ValueError(
            f"The conditions given to {func} share no bin of mean responses; mean matching "
            f"is impossible. Try fewer bins (n_bins={n_bins})."
        )
    return edges, bins, common


def _matched_slopes(
    points: list[tuple[np.ndarray, ...]], bins: list[np.ndarray], common: np.ndarray, *,
    n_resamples: int, confidence_level: float, gen: np.random.Generator, progress: bool | None,
    func: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Slope and its confidence limits in every mean-matched subsample, ``(n_resamples, C)``:
    each condition keeps ``common[k]`` random points of bin ``k`` (without replacement)."""
    n_cond, n_bins = len(points), common.size
    check_memory(
        3 * 8.0 * n_resamples * n_cond,
        name="n_resamples",
        owner=func,
        value=n_resamples,
        what="the per-resample slopes and their confidence bounds",
    )
    slopes = np.empty((n_resamples, n_cond))
    lows = np.empty_like(slopes)
    highs = np.empty_like(slopes)
    members = [[np.flatnonzero(b == k) for k in range(n_bins)] for b in bins]
    for r in progress_bar(range(n_resamples), desc=func, progress=progress):
        for c, (m, v, n) in enumerate(points):
            keep = np.concatenate(
                [
                    gen.choice(members[c][k], size=common[k], replace=False)
                    for k in range(n_bins)
                    if common[k] > 0
                ]
            )
            mk, vk, nk = m[keep], v[keep], n[keep]
            slopes[r, c], lows[r, c], highs[r, c] = _wls_origin(
                mk, vk, _weights(mk, nk), confidence_level
            )
    return slopes, lows, highs
