"""One pass of matrix products over pooled trial-to-trial residuals.

The noise statistics (noise covariance, r_sc) all need the Gram matrix ``R^T R`` of the
residual matrix ``R`` (valid trials of all stimuli stacked, minus each stimulus' trial mean).
This module builds it chunk by chunk over stimuli so that a dask-backed recording is never
loaded whole: peak memory is one chunk of responses plus a few ``(N, N)`` accumulators.

Written by hand rather than with ``xr.cov`` because ``xr.cov`` works pair by pair over a
broadcast and cannot pool residuals of different stimuli in one matrix product.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from neurovar._progress import progress_bar
from neurovar._validation import InvalidParameterError, check_int
from neurovar.dims import check_responses

from ._util import is_dask, warn_nan

__all__: list[str] = []

#: Number of response values (float64) per chunk when the caller does not choose one (~32 MB).
DEFAULT_CHUNK_VALUES = 4_000_000


@dataclass
class ResidualGram:
    """Result of :func:`residual_gram`.

    ``count`` and ``n_stimuli`` are scalars when every trial is either fully valid or fully
    NaN across units (the usual NaN padding of unequal repeats); otherwise they are ``(N, N)``
    pairwise counts (pairwise-complete trials).
    """

    gram: np.ndarray
    count: np.ndarray | float
    n_stimuli: np.ndarray | float
    n_units: int
    n_stimuli_total: int
    per_stimulus: np.ndarray | None = None
    n_constant_cells: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def dof(self) -> np.ndarray | float:
        """Residual degrees of freedom: valid trials minus stimuli (one mean per stimulus)."""
        return self.count - self.n_stimuli


def stimulus_major(
    responses: xr.DataArray,
    *,
    trial_dim: str,
    stimulus_dim: str | None,
    unit_dim: str,
    func: str,
    name: str = "responses",
    min_trials: int = 2,
) -> xr.DataArray:
    """Validate and transpose to ``(stimulus, trial, unit)``; a missing stimulus dim is added."""
    check_responses(
        responses,
        trial_dim=trial_dim,
        stimulus_dim=stimulus_dim,
        unit_dim=unit_dim,
        name=name,
        min_trials=min_trials,
        owner=func,
    )
    wanted = [d for d in (trial_dim, stimulus_dim, unit_dim) if d is not None]
    extra = [d for d in responses.dims if d not in wanted]
    if extra:
        raise InvalidParameterError(
            f"The '{name}' parameter of {func} must have exactly the dims {tuple(wanted)!r}; "
            f"found extra dims {tuple(extra)!r}. Select or stack them first, "
            f"e.g. {name}.isel({extra[0]}=0)."
        )
    if stimulus_dim is None:
        responses = responses.expand_dims("__stimulus__")
        stimulus_dim = "__stimulus__"
    if not np.issubdtype(responses.dtype, np.number) or np.issubdtype(
        responses.dtype, np.complexfloating
    ):
        raise InvalidParameterError(
            f"The '{name}' parameter of {func} must hold real numbers. "
            f"Got dtype {responses.dtype} instead."
        )
    return responses.transpose(stimulus_dim, trial_dim, unit_dim)


def iter_stimulus_chunks(
    data: xr.DataArray, *, chunk_size: int | None, progress: bool | None, func: str
) -> Iterator[np.ndarray]:
    """Yield float64 numpy blocks ``(s, T, N)`` of a ``(stimulus, trial, unit)`` array."""
    n_stim, n_trial, n_unit = data.shape
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, name="chunk_size", owner=func, low=1)
    arr = data.data
    if is_dask(data):
        if chunk_size is not None:
            arr = arr.rechunk({0: chunk_size, 1: -1, 2: -1})
        else:
            arr = arr.rechunk({1: -1, 2: -1})
        bounds = np.cumsum((0,) + arr.chunks[0])
        spans = list(zip(bounds[:-1], bounds[1:]))
    else:
        size = chunk_size or max(1, DEFAULT_CHUNK_VALUES // max(1, n_trial * n_unit))
        spans = [(i, min(i + size, n_stim)) for i in range(0, n_stim, size)]
    for lo, hi in progress_bar(spans, desc=func, progress=progress, unit="chunk"):
        block = arr[lo:hi]
        if is_dask(data):
            block = block.compute()
        yield np.asarray(block, dtype=np.float64)


def residual_gram(
    data: xr.DataArray,
    *,
    standardize: bool,
    per_stimulus: bool = False,
    chunk_size: int | None = None,
    progress: bool | None = None,
    func: str = "residual_gram",
) -> ResidualGram:
    """Accumulate the Gram matrix of pooled residuals of a ``(stimulus, trial, unit)`` array.

    Residuals are ``x_tsi - mean_t x_tsi`` (NaN trials skipped, per-stimulus trial counts).
    With ``standardize`` each unit's residuals are divided by its within-stimulus standard
    deviation (ddof=1), i.e. z-scored within stimulus; a unit that is constant within a
    stimulus contributes zeros for that stimulus (counted in ``n_constant_cells``). Missing
    values contribute zero to every sum.
    """
    n_stim, n_trial, n_unit = data.shape
    gram = np.zeros((n_unit, n_unit))
    count: np.ndarray | float = 0.0
    n_used: np.ndarray | float = 0.0
    pairwise = False
    per_stim = [] if per_stimulus else None
    n_const = 0
    for block in iter_stimulus_chunks(data, chunk_size=chunk_size, progress=progress, func=func):
        mask = ~np.isnan(block)
        complete = bool(mask.all())
        if complete:
            n = np.full(block.shape[::2], float(n_trial))
            resid = block - block.mean(axis=1, keepdims=True)
            const = block.max(axis=1) == block.min(axis=1)
        else:
            n = mask.sum(axis=1).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells
                mean = np.where(mask, block, 0.0).sum(axis=1) / n
                const = np.nanmax(block, axis=1) == np.nanmin(block, axis=1)
            resid = np.where(mask, block - mean[:, None, :], 0.0)
        # A cell (stimulus, unit) constant over its trials has residuals of exactly 0, not the
        # rounding error of an inexact mean (see _util.center).
        resid *= ~const[:, None, :]
        if standardize:
            ss = np.einsum("stu,stu->su", resid, resid)
            with np.errstate(invalid="ignore", divide="ignore"):
                sd = np.sqrt(ss / (n - 1.0))
            ok = np.isfinite(sd) & (sd > 0)
            n_const += int(np.sum(~ok & (n >= 2)))
            resid *= np.where(ok, 1.0 / np.where(ok, sd, 1.0), 0.0)[:, None, :]
        # Is the NaN pattern trial-wise (whole trials missing)? Then counts are scalars.
        trialwise = complete or bool(np.array_equal(mask.any(axis=2), mask.all(axis=2)))
        if trialwise and not pairwise:
            valid_rows = mask[:, :, 0] if n_unit else np.ones(block.shape[:2], bool)
            count = count + float(valid_rows.sum())
            n_used = n_used + float((valid_rows.sum(axis=1) > 0).sum())
            flat = resid.reshape(-1, n_unit)
            if not complete:
                flat = flat[valid_rows.reshape(-1)]
        else:
            if not pairwise:  # switch to pairwise counts, carrying what was seen so far
                count = np.full((n_unit, n_unit), float(count))
                n_used = np.full((n_unit, n_unit), float(n_used))
                pairwise = True
            m = mask.reshape(-1, n_unit).astype(np.float64)
            count = count + m.T @ m
            b = (n > 0).astype(np.float64)
            n_used = n_used + b.T @ b
            flat = resid.reshape(-1, n_unit)
        gram += flat.T @ flat
        if per_stimulus:
            per_stim.append(np.matmul(resid.transpose(0, 2, 1), resid))
    return ResidualGram(
        gram=gram,
        count=count,
        n_stimuli=n_used,
        n_units=n_unit,
        n_stimuli_total=n_stim,
        per_stimulus=np.concatenate(per_stim) if per_stimulus else None,
        n_constant_cells=n_const,
    )


@dataclass
class PooledResiduals:
    """Result of :func:`pooled_residuals`: complete-trial residuals of the units in ``live``."""

    values: np.ndarray
    n_stimuli: int
    live: np.ndarray

    @property
    def dof(self) -> int:
        """Residual degrees of freedom: rows minus stimuli (one mean per stimulus)."""
        return self.values.shape[0] - self.n_stimuli


def pooled_residuals(
    data: xr.DataArray, *, chunk_size: int | None = None, progress: bool | None = None, func: str
) -> PooledResiduals:
    """Materialise the pooled residual matrix ``(n_valid_trials, n_live_units)``.

    Estimators that need complete rows (shrinkage, factor analysis) use it. Units without any
    valid value are left out (``live`` is False for them); of the other units only trials
    valid for every one are kept, minus their stimulus' mean over those trials. Both are
    counted in a warning. One vectorised pass: rows stay ordered by stimulus, so the
    per-stimulus means are a ``reduceat``.
    """
    blocks, ids = [], []
    offset = 0
    for block in iter_stimulus_chunks(data, chunk_size=chunk_size, progress=progress, func=func):
        s, t, n = block.shape
        blocks.append(block.reshape(s * t, n))
        ids.append(np.repeat(np.arange(offset, offset + s), t))
        offset += s
    n_unit = data.shape[2]
    raw = np.concatenate(blocks) if blocks else np.zeros((0, n_unit))
    sid = np.concatenate(ids) if ids else np.zeros(0, int)
    nan = np.isnan(raw)
    live = ~nan.all(axis=0)
    nan = nan[:, live]
    valid = ~nan.any(axis=1) if live.any() else np.zeros(raw.shape[0], bool)
    warn_nan(
        int(np.sum(~live)),
        n_unit,
        "units",
        "have no valid (non-NaN) value",
        consequence=f"they were left out of {func} and their values are NaN",
        stacklevel=4,
    )
    n_partial = int(np.sum(~valid & ~nan.all(axis=1)))
    if n_partial:
        warnings.warn(
            f"{n_partial} trials with missing values for some units (of {raw.shape[0]} "
            f"trials) were left out of {func}, which needs complete trials.",
            RuntimeWarning,
            stacklevel=3,
        )
    x = raw[valid]
    if not live.all():
        x = x[:, live]
    sid = sid[valid]
    if x.shape[0]:
        _, start, counts = np.unique(sid, return_index=True, return_counts=True)
        means = np.add.reduceat(x, start, axis=0) / counts[:, None]
        const = np.maximum.reduceat(x, start, axis=0) == np.minimum.reduceat(x, start, axis=0)
        x -= np.repeat(means, counts, axis=0)
        x *= ~np.repeat(const, counts, axis=0)  # exact zeros for constant cells
        n_used = int(start.size)
    else:
        n_used = 0
    return PooledResiduals(values=x, n_stimuli=n_used, live=live)
