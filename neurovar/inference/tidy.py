"""Turn any xarray result into a long ("tidy") pandas DataFrame for statsmodels formulas."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from neurovar._validation import InvalidParameterError

__all__ = ["to_tidy"]

#: Dims of resampling distributions; variables carrying them are left out by default.
DISTRIBUTION_DIMS = ("permutation", "resample")


def _scalar_attrs(attrs: Mapping) -> dict:
    return {
        str(k): v
        for k, v in attrs.items()
        if isinstance(v, (str, int, float, bool, np.integer, np.floating, np.bool_))
    }


def _plain_coords(ds: xr.Dataset) -> xr.Dataset:
    """Turn indexes of non-dimension coords into plain coords.

    ``to_dataframe`` silently drops a coordinate that carries its own index without being a
    dimension (``set_xindex("channel")``, as :func:`neurovar.record.record_activations` does
    so that ``da.sel(channel=3)`` works); without the index it becomes a column like any other.
    Multi-indexes of stacked dims are kept (their levels already become columns).
    """
    drop = [
        name
        for _, idx_coords in ds.xindexes.group_by_index()
        if not set(idx_coords) & set(ds.dims)
        for name in idx_coords
    ]
    return ds.drop_indexes(drop) if drop else ds


def _dataset_frame(ds: xr.Dataset, variables, exclude_dims, include_attrs) -> pd.DataFrame:
    if variables is None:
        names = [v for v in ds.data_vars if not set(ds[v].dims) & set(exclude_dims)]
        if not names and ds.data_vars:
            raise ValueError(
                "to_tidy found only variables with resampling dims "
                f"{tuple(exclude_dims)!r}; pass variables=[...] or exclude_dims=() to keep them."
            )
    else:
        names = [variables] if isinstance(variables, str) else list(variables)
        missing = [v for v in names if v not in ds.data_vars]
        if missing:
            raise InvalidParameterError(
                f"The 'variables' parameter of to_tidy must name data variables. Got {missing!r}, "
                f"available: {list(ds.data_vars)!r}."
            )
    sub = _plain_coords(ds[names])
    sub = sub.drop_dims([d for d in sub.dims if d not in set().union(*(ds[v].dims for v in names))])
    if not sub.dims:
        df = pd.DataFrame([{k: v.item() for k, v in {**sub.coords, **sub.data_vars}.items()}])
    else:
        # Dims without a coordinate get an integer index column so every row is identified.
        df = sub.to_dataframe().reset_index()
    if include_attrs:
        for k, v in _scalar_attrs(ds.attrs).items():
            if k not in df.columns:
                df[k] = v
    return df


def to_tidy(
    results,
    *,
    name: str | None = None,
    variables: str | Sequence[str] | None = None,
    exclude_dims: Sequence[str] = DISTRIBUTION_DIMS,
    include_attrs: bool = False,
    node_column: str = "node",
) -> pd.DataFrame:
    r"""Convert an xarray result to a long DataFrame: one row per element, one column per coord.

    Every dimension becomes a column (its coordinate labels, or integer positions when it has
    none), every non-dimension coordinate (``layer``, ``channel``, ``label``, ...) becomes a
    column, and every data variable becomes a value column. The result feeds straight into
    statsmodels formulas, e.g. ``fit_mixed_model(to_tidy(ds), "fano ~ noise", groups="seed")``.

    Parameters
    ----------
    results
        A DataArray, a Dataset, an :class:`xarray.DataTree` (one block of rows per node, a
        ``node`` column with the node path), or a mapping of name -> DataArray/Dataset (a
        ``node`` column with the key).
    name
        Value column name for a DataArray (default: its name, else ``"value"``).
    variables
        Dataset variables to keep (default: all without a dim in ``exclude_dims``).
    exclude_dims
        Variables carrying these dims (``null_distribution``, ``bootstrap_distribution``) are
        left out by default, since they would repeat every other value thousands of times.
    include_attrs
        Add the scalar ``attrs`` (e.g. ``alternative``, ``method``) as constant columns.
    node_column
        Name of the column identifying DataTree nodes / mapping keys.

    Returns
    -------
    pandas.DataFrame
        Long table with a default RangeIndex.

    Notes
    -----
    For a DataArray :math:`v` with dims :math:`(d_1, \dots, d_k)` the table has
    :math:`\prod_j |d_j|` rows; the row of element :math:`v[i_1, \dots, i_k]` holds
    :math:`c_j[i_j]` in the column of each dimension coordinate, :math:`c[i_j]` in the column
    of each non-dimension coordinate :math:`c` along :math:`d_j` (``channel`` and ``layer``
    along ``unit``, ``label`` along ``stimulus``; also those carrying their own index, such as
    ``channel`` after ``set_xindex``), and :math:`v[i_1, \dots, i_k]` in the value column.
    Variables of a Dataset are broadcast against each other, as in
    :meth:`xarray.Dataset.to_dataframe`.

    References
    ----------
    Wickham, H. (2014). Tidy data. *Journal of Statistical Software* 59(10), 1-23.
    """
    if isinstance(results, xr.DataArray):
        value = name or (str(results.name) if results.name is not None else "value")
        if value in results.coords or value in results.dims:
            raise InvalidParameterError(
                f"The 'name' parameter of to_tidy must differ from the dimension and coordinate "
                f"names. Got {value!r}, which is also a {'coordinate' if value in results.coords else 'dimension'}; pass another name."
            )
        ds = results.to_dataset(name=value)
        return _dataset_frame(ds, None, (), include_attrs)
    if isinstance(results, xr.Dataset):
        return _dataset_frame(results, variables, exclude_dims, include_attrs)
    items: list[tuple[str, object]]
    if isinstance(results, xr.DataTree):
        items = [
            (node.path, node.to_dataset())
            for node in results.subtree
            if node.has_data and node.data_vars
        ]
    elif isinstance(results, Mapping):
        items = [(str(k), v) for k, v in results.items()]
    else:
        raise InvalidParameterError(
            "The 'results' parameter of to_tidy must be an xarray DataArray, Dataset, DataTree, "
            f"or a mapping of them. Got {type(results).__name__} instead."
        )
    if not items:
        raise InvalidParameterError("The 'results' parameter of to_tidy holds no data.")
    frames = []
    for key, obj in items:
        df = to_tidy(
            obj,
            name=name,
            variables=variables,
            exclude_dims=exclude_dims,
            include_attrs=include_attrs,
        )
        if node_column in df.columns:
            raise InvalidParameterError(
                f"The 'node_column' parameter of to_tidy clashes with an existing column "
                f"{node_column!r}; pass another name."
            )
        df.insert(0, node_column, key)
        frames.append(df)
    return pd.concat(frames, ignore_index=True, sort=False)
