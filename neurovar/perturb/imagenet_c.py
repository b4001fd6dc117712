"""ImageNet-C corruptions applied to 28x28 gray digits the way Preble et al. (2026) apply them.

:func:`corrupt_paper` reproduces, batched in torch and without the ``imagecorruptions`` package,
the pipeline of ``MnistData._corrupt`` in the paper's code (github.com/glomerulus-lab/
structured-noise-robustness, ``scripts/data_utils.py`` lines 138-156), which runs
``imagecorruptions.corrupt`` (Michaelis et al. 2019; the **ImageNet-C parameter set** of
Hendrycks & Dietterich 2019, not the CIFAR-10-C one of :func:`neurovar.perturb.corrupt`) on
MNIST / FashionMNIST digits:

1. the (1, 28, 28) float image in [0, 1] is zero-padded by 2 pixels to 32x32 (imagecorruptions
   refuses images under 32x32) and converted to uint8 with ``skimage.img_as_ubyte``
   (:math:`\\operatorname{rint}(255 x)` in the image's float type);
2. ``imagecorruptions.corrupt`` treats the 2-D gray image as 3 identical RGB channels, corrupts
   it in float and truncates the result to uint8 (``np.uint8``: floor, not rounding);
3. the result is cropped back to ``[2:30, 2:30]`` and converted with ``skimage.img_as_float32``
   (:math:`u \\cdot \\mathrm{float32}(1/255)`);
4. for ``impulse_noise``, ``shot_noise``, ``frost`` and ``gaussian_noise`` (whose three channels
   differ) the channels are mixed by torchvision's ``Grayscale``
   (:math:`0.2989 R + 0.587 G + 0.114 B`); for the others channel 0 is kept.

The float operations of the deterministic corruptions are the reference's, in its order and
precision, so ``brightness``, ``contrast`` and ``motion_blur`` (given the blur angles) give the
reference's images (pixel for pixel on the tested digits); the random ones (``gaussian_noise``, ``impulse_noise``, ``snow``) follow the
reference's distributions with draws from ``rng`` (see ``tests/perturb/test_imagenet_c.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neurovar._validation import (
    check_rng,
    param_error,  # one order: (name, owner, ...)
)

from ._utils import RNGLike, make_generator, seed_from
from .corruptions import SEVERITIES, _check_images

__all__ = ["PAPER_CORRUPTIONS", "IMAGENET_C_PARAMS", "corrupt_paper"]

#: The six corruptions of Preble et al. (2026), in the paper's order.
PAPER_CORRUPTIONS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "gaussian_noise",
    "impulse_noise",
    "motion_blur",
    "snow",
)

#: ImageNet-C parameters of the six corruptions, severities 1-5 (imagecorruptions 1.1.2,
#: ``corruptions.py``, = ``make_imagenet_c.py`` of github.com/hendrycks/robustness).
IMAGENET_C_PARAMS: Mapping[str, tuple[Any, ...]] = MappingProxyType(
    {
        # noise standard deviation on the [0, 1] scale
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        # fraction of values set to 0 or 1
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        # (radius, sigma) of the one-sided Gaussian line kernel of width 2 radius + 1
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        # (mean, std, zoom, threshold, blur radius, blur sigma, blend) of the snow layer
        "snow": (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
        # added to the HSV value (= the gray level of a gray image)
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        # factor on the deviation from the image mean
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    }
)

# data_utils.py line 151: the corruptions whose channels the paper converts to grayscale
_TO_GRAY = frozenset({"impulse_noise", "shot_noise", "frost", "gaussian_noise"})
_PAD = 2  # data_utils.py line 142: 28x28 -> 32x32


# ------------------------------------------------------------------ imagecorruptions' algorithms
# Each kernel maps u, the padded uint8 image as float64 (N, 1, H, W) with integer values, to the
# corrupted image in [0, 255] before the uint8 truncation, (N, 1 or 3, H, W) float64.


def _brightness(u: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    """``brightness``: HSV value + c. For 3 equal channels skimage's rgb -> hsv -> rgb round
    trip has saturation 0 and gives back :math:`\\min(x + c, 1)` exactly, in every channel."""
    return (u / 255 + c).clamp_(0, 1).mul_(255)


def _contrast(u: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    """``contrast``: :math:`(x - \\bar x) c + \\bar x`, the mean over the padded image."""
    x = u / 255
    m = x.mean(dim=(2, 3), keepdim=True)
    return (x - m).mul_(c).add_(m).clamp_(0, 1).mul_(255)


def _gaussian_noise(u: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    """``gaussian_noise``: :math:`x + \\mathcal N(0, c^2)`, independently in the 3 channels."""
    n, _, h, w = u.shape
    # float32 draws (several times faster than float64 ones on CPU), float64 arithmetic
    noise = torch.randn((n, 3, h, w), generator=gen, device=u.device).to(torch.float64)
    return noise.mul_(c).add_(u / 255).clamp_(0, 1).mul_(255)


def _impulse_noise(u: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    """``impulse_noise``: skimage ``random_noise(mode='s&p', amount=c)`` in the 3 channels: a
    value is flipped with probability ``c`` (``U <= c``), to 1 or 0 with probability 1/2."""
    n, _, h, w = u.shape
    shape = (n, 3, h, w)
    flipped = torch.rand(shape, generator=gen, device=u.device) <= c
    salted = torch.rand(shape, generator=gen, device=u.device) <= 0.5
    x = (u / 255).expand(shape)
    out = torch.where(flipped & salted, 1.0, torch.where(flipped & ~salted, 0.0, x))
    return out.clamp_(0, 1).mul_(255)


def _line_kernel(radius: int, sigma: float) -> np.ndarray:
    """imagecorruptions' ``getMotionBlurKernel(2 radius + 1, sigma)``, with its float ops."""
    width = 2 * radius + 1
    t = np.arange(width)
    k = (np.exp(-(t**2) / (2 * (sigma**2)))) / (np.sqrt(2 * np.pi) * sigma)
    return k / np.sum(k)


def _shift_blur(x: torch.Tensor, radius: int, sigma: float, angle_deg: np.ndarray) -> torch.Tensor:
    """imagecorruptions' numpy ``_motion_blur`` (not Wand/ImageMagick), per image angle.

    :math:`y = \\sum_i k_i\\, x(h - \\delta y_i, w - \\delta x_i)` with edge replication (its
    ``shift``), offsets :math:`\\delta y_i = -\\lceil i \\sin\\theta - 1/2 \\rceil`,
    :math:`\\delta x_i = -\\lceil i \\cos\\theta - 1/2 \\rceil`, summed in order of ``i`` in
    float64 and stopped (not renormalized) at the first offset that leaves the image.
    """
    n, c, h, w = x.shape
    k = _line_kernel(radius, sigma)
    width = k.size
    theta = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    p0, p1 = width * np.sin(theta), width * np.cos(theta)
    hyp = np.hypot(p0, p1)
    i = np.arange(width)[None, :]
    dy = -np.ceil(i * p0[:, None] / hyp[:, None] - 0.5).astype(np.int64)  # (n, width)
    dx = -np.ceil(i * p1[:, None] / hyp[:, None] - 0.5).astype(np.int64)
    alive = np.logical_and.accumulate((np.abs(dy) < h) & (np.abs(dx) < w), axis=1)
    weights = torch.as_tensor(np.where(alive, k[None, :], 0.0), device=x.device)  # (n, width)
    dy_t = torch.as_tensor(dy, device=x.device)
    dx_t = torch.as_tensor(dx, device=x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    shifted = torch.empty_like(flat)
    for j in range(int(alive.sum(axis=1).max(initial=0))):
        r = (rows[None] - dy_t[:, j, None]).clamp_(0, h - 1)
        q = (cols[None] - dx_t[:, j, None]).clamp_(0, w - 1)
        idx = (r[:, :, None] * w + q[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        torch.gather(flat, 2, idx, out=shifted)
        out += shifted.mul_(weights[:, j].view(n, 1, 1))
    return out.reshape(n, c, h, w)


def _uniform_np(n: int, low: float, high: float, gen: torch.Generator) -> np.ndarray:
    u = torch.rand(n, generator=gen, device=gen.device, dtype=torch.float64).cpu().numpy()
    return low + (high - low) * u


def _motion_blur(
    u: torch.Tensor, c: tuple[int, float], gen: torch.Generator, angles: np.ndarray | None = None
) -> torch.Tensor:
    """``motion_blur``: line blur of radius ``c[0]``, sigma ``c[1]`` at an angle uniform in
    [-45, 45] degrees per image (``angles`` overrides the draw), on the uint8 values."""
    if angles is None:
        angles = _uniform_np(u.shape[0], -45.0, 45.0, gen)
    return _shift_blur(u, c[0], c[1], angles).clamp_(0, 255)


def _snow(u: torch.Tensor, c: tuple[float, ...], gen: torch.Generator) -> torch.Tensor:
    """``snow``: a thresholded, zoomed, motion-blurred noise layer added twice (once rotated by
    180 degrees) to the brightened image.

    As in imagecorruptions (and unlike CIFAR-10-C): the zoomed layer keeps its full size
    ``round(ceil(side / zoom) zoom)`` (33 or 36 for a 32x32 image at zoom 3 or 4.5) through
    the motion blur and is cropped to the image from its top-left corner afterwards.
    """
    mean, std, zoom, threshold, radius, sigma, blend = c
    n, _, h, w = u.shape
    layer = torch.randn((n, 1, h, w), generator=gen, device=u.device).to(torch.float64)
    layer = layer.mul_(std).add_(mean)
    # clipped_zoom: central ceil(side / zoom) crop, scipy zoom order 1 (align_corners=True)
    ch, cw = math.ceil(h / float(zoom)), math.ceil(w / float(zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    size = (int(round(ch * zoom)), int(round(cw * zoom)))
    layer = F.interpolate(
        layer[..., top : top + ch, left : left + cw], size=size, mode="bilinear", align_corners=True
    )
    layer = layer.masked_fill_(layer < threshold, 0.0).clamp_(0, 1)
    angles = _uniform_np(n, -135.0, -45.0, gen)
    layer = _shift_blur(layer, radius, sigma, angles)
    layer = torch.round(layer * 255).div_(255)[..., :h, :w]
    x = u.to(torch.float32) / 255  # imagecorruptions: np.array(x, dtype=np.float32) / 255.
    # cv2 RGB2GRAY of three equal channels is the channel itself (to float32 rounding)
    base = blend * x + (1 - blend) * torch.maximum(x, x * 1.5 + 0.5)
    out = base.double() + layer + torch.flip(layer, dims=(-2, -1))
    return out.clamp_(0, 1).mul_(255)


_KERNELS: Mapping[str, Callable[..., torch.Tensor]] = MappingProxyType(
    {
        "brightness": _brightness,
        "contrast": _contrast,
        "gaussian_noise": _gaussian_noise,
        "impulse_noise": _impulse_noise,
        "motion_blur": _motion_blur,
        "snow": _snow,
    }
)


# ------------------------------------------------------------------ the paper's wrapper
def _to_ubyte(x: torch.Tensor) -> torch.Tensor:
    """skimage ``img_as_ubyte`` of a float image in [0, 1]: rint(255 x) in x's float type."""
    return torch.mul(x, 255).round_().clamp_(0, 255)


def _paper_pipeline(
    x: torch.Tensor, name: str, kernel: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Pad, uint8, ``kernel``, truncate, crop, float32, gray or channel 0 (data_utils.py
    lines 141-155); ``x`` is (N, 1, H, W) float32/float64, the result (N, 1, H, W) float32."""
    u = _to_ubyte(F.pad(x, (_PAD,) * 4)).to(torch.float64)
    out = kernel(u).floor()  # np.uint8 of values in [0, 255]
    out = out[..., _PAD:-_PAD, _PAD:-_PAD].to(torch.float32) * (1.0 / 255)  # img_as_float32
    if name in _TO_GRAY:
        if out.shape[1] == 1:
            out = out.expand(-1, 3, -1, -1)
        r, g, b = out.unbind(dim=1)  # torchvision v2 Grayscale, same float32 ops
        return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)
    return out[:, :1].contiguous()


def corrupt_paper(
    images: torch.Tensor, name: str, *, severity: int, rng: RNGLike = None
) -> torch.Tensor:
    """Corrupt gray digits as Preble et al. (2026) do: ImageNet-C corruptions at 32x32, cropped.

    Reproduces ``MnistData._corrupt`` of the paper's code (``scripts/data_utils.py`` lines
    138-156 of github.com/glomerulus-lab/structured-noise-robustness) batched in torch, without
    the ``imagecorruptions`` package: each image is zero-padded by 2 pixels, converted to uint8
    (``img_as_ubyte``), corrupted by imagecorruptions' algorithm with the **ImageNet-C**
    parameters (Hendrycks & Dietterich 2019, ``IMAGENET_C_PARAMS``) on 3 identical channels,
    truncated to uint8, cropped back, converted to float32 (``img_as_float32``) and, for the
    noise corruptions, converted to gray by torchvision's ``Grayscale``
    (:math:`0.2989 R + 0.587 G + 0.114 B`); otherwise channel 0 is kept.

    Parameters
    ----------
    images
        Float tensor in [0, 1] of shape (N, 1, H, W) or (1, H, W), H, W >= 28 (the paper:
        28x28 MNIST / FashionMNIST), any device.
    name
        One of ``PAPER_CORRUPTIONS``: ``"brightness"``, ``"contrast"``, ``"gaussian_noise"``,
        ``"impulse_noise"``, ``"motion_blur"``, ``"snow"``.
    severity
        1 (mild) to 5 (strong), as ``imagecorruptions.corrupt(..., severity=...)``.
    rng
        None, int seed, numpy or torch Generator: the only source of randomness (noise, blur
        angles, snow layers); global RNGs are untouched.

    Returns
    -------
    torch.Tensor
        The corrupted images, same shape, dtype and device, values on the grid
        :math:`\\{k / 255\\}` (times 0.9999 after the gray conversion), in [0, 1].

    Notes
    -----
    Agreement with ``imagecorruptions`` 1.1.2 (``tests/perturb/test_imagenet_c.py``):
    ``brightness`` and ``contrast`` pixel for pixel (the float ops are the reference's, in its
    order; a mean summed in another order could move a value sitting exactly on a uint8
    boundary by one level), ``motion_blur`` pixel for pixel given the same angles (it uses
    imagecorruptions' own numpy shift-and-add blur, not Wand/ImageMagick), the random ones in
    distribution. Quirks of the paper's pipeline, reproduced or worth knowing:

    - Values are truncated to uint8 (``np.uint8``), not rounded, after the corruption.
    - Grayscale weights sum to 0.9999: a white pixel of a noise corruption becomes 0.9999,
      and the gray conversion averages three independent noise channels (the gray noise is
      weaker than the per-channel noise).
    - ``snow`` draws its layer at 32x32 and zooms and blurs it at 32, 33 or 36 pixels (the zoom
      output is not cropped before the blur); 32x32 inputs work in imagecorruptions.
    - imagecorruptions' ``impulse_noise`` calls skimage's ``random_noise`` with an unseeded
      ``np.random.default_rng()``, so the paper's impulse noise cannot be reproduced from
      ``np.random.seed``; here it comes from ``rng`` like the rest.
    - In ``_transform_data`` (data_utils.py lines 190-192) the ``torch.clamp(modified_img, 0,
      1)`` comes after the image was appended to the dataset and rebinds a local name, so it
      has no effect (harmless: values are in [0, 1] already); the assertion before it,
      ``torch.isnan(modified_img.any()) == False``, tests a boolean for NaN and always passes.
    - The paper stores channel 0 as a (28, 28) tensor but the gray conversion as (1, 28, 28);
      here every output is (N, 1, H, W).

    References
    ----------
    D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to Common
    Corruptions and Perturbations", ICLR 2019. C. Michaelis et al., "Benchmarking Robustness in
    Object Detection" (the ``imagecorruptions`` package), 2019. Preble, Venkatesh, Mihalas &
    Harris, "Neural Variability Enhances Artificial Network Robustness", 2026.
    """
    owner = "corrupt_paper"
    if not isinstance(name, str) or name not in _KERNELS:
        raise param_error("name", owner, f"one of {sorted(_KERNELS)}", name)
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise param_error("severity", owner, f"one of {list(SEVERITIES)}", severity)
    check_rng(rng, owner=owner)
    x, single = _check_images(images, owner)
    if x.shape[1] != 1:
        raise param_error("images", owner, "1 channel (gray digits) in dim 1", x.shape[1])
    if min(x.shape[-2:]) < 32 - 2 * _PAD:
        raise param_error(
            "images", owner, "at least 28x28 pixels (32x32 once padded)", tuple(x.shape[-2:])
        )
    gen = make_generator(seed_from(rng), x.device)
    param = IMAGENET_C_PARAMS[name][int(severity) - 1]
    kernel = _KERNELS[name]
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = _paper_pipeline(work.detach(), name, lambda u: kernel(u, param, gen)).to(x.dtype)
    return out[0] if single else out
