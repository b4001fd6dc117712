"""Tests for neurovar.inference.tidy.to_tidy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from neurovar.inference import permutation_test, to_tidy


def _responses():
    rng = np.random.default_rng(0)
    return xr.DataArray(
        rng.normal(size=(2, 3, 4)),
        dims=("trial", "stimulus", "unit"),
        coords={
            "stimulus_id": ("stimulus", ["s0", "s1", "s2"]),
            "label": ("stimulus", [3, 1, 3]),
            "unit": np.arange(4),
            "channel": ("unit", [0, 0, 1, 1]),
            "layer": ("unit", ["conv"] * 4),
        },
        name="activation",
    )


def test_dataarray_one_row_per_element_one_column_per_coord():
    da = _responses()
    df = to_tidy(da)
    assert len(df) == da.size
    assert {
        "trial",
        "stimulus",
        "unit",
        "stimulus_id",
        "label",
        "channel",
        "layer",
        "activation",
    } <= set(df.columns)
    row = df[(df.trial == 1) & (df.stimulus == 2) & (df.unit == 3)]
    assert float(row.activation.iloc[0]) == float(da[1, 2, 3])
    assert row.stimulus_id.iloc[0] == "s2" and row.channel.iloc[0] == 1
    assert isinstance(df.index, pd.RangeIndex)
    assert "value" in to_tidy(da.rename(None)).columns
    with pytest.raises(ValueError, match="'name' parameter"):
        to_tidy(da, name="label")


def test_dataset_drops_resampling_variables_and_adds_attrs():
    rng = np.random.default_rng(1)
    a = xr.DataArray(
        rng.normal(size=(10, 3)), dims=("seed", "layer"), coords={"layer": ["l1", "l2", "l3"]}
    )
    res = permutation_test(a + 1, a, dim="seed", n_permutations=99, rng=0)
    df = to_tidy(res, include_attrs=True)
    assert len(df) == 3 and "null_distribution" not in df.columns
    assert {"layer", "statistic", "p_value", "cohens_d", "alternative"} <= set(df.columns)
    np.testing.assert_allclose(
        df.set_index("layer").loc["l2", "p_value"], float(res.p_value.sel(layer="l2"))
    )
    full = to_tidy(res, variables=["null_distribution"])
    assert len(full) == 3 * 99 and "permutation" in full.columns
    with pytest.raises(ValueError, match="'variables' parameter"):
        to_tidy(res, variables=["nope"])


def test_scalar_tree_and_mapping():
    da = _responses()
    scalar = to_tidy(da.isel(trial=0, stimulus=0, unit=0))
    assert len(scalar) == 1 and scalar.activation.iloc[0] == float(da[0, 0, 0])
    tree = xr.DataTree.from_dict({"conv1": da.to_dataset(), "fc": da.isel(unit=[0]).to_dataset()})
    df = to_tidy(tree)
    assert sorted(df.node.unique()) == ["/conv1", "/fc"]
    assert len(df) == da.size + da.size // 4
    mapping = to_tidy({"ann": da.mean("trial"), "v4": da.mean("trial") * 2})
    assert list(mapping.node.unique()) == ["ann", "v4"]
    ann = mapping[mapping.node == "ann"].activation.to_numpy()
    v4 = mapping[mapping.node == "v4"].activation.to_numpy()
    np.testing.assert_allclose(v4, 2 * ann)
    with pytest.raises(TypeError, match="'results' parameter"):
        to_tidy([1, 2])


def _recording(shift=0.0, seed=0):
    # like one layer of neurovar.record.record_activations: `channel` is a non-dimension index
    # along `unit` (set_xindex) so that `da.sel(channel=1)` works
    rng = np.random.default_rng(seed)
    da = xr.DataArray(
        rng.normal(shift, 1.0, (6, 3, 8)),
        dims=("trial", "stimulus", "unit"),
        coords={
            "trial": np.arange(6),
            "stimulus_id": ("stimulus", [10, 11, 12]),
            "label": ("stimulus", [3, 1, 3]),
            "unit_id": ("unit", np.arange(8)),
            "layer": ("unit", ["conv1"] * 8),
            "channel": ("unit", np.repeat([0, 1], 4)),
            "y": ("unit", np.tile([0, 0, 1, 1], 2)),
            "x": ("unit", np.tile([0, 1], 4)),
        },
        name="activation",
    )
    return da.to_dataset().set_xindex("channel")["activation"]


def test_recording_with_channel_index_keeps_every_coordinate_column():
    da = _recording()
    assert "channel" in da.xindexes and "channel" not in da.dims
    expected = {"trial", "stimulus", "unit", "stimulus_id", "label", "unit_id", "layer", "y", "x"}
    for df in (
        to_tidy(da),
        to_tidy(da.to_dataset()),
        to_tidy(xr.DataTree.from_dict({"conv1": da.to_dataset()})),
    ):
        assert expected | {"channel", "activation"} <= set(df.columns), df.columns
        assert len(df) == da.size
        np.testing.assert_array_equal(df.channel.to_numpy(), np.tile(da.channel.values, 18))
    # a test along trials keeps stimulus and unit coords, channel included
    res = permutation_test(_recording(1.0, 1), da, dim="trial", n_permutations=99, rng=0)
    assert "channel" in res.xindexes
    df = to_tidy(res)
    assert len(df) == 3 * 8 and {"label", "stimulus_id", "channel", "p_value"} <= set(df.columns)
    row = df[(df.stimulus == 2) & (df.unit == 5)].iloc[0]
    assert row.channel == 1 and row.label == 3
    assert row.p_value == float(res.p_value.isel(stimulus=2, unit=5))
    # the DataArray is not modified (its channel index is still selectable)
    assert da.sel(channel=1).sizes["unit"] == 4


def test_value_name_clashing_with_a_dim_without_coordinate():
    da = xr.DataArray(np.ones((2, 3)), dims=("seed", "unit"), name="unit")
    with pytest.raises(ValueError, match="'name' parameter.*'unit', which is also a dimension"):
        to_tidy(da)
    assert list(to_tidy(da, name="fano").columns) == ["seed", "unit", "fano"]
