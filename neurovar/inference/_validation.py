"""Shared input checks for :mod:`neurovar.inference` (clear, sklearn-style errors): the rules
of this package (data as a DataArray, the tested dim, NaN policy, model tables). Generic checks
(ints, reals, choices, confidence levels) are called from :mod:`neurovar._validation`
directly."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from neurovar._validation import InvalidParameterError, check_choice

ALTERNATIVES = ("two-sided", "less", "greater")
NAN_POLICIES = ("raise", "omit")
DEFAULT_SAMPLE_DIM = "sample"
#: Default size of one vectorized resampling step, in values (2e7 float64 = 160 MB).
MAX_VALUES_PER_STEP = 2e7


def default_batch(batch: int | None, values_per_resample: int, n_resamples: int) -> int:
    """``batch`` if given, else as many resamples as fit in :data:`MAX_VALUES_PER_STEP`.

    scipy's ``bootstrap`` and ``permutation_test`` evaluate every resample at once when
    ``batch=None`` (``n_resamples`` x data size values: 80 GB for 1000 units x 1000 trials x
    9999 resamples). Batching does not change the random draws.
    """
    if batch is not None:
        return batch
    return max(1, min(n_resamples, int(MAX_VALUES_PER_STEP // max(1, values_per_resample))))


def as_dataarray(x: Any, *, name: str) -> xr.DataArray:
    """Return ``x`` as a DataArray; a 1-D array-like becomes dims ``("sample",)``."""
    if isinstance(x, xr.DataArray):
        return x
    if isinstance(x, xr.Dataset):
        raise InvalidParameterError(
            f"The '{name}' parameter must be an xarray.DataArray, got a Dataset with variables "
            f"{list(x.data_vars)!r}; select one, e.g. ds[{next(iter(x.data_vars), 'var')!r}]."
        )
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"The '{name}' parameter must be an xarray.DataArray or a 1-D array of numbers. "
            f"Got {type(x).__name__} instead."
        ) from None
    if arr.ndim != 1:
        raise InvalidParameterError(
            f"The '{name}' parameter must be an xarray.DataArray with named dims, or a 1-D "
            f"array. Got a numpy array with shape {arr.shape}; wrap it as "
            f"xr.DataArray(values, dims=(...)) so the tested dim has a name."
        )
    return xr.DataArray(arr, dims=(DEFAULT_SAMPLE_DIM,))


def resolve_dim(dim: Hashable | None, arrays: Sequence[xr.DataArray], *, names: Sequence[str]):
    """Return the dim to reduce over; ``None`` is allowed only when every array is 1-D."""
    if dim is None:
        dims = {a.dims for a in arrays}
        if all(a.ndim == 1 for a in arrays) and len(dims) == 1:
            return arrays[0].dims[0]
        raise InvalidParameterError(
            "The 'dim' parameter must name the dimension that holds the samples "
            "(e.g. 'trial', 'stimulus', 'unit', 'seed'). Got None, but "
            + ", ".join(f"'{n}' has dims {a.dims!r}" for n, a in zip(names, arrays, strict=True))
            + "."
        )
    for n, a in zip(names, arrays, strict=True):
        if dim not in a.dims:
            raise InvalidParameterError(
                f"The 'dim' parameter must be a dimension of '{n}'. Got {dim!r}, but '{n}' "
                f"has dims {a.dims!r}."
            )
    return dim


def check_nan(values: np.ndarray, *, name: str, nan_policy: str, owner: str) -> bool:
    """Raise on NaN unless ``nan_policy == 'omit'``; return whether NaN are present."""
    check_choice(nan_policy, name="nan_policy", owner=owner, options=NAN_POLICIES)
    has_nan = bool(np.isnan(values).any())
    if has_nan and nan_policy == "raise":
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} contains {int(np.isnan(values).sum())} NaN "
            "value(s). Remove them, or pass nan_policy='omit' to drop NaN samples "
            "(pairs, for paired tests) separately for every tested position."
        )
    return has_nan


def numeric_values(da: xr.DataArray, *, name: str) -> np.ndarray:
    values = np.asarray(da.values)
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
        values.dtype, np.complexfloating
    ):
        raise InvalidParameterError(
            f"The '{name}' parameter must hold real numbers. Got dtype {values.dtype} instead."
        )
    return values.astype(float, copy=False)


def check_model_table(df: Any, formula: Any, groups: Any, *, owner: str) -> None:
    """The shared checks of the model fitters: a DataFrame, a patsy formula ``'y ~ x'`` and a
    ``groups`` column of it (:func:`fit_mixed_model`, :func:`fit_binomial_model`)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise InvalidParameterError(
            f"The 'df' parameter of {owner} must be a pandas DataFrame (e.g. from to_tidy). "
            f"Got {type(df).__name__} instead."
        )
    if not isinstance(formula, str) or "~" not in formula:
        raise InvalidParameterError(
            f"The 'formula' parameter of {owner} must be a patsy formula like 'y ~ x'. "
            f"Got {formula!r} instead."
        )
    if not isinstance(groups, str) or groups not in df.columns:
        raise InvalidParameterError(
            f"The 'groups' parameter of {owner} must be a column of 'df'. Got {groups!r}; "
            f"columns are {list(df.columns)!r}."
        )
