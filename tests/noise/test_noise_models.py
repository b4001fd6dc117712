"""Tests for neurovar.noise.models: sampled covariances, seeds, frozen draws, validation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from noise_helpers import assert_cov_close, assert_rng_unchanged, random_cov, rng_states

from neurovar._validation import InvalidParameterError
from neurovar.noise import (
    CovarianceNoise,
    DiagonalNoise,
    IsotropicNoise,
    LowRankNoise,
    NoiseModule,
    PoissonLikeNoise,
)

D = 6
N = 20000


def _empirical(noise: NoiseModule, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    eps = (noise(x) - x).double().reshape(x.shape[0], -1).numpy()
    return eps.mean(axis=0), np.cov(eps, rowvar=False, ddof=1)


def _cases() -> list[tuple[str, NoiseModule, np.ndarray]]:
    rng = np.random.default_rng(1)
    full = random_cov(D, rng)
    singular = random_cov(D, rng, rank=2)
    f = rng.standard_normal((D, 2))
    d = rng.uniform(0.1, 1.0, D)
    var = rng.uniform(0.2, 2.0, D)
    return [
        ("isotropic", IsotropicNoise(0.7, rng=0), 0.49 * np.eye(D)),
        ("isotropic_scaled", IsotropicNoise(0.7, n_units=D, scale=2, rng=0), 1.96 * np.eye(D)),
        ("diagonal", DiagonalNoise(var, rng=1), np.diag(var)),
        ("full", CovarianceNoise(full, rng=2), full),
        ("singular", CovarianceNoise(singular, rng=3), singular),
        ("low_rank", LowRankNoise(f, d, rng=4), f @ f.T + np.diag(d)),
        ("low_rank_scaled", LowRankNoise(f, d, scale=0.5, rng=4), 0.25 * (f @ f.T + np.diag(d))),
    ]


@pytest.mark.parametrize("name,noise,target", _cases(), ids=[c[0] for c in _cases()])
def test_sampled_noise_has_target_covariance(name, noise, target):
    x = torch.zeros(N, D)
    mean, cov = _empirical(noise, x)
    assert np.all(np.abs(mean) <= 5 * np.sqrt(np.diag(target) / N) + 1e-7)
    assert_cov_close(cov, target, N)
    if noise.n_units is not None:
        np.testing.assert_allclose(noise.covariance.double().numpy(), target, rtol=1e-5, atol=1e-6)


def test_poisson_like_variance_follows_rectified_mean():
    mean_rate = torch.tensor([-1.0, 0.0, 0.5, 2.0, 4.0])
    x = mean_rate.expand(N, -1).clone()
    noise = PoissonLikeNoise(1.5, rng=0)
    mean, cov = _empirical(noise, x)
    target = np.diag(1.5 * (np.clip(mean_rate.numpy(), 0, None) + 1e-5))
    assert np.all(np.abs(mean) <= 5 * np.sqrt(np.diag(target) / N) + 1e-6)
    assert_cov_close(cov, target, N)
    # per-channel Fano factors with share="channel"
    x4 = torch.full((N, 2, 1, 1), 2.0)
    noisy = PoissonLikeNoise([0.5, 3.0], share="channel", rng=1)(x4) - x4
    np.testing.assert_allclose(noisy.var(dim=0).flatten().numpy(), [1.0, 6.0], rtol=0.05)


def test_channel_sharing_same_covariance_at_every_position_independent_across():
    rng = np.random.default_rng(2)
    cov_c = random_cov(3, rng)
    noise = CovarianceNoise(cov_c, share="channel", rng=5)
    x = torch.zeros(8000, 3, 2, 2)
    eps = (noise(x) - x).double().numpy()
    for yy in range(2):
        for xx in range(2):
            assert_cov_close(np.cov(eps[:, :, yy, xx], rowvar=False), cov_c, 8000)
    # channels at different positions are independent
    flat = eps.reshape(8000, -1)
    full = np.cov(flat, rowvar=False)
    block = full[np.ix_(range(0, 12, 4), range(3, 12, 4))]  # positions (0,0) vs (1,1)
    se = np.sqrt(np.outer(np.diag(cov_c), np.diag(cov_c)) / 8000)
    assert np.all(np.abs(block) <= 5 * se)


def test_low_rank_channel_matches_dense():
    rng = np.random.default_rng(3)
    f, d = rng.standard_normal((4, 2)), rng.uniform(0.1, 0.5, 4)
    noise = LowRankNoise(f, d, share="channel", rng=0)
    x = torch.zeros(8000, 4, 3)
    eps = (noise(x) - x).double().numpy()
    for p in range(3):
        assert_cov_close(np.cov(eps[:, :, p], rowvar=False), f @ f.T + np.diag(d), 8000)


def test_same_seed_bit_identical_and_independent_rows():
    x = torch.randn(5, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    cov = random_cov(4, rng)
    a = CovarianceNoise(cov, share="channel", rng=11)(x)
    b = CovarianceNoise(cov, share="channel", rng=11)(x)
    c = CovarianceNoise(cov, share="channel", rng=12)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # identical inputs in a batch get independent draws
    same = x[:1].expand(4, -1, -1, -1)
    out = IsotropicNoise(1.0, rng=0)(same)
    assert not torch.allclose(out[0], out[1])
    # a given torch.Generator drives the draws
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(IsotropicNoise(1.0, rng=g1)(x), IsotropicNoise(1.0, rng=g2)(x))
    # manual_seed resets the stream
    noise = IsotropicNoise(1.0, rng=3)
    first = noise(x)
    assert not torch.equal(noise(x), first)
    noise.manual_seed(3)
    assert torch.equal(noise(x), first)


def test_global_rng_untouched():
    before = rng_states()
    x = torch.zeros(3, 4)
    for noise in (IsotropicNoise(1.0), LowRankNoise(np.ones((4, 2)), 0.1), PoissonLikeNoise()):
        noise(x)
        assert isinstance(noise.seed, int)  # a fresh seed is recorded for reproducibility
    assert_rng_unchanged(before)


def test_frozen_replays_draw():
    gen = torch.Generator().manual_seed(0)  # test data from a seed, not the global RNG
    x = torch.rand(3, 5, generator=gen)
    noise = PoissonLikeNoise(1.0, rng=0)
    noise.freeze()
    a, b = noise(x), noise(x)
    assert torch.equal(a, b)
    # the standard-normal draw is replayed, so the noise still follows the input
    np.testing.assert_allclose(
        ((noise(4 * x) - 4 * x) / (a - x)).numpy(),
        np.sqrt((4 * x.numpy() + 1e-5) / (x.numpy() + 1e-5)),
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="frozen"):
        noise(torch.rand(4, 5, generator=gen))
    noise.unfreeze()
    assert not torch.equal(noise(x), noise(x))


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: CovarianceNoise(np.array([[1.0, 0.5], [0.0, 1.0]])), "symmetric"),
        (lambda: CovarianceNoise(np.array([[1.0, 2.0], [2.0, 1.0]])), "positive semi-definite"),
        (lambda: CovarianceNoise(np.ones((2, 3))), "square"),
        (lambda: CovarianceNoise(np.array([[np.nan, 0], [0, 1.0]])), "NaN"),
        (lambda: DiagonalNoise([1.0, -0.1]), "non-negative"),
        (lambda: IsotropicNoise(-1.0), r"'std' parameter of IsotropicNoise must be a float in \[0,"),
        (lambda: IsotropicNoise(1.0, share="spatial"), "'share' parameter"),
        (lambda: IsotropicNoise(1.0, rng=1, seed=2), "not both"),
        (lambda: IsotropicNoise(1.0, seed=1, generator=torch.Generator()), "not both"),
        (lambda: IsotropicNoise(1.0, rng=-1), "'rng' parameter"),
        (lambda: IsotropicNoise(1.0, rng="0"), "'rng' parameter"),
        (lambda: LowRankNoise(np.ones((4, 2)), [1.0, 1.0]), "'diagonal' parameter"),
        (lambda: PoissonLikeNoise(-1.0), "'fano' parameter"),
        (lambda: IsotropicNoise(1.0, momentum=0.0), "'momentum' parameter"),
    ],
)
def test_invalid_parameters(factory, match):
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


def test_wrong_size_for_layer_names_both_layouts():
    noise = CovarianceNoise(np.eye(4), rng=0)
    with pytest.raises(ValueError, match=r"built for 4 flattened units.*share='channel'"):
        noise(torch.zeros(2, 4, 3, 3))
    assert noise(torch.zeros(2, 4)).shape == (2, 4)
    chan = CovarianceNoise(np.eye(4), share="channel", rng=0)
    assert chan(torch.zeros(2, 4, 3, 3)).shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match="batch dim"):
        chan(torch.zeros(4))


def test_near_singular_covariance_clipped_and_reported():
    # One eigenvalue is clearly (if slightly) negative; the exact zero may round to either side
    # of 0 depending on the BLAS build, so the count is 1 or 2 -- what matters is that the
    # negative one is clipped, the clipping is reported, and the result is PSD with rank 3.
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    evals = np.array([-1e-7, 0.0, 0.5, 1.0, 2.0])
    cov = (q * evals) @ q.T
    with pytest.warns(RuntimeWarning, match=r"clipped [12] slightly negative eigenvalue"):
        noise = CovarianceNoise(cov, rng=0)
    assert noise.factor_info["n_clipped"] in (1, 2)
    assert noise.factor_info["min_eigenvalue"] == pytest.approx(-1e-7, rel=1e-3)
    assert noise.factor_info["rank"] == 3
    fitted = noise.covariance.double().numpy()
    assert np.linalg.eigvalsh(fitted).min() > -1e-6  # PSD up to float32 storage
    np.testing.assert_allclose(fitted, (q * np.clip(evals, 0, None)) @ q.T, atol=1e-6)


def test_low_rank_from_covariance_keeps_trace_and_top_directions():
    rng = np.random.default_rng(5)
    cov = random_cov(8, rng)
    lr = LowRankNoise.from_covariance(cov, 3, rng=0)
    assert lr.rank == 3
    assert lr.trace == pytest.approx(np.trace(cov), rel=1e-6)
    np.testing.assert_allclose(np.diag(lr.covariance.numpy()), np.diag(cov), rtol=1e-5)
    top = np.linalg.eigh(cov)[0][-3:]
    np.testing.assert_allclose(
        np.linalg.svd(lr.factors.numpy(), compute_uv=False) ** 2, top[::-1], rtol=1e-5
    )
    full = LowRankNoise.from_covariance(cov, 8, residual="none", rng=0)
    np.testing.assert_allclose(full.covariance.numpy(), cov, atol=1e-5)
    with pytest.raises(ValueError, match="'rank' parameter"):
        LowRankNoise.from_covariance(cov, 9)


def test_relative_scale_follows_layer_and_reports_snr():
    gen = torch.Generator().manual_seed(0)
    noise = LowRankNoise(np.ones((10, 2)), 1.0, relative_scale=0.25, momentum=0.5, rng=0)
    noise.train()
    for _ in range(40):
        x = 3.0 * torch.randn(256, 10, generator=gen)  # total variance 90
        noise(x)
    assert noise.effective_snr == pytest.approx(4.0, rel=0.1)
    assert noise.expected_total_variance(x) == pytest.approx(0.25 * 90, rel=0.1)
    # in eval mode the running estimate is frozen: bigger activations get no more noise
    noise.eval()
    tracked = int(noise.num_batches_tracked)
    big = 10 * x
    assert (noise(big) - big).pow(2).sum(1).mean().item() == pytest.approx(22.5, rel=0.15)
    assert int(noise.num_batches_tracked) == tracked
    # back in training the scale follows the layer
    noise.train()
    for _ in range(20):
        big = 30.0 * torch.randn(256, 10, generator=gen)
        noise(big)
    assert noise.expected_total_variance(big) == pytest.approx(0.25 * 9000, rel=0.1)
    # a fixed scale does not follow: SNR grows with the activation
    fixed = IsotropicNoise(1.0, track_snr=True, rng=0)
    for _ in range(5):
        fixed(30.0 * torch.randn(256, 10, generator=gen))
    assert fixed.effective_snr == pytest.approx(900.0, rel=0.1)
    assert np.isnan(IsotropicNoise(1.0).effective_snr)


def test_dtype_device_and_config():
    noise = LowRankNoise(np.ones((4, 2)), 0.5, rng=0).to(torch.float64)
    assert noise.factors.dtype == torch.float64
    out = noise(torch.zeros(3, 4, dtype=torch.float64))
    assert out.dtype == torch.float64
    cfg = noise.config()
    assert json.loads(json.dumps(cfg))["rank"] == 2
    assert cfg["type"] == "LowRankNoise" and cfg["seed"] == 0
    with pytest.raises(TypeError, match="floating"):
        noise(torch.zeros(3, 4, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_follows_device_and_is_reproducible():
    noise = CovarianceNoise(np.eye(3), share="channel", rng=0)
    x = torch.zeros(4, 3, 2, 2, device="cuda")
    a = noise(x)
    assert a.device.type == "cuda" and noise.factor.device.type == "cuda"
    b = CovarianceNoise(np.eye(3), share="channel", rng=0).cuda()(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "noise",
    [
        IsotropicNoise(0.3, rng=0),
        DiagonalNoise(np.full(12, 0.2), rng=0),
        CovarianceNoise(np.eye(3), share="channel", rng=0),
        LowRankNoise(np.ones((12, 2)), 0.1, rng=0),
        LowRankNoise(np.ones((3, 2)), 0.1, share="channel", rng=0),
    ],
    ids=["isotropic", "diagonal", "full_channel", "low_rank_flat", "low_rank_channel"],
)
def test_additive_noise_passes_gradient_unchanged(noise):
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (noise(x) * 2.0).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))


def test_poisson_like_gradient_finite_at_zero():
    x = torch.tensor([[-1.0, 0.0, 1.0]], requires_grad=True)
    PoissonLikeNoise(1.0, rng=0)(x).sum().backward()
    assert torch.all(torch.isfinite(x.grad))
    assert x.grad[0, 0] == 1.0  # rectified: no noise gradient below 0


def test_diagonal_scalar_variance_counts_every_unit():
    """A scalar variance v on D units has total variance D v (it was counted once, not D times)."""
    x = torch.zeros(N, 10)
    noise = DiagonalNoise(0.5, rng=0)
    assert (noise(x) - x).pow(2).sum(1).mean().item() == pytest.approx(5.0, rel=0.03)
    assert noise.expected_total_variance(x) == pytest.approx(5.0, rel=1e-12)
    assert noise.expected_total_variance(torch.zeros(4, 2, 3, 3)) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="scalar 'variance'"):
        _ = noise.trace
    # relative_scale: total noise variance = m * tr(Cov_batch(x)), not D times that
    gen = torch.Generator().manual_seed(1)
    xx = 2.0 * torch.randn(N, 10, generator=gen)
    rel = DiagonalNoise(0.5, relative_scale=0.1, rng=0).train()
    measured = (rel(xx) - xx).pow(2).sum(1).mean().item()
    assert measured == pytest.approx(0.1 * xx.var(0, correction=1).sum().item(), rel=0.03)
    assert rel.effective_snr == pytest.approx(10.0, rel=0.03)


def test_relative_scale_in_eval_needs_a_running_estimate():
    """Eval mode without an estimate used to take the batch variance: a batch of trial copies
    of one stimulus (what the recorder builds) then got no noise at all, silently."""
    noise = IsotropicNoise(1.0, relative_scale=0.1, rng=0).eval()
    copies = torch.ones(8, 4)
    with pytest.raises(ValueError, match="no running estimate"):
        noise(copies)
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(512, 4, generator=gen)
    noise.train()
    noise(clean)
    noise.eval()
    act_var = clean.double().var(0, correction=1).sum().item()
    assert float(noise.running_activation_variance) == pytest.approx(act_var, rel=1e-12)
    copies = torch.ones(20000, 4)
    out = noise(copies)
    assert (out - copies).pow(2).sum(1).mean().item() == pytest.approx(0.1 * act_var, rel=0.03)
    # querying the expected variance of an untracked module still uses the batch
    fresh = IsotropicNoise(1.0, relative_scale=0.1, rng=0).eval()
    assert fresh.expected_total_variance(clean) == pytest.approx(0.1 * act_var, rel=1e-6)


def test_low_rank_residual_variance_and_old_checkpoints():
    """The diagonal term d is the buffer ``residual_variance`` (``diagonal()`` is the method of
    every noise model: the whole diagonal of the covariance); checkpoints of neurovar 0.1
    stored d under the key "diagonal" and still load."""
    f = np.array([[1.0], [2.0], [0.0]])
    noise = LowRankNoise(f, [0.1, 0.2, 0.3], rng=0)
    np.testing.assert_allclose(noise.diagonal().numpy(), [1.1, 4.2, 0.3], rtol=1e-6)
    np.testing.assert_allclose(
        noise.dense_covariance().numpy(), f @ f.T + np.diag([0.1, 0.2, 0.3]), rtol=1e-6
    )
    old = {
        ("diagonal" if k == "residual_variance" else k): v for k, v in noise.state_dict().items()
    }
    fresh = LowRankNoise(np.zeros((3, 1)), 0.0, rng=0)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.residual_variance, noise.residual_variance)
    assert torch.equal(fresh.factors, noise.factors)


def _noise_modules_for_clone() -> list[NoiseModule]:
    rng = np.random.default_rng(3)
    return [
        IsotropicNoise(0.5, rng=11),
        CovarianceNoise(random_cov(5, rng), rng=12),
        LowRankNoise(rng.standard_normal((5, 2)), 0.1, rng=13),
        PoissonLikeNoise(2.0, rng=14),
    ]


@pytest.mark.parametrize("noise", _noise_modules_for_clone(), ids=lambda n: type(n).__name__)
def test_clone_restarts_from_the_seed_and_leaves_the_original_stream(noise):
    x = torch.rand(4, 5, generator=torch.Generator().manual_seed(0))
    noise(x)  # advance the original's stream
    expected_next = noise.get_rng_state()
    clone = noise.clone()
    assert type(clone) is type(noise) and clone is not noise and clone.seed == noise.seed
    fresh = copy.deepcopy(noise).manual_seed(noise.seed)  # a module drawing from the seed anew
    assert torch.equal(clone(x), fresh(x)) and torch.equal(clone(x), fresh(x))
    # the original continues where it was, untouched by the clone's draws
    after = noise(x)
    noise.set_rng_state(expected_next)
    assert torch.equal(after, noise(x))
    assert not torch.equal(after, clone.clone()(x))  # the clone's first draw differs from it
    # buffers are copies, not shared
    for name, buf in noise.named_buffers():
        assert buf.data_ptr() != dict(clone.named_buffers())[name].data_ptr()


def test_clone_shares_a_user_generator_and_keeps_the_frozen_state():
    gen = torch.Generator().manual_seed(5)
    noise = IsotropicNoise(1.0, n_units=3, rng=gen)
    assert noise.generator is gen and IsotropicNoise(1.0, rng=1).generator is None
    clone = noise.clone()
    assert clone.generator is gen and noise.generator is gen  # shared, not copied
    x = torch.zeros(2, 3)
    a = clone(x)
    gen.manual_seed(5)
    assert torch.equal(a, noise(x))  # one stream
    frozen = IsotropicNoise(1.0, rng=2).freeze()
    first = frozen(x)
    copied = frozen.clone()
    assert copied.frozen and torch.equal(copied(x), first)  # the frozen draw is copied too


def test_freezing_restores_the_previous_state_after_an_exception_and_nests():
    x = torch.zeros(3, 4)
    noise = IsotropicNoise(1.0, rng=0)
    assert not noise.frozen
    with pytest.raises(RuntimeError, match="boom"):
        with noise.freezing() as same:
            assert same is noise and noise.frozen
            noise(x)
            raise RuntimeError("boom")
    assert not noise.frozen and not torch.equal(noise(x), noise(x))
    with noise.freezing():
        outer = noise(x)
        with noise.freezing():
            inner = noise(x)
            assert torch.equal(noise(x), inner) and not torch.equal(inner, outer)
        assert noise.frozen and torch.equal(noise(x), outer)  # the outer draw is back
    assert not noise.frozen
    # a module frozen before keeps its draw through a block
    noise.freeze()
    before = noise(x)
    with noise.freezing():
        assert not torch.equal(noise(x), before)
    assert noise.frozen and torch.equal(noise(x), before)


@pytest.mark.parametrize("share", ["flat", "channel"])
def test_unit_scale_total_variance_is_the_expected_variance_at_scale_one(share):
    x = torch.rand(8, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    n = 12 if share == "flat" else 3
    rng = np.random.default_rng(0)
    for noise in (
        CovarianceNoise(random_cov(n, rng), share=share, scale=3.0, rng=0),
        PoissonLikeNoise(1.5, share=share, scale=3.0, rng=0),
    ):
        base = noise.unit_scale_total_variance(x)
        assert noise.expected_total_variance(x) == pytest.approx(9.0 * base)
    with pytest.raises(ValueError, match="built for"):
        CovarianceNoise(np.eye(5), rng=0).unit_scale_total_variance(x)
    for bad in ("x", x.numpy(), [[1.0]]):
        with pytest.raises(
            InvalidParameterError, match="'x' parameter of PoissonLikeNoise.unit_scale_total"
        ):
            PoissonLikeNoise(1.5, rng=0).unit_scale_total_variance(bad)
