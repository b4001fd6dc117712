"""Bootstrap confidence intervals on xarray data, flat or hierarchical (seeds, then units)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import special
from scipy import stats as sps

from neurovar._progress import check_progress, progress_bar
from neurovar._validation import (
    InvalidParameterError,
    check_bool,
    check_choice,
    check_confidence_level,
    check_int,
    check_memory,
    check_rng,
    param_error,
)

from ._validation import (
    as_dataarray,
    check_nan,
    default_batch,
    numeric_values,
    resolve_dim,
)

__all__ = ["bootstrap_ci", "BOOTSTRAP_STATISTICS"]

RESAMPLE_DIM = "resample"
METHODS = ("BCa", "percentile", "basic")

#: Named statistics (NaN-aware so ragged hierarchical designs work): name -> f(x, axis).
BOOTSTRAP_STATISTICS: dict[str, Callable] = {
    "mean": np.nanmean,
    "median": np.nanmedian,
}


def _resolve_statistic(statistic, owner):
    if isinstance(statistic, str):
        check_choice(statistic, name="statistic", owner=owner, options=tuple(BOOTSTRAP_STATISTICS))
        return statistic, BOOTSTRAP_STATISTICS[statistic]
    if callable(statistic):
        return getattr(statistic, "__name__", "custom"), statistic
    raise InvalidParameterError(
        f"The 'statistic' parameter of {owner} must be one of {tuple(BOOTSTRAP_STATISTICS)!r} "
        f"or a callable statistic(x, axis) -> array. Got {type(statistic).__name__} instead."
    )


def _quantile_rows(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear-interpolated quantile ``q[i]`` of ``values[i, :]`` (a different q per row)."""
    srt = np.sort(values, axis=-1)
    n = srt.shape[-1]
    pos = np.clip(q, 0.0, 1.0) * (n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    v_lo = np.take_along_axis(srt, lo[:, None], axis=-1)[:, 0]
    v_hi = np.take_along_axis(srt, hi[:, None], axis=-1)[:, 0]
    return v_lo + frac * (v_hi - v_lo)


def _interval(theta_hat, theta_b, jack, method, confidence_level):
    """Percentile or BCa interval per row of ``theta_b`` (rows: positions, cols: resamples).

    BCa (Efron 1987): :math:`\\hat z_0 = \\Phi^{-1}(\\#\\{\\theta^*_b < \\hat\\theta\\}/B)`,
    acceleration from the jackknife values :math:`\\theta_{(i)}`,
    :math:`\\hat a = \\sum(\\bar\\theta - \\theta_{(i)})^3 / (6 [\\sum(\\bar\\theta -
    \\theta_{(i)})^2]^{3/2})`, and limits at
    :math:`\\Phi(\\hat z_0 + (\\hat z_0 + z_\\alpha)/(1 - \\hat a(\\hat z_0 + z_\\alpha)))`.
    """
    alpha = (1.0 - confidence_level) / 2.0
    q = np.array([alpha, 1.0 - alpha])
    if method == "basic":  # reverse percentile: 2 theta_hat - G^-1(1 - a/2), ...
        q_lo = np.full(theta_b.shape[0], q[0])
        q_hi = np.full(theta_b.shape[0], q[1])
        lo, hi = _quantile_rows(theta_b, q_lo), _quantile_rows(theta_b, q_hi)
        return 2 * theta_hat - hi, 2 * theta_hat - lo
    if method == "percentile":
        q_lo = np.full(theta_b.shape[0], q[0])
        q_hi = np.full(theta_b.shape[0], q[1])
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            below = np.mean(theta_b < theta_hat[:, None], axis=-1)
            equal = np.mean(theta_b == theta_hat[:, None], axis=-1)
            z0 = special.ndtri(below + 0.5 * equal)
            dev = np.mean(jack, axis=-1, keepdims=True) - jack
            acc = np.sum(dev**3, axis=-1) / (6.0 * np.sum(dev**2, axis=-1) ** 1.5)
            acc = np.where(np.isfinite(acc), acc, 0.0)
            z = special.ndtri(q)
            z_lo = z0 + (z0 + z[0]) / (1 - acc * (z0 + z[0]))
            z_hi = z0 + (z0 + z[1]) / (1 - acc * (z0 + z[1]))
            q_lo = special.ndtr(z_lo)
            q_hi = special.ndtr(z_hi)
        q_lo = np.where(np.isfinite(q_lo), q_lo, q[0])
        q_hi = np.where(np.isfinite(q_hi), q_hi, q[1])
    return _quantile_rows(theta_b, q_lo), _quantile_rows(theta_b, q_hi)


def _hierarchical_stats(
    x: np.ndarray,
    stat_fn: Callable,
    *,
    n_resamples: int,
    batch: int,
    resample_within: bool,
    gen: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-stage bootstrap of ``x`` with shape ``(P, S, U)`` (positions, groups, units).

    Every resample draws ``S`` groups with replacement, then, within each drawn group, as many
    units as it has valid (non-NaN) units, with replacement. NaN mark absent units (ragged
    designs); the NaN pattern must be the same for all ``P`` positions. Returns the point
    estimates ``(P,)``, the bootstrap values ``(P, B)`` and the group-jackknife values
    ``(P, S)``.
    """
    p, s, u = x.shape
    valid = ~np.isnan(x[0])  # (S, U)
    n_valid = valid.sum(axis=1)  # (S,)
    # lookup[g, k] = index of the k-th valid unit of group g (ragged groups padded with 0)
    lookup = np.zeros((s, u), dtype=np.intp)
    for g in range(s):
        idx = np.flatnonzero(valid[g])
        lookup[g, : idx.size] = idx
    flat = x.reshape(p, s * u)
    theta_hat = np.asarray(stat_fn(flat, axis=-1), dtype=float)
    theta_b = np.empty((p, n_resamples))
    cols = np.arange(u)
    for start in range(0, n_resamples, batch):
        nb = min(batch, n_resamples - start)
        g = gen.integers(0, s, size=(nb, s))  # (nb, S) drawn groups
        nv = n_valid[g]  # (nb, S)
        if resample_within:
            k = np.floor(gen.random(size=(nb, s, u)) * nv[..., None]).astype(np.intp)
        else:
            k = np.broadcast_to(cols, (nb, s, u))
        units = lookup[g[..., None], np.minimum(k, u - 1)]  # (nb, S, U)
        sample = x[:, g[..., None], units]  # (P, nb, S, U)
        absent = cols[None, None, :] >= nv[..., None]  # pad beyond each group's size
        sample = np.where(absent[None], np.nan, sample)
        theta_b[:, start : start + nb] = stat_fn(sample.reshape(p, nb, s * u), axis=-1)
    jack = np.empty((p, s))
    for g in range(s):
        keep = np.delete(np.arange(s), g)
        jack[:, g] = stat_fn(x[:, keep, :].reshape(p, -1), axis=-1)
    return theta_hat, theta_b, jack


def _min_resamples(confidence_level: float) -> int:
    """Fewest resamples that resolve a two-sided ``confidence_level`` interval: each tail
    alpha = (1 - level) / 2 needs (B + 1) alpha >= 1, at least one resample beyond each limit
    (Davison & Hinkley 1997, sec. 5.2.3). 95%: 39; 99.9%: 1999."""
    alpha = (1.0 - confidence_level) / 2.0
    return int(np.ceil(1.0 / alpha - 1e-9)) - 1


def _warn_few_resamples(n_resamples: int, confidence_level: float, method: str, owner: str):
    need = _min_resamples(confidence_level)
    if n_resamples < need:
        warnings.warn(
            f"{owner}: n_resamples={n_resamples} is too few for a {100 * confidence_level:g}% "
            f"{method} interval: each tail of {(1 - confidence_level) / 2:.3g} needs "
            f"(n_resamples + 1) x {(1 - confidence_level) / 2:.3g} >= 1, i.e. n_resamples >= "
            f"{need} (use about 10 times that for stable limits). With fewer, the limits are "
            "the most extreme resamples, not the quantiles asked for.",
            UserWarning,
            stacklevel=3,
        )


def bootstrap_ci(
    data,
    statistic: str | Callable = "mean",
    *,
    dim: Hashable | None = None,
    group_dim: Hashable | None = None,
    n_resamples: int = 9999,
    confidence_level: float = 0.95,
    method: str = "BCa",
    resample_within: bool = True,
    nan_policy: str = "raise",
    batch: int | None = None,
    progress: bool | None = None,
    rng: int | np.random.Generator | None = None,
) -> xr.Dataset:
    r"""Bootstrap confidence interval of a statistic along a named dim (flat or hierarchical).

    **Flat** (``group_dim=None``): :func:`scipy.stats.bootstrap` resamples ``dim`` with
    replacement :math:`B` times and forms a percentile or BCa interval (Efron 1987). Every
    position along the other dims is handled in one vectorized call; positions share the same
    resampling indices.

    With :math:`\hat\theta` the statistic of the data, :math:`\theta^*_1, \dots, \theta^*_B`
    its values on the resamples, :math:`\hat G` their empirical CDF and
    :math:`\alpha = 1 - \text{confidence\_level}`, the **percentile** interval is
    :math:`[\hat G^{-1}(\alpha/2), \hat G^{-1}(1-\alpha/2)]`; the **basic** (reverse
    percentile) interval is :math:`[2\hat\theta - \hat G^{-1}(1-\alpha/2), 2\hat\theta -
    \hat G^{-1}(\alpha/2)]` (Davison & Hinkley 1997, eq. 5.6), which corrects a first-order
    bias of the estimator and may therefore exclude :math:`\hat\theta`. **BCa** replaces the
    two levels by

    .. math::

        \alpha_{1,2} = \Phi\left(\hat z_0 + \frac{\hat z_0 + z_{\alpha/2,\,1-\alpha/2}}
        {1 - \hat a (\hat z_0 + z_{\alpha/2,\,1-\alpha/2})}\right), \quad
        \hat z_0 = \Phi^{-1}\left(\frac{\#\{\theta^*_b < \hat\theta\}
        + \tfrac12 \#\{\theta^*_b = \hat\theta\}}{B}\right), \quad
        \hat a = \frac{\sum_i (\bar\theta_{(\cdot)} - \theta_{(i)})^3}
        {6 \left[\sum_i (\bar\theta_{(\cdot)} - \theta_{(i)})^2\right]^{3/2}},

    with :math:`\theta_{(i)}` the jackknife (leave-one-out) values.

    **Hierarchical** (``group_dim`` given, e.g. ``group_dim="seed", dim="unit"``): nested data
    (units within network seeds, neurons within animals) are resampled in two stages: draw
    :math:`S` groups with replacement, then within each drawn group draw its units with
    replacement (Davison & Hinkley 1997, sec. 3.8; Saravanan et al. 2020). The statistic is
    computed over all resampled units pooled. A flat bootstrap over all units would treat units
    of one seed as independent and give intervals that are far too narrow. Resampling both
    stages adds the within-group variance twice (Davison & Hinkley 1997, eq. 3.17), so the
    interval is conservative when within-group variance dominates; ``resample_within=False``
    resamples groups only (slightly liberal with few groups). BCa uses the group jackknife
    (leave one group out) for the acceleration. Implemented here with vectorized fancy
    indexing because scipy has no nested bootstrap.

    Coverage of nominal 95% intervals for the grand mean in our simulations (1000 data sets,
    normal seed and unit effects, mean of units): 40 seeds x 10 units, SD_seed = SD_unit:
    94.7% (both stages), 93.5% (groups only), 58.6% flat; 40 x 10 with SD_seed = 0.3 SD_unit:
    97.9% / 93.1% / 83.8%; 5 seeds x 20 units, SD_seed = SD_unit: 85.9% / 82.9% / 40.2%.
    With few groups every bootstrap interval is too narrow; a warning is issued below 10.

    Parameters
    ----------
    data
        DataArray (or 1-D array). Dims other than ``dim`` (and ``group_dim``) are kept.
    statistic
        ``"mean"`` (default), ``"median"``, or a callable ``statistic(x, axis) -> array``
        reducing over ``axis``. In ragged hierarchical designs (NaN-padded groups with
        ``nan_policy='omit'``) the callable receives NaN for absent units and must ignore them.
    dim
        Dimension of the resampled observations (units within groups when hierarchical). May
        be omitted only for 1-D ``data``.
    group_dim
        Top-level dimension for the hierarchical bootstrap (e.g. ``"seed"``, ``"animal"``).
    n_resamples
        Number of bootstrap resamples :math:`B`.
    confidence_level
        Two-sided confidence level in (0, 1).
    method
        ``"BCa"`` (bias-corrected and accelerated, default), ``"percentile"`` or ``"basic"``.
    resample_within
        Hierarchical only: also resample units within each drawn group (default True).
    nan_policy
        ``"raise"`` (default) or ``"omit"``: drop NaN observations at each position (flat), or
        treat NaN as absent units of ragged groups (hierarchical).
    batch
        Resamples evaluated per vectorized step (limits memory). Default: about
        ``2e7 / data.size``. Flat: it does not change the result; hierarchical: it changes
        the random draws (not their distribution), so fix it for bit-wise reproducibility.
    progress
        Progress bar when positions are processed one by one (NaN with ``'omit'``):
        ``None`` (default) shows it only when the work is long (after a few seconds) and a
        terminal or notebook can show it, ``True`` always, ``False`` never.
    rng
        Seed or :class:`numpy.random.Generator`.

    Returns
    -------
    xarray.Dataset
        ``statistic`` (estimate on the data), ``ci_low``, ``ci_high``, ``standard_error``
        (SD of the bootstrap distribution, ``ddof=1``), ``bootstrap_distribution`` (extra dim
        ``"resample"``), ``n`` (observations used) and, hierarchical, ``n_groups``; ``attrs``
        record method, confidence level, dims and ``n_resamples``.

    References
    ----------
    Efron, B. (1987). Better bootstrap confidence intervals. *JASA* 82, 171-185.
    Davison, A. C. & Hinkley, D. V. (1997). *Bootstrap Methods and their Application*. CUP.
    Saravanan, V., Berman, G. J. & Sober, S. J. (2020). Application of the hierarchical
    bootstrap to multi-level data in neuroscience. *Neurons, Behavior, Data analysis, and
    Theory* 3(5).
    """
    owner = "bootstrap_ci"
    data, stat_name, stat_fn, n_resamples, confidence_level, batch, progress, resample_within = (
        _check_bootstrap_args(
            data, statistic, dim=dim, group_dim=group_dim, n_resamples=n_resamples,
            confidence_level=confidence_level, method=method, resample_within=resample_within,
            batch=batch, progress=progress, rng=rng,
        )
    )  # fmt: skip
    _warn_few_resamples(n_resamples, confidence_level, method, owner)
    common = dict(
        stat_fn=stat_fn, n_resamples=n_resamples, confidence_level=confidence_level,
        method=method, nan_policy=nan_policy, batch=batch, progress=progress,
        gen=np.random.default_rng(rng),
    )  # fmt: skip
    if group_dim is None:
        dim = resolve_dim(dim, [data], names=["data"])
        parts = _flat_bootstrap(data, dim, **common)
    else:
        parts = _hierarchical_bootstrap(
            data, dim, group_dim, resample_within=resample_within, **common
        )
    ds = _bootstrap_dataset(parts, stat_name=stat_name, confidence_level=confidence_level,
                            method=method)  # fmt: skip
    ds.attrs = {
        "method": method,
        "confidence_level": confidence_level,
        "n_resamples": n_resamples,
        "statistic": stat_name,
        "dim": str(dim),
        "group_dim": "" if group_dim is None else str(group_dim),
        "hierarchical": int(group_dim is not None),
        "resample_within": int(bool(resample_within)) if group_dim is not None else 0,
        "nan_policy": nan_policy,
    }
    return ds


def _check_bootstrap_args(
    data, statistic, *, dim, group_dim, n_resamples, confidence_level, method,
    resample_within, batch, progress, rng,
) -> tuple:  # fmt: skip
    """Validation of :func:`bootstrap_ci` (one job: refuse bad input with a clear message)."""
    owner = "bootstrap_ci"
    progress = check_progress(progress, owner=owner)
    resample_within = check_bool(resample_within, name="resample_within", owner=owner)
    check_rng(rng, owner=owner, torch_ok=False)
    for pname, d in (("dim", dim), ("group_dim", group_dim)):
        if d is not None and not isinstance(d, str):
            raise param_error(pname, owner, "a dimension name (str) or None", d)
    if group_dim is not None and isinstance(data, xr.DataArray) and group_dim not in data.dims:
        raise param_error(
            "group_dim",
            owner,
            f"a dimension of 'data' (one of {tuple(data.dims)!r}) or None",
            group_dim,
        )
    data = as_dataarray(data, name="data")
    if data.size == 0:
        raise param_error("data", owner, "non-empty", f"sizes {dict(data.sizes)}", raw=True)
    stat_name, stat_fn = _resolve_statistic(statistic, owner)
    check_choice(method, name="method", owner=owner, options=METHODS)
    n_resamples = check_int(n_resamples, name="n_resamples", owner=owner, low=2)
    n_positions = max(1, data.size // max(1, data.sizes[dim])) if dim in data.dims else 1
    check_memory(  # scipy keeps every resampled statistic of every position
        2 * 8.0 * n_resamples * n_positions,
        name="n_resamples",
        owner=owner,
        value=n_resamples,
        what="the bootstrap distribution",
    )
    confidence_level = check_confidence_level(confidence_level, owner=owner)
    if batch is not None:
        batch = check_int(batch, name="batch", owner=owner, low=1)
    return data, stat_name, stat_fn, n_resamples, confidence_level, batch, progress, resample_within


@dataclass
class _BootstrapParts:
    """What a flat or hierarchical bootstrap computed, per position (flattened)."""

    template: xr.DataArray  # one position's labels: the data without the resampled dim(s)
    batch_shape: tuple[int, ...]
    theta_hat: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    dist: np.ndarray  # (positions, n_resamples)
    n: np.ndarray
    extra: dict[str, np.ndarray]


def _flat_bootstrap(
    data, dim, *, stat_fn, n_resamples, confidence_level, method, nan_policy, batch, progress, gen
) -> _BootstrapParts:
    """:func:`scipy.stats.bootstrap` along ``dim`` at every position (one call without NaN)."""
    owner = "bootstrap_ci"
    order = [d for d in data.dims if d != dim] + [dim]
    da = data.transpose(*order)
    da = da.drop_vars([c for c in da.coords if dim in da[c].dims])
    x = numeric_values(da, name="data")
    has_nan = check_nan(x, name="data", nan_policy=nan_policy, owner=owner)
    template = da.isel({dim: 0}, drop=True)
    batch_shape = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    n = np.sum(~np.isnan(flat), axis=-1)

    step = default_batch(batch, flat.size, n_resamples)

    def run(sample):
        if sample.shape[-1] < 2:
            raise InvalidParameterError(
                f"The 'data' parameter of {owner} needs at least 2 observations along "
                f"'{dim}' (after omitting NaN). Got {sample.shape[-1]}."
            )
        return sps.bootstrap(
            (sample,),
            stat_fn,
            n_resamples=n_resamples,
            batch=step,
            vectorized=True,
            axis=-1,
            confidence_level=confidence_level,
            method=method,
            rng=gen,
        )

    if not has_nan:
        res = run(flat)
        theta_hat = np.asarray(stat_fn(flat, axis=-1), dtype=float)
        lo = np.asarray(res.confidence_interval.low, dtype=float)
        hi = np.asarray(res.confidence_interval.high, dtype=float)
        dist = np.asarray(res.bootstrap_distribution, dtype=float).reshape(flat.shape[0], -1)
    else:
        m = flat.shape[0]
        theta_hat, lo, hi = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan)
        dist = np.full((m, n_resamples), np.nan)
        for i in progress_bar(range(m), desc=owner, progress=progress):
            sample = flat[i][~np.isnan(flat[i])]
            r = run(sample[None, :])
            theta_hat[i] = float(np.asarray(stat_fn(sample, axis=-1)))
            lo[i] = float(np.asarray(r.confidence_interval.low).ravel()[0])
            hi[i] = float(np.asarray(r.confidence_interval.high).ravel()[0])
            dist[i] = np.asarray(r.bootstrap_distribution).ravel()
    return _BootstrapParts(template, batch_shape, theta_hat, lo, hi, dist, n, {})


def _hierarchical_bootstrap(
    data, dim, group_dim, *, resample_within, stat_fn, n_resamples, confidence_level, method,
    nan_policy, batch, progress, gen,
) -> _BootstrapParts:  # fmt: skip
    """Two-stage resampling (groups, then units within them) at every position."""
    owner = "bootstrap_ci"
    if dim is None:
        raise InvalidParameterError(
            f"The 'dim' parameter of {owner} must name the dimension of the units within "
            f"each '{group_dim}' when group_dim is given. Got None; data has dims "
            f"{tuple(data.dims)!r}."
        )
    for name, d in (("group_dim", group_dim), ("dim", dim)):
        if d not in data.dims:
            raise InvalidParameterError(
                f"The '{name}' parameter of {owner} must be a dimension of 'data'. Got "
                f"{d!r}, but data has dims {tuple(data.dims)!r}."
            )
    if group_dim == dim:
        raise InvalidParameterError(
            f"The 'group_dim' and 'dim' parameters of {owner} must differ. Got {dim!r} for both."
        )
    check_choice(resample_within, name="resample_within", owner=owner, options=(True, False))
    order = [d for d in data.dims if d not in (group_dim, dim)] + [group_dim, dim]
    da = data.transpose(*order)
    da = da.drop_vars([c for c in da.coords if {dim, group_dim} & set(da[c].dims)])
    x = numeric_values(da, name="data")
    has_nan = check_nan(x, name="data", nan_policy=nan_policy, owner=owner)
    template = da.isel({group_dim: 0, dim: 0}, drop=True)
    batch_shape = x.shape[:-2]
    s, u = x.shape[-2:]
    flat = x.reshape(-1, s, u)
    m = flat.shape[0]
    n_per_group = np.sum(~np.isnan(flat), axis=-1)  # (m, S)
    n_groups = np.sum(n_per_group > 0, axis=-1)
    n = n_per_group.sum(axis=-1)
    if np.any(n_groups < 2):
        raise InvalidParameterError(
            f"The 'data' parameter of {owner} needs at least 2 non-empty groups along "
            f"'{group_dim}' for a hierarchical bootstrap. Got {int(n_groups.min())}."
        )
    if int(n_groups.min()) < 10:
        warnings.warn(
            f"bootstrap_ci: only {int(n_groups.min())} groups along '{group_dim}'. With few "
            "groups hierarchical bootstrap intervals undercover (in simulation, a nominal 95% "
            "interval covered ~86% of the time with 5 groups, ~91% with 12); report the "
            "number of groups and prefer more seeds/animals.",
            UserWarning,
            stacklevel=2,
        )
    step = default_batch(batch, m * s * u, n_resamples)
    kw = dict(n_resamples=n_resamples, batch=step, resample_within=resample_within, gen=gen)
    if not has_nan:
        theta_hat, dist, jack = _hierarchical_stats(flat, stat_fn, **kw)
    else:
        theta_hat, dist = np.full(m, np.nan), np.full((m, n_resamples), np.nan)
        lo_hi = []
        for i in progress_bar(range(m), desc=owner, progress=progress):
            keep = n_per_group[i] > 0  # drop groups that are entirely NaN
            th, tb, jk = _hierarchical_stats(flat[i : i + 1, keep], stat_fn, **kw)
            theta_hat[i], dist[i] = th[0], tb[0]
            lo_hi.append(_interval(th, tb, jk, method, confidence_level))
    if not has_nan:
        lo, hi = _interval(theta_hat, dist, jack, method, confidence_level)
    else:
        lo = np.array([v[0][0] for v in lo_hi])
        hi = np.array([v[1][0] for v in lo_hi])
    extra = {"n_groups": n_groups.reshape(batch_shape)}
    extra = {"n_groups": n_groups.reshape(batch_shape)}
    return _BootstrapParts(template, batch_shape, theta_hat, lo, hi, dist, n, extra)


def _bootstrap_dataset(
    parts: _BootstrapParts, *, stat_name: str, confidence_level: float, method: str
) -> xr.Dataset:
    """The labelled result of :func:`bootstrap_ci` (without its attrs)."""
    template, batch_shape = parts.template, parts.batch_shape
    theta_hat, lo, hi, dist, n, extra = (
        parts.theta_hat,
        parts.lo,
        parts.hi,
        parts.dist,
        parts.n,
        parts.extra,
    )

    def wrap(values, long_name):
        out = template.copy(data=np.asarray(values).reshape(batch_shape))
        out.attrs = {"long_name": long_name}
        return out

    ds = xr.Dataset(
        {
            "statistic": wrap(theta_hat, f"{stat_name} of the data"),
            "ci_low": wrap(lo, f"lower {confidence_level:g} {method} bootstrap limit"),
            "ci_high": wrap(hi, f"upper {confidence_level:g} {method} bootstrap limit"),
            "standard_error": wrap(
                np.std(dist, axis=-1, ddof=1), "bootstrap standard error (SD, ddof=1)"
            ),
            "bootstrap_distribution": xr.DataArray(
                dist.reshape(*batch_shape, -1),
                dims=(*template.dims, RESAMPLE_DIM),
                coords=template.coords,
                attrs={"long_name": f"{stat_name} of each bootstrap resample"},
            ),
            "n": wrap(n, "number of observations"),
            **{k: wrap(v, "number of non-empty groups") for k, v in extra.items()},
        }
    )
    return ds
