"""The xarray layout of one recorded layer: ``activation`` over (trial, stimulus, unit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..dims import STIMULUS, TRIAL, UNIT, unit_coords


def _layer_dataset(
    name: str,
    data: np.ndarray | None,
    shape: Sequence[int],
    n_trials: int,
    stim_coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    template_chunk: int = 1,
) -> xr.Dataset:
    coords: dict[str, Any] = {TRIAL: np.arange(n_trials)}
    coords.update({k: (STIMULUS, v) for k, v in stim_coords.items()})
    coords.update(unit_coords(name, shape))
    if data is None:  # lazy template for streaming to zarr
        import dask.array as da

        n_units = int(np.prod(shape))
        n_stim = len(next(iter(stim_coords.values())))
        # one zarr chunk per recording chunk of stimuli, so region writes never share a chunk
        data = da.zeros(
            (n_trials, n_stim, n_units),
            dtype=np.float32,
            chunks=(n_trials, template_chunk, n_units),
        )
    act = xr.DataArray(data, dims=(TRIAL, STIMULUS, UNIT), coords=coords, name="activation")
    act.attrs.update({"long_name": f"activation of {name}", "units": "a.u."})
    ds = act.to_dataset()
    ds.attrs.update(attrs)
    ds.attrs["layer"] = name
    return ds


def _index_units(ds: xr.Dataset) -> xr.Dataset:
    """Make ``channel`` a selectable index so ``da.sel(channel=3)`` works."""
    if "channel" in ds.coords and "channel" not in ds.xindexes:
        ds = ds.set_xindex("channel")
    return ds


def _drop_unit_index(ds: xr.Dataset) -> xr.Dataset:
    if "channel" in ds.xindexes:
        ds = ds.drop_indexes("channel")
    return ds
