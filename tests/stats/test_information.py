"""Tests of neurovar.stats.information: linear Fisher information, differential correlations."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurovar.stats import differential_correlation_strength, linear_fisher_information


def _population(rng, n_units):
    a = rng.standard_normal((n_units, n_units)) / np.sqrt(n_units)
    cov = a @ a.T + 0.5 * np.eye(n_units)
    fprime = rng.standard_normal(n_units) * 0.4
    return cov, fprime


def _draw(rng, chol, mean, n_trials):
    x = rng.standard_normal((n_trials, chol.shape[0])) @ chol.T + mean
    return xr.DataArray(x, dims=("trial", "unit"))


def test_bias_corrected_is_unbiased_and_naive_is_biased_upward():
    rng = np.random.default_rng(0)
    n_units, n_trials, ds = 15, 40, 0.5
    cov, fp = _population(rng, n_units)
    chol = np.linalg.cholesky(cov)
    true_full = fp @ np.linalg.solve(cov, fp)
    true_shuffled = np.sum(fp**2 / np.diag(cov))
    full, naive, shuf, shuf_naive = [], [], [], []
    for _ in range(300):
        a = _draw(rng, chol, 0.0, n_trials)
        b = _draw(rng, chol, fp * ds, n_trials)
        i_bc = linear_fisher_information(a, b, delta_s=ds)
        full.append(float(i_bc))
        naive.append(float(linear_fisher_information(a, b, delta_s=ds, bias_corrected=False)))
        assert i_bc.attrs["naive"] == pytest.approx(naive[-1])
        i_sh = linear_fisher_information(a, b, delta_s=ds, shuffled=True)
        shuf.append(float(i_sh))
        shuf_naive.append(i_sh.attrs["naive"])
    full, naive, shuf, shuf_naive = map(np.asarray, (full, naive, shuf, shuf_naive))

    def se(v):
        return v.std(ddof=1) / np.sqrt(v.size)

    # unbiased: the mean is within 3.5 standard errors of the truth
    assert abs(full.mean() - true_full) < 3.5 * se(full)
    assert abs(shuf.mean() - true_shuffled) < 3.5 * se(shuf)
    # naive: biased upward, far beyond sampling error; expected bias from the formula
    expect_naive = (
        (2 * n_trials - 2)
        / (2 * n_trials - n_units - 3)
        * (true_full + 2 * n_units / (n_trials * ds**2))
    )
    assert naive.mean() - true_full > 10 * se(naive)
    assert abs(naive.mean() - expect_naive) < 3.5 * se(naive)
    assert shuf_naive.mean() - true_shuffled > 10 * se(shuf_naive)


def test_matches_direct_formula_with_unequal_trials():
    rng = np.random.default_rng(1)
    xa = rng.standard_normal((30, 4))
    xb = rng.standard_normal((25, 4)) + 0.5
    ds = 2.0
    fp = (xb.mean(0) - xa.mean(0)) / ds
    ra, rb = xa - xa.mean(0), xb - xb.mean(0)
    cov = (ra.T @ ra + rb.T @ rb) / 53
    naive = fp @ np.linalg.inv(cov) @ fp
    got = linear_fisher_information(
        xr.DataArray(xa, dims=("trial", "unit")),
        xr.DataArray(xb, dims=("trial", "unit")),
        delta_s=ds,
    )
    expect = naive * (53 - 4 - 1) / 53 - 4 * (1 / 30 + 1 / 25) / ds**2
    assert float(got) == pytest.approx(expect)
    assert got.attrs["n_trials_a"] == 30 and got.attrs["n_trials_b"] == 25


def test_nan_trials_are_dropped():
    rng = np.random.default_rng(2)
    xa = rng.standard_normal((12, 3))
    xb = rng.standard_normal((12, 3)) + 1
    padded = np.concatenate([xa, np.full((3, 3), np.nan)])
    a = xr.DataArray(xa, dims=("trial", "unit"))
    b = xr.DataArray(xb, dims=("trial", "unit"))
    got = linear_fisher_information(xr.DataArray(padded, dims=("trial", "unit")), b, delta_s=1.0)
    assert float(got) == pytest.approx(float(linear_fisher_information(a, b, delta_s=1.0)))


def test_errors_name_the_problem():
    rng = np.random.default_rng(3)
    a = xr.DataArray(rng.standard_normal((4, 8)), dims=("trial", "unit"))
    b = xr.DataArray(rng.standard_normal((4, 8)), dims=("trial", "unit"))
    with pytest.raises(ValueError, match="more trials than units"):
        linear_fisher_information(a, b, delta_s=1.0)
    # invertible (nu = N) but too few trials for the bias correction. (b5 is an independent
    # draw: with b5 = a5 + 1 the pooled covariance has rank 4 < 8 and is not invertible.)
    a5 = xr.DataArray(rng.standard_normal((5, 8)), dims=("trial", "unit"))
    b5 = xr.DataArray(rng.standard_normal((5, 8)) + 1, dims=("trial", "unit"))
    with pytest.raises(ValueError, match=r"needs T_a \+ T_b > N \+ 3 = 11"):
        linear_fisher_information(a5, b5, delta_s=1.0)
    assert np.isfinite(float(linear_fisher_information(a5, b5, delta_s=1.0, bias_corrected=False)))
    with pytest.raises(ValueError, match="singular"):
        linear_fisher_information(a5, a5 + 1, delta_s=1.0, bias_corrected=False)
    with pytest.raises(ValueError, match="'delta_s' parameter"):
        linear_fisher_information(a, b, delta_s=0.0)
    with pytest.raises(ValueError, match="exactly the dims"):
        linear_fisher_information(a.expand_dims(stimulus=1), b, delta_s=1.0)
    # the shuffled variant does not invert the covariance
    assert np.isfinite(float(linear_fisher_information(a, b, delta_s=1.0, shuffled=True)))


def test_differential_correlation_strength():
    rng = np.random.default_rng(4)
    n_units, n_trials = 10, 400
    fp = rng.standard_normal(n_units)
    u = fp / np.linalg.norm(fp)
    for eps, tol in ((0.0, 0.02), (2.0, 0.03)):
        cov = np.eye(n_units) + eps * np.outer(u, u)
        true_share = (1 + eps) / (n_units + eps)
        chol = np.linalg.cholesky(cov)
        shares, naive = [], []
        for _ in range(40):
            a = _draw(rng, chol, 0.0, n_trials)
            b = _draw(rng, chol, 0.3 * fp, n_trials)
            shares.append(float(differential_correlation_strength(a, b).share))
            naive.append(float(differential_correlation_strength(a, b, bias_corrected=False).share))
        assert np.mean(shares) == pytest.approx(true_share, abs=tol)
        # the naive share is pulled towards isotropy (1/N) by the noise in the direction
        assert abs(np.mean(naive) - 1 / n_units) < abs(true_share - 1 / n_units) + 1e-3
        if eps > 0:
            assert abs(np.mean(naive) - true_share) > 2 * abs(np.mean(shares) - true_share)
    out = differential_correlation_strength(a, b)
    assert float(out.relative_to_isotropic) == pytest.approx(float(out.share) * n_units)


def test_zero_variance_units_warn_instead_of_crashing():
    rng = np.random.default_rng(5)
    xa = rng.standard_normal((30, 3))
    xb = rng.standard_normal((30, 3)) + 0.5
    a = xr.DataArray(xa, dims=("trial", "unit"))
    b = xr.DataArray(xb, dims=("trial", "unit"))
    # a dead unit (constant 0.1 in both: no variance, no mean difference) carries no
    # information; it is left out instead of making the covariance singular
    dead = 0.1 * np.ones((30, 1))
    a4 = xr.DataArray(np.hstack([xa, dead]), dims=("trial", "unit"))
    b4 = xr.DataArray(np.hstack([xb, dead]), dims=("trial", "unit"))
    for shuffled in (False, True):
        with pytest.warns(RuntimeWarning, match="1 of 4 units have zero noise variance"):
            got = linear_fisher_information(a4, b4, delta_s=1.0, shuffled=shuffled)
        ref = linear_fisher_information(a, b, delta_s=1.0, shuffled=shuffled)
        assert float(got) == pytest.approx(float(ref))
        assert got.attrs["n_units"] == 3
    # a noiseless unit whose mean changes makes the information unbounded: NaN, said so
    b_step = xr.DataArray(np.hstack([xb, dead + 1.0]), dims=("trial", "unit"))
    with pytest.warns(RuntimeWarning, match="1 of 4 units .* unbounded"):
        got = linear_fisher_information(a4, b_step, delta_s=1.0)
    assert np.isnan(float(got))
    # exactly collinear units: a clear error instead of LinAlgError
    twin = xr.DataArray(np.hstack([xa, xa[:, :1]]), dims=("trial", "unit"))
    twin_b = xr.DataArray(np.hstack([xb, xb[:, :1]]), dims=("trial", "unit"))
    with pytest.raises(ValueError, match=r"singular \(rank 3 < 4 units"):
        linear_fisher_information(twin, twin_b, delta_s=1.0)
    assert np.isfinite(float(linear_fisher_information(twin, twin_b, delta_s=1.0, shuffled=True)))
