"""Tests for neurovar.inference.effect_size against textbook formulas and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats as sps

from neurovar.inference import cohens_d, rank_biserial


def test_cohens_d_pooled_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 2, 25), rng.normal(0, 1, 18)
    sp = np.sqrt(((25 - 1) * a.var(ddof=1) + (18 - 1) * b.var(ddof=1)) / (25 + 18 - 2))
    assert float(cohens_d(a, b)) == pytest.approx((a.mean() - b.mean()) / sp)
    assert float(cohens_d(b, a)) == pytest.approx(-(a.mean() - b.mean()) / sp)


def test_paired_d_z_and_t_relation():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 30)
    b = a - 0.4 + rng.normal(0, 0.5, 30)
    d = a - b
    dz = float(cohens_d(a, b, paired=True))
    assert dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert dz * np.sqrt(30) == pytest.approx(sps.ttest_rel(a, b).statistic)


def test_rank_biserial_matches_mann_whitney_and_bounds():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.5, 1, 14), rng.normal(0, 1, 11)
    u = sps.mannwhitneyu(a, b).statistic
    assert float(rank_biserial(a, b)) == pytest.approx(2 * u / (14 * 11) - 1)
    # P(a > b) - P(a < b) by brute force
    diff = a[:, None] - b[None, :]
    assert float(rank_biserial(a, b)) == pytest.approx(np.mean(diff > 0) - np.mean(diff < 0))
    assert float(rank_biserial(b + 100, b - 100)) == 1.0


def test_matched_pairs_rank_biserial_matches_wilcoxon():
    rng = np.random.default_rng(3)
    a = rng.normal(0.3, 1, 20)
    b = rng.normal(0, 1, 20)
    b[4] = a[4]  # a zero difference is dropped, as in Wilcoxon's test
    r_plus = sps.wilcoxon(a, b, zero_method="wilcox", alternative="greater").statistic
    m = 19
    total = m * (m + 1) / 2
    expected = (r_plus - (total - r_plus)) / total
    assert float(rank_biserial(a, b, paired=True)) == pytest.approx(expected)


def test_vectorized_over_other_dims_with_nan_omit():
    rng = np.random.default_rng(4)
    a = xr.DataArray(rng.normal(size=(3, 12)), dims=("unit", "trial"), coords={"unit": [5, 6, 7]})
    b = xr.DataArray(rng.normal(size=(3, 10)), dims=("unit", "trial"), coords={"unit": [5, 6, 7]})
    d = cohens_d(a, b, dim="trial")
    assert d.dims == ("unit",) and list(d.unit.values) == [5, 6, 7]
    for i in range(3):
        assert float(d[i]) == pytest.approx(float(cohens_d(a[i].values, b[i].values)))
    a[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rank_biserial(a, b, dim="trial")
    r = rank_biserial(a, b, dim="trial", nan_policy="omit")
    ref = rank_biserial(np.delete(a[1].values, 2), b[1].values)
    assert float(r[1]) == pytest.approx(float(ref))
    d = cohens_d(a, b, dim="trial", nan_policy="omit")
    assert float(d[1]) == pytest.approx(float(cohens_d(np.delete(a[1].values, 2), b[1].values)))
