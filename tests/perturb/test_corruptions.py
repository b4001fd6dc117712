"""Tests for neurovar.perturb.corruptions, with the imagecorruptions package as the peer.

imagecorruptions 1.1.2 imports ``pkg_resources`` (gone from recent setuptools), uses
``np.float_`` (gone in numpy 2) in ``fog`` and skimage's removed ``multichannel`` keyword in
``glass_blur``; the fixture below shims those three so the reference runs unchanged otherwise.
It implements the ImageNet-C parameters, so the peer checks call our kernels with *its*
parameters; the CIFAR-10-C parameters themselves are in ``CORRUPTIONS[name].params``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images

from neurovar.perturb import CORRUPTIONS, MODIFICATIONS, SEVERITIES, corrupt, modify
from neurovar.perturb import corruptions as C


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    """16 natural 32x32 RGB uint8 patches (sklearn's bundled sample photos)."""
    imgs = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for i in range(16):
        im = imgs[i % 2]
        r, c = rng.integers(0, im.shape[0] - 32), rng.integers(0, im.shape[1] - 32)
        out.append(im[r : r + 32, c : c + 32])
    return np.stack(out)


@pytest.fixture(scope="module")
def x32(patches) -> torch.Tensor:
    return torch.tensor(patches, dtype=torch.float64).permute(0, 3, 1, 2) / 255


@pytest.fixture(scope="module")
def icc():
    """imagecorruptions.corruptions with the three compatibility shims."""
    if importlib.util.find_spec("imagecorruptions") is None:
        pytest.skip("imagecorruptions not installed")
    mp = pytest.MonkeyPatch()
    if importlib.util.find_spec("pkg_resources") is None and "pkg_resources" not in sys.modules:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda pkg, path: os.path.join(
            os.path.dirname(sys.modules[pkg].__file__), path
        )
        mp.setitem(sys.modules, "pkg_resources", shim)
    import imagecorruptions.corruptions as mod
    import skimage.filters

    gaussian = skimage.filters.gaussian

    def gaussian_compat(*args, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return gaussian(*args, **kwargs)

    mp.setattr(mod, "gaussian", gaussian_compat)
    if not hasattr(np, "float_"):
        mp.setattr(np, "float_", np.float64, raising=False)
    yield mod
    mp.undo()


def _ref(icc, patches, name, severity, *, seed=0, repeats=1) -> torch.Tensor:
    from PIL import Image

    fn = getattr(icc, name)
    state = np.random.get_state()
    try:
        outs = []
        for rep in range(repeats):
            for i, p in enumerate(patches):
                np.random.seed(seed + 1000 * rep + i)
                outs.append(np.uint8(fn(Image.fromarray(p), severity)))
    finally:
        np.random.set_state(state)
    return torch.tensor(np.stack(outs), dtype=torch.float64).permute(0, 3, 1, 2) / 255


# ImageNet-C parameters as in imagecorruptions 1.1.2, severity 1 and 5 (deterministic ones)
DETERMINISTIC = {
    "contrast": (lambda x, c: C._contrast(x, c, None), (0.4, 0.05)),
    "brightness": (lambda x, c: C._brightness(x, c, None), (0.1, 0.5)),
    "defocus_blur": (lambda x, c: C._defocus_blur(x, c, None), ((3, 0.1), (10, 0.5))),
    "zoom_blur": (
        lambda x, z: (x + C._apply_zoom(x, list(z), centered=False)) / (len(z) + 1),
        (np.arange(1, 1.11, 0.01), np.arange(1, 1.31, 0.03)),
    ),
    "pixelate": (lambda x, c: C._pixelate(x, c, None, upsample="nearest"), (0.6, 0.25)),
    "jpeg_compression": (lambda x, q: C._jpeg(x, q, None), (25, 7)),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_match_reference_pixelwise(name, icc, patches, x32):
    kernel, params = DETERMINISTIC[name]
    for severity, param in zip((1, 5), params, strict=True):
        ours = kernel(x32.float(), param).double().clamp(0, 1)
        ref = _ref(icc, patches, name, severity)
        # the reference truncates to uint8: at most one grey level apart
        assert float((ours - ref).abs().max()) <= 1.01 / 255, (name, severity)


def test_motion_blur_matches_reference_with_same_angle(icc, patches, x32):
    ref = _ref(icc, patches, "motion_blur", 3, seed=100)
    angles = []
    state = np.random.get_state()
    try:
        for i in range(len(patches)):
            np.random.seed(100 + i)
            angles.append(np.random.uniform(-45, 45))  # the reference's first draw
    finally:
        np.random.set_state(state)
    ours = C._motion_blur(x32, 15, 8, torch.tensor(angles)).clamp(0, 1)
    assert float((ours - ref).abs().max()) <= 1.01 / 255


# (kernel with the reference's severity-3 parameters, tolerance on mean/std/mean|change|)
RANDOM = {
    "gaussian_noise": (lambda x, g: C._gaussian_noise(x, 0.18, g), 0.01),
    "shot_noise": (lambda x, g: C._shot_noise(x, 12, g), 0.01),
    "impulse_noise": (lambda x, g: C._impulse_noise(x, 0.09, g), 0.01),
    "glass_blur": (lambda x, g: C._glass_blur(x, (1, 2, 3), g), 0.01),
    "elastic_transform": (lambda x, g: C._elastic(x, (250 * 0.085 * 0.16 / 32, 0.01, 0), g), 0.01),
    "snow": (lambda x, g: C._snow(x, (0.55, 0.3, 4, 0.9, 12, 8, 0.7), g), 0.03),
    "fog": (lambda x, g: C._fog(x, (2.5, 1.7), g), 0.03),
    "frost": (lambda x, g: C._frost(x, (0.7, 0.7), g), 0.05),
}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_match_reference_statistics(name, icc, patches, x32):
    kernel, tol = RANDOM[name]
    repeats = 1 if name in ("glass_blur",) else 4
    ref = _ref(icc, patches, name, 3, repeats=repeats)
    gen = torch.Generator().manual_seed(0)
    x = x32.repeat(repeats, 1, 1, 1)
    ours = kernel(x, gen).clamp(0, 1)
    for stat in (
        lambda o: o.mean(),
        lambda o: o.std(),
        lambda o: (o - x).abs().mean(),
    ):
        assert abs(float(stat(ours)) - float(stat(ref))) <= tol, name


SHAPES = [(3, 1, 8, 8), (2, 1, 28, 28), (2, 3, 32, 32), (2, 1, 32, 32), (1, 3, 20, 24)]


@pytest.mark.parametrize("shape", SHAPES)
def test_all_corruptions_all_shapes(shape, rng_guard):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen)
    with rng_guard:
        for name in CORRUPTIONS:
            out = corrupt(x, name, severity=3, rng=0)
            assert out.shape == x.shape and out.dtype == x.dtype, name
            assert float(out.min()) >= 0 and float(out.max()) <= 1, name
            assert not torch.equal(out, x), name


def test_jpeg_pil_fallback_matches(x32):
    u8 = (x32[:4] * 255).round().to(torch.uint8)
    via_pil = C._jpeg_pil(u8, 50).double() / 255
    torch.testing.assert_close(C._jpeg(x32[:4], 50, None), via_pil, atol=1 / 255, rtol=0)
    gray = u8[:, :1]
    assert C._jpeg_pil(gray, 50).shape == gray.shape


def test_single_image_and_float64():
    x = torch.rand(3, 32, 32, dtype=torch.float64)
    out = corrupt(x, "fog", severity=2, rng=0)
    assert out.shape == x.shape and out.dtype == torch.float64


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_reproducible_and_stronger_with_severity(name, x32):
    x = x32[:8].float()
    a = corrupt(x, name, severity=1, rng=3)
    assert torch.equal(a, corrupt(x, name, severity=1, rng=3))
    if CORRUPTIONS[name].stochastic:
        assert not torch.equal(corrupt(x, name, severity=1, rng=4), a)
    else:
        assert torch.equal(corrupt(x, name, severity=1, rng=4), a)
    if name != "elastic_transform":  # CIFAR-10-C's elastic trades affine for local warping
        strong = corrupt(x, name, severity=5, rng=3)
        assert (strong - x).abs().mean() > (a - x).abs().mean()


def test_registry():
    assert len(CORRUPTIONS) == 15
    assert {c.family for c in CORRUPTIONS.values()} == {"noise", "blur", "weather", "digital"}
    assert all(len(c.params) == len(SEVERITIES) for c in CORRUPTIONS.values())
    # spot checks of the CIFAR-10-C parameter set (make_cifar_c.py)
    assert CORRUPTIONS["gaussian_noise"].params == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert CORRUPTIONS["jpeg_compression"].params == (80, 65, 58, 50, 40)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(
        CORRUPTIONS["contrast"](x, severity=2), corrupt(x, "contrast", severity=2)
    )


def test_errors():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"'name' parameter of corrupt must be one of \["):
        corrupt(x, "rain", severity=1)
    with pytest.raises(ValueError, match=r"'severity' parameter of corrupt must be one of \[1, 2"):
        corrupt(x, "fog", severity=6)
    with pytest.raises(ValueError, match=r"'images' parameter of corrupt must be 1 \(gray\)"):
        corrupt(torch.rand(2, 2, 8, 8), "fog", severity=1)
    with pytest.raises(ValueError, match=r"must be in the range \[0, 1\]"):
        corrupt(x * 3, "fog", severity=1)
    with pytest.raises(ValueError, match=r"'strength' parameter of modify must be a number in"):
        modify(x, "contrast", strength=2.0)
    with pytest.raises(ValueError, match=r"'name' parameter of modify must be one of"):
        modify(x, "swirl", strength=0.1)


def test_modifications():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=gen)
    for name, (_, _, identity) in MODIFICATIONS.items():
        torch.testing.assert_close(modify(x, name, strength=identity, rng=0), x)
    flat = modify(x, "contrast", strength=1.0)
    torch.testing.assert_close(flat, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    stds = [float(modify(x, "gaussian_blur", strength=s).std()) for s in (0.5, 1.0, 2.0)]
    assert stds[0] > stds[1] > stds[2]
    occ = modify(torch.zeros(64, 3, 32, 32), "occlusion", strength=0.25, rng=0)
    frac = (occ == 0.5).float().mean(dim=(1, 2, 3))
    torch.testing.assert_close(frac, torch.full((64,), 0.25))
    rot = modify(x, "rotation", strength=90.0)
    torch.testing.assert_close(
        rot[..., 1:-1, 1:-1], torch.rot90(x, 1, dims=(2, 3))[..., 1:-1, 1:-1]
    )
    bright = modify(x, "brightness", strength=-0.2)
    torch.testing.assert_close(bright, (x - 0.2).clamp(0, 1))


def test_frost_without_photographs_warns_and_synthesizes(monkeypatch):
    monkeypatch.setattr(C, "_frost_dir", lambda: None)
    C._frost_image.cache_clear()
    try:
        x = torch.rand(2, 3, 32, 32)
        with pytest.warns(UserWarning, match="procedural plasma-fractal frost"):
            out = corrupt(x, "frost", severity=5, rng=0)
        assert out.shape == x.shape and float((out - x).abs().mean()) > 0.05
    finally:
        C._frost_image.cache_clear()


@pytest.mark.parametrize("param", [(0.4, 1, 2), (0.7, 2, 1)])
def test_glass_blur_vectorized_equals_sequential_loop(param):
    """The pointer-jumping glass blur equals the published pixel-by-pixel loop."""
    sigma, delta, iterations = param
    x = torch.rand(3, 2, 9, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fast = C._glass_blur(x, param, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    n, _, h, w = x.shape
    y = torch.floor(C._gaussian_blur(x, sigma).clamp(0, 1) * 255) / 255
    pos = [(a, b) for a in range(h - delta, delta, -1) for b in range(w - delta, delta, -1)]
    for _ in range(iterations):
        d = torch.randint(-delta, delta, (n, len(pos), 2), generator=gen)
        for k, (a, b) in enumerate(pos):
            for i in range(n):
                y[i, :, a, b] = y[i, :, a + d[i, k, 1], b + d[i, k, 0]].clone()
    torch.testing.assert_close(fast, C._gaussian_blur(y, sigma))


# ---------------------------------------------------------------------------- speedups (issue 22)
# Shapes of the equivalence check: CIFAR-like RGB, MNIST-like gray, small digits, odd sizes.
EQUIV_SHAPES = [(5, 3, 32, 32), (4, 1, 28, 28), (3, 1, 8, 8), (2, 3, 20, 24)]
# corruptions whose random stream changed on purpose (same distribution, other draws)
NEW_STREAM: set[str] = set()


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_fast_paths_equal_previous_implementation(name, x32):
    """Every corruption gives, bit for bit, the images of the code before the speedups."""
    import _corruptions_v0 as V0

    if name in NEW_STREAM:
        pytest.skip("random stream changed on purpose; checked in distribution below")
    gen = torch.Generator().manual_seed(7)
    inputs = [x32[:6].float(), x32[:3].double()]
    inputs += [torch.rand(s, generator=gen) for s in EQUIV_SHAPES]
    inputs.append((torch.rand(4, 3, 32, 32, generator=gen) * 255).round() / 255)  # uint8 grid
    for x in inputs:
        for severity in SEVERITIES:
            new = corrupt(x, name, severity=severity, rng=11)
            old = V0.corrupt(x, name, severity=severity, rng=11)
            assert new.dtype == old.dtype and torch.equal(new, old), (name, x.shape, severity)
    single = x32[0].float()
    assert torch.equal(
        corrupt(single, name, severity=2, rng=3), V0.corrupt(single, name, severity=2, rng=3)
    )


@pytest.mark.parametrize("mode", ["edge", "reflect101", "symmetric"])
def test_pad_axis_equals_pad_index(mode):
    """Slice-and-flip padding == indexing with _pad_index, for short and folded pads."""
    for n in (1, 2, 3, 5, 8):
        x = torch.rand(2, 3, n, n + 1)
        for p in range(12):
            for dim in (2, 3):
                ref = x.index_select(dim, C._pad_index(x.shape[dim], p, p, mode, x.device))
                assert torch.equal(C._pad_axis(x, dim, p, mode), ref), (n, p, dim)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision's codecs -> torchcodec
@pytest.mark.parametrize("side", [16384, 40])
def test_jpeg_gray_mosaic_equals_image_by_image(side, monkeypatch):
    """One mosaic JPEG per chunk of gray images == every image coded alone (any size: partial
    8x8 blocks are completed by repeating the last row and column, as libjpeg does)."""
    pytest.importorskip("torchvision")
    from torchvision.io import decode_jpeg, encode_jpeg

    from neurovar.perturb import _corruption_kernels as K

    monkeypatch.setattr(K, "_MOSAIC_SIDE", side)  # 40: several mosaics, one partly empty
    gen = torch.Generator().manual_seed(0)
    for shape in [(7, 1, 28, 28), (5, 1, 8, 8), (9, 1, 20, 13), (3, 1, 1, 1), (6, 1, 17, 9)]:
        x = torch.rand(shape, generator=gen)
        for u8 in ((x * 255).round().to(torch.uint8), (F.avg_pool2d(x, 3, 1, 1) * 255).byte()):
            for quality in (80, 40, 7):
                alone = torch.stack(decode_jpeg(encode_jpeg(list(u8), quality=quality)))
                mosaic = C._jpeg_gray_mosaic(u8, quality, encode_jpeg, decode_jpeg)
                assert torch.equal(mosaic, alone), (shape, quality)


def test_in_place_fast_paths_keep_autograd():
    """The in-place arithmetic and buffers of the fast paths step aside for autograd."""
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    for name in ("motion_blur", "defocus_blur", "snow", "gaussian_noise", "contrast", "fog"):
        y = corrupt(x, name, severity=3, rng=0)
        y.sum().backward()
        assert torch.equal(y.detach(), corrupt(x.detach(), name, severity=3, rng=0)), name
    assert float(x.grad.abs().sum()) > 0


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a float tensor (torch.equal treats -0.0 and +0.0 as equal)."""
    return t.contiguous().view({torch.float32: torch.int32, torch.float64: torch.int64}[t.dtype])


def _impulse_where(x: torch.Tensor, c: float, seed: int) -> torch.Tensor:
    """The formula of the frozen previous module: where(u < c, u >= c/2, x).clamp(0, 1)."""
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(u < c, (u >= 0.5 * c).to(x.dtype), x).clamp(0, 1)


@pytest.mark.parametrize("chunk", [None, 1 << 14])
@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64])
def test_impulse_fast_path_same_bits(default_dtype, chunk, monkeypatch):
    """The vectorized clamp(x, u < c, u >= c/2) of impulse noise gives, bit for bit (signed
    zeros included), where(u < c, u >= c/2, x): random sizes across the chunk boundary, both
    float dtypes, images full of exact 0 / 1 (ties with the salt and pepper values), high noise
    levels, -0.0 in the input (the fallback path), and with float64 as torch's default dtype
    (then the draw is float64 too); with the module's chunk size and a small one (several
    chunks of images)."""
    if chunk is not None:
        monkeypatch.setattr(C, "_IMPULSE_CHUNK", chunk)
    gen = torch.Generator().manual_seed(1)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        chunk = C._IMPULSE_CHUNK
        sizes = [1, 7, 16, chunk - 1, chunk, chunk + 1, 3 * chunk + 5]
        sizes += [int(v) for v in torch.randint(2, 3 * chunk, (4,), generator=gen)]
        for k, n in enumerate(sizes):
            for dtype in (torch.float32, torch.float64):
                x = torch.rand(n, generator=gen, dtype=dtype)
                x[torch.rand(n, generator=gen) < 0.3] = 0.0  # exact ties with pepper
                x[torch.rand(n, generator=gen) < 0.3] = 1.0  # and with salt
                if k % 3 == 2:
                    x[torch.rand(n, generator=gen) < 0.1] = -0.0
                for c in (0.01, 0.09, 0.5, 1.0):
                    ref = _impulse_where(x, c, seed=n + k)
                    out = C._impulse_noise(x, c, torch.Generator().manual_seed(n + k))
                    assert out.dtype == ref.dtype and torch.equal(_bits(out), _bits(ref)), (n, c)
        # through corrupt() (which skips the clip for this kernel), on image batches: contiguous,
        # channels-last (an HWC array permuted), a strided slice; with and without -0.0 (45
        # images of 3x40x37: with the small chunk, 3 per chunk, the last chunk partial)
        base = torch.rand(45, 40, 37, 3, generator=gen, dtype=default_dtype)
        base[:, :4] = 0.0
        for x in (
            base.permute(0, 3, 1, 2),
            base.permute(0, 3, 1, 2).contiguous(),
            base.permute(0, 3, 1, 2)[:, :, ::2],
        ):
            for neg in (False, True):
                if neg:
                    x = x.clone()
                    x[:, :, -4:] = -0.0
                for sev in SEVERITIES:
                    c = CORRUPTIONS["impulse_noise"].params[sev - 1]
                    ref = _impulse_where(x, c, seed=5)
                    out = corrupt(x, "impulse_noise", severity=sev, rng=5)
                    assert torch.equal(_bits(out), _bits(ref)), (x.stride(), neg, sev)
    finally:
        torch.set_default_dtype(prev)


def test_range_check_in_memory_order_any_layout():
    """The one-pass range check of corrupt() reads the values in memory order where the
    storage is dense: the same min / max (and NaN) for contiguous, channels-last, permuted,
    strided, expanded and single-image inputs, and out-of-range or NaN values still refused."""
    gen = torch.Generator().manual_seed(0)
    hwc = torch.rand(3, 10, 12, 3, generator=gen, dtype=torch.float64)
    views = [
        hwc.permute(0, 3, 1, 2),  # channels-last
        hwc.permute(0, 3, 1, 2).contiguous(),
        hwc.permute(0, 3, 2, 1),  # H and W swapped too
        hwc.permute(0, 3, 1, 2)[:, :, 1::2],  # not dense: reduced as is
        hwc[:1].permute(0, 3, 1, 2).expand(4, 3, 10, 12),  # overlapping
        hwc[0].permute(2, 0, 1),
    ]
    for v in views:
        flat = C._memory_flat(v)
        assert torch.equal(torch.stack(torch.aminmax(flat)), torch.stack(torch.aminmax(v)))
        assert flat.numel() == v.numel() or flat is v
        out = corrupt(v, "contrast", severity=2)
        assert out.shape == v.shape
        for bad in (-0.25, 1.5, float("nan")):
            w = v.clone(memory_format=torch.preserve_format)
            w[..., 1, 2] = bad
            with pytest.raises(ValueError):
                corrupt(w, "contrast", severity=2)


def test_pixelate_after_inference_mode_still_differentiable():
    """The pixelate matrices are cached: one built under inference_mode must not be an
    inference tensor, or every later call on images that require grad fails."""
    from neurovar.perturb._corruption_kernels import _pixelate_matrix, _pixelate_matrix_as

    _pixelate_matrix.cache_clear()
    _pixelate_matrix_as.cache_clear()
    x = torch.rand(2, 3, 13, 11, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        first = corrupt(x, "pixelate", severity=3, rng=0)
    y = x.clone().requires_grad_(True)
    out = corrupt(y, "pixelate", severity=3, rng=0)
    out.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
    assert torch.equal(out.detach(), first)


def test_impulse_fallback_clips_like_before_with_negative_zero():
    """Inputs with -0.0 take the where() path; its output is clipped as corrupt() did before
    (clamp(0, 1) after where), whatever the backend's sign of zero."""
    import _corruptions_v0 as v0

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[:, :, :2] = -0.0
    new = corrupt(x, "impulse_noise", severity=5, rng=3)
    old = v0.corrupt(x, "impulse_noise", severity=5, rng=3)
    assert torch.equal(new.view(torch.int32), old.view(torch.int32))
