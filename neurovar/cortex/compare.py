r"""Run the same variability statistics on ANN layers and cortical areas, side by side.

Every statistic is computed by :mod:`neurovar.stats` on each ``("trial", "stimulus",
"unit")`` array, whether its units are ANN units or neurons, and every interval by
:func:`neurovar.inference.bootstrap_ci`; this module only arranges the inputs, keeps a small
registry of the statistics (what each needs, what it resamples) and returns one tidy table.
The figures are :func:`neurovar.plot.plot_comparison`.

Statistics of :func:`compare` (:data:`STATISTICS`, all from :mod:`neurovar.stats`):

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
  (Stringer et al. 2019). Units without variance (dead ReLU units) and numerically zero
  eigenvalues never enter the fit (:func:`neurovar.stats.power_law_exponent`, with a
  counted warning).
- ``shared_variance``: mean over units of the fraction of each unit's noise variance
  shared with the population, :math:`(LL^\top)_{ii} / ((LL^\top)_{ii} + \Psi_{ii})`,
  by factor analysis; ``shared_dimensionality``: eigenvalues of :math:`LL^\top` needed
  for 95% of the shared variance, with the number of factors chosen by cross-validation
  (Williamson et al. 2016); it needs ``n_factors=None`` (with a fixed number of factors
  it is bounded by, and mostly equal to, that number), so with ``n_factors`` fixed it is
  left out under ``"auto"`` and refused when asked for. The factor model is fitted once;
  the shared-variance interval covers the sampling of units only.

References
----------
Fano, U. (1947). Ionization yield of radiations. Phys. Rev. 72, 26-29. Tolhurst, D. J.,
Movshon, J. A. & Dean, A. F. (1983). The statistical reliability of signals in single neurons
in cat and monkey visual cortex. Vision Res. 23, 775-785. Zohary, E., Shadlen, M. N. &
Newsome, W. T. (1994). Nature 370, 140-143. Stringer, C. et al. (2019). High-dimensional
geometry of population responses in visual cortex. Nature 571, 361-365. (The others are
cited in :func:`compare`.)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from neurovar._compat import renamed_parameters
from neurovar._progress import check_progress, progress_bar
from neurovar._validation import (
    check_choice,
    check_confidence_level,
    check_int,
    check_memory,
    check_rng,
    param_error,
)
from neurovar.cortex.loaders import require_counts
from neurovar.dims import STIMULUS, TRIAL, UNIT, check_responses
from neurovar.stats import eigenspectrum

from ._statistics import (  # noqa: F401  (_slope, _regression_fano_parts: used by plot, tests)
    _REGISTRY,
    STATISTICS,
    _Data,
    _interval,
    _regression_fano_parts,
    _slope,
    _upper,
    _variance_mean_fit,
)

__all__ = ["CI_METHODS", "STATISTICS", "compare"]

#: Interval methods of :func:`compare` (all through :func:`neurovar.inference.bootstrap_ci`).
CI_METHODS: tuple[str, ...] = ("percentile", "BCa", "basic")

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
    "scale_dependent",
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
    expected = f"'auto' or a list drawn from {available!r}"
    if not isinstance(statistics, Sequence) or isinstance(statistics, bytes):
        raise param_error("statistics", "compare", expected, statistics)
    statistics = list(statistics)
    unknown = [s for s in statistics if not isinstance(s, str) or s not in available]
    if unknown or not statistics:
        raise param_error("statistics", "compare", expected, unknown or statistics)
    return statistics, False


# --------------------------------------------------------------------------- one array
def _drop_empty_units(da: xr.DataArray, *, label: str, where: str) -> xr.DataArray:
    """``da`` without the units that are NaN on every trial and stimulus, with a warning
    naming how many (they would count in ``n_units`` and in the unit resampling while adding
    nothing); an array without any such unit is returned as it is, one with no other unit is
    refused."""
    empty = np.asarray(np.isnan(da).all(dim=(TRIAL, STIMULUS)).values, dtype=bool)
    if not empty.any():
        return da
    name = f"{label!r}" + (f" ({where})" if where else "")
    if empty.all():
        raise ValueError(
            f"The {label!r} parameter of compare has no unit with a finite response in {where or 'it'}: "
            f"all {empty.size} units are NaN on every trial and stimulus."
        )
    warnings.warn(
        f"compare: {int(empty.sum())} of {empty.size} units of {name} are NaN on every trial and "
        "stimulus (never recorded or never responded); they are left out of every statistic "
        "and of n_units (n_units_total still counts them).",
        UserWarning,
        stacklevel=4,
    )
    return da.isel({UNIT: np.flatnonzero(~empty)})


def _analyse(
    da: xr.DataArray,
    statistics: list[str],
    *,
    auto: bool,
    n_resamples: int,
    confidence_level: float,
    ci_method: str,
    max_units: int | None,
    n_factors: int | None,
    max_factors: int,
    gen: np.random.Generator,
    label: str,
    source: str,
    where: str = "",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    check_responses(da, name=label, min_trials=2)
    da = da.transpose(TRIAL, STIMULUS, UNIT)
    n_units_total = da.sizes[UNIT]
    da = _drop_empty_units(da, label=label, where=where)
    # separate streams (unit draw, factor analysis, figures' subsample, one per statistic), so
    # a statistic's interval does not depend on which other statistics were asked for
    unit_gen, fa_gen, detail_gen, *stat_gens = gen.spawn(3 + len(_REGISTRY))
    stat_gen = dict(zip(_REGISTRY, stat_gens))
    if max_units is not None and da.sizes[UNIT] > max_units:
        keep = np.sort(unit_gen.choice(da.sizes[UNIT], size=max_units, replace=False))
        da = da.isel({UNIT: keep})
    da = da.copy(data=np.asarray(da.values, dtype=np.float64))
    data = _Data(da, n_factors=n_factors, max_factors=max_factors, gen=fa_gen, label=label)
    residual_only = bool(int(da.attrs.get("mean_subtracted", 0)))
    wanted = []
    for name in statistics:
        stat = _REGISTRY[name]
        if stat.needs_means and residual_only:
            if auto:
                continue
            require_counts(da, name=label)
        if stat.needs_stimuli and data.n_stimuli < 2:
            if auto:
                continue
            raise ValueError(
                f"The statistic {name!r} needs at least 2 stimuli; '{label}' has {data.n_stimuli}."
            )
        if name == "shared_dimensionality" and n_factors is not None:
            if auto:
                continue
            raise ValueError(
                "The statistic 'shared_dimensionality' needs n_factors=None: with a fixed "
                f"number of factors ({n_factors}) it is bounded by that number and mostly "
                "reports it. Williamson et al. (2016) choose the factors by cross-validation."
            )
        wanted.append(name)

    base = {
        "n_units": data.n_units,
        "n_units_total": n_units_total,
        "n_stimuli": data.n_stimuli,
        "count_window": str(da.attrs.get("count_window", "")),
    }
    rows: list[dict[str, Any]] = []
    for name in wanted:
        stat = _REGISTRY[name]
        v = stat.compute(data)
        ci = _interval(
            v,
            method=ci_method,
            n_resamples=n_resamples,
            confidence_level=confidence_level,
            gen=stat_gen[name],
        )
        how = (
            f"none ({v.over})"
            if v.resample is None
            else f"{ci_method} bootstrap over {v.over} ({n_resamples})"
        )
        if np.isfinite(ci[0]) and np.isfinite(ci[1]) and not ci[0] <= v.value <= ci[1]:
            how += (
                "; the interval excludes the estimate: its finite-sample bias exceeds its "
                "standard error, read the value with caution"
            )
        elif v.resample is not None and not (np.isfinite(ci[0]) and np.isfinite(ci[1])):
            how += "; no interval (degenerate bootstrap distribution)"
        rows.append(
            {
                "statistic": name,
                "value": float(v.value),
                "ci_low": ci[0],
                "ci_high": ci[1],
                "n": int(v.n),
                "ci_method": how,
                **base,
                "scale_dependent": bool(stat.scale_dependent and source == "ann"),
            }
        )

    # raw values for the figures, kept small
    details: dict[str, Any] = {}
    if not residual_only:
        mean, var = data.moments()
        details["mean"], details["var"] = mean.ravel(), var.ravel()
        details["variance_mean_fit"] = _variance_mean_fit(mean, var)
    if {"noise_correlation", "signal_correlation", "rsc_signal_slope"} & set(wanted):
        details["rsc"] = _upper(data.rsc())
    if {"signal_correlation", "rsc_signal_slope"} & set(wanted):
        details["rsig"] = _upper(data.rsig())
    if {"participation_ratio", "eigenspectrum_exponent"} & set(wanted):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # said once by the statistic
            cov = xr.DataArray(data.noise_cov(), dims=(UNIT, "unit_j"))
            details["eigenvalues"] = np.asarray(eigenspectrum(cov).values)
    details["count_window"] = base["count_window"]
    details["preparation"] = str(da.attrs.get("preparation", ""))
    for key in ("mean", "var", "rsc", "rsig"):
        if key in details and details[key].size > _MAX_DETAIL_POINTS:
            group = "_cell_pick" if key in ("mean", "var") else "_pair_pick"
            if group not in details:
                details[group] = np.sort(
                    detail_gen.choice(details[key].size, _MAX_DETAIL_POINTS, replace=False)
                )
            details[key] = details[key][details[group]]
    details.pop("_cell_pick", None)
    details.pop("_pair_pick", None)
    return rows, details


# --------------------------------------------------------------------------- public
@renamed_parameters({"n_bootstrap": "n_resamples"}, since="0.2")
def compare(
    ann_responses: Any,
    cortical_responses: Any,
    *,
    statistics: str | Sequence[str] = "auto",
    n_resamples: int = 200,
    confidence_level: float = 0.95,
    ci_method: str = "percentile",
    max_units: int | None = 1000,
    n_factors: int | None = None,
    max_factors: int = 5,
    rng: None | int | np.random.Generator = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    r"""Compute the same variability statistics on ANN layers and cortical areas.

    Each input is a ``("trial", "stimulus", "unit")`` DataArray, a dict of them (layer or
    area name -> DataArray; or condition -> {layer -> DataArray}, e.g. one entry per noise
    condition), or an :class:`xarray.DataTree` (one node per layer, variable ``activation``;
    nested groups are conditions), as returned by :func:`neurovar.record.record_activations`.

    The statistics (:data:`STATISTICS`, all from :mod:`neurovar.stats`) and their formulas
    are listed in the docstring of :mod:`neurovar.cortex.compare`.

    Every interval is computed by :func:`neurovar.inference.bootstrap_ci` (scipy's
    bootstrap) with ``n_resamples`` resamples drawn from ``rng``, as a *percentile* interval
    by default (``ci_method="BCa"`` or ``"basic"`` on request). What is resampled: *units* for
    unit and pair averages and the regression Fano factor (pairs of resampled units, never a
    unit with itself; cells and pairs of one unit are not independent, so units are
    resampled); pooled residual *trials* (in at most 400 contiguous blocks) for the spectrum
    statistics, holding the units fixed (resampling units would duplicate eigen-directions).
    Spectrum intervals say nothing about which units were recorded (or drawn by
    ``max_units``), and the participation ratio grows with the number of units. The
    shared-variance interval holds the fitted factor model fixed; ``shared_dimensionality``
    has no interval.

    The plug-in spectrum statistics are biased by the finite number of trials (sample
    eigenvalues spread; the participation ratio is biased low). A resample is biased once
    more, so with many units and few trials a percentile interval sits below the estimate and
    undercovers; ``"basic"`` (:math:`[2\hat\theta - q_{hi}, 2\hat\theta - q_{lo}]`) and
    ``"BCa"`` correct that first-order bias and may then lie above the estimate. In our
    simulation (``benchmarks/coverage_compare_intervals.py``: 30 units, eigenvalues 1/k, 40
    stimuli x 8 trials, 100 data sets) nominal 95% intervals of the participation ratio
    covered 79% (percentile; 21% lay entirely below the truth), 81% (basic) and 81% (BCa):
    report spectrum intervals with that caveat. Unit averages are unbiased and cover about as
    stated (mean Fano factor of 15 units: 93% percentile, 89% basic, 97% BCa; see also the
    coverage test in ``tests/cortex/test_cortex_compare.py``).

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
    n_resamples
        Bootstrap resamples per confidence interval (the name every bootstrap of neurovar
        uses; the old name ``n_bootstrap`` still works for one release, with a
        :class:`FutureWarning`).
    confidence_level
        Coverage of the intervals, in (0, 1).
    ci_method
        ``"percentile"`` (default), ``"BCa"`` (bias-corrected and accelerated; its jackknife
        costs one more evaluation per unit or block) or ``"basic"``, see above.
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
        Progress bar over layers/areas: ``None`` (default) shows it only when the work is
        long (after a few seconds) and a terminal or notebook can show it, ``True`` always,
        ``False`` never.

    Returns
    -------
    pandas.DataFrame
        Tidy table, one row per (source, layer, condition, statistic), with columns
        ``source`` (``"ann"`` / ``"cortex"``), ``layer`` (layer or area), ``condition``,
        ``statistic``, ``value``, ``ci_low``, ``ci_high``, ``n`` (units, pairs or cells the
        value averages), ``n_units``, ``n_units_total``, ``n_stimuli``, ``ci_method``,
        ``count_window``, ``scale_dependent``. ``table.attrs["details"]`` holds, per
        (source, layer, condition), at most 20 000 cells / pairs of raw values for
        :func:`neurovar.plot.plot_comparison`.

    Notes
    -----
    Fano factors and the variance-mean power law are computed for ANN layers too, but in
    activation units they depend on the layer's scale (scaling activations by :math:`c`
    scales the Fano factor by :math:`c`); they are comparable with spike counts only for
    units that emit counts; their ANN rows are flagged in the column ``scale_dependent`` (True
    for ``fano_factor`` and ``mean_matched_fano_factor``).
    Correlations, the variance-mean exponent (under a common scale), the participation ratio
    (at equal unit counts) and shared-variance fractions are scale-free.

    References
    ----------
    Churchland, M. M. et al. (2010). Stimulus onset quenches neural variability. Nat.
    Neurosci. 13, 369-378. Cohen, M. R. & Kohn, A. (2011). Measuring and interpreting
    neuronal correlations. Nat. Neurosci. 14, 811-819. Gao, P. et al. (2017). A theory of
    multineuronal dimensionality, dynamics and measurement. bioRxiv 214262. Williamson, R. C.
    et al. (2016). Scaling properties of dimensionality reduction for neural populations and
    network models. PLoS Comput. Biol. 12, e1005141.
    """
    owner = "compare"
    stat_list, auto = _resolve_statistics(statistics)
    n_resamples, confidence_level, max_units, n_factors, max_factors = _check_settings(
        n_resamples, confidence_level, max_units, n_factors, max_factors
    )
    check_choice(ci_method, name="ci_method", owner=owner, options=CI_METHODS)
    check_rng(rng, owner=owner, torch_ok=False)
    progress = check_progress(progress, owner=owner)
    gen = np.random.default_rng(rng)
    jobs = _jobs(ann_responses, cortical_responses)
    rows: list[dict[str, Any]] = []
    details: dict[tuple[str, str, str], dict[str, Any]] = {}
    # one independent stream per array: its numbers do not depend on the other arrays
    streams = gen.spawn(len(jobs))
    for (source, layer, condition, da), stream in zip(
        progress_bar(jobs, desc="compare", progress=progress), streams
    ):
        r, d = _analyse(
            da, stat_list, auto=auto, n_resamples=n_resamples,
            confidence_level=confidence_level, ci_method=ci_method, max_units=max_units,
            n_factors=n_factors, max_factors=max_factors, gen=stream,
            label="ann_responses" if source == "ann" else "cortical_responses", source=source,
            where=f"{layer}" + (f", condition {condition}" if condition else ""),
        )  # fmt: skip
        rows += [{"source": source, "layer": layer, "condition": condition, **x} for x in r]
        details[(source, layer, condition)] = d
    return _table(rows, details, confidence_level=confidence_level, ci_method=ci_method)


def _check_settings(
    n_resamples: Any, confidence_level: Any, max_units: Any, n_factors: Any, max_factors: Any
) -> tuple[int, float, int | None, int | None, int]:
    """The numeric settings of :func:`compare`, checked (one job: refuse bad input)."""
    owner = "compare"
    n_resamples = check_int(n_resamples, name="n_resamples", owner=owner, low=2)
    # bootstrap_ci holds the replicates of one statistic (and their copy) in float64
    check_memory(
        2 * 8.0 * n_resamples,
        name="n_resamples",
        owner=owner,
        value=n_resamples,
        what="the bootstrap replicates of one statistic",
    )
    confidence_level = check_confidence_level(confidence_level, owner=owner)
    max_factors = check_int(max_factors, name="max_factors", owner=owner, low=0)
    n_factors = check_int(n_factors, name="n_factors", owner=owner, low=0, allow_none=True)
    max_units = check_int(max_units, name="max_units", owner=owner, low=2, allow_none=True)
    return int(n_resamples), confidence_level, max_units, n_factors, max_factors


def _jobs(ann_responses: Any, cortical_responses: Any) -> list[tuple[str, str, str, Any]]:
    """``(source, layer, condition, array)`` for every array of both inputs, ANN first."""
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
    return jobs


def _table(
    rows: list[dict[str, Any]],
    details: dict[tuple[str, str, str], dict[str, Any]],
    *,
    confidence_level: float,
    ci_method: str,
) -> pd.DataFrame:
    """The tidy table of :func:`compare`: rows in :data:`STATISTICS` order, details in attrs."""
    table = pd.DataFrame(rows, columns=_COLUMNS)
    order = {s: i for i, s in enumerate(STATISTICS)}
    table = table.sort_values(
        ["statistic", "source", "layer", "condition"],
        key=lambda c: c.map(order) if c.name == "statistic" else c,
        kind="stable",
    ).reset_index(drop=True)
    table.attrs["details"] = details
    table.attrs["confidence_level"] = confidence_level
    table.attrs["ci_method"] = ci_method
    return table
