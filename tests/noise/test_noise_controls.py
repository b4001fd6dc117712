"""Tests for neurovar.noise.controls: matched trace, diagonal, isotropic, rotated spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from noise_helpers import assert_rng_unchanged, random_cov, rng_states
from scipy import stats

from neurovar.noise import (
    NOISE_KINDS,
    CovarianceNoise,
    DiagonalNoise,
    IsotropicNoise,
    LowRankNoise,
    NoiseModule,
    PoissonLikeNoise,
    diagonal_control,
    isotropic_control,
    match_total_variance,
    matched_controls,
    noise_from_covariance,
    random_orthogonal,
    register_noise_kind,
    rotate_spectrum,
)


@pytest.fixture
def cov() -> np.ndarray:
    return random_cov(7, np.random.default_rng(0))


def _as_dataarray(cov: np.ndarray) -> xr.DataArray:
    n = cov.shape[0]
    return xr.DataArray(
        cov,
        dims=("unit", "unit_j"),
        coords={"channel": ("unit", np.arange(n)), "channel_j": ("unit_j", np.arange(n))},
        attrs={"share": "channel", "layer": "conv2"},
    )


@pytest.mark.parametrize("kind", ["numpy", "torch", "xarray"])
def test_match_total_variance_exact_and_type_preserved(cov, kind):
    data = {"numpy": cov, "torch": torch.as_tensor(cov), "xarray": _as_dataarray(cov)}[kind]
    out = match_total_variance(data, 3.25)
    assert type(out) is type(data)
    arr = np.asarray(out.values if kind == "xarray" else out)
    assert np.trace(arr) == pytest.approx(3.25, rel=1e-13, abs=0)
    np.testing.assert_allclose(arr / np.trace(arr), cov / np.trace(cov), rtol=1e-12)
    if kind == "xarray":
        assert out.attrs["layer"] == "conv2" and out.attrs["control"] == "matched_total_variance"
        assert list(out.channel.values) == list(range(7))


def test_match_total_variance_on_modules(cov):
    for noise in (
        CovarianceNoise(cov, rng=0),
        LowRankNoise(np.ones((7, 2)), 0.3, rng=0),
        DiagonalNoise(np.arange(1, 8), rng=0),
        IsotropicNoise(2.0, n_units=7, rng=0),
    ):
        matched = match_total_variance(noise, 5.0)
        assert matched is not noise and matched.trace == pytest.approx(5.0, rel=1e-12, abs=0)
        assert noise.scale == 1.0  # input not modified
        x = torch.zeros(20000, 7)
        assert (matched(x) - x).pow(2).sum(1).mean().item() == pytest.approx(5.0, rel=0.03)
    with pytest.raises(ValueError, match="n_units"):
        match_total_variance(IsotropicNoise(1.0), 1.0)
    with pytest.raises(TypeError, match="PoissonLikeNoise"):
        match_total_variance(PoissonLikeNoise(), 1.0)
    with pytest.raises(ValueError, match="'total_variance' parameter"):
        match_total_variance(cov, -1.0)


def test_diagonal_and_isotropic_controls(cov):
    diag = diagonal_control(cov)
    np.testing.assert_array_equal(np.diag(diag), np.diag(cov))
    assert np.count_nonzero(diag - np.diag(np.diag(diag))) == 0
    iso = isotropic_control(_as_dataarray(cov))
    np.testing.assert_allclose(iso.values, np.eye(7) * np.trace(cov) / 7, rtol=1e-13)
    assert iso.attrs["control"] == "isotropic"
    module = CovarianceNoise(cov, scale=0.5, rng=3)
    dn = diagonal_control(module)
    assert isinstance(dn, DiagonalNoise) and dn.scale == 0.5 and dn.seed == 3
    assert dn.trace == pytest.approx(module.trace, rel=1e-6)
    inn = isotropic_control(module)
    assert isinstance(inn, IsotropicNoise) and inn.trace == pytest.approx(module.trace, rel=1e-6)


def test_rotate_spectrum_keeps_eigenvalues_changes_directions(cov):
    before = rng_states()
    rotated = rotate_spectrum(cov, rng=1)
    np.testing.assert_allclose(np.linalg.eigvalsh(rotated), np.linalg.eigvalsh(cov), rtol=1e-10)
    assert np.trace(rotated) == pytest.approx(np.trace(cov), rel=1e-12)
    np.testing.assert_array_equal(rotated, rotated.T)
    assert not np.allclose(rotated, cov, atol=1e-2)
    # top eigenvector is no longer aligned with the original one
    v0, v1 = np.linalg.eigh(cov)[1][:, -1], np.linalg.eigh(rotated)[1][:, -1]
    assert abs(v0 @ v1) < 0.99
    np.testing.assert_array_equal(rotate_spectrum(cov, rng=1), rotated)  # reproducible
    assert not np.allclose(rotate_spectrum(cov, rng=2), rotated)
    rotate_spectrum(torch.as_tensor(cov))  # rng=None uses fresh entropy, not the global RNG
    assert_rng_unchanged(before)
    with pytest.raises(TypeError, match="'rng' parameter"):
        rotate_spectrum(cov, rng="seed")


def test_random_orthogonal_is_haar_like_scipy():
    q = random_orthogonal(6, rng=0)
    np.testing.assert_allclose(q.T @ q, np.eye(6), atol=1e-12)
    frame = random_orthogonal(9, k=3, rng=1)
    np.testing.assert_allclose(frame.T @ frame, np.eye(3), atol=1e-12)
    # compare the law of one entry and of the trace with scipy's Haar sampler (two-sample KS)
    rng = np.random.default_rng(2)
    ours = np.array([random_orthogonal(4, rng=rng) for _ in range(1500)])
    theirs = stats.ortho_group.rvs(4, size=1500, random_state=np.random.default_rng(3))
    for f in (lambda q: q[:, 0, 0], lambda q: np.trace(q, axis1=1, axis2=2)):
        assert stats.ks_2samp(f(ours), f(theirs)).pvalue > 1e-3
    # without the sign fix (LAPACK QR) Q[0, 0] is strongly biased and det(Q) has one sign
    assert abs(np.mean(ours[:, 0, 0])) < 0.1
    dets = np.sign(np.linalg.det(ours))
    assert 0.4 < np.mean(dets > 0) < 0.6


def test_rotate_low_rank_module_stays_low_rank():
    rng = np.random.default_rng(4)
    noise = LowRankNoise(rng.standard_normal((10, 3)), 0.2, share="channel", rng=5)
    rotated = rotate_spectrum(noise, rng=0)
    assert isinstance(rotated, LowRankNoise) and rotated.rank == 3 and rotated.seed == 5
    np.testing.assert_allclose(
        np.linalg.eigvalsh(rotated.covariance.double().numpy()),
        np.linalg.eigvalsh(noise.covariance.double().numpy()),
        rtol=1e-5,
    )
    assert not torch.allclose(rotated.covariance, noise.covariance, atol=1e-2)
    with pytest.raises(ValueError, match="non-constant diagonal"):
        rotate_spectrum(LowRankNoise(np.ones((3, 1)), [0.1, 0.2, 0.3]))
    full = rotate_spectrum(CovarianceNoise(np.diag([1.0, 2.0, 3.0]), rng=0), rng=0)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(full.covariance.double().numpy()), [1.0, 2.0, 3.0], rtol=1e-5
    )


def test_matched_controls_share_trace(cov):
    da = _as_dataarray(cov)
    controls = matched_controls(da, rng=0)
    assert set(controls) == {"structured", "diagonal", "isotropic", "rotated"}
    for name, c in controls.items():
        assert float(np.trace(c.values)) == pytest.approx(np.trace(cov), rel=1e-12), name
        assert c.dims == ("unit", "unit_j")


def test_noise_from_covariance_kinds(cov):
    da = _as_dataarray(cov)
    full = noise_from_covariance(da, rng=0)
    assert isinstance(full, CovarianceNoise) and full.share == "channel"
    low = noise_from_covariance(da, kind="low_rank", rank=2, rng=0)
    assert isinstance(low, LowRankNoise) and low.rank == 2 and low.share == "channel"
    assert low.trace == pytest.approx(np.trace(cov), rel=1e-6)
    diag = noise_from_covariance(cov, kind="diagonal", rng=0)
    np.testing.assert_allclose(diag.variance.numpy(), np.diag(cov), rtol=1e-6)
    iso = noise_from_covariance(cov, kind="isotropic", rng=0)
    assert iso.trace == pytest.approx(np.trace(cov), rel=1e-6)
    with pytest.raises(ValueError, match="needs the 'rank'"):
        noise_from_covariance(cov, kind="low_rank")
    with pytest.raises(ValueError, match="'kind' parameter"):
        noise_from_covariance(cov, kind="banded")


def test_matched_copy_restarts_from_seed_and_shares_user_generator():
    noise = IsotropicNoise(1.0, n_units=3, rng=4)
    x = torch.zeros(2, 3)
    noise(x)  # advance the original's stream
    matched = match_total_variance(noise, 12.0)  # 4x the variance: std doubles
    assert torch.equal(matched(x), 2 * IsotropicNoise(1.0, n_units=3, rng=4)(x))
    gen = torch.Generator().manual_seed(0)
    shared = match_total_variance(IsotropicNoise(1.0, n_units=3, rng=gen), 3.0)
    assert shared.generator is gen


@pytest.mark.parametrize("control", [match_total_variance, diagonal_control, isotropic_control])
def test_controls_reject_matrices_that_are_not_covariances(control):
    args = (1.0,) if control is match_total_variance else ()
    with pytest.raises(ValueError, match="'noise_or_cov' parameter.*symmetric"):
        control(np.array([[1.0, 0.5], [0.0, 1.0]]), *args)
    with pytest.raises(ValueError, match="'noise_or_cov' parameter.*diagonal >= 0"):
        control(np.array([[-1.0, 0.0], [0.0, 3.0]]), *args)
    with pytest.raises(ValueError, match="square"):
        control(np.ones((2, 3)), *args)


def test_module_controls_use_the_diagonal_without_a_dense_covariance(monkeypatch):
    """diagonal/isotropic controls of a module equal those of its dense covariance but never
    build it (a flat conv layer with 32k units would need 4 GiB for it)."""
    rng = np.random.default_rng(6)
    f, d = rng.standard_normal((9, 3)), rng.uniform(0.1, 0.5, 9)
    modules = [
        LowRankNoise(f, d, scale=0.7, rng=1),
        CovarianceNoise(random_cov(9, rng), scale=0.0, rng=1),
        DiagonalNoise(rng.uniform(0.1, 1.0, 9), rng=1),
        IsotropicNoise(0.4, n_units=9, rng=1),
    ]
    dense = [
        (m.factors @ m.factors.T + torch.diag(m.residual_variance)).double() for m in modules[:1]
    ]
    dense.append((modules[1].factor @ modules[1].factor.T).double())
    dense += [torch.diag(modules[2].variance).double(), 0.16 * torch.eye(9, dtype=torch.float64)]
    for cls in (LowRankNoise, CovarianceNoise, DiagonalNoise, IsotropicNoise):
        monkeypatch.setattr(cls, "covariance", property(lambda self: 1 / 0))
        monkeypatch.setattr(cls, "dense_covariance", lambda self: 1 / 0)
    for module, cov in zip(modules, dense):
        diag = diagonal_control(module)
        np.testing.assert_allclose(diag.variance.numpy(), np.diag(cov.numpy()), rtol=1e-6)
        assert diag.scale == module.scale and diag.share == module.share
        iso = isotropic_control(module)
        assert iso.n_units == 9
        assert iso.std**2 * 9 == pytest.approx(float(torch.trace(cov)), rel=1e-6)
    with pytest.raises(ValueError, match="scalar 'variance'"):
        diagonal_control(DiagonalNoise(0.3))


class _BlockNoise(NoiseModule):
    """A user's own noise model: pairs of units share a correlated 2 x 2 block.

    Only the draw and the covariance are written; every control must work from them.
    """

    def __init__(self, n_pairs: int, rho: float, **kwargs):
        super().__init__(**kwargs)
        self.n_pairs, self.rho = n_pairs, rho
        block = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
        self.register_buffer("chol", torch.linalg.cholesky(block).float())

    @property
    def n_units(self) -> int:
        return 2 * self.n_pairs

    def _add_noise(self, x3, draws, s):
        z = draws[0].reshape(x3.shape[0], self.n_pairs, 2, x3.shape[2])
        eps = torch.einsum("ij,bpjq->bpiq", self.chol.to(x3.dtype), z)
        return x3 + s * eps.reshape(x3.shape)

    def dense_covariance(self) -> torch.Tensor:
        block = torch.tensor([[1.0, self.rho], [self.rho, 1.0]], dtype=torch.float64)
        return torch.block_diag(*[block] * self.n_pairs)


def test_controls_work_for_a_users_own_noise_module():
    noise = _BlockNoise(3, 0.8, scale=0.5, rng=1)
    dense = noise.dense_covariance().numpy()
    # the base class derives the diagonal and the trace from dense_covariance()
    np.testing.assert_array_equal(noise.diagonal().numpy(), np.ones(6))
    assert noise.trace == pytest.approx(0.25 * 6)
    diag = diagonal_control(noise)
    assert isinstance(diag, DiagonalNoise) and diag.scale == 0.5 and diag.seed == 1
    np.testing.assert_allclose(diag.variance.numpy(), np.ones(6))
    iso = isotropic_control(noise)
    assert iso.n_units == 6 and iso.std == pytest.approx(1.0)
    matched = match_total_variance(noise, 3.0)
    assert isinstance(matched, _BlockNoise) and matched.trace == pytest.approx(3.0)
    rotated = rotate_spectrum(noise, rng=0)
    assert isinstance(rotated, CovarianceNoise) and rotated.scale == 0.5
    np.testing.assert_allclose(
        np.linalg.eigvalsh(rotated.dense_covariance().numpy()), np.linalg.eigvalsh(dense), atol=1e-6
    )
    assert not np.allclose(rotated.dense_covariance().numpy(), dense, atol=1e-3)
    # and the draws have the declared covariance
    x = torch.zeros(20000, 6)
    sample = np.cov(_BlockNoise(3, 0.8, rng=2)(x).numpy(), rowvar=False)
    np.testing.assert_allclose(sample, dense, atol=0.05)


def test_a_noise_module_without_a_covariance_is_refused_by_name():
    class _Opaque(NoiseModule):
        def _add_noise(self, x3, draws, s):
            return x3 + s * draws[0]

    with pytest.raises(TypeError, match="diagonal_control needs a fixed covariance.*_Opaque"):
        diagonal_control(_Opaque(rng=0))


def test_noise_kinds_registry_dispatches_and_extends(cov):
    assert set(NOISE_KINDS) >= {"full", "low_rank", "diagonal", "isotropic"}
    calls = []

    def scaled_identity(c, *, rank=None, **kwargs):
        calls.append(rank)
        d = np.asarray(c).shape[0]
        return IsotropicNoise(float(np.sqrt(np.trace(c) / d)), n_units=d, **kwargs)

    register_noise_kind("test_scaled_identity", scaled_identity)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_noise_kind("test_scaled_identity", scaled_identity)
        noise = noise_from_covariance(cov, kind="test_scaled_identity", rng=0, scale=2.0)
        assert isinstance(noise, IsotropicNoise) and noise.scale == 2.0 and calls == [None]
        assert noise._trace() == pytest.approx(np.trace(cov))
    finally:
        NOISE_KINDS.pop("test_scaled_identity")
    with pytest.raises(ValueError, match="'kind' parameter.*'full'"):
        noise_from_covariance(cov, kind="test_scaled_identity")
