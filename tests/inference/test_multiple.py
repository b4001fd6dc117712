"""Tests for neurovar.inference.multiple.correct_pvalues against statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from statsmodels.stats.multitest import multipletests

from neurovar.inference import PVALUE_METHODS, correct_pvalues, permutation_test


@pytest.fixture
def pvals():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 0.01, 6), rng.uniform(size=18)]).reshape(3, 8)
    return xr.DataArray(
        p,
        dims=("layer", "unit"),
        coords={"layer": ["a", "b", "c"], "unit": np.arange(8), "channel": ("unit", [0] * 8)},
        name="p_value",
    )


@pytest.mark.parametrize("method", PVALUE_METHODS)
def test_matches_statsmodels_exactly(pvals, method):
    out = correct_pvalues(pvals, method=method)
    ref = multipletests(pvals.values.ravel(), method=method)[1].reshape(3, 8)
    np.testing.assert_array_equal(out.values, ref)
    assert out.dims == pvals.dims
    xr.testing.assert_identical(out.coords.to_dataset(), pvals.coords.to_dataset())
    assert out.attrs["correction"] == method


def test_nan_preserved_and_not_counted(pvals):
    p = pvals.copy()
    p[0, 1] = np.nan
    p[2, 7] = np.nan
    out = correct_pvalues(p, method="fdr_bh")
    assert np.isnan(out[0, 1]) and np.isnan(out[2, 7])
    finite = ~np.isnan(p.values)
    ref = multipletests(p.values[finite], method="fdr_bh")[1]
    np.testing.assert_array_equal(out.values[finite], ref)
    assert np.isnan(correct_pvalues(p * np.nan)).all()


def test_families_along_dim(pvals):
    out = correct_pvalues(pvals.transpose("unit", "layer"), method="holm", dim="unit")
    assert out.dims == ("unit", "layer")
    for i, layer in enumerate(["a", "b", "c"]):
        ref = multipletests(pvals.values[i], method="holm")[1]
        np.testing.assert_array_equal(out.sel(layer=layer).values, ref)


def test_dataset_input_adds_corrected_variable():
    rng = np.random.default_rng(1)
    a = xr.DataArray(rng.normal(size=(12, 4)), dims=("seed", "unit"))
    res = permutation_test(
        a + np.array([0, 0, 1.5, 2]), a * 0.5, dim="seed", n_permutations=199, rng=0
    )
    out = correct_pvalues(res, method="bonferroni")
    np.testing.assert_array_equal(
        out.p_value_corrected.values, np.minimum(1, 4 * res.p_value.values)
    )
    assert "p_value_corrected" not in res


def test_errors(pvals):
    with pytest.raises(ValueError, match="'method' parameter.*'fdr'"):
        correct_pvalues(pvals, method="fdr")
    with pytest.raises(ValueError, match=r"p-values in \[0, 1\]"):
        correct_pvalues(pvals + 1)
    with pytest.raises(ValueError, match="'dim' parameter.*'seed'"):
        correct_pvalues(pvals, dim="seed")
    with pytest.raises(TypeError, match="xarray.DataArray"):
        correct_pvalues(pvals.values)
    with pytest.raises(ValueError, match="'p_value' variable"):
        correct_pvalues(pvals.to_dataset(name="p"))
