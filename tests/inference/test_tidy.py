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
