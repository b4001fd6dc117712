"""FactorCovariance: the controls and noise_from_covariance in factor form equal their dense
counterparts, without the D x D matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurovar._validation import InvalidParameterError
from neurovar.noise import (
    DiagonalNoise,
    FactorCovariance,
    IsotropicNoise,
    LowRankNoise,
    diagonal_control,
    isotropic_control,
    match_total_variance,
    matched_controls,
    noise_from_covariance,
    random_orthogonal,
    rotate_spectrum,
)


def _fc(n: int = 7, r: int = 3, ridge: float = 0.1, seed: int = 0) -> FactorCovariance:
    gen = np.random.default_rng(seed)
    return FactorCovariance(np.full(n, ridge), gen.standard_normal((n, r)))


def test_trace_and_diagonal_match_the_dense_matrix():
    fc = _fc()
    dense = fc.dense()
    assert fc.trace == pytest.approx(np.trace(dense))
    np.testing.assert_allclose(fc.diag_of(), np.diag(dense))
    assert fc.rank == 3 and fc.n_units == 7


@pytest.mark.parametrize("fc", [
    _fc(),
    FactorCovariance(np.linspace(0.1, 2.0, 6), np.random.default_rng(4).standard_normal((6, 2))),
    FactorCovariance(np.array([1.0, 2.0, 3.0])),
], ids=["factors+ridge", "factors+diagonal", "diagonal"])
def test_participation_ratio_matches_the_dense_matrix(fc):
    import xarray as xr

    from neurovar.stats import participation_ratio

    dense = fc.dense()
    n = dense.shape[0]
    cov = xr.DataArray(dense, dims=("unit", "unit_j"),
                       coords={"unit": np.arange(n), "unit_j": np.arange(n)})
    assert fc.participation_ratio == pytest.approx(float(participation_ratio(cov)))
    assert fc.participation_ratio == pytest.approx(np.trace(dense) ** 2 / np.sum(dense * dense))
    assert np.isnan(FactorCovariance(np.zeros(3)).participation_ratio)


def test_controls_in_factor_form_equal_the_dense_controls():
    fc = _fc()
    dense = fc.dense()
    np.testing.assert_allclose(diagonal_control(fc).dense(), diagonal_control(dense))
    np.testing.assert_allclose(isotropic_control(fc).dense(), isotropic_control(dense))
    np.testing.assert_allclose(match_total_variance(fc, 3.0).dense(),
                               match_total_variance(dense, 3.0))
    assert isotropic_control(fc).is_isotropic and diagonal_control(fc).factors is None


def test_rotation_keeps_the_spectrum_and_the_factor_form():
    fc = _fc()
    rot = rotate_spectrum(fc, rng=3)
    assert rot.rank == fc.rank  # a constant diagonal: only a D x r frame was drawn
    np.testing.assert_allclose(np.linalg.eigvalsh(rot.dense()), np.linalg.eigvalsh(fc.dense()),
                               atol=1e-10)
    # the frame is random_orthogonal's with the same seed: reproducible and seed-dependent
    np.testing.assert_array_equal(rotate_spectrum(fc, rng=3).factors, rot.factors)
    assert not np.allclose(rotate_spectrum(fc, rng=4).factors, rot.factors)
    _, sv, _ = np.linalg.svd(fc.factors, full_matrices=False)
    frame = random_orthogonal(fc.n_units, k=fc.rank, rng=np.random.default_rng(3))
    np.testing.assert_allclose(rot.factors, frame * sv[None, :])


def test_rotation_of_a_non_constant_diagonal_goes_through_the_dense_matrix():
    gen = np.random.default_rng(1)
    fc = FactorCovariance(gen.uniform(0.1, 1.0, 6), gen.standard_normal((6, 2)))
    rot = rotate_spectrum(fc, rng=0)
    np.testing.assert_allclose(np.linalg.eigvalsh(rot.dense()), np.linalg.eigvalsh(fc.dense()),
                               atol=1e-10)
    assert not np.allclose(rot.dense(), fc.dense())


def test_matched_controls_share_the_trace():
    controls = matched_controls(_fc(), rng=0)
    traces = [c.trace for c in controls.values()]
    np.testing.assert_allclose(traces, traces[0])


def test_noise_from_covariance_samples_the_factor_form_exactly():
    fc = _fc()
    full = noise_from_covariance(fc, kind="full", rng=0)
    assert isinstance(full, LowRankNoise)
    np.testing.assert_allclose(full.dense_covariance().numpy(), fc.dense(), atol=1e-6)
    diag = noise_from_covariance(fc, kind="diagonal", rng=0)
    assert isinstance(diag, DiagonalNoise)
    np.testing.assert_allclose(torch.as_tensor(diag.diagonal()).numpy(), fc.diag_of(),
                               rtol=1e-6)
    iso = noise_from_covariance(fc, kind="isotropic", rng=0)
    assert isinstance(iso, IsotropicNoise)
    assert iso.trace * 1.0 == pytest.approx(fc.trace, rel=1e-6)
    low = noise_from_covariance(fc, kind="low_rank", rank=2, rng=0)
    assert low.trace == pytest.approx(fc.trace, rel=1e-6)


def test_full_kind_of_a_diagonal_factor_form_is_diagonal_or_isotropic():
    assert isinstance(noise_from_covariance(FactorCovariance(np.full(5, 0.3)), rng=0),
                      IsotropicNoise)
    assert isinstance(noise_from_covariance(FactorCovariance(np.arange(1.0, 6.0)), rng=0),
                      DiagonalNoise)


def test_random_orthogonal_frame_does_not_need_the_n_by_n_memory():
    # 10**6 x 10**6 would need terabytes; a 10**6 x 2 frame needs ~50 MB
    q = random_orthogonal(10**6, k=2, rng=0)
    np.testing.assert_allclose(q.T @ q, np.eye(2), atol=1e-10)
    with pytest.raises(InvalidParameterError, match="'n' parameter of random_orthogonal"):
        random_orthogonal(10**6)


@pytest.mark.parametrize("kwargs, name", [
    ({"diagonal": np.array([1.0, -1.0])}, "diagonal"),
    ({"diagonal": np.ones((2, 2))}, "diagonal"),
    ({"diagonal": np.ones(3), "factors": np.ones((4, 1))}, "factors"),
    ({"diagonal": np.ones(3), "factors": np.full((3, 1), np.nan)}, "factors"),
])
def test_bad_factor_covariance_names_the_parameter(kwargs, name):
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of FactorCovariance"):
        FactorCovariance(**kwargs)


def test_rotating_an_isotropic_covariance_returns_it_and_a_huge_dense_rotation_is_refused(
        monkeypatch):
    iso = FactorCovariance(np.full(4, 0.5))
    np.testing.assert_array_equal(rotate_spectrum(iso, rng=0).dense(), iso.dense())
    monkeypatch.setenv("NEUROVAR_MAX_BYTES", "1000")  # a non-constant diagonal needs N x N
    with pytest.raises(InvalidParameterError, match="rotate_spectrum"):
        rotate_spectrum(FactorCovariance(np.arange(1.0, 31.0)), rng=0)
    with pytest.raises(InvalidParameterError, match="noise_from_covariance"):
        noise_from_covariance(FactorCovariance(np.arange(1.0, 31.0)), kind="low_rank", rank=2)
