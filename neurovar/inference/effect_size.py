"""Effect sizes that accompany every test: Cohen's d (paired d_z) and the rank-biserial r.

A p-value says whether a difference is distinguishable from noise; an effect size says how
large it is. Every test in :mod:`neurovar.inference` reports both.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable

import numpy as np
import xarray as xr
from scipy import stats as sps

from neurovar._validation import check_choice, param_error

from ._validation import as_dataarray, check_nan, numeric_values, resolve_dim

__all__ = ["cohens_d", "rank_biserial"]


# ----------------------------------------------------------------------------- numpy kernels
# All kernels reduce over the last axis and are NaN-aware: NaN entries (NaN pairs when paired)
# are ignored, so the same code serves nan_policy="omit". Callers reject NaN beforehand when
# nan_policy="raise".


def _paired_diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x - y  # NaN in either member of a pair propagates, i.e. the pair is dropped


def _zero_spread(ss: np.ndarray, n: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Sums of squares that are rounding error only: SD <= 64 eps x the largest |value|.

    Differences such as 0.85 - 0.80 and 0.80 - 0.75 are "constant" but not bit-identical,
    so their SD is ~1e-17 instead of 0 and the ratio a plausible-looking 6e15.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(ss / np.maximum(n - 1, 1))
    return np.isfinite(sd) & (sd <= 64 * np.finfo(float).eps * scale)


def _ratio_or_inf(
    mean: np.ndarray, sd: np.ndarray, zero: np.ndarray, scale: np.ndarray, what: str
) -> np.ndarray:
    """``mean / sd``; +-inf (mean != 0) or NaN (mean = 0) where the spread is zero, warned."""
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.asarray(mean / sd, dtype=float)
        tied = np.abs(mean) <= 64 * np.finfo(float).eps * scale
        d = np.where(zero, np.where(tied, np.nan, np.sign(mean) * np.inf), d)
    n_zero = int(np.sum(zero))
    if n_zero:
        warnings.warn(
            f"Cohen's d: {n_zero} of {np.size(zero)} comparisons have zero {what} (every value "
            "the same up to rounding), so d is undefined: reported as +-inf where the means "
            "differ and NaN where they do not. Report the raw difference instead.",
            RuntimeWarning,
            stacklevel=3,
        )
    return d


def _cohens_d_np(x: np.ndarray, y: np.ndarray, *, paired: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        if paired:
            d = _paired_diff(x, y)
            n = np.sum(~np.isnan(d), axis=-1)
            mean = np.nansum(d, axis=-1) / n
            ss = np.nansum((d - mean[..., None]) ** 2, axis=-1)
            sd = np.sqrt(ss / (n - 1))
            scale = np.nanmax(np.abs(np.concatenate([x, y], axis=-1)), axis=-1)
            zero = _zero_spread(ss, n, scale)
            return _ratio_or_inf(mean, sd, zero, scale, "variance of the paired differences")
        nx = np.sum(~np.isnan(x), axis=-1)
        ny = np.sum(~np.isnan(y), axis=-1)
        mx = np.nansum(x, axis=-1) / nx
        my = np.nansum(y, axis=-1) / ny
        ssx = np.nansum((x - mx[..., None]) ** 2, axis=-1)
        ssy = np.nansum((y - my[..., None]) ** 2, axis=-1)
        pooled = np.sqrt((ssx + ssy) / (nx + ny - 2))
        scale = np.nanmax(np.abs(np.concatenate([x, y], axis=-1)), axis=-1)
        zero = _zero_spread(ssx + ssy, nx + ny - 1, scale)
        return _ratio_or_inf(mx - my, pooled, zero, scale, "within-group variance")


def _rank_biserial_np(x: np.ndarray, y: np.ndarray, *, paired: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        if paired:
            d = _paired_diff(x, y)
            absd = np.where(d == 0, np.nan, np.abs(d))  # Wilcoxon: zero differences dropped
            ranks = sps.rankdata(absd, axis=-1, nan_policy="omit")
            m = np.sum(~np.isnan(absd), axis=-1)
            plus = np.nansum(np.where(d > 0, ranks, 0.0), axis=-1)
            minus = np.nansum(np.where(d < 0, ranks, 0.0), axis=-1)
            return (plus - minus) / (m * (m + 1) / 2.0)
        both = np.concatenate([x, y], axis=-1)
        ranks = sps.rankdata(both, axis=-1, nan_policy="omit")
        nx = np.sum(~np.isnan(x), axis=-1)
        ny = np.sum(~np.isnan(y), axis=-1)
        u_x = np.nansum(ranks[..., : x.shape[-1]], axis=-1) - nx * (nx + 1) / 2.0
        return 2.0 * u_x / (nx * ny) - 1.0


# ----------------------------------------------------------------------------- xarray wrappers


def _prepare_pair(a, b, dim, paired, nan_policy, owner):
    a = as_dataarray(a, name="a")
    b = as_dataarray(b, name="b")
    dim = resolve_dim(dim, [a, b], names=["a", "b"])
    check_choice(paired, name="paired", owner=owner, options=(True, False))
    for name, x in (("a", a), ("b", b)):
        if x.sizes[dim] == 0:
            raise param_error(
                name, owner, f"non-empty along {dim!r}", f"dims {dict(x.sizes)}", raw=True
            )
    if paired and a.sizes[dim] != b.sizes[dim]:
        raise ValueError(
            f"The 'a' and 'b' parameters of {owner} must have the same length along '{dim}' "
            f"when paired=True. Got {a.sizes[dim]} and {b.sizes[dim]}."
        )
    a_t, b_t = _align_batch(a, b, dim, paired=paired, owner=owner)
    xa = numeric_values(a_t, name="a")
    xb = numeric_values(b_t, name="b")
    check_nan(xa, name="a", nan_policy=nan_policy, owner=owner)
    check_nan(xb, name="b", nan_policy=nan_policy, owner=owner)
    template = a_t.isel({dim: 0}, drop=True)
    return xa, xb, template, dim


def _align_batch(a: xr.DataArray, b: xr.DataArray, dim: Hashable, *, paired: bool, owner: str):
    """Broadcast ``a`` and ``b`` over every dim except ``dim``, which goes last.

    The other dims must agree exactly (same sizes and coordinate labels); ``dim`` keeps
    separate labels for ``a`` and ``b`` (they are different samples) unless ``paired``, where
    matching labels along ``dim`` are checked when both carry them.
    """
    if paired and dim in a.coords and dim in b.coords:
        if not np.array_equal(a[dim].values, b[dim].values):
            raise ValueError(
                f"The 'a' and 'b' parameters of {owner} are paired along '{dim}' but their "
                f"'{dim}' coordinate labels differ; pairs must be in the same order."
            )
    a_ = a.drop_vars([c for c in a.coords if dim in a[c].dims])
    b_ = b.drop_vars([c for c in b.coords if dim in b[c].dims])
    other_a = [d for d in a_.dims if d != dim]
    other_b = [d for d in b_.dims if d != dim]
    if set(other_a) != set(other_b):
        raise ValueError(
            f"The 'a' and 'b' parameters of {owner} must have the same dims apart from "
            f"'{dim}'. Got {tuple(a.dims)!r} and {tuple(b.dims)!r}."
        )
    for d in other_a:
        if a_.sizes[d] != b_.sizes[d]:
            raise ValueError(
                f"The 'a' and 'b' parameters of {owner} must have the same size along '{d}'. "
                f"Got {a_.sizes[d]} and {b_.sizes[d]}."
            )
    try:
        a_, b_ = xr.align(a_, b_, join="exact", exclude=[dim])
    except ValueError as err:
        raise ValueError(
            f"The 'a' and 'b' parameters of {owner} must have identical coordinate labels along "
            f"the dims other than '{dim}' ({tuple(other_a)!r}): {err}"
        ) from err
    order = [*other_a, dim]
    return a_.transpose(*order), b_.transpose(*order)


def cohens_d(
    a,
    b,
    *,
    dim: Hashable | None = None,
    paired: bool = False,
    nan_policy: str = "raise",
) -> xr.DataArray:
    r"""Cohen's d between two samples along ``dim`` (paired: Cohen's :math:`d_z`).

    Independent samples use the pooled standard deviation (both variances with ``ddof=1``):

    .. math::

        d = \frac{\bar a - \bar b}{s_p}, \qquad
        s_p = \sqrt{\frac{(n_a - 1) s_a^2 + (n_b - 1) s_b^2}{n_a + n_b - 2}}.

    Paired samples use the differences :math:`\delta_i = a_i - b_i`:
    :math:`d_z = \bar\delta / s_\delta` (``ddof=1``).

    When the spread is zero up to rounding (:math:`s \le 64\,\epsilon \max|x|`, e.g. a
    difference that is the same in every seed), d is undefined: it is returned as
    :math:`\pm\infty` (means differ) or NaN (means equal), with a ``RuntimeWarning``, never as
    the ratio of a difference to rounding noise.

    Parameters
    ----------
    a, b
        Samples (DataArrays, or 1-D arrays). Dims other than ``dim`` must match and are kept.
    dim
        Dimension holding the samples. May be omitted only for 1-D inputs.
    paired
        If True, ``a[i]`` and ``b[i]`` are paired (same stimulus, seed, ...).
    nan_policy
        ``"raise"`` (default) or ``"omit"`` (ignore NaN samples; NaN pairs when paired).

    Returns
    -------
    xarray.DataArray
        Effect size for every position along the other dims.

    References
    ----------
    Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences* (2nd ed.).
    Lakens, D. (2013). Calculating and reporting effect sizes. *Front. Psychol.* 4:863.
    """
    xa, xb, template, _ = _prepare_pair(a, b, dim, paired, nan_policy, "cohens_d")
    out = template.copy(data=_cohens_d_np(xa, xb, paired=paired))
    out.attrs = {"long_name": "Cohen's d_z (paired)" if paired else "Cohen's d (pooled, ddof=1)"}
    return out.rename("cohens_d_z" if paired else "cohens_d")


def rank_biserial(
    a,
    b,
    *,
    dim: Hashable | None = None,
    paired: bool = False,
    nan_policy: str = "raise",
) -> xr.DataArray:
    r"""Rank-biserial correlation between two samples along ``dim``; in [-1, 1].

    Independent samples (Glass 1966; Kerby 2014): with the Mann-Whitney statistic
    :math:`U_a` of ``a``,

    .. math:: r = \frac{2 U_a}{n_a n_b} - 1 = P(a > b) - P(a < b).

    Paired samples (matched-pairs rank-biserial, Kerby 2014): rank the non-zero absolute
    differences :math:`|a_i - b_i|`, then :math:`r = (R_+ - R_-) / (m(m+1)/2)`, with
    :math:`R_\pm` the rank sums of positive/negative differences and :math:`m` the number of
    non-zero differences (zero differences are dropped, as in Wilcoxon's signed-rank test).

    Parameters
    ----------
    a, b
        Samples (DataArrays, or 1-D arrays). Dims other than ``dim`` must match and are kept.
    dim
        Dimension holding the samples. May be omitted only for 1-D inputs.
    paired
        If True, ``a[i]`` and ``b[i]`` are paired.
    nan_policy
        ``"raise"`` (default) or ``"omit"``.

    Returns
    -------
    xarray.DataArray

    References
    ----------
    Kerby, D. S. (2014). The simple difference formula: an approach to teaching nonparametric
    correlation. *Comprehensive Psychology* 3, 11.IT.3.1.
    """
    xa, xb, template, _ = _prepare_pair(a, b, dim, paired, nan_policy, "rank_biserial")
    out = template.copy(data=_rank_biserial_np(xa, xb, paired=paired))
    out.attrs = {"long_name": "matched-pairs rank-biserial r" if paired else "rank-biserial r"}
    return out.rename("rank_biserial")
