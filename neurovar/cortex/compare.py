"""Run the same variability statistics on ANN layers and cortical areas, side by side.

Every statistic is computed by :mod:`neurovar.stats` on each ``("trial", "stimulus",
"unit")`` array, whether its units are ANN units or neurons; this module only arranges the
inputs, adds bootstrap confidence intervals and returns one tidy table (plus figures).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from neurovar.cortex.loaders import require_counts
from neurovar.dims import STIMULUS, TRIAL, UNIT, check_responses
from neurovar.stats import (
    eigenspectrum,
    fano_factor,
    mean_matched_fano_factor,
    noise_correlation,
    noise_covariance,
    participation_ratio,
    power_law_exponent,
    shared_variance,
    signal_correlation,
)

__all__ = ["STATISTICS", "compare", "plot_comparison"]

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
#: Statistics that need the response means (undefined for mean-subtracted residuals).
_NEEDS_MEANS = frozenset(
    {
        "fano_factor",
        "mean_matched_fano_factor",
        "variance_mean_exponent",
        "signal_correlation",
        "rsc_signal_slope",
    }
)
#: Statistics that need at least 2 stimuli.
_NEEDS_STIMULI = frozenset({"signal_correlation", "rsc_signal_slope"})
_COLUMNS = [
    "source",
    "layer",
    "condition",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "n_units",
    "n_units_total",
    "n_stimuli",
    "ci_method",
    "count_window",
]
_MAX_DETAIL_POINTS = 20_000


# --------------------------------------------------------------------------- inputs
def _layer_name(da: xr.DataArray, default: str) -> str:
    for key in ("layer", "area"):
        if key in da.attrs:
            return str(da.attrs[key])
        if key in da.coords and da[key].dims == (UNIT,):
            values = np.unique(np.asarray(da[key].values).astype(str))
            if len(values) == 1:
                return str(values[0])
    return str(da.name) if da.name is not None else default


def _node_array(ds: xr.Dataset, path: str) -> xr.DataArray:
    if "activation" in ds.data_vars:
        return ds["activation"]
    if len(ds.data_vars) == 1:
        return ds[next(iter(ds.data_vars))]
    raise ValueError(
        f"DataTree node {path!r} must hold a data variable 'activation' (or exactly one "
        f"variable). Got {list(ds.data_vars)!r} instead."
    )


def _flatten(obj: Any, *, source: str, name: str) -> list[tuple[str, str, xr.DataArray]]:
    """Turn a DataArray / mapping / DataTree into ``[(layer, condition, DataArray), ...]``."""
    if isinstance(obj, xr.DataArray):
        return [(_layer_name(obj, source), str(obj.attrs.get("condition", "")), obj)]
    if isinstance(obj, xr.DataTree):
        items = []
        for node in obj.subtree:
            if not node.has_data:
                continue
            parts = [p for p in node.path.strip("/").split("/") if p]
            da = _node_array(node.to_dataset(inherit=False), node.path)
            layer = parts[-1] if parts else _layer_name(da, source)
            condition = "/".join(parts[:-1]) or str(da.attrs.get("condition", ""))
            items.append((layer, condition, da))
        if not items:
            raise ValueError(f"The '{name}' parameter is a DataTree without data.")
        return items
    if isinstance(obj, Mapping):
        items = []
        for key, value in obj.items():
            if isinstance(value, xr.DataArray):
                items.append((str(key), str(value.attrs.get("condition", "")), value))
            elif isinstance(value, (Mapping, xr.DataTree)):
                for layer, sub_condition, da in _flatten(value, source=source, name=name):
                    condition = f"{key}/{sub_condition}" if sub_condition else str(key)
                    items.append((layer, condition, da))
            else:
                raise TypeError(
                    f"The '{name}' parameter must map names to DataArrays (or to mappings of "
                    f"layer -> DataArray for conditions). Got {type(value).__name__} for "
                    f"key {key!r} instead."
                )
        if not items:
            raise ValueError(f"The '{name}' parameter is empty.")
        return items
    raise TypeError(
        f"The '{name}' parameter must be an xarray.DataArray with dims ('trial', 'stimulus', "
        "'unit'), a dict of them (layer or area -> DataArray; or condition -> {layer -> "
        f"DataArray}}) or an xarray.DataTree. Got {type(obj).__name__} instead."
    )


def _resolve_statistics(statistics: str | Sequence[str]) -> tuple[list[str], bool]:
    available = list(STATISTICS)
    if isinstance(statistics, str):
        if statistics == "auto":
            return available, True
        statistics = [statistics]
    statistics = list(statistics)
    unknown = [s for s in statistics if s not in available]
    if unknown or not statistics:
        raise ValueError(
            f"The 'statistics' parameter must be 'auto' or a list drawn from {available!r}. "
            f"Got {unknown or statistics!r} instead."
        )
    return statistics, False


# --------------------------------------------------------------------------- helpers
def _ci(boot: np.ndarray, level: float) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size < 2:
        return float("nan"), float("nan")
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _basic_ci(theta: float, boot: np.ndarray, level: float) -> tuple[float, float]:
    """Basic (reverse-percentile) bootstrap interval ``[2 theta - q_hi, 2 theta - q_lo]``.

    Used for spectrum statistics, whose plug-in estimates are biased by the finite number
    of trials (resampling with replacement leaves fewer distinct trials, which spreads the
    sample eigenvalues further); the basic interval corrects that first-order bias, so it
    may lie entirely on one side of the plug-in value (Davison & Hinkley 1997, sec. 5.2).
    """
    lo, hi = _ci(boot, level)
    return 2 * theta - hi, 2 * theta - lo


def _upper(matrix: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(matrix.shape[0], 1)
    return matrix[iu]


def _pair_boot(
    mats: Sequence[np.ndarray], fn: Any, n_bootstrap: int, gen: np.random.Generator
) -> np.ndarray:
    """Bootstrap over units of a statistic of unit-pair values.

    Units are drawn with replacement and ``fn`` is applied to the pairs ``(a, b)`` of drawn
    units with ``a < b`` (original indices), so a pair is never a unit with itself. Written
    here rather than with a generic element bootstrap because pairs share units: resampling
    pairs independently would understate the uncertainty.
    """
    n = mats[0].shape[0]
    out = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        idx = np.sort(gen.integers(0, n, size=n))
        keep = idx[:, None] < idx[None, :]
        out[b] = fn(*(m[np.ix_(idx, idx)][keep] for m in mats))
    return out


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


def _cell_moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (stimulus, unit) trial mean and unbiased variance (ddof=1), NaN trials skipped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        var = np.nanvar(values, axis=0, ddof=1)
    return mean, var


def _regression_fano_boot(
    da: xr.DataArray, n_bootstrap: int, gen: np.random.Generator
) -> np.ndarray:
    r"""Bootstrap over units of the Churchland et al. (2010) regression Fano factor.

    With one condition, :func:`neurovar.stats.mean_matched_fano_factor` keeps every
    (stimulus, unit) cell, and its weighted regression through the origin with weights
    :math:`w_k = (n_k - 1) / (2 \bar x_k^2)` reduces to a weighted mean of the cells' Fano
    factors, :math:`F = \sum_k (n_k - 1) F_k / \sum_k (n_k - 1)`. Summing numerator and
    denominator per unit makes each bootstrap replicate (units drawn with replacement) a
    ratio of two weighted sums. Written here because the regression t-interval of the stats
    function treats the cells as independent, which they are not (cells of one unit share
    its gain), so it is far too narrow; units are the independent sampling units.
    """
    ff = fano_factor(da)
    # the cells the regression uses: finite variance, positive mean
    weight = (da.count(dim=TRIAL) - 1).where(ff.notnull() & (da.mean(dim=TRIAL) > 0))
    num = np.asarray((weight * ff).sum(dim=STIMULUS).values, dtype=float)
    den = np.asarray(weight.sum(dim=STIMULUS).values, dtype=float)
    n = num.size
    counts = np.stack(
        [np.bincount(gen.integers(0, n, size=n), minlength=n) for _ in range(n_bootstrap)]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts @ num / (counts @ den)


def _variance_mean_fit(mean: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    """OLS fit of ``log10 var = log10 a + b log10 mean`` over cells with positive mean and var."""
    ok = np.isfinite(mean) & np.isfinite(var) & (mean > 0) & (var > 0)
    if ok.sum() < 3:
        return float("nan"), float("nan")
    b, log_a = np.polyfit(np.log10(mean[ok]), np.log10(var[ok]), 1)
    return float(b), float(10**log_a)


def _pooled_residuals(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Residuals about each stimulus' trial mean, trials valid for all units, stacked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        resid = values - np.nanmean(values, axis=0, keepdims=True)
    rows = resid.reshape(-1, values.shape[2])
    valid_trials = ~np.isnan(values).any(axis=2)  # (trial, stimulus)
    n_stim = int(valid_trials.any(axis=0).sum())
    return rows[valid_trials.reshape(-1)], n_stim


def _participation_ratio(cov: np.ndarray) -> float:
    lam = np.clip(np.linalg.eigvalsh(cov), 0, None)
    return float(lam.sum() ** 2 / (lam**2).sum()) if lam.sum() > 0 else float("nan")


# --------------------------------------------------------------------------- one array
def _analyse(
    da: xr.DataArray,
    statistics: list[str],
    *,
    auto: bool,
    n_bootstrap: int,
    confidence_level: float,
    max_units: int | None,
    n_factors: int | None,
    max_factors: int,
    gen: np.random.Generator,
    label: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    check_responses(da, name=label, min_trials=2)
    da = da.transpose(TRIAL, STIMULUS, UNIT)
    n_units_total = da.sizes[UNIT]
    if max_units is not None and n_units_total > max_units:
        keep = np.sort(gen.choice(n_units_total, size=max_units, replace=False))
        da = da.isel({UNIT: keep})
    values = np.asarray(da.values, dtype=np.float64)
    da = da.copy(data=values)
    n_units, n_stimuli = da.sizes[UNIT], da.sizes[STIMULUS]
    residual_only = bool(int(da.attrs.get("mean_subtracted", 0)))
    wanted = []
    for s in statistics:
        if s in _NEEDS_MEANS and residual_only:
            if auto:
                continue
            require_counts(da, name=label)
        if s in _NEEDS_STIMULI and n_stimuli < 2:
            if auto:
                continue
            raise ValueError(
                f"The statistic {s!r} needs at least 2 stimuli; '{label}' has {n_stimuli}."
            )
        wanted.append(s)

    base = {
        "n_units": n_units,
        "n_units_total": n_units_total,
        "n_stimuli": n_stimuli,
        "count_window": str(da.attrs.get("count_window", "")),
    }
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}

    def add(stat: str, value: float, ci: tuple[float, float], n: int, method: str) -> None:
        rows.append(
            {
                "statistic": stat,
                "value": float(value),
                "ci_low": ci[0],
                "ci_high": ci[1],
                "n": int(n),
                "ci_method": method,
                **base,
            }
        )

    unit_boot = f"percentile bootstrap over units ({n_bootstrap})"
    mean, var = _cell_moments(values)
    if not residual_only:
        details["mean"], details["var"] = mean.ravel(), var.ravel()
        details["variance_mean_fit"] = _variance_mean_fit(mean, var)

    if "fano_factor" in wanted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ff = fano_factor(da)
            per_unit = np.asarray(ff.mean(dim=[d for d in ff.dims if d != UNIT]).values)
        ok = np.isfinite(per_unit)
        boot = np.array(
            [_nanmean(gen.choice(per_unit[ok], size=ok.sum())) for _ in range(n_bootstrap)]
        )
        add("fano_factor", _nanmean(per_unit), _ci(boot, confidence_level), ok.sum(), unit_boot)
    if "mean_matched_fano_factor" in wanted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mm = mean_matched_fano_factor(da, confidence=confidence_level, rng=gen).squeeze()
            boot = _regression_fano_boot(da, n_bootstrap, gen)
        add(
            "mean_matched_fano_factor",
            float(mm["fano_factor"]),
            _ci(boot, confidence_level),
            int(mm["n_points"]),
            unit_boot + " of the weighted regression slope",
        )
    if "variance_mean_exponent" in wanted:
        b, _ = _variance_mean_fit(mean, var)
        boot = np.empty(n_bootstrap)
        for i in range(n_bootstrap):
            idx = gen.integers(0, n_units, size=n_units)
            boot[i] = _variance_mean_fit(mean[:, idx], var[:, idx])[0]
        n_cells = int(np.sum((mean > 0) & (var > 0)))
        add("variance_mean_exponent", b, _ci(boot, confidence_level), n_cells, unit_boot)

    need_pairs = {"noise_correlation", "rsc_signal_slope", "signal_correlation"} & set(wanted)
    if need_pairs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rsc = np.asarray(noise_correlation(da).values)
        pairs_rsc = _upper(rsc)
        details["rsc"] = pairs_rsc
        if "noise_correlation" in wanted:
            boot = _pair_boot([rsc], _nanmean, n_bootstrap, gen)
            n_pairs = int(np.isfinite(pairs_rsc).sum())
            add(
                "noise_correlation",
                _nanmean(pairs_rsc),
                _ci(boot, confidence_level),
                n_pairs,
                unit_boot,
            )
        if {"signal_correlation", "rsc_signal_slope"} & set(wanted):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                rsig = np.asarray(signal_correlation(da).values)
            pairs_sig = _upper(rsig)
            details["rsig"] = pairs_sig
            n_pairs = int((np.isfinite(pairs_sig) & np.isfinite(pairs_rsc)).sum())
            if "signal_correlation" in wanted:
                boot = _pair_boot([rsig], _nanmean, n_bootstrap, gen)
                add(
                    "signal_correlation",
                    _nanmean(pairs_sig),
                    _ci(boot, confidence_level),
                    n_pairs,
                    unit_boot,
                )
            if "rsc_signal_slope" in wanted:
                boot = _pair_boot([rsig, rsc], _slope, n_bootstrap, gen)
                add(
                    "rsc_signal_slope",
                    _slope(pairs_sig, pairs_rsc),
                    _ci(boot, confidence_level),
                    n_pairs,
                    unit_boot,
                )

    if {"participation_ratio", "eigenspectrum_exponent"} & set(wanted):
        cov = noise_covariance(da)
        details["eigenvalues"] = np.asarray(eigenspectrum(cov).values)
        resid, n_stim_valid = _pooled_residuals(values)
        n_obs = resid.shape[0]
        trial_boot = f"basic bootstrap over pooled residual trials ({n_bootstrap})"
        if "participation_ratio" in wanted:
            boot = np.empty(n_bootstrap)
            for i in range(n_bootstrap):
                r = resid[gen.integers(0, n_obs, size=n_obs)]
                boot[i] = _participation_ratio(r.T @ r / max(n_obs - n_stim_valid, 1))
            pr = float(participation_ratio(cov))
            add(
                "participation_ratio",
                pr,
                _basic_ci(pr, boot, confidence_level),
                n_units,
                trial_boot,
            )
        if "eigenspectrum_exponent" in wanted:
            alpha = float(power_law_exponent(cov))
            boot = np.empty(n_bootstrap)
            for i in range(n_bootstrap):
                r = resid[gen.integers(0, n_obs, size=n_obs)]
                c = xr.DataArray(r.T @ r / max(n_obs - n_stim_valid, 1), dims=cov.dims)
                boot[i] = float(power_law_exponent(c))
            add(
                "eigenspectrum_exponent",
                alpha,
                _basic_ci(alpha, boot, confidence_level),
                n_units,
                trial_boot,
            )

    if {"shared_variance", "shared_dimensionality"} & set(wanted):
        # One BLAS thread: the factor-analysis EM runs many small SVDs (trials x units), for
        # which threads only add synchronisation; on a busy 2-core machine the default
        # threading made the V4 + Semedo comparison 25x slower (600 s vs 23 s, measured).
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", RuntimeWarning)
            if n_factors is None:
                # cap the cross-validated candidates: every extra candidate costs n_folds
                # factor-analysis fits, and large k converge slowly (hundreds of EM steps)
                varying = int(np.sum(np.nanmax(np.nanvar(values, axis=0), axis=0) > 0))
                cap = max(min(max_factors, varying - 1), 0)
                sv = shared_variance(da, max_factors=cap, rng=gen)
            else:
                sv = shared_variance(da, n_factors=n_factors, rng=gen)
        k_used = int(sv["n_factors"])
        if n_factors is None and k_used == cap and cap < varying - 1:
            warnings.warn(
                f"Cross-validation chose the largest candidate number of factors ({cap}) for "
                f"'{label}' (layer/area with {n_units} units); the shared-variance statistics "
                "may improve with a larger 'max_factors'.",
                UserWarning,
                stacklevel=3,
            )
        fa_method = (
            f"{k_used} factors, chosen by cross-validation over 0..{cap}"
            if n_factors is None
            else f"{k_used} factors, fixed"
        )
        fraction = np.asarray(sv["percent_shared"].values, dtype=float) / 100.0
        if "shared_variance" in wanted:
            ok = np.isfinite(fraction)
            boot = np.array(
                [_nanmean(gen.choice(fraction[ok], size=ok.sum())) for _ in range(n_bootstrap)]
            )
            add(
                "shared_variance",
                _nanmean(fraction),
                _ci(boot, confidence_level),
                int(ok.sum()),
                f"percentile bootstrap over units ({n_bootstrap}), factor model fixed "
                f"({fa_method})",
            )
        if "shared_dimensionality" in wanted:
            add(
                "shared_dimensionality",
                float(sv["shared_dimensionality"]),
                (float("nan"), float("nan")),
                n_units,
                f"none (factor analysis, {fa_method})",
            )

    for key in ("mean", "var", "rsc", "rsig"):  # keep the figures' raw data small
        if key in details and details[key].size > _MAX_DETAIL_POINTS:
            pick = np.sort(gen.choice(details[key].size, _MAX_DETAIL_POINTS, replace=False))
            if key in ("mean", "var"):
                details.setdefault("_cell_pick", pick)
                pick = details["_cell_pick"]
            elif key in ("rsc", "rsig"):
                details.setdefault("_pair_pick", pick)
                pick = details["_pair_pick"]
            details[key] = details[key][pick]
    details.pop("_cell_pick", None)
    details.pop("_pair_pick", None)
    return rows, details


# --------------------------------------------------------------------------- public
def compare(
    ann_responses: Any,
    cortical_responses: Any,
    *,
    statistics: str | Sequence[str] = "auto",
    n_bootstrap: int = 200,
    confidence_level: float = 0.95,
    max_units: int | None = 1000,
    n_factors: int | None = None,
    max_factors: int = 5,
    rng: None | int | np.random.Generator = None,
    progress: bool = False,
) -> pd.DataFrame:
    r"""Compute the same variability statistics on ANN layers and cortical areas.

    Each input is a ``("trial", "stimulus", "unit")`` DataArray, a dict of them (layer or
    area name -> DataArray; or condition -> {layer -> DataArray}, e.g. one entry per noise
    condition), or an :class:`xarray.DataTree` (one node per layer, variable ``activation``;
    nested groups are conditions), as returned by :func:`neurovar.record.record_activations`.

    Statistics (all from :mod:`neurovar.stats`):

    - ``fano_factor``: mean over units of each unit's stimulus-averaged
      :math:`F_{si} = \hat\sigma^2_{si} / \bar x_{si}` (Fano 1947; Tolhurst et al. 1983).
    - ``mean_matched_fano_factor``: weighted regression slope of variance on mean through
      the origin (Churchland et al. 2010). Each layer/area is one condition, so there is
      nothing to match its mean distribution against: the value is the regression Fano
      factor :math:`\sum_k (n_k - 1) F_k / \sum_k (n_k - 1)` over (stimulus, unit) cells.
    - ``variance_mean_exponent``: :math:`b` of the power law
      :math:`\hat\sigma^2 = a \bar x^{b}`, OLS on :math:`\log_{10}` over (stimulus, unit)
      cells with positive mean and variance (Tolhurst et al. 1983).
    - ``noise_correlation``: mean over pairs of :math:`r_{sc}` (z-scored residuals pooled
      over stimuli; Zohary et al. 1994; Cohen & Kohn 2011).
    - ``signal_correlation``: mean over pairs of the correlation of trial-averaged tuning.
    - ``rsc_signal_slope``: OLS slope of :math:`r_{sc}` on signal correlation over pairs.
    - ``participation_ratio``: :math:`(\sum_k\lambda_k)^2 / \sum_k\lambda_k^2` of the noise
      covariance eigenvalues (Gao et al. 2017).
    - ``eigenspectrum_exponent``: power-law exponent of the noise eigenspectrum
      (Stringer et al. 2019).
    - ``shared_variance``: mean over units of the fraction of each unit's noise variance
      shared with the population, :math:`(LL^\top)_{ii} / ((LL^\top)_{ii} + \Psi_{ii})`,
      by factor analysis; ``shared_dimensionality``: eigenvalues of :math:`LL^\top` needed
      for 95% of the shared variance (Williamson et al. 2016). The factor model is fitted once;
      the interval covers the sampling of units only.

    Confidence intervals are percentile bootstraps with ``n_bootstrap`` resamples drawn from
    ``rng``: over *units* for unit and pair averages and the regression Fano factor (pairs of
    resampled units, never a unit with itself; cells and pairs of one unit are not
    independent, so units are resampled), over pooled residual *trials* for spectrum
    statistics (resampling units would duplicate eigen-directions) as *basic* bootstrap
    intervals, which correct the finite-trial bias of the plug-in spectrum and may therefore
    exclude the plug-in value (Davison & Hinkley 1997). Spectrum intervals hold the units
    fixed: they say nothing about which units were recorded (or drawn by ``max_units``), and
    the participation ratio grows with the number of units. The shared-variance interval
    holds the fitted factor model fixed.

    Parameters
    ----------
    ann_responses, cortical_responses
        Responses, see above; either (not both) may be None to analyse one side only.
        Mean-subtracted data (``attrs["mean_subtracted"] = 1``) get no
        mean-dependent statistic under ``statistics="auto"``; asking for one explicitly
        raises ``ValueError``.
    statistics
        ``"auto"`` (every statistic the data support) or a list of names from
        :data:`STATISTICS`.
    n_bootstrap
        Bootstrap resamples per confidence interval.
    confidence_level
        Coverage of the intervals, in (0, 1).
    max_units
        At most this many units per layer/area, drawn without replacement from ``rng``
        (pairwise matrices grow as units squared); ``None`` uses all. The table reports
        ``n_units`` (used) and ``n_units_total``.
    n_factors
        Factors of the factor analysis for the shared-variance statistics; ``None`` chooses
        them by 5-fold cross-validated likelihood over ``0..max_factors`` (Williamson et al.
        2016). The chosen number is stated in ``ci_method``.
    max_factors
        Largest number of factors tried when ``n_factors=None``. The default 5 keeps the
        cross-validation to 6 models x 5 folds per layer: the candidate count, not the data
        size, dominates the run time (a 10-factor model needs hundreds of EM iterations).
        Measured on awake V4 plus the Semedo V1/V2 sample, one core: 23 s with
        ``max_factors=5``, 129 s with 10. The cap can bind: there, cross-validation up to 10
        picks 5 factors for V4 (same result), 6 for V2 and 10 for the 110 V1 neurons, whose
        mean shared-variance fraction is 0.20 rather than 0.17 with the cap. When the choice
        lands on ``max_factors`` a warning says so: raise it (slower) or fix ``n_factors``.
    rng
        Seed or :class:`numpy.random.Generator` for unit subsampling, the mean matching and
        the bootstrap. The global RNG is never touched.
    progress
        Show a progress bar over layers/areas.

    Returns
    -------
    pandas.DataFrame
        Tidy table, one row per (source, layer, condition, statistic), with columns
        ``source`` (``"ann"`` / ``"cortex"``), ``layer`` (layer or area), ``condition``,
        ``statistic``, ``value``, ``ci_low``, ``ci_high``, ``n`` (units, pairs or cells the
        value averages), ``n_units``, ``n_units_total``, ``n_stimuli``, ``ci_method``,
        ``count_window``. ``table.attrs["details"]`` holds, per (source, layer, condition),
        at most 20 000 cells / pairs of raw values for :func:`plot_comparison`.

    Notes
    -----
    Fano factors and the variance-mean power law are computed for ANN layers too, but in
    activation units they depend on the layer's scale (scaling activations by :math:`c`
    scales the Fano factor by :math:`c`); they are comparable with spike counts only for
    units that emit counts. Correlations, the participation ratio (at equal unit counts) and
    shared-variance fractions are scale-free.

    References
    ----------
    Churchland, M. M. et al. (2010). Stimulus onset quenches neural variability. Nat.
    Neurosci. 13, 369-378. Cohen, M. R. & Kohn, A. (2011). Measuring and interpreting
    neuronal correlations. Nat. Neurosci. 14, 811-819. Gao, P. et al. (2017). A theory of
    multineuronal dimensionality, dynamics and measurement. bioRxiv 214262. Williamson, R. C.
    et al. (2016). Scaling properties of dimensionality reduction for neural populations and
    network models. PLoS Comput. Biol. 12, e1005141.
    """
    stat_list, auto = _resolve_statistics(statistics)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)):
        raise TypeError(f"The 'n_bootstrap' parameter must be an int. Got {n_bootstrap!r} instead.")
    if n_bootstrap < 2:
        raise ValueError(f"The 'n_bootstrap' parameter must be >= 2. Got {n_bootstrap} instead.")
    if not (isinstance(confidence_level, float) and 0 < confidence_level < 1):
        raise ValueError(
            "The 'confidence_level' parameter must be a float in (0, 1). "
            f"Got {confidence_level!r} instead."
        )
    if isinstance(max_factors, bool) or not isinstance(max_factors, (int, np.integer)):
        raise TypeError(f"The 'max_factors' parameter must be an int. Got {max_factors!r} instead.")
    if max_factors < 0:
        raise ValueError(f"The 'max_factors' parameter must be >= 0. Got {max_factors} instead.")
    if max_units is not None and (not isinstance(max_units, (int, np.integer)) or max_units < 2):
        raise ValueError(
            f"The 'max_units' parameter must be an int >= 2 or None. Got {max_units!r} instead."
        )
    gen = np.random.default_rng(rng)
    if ann_responses is None and cortical_responses is None:
        raise ValueError(
            "The 'ann_responses' and 'cortical_responses' parameters cannot both be None."
        )
    jobs = []
    if ann_responses is not None:
        jobs += [("ann", *x) for x in _flatten(ann_responses, source="ann", name="ann_responses")]
    if cortical_responses is not None:
        jobs += [
            ("cortex", *x)
            for x in _flatten(cortical_responses, source="cortex", name="cortical_responses")
        ]
    rows: list[dict[str, Any]] = []
    details: dict[tuple[str, str, str], dict[str, Any]] = {}
    for source, layer, condition, da in tqdm(jobs, disable=not progress, desc="compare"):
        label = "ann_responses" if source == "ann" else "cortical_responses"
        r, d = _analyse(
            da,
            stat_list,
            auto=auto,
            n_bootstrap=int(n_bootstrap),
            confidence_level=confidence_level,
            max_units=max_units,
            n_factors=n_factors,
            max_factors=max_factors,
            gen=gen,
            label=label,
        )
        rows += [{"source": source, "layer": layer, "condition": condition, **x} for x in r]
        details[(source, layer, condition)] = d
    table = pd.DataFrame(rows, columns=_COLUMNS)
    order = {s: i for i, s in enumerate(STATISTICS)}
    table = table.sort_values(
        ["statistic", "source", "layer", "condition"],
        key=lambda c: c.map(order) if c.name == "statistic" else c,
        kind="stable",
    ).reset_index(drop=True)
    table.attrs["details"] = details
    table.attrs["confidence_level"] = confidence_level
    return table


def _finish(fig: Any, ax: Any, *, xlabel: str, ylabel: str, log: bool = False) -> Any:
    """Label, legend and lay out a one-panel raw-value figure."""
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_comparison(
    table: pd.DataFrame, *, reference: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Figures of a :func:`compare` table: summary with CIs, and raw-value panels.

    Parameters
    ----------
    table
        Output of :func:`compare`.
    reference
        Optional :func:`neurovar.cortex.load_reference_values` table: published ranges and
        values are drawn as grey bands / ticks on the matching summary panels.

    Returns
    -------
    dict
        Matplotlib figures: ``"summary"`` (one panel per statistic, value and CI per
        layer/area and condition), and, when the table carries raw values
        (``table.attrs["details"]``): ``"fano_vs_mean"`` (variance vs mean, log-log, with the
        Poisson line and the fitted power law), ``"rsc_distribution"``, ``"rsc_vs_signal"``
        and ``"eigenspectrum"`` (normalised noise eigenvalues vs rank).
    """
    import matplotlib.pyplot as plt

    missing = [c for c in ("source", "layer", "condition", "statistic", "value") if c not in table]
    if missing:
        raise ValueError(
            f"The 'table' parameter must be the output of compare(); missing columns {missing!r}."
        )
    figures: dict[str, Any] = {}
    stats_present = [s for s in STATISTICS if s in set(table["statistic"])]
    stats_present += sorted(set(table["statistic"]) - set(stats_present))
    n = max(len(stats_present), 1)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, stat in zip(axes.ravel(), stats_present):
        sub = table[table["statistic"] == stat].reset_index(drop=True)
        labels = [
            f"{r.source}:{r.layer}" + (f" [{r.condition}]" if r.condition else "")
            for r in sub.itertuples()
        ]
        y = np.arange(len(sub))
        colors = ["tab:blue" if s == "ann" else "tab:red" for s in sub["source"]]
        lo = (sub["value"] - sub["ci_low"]).clip(lower=0).fillna(0)
        hi = (sub["ci_high"] - sub["value"]).clip(lower=0).fillna(0)
        ax.errorbar(sub["value"], y, xerr=[lo, hi], fmt="none", ecolor="k", lw=1)
        ax.scatter(sub["value"], y, c=colors, zorder=3)
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_title(stat, fontsize=9)
        if reference is not None:
            ref_name = {
                "fano_factor": "fano_factor",
                "mean_matched_fano_factor": "fano_factor",
                "noise_correlation": "r_sc",
            }.get(stat)
            if ref_name is not None:
                ref = reference[reference["statistic"] == ref_name]
                for r in ref.itertuples():
                    if np.isfinite(r.value_low) and np.isfinite(r.value_high):
                        ax.axvspan(r.value_low, r.value_high, color="0.85", zorder=0)
                    if np.isfinite(r.value):
                        ax.axvline(r.value, color="0.5", ls=":", lw=1)
    for ax in axes.ravel()[len(stats_present) :]:
        ax.set_visible(False)
    fig.tight_layout()
    figures["summary"] = fig

    details = table.attrs.get("details") or {}
    if not details:
        return figures
    keys = list(details)

    def label(key: tuple[str, str, str]) -> str:
        return f"{key[0]}:{key[1]}" + (f" [{key[2]}]" if key[2] else "")

    with_means = [k for k in keys if "mean" in details[k]]
    if with_means:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        lims = [np.inf, -np.inf]
        for k in with_means:
            m, v = details[k]["mean"], details[k]["var"]
            ok = (m > 0) & (v > 0)
            if not ok.any():
                continue
            pts = ax.scatter(m[ok], v[ok], s=3, alpha=0.3, label=label(k))
            lims = [min(lims[0], m[ok].min()), max(lims[1], m[ok].max())]
            b, a = details[k].get("variance_mean_fit", (np.nan, np.nan))
            if np.isfinite(b):
                xs = np.geomspace(m[ok].min(), m[ok].max(), 50)
                ax.plot(xs, a * xs**b, color=pts.get_facecolor()[0][:3], lw=1.5)
        if np.isfinite(lims[0]):
            ax.plot(lims, lims, "k--", lw=1, label="Poisson (var = mean)")
        figures["fano_vs_mean"] = _finish(
            fig, ax, xlabel="mean response", ylabel="variance across trials", log=True
        )

    with_rsc = [k for k in keys if "rsc" in details[k]]
    if with_rsc:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        bins = np.linspace(-1, 1, 81)
        for k in with_rsc:
            r = details[k]["rsc"]
            ax.hist(r[np.isfinite(r)], bins=bins, density=True, histtype="step", label=label(k))
        figures["rsc_distribution"] = _finish(
            fig, ax, xlabel="noise correlation r_sc", ylabel="density"
        )

    with_sig = [k for k in keys if "rsig" in details[k]]
    if with_sig:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for k in with_sig:
            x, y = details[k]["rsig"], details[k]["rsc"]
            ax.scatter(x, y, s=2, alpha=0.2, label=label(k))
            b = _slope(x, y)
            if np.isfinite(b):
                xs = np.array([-1.0, 1.0])
                ok = np.isfinite(x) & np.isfinite(y)
                ax.plot(xs, y[ok].mean() + b * (xs - x[ok].mean()), lw=1.5)
        figures["rsc_vs_signal"] = _finish(
            fig, ax, xlabel="signal correlation", ylabel="noise correlation r_sc"
        )

    with_eig = [k for k in keys if "eigenvalues" in details[k]]
    if with_eig:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        for k in with_eig:
            lam = details[k]["eigenvalues"]
            lam = lam[lam > 0]
            if lam.size:
                ax.plot(np.arange(1, lam.size + 1), lam / lam.sum(), label=label(k))
        figures["eigenspectrum"] = _finish(
            fig, ax, xlabel="rank", ylabel="fraction of noise variance", log=True
        )
    return figures
