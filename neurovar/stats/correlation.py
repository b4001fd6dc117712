"""Noise (spike-count) correlations and signal correlations."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from neurovar._progress import check_progress
from neurovar._validation import InvalidParameterError, Options, check_param
from neurovar.dims import STIMULUS, TRIAL, UNIT

from ._residuals import residual_gram, stimulus_major
from ._util import center, pairwise_dataarray, unit_coords, warn_nan

__all__ = ["noise_correlation", "signal_correlation"]


def _normalise(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``G_ij / sqrt(G_ii G_jj)`` over the last two axes; NaN where a diagonal is 0."""
    diag = np.diagonal(gram, axis1=-2, axis2=-1)
    ok = diag > 0
    inv = np.where(ok, 1.0 / np.sqrt(np.where(ok, diag, 1.0)), np.nan)
    corr = gram * inv[..., :, None] * inv[..., None, :]
    np.clip(corr, -1.0, 1.0, out=corr)
    idx = np.arange(gram.shape[-1])
    corr[..., idx, idx] = np.where(ok, 1.0, np.nan)
    return corr, ok


def noise_correlation(
    responses: xr.DataArray,
    *,
    method: str = "pooled",
    trial_dim: str = TRIAL,
    stimulus_dim: str | None = STIMULUS,
    unit_dim: str = UNIT,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> xr.DataArray:
    r"""Noise (spike-count) correlation :math:`r_{sc}` between all pairs of units.

    Each unit's responses are z-scored within each stimulus,
    :math:`z_{tsi} = (x_{tsi} - \bar x_{si}) / \hat\sigma_{si}` (``ddof=1``), pooled over
    stimuli, and correlated:

    .. math::

        r_{ij} = \frac{\sum_{s,t} z_{tsi} z_{tsj}}
                      {\sqrt{\sum_{s,t} z_{tsi}^2 \sum_{s,t} z_{tsj}^2}},

    the Pearson correlation of the pooled z-scores (which have mean 0). This removes
    stimulus-driven (signal) covariation and stops high-variance stimuli from dominating
    (Zohary et al. 1994; Cohen & Kohn 2011). It is one pass of matrix products over stimulus
    chunks, so dask-backed responses are never loaded whole.

    NaN trials (unequal repeats) are skipped, using each stimulus' own trial count. A unit that
    is constant within a stimulus (e.g. silent to it) contributes zeros for that stimulus, as
    missing values do; units with no trial-to-trial variance at all get NaN, with a warning.

    Conventions of peers: a correlation does not depend on ``ddof`` (it cancels), so with one
    stimulus the result is ``numpy.corrcoef(x, rowvar=False)`` and ``pandas.DataFrame.corr()``
    exactly. Over several stimuli the per-stimulus z-scores use ``ddof=1``; with the same
    number of trials for every stimulus any ``ddof`` gives the same matrix, and with unequal
    (NaN-padded) repeats ``ddof=1`` weighs each stimulus by its :math:`n_s - 1` degrees of
    freedom, as the pooled noise covariance does. Elephant's
    ``elephant.spike_train_correlation.correlation_coefficient`` is the Pearson correlation
    of binned spike trains *within* a trial (a different quantity: a correlation over time
    bins, not over trials).

    Parameters
    ----------
    responses
        Responses with dims ``(trial, stimulus, unit)`` (names overridable below).
    method
        ``"pooled"``: one matrix from the pooled z-scores, dims ``(unit, unit_j)``.
        ``"per_stimulus"``: the Pearson noise correlation within each stimulus, dims
        ``(stimulus, unit, unit_j)``; needs ``n_stimuli * n_units**2`` values of memory.
    trial_dim, stimulus_dim, unit_dim
        Names of the dims. ``stimulus_dim=None`` treats the data as a single stimulus.
    chunk_size
        Stimuli per chunk (numpy input), or the stimulus chunking to use (dask input).
    progress
        Progress bar over chunks: ``None`` (default) shows it only when the work is long
        (after a few seconds) and a terminal or notebook can show it, ``True`` always,
        ``False`` never.

    Returns
    -------
    xarray.DataArray
        Correlations with unit coordinates on ``unit`` and (suffixed ``_j``) on ``unit_j``;
        ``attrs["n_constant_cells"]`` counts (stimulus, unit) cells with no variance.

    References
    ----------
    Zohary, E., Shadlen, M. N. & Newsome, W. T. (1994). Correlated neuronal discharge rate and
    its implications for psychophysical performance. Nature 370, 140-143.
    Cohen, M. R. & Kohn, A. (2011). Measuring and interpreting neuronal correlations.
    Nat. Neurosci. 14, 811-819.
    """
    func = "noise_correlation"
    progress = check_progress(progress, owner=func)
    check_param(method, [Options(str, ("pooled", "per_stimulus"))], name="method", owner=func)
    data = stimulus_major(
        responses, trial_dim=trial_dim, stimulus_dim=stimulus_dim, unit_dim=unit_dim, func=func
    )
    coords = unit_coords(responses, unit_dim)
    acc = residual_gram(
        data,
        standardize=True,
        per_stimulus=method == "per_stimulus",
        chunk_size=chunk_size,
        progress=progress,
        func=func,
    )
    attrs = {"method": method, "n_constant_cells": acc.n_constant_cells, "ddof": 1}
    if method == "pooled":
        corr, ok = _normalise(acc.gram)
        warn_nan(
            int(np.sum(~ok)),
            ok.size,
            "units",
            "have zero trial-to-trial variance (or fewer than 2 valid trials per stimulus)",
        )
        return pairwise_dataarray(
            corr, coords, unit_dim=unit_dim, name="noise_correlation", attrs=attrs
        )
    corr, ok = _normalise(acc.per_stimulus)
    warn_nan(
        int(np.sum(~ok)),
        ok.size,
        "(stimulus, unit) cells",
        "have zero trial-to-trial variance (or fewer than 2 valid trials)",
    )
    if stimulus_dim is None:
        return pairwise_dataarray(
            corr[0], coords, unit_dim=unit_dim, name="noise_correlation", attrs=attrs
        )
    out = pairwise_dataarray(
        corr,
        coords,
        unit_dim=unit_dim,
        leading=[(stimulus_dim, None)],
        name="noise_correlation",
        attrs=attrs,
    )
    stim_coords = {
        k: v.variable.compute() for k, v in responses.coords.items() if v.dims == (stimulus_dim,)
    }
    return out.assign_coords(stim_coords)


def signal_correlation(
    responses: xr.DataArray,
    *,
    trial_dim: str = TRIAL,
    stimulus_dim: str = STIMULUS,
    unit_dim: str = UNIT,
) -> xr.DataArray:
    r"""Signal correlation: Pearson correlation of trial-averaged tuning across stimuli.

    .. math::

        r^{\mathrm{signal}}_{ij} = \mathrm{corr}_s\left(\bar x_{si}, \bar x_{sj}\right),
        \qquad \bar x_{si} = \frac{1}{n_s} \sum_{t} x_{tsi},

    with NaN trials skipped in the means and stimuli without any valid trial left out (units
    without any valid trial at all get NaN).
    Trial averages still contain noise (variance :math:`\sigma^2/n_s`), which biases the
    magnitude towards 0 for few trials (Cohen & Kohn 2011).

    Parameters
    ----------
    responses
        Responses with dims ``(trial, stimulus, unit)`` and at least 2 stimuli.
    trial_dim, stimulus_dim, unit_dim
        Names of the dims.

    Returns
    -------
    xarray.DataArray
        Dims ``(unit, unit_j)``; units whose tuning is flat get NaN (with a warning).

    References
    ----------
    Cohen, M. R. & Kohn, A. (2011). Measuring and interpreting neuronal correlations.
    Nat. Neurosci. 14, 811-819.
    """
    func = "signal_correlation"
    data = stimulus_major(
        responses,
        trial_dim=trial_dim,
        stimulus_dim=stimulus_dim,
        unit_dim=unit_dim,
        func=func,
        min_trials=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stimuli are dropped below
        tuning = np.asarray(data.mean(dim=trial_dim, skipna=True).values, dtype=np.float64)
    dead = np.isnan(tuning).all(axis=0)  # units without any valid trial: NaN, not an error
    tuning = tuning[~np.isnan(tuning[:, ~dead]).any(axis=1)]
    if tuning.shape[0] < 2:
        raise InvalidParameterError(
            f"The 'responses' parameter of {func} needs at least 2 stimuli with valid trials "
            f"for every unit; got {tuning.shape[0]}."
        )
    centred = center(tuning, axis=0)
    corr, ok = _normalise(centred.T @ centred)
    warn_nan(
        int(np.sum(~ok)),
        ok.size,
        "units",
        "have the same mean response to every stimulus (or no valid trial)",
    )
    return pairwise_dataarray(
        corr,
        unit_coords(responses, unit_dim),
        unit_dim=unit_dim,
        name="signal_correlation",
        attrs={"n_stimuli": int(tuning.shape[0])},
    )
