"""Tests for neurovar.perturb.imagenet_c.corrupt_paper against the paper's own pipeline.

The reference is ``MnistData._corrupt`` of Preble et al. (2026) (scripts/data_utils.py lines
138-156 of glomerulus-lab/structured-noise-robustness), copied below with ``imagecorruptions``
1.1.2 (skipped when absent; ``pkg_resources`` shimmed as in test_corruptions.py).
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

from neurovar.perturb import IMAGENET_C_PARAMS, PAPER_CORRUPTIONS, SEVERITIES, corrupt_paper
from neurovar.perturb import imagenet_c as IC


def _digits(n: int) -> torch.Tensor:
    """(n, 1, 28, 28) MNIST-like digits: sklearn's 8x8 digits at 20x20, centered, k/255."""
    from sklearn.datasets import load_digits

    d = torch.tensor(load_digits().images[:n], dtype=torch.float32)[:, None] / 16
    d = F.pad(F.interpolate(d, size=(20, 20), mode="bilinear", align_corners=False), (4,) * 4)
    return (d.clamp(0, 1) * 255).round().to(torch.uint8).float() / 255  # ToTensor: u8 / 255


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return _digits(24)


@pytest.fixture(scope="module")
def paper():
    """The paper's ``_corrupt`` (data_utils.py lines 138-156) on one (1, 28, 28) image."""
    if importlib.util.find_spec("imagecorruptions") is None:
        pytest.skip("imagecorruptions not installed")
    mp = pytest.MonkeyPatch()
    if importlib.util.find_spec("pkg_resources") is None and "pkg_resources" not in sys.modules:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda pkg, path: os.path.join(
            os.path.dirname(sys.modules[pkg].__file__), path
        )
        mp.setitem(sys.modules, "pkg_resources", shim)
    import torchvision
    import torchvision.transforms.v2  # the paper: from torchvision.transforms import v2
    from imagecorruptions import corrupt
    from skimage import img_as_float32, img_as_ubyte

    def _corrupt(image: torch.Tensor, name: str, severity: int) -> torch.Tensor:
        formatted_img = image.numpy()
        formatted_img = np.pad(formatted_img, ((0,), (2,), (2,)), constant_values=(0, 0)).squeeze()
        formatted_img = img_as_ubyte(formatted_img)
        corrupted_img = corrupt(formatted_img, severity=severity, corruption_name=name)[
            2:30, 2:30, :
        ]
        corrupted_img = img_as_float32(corrupted_img)
        corrupted_img = np.expand_dims(corrupted_img, 0)
        result = torch.from_numpy(corrupted_img).squeeze()
        result = result.permute(2, 0, 1)
        if name in ["impulse_noise", "shot_noise", "frost", "gaussian_noise"]:
            result = torchvision.transforms.v2.Grayscale()(result)
        else:
            result = result[0, :, :]
        return result

    def run(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
        state = np.random.get_state()
        try:
            outs = []
            for i, img in enumerate(images):
                np.random.seed(seed + i)
                outs.append(_corrupt(img, name, severity).reshape(1, 28, 28))
        finally:
            np.random.set_state(state)
        return torch.stack(outs)

    yield run
    mp.undo()


@pytest.mark.parametrize("name", ["brightness", "contrast"])
def test_deterministic_equal_paper_pipeline(name, paper, digits):
    for severity in SEVERITIES:
        ours = corrupt_paper(digits, name, severity=severity)
        ref = paper(digits, name, severity)
        assert ours.dtype == ref.dtype == torch.float32
        diff = (ours - ref).abs()
        # same float ops in the same order; a mean summed in another order could move a value
        # that sits exactly on a uint8 boundary by one level
        assert float(diff.max()) <= 1.01 / 255, (name, severity)
        assert float((diff > 0).float().mean()) <= 1e-3, (name, severity)


def test_motion_blur_equals_paper_pipeline_given_the_angles(paper, digits):
    """imagecorruptions' motion_blur is its numpy shift-and-add (no Wand): deterministic given
    the angle, its one draw ``np.random.uniform(-45, 45)``."""
    for severity in SEVERITIES:
        ref = paper(digits, "motion_blur", severity, seed=50)
        angles = []
        state = np.random.get_state()
        try:
            for i in range(len(digits)):
                np.random.seed(50 + i)
                angles.append(np.random.uniform(-45, 45))
        finally:
            np.random.set_state(state)
        param = IMAGENET_C_PARAMS["motion_blur"][severity - 1]
        drawn = np.array(angles)
        ours = IC._paper_pipeline(
            digits,
            "motion_blur",
            lambda u, p=param, a=drawn: IC._motion_blur(u, p, None, a),
        )
        assert torch.equal(ours, ref), severity
        assert not torch.equal(ours, digits)


# tolerances on: mean, std, mean |change|, fraction of changed pixels
RANDOM_TOL = {
    "gaussian_noise": (0.004, 0.004, 0.004, 0.01),
    "impulse_noise": (0.004, 0.006, 0.004, 0.006),
    "snow": (0.025, 0.02, 0.025, 0.03),
}


@pytest.mark.parametrize("name", sorted(RANDOM_TOL))
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_random_match_paper_pipeline_in_distribution(name, severity, paper, digits):
    repeats = 8 if name == "snow" else 4  # snow: few large random flakes per image
    x = digits.repeat(repeats, 1, 1, 1)
    ref = paper(x, name, severity, seed=1000 * severity)
    ours = corrupt_paper(x, name, severity=severity, rng=severity)
    stats = (
        lambda o: o.mean(),
        lambda o: o.std(),
        lambda o: (o - x).abs().mean(),
        lambda o: ((o - x).abs() > 0.5 / 255).float().mean(),
    )
    for k, (stat, tol) in enumerate(zip(stats, RANDOM_TOL[name], strict=True)):
        a, b = float(stat(ours)), float(stat(ref))
        assert abs(a - b) <= tol, (name, severity, k, a, b)


def test_shape_dtype_range_reproducible_and_global_rng_untouched(digits, rng_guard):
    with rng_guard:
        for name in PAPER_CORRUPTIONS:
            for severity in SEVERITIES:
                out = corrupt_paper(digits[:4], name, severity=severity, rng=3)
                assert out.shape == (4, 1, 28, 28) and out.dtype == torch.float32
                assert float(out.min()) >= 0 and float(out.max()) <= 1
                assert not torch.equal(out, digits[:4]), (name, severity)
                assert torch.equal(out, corrupt_paper(digits[:4], name, severity=severity, rng=3))
    noisy = [corrupt_paper(digits[:4], "snow", severity=2, rng=r) for r in (0, 1)]
    assert not torch.equal(*noisy)
    gen = torch.Generator().manual_seed(0)
    assert corrupt_paper(digits[:2], "snow", severity=1, rng=gen).shape == (2, 1, 28, 28)
    single = corrupt_paper(digits[0].double(), "contrast", severity=2)
    assert single.shape == (1, 28, 28) and single.dtype == torch.float64
    # float64 input: same pipeline (uint8 in the middle), so same images
    torch.testing.assert_close(single.float(), corrupt_paper(digits[:1], "contrast", severity=2)[0])
    bigger = corrupt_paper(torch.rand(2, 1, 32, 30), "motion_blur", severity=2, rng=0)
    assert bigger.shape == (2, 1, 32, 30)


def test_works_without_imagecorruptions(monkeypatch, digits):
    """The module never imports imagecorruptions (an optional peer, not a dependency)."""
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # import would raise
    for name in PAPER_CORRUPTIONS:
        assert corrupt_paper(digits[:2], name, severity=3, rng=0).shape == (2, 1, 28, 28)
    src = open(IC.__file__, encoding="utf-8").read()
    assert "import imagecorruptions" not in src and "from imagecorruptions" not in src


def test_gray_conversion_and_truncation_quirks():
    """Noise corruptions go through torchvision's Grayscale (weights sum to 0.9999); the
    others keep channel 0; values are truncated (np.uint8), not rounded."""
    white = torch.ones(1, 1, 28, 28)
    out = IC._paper_pipeline(white, "gaussian_noise", lambda u: u.expand(-1, 3, -1, -1))
    assert torch.allclose(out, torch.full_like(out, 0.9999), atol=1e-6)
    assert torch.equal(IC._paper_pipeline(white, "contrast", lambda u: u), white)
    almost = IC._paper_pipeline(white, "contrast", lambda u: u - 0.001)
    torch.testing.assert_close(almost, torch.full_like(almost, 254 / 255))


def test_errors(digits):
    with pytest.raises(ValueError, match=r"'name' parameter of corrupt_paper must be one of"):
        corrupt_paper(digits, "fog", severity=1)
    with pytest.raises(ValueError, match=r"'severity' parameter of corrupt_paper"):
        corrupt_paper(digits, "snow", severity=0)
    with pytest.raises(ValueError, match=r"'images' parameter of corrupt_paper must be 1 channel"):
        corrupt_paper(torch.rand(2, 3, 28, 28), "snow", severity=1)
    with pytest.raises(ValueError, match=r"at least 28x28"):
        corrupt_paper(torch.rand(2, 1, 8, 8), "snow", severity=1)
    with pytest.raises(ValueError, match=r"in the range \[0, 1\]"):
        corrupt_paper(digits * 2, "snow", severity=1)
