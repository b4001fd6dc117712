"""Noise covariance: covariance of trial-to-trial residuals pooled over stimuli."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from sklearn.covariance import OAS, LedoitWolf

from neurovar._progress import check_progress
from neurovar._validation import InvalidParameterError, Options, check_int, check_param, check_real
from neurovar.dims import STIMULUS, TRIAL, UNIT

from ._residuals import pooled_residuals, residual_gram, stimulus_major
from ._util import pairwise_dataarray, unit_coords, warn_nan

__all__ = ["noise_covariance", "shrinkage_covariance", "signal_covariance"]

_ESTIMATORS = ("sample", "ledoit_wolf", "oas")


def shrinkage_covariance(
    residuals: np.ndarray, *, dof: float, estimator: str
) -> tuple[np.ndarray, float]:
    r"""Shrinkage covariance of centred residual rows, normalised by the degrees of freedom.

    The one shrinkage implementation of the package (:func:`noise_covariance` and
    :func:`neurovar.noise.fit_perturbation_covariance` both call it). With residuals
    :math:`R` (``n`` rows, already centred) the empirical covariance that is shrunk is the
    unbiased :math:`S = R^T R / \mathrm{dof}` (not scikit-learn's :math:`R^T R / n`), and the
    result is :math:`(1 - \delta) S + \delta\,(\mathrm{tr}\,S / D)\, I` with the
    shrinkage :math:`\delta` of :class:`sklearn.covariance.LedoitWolf` (Ledoit & Wolf 2004) or
    :class:`sklearn.covariance.OAS` (Chen et al. 2010), fitted with ``assume_centered=True``
    on :math:`R \sqrt{n / \mathrm{dof}}`.

    Parameters
    ----------
    residuals
        ``(n, D)`` centred samples (rows).
    dof
        Degrees of freedom, e.g. ``n - 1`` after subtracting one mean, ``n - n_stimuli`` after
        subtracting one mean per stimulus, ``n`` around a known centre.
    estimator
        ``"ledoit_wolf"`` or ``"oas"``.

    Returns
    -------
    (numpy.ndarray, float)
        The ``D x D`` covariance and the shrinkage :math:`\delta`.

    References
    ----------
    Ledoit, O. & Wolf, M. (2004). A well-conditioned estimator for large-dimensional covariance
    matrices. J. Multivar. Anal. 88, 365-411.
    Chen, Y., Wiesel, A., Eldar, Y. C. & Hero, A. O. (2010). Shrinkage algorithms for MMSE
    covariance estimation. IEEE Trans. Signal Process. 58, 5016-5029.
    """
    check_param(estimator, [Options(str, ("ledoit_wolf", "oas"))], name="estimator",
                owner="shrinkage_covariance")
    dof = check_real(dof, name="dof", owner="shrinkage_covariance", low=0, low_open=True)
    residuals = np.asarray(residuals, dtype=np.float64)
    est = (LedoitWolf if estimator == "ledoit_wolf" else OAS)(assume_centered=True)
    est.fit(residuals * np.sqrt(residuals.shape[0] / dof))
    return est.covariance_, float(est.shrinkage_)


def noise_covariance(
    responses: xr.DataArray,
    *,
    estimator: str = "sample",
    trial_dim: str = TRIAL,
    stimulus_dim: str | None = STIMULUS,
    unit_dim: str = UNIT,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> xr.DataArray:
    r"""Noise covariance of a population, pooled over stimuli.

    Residuals are responses minus their stimulus' trial mean,
    :math:`r_{tsi} = x_{tsi} - \bar x_{si}`, and the sample estimator is

    .. math::

        \Sigma_{ij} = \frac{\sum_{s,t} r_{tsi} r_{tsj}}{n_\mathrm{trials} - n_\mathrm{stimuli}},

    i.e. the unbiased pooled within-stimulus covariance: one degree of freedom is spent on
    each stimulus mean (``ddof`` is therefore ``n_stimuli`` over the pooled trials, stated in
    ``attrs["dof"]``). It is computed as one pass of matrix products over stimulus chunks, so
    dask-backed responses are never loaded whole.

    NaN trials (unequal repeats padded with NaN, as in cortical recordings) are skipped:
    means use each stimulus' own trial count, and the degrees of freedom count valid trials.
    If values are missing for some units only, counts are pairwise (pairwise-complete).

    ``estimator="ledoit_wolf"`` or ``"oas"`` shrink the covariance towards a scaled identity
    with :class:`sklearn.covariance.LedoitWolf` / :class:`sklearn.covariance.OAS`
    (Ledoit & Wolf 2004; Chen et al. 2010) fitted on the pooled residual matrix with
    ``assume_centered=True`` (:func:`shrinkage_covariance`). scikit-learn divides by the number
    of rows; the residuals are scaled by
    :math:`\sqrt{n_\mathrm{trials}/(n_\mathrm{trials}-n_\mathrm{stimuli})}` so that the
    empirical covariance it shrinks is the unbiased one above. These estimators need the
    pooled residual matrix in memory and use trials that are valid for every unit only (units
    without any valid value are left out and get NaN; both are counted in a warning).

    Conventions of peers: with one stimulus the sample estimator is ``numpy.cov(x,
    rowvar=False)`` (numpy's default ``ddof=1``, divides by :math:`n - 1`), whereas
    scikit-learn's ``EmpiricalCovariance``, ``LedoitWolf`` and ``OAS`` divide by :math:`n`
    (maximum likelihood): their covariance is :math:`(n - 1)/n` times ours, for the shrinkage
    estimators too (the shrinkage coefficient is the same). Both relations are tested.

    Parameters
    ----------
    responses
        Responses with dims ``(trial, stimulus, unit)`` (names overridable below).
    estimator
        ``"sample"``, ``"ledoit_wolf"`` or ``"oas"``.
    trial_dim, stimulus_dim, unit_dim
        Names of the dims. ``stimulus_dim=None`` treats the data as a single stimulus.
    chunk_size
        Stimuli per chunk (numpy input), or the stimulus chunking to use (dask input).
        Defaults to ~4 million values per chunk, or the dask chunks.
    progress
        Progress bar over chunks: ``None`` (default) shows it only when the work is long
        (after a few seconds) and a terminal or notebook can show it, ``True`` always,
        ``False`` never.

    Returns
    -------
    xarray.DataArray
        Dims ``(unit, unit_j)``, unit coordinates on both (``_j`` suffix on the second).
        ``attrs``: ``estimator``, ``n_valid_trials``, ``n_stimuli``, ``dof`` (scalar if all
        units share the valid trials) and ``shrinkage`` for the shrinkage estimators.

    References
    ----------
    Cohen, M. R. & Kohn, A. (2011). Measuring and interpreting neuronal correlations.
    Nat. Neurosci. 14, 811-819.
    Ledoit, O. & Wolf, M. (2004). A well-conditioned estimator for large-dimensional covariance
    matrices. J. Multivar. Anal. 88, 365-411.
    Chen, Y., Wiesel, A., Eldar, Y. C. & Hero, A. O. (2010). Shrinkage algorithms for MMSE
    covariance estimation. IEEE Trans. Signal Process. 58, 5016-5029.
    """
    func = "noise_covariance"
    progress = check_progress(progress, owner=func)
    check_param(estimator, [Options(str, _ESTIMATORS)], name="estimator", owner=func)
    data = stimulus_major(
        responses,
        trial_dim=trial_dim,
        stimulus_dim=stimulus_dim,
        unit_dim=unit_dim,
        func=func,
    )
    coords = unit_coords(responses, unit_dim)
    if estimator == "sample":
        acc = residual_gram(
            data, standardize=False, chunk_size=chunk_size, progress=progress, func=func
        )
        dof = acc.dof
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = np.where(dof > 0, acc.gram / np.where(dof > 0, dof, 1.0), np.nan)
        bad = np.sum(~(np.asarray(dof) > 0)) if np.ndim(dof) else (0 if dof > 0 else cov.size)
        warn_nan(
            int(bad),
            cov.size,
            "entries of the noise covariance",
            "have no residual degrees of freedom (fewer than 2 valid trials of any stimulus)",
        )
        attrs = {
            "estimator": estimator,
            "n_valid_trials": _attr(acc.count),
            "n_stimuli": _attr(acc.n_stimuli),
            "dof": _attr(dof),
            "ddof": "n_stimuli (one mean per stimulus): dof = n_valid_trials - n_stimuli",
        }
    else:
        res = pooled_residuals(data, chunk_size=chunk_size, progress=progress, func=func)
        resid, n_used, dof = res.values, res.n_stimuli, res.dof
        n_rows = resid.shape[0]
        if dof < 2:
            raise InvalidParameterError(
                f"The 'responses' parameter of {func} has {dof} residual degrees of freedom "
                f"(valid trials minus stimuli); estimator={estimator!r} needs at least 2."
            )
        shrunk, shrinkage = shrinkage_covariance(resid, dof=dof, estimator=estimator)
        cov = np.full((res.live.size, res.live.size), np.nan)
        cov[np.ix_(res.live, res.live)] = shrunk
        attrs = {
            "estimator": estimator,
            "n_valid_trials": n_rows,
            "n_stimuli": n_used,
            "dof": dof,
            "ddof": "n_stimuli (one mean per stimulus): dof = n_valid_trials - n_stimuli",
            "shrinkage": shrinkage,
        }
    return pairwise_dataarray(cov, coords, unit_dim=unit_dim, name="noise_covariance", attrs=attrs)


def _attr(value: np.ndarray | float) -> float | str:
    """Scalar attrs stay numbers; pairwise counts are summarised (attrs must be simple)."""
    if np.ndim(value) == 0:
        return float(value)
    value = np.asarray(value)
    return f"pairwise, {value.min():g} to {value.max():g}"


def signal_covariance(
    responses: xr.DataArray,
    *,
    trial_dim: str = TRIAL,
    stimulus_dim: str = STIMULUS,
    unit_dim: str = UNIT,
    ddof: int = 1,
) -> xr.DataArray:
    r"""Signal covariance: covariance across stimuli of the trial-averaged responses.

    .. math::

        \bar x_{si} = \frac{1}{T_{si}} \sum_t x_{tsi}, \qquad
        \Sigma^{signal}_{ij} = \frac{1}{S - \mathrm{ddof}} \sum_s
        (\bar x_{si} - \bar{\bar x}_i)(\bar x_{sj} - \bar{\bar x}_j),

    with NaN-padded trials skipped in the trial means (:math:`T_{si}` valid trials). It is the
    structure a population uses to tell stimuli apart, the counterpart of
    :func:`noise_covariance` (Averbeck, Latham & Pouget 2006); compare the two with
    :func:`neurovar.stats.alignment_index`. Note that trial averaging leaves
    :math:`\Sigma^{noise}/T` in it (not subtracted here).

    Parameters
    ----------
    responses
        Responses with dims ``(trial, stimulus, unit)``.
    trial_dim, stimulus_dim, unit_dim
        Names of the dims.
    ddof
        Delta degrees of freedom across stimuli: 1 (default, unbiased) gives
        ``numpy.cov(means, rowvar=False)`` of the trial-averaged responses; 0 gives
        scikit-learn's ``EmpiricalCovariance`` (which divides by the number of stimuli).

    Returns
    -------
    xarray.DataArray
        Dims ``(unit, unit_j)`` with unit coords on both; ``attrs["n_stimuli"]``, ``ddof``.
        Units whose mean is NaN for some stimulus (no valid trial) get NaN.

    References
    ----------
    Averbeck, B. B., Latham, P. E. & Pouget, A. (2006). Neural correlations, population coding
    and computation. Nat. Rev. Neurosci. 7, 358-366.
    """
    func = "signal_covariance"
    ddof = check_int(ddof, name="ddof", owner=func, low=0)
    data = stimulus_major(
        responses, trial_dim=trial_dim, stimulus_dim=stimulus_dim, unit_dim=unit_dim, func=func,
        min_trials=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are reported below
        means = np.nanmean(np.asarray(data.values, dtype=np.float64), axis=1)  # (stimulus, unit)
    n_stim = means.shape[0]
    if n_stim <= ddof:
        raise InvalidParameterError(
            f"The 'ddof' parameter of {func} must be smaller than the number of stimuli of "
            f"'responses' ({n_stim}). Got {ddof} instead.",
            name="ddof",
            owner=func,
        )
    bad = ~np.all(np.isfinite(means), axis=0)
    warn_nan(int(bad.sum()), bad.size, "units", "have no valid trial for some stimulus",
             consequence="their signal covariance is NaN")
    centred = means - means.mean(axis=0)
    cov = centred.T @ centred / (n_stim - ddof)
    cov[bad, :] = np.nan
    cov[:, bad] = np.nan
    coords = unit_coords(responses, unit_dim)
    return pairwise_dataarray(cov, coords, unit_dim=unit_dim, name="signal_covariance",
                              attrs={"n_stimuli": n_stim, "ddof": int(ddof)})
