"""Multiple-comparison correction of xarray p-values (statsmodels ``multipletests``)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import xarray as xr
from statsmodels.stats.multitest import multipletests

from neurovar._validation import InvalidParameterError, check_choice, check_real

__all__ = ["correct_pvalues", "PVALUE_METHODS"]

#: Methods accepted by :func:`statsmodels.stats.multitest.multipletests`.
PVALUE_METHODS = (
    "bonferroni",
    "sidak",
    "holm-sidak",
    "holm",
    "simes-hochberg",
    "hommel",
    "fdr_bh",
    "fdr_by",
    "fdr_tsbh",
    "fdr_tsbky",
)


def _correct_1d(p: np.ndarray, method: str, alpha: float) -> np.ndarray:
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method=method)[1]
    return out


def correct_pvalues(
    p: xr.DataArray | xr.Dataset,
    *,
    method: str = "fdr_bh",
    dim: Hashable | Sequence[Hashable] | None = None,
    alpha: float = 0.05,
) -> xr.DataArray | xr.Dataset:
    r"""Adjust p-values for multiple comparisons, keeping dims, coords and NaN.

    Thin wrapper around :func:`statsmodels.stats.multitest.multipletests`. NaN p-values (e.g.
    untestable positions) stay NaN and do not count towards the number of tests :math:`m`.
    For Benjamini-Hochberg (``"fdr_bh"``) with sorted p-values :math:`p_{(1)} \le \dots \le
    p_{(m)}`,

    .. math:: \tilde p_{(i)} = \min_{k \ge i} \min\left(1, \frac{m}{k} p_{(k)}\right);

    Holm: :math:`\tilde p_{(i)} = \max_{k \le i} \min(1, (m - k + 1) p_{(k)})`.

    Parameters
    ----------
    p
        DataArray of p-values, or a Dataset with a ``p_value`` variable (as returned by
        :func:`permutation_test`).
    method
        Any ``multipletests`` method: ``"fdr_bh"`` (default), ``"holm"``, ``"bonferroni"``,
        ``"fdr_by"``, ... (see :data:`PVALUE_METHODS`).
    dim
        Which dims form one family of tests. ``None`` (default): all entries together. A dim
        name or list: correct separately for every position along the remaining dims (e.g.
        ``dim="unit"`` corrects across units, separately per layer).
    alpha
        Family-wise error rate / FDR level; only used by the two-stage methods
        (``fdr_tsbh``, ``fdr_tsbky``), whose adjusted p-values depend on it.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        A DataArray input gives a DataArray of adjusted p-values with the same dims and coords.
        A Dataset input gives a copy with ``p_value_corrected`` added.

    References
    ----------
    Benjamini, Y. & Hochberg, Y. (1995). Controlling the false discovery rate. *J. R. Stat.
    Soc. B* 57, 289-300.
    Holm, S. (1979). A simple sequentially rejective multiple test procedure. *Scand. J.
    Stat.* 6, 65-70.
    """
    owner = "correct_pvalues"
    if isinstance(p, xr.Dataset):
        if "p_value" not in p.data_vars:
            raise InvalidParameterError(
                f"The 'p' parameter of {owner} must be a DataArray of p-values or a Dataset with "
                f"a 'p_value' variable. Got a Dataset with variables {list(p.data_vars)!r}."
            )
        out = p.copy()
        out["p_value_corrected"] = correct_pvalues(
            p["p_value"], method=method, dim=dim, alpha=alpha
        )
        return out
    if not isinstance(p, xr.DataArray):
        raise InvalidParameterError(
            f"The 'p' parameter of {owner} must be an xarray.DataArray (or Dataset with "
            f"'p_value'). Got {type(p).__name__} instead; wrap arrays with xr.DataArray(p)."
        )
    check_choice(method, name="method", owner=owner, options=PVALUE_METHODS)
    alpha = check_real(alpha, name="alpha", owner=owner, low=0, high=1, low_open=True,
                       high_open=True)
    values = np.asarray(p.values, dtype=float)
    finite = values[~np.isnan(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise InvalidParameterError(
            f"The 'p' parameter of {owner} must hold p-values in [0, 1] (or NaN). Got values in "
            f"[{finite.min():g}, {finite.max():g}]."
        )
    if dim is None:
        family = list(p.dims)
    else:
        family = [dim] if isinstance(dim, str) or not isinstance(dim, Sequence) else list(dim)
        missing = [d for d in family if d not in p.dims]
        if missing:
            raise InvalidParameterError(
                f"The 'dim' parameter of {owner} must name dims of 'p'. Got {missing!r}, but "
                f"'p' has dims {tuple(p.dims)!r}."
            )
    rest = [d for d in p.dims if d not in family]
    da = p.transpose(*rest, *family)
    arr = np.asarray(da.values, dtype=float)
    n_rest = int(np.prod([da.sizes[d] for d in rest], dtype=int))
    flat = arr.reshape(n_rest, -1)
    corrected = np.stack([_correct_1d(row, method, alpha) for row in flat]).reshape(arr.shape)
    out = da.copy(data=corrected).transpose(*p.dims)
    out.attrs = {**p.attrs, "correction": method, "family_dims": ",".join(map(str, family))}
    return out.rename(f"{p.name}_corrected" if p.name else "p_value_corrected")
