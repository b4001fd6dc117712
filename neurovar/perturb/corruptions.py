"""Naturalistic image corruptions, batched in torch: CIFAR-10-C and parametric modifications.

:func:`corrupt` applies one of the 15 common corruptions of Hendrycks & Dietterich (2019),
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (ICLR), at
severity 1-5, with the **CIFAR-10-C parameter set** (``make_cifar_c.py`` of
github.com/hendrycks/robustness). Every corruption runs on a whole batch ``(N, C, H, W)`` in
[0, 1] on the images' device, for grayscale (C=1) and RGB (C=3) and any size (8x8 digits,
28x28, 32x32...). Randomness comes from a :class:`torch.Generator` seeded by ``rng``.

Why reimplemented rather than calling ``imagecorruptions`` (Michaelis et al. 2019): the
reference works image by image on uint8 HxWx3 numpy arrays of at least 32x32 pixels on CPU; here
one call corrupts a batch on CPU or GPU (see ``benchmarks/bench_corruptions.py``). Deterministic
corruptions are checked pixel-wise and random ones in distribution against ``imagecorruptions``
in the tests (``tests/perturb/test_corruptions.py``).

Differences from the CIFAR-10-C code, all documented per function:

- ``motion_blur`` and the motion blur inside ``snow`` use ``imagecorruptions``' shift-and-add
  kernel (a Gaussian-weighted one-sided line of width ``2 radius + 1``) instead of ImageMagick's
  ``MotionBlurImage`` (Wand), which is not a Python dependency.
- ``glass_blur`` reproduces the published code's "swap", which (numpy views) copies
  ``x[h', w']`` into ``x[h, w]`` rather than swapping the two pixels.
- Sizes other than 32 scale what the CIFAR code hard-codes to 32 (glass-blur loop bounds, the
  plasma-fractal map size = next power of two >= the image side, elastic parameters
  proportional to the side).
- ``frost`` uses the frost photographs shipped with ``imagecorruptions`` when it is installed;
  otherwise a procedural frost texture (plasma fractal, bluish-white) with different
  statistics, and a warning.

:func:`modify` applies parametric modifications with a continuous strength (contrast,
brightness, gaussian blur sigma, occlusion, rotation).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neurovar._validation import (
    check_rng,
    param_error,  # one order: (name, owner, ...)
)

from ._corruption_kernels import (  # noqa: F401 - the kernels' names stay importable here
    _GRAY,
    _MOSAIC_SIDE,
    _apply_zoom,
    _box_matrix,
    _clipped_zoom,
    _filter2d,
    _gauss1d,
    _gaussian_blur,
    _gray,
    _jpeg,
    _jpeg_gray_mosaic,
    _jpeg_pil,
    _motion_blur,
    _nearest_matrix,
    _next_pow2,
    _pad_axis,
    _pad_index,
    _pixelate,
    _pixelate_matrix,
    _plasma,
    _uniform,
)
from ._utils import RNGLike, make_generator, seed_from

__all__ = [
    "Corruption",
    "CORRUPTIONS",
    "SEVERITIES",
    "corrupt",
    "MODIFICATIONS",
    "modify",
]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


# ---------------------------------------------------------------------------- corruptions
# Each kernel: f(x, param, gen) -> corrupted x (unclipped is fine; corrupt() clips).


def _gaussian_noise(x, c, gen):
    """:math:`x + \\mathcal N(0, c^2)` per pixel and channel."""
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    # == x + c * noise, without temporaries: a contiguous copy of a strided x (channels-last
    # images) would make the add vectorized but costs more (a fresh 3 MB buffer's page faults
    # at 256 RGB 32x32 images) than the strided add
    return noise.mul_(c).add_(x)


def _shot_noise(x, c, gen):
    """Poisson photon noise :math:`\\mathrm{Poisson}(c\\,x)/c`."""
    return torch.poisson(x * c, generator=gen).div_(c)  # == ... / c, one temporary fewer


_IMPULSE_CHUNK = 1 << 18  # values per chunk of impulse noise's fast path (1 MB in float32)


def _impulse_noise(x, c, gen):
    """Salt-and-pepper: a fraction ``c`` of values set to 0 or 1 (skimage ``s&p``).

    The result is in [0, 1] and clipped as before (the fast path's ``clamp`` is that clip, the
    fallback clips itself), so :func:`corrupt` does not clip it again.
    """
    # one uniform u per value: u < c/2 -> pepper, c/2 <= u < c -> salt (same law as two draws)
    u = torch.rand(x.shape, generator=gen, device=x.device)
    if (
        x.device.type == "cpu"
        and u.dtype == x.dtype
        and not x.requires_grad
        and x.numel()
        and int(_memory_flat(x).view(_SAME_SIZE_INT[x.dtype]).min()) >= 0  # no -0.0 in x
    ):
        # Why faster, and why the same bits as where(u < c, (u >= c/2), x): torch's CPU float
        # -> bool comparison and where() run unvectorized (together about 1/3 of the draw's
        # time); here every op is a vectorized float op: S = (u < c) and P = (u >= c/2) as
        # 0/1 floats and clamp(x, min=S, max=P) = min(max(x, S), P), which is x where not hit
        # (S = +0, P = 1, x in [0, 1]), 1 for salt (S = P = 1) and +0 for pepper (S = 1,
        # P = +0): no rounding anywhere, and with no -0.0 in x (checked above on the sign
        # bits; max/min of zeros of both signs may return either) no signed-zero ambiguity.
        # In chunks of whole images (dim 0), so that the scratch buffers (S, and a contiguous
        # copy of a strided x such as channels-last images) stay at most 1 MB and are reused
        # across chunks instead of full-size temporaries: at 256 RGB 32x32 images the page
        # faults of one fresh 3 MB buffer cost about a third of the draw. (1 MB chunks were
        # measured 5-9% faster than 256 KB ones and 25% faster than 64 KB: fewer ops per call.)
        n0, item = x.shape[0], x[0].numel()
        per = max(1, _IMPULSE_CHUNK // item)  # images per chunk
        m = min(n0, per) * item
        s = torch.empty(m, dtype=u.dtype, device=u.device)
        xs = None if x.is_contiguous() else torch.empty(m, dtype=x.dtype, device=x.device)
        for a in range(0, n0, per):
            uc = u[a : a + per].view(-1)
            sc = s[: uc.numel()]
            if xs is None:
                xc = x[a : a + per].reshape(-1)  # a view: x is contiguous
            else:
                xc = xs[: uc.numel()]
                xc.view(u[a : a + per].shape).copy_(x[a : a + per])
            torch.lt(uc, c, out=sc)
            uc.ge_(0.5 * c)
            torch.clamp(xc, sc, uc, out=uc)
        return u
    hit = u < c
    u.ge_(0.5 * c)  # in place: 1 (salt) / 0 (pepper), read only where hit
    # then the clip the previous implementation applied in corrupt(): with -0.0 in x its sign
    # after clamp depends on the kernel (x86 keeps -0.0, Arm's FMAX and CUDA may give +0.0)
    if u.dtype == x.dtype and not x.requires_grad:
        return torch.where(hit, u, x, out=u).clamp_(0, 1)  # into u: one temporary (the mask)
    return torch.where(hit, u.to(x.dtype), x).clamp(0, 1)


# integer dtypes of the same width, to read the sign bits of float tensors
_SAME_SIZE_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def _disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """Aliased disk normalized to sum 1, smoothed by a 3x3 (5x5) Gaussian (cv2 ``disk``)."""
    if radius <= 8:
        ax, ksize = np.arange(-8, 9), 3
    else:
        ax, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(ax, ax)
    d = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    d /= d.sum()
    t = np.arange(ksize) - ksize // 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    kt = torch.as_tensor(d)[None, None]
    g = torch.as_tensor(g)
    kt = _filter2d(kt, g[:, None], "reflect101")
    kt = _filter2d(kt, g[None, :], "reflect101")[0, 0]
    # drop the all-zero border (exact; the CIFAR radii give 3x3 to 7x7 instead of 17x17)
    nz = kt.abs().sum(0).nonzero().squeeze(1)
    half = int(max(abs(int(nz.min()) - kt.shape[0] // 2), abs(int(nz.max()) - kt.shape[0] // 2)))
    mid = kt.shape[0] // 2
    return kt[mid - half : mid + half + 1, mid - half : mid + half + 1]


def _defocus_blur(x, c, gen):
    """Convolution with an anti-aliased disk of radius ``c[0]`` (cv2 ``filter2D``, reflect101)."""
    return _filter2d(x, _disk_kernel(*c), "reflect101")


def _glass_blur(x, c, gen):
    """Gaussian blur, local pixel shuffling within ``c[1]`` pixels (``c[2]`` passes), blur."""
    sigma, delta, iterations = c
    n, _, h, w = x.shape
    y = torch.floor(_gaussian_blur(x, sigma).clamp(0, 1) * 255) / 255  # np.uint8 truncation
    pos = [hh * w + ww for hh in range(h - delta, delta, -1) for ww in range(w - delta, delta, -1)]
    if not pos:
        return _gaussian_blur(y, sigma)
    # The published loop visits interior pixels t in decreasing raster order and sets
    # x[t] = x[s(t)] with s(t) = t + random offset in [-delta, delta)^2 (its tuple "swap" on
    # numpy views is a copy). Sequential, but equivalent to: x_new[t] = x_old[s(r)] where r is
    # the end of the chain t -> s(t) -> s(s(t)) ... followed while the source was already
    # visited. The chains are resolved for all pixels and images at once by pointer jumping.
    dst = torch.tensor(pos, device=x.device)
    p = dst.numel()
    order = torch.full((h * w,), p, dtype=torch.long, device=x.device)
    order[dst] = torch.arange(p, device=x.device)
    steps = torch.arange(p, device=x.device)[None, :]
    n_jumps = int(math.ceil(math.log2(max(p, 2)))) + 1
    flat = y.reshape(n, -1, h * w)
    for _ in range(iterations):
        d = torch.randint(-delta, delta, (n, p, 2), generator=gen, device=x.device)
        src = dst[None, :] + d[..., 1] * w + d[..., 0]  # (n, p) flat source pixels
        o = order[src]
        nxt = torch.where(o < steps, o, steps.expand(n, p))  # visited before: follow it
        for _ in range(n_jumps):
            nxt = nxt.gather(1, nxt)
        root_src = src.gather(1, nxt)
        vals = flat.gather(2, root_src[:, None, :].expand(n, flat.shape[1], p))
        flat = flat.clone()
        flat[:, :, dst] = vals
    return _gaussian_blur(flat.reshape(n, -1, h, w), sigma)


def _motion_blur_corruption(x, c, gen):
    """Motion blur of radius ``c[0]``, sigma ``c[1]``, angle uniform in [-45, 45] degrees."""
    angle = _uniform((x.shape[0],), -45.0, 45.0, gen, torch.empty(0, dtype=torch.float64))
    return _motion_blur(x, c[0], c[1], angle.to(x.device))


def _zoom_blur(x, zooms, gen):
    """Mean of the image and its central zooms by the factors ``zooms``."""
    return (x + _apply_zoom(x, zooms)) / (len(zooms) + 1)


def _snow(x, c, gen):
    """Snow layer (thresholded zoomed noise, motion blurred) added twice, on a brightened image."""
    n, _, h, w = x.shape
    layer = c[0] + c[1] * torch.randn((n, 1, h, w), generator=gen, device=x.device, dtype=x.dtype)
    layer = _apply_zoom(layer, [c[2]])
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer).clamp(0, 1)
    angle = _uniform((n,), -135.0, -45.0, gen, torch.empty(0, dtype=torch.float64))
    layer = _motion_blur(layer, c[4], c[5], angle.to(x.device))
    layer = torch.round(layer * 255) / 255
    base = c[6] * x + (1 - c[6]) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return base + layer + torch.flip(layer, dims=(-2, -1))


def _fog(x, c, gen):
    """Plasma-fractal haze: :math:`(x + c_0 P)\\,\\max x/(\\max x + c_0)`."""
    n, _, h, w = x.shape
    size = _next_pow2(max(h, w))
    plasma = _plasma(n, size, c[1], gen, x)[:, None, :h, :w]
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c[0] * plasma) * max_val / (max_val + c[0])


def _frost_dir() -> Path | None:
    spec = importlib.util.find_spec("imagecorruptions")  # does not import the package
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "frost"
    return d if d.is_dir() else None


_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


@functools.lru_cache(maxsize=32)
def _frost_image(idx: int, h: int, w: int) -> torch.Tensor | None:
    """Frost photo ``idx`` as float RGB (3, H', W') in [0, 1], scaled by 0.2 (CIFAR-10-C) or up
    until it covers an (h, w) image."""
    d = _frost_dir()
    if d is None:
        return None
    from PIL import Image

    with Image.open(d / _FROST_FILES[idx]) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(arr).permute(2, 0, 1)[None]
    fh, fw = t.shape[-2:]
    scale = 0.2
    if fh * scale < h + 1 or fw * scale < w + 1:
        scale = 1.1 * max(h / fh, w / fw, 0.2)
    t = F.interpolate(
        t, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )
    return t[0].clamp(0, 1)


def _frost(x, c, gen):
    """:math:`c_0 x + c_1 F` with ``F`` a random crop of one of five frost photographs."""
    n, ch, h, w = x.shape
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    cpu_gen = make_generator(seed, torch.device("cpu"))
    idx = torch.randint(0, 5, (n,), generator=cpu_gen)
    layers = []
    for i in range(n):
        img = _frost_image(int(idx[i]), h, w)
        if img is None:
            return _frost_synthetic(x, c, gen)
        fh, fw = img.shape[-2:]
        top = int(torch.randint(0, fh - h, (1,), generator=cpu_gen))
        left = int(torch.randint(0, fw - w, (1,), generator=cpu_gen))
        layers.append(img[:, top : top + h, left : left + w])
    frost = torch.stack(layers).to(device=x.device, dtype=x.dtype)
    if ch == 1:
        wts = torch.tensor((0.2989, 0.5870, 0.1140), dtype=x.dtype, device=x.device)
        frost = (frost * wts.view(1, 3, 1, 1)).sum(1, keepdim=True)
    return c[0] * x + c[1] * frost


def _frost_synthetic(x, c, gen):
    warnings.warn(
        "imagecorruptions (which ships the frost photographs) is not installed: 'frost' uses a "
        "procedural plasma-fractal frost texture whose statistics differ from CIFAR-10-C.",
        UserWarning,
        stacklevel=4,
    )
    n, ch, h, w = x.shape
    size = _next_pow2(max(h, w))
    tex = _plasma(n, size, 1.6, gen, x)[:, None, :h, :w]
    tint = torch.tensor((0.85, 0.92, 1.0), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    frost = (0.25 + 0.6 * tex) * tint
    if ch == 1:
        frost = _gray(frost)
    return c[0] * x + c[1] * frost


def _brightness(x, c, gen):
    """Add ``c`` to the HSV value :math:`V = \\max_{\\mathrm{rgb}}`, keeping hue and saturation.

    Exact closed form of skimage's rgb -> hsv -> rgb round trip: with :math:`V' = \\min(V + c,
    1)`, :math:`x' = x V'/V` (:math:`x' = V'` where :math:`V = 0`); for gray images
    :math:`x' = \\min(x + c, 1)`.
    """
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


def _contrast(x, c, gen):
    """:math:`(x - \\bar x_c)\\,c + \\bar x_c` with :math:`\\bar x_c` the per-channel mean."""
    m = x.mean(dim=(2, 3), keepdim=True)
    return (x - m).mul_(c).add_(m)


def _elastic(x, c, gen):
    """Random affine warp (reflect101) then smooth random displacement field (scipy reflect).

    ``c = (alpha, sigma, affine)`` are fractions of the image side (CIFAR-10-C: side 32): the
    three anchor points of the affine map move uniformly by up to ``affine``; the displacement
    field is uniform noise in [-1, 1] smoothed by a Gaussian of ``sigma`` (truncate 3), times
    ``alpha``.
    """
    n, ch, h, w = x.shape
    size = h
    alpha, sigma, affine = c[0] * size, c[1] * size, c[2] * size
    dt = torch.float64
    center = torch.tensor([h // 2, w // 2], dtype=dt)
    sq = min(h, w) // 3
    pts1 = torch.stack(
        [center + sq, torch.stack([center[0] + sq, center[1] - sq]), center - sq]
    )  # (3, 2) as (x, y) like cv2
    pts2 = pts1[None] + _uniform((n, 3, 2), -affine, affine, gen, torch.empty(0, dtype=dt))
    p1 = torch.cat([pts1, torch.ones(3, 1, dtype=dt)], dim=1)
    mt = torch.linalg.solve(p1[None].expand(n, 3, 3), pts2)  # (n, 3, 2): dst = [p 1] @ mt
    a = mt[:, :2, :].transpose(1, 2)  # (n, 2, 2)
    t = mt[:, 2, :]  # (n, 2)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=dt), torch.arange(w, dtype=dt), indexing="ij")
    dst = torch.stack([xx, yy], dim=-1).reshape(1, -1, 2) - t[:, None, :]
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    inv = torch.stack(
        [torch.stack([a[:, 1, 1], -a[:, 0, 1]], -1), torch.stack([-a[:, 1, 0], a[:, 0, 0]], -1)],
        dim=1,
    ) / det.view(n, 1, 1)
    src = torch.einsum("nij,npj->npi", inv, dst)
    # grid_sample, align_corners=True: reflection about pixel centers == reflect101
    gx = 2 * src[..., 0] / max(w - 1, 1) - 1
    gy = 2 * src[..., 1] / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(n, h, w, 2).to(x)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)

    field = _uniform((n, 2, h, w), -1.0, 1.0, gen, x)
    field = _gaussian_blur(field, sigma, truncate=3.0, mode="symmetric") * alpha
    dx, dy = field[:, 0], field[:, 1]
    px = xx.to(x)[None] + dx
    py = yy.to(x)[None] + dy
    # align_corners=False: reflection about the image border == scipy map_coordinates 'reflect'
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], dim=-1).to(x)
    return F.grid_sample(
        warped, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


@dataclass(frozen=True)
class Corruption:
    """One corruption of the CIFAR-10-C benchmark.

    Attributes
    ----------
    name
        Registry key, e.g. ``"gaussian_noise"``.
    family
        ``"noise"``, ``"blur"``, ``"weather"`` or ``"digital"``.
    params
        The five severities' parameters (CIFAR-10-C, Hendrycks & Dietterich 2019).
    kernel
        ``kernel(images, param, generator) -> images`` (unclipped).
    stochastic
        Whether the corruption draws random numbers.
    """

    name: str
    family: str
    params: tuple[Any, ...]
    kernel: Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]
    stochastic: bool

    def __call__(self, images: torch.Tensor, *, severity: int, rng: RNGLike = None):
        """Same as ``corrupt(images, self.name, severity=severity, rng=rng)``."""
        return corrupt(images, self.name, severity=severity, rng=rng)


def _ar(start: float, stop: float, step: float) -> tuple[float, ...]:
    return tuple(float(v) for v in np.arange(start, stop, step))


_S = 1.0  # elastic parameters are fractions of the side (CIFAR: IMSIZE = 32)
CORRUPTIONS: Mapping[str, Corruption] = MappingProxyType(
    {
        c.name: c
        for c in (
            Corruption(
                "gaussian_noise", "noise", (0.04, 0.06, 0.08, 0.09, 0.10), _gaussian_noise, True
            ),
            Corruption("shot_noise", "noise", (500, 250, 100, 75, 50), _shot_noise, True),
            Corruption(
                "impulse_noise", "noise", (0.01, 0.02, 0.03, 0.05, 0.07), _impulse_noise, True
            ),
            Corruption(
                "defocus_blur",
                "blur",
                ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
                _defocus_blur,
                False,
            ),
            Corruption(
                "glass_blur",
                "blur",
                ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
                _glass_blur,
                True,
            ),
            Corruption(
                "motion_blur",
                "blur",
                ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
                _motion_blur_corruption,
                True,
            ),
            Corruption(
                "zoom_blur",
                "blur",
                (
                    _ar(1, 1.06, 0.01),
                    _ar(1, 1.11, 0.01),
                    _ar(1, 1.16, 0.01),
                    _ar(1, 1.21, 0.01),
                    _ar(1, 1.26, 0.01),
                ),
                _zoom_blur,
                False,
            ),
            Corruption(
                "snow",
                "weather",
                (
                    (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
                    (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
                ),
                _snow,
                True,
            ),
            Corruption(
                "frost",
                "weather",
                ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
                _frost,
                True,
            ),
            Corruption(
                "fog",
                "weather",
                ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
                _fog,
                True,
            ),
            Corruption("brightness", "weather", (0.05, 0.1, 0.15, 0.2, 0.3), _brightness, False),
            Corruption("contrast", "digital", (0.75, 0.5, 0.4, 0.3, 0.15), _contrast, False),
            Corruption(
                "elastic_transform",
                "digital",
                (
                    (0.0, 0.0, 0.08 * _S),
                    (0.05 * _S, 0.2 * _S, 0.07 * _S),
                    (0.08 * _S, 0.06 * _S, 0.06 * _S),
                    (0.1 * _S, 0.04 * _S, 0.05 * _S),
                    (0.1 * _S, 0.03 * _S, 0.03 * _S),
                ),
                _elastic,
                True,
            ),
            Corruption("pixelate", "digital", (0.95, 0.9, 0.85, 0.75, 0.65), _pixelate, False),
            Corruption("jpeg_compression", "digital", (80, 65, 58, 50, 40), _jpeg, False),
        )
    }
)


def _check_images(images: Any, owner: str) -> tuple[torch.Tensor, bool]:
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise param_error(
            "images", owner, "a torch.Tensor of shape (N, C, H, W) or (C, H, W)", shape
        )
    single = images.ndim == 3
    x = images[None] if single else images
    if x.shape[1] not in (1, 3):
        raise param_error("images", owner, "1 (gray) or 3 (RGB) channels in dim 1", x.shape[1])
    if not x.is_floating_point():
        raise param_error("images", owner, "a floating-point tensor in [0, 1]", x.dtype)
    if x.numel():
        # one pass for the common case (NaN propagates into the min/max and fails the test),
        # in memory order (min and max do not depend on the order)
        lo, hi = torch.aminmax(_memory_flat(x.detach()))
        if bool((lo >= 0) & (hi <= 1)):
            return x, single
    if x.numel() and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise param_error("images", owner, "finite values in [0, 1]", f"{n_bad} NaN/inf values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise param_error(
            "images",
            owner,
            "in the range [0, 1]",
            f"values in [{float(x.min())}, {float(x.max())}]",
        )
    return x, single


def _memory_flat(x: torch.Tensor) -> torch.Tensor:
    """The values of ``x`` as a 1-D view in memory order when its storage is dense (e.g.
    channels-last images from an HWC array), else ``x``: for order-free reductions (min, max),
    which torch runs several times slower over a permuted layout (3-4x at 64 RGB 32x32)."""
    order = sorted(range(x.ndim), key=lambda d: -x.stride(d))
    y = x.permute(order)
    return y.view(-1) if y.is_contiguous() else x


def corrupt(images: torch.Tensor, name: str, *, severity: int, rng: RNGLike = None) -> torch.Tensor:
    """Apply a CIFAR-10-C corruption (Hendrycks & Dietterich 2019) to a batch of images.

    Parameters
    ----------
    images
        Float tensor in [0, 1], shape (N, C, H, W) or (C, H, W), C = 1 or 3, any device.
    name
        One of ``CORRUPTIONS`` (noise: gaussian_noise, shot_noise, impulse_noise; blur:
        defocus_blur, glass_blur, motion_blur, zoom_blur; weather: snow, frost, fog, brightness;
        digital: contrast, elastic_transform, pixelate, jpeg_compression).
    severity
        1 (mild) to 5 (strong); parameters of the CIFAR-10-C code, see ``CORRUPTIONS[name].params``.
    rng
        None, int or numpy Generator seeding a :class:`torch.Generator` for the random
        corruptions (global RNGs untouched).

    Returns
    -------
    torch.Tensor
        Corrupted images clipped to [0, 1], same shape, dtype and device.
    """
    owner = "corrupt"
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise param_error("name", owner, f"one of {sorted(CORRUPTIONS)}", name)
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise param_error("severity", owner, f"one of {list(SEVERITIES)}", severity)
    check_rng(rng, owner=owner)
    x, single = _check_images(images, owner)
    spec = CORRUPTIONS[name]
    gen = make_generator(seed_from(rng), x.device)
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = spec.kernel(work, spec.params[int(severity) - 1], gen)
    if name not in _IN_RANGE:
        out = _clip01(out, images)
    out = out.to(x.dtype)
    return out[0] if single else out


# kernels that clip their own output exactly as corrupt() would (impulse noise: the fast path's
# clamp(x, S, P) has no -0.0 to meet, the fallback clamps itself), so corrupt() does not again
_IN_RANGE = frozenset({"impulse_noise"})


def _clip01(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``out.clamp(0, 1)``, in place when ``out`` shares no memory with the caller's images."""
    if out.requires_grad or out.untyped_storage().data_ptr() == images.untyped_storage().data_ptr():
        return out.clamp(0, 1)
    return out.clamp_(0, 1)


# ---------------------------------------------------------------------------- modifications
def _mod_contrast(x, s, gen):
    """Contrast reduction: :math:`\\bar x_c + (1 - s)(x - \\bar x_c)`, s in [0, 1]."""
    return _contrast(x, 1.0 - s, gen)


def _mod_brightness(x, s, gen):
    """Additive brightness shift :math:`x + s`, s in [-1, 1]."""
    return x + s


def _mod_blur(x, s, gen):
    """Gaussian blur with standard deviation ``s`` pixels (truncate 4, edge padding)."""
    return _gaussian_blur(x, float(s), truncate=4.0, mode="edge")


def _mod_occlusion(x, s, gen):
    """Square patch of mid-gray (0.5) covering a fraction ``s`` of the area, random position."""
    n, _, h, w = x.shape
    side_h = int(round(math.sqrt(s) * h))
    side_w = int(round(math.sqrt(s) * w))
    if side_h == 0 or side_w == 0:
        return x
    top = torch.randint(0, h - side_h + 1, (n, 1, 1, 1), generator=gen, device=x.device)
    left = torch.randint(0, w - side_w + 1, (n, 1, 1, 1), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    mask = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
    return torch.where(mask, torch.full_like(x, 0.5), x)


def _mod_rotation(x, s, gen):
    """Rotation by ``s`` degrees (counter-clockwise, bilinear, zero fill; torchvision)."""
    from torchvision.transforms.functional import InterpolationMode, rotate

    return rotate(x, float(s), interpolation=InterpolationMode.BILINEAR, fill=0.0)


def _mod_pixel_noise(x, s, gen):
    r"""Gaussian pixel noise of standard deviation ``s``, :math:`x + s\,\xi`, clipped to [0, 1]
    (the positive control's target: Gaussian input augmentation must help against it)."""
    return x + s * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def _mod_obstruction(x, s, gen):
    r"""Preble et al. (2026)'s obstruction (``scripts/data_utils.py`` lines 196-227): a black
    square of side :math:`\lfloor 0.4\,s \min(H, W)\rfloor` (at least 1 pixel) at a uniformly
    random position."""
    n, _, h, w = x.shape
    if s == 0:
        return x  # the identity strength (the paper's code would still black out one pixel)
    side = max(1, min(int(0.4 * s * min(h, w)), min(h, w)))
    top = torch.randint(0, h - side + 1, (n, 1, 1, 1), generator=gen, device=x.device)
    left = torch.randint(0, w - side + 1, (n, 1, 1, 1), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    mask = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return torch.where(mask, torch.zeros_like(x), x)


def _mod_random_rotation(x, s, gen):
    """Preble et al. (2026)'s rotation (``scripts/data_utils.py`` lines 176-178): each image
    rotated by an angle uniform in :math:`[-60 s, 60 s]` degrees (bilinear, zero fill)."""
    from torchvision.transforms.functional import InterpolationMode, rotate

    angles = (torch.rand(x.shape[0], generator=gen, device=x.device) * 2 - 1) * 60.0 * s
    return torch.stack(
        [
            rotate(img, float(a), interpolation=InterpolationMode.BILINEAR, fill=0.0)
            for img, a in zip(x, angles.tolist())
        ]
    )


#: name -> (kernel, (min strength, max strength), identity strength)
MODIFICATIONS: Mapping[str, tuple[Callable, tuple[float, float], float]] = MappingProxyType(
    {
        "contrast": (_mod_contrast, (0.0, 1.0), 0.0),
        "brightness": (_mod_brightness, (-1.0, 1.0), 0.0),
        "gaussian_blur": (_mod_blur, (0.0, math.inf), 0.0),
        "occlusion": (_mod_occlusion, (0.0, 1.0), 0.0),
        "rotation": (_mod_rotation, (-360.0, 360.0), 0.0),
        "pixel_noise": (_mod_pixel_noise, (0.0, 10.0), 0.0),
        "obstruction": (_mod_obstruction, (0.0, 2.5), 0.0),
        "random_rotation": (_mod_random_rotation, (0.0, 3.0), 0.0),
    }
)


def modify(
    images: torch.Tensor, name: str, *, strength: float, rng: RNGLike = None
) -> torch.Tensor:
    """Parametric image modification with a continuous ``strength`` (0 = unchanged).

    - ``"contrast"``: :math:`\\bar x_c + (1 - s)(x - \\bar x_c)`, s in [0, 1] (1 = flat gray).
    - ``"brightness"``: :math:`x + s`, s in [-1, 1].
    - ``"gaussian_blur"``: Gaussian blur of standard deviation s >= 0 pixels.
    - ``"occlusion"``: a mid-gray square covering a fraction s in [0, 1] of the image, at a
      random position per image (``rng``).
    - ``"rotation"``: rotation by s degrees about the center, bilinear, zero fill.
    - ``"pixel_noise"``: Gaussian pixel noise of standard deviation s in [0, 10].
    - ``"obstruction"``: Preble et al.'s black square of side 0.4 s min(H, W), random position.
    - ``"random_rotation"``: Preble et al.'s rotation by an angle uniform in [-60 s, 60 s].

    Output is clipped to [0, 1]; shape, dtype and device as the input ((N, C, H, W) or
    (C, H, W), C = 1 or 3).
    """
    owner = "modify"
    if not isinstance(name, str) or name not in MODIFICATIONS:
        raise param_error("name", owner, f"one of {sorted(MODIFICATIONS)}", name)
    kernel, (low, high), _ = MODIFICATIONS[name]
    if (
        isinstance(strength, bool)
        or not isinstance(strength, (int, float))
        or not (low <= strength <= high)
    ):
        raise param_error("strength", owner, f"a number in [{low}, {high}] for '{name}'", strength)
    check_rng(rng, owner=owner)
    x, single = _check_images(images, owner)
    gen = make_generator(seed_from(rng), x.device)
    out = kernel(x, strength, gen).clamp(0, 1)
    return out[0] if single else out
