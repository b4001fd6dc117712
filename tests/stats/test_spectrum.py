"""Tests of neurovar.stats.spectrum: eigenspectrum, participation ratio, power law."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurovar.stats import eigenspectrum, participation_ratio, power_law_exponent


def _cov(eigvals: np.ndarray, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((eigvals.size, eigvals.size)))
    c = q @ np.diag(eigvals) @ q.T
    return xr.DataArray(
        (c + c.T) / 2,
        dims=("unit", "unit_j"),
        coords={
            "unit_id": ("unit", np.arange(eigvals.size)),
            "unit_id_j": ("unit_j", np.arange(eigvals.size)),
        },
    )


def test_eigenspectrum_recovers_eigenvalues_largest_first():
    lam = np.array([5.0, 0.1, 3.0, 1.0, 2.0])
    spec = eigenspectrum(_cov(lam))
    assert spec.dims == ("component",)
    np.testing.assert_allclose(spec.values, np.sort(lam)[::-1], atol=1e-12)
    np.testing.assert_array_equal(spec.component.values, np.arange(1, 6))


def test_eigenspectrum_keeps_extra_dims_and_works_on_dask():
    stacked = xr.concat([_cov(np.arange(1.0, 5)), _cov(np.arange(2.0, 6), seed=1)], dim="layer")
    spec = eigenspectrum(stacked.chunk({"layer": 1}))
    assert spec.chunks is not None
    np.testing.assert_allclose(spec.values, [[4, 3, 2, 1], [5, 4, 3, 2]], atol=1e-12)


def test_participation_ratio_limits_and_formula():
    n = 8
    np.testing.assert_allclose(float(participation_ratio(_cov(np.ones(n)))), n)
    one_dim = np.zeros(n)
    one_dim[0] = 3.0
    np.testing.assert_allclose(float(participation_ratio(_cov(one_dim))), 1.0)
    lam = np.array([4.0, 2.0, 1.0, 0.5])
    np.testing.assert_allclose(
        float(participation_ratio(_cov(lam))), lam.sum() ** 2 / np.sum(lam**2)
    )


def test_participation_ratio_zero_matrix_warns():
    with pytest.warns(RuntimeWarning, match="1 of 1 covariance matrices"):
        pr = participation_ratio(_cov(np.zeros(3)))
    assert np.isnan(float(pr))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_power_law_exponent_of_exact_power_law(alpha):
    lam = np.arange(1, 41, dtype=float) ** -alpha
    np.testing.assert_allclose(float(power_law_exponent(_cov(lam))), alpha, rtol=1e-6)
    spec = eigenspectrum(_cov(lam))
    np.testing.assert_allclose(
        float(power_law_exponent(spec, min_rank=5, max_rank=30)), alpha, rtol=1e-6
    )


def test_power_law_range_matters_and_errors():
    lam = np.concatenate([np.arange(1, 11.0) ** -1.0, 0.1 * np.arange(11, 31.0) ** -3.0 * 11**2])
    full = float(power_law_exponent(_cov(lam), min_rank=1, max_rank=10))
    tail = float(power_law_exponent(_cov(lam), min_rank=12))
    np.testing.assert_allclose(full, 1.0, rtol=1e-6)
    np.testing.assert_allclose(tail, 3.0, rtol=1e-6)
    with pytest.raises(ValueError, match="'max_rank' parameter of power_law_exponent"):
        power_law_exponent(_cov(lam), min_rank=5, max_rank=3)
    with pytest.raises(ValueError, match="square"):
        eigenspectrum(_cov(lam).isel(unit_j=slice(0, 3)))
    with pytest.raises(ValueError, match="unit_j"):
        participation_ratio(_cov(lam).rename(unit_j="other"))


def test_nan_units_are_left_out_with_a_warning_instead_of_crashing():
    # A noise correlation matrix with two zero-variance units (NaN rows and columns) used to
    # raise LinAlgError in eigvalsh; now the spectrum is that of the other units.
    c = _cov(np.array([4.0, 2.0, 1.0, 0.5, 0.25])).values
    sub = c[np.ix_([0, 2, 4], [0, 2, 4])]
    c[[1, 3], :] = np.nan
    c[:, [1, 3]] = np.nan
    cov = xr.DataArray(c, dims=("unit", "unit_j"))
    with pytest.warns(RuntimeWarning, match="2 of 5 units have a non-finite variance"):
        spec = eigenspectrum(cov)
    np.testing.assert_allclose(spec.values[:3], np.linalg.eigvalsh(sub)[::-1], atol=1e-12)
    assert np.isnan(spec.values[3:]).all()
    with pytest.warns(RuntimeWarning, match="2 of 5 units"):
        pr = float(participation_ratio(cov))
    np.testing.assert_allclose(pr, np.trace(sub) ** 2 / np.sum(sub**2))
    with pytest.warns(RuntimeWarning, match="2 of 5 units"):
        assert np.isfinite(float(power_law_exponent(cov)))
    # a NaN between two units that do have a variance makes the whole result NaN, said so
    c2 = _cov(np.arange(1.0, 4)).values
    c2[0, 1] = c2[1, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="1 of 1 matrices have non-finite entries"):
        assert np.isnan(eigenspectrum(xr.DataArray(c2, dims=("unit", "unit_j"))).values).all()
    with pytest.warns(RuntimeWarning, match="1 of 1 matrices have non-finite entries"):
        assert np.isnan(float(participation_ratio(xr.DataArray(c2, dims=("unit", "unit_j")))))


def test_dead_units_and_numerically_zero_eigenvalues_never_enter_the_fit():
    # A layer with dead (constant-zero) ReLU units: their rows and columns are zero, and a
    # covariance computed in floating point gives eigenvalues like 1e-64 for them. Those used
    # to sit in the power-law fit and dragged the exponent far from the live units' spectrum.
    alpha = 1.0
    live = np.arange(1, 21, dtype=float) ** -alpha
    c = _cov(live).values
    n_dead = 10
    full = np.zeros((30, 30))
    full[:20, :20] = c
    full[20:, 20:] = 1e-64 * np.eye(n_dead)  # rounding-level variance of dead units
    cov = xr.DataArray(full, dims=("unit", "unit_j"))
    with pytest.warns(RuntimeWarning, match="10 of 30 units have zero variance"):
        spec = eigenspectrum(cov)
    np.testing.assert_allclose(spec.values[:20], live, rtol=1e-8)
    assert np.isnan(spec.values[20:]).all()
    with pytest.warns(RuntimeWarning, match="10 of 30 units have zero variance"):
        np.testing.assert_allclose(float(power_law_exponent(cov)), alpha, rtol=1e-6)
    # a spectrum given directly: numerically zero eigenvalues are left out, with a count
    lam = np.concatenate([live, np.full(5, 1e-60)])
    spec = xr.DataArray(lam, dims=("component",))
    with pytest.warns(RuntimeWarning, match="5 of 25 eigenvalues in the fitted rank range"):
        np.testing.assert_allclose(float(power_law_exponent(spec)), alpha, rtol=1e-6)
