"""The estimator conventions the docstrings state against numpy, pandas and scikit-learn.

Where neurovar and a well-known peer divide by different numbers (n - 1 vs n), the docstring
says so, and these tests hold the docstring to it. Elephant's Fano factor is checked in
test_variability.py (it needs the 'peers' extra).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf

from neurovar.stats import (
    fano_factor,
    mean_matched_fano_factor,
    noise_correlation,
    noise_covariance,
    signal_covariance,
)


def _one_stimulus(rng, n_trials=30, n_units=5):
    mix = rng.normal(size=(n_units, n_units))
    return rng.normal(size=(n_trials, 1, n_units)) @ mix + 3.0


def test_noise_covariance_is_numpy_cov_and_n_minus_1_over_n_of_sklearn(make_responses):
    rng = np.random.default_rng(0)
    x = _one_stimulus(rng)
    n = x.shape[0]
    flat = x[:, 0, :]
    ours = noise_covariance(make_responses(x)).values
    np.testing.assert_allclose(ours, np.cov(flat, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(ours * (n - 1) / n, EmpiricalCovariance().fit(flat).covariance_,
                               rtol=1e-12)
    for name, est in (("ledoit_wolf", LedoitWolf), ("oas", OAS)):
        shrunk = noise_covariance(make_responses(x), estimator=name)
        fitted = est().fit(flat)
        np.testing.assert_allclose(shrunk.values * (n - 1) / n, fitted.covariance_, rtol=1e-10)
        np.testing.assert_allclose(shrunk.attrs["shrinkage"], fitted.shrinkage_, rtol=1e-10)


def test_noise_correlation_is_numpy_and_pandas_correlation(make_responses):
    rng = np.random.default_rng(1)
    x = _one_stimulus(rng)
    ours = noise_correlation(make_responses(x)).values
    np.testing.assert_allclose(ours, np.corrcoef(x[:, 0, :], rowvar=False), atol=1e-12)
    np.testing.assert_allclose(ours, pd.DataFrame(x[:, 0, :]).corr().to_numpy(), atol=1e-12)


def test_noise_correlation_with_equal_repeats_does_not_depend_on_ddof(make_responses):
    # pooled z-scores with ddof=0 instead of 1 scale every stimulus alike: same matrix
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 4, 3)) @ rng.normal(size=(3, 3)) + rng.normal(size=(1, 4, 3)) * 4
    for ddof in (0, 1):
        r = x - x.mean(axis=0)
        z = (r / r.std(axis=0, ddof=ddof)).reshape(-1, 3)
        expect = (z.T @ z) / np.sqrt(np.outer((z * z).sum(0), (z * z).sum(0)))
        np.testing.assert_allclose(noise_correlation(make_responses(x)).values, expect,
                                   atol=1e-12)


def test_signal_covariance_ddof_matches_numpy_and_sklearn(make_responses):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 8, 4)) + rng.normal(size=(1, 8, 4)) * 3
    means = x.mean(axis=0)
    np.testing.assert_allclose(signal_covariance(make_responses(x)).values,
                               np.cov(means, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(signal_covariance(make_responses(x), ddof=0).values,
                               EmpiricalCovariance().fit(means).covariance_, rtol=1e-12)


@pytest.mark.parametrize("ddof", [0, 1])
def test_fano_factor_ddof_is_numpy_var_ddof(make_responses, ddof):
    rng = np.random.default_rng(4)
    x = rng.poisson(4.0, size=(9, 3, 2)).astype(float) + 1.0
    ff = fano_factor(make_responses(x), ddof=ddof)
    np.testing.assert_allclose(ff.values, x.var(axis=0, ddof=ddof) / x.mean(axis=0), rtol=1e-12)
    assert ff.attrs["ddof"] == ddof


def test_mean_matched_fano_factor_ddof_scales_the_slope(make_responses):
    # same points, variance / (n - ddof): the raw slope moves by n/(n-1) between ddof 1 and 0
    rng = np.random.default_rng(5)
    n = 20
    x = rng.poisson(rng.uniform(2, 30, size=(1, 30, 10)), size=(n, 30, 10)).astype(float)
    a = mean_matched_fano_factor(make_responses(x), ddof=1, rng=0, n_resamples=3)
    b = mean_matched_fano_factor(make_responses(x), ddof=0, rng=0, n_resamples=3)
    np.testing.assert_allclose(a["fano_factor_raw"].values * (n - 1) / n,
                               b["fano_factor_raw"].values, rtol=1e-10)
    assert a.attrs["ddof"] == 1 and b.attrs["ddof"] == 0
