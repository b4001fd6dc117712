"""Fit a noise covariance from perturbations, and express noise relative to a layer's variance.

The paper's core method (Preble, Venkatesh, Mihalas & Harris 2026, arXiv 2606.13801) takes the
covariance of a layer's activations under modified versus clean inputs. Its exact estimator is not
public, so the natural readings are offered as named ``method`` options of
:func:`fit_perturbation_covariance`. Magnitudes are expressed relative to the layer's own clean
activation variance (:func:`scale_to_activation_variance`), so ``m = 0.1`` means the same on
every layer and model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from neurovar._progress import check_progress, progress_bar
from neurovar._validation import (
    InvalidParameterError,
    check_choice,
    check_device,
    check_int,
    check_real,
    public_caller,
)

from .._torch import layer_names, model_dtype, resolve_device
from ..dims import UNIT, UNIT_J, unit_coords
from ..stats.covariance import shrinkage_covariance
from ._utils import check_calibration, check_share
from .inject import suspend_noise
from .models import NoiseModule

__all__ = [
    "collect_layer_activations",
    "layer_activation_covariance",
    "layer_total_variance",
    "fit_perturbation_covariance",
    "perturbation_directions",
    "scale_to_activation_variance",
    "NoiseCalibration",
    "METHODS",
    "ESTIMATORS",
]

METHODS = ("difference", "perturbed", "within_image")
ESTIMATORS = ("sample", "ledoit_wolf", "oas")


class _StopForward(Exception):
    """Raised by the capture hook to skip the layers after the one we need."""


def _as_images(images: Any, *, name: str, owner: str) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be a torch.Tensor or numpy array of images. "
            f"Got {type(images).__name__} instead."
        )
    if not torch.is_floating_point(images):
        images = images.float()
    if images.ndim < 2 or images.shape[0] == 0:
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must have shape (N, ...) with N >= 1. "
            f"Got shape {tuple(images.shape)} instead."
        )
    return images


def _check_layer(model: nn.Module, layer: Any, owner: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(
            f"The 'model' parameter of {owner} must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    modules = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in modules:
        valid = layer_names(model)
        shown = ", ".join(repr(v) for v in valid[:60]) + (" ..." if len(valid) > 60 else "")
        raise InvalidParameterError(
            f"The 'layer' parameter of {owner} must name a submodule of the model. "
            f"Got {layer!r}; valid layer names: {shown}."
        )
    return modules[layer]


def collect_layer_activations(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    layer: str,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    r"""Deterministic (clean) activations of one layer, :math:`h_l(x_n)`, on CPU.

    The model runs in eval mode under ``torch.no_grad()`` with any injected neurovar noise
    suspended; the forward pass stops right after ``layer``. The train/eval mode, hooks and
    device of the model are restored afterwards.

    Parameters
    ----------
    model
        The network.
    images
        Inputs, shape ``(N, ...)``; cast to the dtype of the model's (floating) parameters.
    layer
        Dotted name from ``model.named_modules()``.
    batch_size
        Images per forward pass.
    device
        Where to run; default: where the model is (:func:`neurovar._torch.resolve_device`). The
        model is moved there and back.
    progress
        Progress bar: ``None`` (default) shows it only when the work is long (after a few
        seconds) and a terminal or notebook can show it, ``True`` always, ``False`` never.

    Returns
    -------
    torch.Tensor
        Shape ``(N, *layer_shape)``, the layer output for every image.

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801.
    """
    owner = public_caller(
        "collect_layer_activations"
    )  # the caller, e.g. fit_perturbation_covariance
    check_progress(progress, owner=owner)
    if device is not None:
        check_device(device, owner=owner)
    target = _check_layer(model, layer, owner)
    images = _as_images(images, name="images", owner=owner)
    batch_size = check_int(batch_size, name="batch_size", owner=owner, low=1)
    original_device = resolve_device(None, model=model)
    run_device = resolve_device(device, model=model)
    dtype = model_dtype(model)  # float64 numpy images into a float32 model would fail
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"Layer {layer!r} returned {type(output).__name__}, not a tensor.")
        captured.append(output.detach().to("cpu"))
        raise _StopForward

    modes = {m: m.training for m in model.modules()}  # per module: some may differ from the top
    handle = target.register_forward_hook(capture)
    try:
        if run_device != original_device:
            model.to(run_device)
        model.eval()
        with torch.no_grad(), suspend_noise(model):
            starts = range(0, images.shape[0], batch_size)
            for start in progress_bar(starts, desc=f"activations {layer}", progress=progress):
                batch = images[start : start + batch_size].to(run_device, dtype)
                try:
                    model(batch)
                except _StopForward:
                    pass
    finally:
        handle.remove()
        for module, mode in modes.items():
            module.train(mode)
        if run_device != original_device:
            model.to(original_device)
    return torch.cat(captured, dim=0)


def _samples(acts: torch.Tensor, share: str) -> np.ndarray:
    """Rows = samples, columns = covariance units (flattened units, or channels x positions)."""
    a = acts.to(torch.float64)
    if share == "flat":
        return a.reshape(a.shape[0], -1).numpy()
    if a.ndim < 2:
        raise ValueError("share='channel' needs layer outputs with a channel dim, (N, C, ...).")
    c = a.shape[1]
    return a.reshape(a.shape[0], c, -1).permute(0, 2, 1).reshape(-1, c).numpy()


_MAX_COV_UNITS = 16384  # a 16384^2 float64 covariance is 2 GiB


def _check_cov_size(n_units: int, share: str, owner: str) -> None:
    if n_units > _MAX_COV_UNITS:
        hint = "use share='channel' (a C x C covariance) or " if share == "flat" else ""
        raise ValueError(
            f"{owner}: a {n_units} x {n_units} covariance needs "
            f"{n_units**2 * 8 / 2**30:.1f} GiB; at most {_MAX_COV_UNITS} units are supported: "
            f"{hint}pick a smaller layer."
        )


def _unit_coords(unit_shape: tuple[int, ...], share: str, layer: str) -> dict[str, Any]:
    """Unit coords of a covariance over a layer, and their ``_j`` twins, from the one builder
    :func:`neurovar.dims.unit_coords`: the layer's units for ``"flat"`` (as in a recording of
    the layer), its ``C`` channels for ``"channel"``."""
    shape = (unit_shape[0],) if share == "channel" else unit_shape
    return unit_coords(layer, shape, pair=True)


def _cov_dataarray(
    cov: np.ndarray, unit_shape: tuple[int, ...], share: str, layer: str, attrs: dict[str, Any]
) -> xr.DataArray:
    out = xr.DataArray(
        cov,
        dims=(UNIT, UNIT_J),
        coords=_unit_coords(unit_shape, share, layer),
        attrs={"layer": layer, "share": share, "unit_shape": list(unit_shape), **attrs},
        name="cov_matrix",
    )
    # selectable like a recording and its noise covariance: cov.sel(channel=3, channel_j=5)
    return out.set_xindex("channel").set_xindex("channel_j")


def layer_activation_covariance(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    layer: str,
    share: str = "flat",
    ddof: int = 1,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> xr.DataArray:
    r"""Covariance of a layer's clean activations across images (the "signal" covariance).

    .. math:: \Sigma_{ij} = \frac{1}{n - \mathrm{ddof}} \sum_s (h_{si} - \bar h_i)(h_{sj} - \bar h_j)

    with samples ``s`` = images (``share="flat"``) or image x spatial position
    (``share="channel"``).

    Parameters
    ----------
    model, images, layer
        Where to measure (see :func:`collect_layer_activations`).
    share
        ``"flat"`` (``D x D`` over flattened units) or ``"channel"`` (``C x C``).
    ddof
        Delta degrees of freedom (1: unbiased).
    batch_size, device
        Forward-pass options.

    Returns
    -------
    xarray.DataArray
        Dims ``("unit", "unit_j")`` with unit coords ``unit_id``, ``channel``, ``y``, ``x``
        (``"flat"`` only), ``layer`` and ``*_j`` twins on ``unit_j``.

    References
    ----------
    Anderson, T. W. (2003). An Introduction to Multivariate Statistical Analysis, 3rd ed.
    Wiley, sec. 3.2 (sample covariance).
    """
    owner = "layer_activation_covariance"
    share = check_share(share, owner=owner)
    ddof = check_int(ddof, name="ddof", owner=owner, low=0)
    acts = collect_layer_activations(
        model, images, layer=layer, batch_size=batch_size, device=device
    )
    x = _samples(acts, share)
    _check_cov_size(x.shape[1], share, owner)
    if x.shape[0] <= ddof:
        raise InvalidParameterError(
            f"The 'ddof' parameter of {owner} must be smaller than the number of samples, "
            f"{x.shape[0]}. Got {ddof} instead.",
            name="ddof",
            owner=owner,
        )
    cov = np.atleast_2d(np.cov(x, rowvar=False, ddof=ddof))
    return _cov_dataarray(
        cov,
        tuple(acts.shape[1:]),
        share,
        layer,
        {"method": "clean", "estimator": "sample", "ddof": ddof, "n_samples": int(x.shape[0])},
    )


def layer_total_variance(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    layer: str,
    ddof: int = 1,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    r"""Total variance of a layer's clean activations across images, :math:`\mathrm{tr}\,\Sigma`.

    .. math:: \mathrm{tr}\,\Sigma = \sum_i \frac{1}{N - \mathrm{ddof}} \sum_n (h_{ni} - \bar h_i)^2

    summed over all units ``i`` of the layer (computed without forming :math:`\Sigma`).

    Parameters
    ----------
    model, images, layer, ddof, batch_size, device
        As in :func:`layer_activation_covariance`.

    Returns
    -------
    float
        :math:`\mathrm{tr}\,\Sigma`, the reference for noise magnitudes ``m`` (DESIGN,
        "noise magnitude").

    References
    ----------
    Anderson, T. W. (2003). An Introduction to Multivariate Statistical Analysis, 3rd ed.
    Wiley, sec. 3.2 (sample covariance).
    """
    check_int(ddof, name="ddof", owner="layer_total_variance", low=0)  # before the forward pass
    acts = collect_layer_activations(
        model, images, layer=layer, batch_size=batch_size, device=device
    )
    return _total_variance(acts, ddof, "layer_total_variance")


def _total_variance(acts: torch.Tensor, ddof: int, owner: str) -> float:
    ddof = check_int(ddof, name="ddof", owner=owner, low=0)
    if acts.shape[0] <= ddof:
        raise InvalidParameterError(
            f"The 'ddof' parameter of {owner} must be smaller than the number of images, "
            f"{acts.shape[0]}. Got {ddof} instead.",
            name="ddof",
            owner=owner,
        )
    return float(
        acts.to(torch.float64).reshape(acts.shape[0], -1).var(dim=0, correction=ddof).sum()
    )


@dataclass(frozen=True)
class NoiseCalibration:
    r"""Noise magnitude relative to a layer's activation variance.

    Attributes
    ----------
    layer
        Layer the noise is calibrated for.
    m
        Requested ratio ``noise variance / activation variance``.
    activation_variance
        :math:`\mathrm{tr}\,\Sigma_{clean}`, total variance of the clean activations across
        images (ddof as requested).
    noise_variance
        Expected total noise variance per sample, :math:`E\|\epsilon\|^2 = m\,\mathrm{tr}\,
        \Sigma_{clean}`.
    snr
        Signal-to-noise power ratio ``activation_variance / noise_variance`` (``1 / m``).
    snr_db
        ``10 log10(snr)``.
    scale
        The ``scale`` set on the noise module.

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801.
    """

    layer: str
    m: float
    activation_variance: float
    noise_variance: float
    snr: float
    snr_db: float
    scale: float

    def __post_init__(self) -> None:
        check_calibration(self)  # noise/_utils.CALIBRATION_CONSTRAINTS

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


def scale_to_activation_variance(
    noise: NoiseModule,
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    layer: str,
    m: float,
    ddof: int = 1,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> NoiseCalibration:
    r"""Set ``noise.scale`` so its total variance is ``m`` times the layer's activation variance.

    .. math:: \mathrm{scale}^2 \; E_x \|\epsilon_1(x)\|^2 = m \, \mathrm{tr}\,\Sigma_{clean},

    where :math:`\epsilon_1` is the module's noise at scale 1 (for :class:`PoissonLikeNoise` its
    variance depends on the activation and is averaged over ``images``), and
    :math:`\Sigma_{clean}` the covariance of the clean layer activations across ``images``.
    The signal-to-noise ratio is then ``snr = 1 / m``. This makes a noise level comparable
    across layers and models (DESIGN: "noise magnitude").

    Parameters
    ----------
    noise
        The noise module to calibrate, modified in place (its ``scale``).
    model, images, layer
        Where to measure the clean activation variance.
    m
        Noise-to-activation variance ratio, ``m > 0``.
    ddof
        Delta degrees of freedom of the activation variance across images.

    Returns
    -------
    NoiseCalibration

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801.
    """
    owner = "scale_to_activation_variance"
    if not isinstance(noise, NoiseModule):
        raise InvalidParameterError(
            f"The 'noise' parameter of {owner} must be a neurovar NoiseModule. "
            f"Got {type(noise).__name__} instead."
        )
    if noise.relative_scale is not None:
        raise InvalidParameterError(
            f"The 'noise' parameter of {owner} has relative_scale={noise.relative_scale}: it "
            "already follows the layer's running variance. Build it with relative_scale=None."
        )
    m = check_real(m, name="m", owner=owner, low=0, low_open=True, coerce=True)
    check_int(ddof, name="ddof", owner=owner, low=0)
    acts = collect_layer_activations(
        model, images, layer=layer, batch_size=batch_size, device=device
    )
    act_var = _total_variance(acts, ddof, owner)
    base = noise.unit_scale_total_variance(acts)
    if base <= 0 or act_var <= 0:
        raise ValueError(
            f"{owner}: cannot calibrate, the noise variance at scale 1 is {base:g} and the "
            f"activation variance is {act_var:g}; both must be positive."
        )
    noise.scale = math.sqrt(m * act_var / base)
    return NoiseCalibration(
        layer=layer,
        m=m,
        activation_variance=act_var,
        noise_variance=m * act_var,
        snr=1.0 / m,
        snr_db=10.0 * math.log10(1.0 / m),
        scale=noise.scale,
    )


def fit_perturbation_covariance(
    model: nn.Module,
    clean_images: torch.Tensor | np.ndarray,
    perturbed_images: torch.Tensor | np.ndarray,
    *,
    layer: str,
    method: str = "difference",
    estimator: str = "sample",
    rank: int | None = None,
    share: str = "flat",
    ddof: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> xr.DataArray:
    r"""Estimate a noise covariance from a layer's activations under perturbed vs clean inputs.

    With :math:`h(\cdot)` the (deterministic) activation of ``layer``, ``x_n`` the clean images
    and :math:`\tilde x_n` (or :math:`\tilde x_{vn}`) their perturbed versions:

    ``"difference"``
        covariance across images of the activation change
        :math:`d_n = h(\tilde x_n) - h(x_n)`, centred on its mean
        (the mean shift is a deterministic bias, not noise; its norm is in ``attrs``).
    ``"perturbed"``
        covariance of :math:`h(\tilde x_n)` around its own mean across images.
    ``"within_image"``
        spread of several perturbed versions of the same image around its clean activation,
        pooled over images, :math:`\Sigma = \frac{1}{NV - \mathrm{ddof}} \sum_{n,v}
        d_{vn} d_{vn}^T`, :math:`d_{vn} = h(\tilde x_{vn}) - h(x_n)` (not centred: the clean
        activation is the known centre). ``perturbed_images`` then has shape
        ``(V, N, *image_shape)``: ``V`` versions of each of the ``N`` clean images.

    With ``share="channel"`` every spatial position of every image is a sample of a
    ``C x C`` covariance (positions are treated as exchangeable).

    Parameters
    ----------
    model
        The network (run in eval mode, no grad, injected noise suspended; state restored).
    clean_images
        ``(N, *image_shape)``.
    perturbed_images
        ``(N, *image_shape)``, or ``(V, N, *image_shape)`` for ``method="within_image"``.
    layer
        Dotted layer name from ``model.named_modules()``.
    method
        ``"difference"``, ``"perturbed"`` or ``"within_image"`` (see above).
    estimator
        ``"sample"``, or a shrinkage estimator for few samples: ``"ledoit_wolf"`` (Ledoit &
        Wolf 2004) or ``"oas"`` (Chen et al. 2010). All three normalise by
        ``n_samples - ddof``: the shrinkage estimators shrink that sample covariance
        (:func:`neurovar.stats.covariance.shrinkage_covariance`, the same implementation as
        :func:`neurovar.stats.noise_covariance`).
    rank
        If given, keep only the top ``rank`` eigenpairs, :math:`\Sigma_r = V_r \Lambda_r V_r^T`
        (the discarded variance fraction is in ``attrs``). Use
        :meth:`LowRankNoise.from_covariance` to keep the residual on the diagonal instead.
    share
        ``"flat"`` (``D x D`` over all flattened units) or ``"channel"`` (``C x C``).
    ddof
        Delta degrees of freedom (every estimator). Default: 1 for the centred methods
        (``"difference"``, ``"perturbed"``), 0 for ``"within_image"`` (known centre).
    batch_size, device, progress
        Forward-pass options (see :func:`collect_layer_activations`).

    Returns
    -------
    xarray.DataArray
        ``cov_matrix`` with dims ``("unit", "unit_j")``, unit coords ``unit_id``, ``channel``,
        ``y``, ``x`` (flat only), ``layer`` (and ``*_j`` twins), and attrs ``method``,
        ``estimator``, ``share``, ``layer``, ``unit_shape``, ``n_samples``, ``ddof``,
        ``shrinkage``, ``rank``, ``mean_shift_norm``. Pass it to :class:`CovarianceNoise`,
        :meth:`LowRankNoise.from_covariance` or :func:`noise_from_covariance` (``share`` is
        taken from the attrs).

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801.
    Ledoit, O. & Wolf, M. (2004). A well-conditioned estimator for large-dimensional covariance
    matrices. J. Multivar. Anal. 88, 365-411.
    Chen, Y., Wiesel, A., Eldar, Y. C. & Hero, A. O. (2010). Shrinkage algorithms for MMSE
    covariance estimation. IEEE Trans. Signal Process. 58, 5016-5029.
    """
    owner = "fit_perturbation_covariance"
    check_choice(method, name="method", owner=owner, options=METHODS)
    check_choice(estimator, name="estimator", owner=owner, options=ESTIMATORS)
    share = check_share(share, owner=owner)
    if ddof is None:
        ddof = 0 if method == "within_image" else 1
    ddof = check_int(ddof, name="ddof", owner=owner, low=0)
    clean, pert = _check_image_pair(clean_images, perturbed_images, method, owner)

    def acts_of(images: torch.Tensor) -> torch.Tensor:
        return collect_layer_activations(
            model, images, layer=layer, batch_size=batch_size, device=device, progress=progress
        )

    x, unit_shape, mean_shift, centred = _perturbation_samples(acts_of, clean, pert, method, share)
    cov, shrinkage, n_samples = _estimate_covariance(
        x, centred=centred, ddof=ddof, estimator=estimator, method=method, share=share
    )
    cov, discarded = _truncate_rank(cov, rank, owner)

    attrs = {
        "method": method,
        "estimator": estimator,
        "n_samples": int(n_samples),
        "ddof": int(ddof),
        "shrinkage": shrinkage,
        "rank": "full" if rank is None else int(rank),
        "discarded_variance_fraction": discarded,
        "mean_shift_norm": mean_shift,
    }
    return _cov_dataarray(cov, unit_shape, share, layer, attrs)


def _check_image_pair(
    clean_images: Any, perturbed_images: Any, method: str, owner: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two image arguments as tensors, their shapes checked against ``method``."""
    clean = _as_images(clean_images, name="clean_images", owner=owner)
    pert = _as_images(perturbed_images, name="perturbed_images", owner=owner)
    if method == "within_image":
        if pert.ndim != clean.ndim + 1 or tuple(pert.shape[1:]) != tuple(clean.shape):
            raise InvalidParameterError(
                f"With method='within_image' the 'perturbed_images' parameter of {owner} must "
                f"have shape (V, *clean_images.shape) = (V, {', '.join(map(str, clean.shape))}). "
                f"Got {tuple(pert.shape)} instead."
            )
    elif tuple(pert.shape) != tuple(clean.shape):
        raise InvalidParameterError(
            f"The 'perturbed_images' parameter of {owner} must have the shape of "
            f"'clean_images' {tuple(clean.shape)} for method={method!r}. "
            f"Got {tuple(pert.shape)} instead."
        )
    for name, t in (("clean_images", clean), ("perturbed_images", pert)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            # a NaN image would turn every covariance entry it touches into NaN
            raise InvalidParameterError(
                f"The '{name}' parameter of {owner} must hold finite values. Got "
                f"{int((~torch.isfinite(t)).sum())} NaN/inf values instead."
            )
    return clean, pert


def _perturbation_samples(
    acts_of: Callable[[torch.Tensor], torch.Tensor], clean: torch.Tensor, pert: torch.Tensor,
    method: str, share: str,
) -> tuple[np.ndarray, tuple[int, ...], float, bool]:  # fmt: skip
    """The samples whose covariance is fitted, ``(n_samples, n_units)``: perturbed activations
    (``"perturbed"``), or their differences from the clean ones (``"difference"``,
    ``"within_image"``); with the unit shape, the norm of the mean shift and whether the
    samples are already centred (within-image differences)."""
    mean_shift = float("nan")
    if method == "perturbed":
        h = acts_of(pert)
        unit_shape = tuple(h.shape[1:])
        x = _samples(h, share)
        centred = False
    else:
        h_clean = acts_of(clean)
        unit_shape = tuple(h_clean.shape[1:])
        if method == "difference":
            diff = acts_of(pert) - h_clean
        else:
            n_versions = pert.shape[0]
            h_pert = acts_of(pert.reshape(-1, *clean.shape[1:]))
            diff = h_pert.reshape(n_versions, *h_clean.shape) - h_clean[None]
            diff = diff.reshape(-1, *unit_shape)
        x = _samples(diff, share)
        mean_shift = float(np.linalg.norm(x.mean(axis=0)))
        centred = method == "within_image"

    return x, unit_shape, mean_shift, centred


def _estimate_covariance(
    x: np.ndarray, *, centred: bool, ddof: int, estimator: str, method: str, share: str
) -> tuple[np.ndarray, float, int]:
    """Sample or shrinkage covariance of the samples (symmetrised), the shrinkage intensity
    (NaN for ``"sample"``) and the number of samples."""
    owner = "fit_perturbation_covariance"
    n_samples, n_units = x.shape
    _check_cov_size(n_units, share, owner)
    if n_samples - (0 if centred else 1) < 1 or n_samples <= ddof:
        raise ValueError(
            f"{owner} needs more samples: got {n_samples} sample(s) for method={method!r}, "
            f"estimator={estimator!r}, 'ddof' parameter = {ddof}."
        )
    shrinkage = float("nan")
    resid = x if centred else x - x.mean(axis=0, keepdims=True)
    if estimator == "sample":
        cov = np.atleast_2d(resid.T @ resid / (n_samples - ddof))
    else:
        cov, shrinkage = shrinkage_covariance(resid, dof=n_samples - ddof, estimator=estimator)
    cov = 0.5 * (cov + cov.T)

    return cov, shrinkage, n_samples


def _truncate_rank(cov: np.ndarray, rank: int | None, owner: str) -> tuple[np.ndarray, float]:
    """The best rank-``rank`` PSD approximation (top eigenpairs, Eckart & Young 1936) and the
    fraction of the variance it discards; ``rank=None`` keeps ``cov``."""
    n_units = cov.shape[0]
    discarded = 0.0
    if rank is not None:
        rank = check_int(rank, name="rank", owner=owner, low=1, high=n_units)
        evals, evecs = np.linalg.eigh(cov)
        top = slice(n_units - int(rank), n_units)
        kept = np.clip(evals[top], 0.0, None)
        total = float(np.clip(evals, 0.0, None).sum())
        discarded = 1.0 - float(kept.sum()) / total if total > 0 else 0.0
        cov = (evecs[:, top] * kept[None, :]) @ evecs[:, top].T
        cov = 0.5 * (cov + cov.T)

    return cov, discarded


def perturbation_directions(
    model: nn.Module,
    clean_images: torch.Tensor | np.ndarray,
    perturbed_images: torch.Tensor | np.ndarray,
    *,
    layer: str,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> xr.DataArray:
    r"""The perturbation directions of a source in activation space, one per image.

    .. math:: d_n = h_l(\tilde x_n) - h_l(x_n)

    with :math:`h_l` the deterministic (noise suspended, eval mode) output of ``layer``. These
    are the directions whose covariance :func:`fit_perturbation_covariance` estimates with
    ``method="difference"``; pass them to :func:`neurovar.stats.variance_along` to measure how
    much injected noise lies along them.

    Parameters
    ----------
    model, layer, batch_size, device
        As in :func:`collect_layer_activations`.
    clean_images, perturbed_images
        ``(N, *image_shape)`` each, perturbed image ``n`` a version of clean image ``n``.

    Returns
    -------
    xarray.DataArray
        ``direction`` with dims ``("stimulus", "unit")`` and the unit coords of a recording of
        the same layer (``unit_id``, ``layer``, ``channel``, ``y``, ``x``).

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801.
    """
    owner = "perturbation_directions"
    batch_size = check_int(batch_size, name="batch_size", owner=owner, low=1)
    device = check_device(device, owner=owner)
    clean = _as_images(clean_images, name="clean_images", owner=owner)
    pert = _as_images(perturbed_images, name="perturbed_images", owner=owner)
    if tuple(pert.shape) != tuple(clean.shape):
        raise ValueError(
            f"The 'perturbed_images' parameter of {owner} must have the shape of "
            f"'clean_images' {tuple(clean.shape)}. Got {tuple(pert.shape)} instead."
        )
    kw = dict(layer=layer, batch_size=batch_size, device=device)
    h_clean = collect_layer_activations(model, clean, **kw)
    diff = (collect_layer_activations(model, pert, **kw) - h_clean).to(torch.float64)
    unit_shape = tuple(h_clean.shape[1:])
    coords = {
        k: v for k, v in _unit_coords(unit_shape, "flat", layer).items() if not k.endswith("_j")
    }
    return xr.DataArray(
        diff.reshape(diff.shape[0], -1).numpy(),
        dims=("stimulus", UNIT),
        coords={"stimulus_id": ("stimulus", np.arange(diff.shape[0])), **coords},
        attrs={"layer": layer, "unit_shape": list(unit_shape)},
        name="direction",
    )
