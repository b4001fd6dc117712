"""The image kernels of :mod:`neurovar.perturb.corruptions`: padding, separable and 2-D
filters, zoom, resampling matrices, the plasma fractal, the motion-blur line, pixelate and the
JPEG round trip.

Batched torch on ``(N, C, H, W)`` tensors; each function reproduces the numpy / OpenCV / PIL
operation of the CIFAR-10-C code (Hendrycks & Dietterich 2019, ``make_cifar_c.py``) that its
docstring names. Private: the public entry points are :func:`neurovar.perturb.corrupt` and
:func:`neurovar.perturb.modify` (whose module re-exports these names).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

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


def _pixelate(x, c, gen, *, upsample: str = "box"):
    """PIL box downsampling to ``int(side c)`` pixels and box (CIFAR-10-C) upsampling back."""
    _, _, h, w = x.shape
    mh = _pixelate_matrix_as(h, c, upsample, x.dtype, x.device)
    mw = _pixelate_matrix_as(w, c, upsample, x.dtype, x.device)
    # the two products exactly as before (the bits of a GEMM depend on the BLAS call: shapes,
    # transposition flags, batching), see benchmarks/results/corruptions.md
    return torch.matmul(mh, torch.matmul(x, mw.T))


@functools.lru_cache(maxsize=64)
def _pixelate_matrix_as(
    n: int, c: float, upsample: str, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """:func:`_pixelate_matrix` converted to ``dtype`` on ``device`` (cached: the same values
    as converting on every call, without the per-call conversions). Read-only by convention."""
    # built outside inference mode: a cached inference tensor would break every later call
    # whose images require grad ("Inference tensors cannot be saved for backward")
    with torch.inference_mode(False):
        return _pixelate_matrix(n, c, upsample).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _pixelate_matrix(n: int, c: float, upsample: str) -> torch.Tensor:
    """Down (box) then up (box or nearest) resampling of a length-``n`` axis, float64."""
    s = max(int(n * c), 1)
    up = _box_matrix if upsample == "box" else _nearest_matrix
    with torch.inference_mode(False):  # cached: never an inference tensor (see above)
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
