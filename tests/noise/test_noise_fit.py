"""Tests for neurovar.noise.fit: covariance from perturbations, magnitude relative to the layer."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from noise_helpers import assert_cov_close, random_cov
from sklearn.covariance import OAS, LedoitWolf
from torch import nn

from neurovar.noise import (
    CovarianceNoise,
    IsotropicNoise,
    LowRankNoise,
    PoissonLikeNoise,
    collect_layer_activations,
    fit_perturbation_covariance,
    inject_noise,
    layer_activation_covariance,
    layer_total_variance,
    noise_from_covariance,
    scale_to_activation_variance,
)

D_IN, D_OUT = 5, 4


def _linear_model(seed: int = 0) -> tuple[nn.Module, np.ndarray]:
    """flatten -> lin (W, b) -> relu; h = W x + b at layer 'lin'."""
    rng = np.random.default_rng(seed)
    lin = nn.Linear(D_IN, D_OUT).double()
    w = rng.standard_normal((D_OUT, D_IN))
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w))
        lin.bias.copy_(torch.as_tensor(rng.standard_normal(D_OUT)))
    model = nn.Sequential(OrderedDict(flat=nn.Flatten(), lin=lin, relu=nn.ReLU()))
    return model, w


def _perturbed(n: int, cov_delta: np.ndarray, seed: int, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D_IN)) * 2.0
    delta = rng.multivariate_normal(np.full(D_IN, shift), cov_delta, size=n)
    return torch.as_tensor(x), torch.as_tensor(x + delta), rng


def test_difference_recovers_propagated_perturbation_covariance():
    model, w = _linear_model()
    cov_d = random_cov(D_IN, np.random.default_rng(1))
    clean, pert, _ = _perturbed(4000, cov_d, seed=2, shift=0.7)
    cov = fit_perturbation_covariance(model, clean, pert, layer="lin", method="difference")
    assert cov.dims == ("unit", "unit_j") and cov.shape == (D_OUT, D_OUT)
    assert_cov_close(cov.values, w @ cov_d @ w.T, 4000)
    # exactly the sample covariance (ddof=1) of the activation change
    diff = (pert - clean).numpy() @ w.T
    np.testing.assert_allclose(cov.values, np.cov(diff, rowvar=False, ddof=1), rtol=1e-10)
    assert cov.attrs["ddof"] == 1 and cov.attrs["method"] == "difference"
    assert cov.attrs["mean_shift_norm"] == pytest.approx(np.linalg.norm(diff.mean(0)), rel=1e-8)


def test_perturbed_method_includes_image_variance():
    model, w = _linear_model()
    cov_d = 0.3 * np.eye(D_IN)
    clean, pert, _ = _perturbed(4000, cov_d, seed=3)
    cov = fit_perturbation_covariance(model, clean, pert, layer="lin", method="perturbed")
    assert_cov_close(cov.values, w @ (4.0 * np.eye(D_IN) + cov_d) @ w.T, 4000)


def test_within_image_spread_around_clean_activation():
    model, w = _linear_model()
    cov_d = random_cov(D_IN, np.random.default_rng(4))
    rng = np.random.default_rng(5)
    n_img, n_ver = 40, 100
    clean = torch.as_tensor(rng.standard_normal((n_img, D_IN)))
    delta = rng.multivariate_normal(np.zeros(D_IN), cov_d, size=(n_ver, n_img))
    pert = clean[None] + torch.as_tensor(delta)
    cov = fit_perturbation_covariance(model, clean, pert, layer="lin", method="within_image")
    assert_cov_close(cov.values, w @ cov_d @ w.T, n_img * n_ver)
    assert cov.attrs["ddof"] == 0 and cov.attrs["n_samples"] == n_img * n_ver
    # around the clean activation (not centred): a constant shift s adds W s s^T W^T,
    # whereas "difference" removes it
    s = np.full(D_IN, 0.5)
    shifted = pert + torch.as_tensor(s)
    cov_s = fit_perturbation_covariance(model, clean, shifted, layer="lin", method="within_image")
    ws, wm = w @ s, w @ delta.reshape(-1, D_IN).mean(0)  # d' = d + W s, mean(d) = W mean(delta)
    expected = np.outer(ws, ws) + np.outer(ws, wm) + np.outer(wm, ws)
    np.testing.assert_allclose(cov_s.values - cov.values, expected, rtol=1e-8, atol=1e-10)
    cov_diff = fit_perturbation_covariance(model, clean, shifted[0], layer="lin")
    cov_diff0 = fit_perturbation_covariance(model, clean, pert[0], layer="lin")
    np.testing.assert_allclose(cov_diff.values, cov_diff0.values, rtol=1e-8)


@pytest.mark.parametrize("estimator,peer", [("ledoit_wolf", LedoitWolf), ("oas", OAS)])
def test_shrinkage_matches_scikit_learn(estimator, peer):
    model, w = _linear_model()
    clean, pert, _ = _perturbed(12, np.eye(D_IN), seed=6)
    cov = fit_perturbation_covariance(model, clean, pert, layer="lin", estimator=estimator)
    diff = (pert - clean).numpy() @ w.T
    # the shrunk empirical covariance is the unbiased one (ddof=1), as in stats.noise_covariance
    resid = diff - diff.mean(axis=0)
    n = resid.shape[0]
    ref = peer(assume_centered=True).fit(resid * np.sqrt(n / (n - 1)))
    np.testing.assert_allclose(cov.values, ref.covariance_, rtol=1e-8)
    assert cov.attrs["shrinkage"] == pytest.approx(ref.shrinkage_)
    assert 0 <= cov.attrs["shrinkage"] <= 1 and cov.attrs["ddof"] == 1
    sample = np.cov(diff, rowvar=False, ddof=1)
    s, mu = ref.shrinkage_, np.trace(sample) / sample.shape[0]
    np.testing.assert_allclose(cov.values, (1 - s) * sample + s * mu * np.eye(len(sample)), atol=1e-10)


def test_rank_truncation_keeps_top_eigenpairs():
    model, _ = _linear_model()
    clean, pert, _ = _perturbed(200, random_cov(D_IN, np.random.default_rng(7)), seed=8)
    full = fit_perturbation_covariance(model, clean, pert, layer="lin")
    low = fit_perturbation_covariance(model, clean, pert, layer="lin", rank=2)
    evals, evecs = np.linalg.eigh(full.values)
    np.testing.assert_allclose(
        low.values, (evecs[:, -2:] * evals[-2:]) @ evecs[:, -2:].T, atol=1e-10
    )
    assert np.linalg.matrix_rank(low.values, tol=1e-8) == 2
    assert low.attrs["discarded_variance_fraction"] == pytest.approx(evals[:-2].sum() / evals.sum())
    with pytest.raises(ValueError, match="'rank' parameter"):
        fit_perturbation_covariance(model, clean, pert, layer="lin", rank=D_OUT + 1)


def test_channel_share_with_pointwise_conv():
    rng = np.random.default_rng(9)
    conv = nn.Conv2d(3, 2, 1, bias=False).double()
    w = rng.standard_normal((2, 3))
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(w)[:, :, None, None])
    model = nn.Sequential(OrderedDict(conv=conv))
    cov_c = random_cov(3, rng)
    n = 600
    clean = torch.as_tensor(rng.standard_normal((n, 3, 2, 2)))
    delta = rng.multivariate_normal(np.zeros(3), cov_c, size=(n, 2, 2)).transpose(0, 3, 1, 2)
    cov = fit_perturbation_covariance(
        model, clean, clean + torch.as_tensor(delta), layer="conv", share="channel"
    )
    assert cov.shape == (2, 2) and cov.attrs["share"] == "channel"
    assert cov.attrs["n_samples"] == 4 * n and cov.attrs["unit_shape"] == [2, 2, 2]
    assert_cov_close(cov.values, w @ cov_c @ w.T, 4 * n)
    assert list(cov.channel.values) == [0, 1] and list(cov.channel_j.values) == [0, 1]
    noise = noise_from_covariance(cov, rng=0)  # share taken from attrs
    assert isinstance(noise, CovarianceNoise) and noise.share == "channel"
    assert noise(torch.zeros(3, 2, 5, 5)).shape == (3, 2, 5, 5)


def test_unit_coords_follow_torch_flatten(tiny_cnn, images):
    cov = layer_activation_covariance(tiny_cnn, images, layer="conv2")
    acts = collect_layer_activations(tiny_cnn, images, layer="conv2")
    flat = acts.reshape(acts.shape[0], -1).double().numpy()
    c, y, x = 2, 3, 5
    uid = c * 64 + y * 8 + x
    unit = cov.isel(unit=uid)
    assert (int(unit.channel), int(unit.y), int(unit.x), int(unit.unit_id)) == (c, y, x, uid)
    assert str(unit.layer.values) == "conv2"
    np.testing.assert_allclose(cov.values[uid], np.cov(flat, rowvar=False)[uid], rtol=1e-5)
    total = layer_total_variance(tiny_cnn, images, layer="conv2")
    assert total == pytest.approx(float(np.trace(cov.values)), rel=1e-9)


def test_model_state_restored_and_injected_noise_suspended(tiny_cnn, images):
    tiny_cnn.train()
    clean_acts = collect_layer_activations(tiny_cnn, images, layer="relu2", batch_size=7)
    with inject_noise(tiny_cnn, {"conv1": IsotropicNoise(1.0, rng=0)}):
        acts = collect_layer_activations(tiny_cnn, images, layer="relu2", batch_size=7)
        assert sum(len(m._forward_hooks) for m in tiny_cnn.modules()) == 1
    assert torch.equal(acts, clean_acts)
    assert tiny_cnn.training
    assert sum(len(m._forward_hooks) for m in tiny_cnn.modules()) == 0
    assert acts.shape == (32, 6, 8, 8)


@pytest.mark.parametrize(
    "noise",
    [
        LowRankNoise(np.ones((6, 2)), 0.1, share="channel", rng=0),
        IsotropicNoise(1.0, rng=0),
        PoissonLikeNoise(1.0, rng=0),
    ],
    ids=["low_rank_channel", "isotropic", "poisson"],
)
def test_scale_to_activation_variance(tiny_cnn, images, noise):
    cal = scale_to_activation_variance(noise, tiny_cnn, images, layer="relu2", m=0.5)
    trace = layer_total_variance(tiny_cnn, images, layer="relu2")
    assert cal.activation_variance == pytest.approx(trace)
    assert cal.snr == pytest.approx(2.0) and cal.snr_db == pytest.approx(10 * np.log10(2))
    assert noise.scale == pytest.approx(cal.scale)
    acts = collect_layer_activations(tiny_cnn, images, layer="relu2")
    acts = acts.repeat(20, 1, 1, 1)
    measured = (noise(acts) - acts).pow(2).flatten(1).sum(1).mean().item()
    assert measured == pytest.approx(0.5 * trace, rel=0.05)
    assert noise.expected_total_variance(acts) == pytest.approx(0.5 * trace, rel=1e-4)


def test_invalid_inputs(tiny_cnn, images):
    with pytest.raises(ValueError, match="'method' parameter"):
        fit_perturbation_covariance(tiny_cnn, images, images, layer="conv1", method="median")
    with pytest.raises(ValueError, match="'estimator' parameter"):
        fit_perturbation_covariance(tiny_cnn, images, images, layer="conv1", estimator="mcd")
    with pytest.raises(ValueError, match="shape of 'clean_images'"):
        fit_perturbation_covariance(tiny_cnn, images, images[:5], layer="conv1")
    with pytest.raises(ValueError, match=r"\(V, \*clean_images.shape\)"):
        fit_perturbation_covariance(tiny_cnn, images, images, layer="conv1", method="within_image")
    with pytest.raises(ValueError, match="valid layer names: 'conv1'"):
        fit_perturbation_covariance(tiny_cnn, images, images, layer="conv9")
    with pytest.raises(ValueError, match="more samples"):
        fit_perturbation_covariance(tiny_cnn, images[:1], images[:1], layer="fc")
    with pytest.raises(ValueError, match="'m' parameter"):
        scale_to_activation_variance(IsotropicNoise(1.0), tiny_cnn, images, layer="fc", m=-1)
    with pytest.raises(ValueError, match="relative_scale"):
        noise = IsotropicNoise(1.0, relative_scale=0.1)
        scale_to_activation_variance(noise, tiny_cnn, images, layer="fc", m=0.1)


def test_too_many_units_for_a_dense_covariance():
    model = nn.Sequential(OrderedDict(ident=nn.Identity()))
    x = torch.zeros(3, 16385)
    with pytest.raises(
        ValueError, match=r"16385 x 16385 covariance needs 2\.0 GiB.*share='channel'"
    ):
        fit_perturbation_covariance(model, x, x, layer="ident")


def _channel_samples(h: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N * H * W, C): every image x position is a sample of a C x C covariance."""
    return h.transpose(0, 2, 3, 1).reshape(-1, h.shape[1])


@pytest.mark.parametrize("share", ["flat", "channel"])
def test_all_methods_match_brute_force_numpy(tiny_cnn, images, share):
    """Each method computes exactly its documented formula on the activations of a real
    (nonlinear) layer, checked against numpy on activations from slicing the network."""
    rng = np.random.default_rng(11)
    n_img, n_ver = 10, 3
    clean = images[:n_img]
    pert = clean + 0.3 * torch.as_tensor(rng.standard_normal((n_img, 1, 8, 8)), dtype=clean.dtype)
    versions = clean[None] + 0.3 * torch.as_tensor(
        rng.standard_normal((n_ver, n_img, 1, 8, 8)), dtype=clean.dtype
    )
    prefix = tiny_cnn[:4]  # conv1 relu1 conv2 relu2

    def h(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = prefix(x).double().numpy()
        return out.reshape(len(out), -1) if share == "flat" else _channel_samples(out)

    h_clean, h_pert = h(clean), h(pert)
    d_within = np.concatenate([h(v) - h_clean for v in versions])
    kw = {"layer": "relu2", "share": share}
    fits = {
        "difference": fit_perturbation_covariance(tiny_cnn, clean, pert, **kw),
        "perturbed": fit_perturbation_covariance(tiny_cnn, clean, pert, method="perturbed", **kw),
        "within_image": fit_perturbation_covariance(
            tiny_cnn, clean, versions, method="within_image", **kw
        ),
    }
    expected = {
        "difference": np.cov(h_pert - h_clean, rowvar=False, ddof=1),
        "perturbed": np.cov(h_pert, rowvar=False, ddof=1),
        "within_image": d_within.T @ d_within / len(d_within),  # around the clean activation
    }
    for method, cov in fits.items():
        scale = np.abs(expected[method]).max()
        np.testing.assert_allclose(cov.values, expected[method], rtol=1e-4, atol=1e-5 * scale)
        assert cov.attrs["n_samples"] == (n_ver if method == "within_image" else 1) * len(h_clean)
    assert fits["within_image"].attrs["ddof"] == 0 and fits["difference"].attrs["ddof"] == 1
    assert fits["within_image"].attrs["mean_shift_norm"] == pytest.approx(
        np.linalg.norm(d_within.mean(0)), rel=1e-4
    )


def test_ddof_validated_before_any_forward_pass(tiny_cnn, images):
    calls = []
    handle = tiny_cnn.register_forward_pre_hook(lambda m, i: calls.append(1))
    try:
        for call in (
            lambda: layer_total_variance(tiny_cnn, images, layer="fc", ddof=-1),
            lambda: layer_activation_covariance(tiny_cnn, images, layer="fc", ddof=1.5),
            lambda: scale_to_activation_variance(
                IsotropicNoise(1.0), tiny_cnn, images, layer="fc", m=0.1, ddof="1"
            ),
            lambda: fit_perturbation_covariance(tiny_cnn, images, images, layer="fc", ddof=-2),
        ):
            with pytest.raises(ValueError, match="'ddof' parameter of .* must be an int in"):
                call()
    finally:
        handle.remove()
    assert calls == []


def test_per_module_modes_restored_and_float64_numpy_images_accepted(tiny_cnn, images):
    """A model in train mode with one submodule in eval (e.g. frozen BatchNorm) keeps exactly
    those modes; float64 numpy images work with a float32 model."""
    tiny_cnn.train()
    tiny_cnn.conv2.eval()
    modes = {name: m.training for name, m in tiny_cnn.named_modules()}
    x64 = images.double().numpy()
    acts = collect_layer_activations(tiny_cnn, x64, layer="relu1")
    assert {name: m.training for name, m in tiny_cnn.named_modules()} == modes
    assert acts.dtype == torch.float32
    np.testing.assert_allclose(
        acts.numpy(), collect_layer_activations(tiny_cnn, images, layer="relu1").numpy()
    )
    cov = fit_perturbation_covariance(tiny_cnn, x64, x64 + 0.1, layer="fc", method="perturbed")
    assert cov.shape == (3, 3)
    assert {name: m.training for name, m in tiny_cnn.named_modules()} == modes
