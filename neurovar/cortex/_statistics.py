"""The statistics registry of :func:`neurovar.cortex.compare`: what each statistic computes
(always through :mod:`neurovar.stats`), what it needs from the data and what its bootstrap
resamples (units, unit pairs or blocks of residual trials), and the interval of one value
(:func:`neurovar.inference.bootstrap_ci`).

The statistics themselves are described in the docstring of :mod:`neurovar.cortex.compare`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from neurovar.dims import STIMULUS, TRIAL, UNIT
from neurovar.inference import bootstrap_ci
from neurovar.stats import (
    fano_factor,
    mean_matched_fano_factor,
    noise_correlation,
    participation_ratio,
    power_law_exponent,
    shared_variance,
    signal_correlation,
)
from neurovar.stats._residuals import pooled_residuals, stimulus_major
from neurovar.stats.variability import _moments

__all__: list[str] = []

#: Statistics :func:`compare` knows, in table order.
STATISTICS: tuple[str, ...] = (
    "fano_factor",
    "mean_matched_fano_factor",
    "variance_mean_exponent",
    "noise_correlation",
    "signal_correlation",
    "rsc_signal_slope",
    "participation_ratio",
    "eigenspectrum_exponent",
    "shared_variance",
    "shared_dimensionality",
)
#: Residual trials are resampled in at most this many contiguous blocks (spectrum statistics).
_MAX_SPECTRUM_BLOCKS = 400


# --------------------------------------------------------------------------- helpers
def _upper(matrix: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(matrix.shape[0], 1)
    return matrix[iu]


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0:
        return float("nan")
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc))


def _variance_mean_fit(mean: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    """OLS fit of ``log10 var = log10 a + b log10 mean`` over cells with positive mean and var."""
    ok = np.isfinite(mean) & np.isfinite(var) & (mean > 0) & (var > 0)
    if ok.sum() < 3:
        return float("nan"), float("nan")
    b, log_a = np.polyfit(np.log10(mean[ok]), np.log10(var[ok]), 1)
    return float(b), float(10**log_a)


def _regression_fano_parts(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-unit numerator and denominator of the Churchland et al. (2010) regression Fano factor.

    With one condition, :func:`neurovar.stats.mean_matched_fano_factor` keeps every
    (stimulus, unit) cell, and its weighted regression through the origin with weights
    :math:`w_k = (n_k - 1) / (2 \bar x_k^2)` reduces to a weighted mean of the cells' Fano
    factors, :math:`F = \sum_k (n_k - 1) F_k / \sum_k (n_k - 1)`. Summed per unit, a bootstrap
    replicate over units is a ratio of two sums. Units are resampled because cells of one
    unit share its gain: the regression t-interval of the stats function treats the cells as
    independent and is far too narrow.
    """
    ff = fano_factor(da)
    # the cells the regression uses: finite variance, positive mean
    weight = (da.count(dim=TRIAL) - 1).where(ff.notnull() & (da.mean(dim=TRIAL) > 0))
    num = np.asarray((weight * ff).sum(dim=STIMULUS).values, dtype=float)
    den = np.asarray(weight.sum(dim=STIMULUS).values, dtype=float)
    return num, den


def _index_statistic(fn: Callable[[np.ndarray], float]) -> Callable:
    """Lift ``fn(indices) -> float`` to the ``statistic(x, axis)`` that bootstrap_ci expects.

    :func:`neurovar.inference.bootstrap_ci` resamples the index vector ``0..n-1``; each
    resample (and, for BCa, each jackknife sample) arrives as a row of indices.
    """

    def statistic(x: np.ndarray, axis: int = -1) -> np.ndarray:
        x = np.moveaxis(np.asarray(x), axis, -1)
        rows = x.reshape(-1, x.shape[-1]).astype(np.intp)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            out = np.array([fn(r) for r in rows], dtype=float)
        return out.reshape(x.shape[:-1])

    statistic.__name__ = getattr(fn, "__name__", "statistic")
    return statistic


@dataclass
class _Value:
    """One statistic's value, what it averages (``n``) and how to resample it.

    ``resample`` is ``("values", array)`` (bootstrap the mean of these per-unit values),
    ``("indices", n, fn)`` (bootstrap ``fn`` over resampled indices ``0..n-1``) or ``None``
    (no interval); ``over`` says what was resampled.
    """

    value: float
    n: int
    resample: tuple | None
    over: str


class _Data:
    """One array prepared for the statistics, with the shared intermediate results cached."""

    def __init__(self, da: xr.DataArray, *, n_factors, max_factors, gen, label):
        self.da = da
        self.values = np.asarray(da.values, dtype=np.float64)
        self.n_units, self.n_stimuli = da.sizes[UNIT], da.sizes[STIMULUS]
        self.n_factors, self.max_factors = n_factors, max_factors
        self.gen, self.label = gen, label
        self.details: dict[str, Any] = {}
        self._cache: dict[str, Any] = {}

    def cached(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # cell moments (stimulus, unit) as fano_factor computes them, NaN trials skipped
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        def fn():
            _, mean, var = _moments(
                self.da, trial_dim=TRIAL, stimulus_dim=STIMULUS, unit_dim=UNIT, ddof=1,
                func="compare",
            )  # fmt: skip
            return np.asarray(mean.values, dtype=float), np.asarray(var.values, dtype=float)

        return self.cached("moments", fn)

    def rsc(self) -> np.ndarray:
        def fn():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.asarray(noise_correlation(self.da).values)

        return self.cached("rsc", fn)

    def rsig(self) -> np.ndarray:
        def fn():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.asarray(signal_correlation(self.da).values)

        return self.cached("rsig", fn)

    def residuals(self) -> tuple[np.ndarray, int]:
        """Pooled complete-trial residuals and their degrees of freedom (as noise_covariance)."""

        def fn():
            data = stimulus_major(
                self.da, trial_dim=TRIAL, stimulus_dim=STIMULUS, unit_dim=UNIT, func="compare"
            )
            res = pooled_residuals(data, func="compare")
            return res.values, int(res.dof)

        return self.cached("residuals", fn)

    def shared(self) -> tuple[xr.Dataset, str]:
        return self.cached("shared", self._fit_shared)

    def _fit_shared(self) -> tuple[xr.Dataset, str]:
        # One BLAS thread: the factor-analysis EM runs many small SVDs (trials x units), for
        # which threads only add synchronisation; on a busy 2-core machine the default
        # threading made the V4 + Semedo comparison 25x slower (600 s vs 23 s, measured).
        values = self.values
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", RuntimeWarning)
            if self.n_factors is None:
                # cap the cross-validated candidates: every extra candidate costs n_folds
                # factor-analysis fits, and large k converge slowly (hundreds of EM steps)
                varying = int(np.sum(np.nanmax(np.nanvar(values, axis=0), axis=0) > 0))
                cap = max(min(self.max_factors, varying - 1), 0)
                sv = shared_variance(self.da, max_factors=cap, rng=self.gen)
            else:
                sv = shared_variance(self.da, n_factors=self.n_factors, rng=self.gen)
        k_used = int(sv["n_factors"])
        if self.n_factors is None and k_used == cap and cap < varying - 1:
            warnings.warn(
                f"Cross-validation chose the largest candidate number of factors ({cap}) for "
                f"'{self.label}' (layer/area with {self.n_units} units); the shared-variance "
                "statistics may improve with a larger 'max_factors'.",
                UserWarning,
                stacklevel=5,
            )
        method = (
            f"{k_used} factors, chosen by cross-validation over 0..{cap}"
            if self.n_factors is None
            else f"{k_used} factors, fixed"
        )
        return sv, method

    def noise_cov(self) -> np.ndarray:
        def fn():
            x, dof = self.residuals()
            return x.T @ x / max(dof, 1)

        return self.cached("noise_cov", fn)


# --------------------------------------------------------------------------- the statistics
def _fano(d: _Data) -> _Value:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ff = fano_factor(d.da)
        per_unit = np.asarray(ff.mean(dim=[x for x in ff.dims if x != UNIT]).values)
    ok = per_unit[np.isfinite(per_unit)]
    return _Value(_nanmean(per_unit), ok.size, ("values", ok), "units")


def _regression_fano(d: _Data) -> _Value:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mm = mean_matched_fano_factor(d.da, rng=d.gen).squeeze()
        num, den = _regression_fano_parts(d.da)

    def ratio(idx: np.ndarray) -> float:
        return float(np.nansum(num[idx]) / np.nansum(den[idx]))

    return _Value(
        float(mm["fano_factor"]),
        int(mm["n_points"]),
        ("indices", num.size, ratio),
        "units, of the weighted regression slope",
    )


def _variance_mean_exponent(d: _Data) -> _Value:
    mean, var = d.moments()

    def exponent(idx: np.ndarray) -> float:
        return _variance_mean_fit(mean[:, idx], var[:, idx])[0]

    b, _ = _variance_mean_fit(mean, var)
    n_cells = int(np.sum((mean > 0) & (var > 0)))
    return _Value(b, n_cells, ("indices", d.n_units, exponent), "units")


def _pair_statistic(mats: Callable[[_Data], list[np.ndarray]], fn: Callable) -> Callable:
    """A statistic of unit-pair values, bootstrapped over units.

    Units are drawn with replacement and ``fn`` is applied to the pairs ``(a, b)`` of drawn
    units with ``a < b`` (original indices), so a pair is never a unit with itself; pairs
    share units, so resampling pairs independently would understate the uncertainty.
    """

    def compute(d: _Data) -> _Value:
        ms = mats(d)
        pairs = [_upper(m) for m in ms]
        ok = np.logical_and.reduce([np.isfinite(p) for p in pairs])

        def on_units(idx: np.ndarray) -> float:
            idx = np.sort(idx)
            keep = idx[:, None] < idx[None, :]
            return fn(*(m[np.ix_(idx, idx)][keep] for m in ms))

        return _Value(fn(*pairs), int(ok.sum()), ("indices", d.n_units, on_units), "units")

    return compute


def _spectrum_statistic(fn: Callable[[xr.DataArray], xr.DataArray]) -> Callable:
    """A statistic of the noise covariance, bootstrapped over pooled residual trials.

    Rows (valid trials of every stimulus, minus their stimulus' mean) are resampled in at most
    :data:`_MAX_SPECTRUM_BLOCKS` contiguous blocks, so that BCa's jackknife costs that many
    eigendecompositions rather than one per trial. Units are held fixed (resampling units
    would duplicate eigen-directions).
    """

    def compute(d: _Data) -> _Value:
        x, dof = d.residuals()
        n_rows = x.shape[0]
        n_blocks = min(n_rows, _MAX_SPECTRUM_BLOCKS)
        edges = np.linspace(0, n_rows, n_blocks + 1).astype(int)
        blocks = [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]
        n_stim_rows = n_rows - dof  # one mean per stimulus

        def of_rows(rows: np.ndarray) -> float:
            r = x[rows]
            dof_b = r.shape[0] - n_stim_rows * r.shape[0] / max(n_rows, 1)
            cov = xr.DataArray(r.T @ r / max(dof_b, 1.0), dims=(UNIT, "unit_j"))
            return float(fn(cov))

        def on_blocks(idx: np.ndarray) -> float:
            return of_rows(np.concatenate([blocks[i] for i in idx]))

        cov = xr.DataArray(d.noise_cov(), dims=(UNIT, "unit_j"))
        value = float(fn(cov))  # warnings (dead units, ...) are said once, here
        return _Value(value, d.n_units, ("indices", n_blocks, on_blocks), "pooled residual trials")

    return compute


def _shared_fraction(d: _Data) -> _Value:
    sv, method = d.shared()
    fraction = np.asarray(sv["percent_shared"].values, dtype=float) / 100.0
    ok = fraction[np.isfinite(fraction)]
    return _Value(
        _nanmean(fraction), ok.size, ("values", ok), f"units, factor model fixed ({method})"
    )


def _shared_dimensionality(d: _Data) -> _Value:
    sv, method = d.shared()
    return _Value(float(sv["shared_dimensionality"]), d.n_units, None, f"factor analysis, {method}")


@dataclass(frozen=True)
class _Statistic:
    """An entry of the registry: how to compute one statistic and what it needs."""

    compute: Callable[[_Data], _Value]
    needs_means: bool = False
    needs_stimuli: bool = False
    #: value changes when an ANN layer's activations are multiplied by a constant
    scale_dependent: bool = False


def _participation_ratio(cov: xr.DataArray) -> xr.DataArray:
    return participation_ratio(cov)


def _eigenspectrum_exponent(cov: xr.DataArray) -> xr.DataArray:
    return power_law_exponent(cov)


#: The registry: name -> statistic, in table order. Every value comes from neurovar.stats,
#: every interval from neurovar.inference.bootstrap_ci.
_REGISTRY: dict[str, _Statistic] = {
    "fano_factor": _Statistic(_fano, needs_means=True, scale_dependent=True),
    "mean_matched_fano_factor": _Statistic(
        _regression_fano, needs_means=True, scale_dependent=True
    ),
    "variance_mean_exponent": _Statistic(_variance_mean_exponent, needs_means=True),
    "noise_correlation": _Statistic(_pair_statistic(lambda d: [d.rsc()], _nanmean)),
    "signal_correlation": _Statistic(
        _pair_statistic(lambda d: [d.rsig()], _nanmean), needs_means=True, needs_stimuli=True
    ),
    "rsc_signal_slope": _Statistic(
        _pair_statistic(lambda d: [d.rsig(), d.rsc()], _slope),
        needs_means=True,
        needs_stimuli=True,
    ),
    "participation_ratio": _Statistic(_spectrum_statistic(_participation_ratio)),
    "eigenspectrum_exponent": _Statistic(_spectrum_statistic(_eigenspectrum_exponent)),
    "shared_variance": _Statistic(_shared_fraction),
    "shared_dimensionality": _Statistic(_shared_dimensionality),
}
assert tuple(_REGISTRY) == STATISTICS


def _interval(
    v: _Value, *, method: str, n_resamples: int, confidence_level: float, gen
) -> tuple[float, float]:
    """Bootstrap interval of one value with :func:`neurovar.inference.bootstrap_ci`."""
    if v.resample is None:
        return float("nan"), float("nan")
    if v.resample[0] == "values":
        data, statistic = v.resample[1], "mean"
    else:
        data, statistic = np.arange(v.resample[1], dtype=float), _index_statistic(v.resample[2])
    if data.size < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # degenerate resamples give NaN
        warnings.filterwarnings("ignore", message=".*degenerate.*")
        ds = bootstrap_ci(
            xr.DataArray(data, dims=("sample",)),
            statistic,
            dim="sample",
            n_resamples=n_resamples,
            confidence_level=confidence_level,
            method=method,
            rng=gen,
        )
    return float(ds["ci_low"]), float(ds["ci_high"])
