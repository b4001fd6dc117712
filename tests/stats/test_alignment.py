"""Tests of neurovar.stats.alignment: variance along directions, alignment, angles."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurovar.stats import alignment_index, principal_angles, variance_along


def _as_cov(c: np.ndarray) -> xr.DataArray:
    return xr.DataArray(c, dims=("unit", "unit_j"))


def test_isotropic_noise_gives_one_along_any_direction():
    rng = np.random.default_rng(0)
    dirs = xr.DataArray(rng.standard_normal((5, 7)), dims=("direction", "unit"))
    v = variance_along(_as_cov(3.0 * np.eye(7)), dirs)
    assert v.dims == ("direction",)
    np.testing.assert_allclose(v.values, 1.0)


def test_variance_along_structured_directions():
    n = 6
    d = np.zeros(n)
    d[0] = 2.0  # not unit length on purpose
    c = np.eye(n) * 0.5 + 4.0 * np.outer(np.eye(n)[0], np.eye(n)[0])
    mean_var = np.trace(c) / n
    dirs = xr.DataArray(
        np.stack([d, np.eye(n)[1]]),
        dims=("direction", "unit"),
        coords={"direction": ["adv", "orth"]},
    )
    v = variance_along(_as_cov(c), dirs)
    np.testing.assert_allclose(v.sel(direction="adv"), 4.5 / mean_var)
    np.testing.assert_allclose(v.sel(direction="orth"), 0.5 / mean_var)
    assert v.attrs["mean_variance"] == pytest.approx(mean_var)


def test_variance_along_zero_direction_and_mismatch():
    c = _as_cov(np.eye(3))
    with pytest.warns(RuntimeWarning, match="1 of 2 directions"):
        v = variance_along(c, xr.DataArray([[0, 0, 0], [1, 0, 0.0]], dims=("direction", "unit")))
    assert np.isnan(v.values[0]) and v.values[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number of units"):
        variance_along(c, xr.DataArray(np.ones(4), dims="unit"))


def test_alignment_index_identical_orthogonal_and_chance():
    n, k = 10, 2
    lam_a = np.array([5.0, 4.0] + [0.1] * (n - 2))
    a = np.diag(lam_a)
    b_same = np.diag(lam_a)
    lam_b = np.array([0.1, 0.1, 5.0, 4.0] + [0.05] * (n - 4))
    b_orth = np.diag(lam_b)
    same = alignment_index(_as_cov(a), _as_cov(b_same), n_components=k)
    orth = alignment_index(_as_cov(a), _as_cov(b_orth), n_components=k)
    assert float(same.alignment_index) == pytest.approx(1.0)
    assert float(orth.alignment_index) == pytest.approx(0.2 / 9.0)
    chance = (k / n) * lam_a.sum() / 9.0
    assert float(same.chance_level) == pytest.approx(chance)
    assert float(same.relative_to_chance) == pytest.approx(1.0 / chance)
    assert float(same.fraction_of_variance) == pytest.approx(9.0 / lam_a.sum())


def test_alignment_index_random_subspace_averages_to_chance():
    rng = np.random.default_rng(1)
    n, k = 12, 3
    a = np.diag(np.linspace(3, 0.1, n))
    vals = []
    for _ in range(300):
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        b = q @ np.diag(np.linspace(3, 0.1, n)) @ q.T
        out = alignment_index(_as_cov(a), _as_cov(b), n_components=k)
        vals.append(float(out.alignment_index))
    assert np.mean(vals) == pytest.approx(float(out.chance_level), rel=0.05)


def test_alignment_index_bad_n_components():
    c = _as_cov(np.eye(3))
    with pytest.raises(ValueError, match="'n_components' parameter of alignment_index"):
        alignment_index(c, c, n_components=4)
    with pytest.raises(ValueError, match="'n_components'"):
        alignment_index(c, c, n_components=0)


def test_principal_angles_known_configuration():
    e = np.eye(4)
    a = xr.DataArray(np.stack([e[0], e[1]], axis=1), dims=("unit", "component"))
    theta = 0.3
    b_vecs = np.stack([e[0], np.cos(theta) * e[1] + np.sin(theta) * e[2]], axis=1) * 3.0
    b = xr.DataArray(b_vecs, dims=("unit", "component"))
    ang = principal_angles(a, b)
    assert ang.dims == ("angle",)
    np.testing.assert_allclose(ang.values, [0.0, theta], atol=1e-10)
    with pytest.raises(ValueError, match="linearly independent"):
        principal_angles(
            a, xr.DataArray(np.stack([e[0], e[0]], axis=1), dims=("unit", "component"))
        )


def test_zero_or_nan_covariance_warns_instead_of_silent_nan():
    dirs = xr.DataArray(np.eye(3)[:2], dims=("direction", "unit"))
    with pytest.warns(RuntimeWarning, match="no positive total variance"):
        v = variance_along(_as_cov(np.zeros((3, 3))), dirs)
    assert np.isnan(v.values).all()
    # a unit without valid trials (NaN row/column) is left out of cov, N and the directions
    c = np.diag([2.0, 1.0, 3.0])
    c[2, :] = c[:, 2] = np.nan
    d = xr.DataArray([[1.0, 0.0, 5.0], [0.0, 1.0, 0.0]], dims=("direction", "unit"))
    with pytest.warns(RuntimeWarning, match="1 of 3 units of 'cov'"):
        v = variance_along(_as_cov(c), d)
    np.testing.assert_allclose(v.values, [2.0 / 1.5, 1.0 / 1.5])


def test_alignment_index_with_nan_units_and_rank_deficient_b():
    a = np.diag([5.0, 4.0, 1.0, 0.5])
    b = np.diag([0.1, 3.0, 2.0, 1.0])
    a_nan = a.copy()
    a_nan[3, :] = a_nan[:, 3] = np.nan
    with pytest.warns(RuntimeWarning, match="1 of 4 units of 'cov_a' or 'cov_b'"):
        out = alignment_index(_as_cov(a_nan), _as_cov(b), n_components=2)
    ref = alignment_index(_as_cov(a[:3, :3]), _as_cov(b[:3, :3]), n_components=2)
    xr.testing.assert_allclose(out, ref)
    # B of rank 1 has no unique top-2 subspace: NaN and a warning, not an arbitrary number
    with pytest.warns(RuntimeWarning, match="only 1 positive eigenvalues"):
        out = alignment_index(_as_cov(a), _as_cov(np.diag([0, 0, 1.0, 0])), n_components=2)
    assert np.isnan(float(out.alignment_index))
    with pytest.raises(ValueError, match="'subspace_a' parameter must hold finite values"):
        principal_angles(
            xr.DataArray([[np.nan], [1.0]], dims=("unit", "component")),
            xr.DataArray([[1.0], [0.0]], dims=("unit", "component")),
        )
