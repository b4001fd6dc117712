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

from neurovar._validation import check_rng

from ._utils import RNGLike, make_generator, param_error, seed_from

__all__ = [
    "Corruption",
    "CORRUPTIONS",
    "SEVERITIES",
    "corrupt",
    "MODIFICATIONS",
    "modify",
]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as cv2.COLOR_RGB2GRAY


# ---------------------------------------------------------------------------- helpers
def _pad_index(n: int, lo: int, hi: int, mode: str, device: torch.device) -> torch.Tensor:
    """Indices into a length-``n`` axis padded by ``lo``/``hi`` samples.

    ``mode``: ``"reflect101"`` (cv2 default, ``d c b | a b c d | c b a``), ``"symmetric"``
    (scipy ``"reflect"``, ``c b a | a b c | c b a``) or ``"edge"``. Unlike
    :func:`torch.nn.functional.pad` any pad length works (folded periodically), so large kernels
    run on 8x8 images.
    """
    i = torch.arange(-lo, n + hi, device=device)
    if mode == "edge" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect101":
        p = 2 * (n - 1)
        i = i.remainder(p)
        return torch.where(i >= n, p - i, i)
    p = 2 * n
    i = i.remainder(p)
    return torch.where(i >= n, p - 1 - i, i)


def _pad_axis(x: torch.Tensor, dim: int, p: int, mode: str) -> torch.Tensor:
    """Pad axis ``dim`` of ``x`` by ``p`` samples on both sides (see :func:`_pad_index`).

    Slices and flips (copies, so the same values as indexing with :func:`_pad_index`, several
    times faster than advanced indexing along the last axis); indexing for folded pads.
    """
    n = x.shape[dim]
    if p == 0:
        return x
    if mode == "edge":
        shape = list(x.shape)
        shape[dim] = p
        lo, hi = x.narrow(dim, 0, 1).expand(shape), x.narrow(dim, n - 1, 1).expand(shape)
        return torch.cat([lo, x, hi], dim)
    if mode == "reflect101" and 1 < n and p < n:
        return torch.cat(
            [x.narrow(dim, 1, p).flip(dim), x, x.narrow(dim, n - 1 - p, p).flip(dim)], dim
        )
    if mode == "symmetric" and p <= n:
        return torch.cat([x.narrow(dim, 0, p).flip(dim), x, x.narrow(dim, n - p, p).flip(dim)], dim)
    return x.index_select(dim, _pad_index(n, p, p, mode, x.device))


def _filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x`` (N, C, H, W) with a 2-D ``kernel`` (odd sizes)."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    xp = _pad_axis(_pad_axis(x, 2, kh // 2, mode), 3, kw // 2, mode)
    if kh * kw <= 64:
        # shifted sums: on CPU several times faster than conv2d for small kernels on small
        # images (conv2d with one input channel takes a slow path), and exact
        # (out += tap * shifted, in this order: the same sums as ``out = out + term``, into two
        # preallocated buffers instead of two fresh tensors per tap)
        taps = kernel.detach().cpu().double().tolist()
        out = term = None
        for i in range(kh):
            for j in range(kw):
                if taps[i][j] != 0.0:
                    if out is None:
                        out = torch.mul(xp[:, :, i : i + h, j : j + w], taps[i][j])
                        term = torch.empty_like(out)
                    elif out.requires_grad:  # autograd refuses out= and in-place on leaves
                        out = out + taps[i][j] * xp[:, :, i : i + h, j : j + w]
                    else:
                        out.add_(torch.mul(xp[:, :, i : i + h, j : j + w], taps[i][j], out=term))
        return out if out is not None else torch.zeros_like(x)
    weight = kernel.to(x)[None, None].expand(c, 1, kh, kw).contiguous()
    return F.conv2d(xp, weight, groups=c)


def _gauss1d(sigma: float, truncate: float) -> np.ndarray:
    """Normalized Gaussian taps as in :func:`scipy.ndimage.gaussian_filter1d`."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=float)
    k = np.exp(-0.5 * t**2 / sigma**2)
    return k / k.sum()


def _gaussian_blur(
    x: torch.Tensor, sigma: float, *, truncate: float = 4.0, mode: str = "edge"
) -> torch.Tensor:
    """Separable Gaussian blur of the spatial dims (skimage ``gaussian``: mode nearest)."""
    k = torch.as_tensor(_gauss1d(sigma, truncate))
    if k.numel() == 1:
        return x
    x = _filter2d(x, k[:, None], mode)
    return _filter2d(x, k[None, :], mode)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _uniform(shape, low, high, gen, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(shape, generator=gen, device=gen.device, dtype=torch.float64)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def _clipped_zoom(x: torch.Tensor, zoom: float, *, centered: bool = True) -> torch.Tensor:
    """Central zoom by ``zoom`` of every image in ``x`` (N, C, H, W): ``clipped_zoom``.

    Crops the central ``ceil(side / zoom)`` samples, zooms them with first-order splines
    (:func:`scipy.ndimage.zoom`, ``order=1``: output sample ``o`` reads input coordinate
    ``o (ch - 1) / (out - 1)``, i.e. bilinear with ``align_corners=True``) to
    ``round(ch zoom)`` samples and keeps ``side`` of them, centered (CIFAR-10-C) or from the
    start (``centered=False``, ``imagecorruptions``).
    """
    h, w = x.shape[-2:]
    ch, cw = int(np.ceil(h / zoom)), int(np.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    oh, ow = int(round(ch * zoom)), int(round(cw * zoom))
    crop = x[..., top : top + ch, left : left + cw]
    out = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True)
    th, tw = ((oh - h) // 2, (ow - w) // 2) if centered else (0, 0)
    return out[..., th : th + h, tw : tw + w]


def _apply_zoom(x: torch.Tensor, zooms, *, centered: bool = True) -> torch.Tensor:
    """Sum over zoom factors of :func:`_clipped_zoom` applied to ``x``."""
    total = torch.zeros_like(x)
    for z in zooms:
        total += _clipped_zoom(x, float(z), centered=centered)
    return total


def _box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PIL ``Image.BOX`` resampling as an (n_out, n_in) matrix (PIL's ``precompute_coeffs``)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    m = np.zeros((n_out, n_in))
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        t = (np.arange(xmin, xmax) - center + 0.5) / fscale
        k = ((t >= -0.5) & (t < 0.5)).astype(float)
        if k.sum() > 0:
            m[xx, xmin:xmax] = k / k.sum()
    return m


def _nearest_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PIL ``Image.NEAREST`` resampling as an (n_out, n_in) matrix."""
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for xx in range(n_out):
        m[xx, min(int((xx + 0.5) * scale), n_in - 1)] = 1
    return m


def _plasma(n: int, mapsize: int, wibbledecay: float, gen, like: torch.Tensor) -> torch.Tensor:
    """Batched diamond-square plasma fractal in [0, 1], shape (n, mapsize, mapsize).

    The algorithm of ``plasma_fractal`` in the CIFAR-10-C code (after FLHerne/mapgen): squares
    and diamonds get the mean of their corners plus uniform noise of amplitude ``wibble**2``,
    ``wibble`` starting at 100 and divided by ``wibbledecay`` at every halving.
    """
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=like.device)
    step = mapsize
    wibble = 100.0

    def wmean(a: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(a.shape, generator=gen, device=a.device, dtype=torch.float64)
        return a / 4 + wibble * (2 * noise - 1) * wibble

    while step >= 2:
        half = step // 2
        corner = m[:, 0:mapsize:step, 0:mapsize:step]
        sq = corner + torch.roll(corner, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        m[:, half:mapsize:step, half:mapsize:step] = wmean(sq)
        dr = m[:, half:mapsize:step, half:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        m[:, 0:mapsize:step, half:mapsize:step] = wmean(lt)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        m[:, half:mapsize:step, 0:mapsize:step] = wmean(tt)
        step //= 2
        wibble /= wibbledecay
    flat = m.reshape(n, -1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / flat.max(dim=1, keepdim=True).values.clamp_min(1e-300)
    return flat.reshape(n, mapsize, mapsize).to(like.dtype)


def _next_pow2(v: int) -> int:
    return 1 if v <= 1 else 2 ** (v - 1).bit_length()


def _motion_blur(
    x: torch.Tensor, radius: int, sigma: float, angle_deg: torch.Tensor
) -> torch.Tensor:
    """One-sided motion blur along ``angle_deg`` (per image), as ``imagecorruptions``.

    :math:`y = \\sum_{i=0}^{2r} k_i\\, x(h - \\delta y_i, w - \\delta x_i)` with Gaussian weights
    :math:`k_i \\propto \\exp(-i^2/2\\sigma^2)`, offsets
    :math:`\\delta y_i = -\\lceil i \\sin\\theta - 1/2\\rceil`,
    :math:`\\delta x_i = -\\lceil i\\cos\\theta - 1/2\\rceil`, edge replication, and the sum
    stopped (not renormalized) at the first offset that leaves the image, as in the reference.
    """
    n, c, h, w = x.shape
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    theta = torch.deg2rad(angle_deg.to(torch.float64))
    p0, p1 = width * torch.sin(theta), width * torch.cos(theta)
    hyp = torch.sqrt(p0**2 + p1**2)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    alive = torch.ones(n, dtype=torch.bool, device=x.device)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for i in range(width):
        dy = -torch.ceil(i * p0 / hyp - 0.5).long()
        dx = -torch.ceil(i * p1 / hyp - 0.5).long()
        alive = alive & (dy.abs() < h) & (dx.abs() < w)
        if not bool(alive.any()):
            break
        r = (rows[None] - dy[:, None]).clamp(0, h - 1)
        q = (cols[None] - dx[:, None]).clamp(0, w - 1)
        idx = (r[:, :, None] * w + q[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        weight = (float(k[i]) * alive.to(x.dtype)).view(n, 1, 1)
        out += weight * flat.gather(2, idx)
    return out.reshape(n, c, h, w)


# ---------------------------------------------------------------------------- corruptions
# Each kernel: f(x, param, gen) -> corrupted x (unclipped is fine; corrupt() clips).


def _gaussian_noise(x, c, gen):
    """:math:`x + \\mathcal N(0, c^2)` per pixel and channel."""
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return noise.mul_(c).add_(x)  # == x + c * noise, without two temporaries


def _shot_noise(x, c, gen):
    """Poisson photon noise :math:`\\mathrm{Poisson}(c\\,x)/c`."""
    return torch.poisson(x * c, generator=gen) / c


def _impulse_noise(x, c, gen):
    """Salt-and-pepper: a fraction ``c`` of values set to 0 or 1 (skimage ``s&p``)."""
    # one uniform u per value: u < c/2 -> pepper, c/2 <= u < c -> salt (same law as two draws)
    u = torch.rand(x.shape, generator=gen, device=x.device)
    return torch.where(u < c, (u >= 0.5 * c).to(x.dtype), x)


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


def _pixelate(x, c, gen, *, upsample: str = "box"):
    """PIL box downsampling to ``int(side c)`` pixels and box (CIFAR-10-C) upsampling back."""
    _, _, h, w = x.shape
    mh = _pixelate_matrix(h, c, upsample).to(x)
    mw = _pixelate_matrix(w, c, upsample).to(x)
    return torch.matmul(mh, torch.matmul(x, mw.T))


@functools.lru_cache(maxsize=64)
def _pixelate_matrix(n: int, c: float, upsample: str) -> torch.Tensor:
    """Down (box) then up (box or nearest) resampling of a length-``n`` axis, float64."""
    s = max(int(n * c), 1)
    up = _box_matrix if upsample == "box" else _nearest_matrix
    return torch.as_tensor(up(s, n) @ _box_matrix(n, s))


def _jpeg(x, quality, gen):
    """JPEG round trip at ``quality`` (libjpeg, 4:2:0 chroma subsampling as PIL), on CPU.

    Uses :func:`torchvision.io.encode_jpeg` on the whole batch when available (bit-identical to
    PIL's ``Image.save(..., "JPEG", quality=q)`` on the tested images; gray batches as one
    mosaic, :func:`_jpeg_gray_mosaic`), else PIL image by image.
    """
    # == (x.clamp(0, 1) * 255).round(), one temporary instead of three
    u8 = torch.mul(x.detach(), 255).clamp_(0, 255).round_().to(torch.uint8).cpu()
    try:
        with warnings.catch_warnings():
            # torchvision >= 0.29 deprecates its image codecs in favour of torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import decode_jpeg, encode_jpeg

            if u8.shape[1] == 1 and u8.shape[0] > 1:
                out = _jpeg_gray_mosaic(u8, int(quality), encode_jpeg, decode_jpeg)
            else:
                out = torch.stack(decode_jpeg(encode_jpeg(list(u8), quality=int(quality))))
    except (ImportError, AttributeError, RuntimeError):
        out = _jpeg_pil(u8, int(quality))
    return out.to(device=x.device, dtype=x.dtype).div_(255)


_MOSAIC_SIDE = 16384  # longest side of one mosaic (JPEG allows 65535)


def _jpeg_gray_mosaic(u8: torch.Tensor, quality: int, encode, decode) -> torch.Tensor:
    """Gray JPEG round trip of a batch (N, 1, H, W) uint8 as one mosaic image per chunk.

    Exact: a gray JPEG codes independent 8x8 blocks, and libjpeg completes a partial block by
    repeating the last column and row. Each image, padded that way to multiples of 8, fills
    whole blocks of the mosaic, so its blocks (and their decoding) are those of the image coded
    alone, while the codec's per-image setup (most of the time for small images) is paid once.
    """
    n, _, h, w = u8.shape
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    # numpy: uint8 copies of permuted layouts are many times faster there than in torch
    tiles = np.pad(u8.numpy()[:, 0], ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
    cols = max(1, min(n, int(math.ceil(math.sqrt(n))), _MOSAIC_SIDE // wp))
    per = cols * max(1, _MOSAIC_SIDE // hp)  # images per mosaic
    outs = []
    for start in range(0, n, per):
        chunk = tiles[start : start + per]
        m = chunk.shape[0]
        rows = -(-m // cols)
        if rows * cols > m:
            chunk = np.concatenate([chunk, np.zeros((rows * cols - m, hp, wp), np.uint8)])
        mosaic = chunk.reshape(rows, cols, hp, wp).transpose(0, 2, 1, 3).reshape(rows * hp, -1)
        dec = decode(encode(torch.from_numpy(np.ascontiguousarray(mosaic))[None], quality=quality))
        dec = dec.numpy().reshape(rows, hp, cols, wp).transpose(0, 2, 1, 3)
        outs.append(dec.reshape(rows * cols, hp, wp)[:m, :h, :w])
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(outs))[:, None])


def _jpeg_pil(u8: torch.Tensor, quality: int) -> torch.Tensor:
    import io

    from PIL import Image

    outs = []
    for img in u8.permute(0, 2, 3, 1).numpy():
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=quality)
        arr = np.asarray(Image.open(buf))
        outs.append(torch.from_numpy(arr.reshape(img.shape).copy()).permute(2, 0, 1))
    return torch.stack(outs)


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
            owner, "images", "a torch.Tensor of shape (N, C, H, W) or (C, H, W)", shape
        )
    single = images.ndim == 3
    x = images[None] if single else images
    if x.shape[1] not in (1, 3):
        raise param_error(owner, "images", "1 (gray) or 3 (RGB) channels in dim 1", x.shape[1])
    if not x.is_floating_point():
        raise param_error(owner, "images", "a floating-point tensor in [0, 1]", x.dtype)
    if x.numel():
        # one pass for the common case (NaN propagates into the min/max and fails the test)
        lo, hi = torch.aminmax(x.detach())
        if bool((lo >= 0) & (hi <= 1)):
            return x, single
    if x.numel() and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise param_error(owner, "images", "finite values in [0, 1]", f"{n_bad} NaN/inf values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise param_error(
            owner,
            "images",
            "in the range [0, 1]",
            f"values in [{float(x.min())}, {float(x.max())}]",
        )
    return x, single


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
        raise param_error(owner, "name", f"one of {sorted(CORRUPTIONS)}", name)
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise param_error(owner, "severity", f"one of {list(SEVERITIES)}", severity)
    check_rng(rng, owner=owner)
    x, single = _check_images(images, owner)
    spec = CORRUPTIONS[name]
    gen = make_generator(seed_from(rng), x.device)
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = _clip01(spec.kernel(work, spec.params[int(severity) - 1], gen), images).to(x.dtype)
    return out[0] if single else out


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
    return torch.stack([rotate(img, float(a), interpolation=InterpolationMode.BILINEAR,
                               fill=0.0) for img, a in zip(x, angles.tolist())])


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
        raise param_error(owner, "name", f"one of {sorted(MODIFICATIONS)}", name)
    kernel, (low, high), _ = MODIFICATIONS[name]
    if (
        isinstance(strength, bool)
        or not isinstance(strength, (int, float))
        or not (low <= strength <= high)
    ):
        raise param_error(owner, "strength", f"a number in [{low}, {high}] for '{name}'", strength)
    check_rng(rng, owner=owner)
    x, single = _check_images(images, owner)
    gen = make_generator(seed_from(rng), x.device)
    out = kernel(x, strength, gen).clamp(0, 1)
    return out[0] if single else out
