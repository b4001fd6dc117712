"""Checks a reviewer asks for before believing a stochastic network is robust.

Athalye, Carlini & Wagner (2018) list the signs of obfuscated gradients: black-box attacks
stronger than white-box ones, accuracy not reaching chance as eps grows, and attacks that
succeed on a twin model (noise frozen or removed) transferring better than direct attacks.
Here:

- :func:`randomness_check` / :func:`is_stochastic`: does the model give different outputs for
  the same input (dropout or activation noise on)?
- :func:`gradient_snr`: signal-to-noise ratio of the EOT gradient estimate as a function of the
  number of EOT samples (it should grow about linearly with k for independent draws).
- :class:`NoiseFreeTwin`, :class:`FrozenNoiseTwin` and :func:`twin_transfer`: attack the twins
  and evaluate the stochastic model on the result.
- :func:`check_robustness_result`: on an :func:`evaluate_robustness` result, accuracy going to
  chance with eps and the black-box attack not stronger than the white-box ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from ._utils import (
    RNGLike,
    check_choice,
    check_images_labels,
    check_number,
    check_validation_common,
    model_device,
    param_error,
    preserved_state,
    reseeded_noise,
    seed_from,
)
from .attacks import LOSSES, PGD, _loss_per_example

__all__ = [
    "randomness_check",
    "is_stochastic",
    "gradient_snr",
    "NoiseFreeTwin",
    "FrozenNoiseTwin",
    "twin_transfer",
    "check_robustness_result",
]


@torch.no_grad()
def randomness_check(
    model: nn.Module,
    images: torch.Tensor,
    *,
    n_repeats: int = 4,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
) -> xr.Dataset:
    """Does the model give different outputs on the same input?

    Runs ``n_repeats`` forward passes on the same images (model in its current mode) and reports
    the largest absolute logit difference between passes, the mean across-pass standard
    deviation of the logits (``ddof=1``), and the fraction of examples whose predicted class
    changes between passes.

    Returns
    -------
    xarray.Dataset
        Scalars ``is_stochastic`` (max difference > 0), ``max_abs_diff``, ``mean_logit_std``,
        ``prediction_flip_rate``.
    """
    check_number(n_repeats, "n_repeats", "randomness_check", low=2, integer=True)
    if not isinstance(images, torch.Tensor) or images.ndim < 2:
        raise param_error("randomness_check", "images", "a batched torch.Tensor", images)
    dev = model_device(model, device)
    with preserved_state(model, dev, seed_from(rng)):
        outs = torch.stack([model(images.to(dev)).float() for _ in range(n_repeats)])
    max_diff = float((outs - outs[0]).abs().max())
    preds = outs.argmax(dim=-1)
    flips = (preds != preds[0]).any(dim=0).float().mean()
    return xr.Dataset(
        {
            "is_stochastic": ((), max_diff > 0),
            "max_abs_diff": ((), max_diff),
            "mean_logit_std": ((), float(outs.std(dim=0, unbiased=True).mean())),
            "prediction_flip_rate": ((), float(flips)),
        },
        attrs={"n_repeats": n_repeats},
    )


def is_stochastic(
    model: nn.Module,
    images: torch.Tensor,
    *,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
) -> bool:
    """True if two forward passes on the same images differ (see :func:`randomness_check`)."""
    return bool(randomness_check(model, images, n_repeats=2, rng=rng, device=device).is_stochastic)


def gradient_snr(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eot_samples: Sequence[int] = (1, 2, 4, 8, 16),
    n_repeats: int = 8,
    loss: str = "ce",
    rng: RNGLike = None,
    device: str | torch.device | None = None,
) -> xr.Dataset:
    """Signal-to-noise ratio of the EOT gradient estimate versus the number of EOT samples.

    For each :math:`k`, ``n_repeats`` independent estimates
    :math:`\\hat g_r = \\frac1k \\sum_{i=1}^{k} \\nabla_x L(f_{\\xi_{ri}}(x), y)` are drawn per
    example and

    .. math:: \\mathrm{SNR}_k = \\frac{\\max(\\|\\bar g\\|^2 - V_k / R,\\ 0)}{V_k}, \\qquad
       V_k = \\frac{1}{R-1}\\sum_r \\|\\hat g_r - \\bar g\\|^2,

    the squared norm of the mean gradient over the total variance of one estimate
    (``ddof=1``). :math:`\\|\\bar g\\|^2` alone overestimates the squared norm of the true mean
    by :math:`V_k / R` (the variance of the mean of :math:`R` estimates); that bias is
    subtracted, otherwise the SNR of very noisy gradients would level off near :math:`R`
    instead of falling towards 0. For
    independent draws the variance falls as :math:`1/k`, so SNR grows about linearly in
    :math:`k`; a deterministic model gives infinite SNR. Also reported: the mean cosine
    similarity between pairs of independent estimates, and the sign agreement (fraction of
    pixels where two estimates have the same sign, what an L-inf step uses).

    Returns
    -------
    xarray.Dataset
        Over dim ``eot_samples``: ``snr`` (median over examples), ``cosine``, ``sign_agreement``;
        ``snr_per_example`` (eot_samples, example).
    """
    owner = "gradient_snr"
    check_choice(loss, "loss", owner, LOSSES)
    check_number(n_repeats, "n_repeats", owner, low=2, integer=True)
    ks = list(eot_samples)
    for k in ks:
        check_number(k, "eot_samples", owner, low=1, integer=True)
    images, labels = check_images_labels(images, labels, owner)
    dev = model_device(model, device)
    x, y = images.to(dev), labels.to(dev)
    snr = np.zeros((len(ks), x.shape[0]))
    cos = np.zeros(len(ks))
    sign = np.zeros(len(ks))
    with preserved_state(model, dev, seed_from(rng)):
        for i, k in enumerate(ks):
            ests = []
            for _ in range(n_repeats):
                g = torch.zeros_like(x)
                for _ in range(k):
                    xg = x.detach().requires_grad_(True)
                    value = _loss_per_example(model(xg), y, loss, None).sum()
                    g += torch.autograd.grad(value, xg)[0]
                ests.append((g / k).flatten(1))
            est = torch.stack(ests)  # (R, N, D)
            mean = est.mean(0)
            var = ((est - mean) ** 2).sum(-1).sum(0) / (n_repeats - 1)
            # unbiased |E g|^2: subtract the variance of the mean of n_repeats estimates
            signal = ((mean**2).sum(-1) - var / n_repeats).clamp(min=0)
            sig, v = signal.cpu().double().numpy(), var.cpu().double().numpy()
            snr[i] = np.where(v > 0, sig / np.where(v > 0, v, 1.0), np.inf)
            a, b = est[0::2][: n_repeats // 2], est[1::2][: n_repeats // 2]
            cos[i] = float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())
            sign[i] = float((a.sign() == b.sign()).float().mean())
    return xr.Dataset(
        {
            "snr": (("eot_samples",), np.median(snr, axis=1)),
            "snr_per_example": (("eot_samples", "example"), snr),
            "cosine": (("eot_samples",), cos),
            "sign_agreement": (("eot_samples",), sign),
        },
        coords={"eot_samples": ks, "example": np.arange(x.shape[0])},
        attrs={"n_repeats": n_repeats, "loss": loss},
    )


class NoiseFreeTwin(nn.Module):
    """The model with its noise removed: each forward runs ``model`` in eval mode with injected
    noise suspended.

    Eval mode switches off :class:`torch.nn.Dropout` and noise layers that check
    ``self.training``; noise injected with :func:`neurovar.noise.inject_noise` (added in train
    and eval mode alike) is suspended with :func:`neurovar.noise.suspend_noise`. The wrapped
    model's train flags and hooks are restored after every forward.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from neurovar.noise import suspend_noise

        snapshot = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.eval()
            with suspend_noise(self.model):
                return self.model(x)
        finally:
            for m, flag in snapshot:
                m.train(flag)


class FrozenNoiseTwin(nn.Module):
    """The model with its noise frozen: every forward draws the *same* noise realization.

    Each forward runs inside :func:`torch.random.fork_rng` re-seeded with ``seed``, and with the
    :mod:`neurovar.noise` modules of the model re-seeded from ``seed`` too (their own streams
    given back afterwards), so dropout masks, ``torch.randn_like`` noise layers and injected
    noise are the same function of the input shape on every call: a deterministic network that
    is one sample of the stochastic one.
    """

    def __init__(self, model: nn.Module, *, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device
        with (
            torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []),
            reseeded_noise(self.model, self.seed),
        ):
            torch.random.default_generator.manual_seed(self.seed)
            if dev.type == "cuda":
                with torch.cuda.device(dev):
                    torch.cuda.manual_seed(self.seed)
            return self.model(x)


def twin_transfer(
    model: nn.Module,
    twins: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 20,
    eot_samples: int = 8,
    n_evaluations: int = 10,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
) -> xr.Dataset:
    """Accuracy of ``model`` on PGD examples crafted on itself (with EOT) and on each twin.

    If examples crafted on a twin (noise-free or frozen-noise, see :class:`NoiseFreeTwin`,
    :class:`FrozenNoiseTwin`) hurt the stochastic model *more* than examples crafted on the
    model itself, the direct attack is weak -- a sign of gradient obfuscation by the noise
    (Athalye et al. 2018), and the robust accuracy to report is the lower one.

    Returns
    -------
    xarray.Dataset
        Over dim ``source`` (``"direct"`` then the twin names): ``accuracy``, ``ci_low``,
        ``ci_high``; scalar ``direct_is_strongest``.
    """
    from .evaluate import robust_accuracy  # local import: evaluate imports this module

    if not isinstance(twins, Mapping) or not twins:
        raise param_error("twin_transfer", "twins", "a non-empty mapping name -> nn.Module", twins)
    gen = np.random.default_rng(rng)
    sources: dict[str, tuple[nn.Module, int]] = {"direct": (model, eot_samples)}
    sources.update({k: (v, 1) for k, v in twins.items()})
    rows = []
    for _name, (src, k) in sources.items():
        attack = PGD(
            src,
            eps=eps,
            norm=norm,
            steps=steps,
            eot_samples=k,
            rng=int(gen.integers(2**62)),
            device=device,
        )
        res = robust_accuracy(
            model,
            attack,
            images,
            labels,
            n_evaluations=n_evaluations,
            rng=int(gen.integers(2**62)),
            device=device,
        )
        rows.append((float(res.accuracy), float(res.ci_low), float(res.ci_high)))
    arr = np.array(rows)
    return xr.Dataset(
        {
            "accuracy": (("source",), arr[:, 0]),
            "ci_low": (("source",), arr[:, 1]),
            "ci_high": (("source",), arr[:, 2]),
            "direct_is_strongest": ((), bool(arr[0, 0] <= arr[1:, 0].min())),
        },
        coords={"source": list(sources)},
        attrs={"eps": eps, "norm": norm, "steps": steps, "eot_samples": eot_samples},
    )


def check_robustness_result(
    result: xr.Dataset,
    *,
    n_classes: int,
    black_box: Sequence[str] = ("square",),
    tol: float = 0.05,
    warn: bool = True,
) -> dict[str, bool]:
    """Sanity flags for an :func:`evaluate_robustness` result (Athalye et al. 2018, Sec. 3.1).

    - ``"monotone_in_eps"``: worst-case accuracy does not rise (by more than ``tol``) as eps
      grows.
    - ``"reaches_chance"``: at the largest eps the worst-case accuracy is at most
      ``1 / n_classes + tol``. Only meaningful if the largest eps is large enough to destroy
      the image (for digits in [0, 1], L-inf 0.5 suffices).
    - ``"black_box_not_stronger"``: at every eps each black-box attack's accuracy is at least the
      best white-box attack's accuracy minus ``tol``.

    A failing flag raises a :class:`UserWarning` (if ``warn``).
    """
    check_validation_common("check_robustness_result", warn=warn)
    check_number(tol, "tol", "check_robustness_result", low=0.0, high=1.0)
    check_number(n_classes, "n_classes", "check_robustness_result", low=2, integer=True)
    for var in ("worst_case_accuracy", "accuracy"):
        if var not in result:
            raise param_error(
                "check_robustness_result",
                "result",
                "an evaluate_robustness Dataset",
                f"a Dataset without '{var}' (has {list(result.data_vars)})",
            )
    wc = result.worst_case_accuracy.sortby("eps").values
    flags = {
        "monotone_in_eps": bool(np.all(np.diff(wc) <= tol)),
        "reaches_chance": bool(wc[-1] <= 1.0 / n_classes + tol),
    }
    attacks = [str(a) for a in result.attack.values]
    bb = [a for a in attacks if a in black_box]
    wb = [a for a in attacks if a not in black_box]
    if bb and wb:
        best_wb = result.accuracy.sel(attack=wb).min("attack")
        worst_bb = result.accuracy.sel(attack=bb).min("attack")
        flags["black_box_not_stronger"] = bool((worst_bb >= best_wb - tol).all())
    if warn:
        for key, ok in flags.items():
            if not ok:
                warnings.warn(
                    f"Robustness sanity check '{key}' failed: the white-box numbers may reflect "
                    "gradient masking (Athalye et al. 2018); quote the worst case.",
                    UserWarning,
                    stacklevel=2,
                )
    return flags
