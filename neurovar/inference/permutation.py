"""Two-sample and paired permutation tests on xarray data along a named dim."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import numpy as np
import xarray as xr
from scipy import stats as sps

from neurovar._progress import check_progress, progress_bar
from neurovar._validation import (
    InvalidParameterError,
    check_choice,
    check_int,
    check_memory,
    check_real,
    check_rng,
    param_error,
)

from ._validation import ALTERNATIVES, default_batch
from .effect_size import _cohens_d_np, _prepare_pair, _rank_biserial_np

__all__ = ["permutation_test", "PERMUTATION_STATISTICS"]

NULL_DIM = "permutation"


def _mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _median_difference(x, y, axis=-1):
    return np.median(x, axis=axis) - np.median(y, axis=axis)


def _welch_t(x, y, axis=-1):
    nx, ny = x.shape[axis], y.shape[axis]
    vx = np.var(x, axis=axis, ddof=1)
    vy = np.var(y, axis=axis, ddof=1)
    return (np.mean(x, axis=axis) - np.mean(y, axis=axis)) / np.sqrt(vx / nx + vy / ny)


def _paired_mean_difference(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def _paired_median_difference(x, y, axis=-1):
    return np.median(x - y, axis=axis)


def _paired_t(x, y, axis=-1):
    d = x - y
    n = d.shape[axis]
    return np.mean(d, axis=axis) / (np.std(d, axis=axis, ddof=1) / np.sqrt(n))


#: Named statistics: ``name -> (independent version, paired version, description)``.
PERMUTATION_STATISTICS: dict[str, tuple[Callable, Callable, str]] = {
    "mean_difference": (_mean_difference, _paired_mean_difference, "mean(a) - mean(b)"),
    "median_difference": (
        _median_difference,
        _paired_median_difference,
        "median(a) - median(b); paired: median(a - b)",
    ),
    "t": (
        _welch_t,
        _paired_t,
        "Welch t statistic (ddof=1 variances); paired: one-sample t of a - b",
    ),
}


def _n_distinct(n_a: int, n_b: int, paired: bool) -> int:
    return 2**n_a if paired else math.comb(n_a + n_b, n_a)


def _check_design(n_a, n_b, paired, n_permutations, alternative, alpha, where=""):
    """Refuse designs too small for a test: fewer than 2 samples, or p < alpha unreachable."""
    if n_a < 2 or n_b < 2:
        raise InvalidParameterError(
            "The 'a' and 'b' parameters of permutation_test need at least 2 samples each"
            f"{where}. Got {n_a} and {n_b}."
        )
    n_distinct = _n_distinct(n_a, n_b, paired)
    n_eff = min(n_distinct, n_permutations + 1)  # Monte Carlo: the observed counts once
    smallest = (2.0 if alternative == "two-sided" else 1.0) / n_eff
    if smallest > alpha:
        kind = f"{n_a} pairs" if paired else f"{n_a} + {n_b} samples"
        raise ValueError(
            f"permutation_test cannot reach p <= alpha={alpha}{where}: with {kind} there are "
            f"{n_distinct} distinct rearrangements and n_permutations={n_permutations}, so the "
            f"smallest attainable {alternative} p-value is {smallest:.3g}. Collect more samples, "
            "raise n_permutations, or pass a larger alpha if that is really intended."
        )
    return n_distinct


def permutation_test(
    a,
    b,
    *,
    statistic: str | Callable = "mean_difference",
    paired: bool = False,
    dim: Hashable | None = None,
    n_permutations: int = 9999,
    alternative: str = "two-sided",
    nan_policy: str = "raise",
    alpha: float = 0.05,
    batch: int | None = None,
    progress: bool | None = None,
    rng: int | np.random.Generator | None = None,
) -> xr.Dataset:
    r"""Permutation test of a difference between ``a`` and ``b`` along a named dim.

    Built on :func:`scipy.stats.permutation_test`. Independent samples are tested by
    reassigning the pooled samples to the two groups (``permutation_type='independent'``);
    paired samples by swapping the members of each pair, i.e. flipping the sign of
    :math:`a_i - b_i` (``permutation_type='samples'``). When the number of distinct
    rearrangements (:math:`\binom{n_a+n_b}{n_a}`, or :math:`2^n` paired) is at most
    ``n_permutations``, the null distribution is enumerated exactly. Otherwise
    ``n_permutations`` random rearrangements are drawn and

    .. math:: p = \frac{1 + \#\{T^*_k \geq T_{obs}\}}{1 + B}

    (one-sided; two-sided doubles the smaller one-sided p, capped at 1), which is exact in size
    (Phipson & Smyth 2010). All positions along the other dims are tested in one vectorized
    call and share the same random rearrangements: each p-value is valid on its own, but
    p-values of different positions are not independent Monte Carlo draws.

    Parameters
    ----------
    a, b
        Samples as DataArrays (or 1-D arrays). Every dim other than ``dim`` must match between
        ``a`` and ``b`` (sizes and labels) and is kept in the result, so one call tests every
        unit, layer, ... at once. ``a`` and ``b`` may differ in length along ``dim`` unless
        ``paired``.
    statistic
        ``"mean_difference"`` (default), ``"median_difference"``, ``"t"`` (Welch t; studentized
        statistics keep the test asymptotically valid under unequal variances, Janssen 1997), or
        a callable ``statistic(x, y, axis) -> array`` reducing over ``axis``.
    paired
        If True, ``a[i]`` and ``b[i]`` are paired (same stimulus, seed, unit, ...).
    dim
        Dimension holding the samples (``"trial"``, ``"stimulus"``, ``"unit"``, ``"seed"``).
        May be omitted only when both inputs are 1-D.
    n_permutations
        Number of random rearrangements (ignored when exact enumeration is cheaper).
    alternative
        ``"two-sided"``, ``"greater"`` (statistic larger than under the null) or ``"less"``.
        Every named statistic is oriented as ``a - b``, so ``"greater"`` asks whether ``a``
        exceeds ``b``.
    nan_policy
        ``"raise"`` (default): NaN is an error. ``"omit"``: drop NaN samples (NaN pairs when
        paired) separately at each position; positions are then tested one by one.
    alpha
        Significance level used only to refuse designs in which no p-value can reach it (too
        few samples or permutations); it does not change the p-values.
    batch
        Number of rearrangements evaluated per vectorized call (limits memory); passed to
        scipy. Default: about ``2e7 / (a.size + b.size)``. It does not change the result.
    progress
        Progress bar while positions are tested one by one (``nan_policy='omit'`` with
        NaN): ``None`` (default) shows it only when the work is long (after a few seconds)
        and a terminal or notebook can show it, ``True`` always, ``False`` never.
    rng
        Seed or :class:`numpy.random.Generator` for the random rearrangements.

    Returns
    -------
    xarray.Dataset
        ``statistic``, ``p_value``, ``null_distribution`` (extra dim ``"permutation"``),
        ``cohens_d`` (Cohen's d; :math:`d_z` when paired), ``rank_biserial``, ``mean_a``,
        ``mean_b``, ``n_a``, ``n_b``, with the other dims and coords of the inputs. ``attrs``
        record the statistic, alternative, pairing, dim, ``n_permutations`` requested, the
        number of rearrangements actually used (``n_resamples``) and whether it was ``exact``.

    Raises
    ------
    ValueError
        Mismatched dims or labels, NaN without ``nan_policy='omit'``, fewer than 2 samples, or a
        design in which no p-value can reach ``alpha``.

    References
    ----------
    Good, P. (2005). *Permutation, Parametric, and Bootstrap Tests of Hypotheses*. Springer.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. *Stat. Appl.
    Genet. Mol. Biol.* 9(1):39.
    Janssen, A. (1997). Studentized permutation tests for non-i.i.d. hypotheses and the
    generalized Behrens-Fisher problem. *Stat. Probab. Lett.* 36, 9-21.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> a = xr.DataArray(rng.normal(1, 1, (20, 3)), dims=("seed", "layer"))
    >>> b = xr.DataArray(rng.normal(0, 1, (20, 3)), dims=("seed", "layer"))
    >>> res = permutation_test(a, b, dim="seed", n_permutations=999, rng=1)
    >>> res.p_value.dims
    ('layer',)
    """
    owner = "permutation_test"
    progress = check_progress(progress, owner=owner)
    check_rng(rng, owner=owner, torch_ok=False)
    if dim is not None and not isinstance(dim, str):
        raise param_error("dim", owner, "a dimension name (str) or None", dim)
    xa, xb, template, dim = _prepare_pair(a, b, dim, paired, nan_policy, owner)
    check_choice(alternative, name="alternative", owner=owner, options=ALTERNATIVES)
    n_permutations = check_int(n_permutations, name="n_permutations", owner=owner, low=1)
    check_memory(  # the null distribution of every position is returned
        2 * 8.0 * n_permutations * max(1, int(np.prod(xa.shape[:-1]))),
        name="n_permutations",
        owner=owner,
        value=n_permutations,
        what="the null distribution",
    )
    if batch is not None:
        batch = check_int(batch, name="batch", owner=owner, low=1)
    alpha = check_real(alpha, name="alpha", owner=owner, low=0, high=1, low_open=True,
                       high_open=True)
    stat_name, stat_fn, stat_desc = _resolve_statistic(statistic, paired, owner)
    stat, pval, null, exact = _permutations(
        xa, xb, stat_fn=stat_fn, paired=paired, n_permutations=n_permutations,
        alternative=alternative, alpha=alpha, batch=batch, progress=progress,
        gen=np.random.default_rng(rng),
    )  # fmt: skip
    ds = _permutation_dataset(
        xa, xb, template, stat=stat, pval=pval, null=null, stat_desc=stat_desc,
        alternative=alternative, paired=paired,
    )  # fmt: skip
    ds.attrs = {
        "test": "permutation test (scipy.stats.permutation_test)",
        "statistic": stat_name,
        "alternative": alternative,
        "paired": int(paired),
        "dim": str(dim),
        "n_permutations": n_permutations,
        "n_resamples": int(null.shape[-1]),
        "exact": int(exact),
        "nan_policy": nan_policy,
    }
    return ds


def _resolve_statistic(statistic, paired: bool, owner: str) -> tuple[str, Callable, str]:
    """Name, function and description of ``statistic`` (a name or a callable)."""
    if isinstance(statistic, str):
        check_choice(statistic, name="statistic", owner=owner,
                     options=tuple(PERMUTATION_STATISTICS))
        fns = PERMUTATION_STATISTICS[statistic]
        return statistic, fns[1 if paired else 0], fns[2]
    if callable(statistic):
        stat_name = getattr(statistic, "__name__", "custom")
        return stat_name, statistic, f"user callable {stat_name}(x, y, axis)"
    raise InvalidParameterError(
        f"The 'statistic' parameter of {owner} must be one of "
        f"{tuple(PERMUTATION_STATISTICS)!r} or a callable statistic(x, y, axis). "
        f"Got {type(statistic).__name__} instead."
    )


def _permutations(
    xa, xb, *, stat_fn, paired, n_permutations, alternative, alpha, batch, progress, gen
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Statistic, p-value and null distribution at every position; whether all were exact.

    Without NaN, one vectorized :func:`scipy.stats.permutation_test` call; with NaN
    (``nan_policy="omit"``) sample sizes differ between positions, so each position is tested
    on its own valid samples (scipy needs rectangular input).
    """
    ptype = "samples" if paired else "independent"
    batch_shape = xa.shape[:-1]
    has_nan = bool(np.isnan(xa).any() or np.isnan(xb).any())

    batch = default_batch(batch, xa.size + xb.size, n_permutations)

    def run(x, y):
        return sps.permutation_test(
            (x, y),
            stat_fn,
            permutation_type=ptype,
            vectorized=True,
            n_resamples=n_permutations,
            batch=batch,
            alternative=alternative,
            axis=-1,
            rng=gen,
        )

    if not has_nan:
        n_distinct = _check_design(
            xa.shape[-1], xb.shape[-1], paired, n_permutations, alternative, alpha
        )
        res = run(xa, xb)
        stat = np.asarray(res.statistic, dtype=float).reshape(batch_shape)
        pval = np.asarray(res.pvalue, dtype=float).reshape(batch_shape)
        null = np.moveaxis(np.asarray(res.null_distribution, dtype=float), 0, -1)
        null = null.reshape(*batch_shape, -1)
        return stat, pval, null, n_distinct <= n_permutations
    # nan_policy == "omit": sample sizes differ between positions, so each position is
    # tested on its own valid samples (scipy needs rectangular input).
    flat_a = xa.reshape(-1, xa.shape[-1])
    flat_b = xb.reshape(-1, xb.shape[-1])
    m = flat_a.shape[0]
    stat = np.full(m, np.nan)
    pval = np.full(m, np.nan)
    nulls, exacts = [], []
    for i in progress_bar(range(m), desc="permutation_test", progress=progress):
        x, y = flat_a[i], flat_b[i]
        if paired:
            keep = ~(np.isnan(x) | np.isnan(y))
            x, y = x[keep], y[keep]
        else:
            x, y = x[~np.isnan(x)], y[~np.isnan(y)]
        where = f" at position {np.unravel_index(i, batch_shape)} after omitting NaN"
        n_distinct = _check_design(
            x.size, y.size, paired, n_permutations, alternative, alpha, where=where
        )
        r = run(x, y)
        stat[i], pval[i] = float(r.statistic), float(r.pvalue)
        nulls.append(np.asarray(r.null_distribution, dtype=float))
        exacts.append(n_distinct <= n_permutations)
    length = max(len(n) for n in nulls)
    null = np.full((m, length), np.nan)
    for i, n in enumerate(nulls):
        null[i, : len(n)] = n
    stat = stat.reshape(batch_shape)
    pval = pval.reshape(batch_shape)
    null = null.reshape(*batch_shape, length)
    return stat, pval, null, bool(all(exacts))


def _permutation_dataset(
    xa, xb, template, *, stat, pval, null, stat_desc, alternative, paired
) -> xr.Dataset:
    """The labelled result of :func:`permutation_test` (without its attrs), with effect sizes."""
    with np.errstate(invalid="ignore"):
        n_a = np.sum(~np.isnan(xa if not paired else xa - xb), axis=-1)
        n_b = np.sum(~np.isnan(xb if not paired else xa - xb), axis=-1)
        mean_a = np.nanmean(np.where(np.isnan(xb), np.nan, xa) if paired else xa, axis=-1)
        mean_b = np.nanmean(np.where(np.isnan(xa), np.nan, xb) if paired else xb, axis=-1)

    def wrap(values, long_name):
        out = template.copy(data=values)
        out.attrs = {"long_name": long_name}
        return out

    null_da = xr.DataArray(
        null,
        dims=(*template.dims, NULL_DIM),
        coords=template.coords,
        attrs={"long_name": "statistic under rearrangements (exact or random)"},
    )
    ds = xr.Dataset(
        {
            "statistic": wrap(stat, stat_desc),
            "p_value": wrap(pval, f"{alternative} permutation p-value"),
            "null_distribution": null_da,
            "cohens_d": wrap(
                _cohens_d_np(xa, xb, paired=paired),
                "Cohen's d_z (paired)" if paired else "Cohen's d (pooled SD, ddof=1)",
            ),
            "rank_biserial": wrap(
                _rank_biserial_np(xa, xb, paired=paired),
                "matched-pairs rank-biserial r" if paired else "rank-biserial r",
            ),
            "mean_a": wrap(mean_a, "mean of a"),
            "mean_b": wrap(mean_b, "mean of b"),
            "n_a": wrap(n_a, "number of samples in a"),
            "n_b": wrap(n_b, "number of samples in b"),
        }
    )
    return ds
