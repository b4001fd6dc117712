"""Tests of neurovar.stats.covariance: the pooled noise covariance and shrinkage."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
from sklearn.covariance import OAS, LedoitWolf

from neurovar.stats import noise_covariance


def _pooled(x: np.ndarray) -> tuple[np.ndarray, int]:
    rows, n_stim = [], 0
    for s in range(x.shape[1]):
        xs = x[:, s, :]
        xs = xs[~np.isnan(xs).any(axis=1)]
        if len(xs):
            rows.append(xs - xs.mean(axis=0))
            n_stim += 1
    return np.concatenate(rows), n_stim


def test_sample_matches_brute_force_and_states_dof(gaussian_population):
    da, _ = gaussian_population
    cov = noise_covariance(da)
    resid, n_stim = _pooled(da.values)
    dof = resid.shape[0] - n_stim
    np.testing.assert_allclose(cov.values, resid.T @ resid / dof, atol=1e-12)
    assert cov.attrs["dof"] == dof == 60 * 12 - 12
    assert cov.attrs["n_valid_trials"] == 720 and cov.attrs["n_stimuli"] == 12
    assert "n_stimuli" in cov.attrs["ddof"]
    assert cov.dims == ("unit", "unit_j") and "unit_id_j" in cov.coords


def test_recovers_true_covariance(gaussian_population):
    da, true = gaussian_population
    est = noise_covariance(da).values
    # elementwise within 4 standard errors: var(s_ij) = (s_ii s_jj + s_ij^2) / dof
    se = np.sqrt((np.outer(np.diag(true), np.diag(true)) + true**2) / (720 - 12))
    assert np.all(np.abs(est - true) <= 4 * se)


def test_unbiased_over_repetitions(make_responses):
    # With few trials per stimulus the ddof = n_stimuli correction matters: the average of
    # the estimate over repetitions equals the truth, ddof=0 would be 20% low.
    rng = np.random.default_rng(1)
    true = np.array([[2.0, 0.6], [0.6, 1.0]])
    est = [
        noise_covariance(
            make_responses(
                rng.multivariate_normal([0, 0], true, size=(5, 40)) + rng.normal(size=(1, 40, 2))
            )
        ).values
        for _ in range(200)
    ]
    np.testing.assert_allclose(np.mean(est, axis=0), true, atol=0.04)


def test_nan_trials_reduce_dof(make_responses):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 4, 3))
    x[7:, 0, :] = np.nan
    x[:, 3, :] = np.nan  # a stimulus without any valid trial
    cov = noise_covariance(make_responses(x))
    resid, n_stim = _pooled(x)
    assert n_stim == 3 and cov.attrs["dof"] == 7 + 10 + 10 - 3
    np.testing.assert_allclose(cov.values, resid.T @ resid / (27 - 3), atol=1e-12)


def test_unit_specific_nans_use_pairwise_counts(make_responses):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 3, 3))
    x[6:, 1, 2] = np.nan  # unit 2 lost two trials of stimulus 1
    cov = noise_covariance(make_responses(x))
    # pair (0, 1): all 24 trials, 3 stimuli
    r = x - np.nanmean(x, axis=0)
    np.testing.assert_allclose(cov.values[0, 1], np.sum(r[..., 0] * r[..., 1]) / 21)
    # pair (0, 2): 22 jointly valid trials, 3 stimuli
    ok = ~np.isnan(r[..., 2])
    np.testing.assert_allclose(
        cov.values[0, 2], np.sum(r[..., 0][ok] * r[..., 2][ok]) / 19, rtol=1e-12
    )
    assert cov.attrs["dof"].startswith("pairwise")


@pytest.mark.parametrize(("estimator", "cls"), [("ledoit_wolf", LedoitWolf), ("oas", OAS)])
def test_shrinkage_agrees_with_sklearn(gaussian_population, estimator, cls):
    da, _ = gaussian_population
    x = da.values.copy()
    x[50:, 2, :] = np.nan
    da = da.copy(data=x)
    cov = noise_covariance(da, estimator=estimator)
    resid, n_stim = _pooled(x)
    scale = np.sqrt(resid.shape[0] / (resid.shape[0] - n_stim))
    ref = cls(assume_centered=True).fit(resid * scale)
    np.testing.assert_allclose(cov.values, ref.covariance_, atol=1e-12)
    assert cov.attrs["shrinkage"] == pytest.approx(ref.shrinkage_)
    assert cov.attrs["dof"] == resid.shape[0] - n_stim
    # with the shrinkage set to 0 it would be the unbiased sample covariance
    sample = noise_covariance(da)
    mu = np.trace(sample.values) / sample.shape[0]
    s = ref.shrinkage_
    np.testing.assert_allclose(cov.values, (1 - s) * sample.values + s * mu * np.eye(6), atol=1e-10)


def test_shrinkage_helps_when_units_outnumber_trials(make_responses):
    rng = np.random.default_rng(4)
    n_unit = 30
    true = np.diag(np.linspace(0.5, 2.0, n_unit))
    x = rng.multivariate_normal(np.zeros(n_unit), true, size=(6, 3))
    err = {
        e: np.linalg.norm(noise_covariance(make_responses(x), estimator=e).values - true)
        for e in ("sample", "ledoit_wolf", "oas")
    }
    assert err["ledoit_wolf"] < err["sample"] and err["oas"] < err["sample"]


def test_dask_backed_input_gives_identical_results(gaussian_population):
    da, _ = gaussian_population
    x = da.values.copy()
    x[55:, 3, :] = np.nan
    x[59, 5, 1] = np.nan
    da = da.copy(data=x)
    for est in ("sample", "ledoit_wolf"):
        # the shrinkage estimators need complete trials and say how many they dropped
        ctx = (
            pytest.warns(RuntimeWarning, match="1 trials with missing values")
            if est != "sample"
            else contextlib.nullcontext()
        )
        with ctx:
            expect = noise_covariance(da, estimator=est).values
        for chunked in (da.chunk({"stimulus": 5}), da.chunk({"stimulus": 1, "unit": 2})):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                got = noise_covariance(chunked, estimator=est).values
                np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-14)
                got = noise_covariance(chunked, estimator=est, chunk_size=2).values
                np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-14)


def test_single_stimulus_and_errors(make_responses):
    rng = np.random.default_rng(5)
    da = make_responses(rng.standard_normal((20, 1, 3)))
    single = noise_covariance(da.isel(stimulus=0), stimulus_dim=None)
    np.testing.assert_allclose(single.values, np.cov(da.values[:, 0, :], rowvar=False))
    with pytest.raises(ValueError, match="'estimator' parameter of noise_covariance"):
        noise_covariance(da, estimator="shrunk")
    with pytest.raises(ValueError, match="degrees of freedom"):
        noise_covariance(da.isel(trial=[0, 1]), estimator="oas")


def test_shrinkage_leaves_out_units_without_any_value(gaussian_population):
    da, _ = gaussian_population
    x = da.values.copy()
    x[:, :, 4] = np.nan
    with pytest.warns(RuntimeWarning, match="1 of 6 units have no valid"):
        cov = noise_covariance(da.copy(data=x), estimator="ledoit_wolf")
    assert np.isnan(cov.values[4]).all() and np.isnan(cov.values[:, 4]).all()
    keep = [0, 1, 2, 3, 5]
    ref = noise_covariance(da.isel(unit=keep), estimator="ledoit_wolf")
    np.testing.assert_allclose(cov.values[np.ix_(keep, keep)], ref.values, atol=1e-12)
