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
- :func:`check_robustness_result`: on an :func:`evaluate_robustness` result, judges *every*
  attack -- reaches chance at the largest eps, close to the ensemble's worst case, not beaten
  by a black-box attack, monotone in eps -- and names the attacks whose numbers look masked.
- :func:`eot_check`: does averaging over noise draws (EOT) make an attack on a stochastic model
  stronger, and has it converged in the number of draws?
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from neurovar._validation import (
    Options,
    check_int,
    check_memory,
    check_param,
    check_real,
    param_error,  # one order: (name, owner, ...)
)

from ._stochastic import is_stochastic, randomness_check
from ._utils import (
    RNGLike,
    check_images_labels,
    check_progress,
    model_device,
    preserved_state,
    progress_bar,
    renamed_kwarg,
    reseeded_noise,
    seed_from,
)
from .attacks import LOSSES, PGD, _loss_per_example
from .evaluate import STIMULUS, STIMULUS_ID, evaluate_robustness, robust_accuracy
from .masking import (  # judged in their own room
    RobustnessDiagnosis,
    _f,
    check_robustness_result,
    eot_helps,
)

__all__ = [
    "randomness_check",
    "is_stochastic",
    "gradient_snr",
    "NoiseFreeTwin",
    "FrozenNoiseTwin",
    "twin_transfer",
    "check_robustness_result",
    "RobustnessDiagnosis",
    "eot_check",
]


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
    progress: bool | None = None,
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

    Parameters
    ----------
    model, images, labels
        The network (its train/eval state is used as it is) and a batch, images in [0, 1].
    eot_samples
        The numbers of draws :math:`k` averaged per estimate.
    n_repeats
        Independent estimates :math:`R` per :math:`k` (>= 2); all are held in memory, which
        is checked before anything runs.
    loss
        ``"ce"``, ``"dlr"`` or ``"margin"`` (as the attacks).
    rng, device
        Seed of the model's noise during the call; where to run (default: the model's device).
    progress
        A tqdm bar over the gradient passes: ``None`` shows it once the call has run a few
        seconds, ``True`` always, ``False`` never.

    Returns
    -------
    xarray.Dataset
        Over dim ``eot_samples``: ``snr`` (median over examples), ``cosine``, ``sign_agreement``;
        ``snr_per_example`` (eot_samples, stimulus).
    """
    owner = "gradient_snr"
    check_param(loss, [Options(str, LOSSES)], name="loss", owner=owner)
    check_int(n_repeats, name="n_repeats", owner=owner, low=2)
    progress = check_progress(progress, owner=owner)
    ks = list(eot_samples)
    for k in ks:
        check_int(k, name="eot_samples", owner=owner, low=1)
    images, labels = check_images_labels(images, labels, owner)
    # the n_repeats estimates of one k are stacked: refuse what cannot fit before running
    check_memory(
        2.0 * n_repeats * images.numel() * images.element_size(),
        name="n_repeats",
        owner=owner,
        value=n_repeats,
        what="the stacked gradient estimates",
    )
    dev = model_device(model, device)
    x, y = images.to(dev), labels.to(dev)
    snr = np.zeros((len(ks), x.shape[0]))
    cos = np.zeros(len(ks))
    sign = np.zeros(len(ks))
    bar = progress_bar(
        total=n_repeats * sum(ks), desc=owner, progress=progress, unit="grad"
    )
    with bar, preserved_state(model, dev, seed_from(rng)):
        for i, k in enumerate(ks):
            ests = []
            for _ in range(n_repeats):
                g = torch.zeros_like(x)
                for _ in range(k):
                    xg = x.detach().requires_grad_(True)
                    value = _loss_per_example(model(xg), y, loss, None).sum()
                    g += torch.autograd.grad(value, xg)[0]
                    bar.update(1)
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
            "snr_per_example": (("eot_samples", STIMULUS), snr),
            "cosine": (("eot_samples",), cos),
            "sign_agreement": (("eot_samples",), sign),
        },
        coords={"eot_samples": ks, STIMULUS_ID: (STIMULUS, np.arange(x.shape[0]))},
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

    Each forward runs inside :func:`torch.random.fork_rng` re-seeded with the seed taken from
    ``rng`` (an int is the seed itself; a Generator gives one draw, at construction), and with
    the :mod:`neurovar.noise` modules of the model re-seeded from it too (their own streams
    given back afterwards), so dropout masks, ``torch.randn_like`` noise layers and injected
    noise are the same function of the input shape on every call: a deterministic network that
    is one sample of the stochastic one. ``seed=`` is the deprecated name of ``rng=``.
    """

    def __init__(self, model: nn.Module, *, rng: RNGLike = 0, seed: int | None = None) -> None:
        super().__init__()
        rng = renamed_kwarg("FrozenNoiseTwin", "seed", "rng", seed, rng, 0)
        self.model = model
        self.seed = seed_from(rng)

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
    if not isinstance(twins, Mapping) or not twins:
        raise param_error("twins", "twin_transfer", "a non-empty mapping name -> nn.Module", twins)
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


def eot_check(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    attack: str = "pgd_ce",
    eot_samples: Sequence[int] = (1, 8, 16),
    tol: float = 0.05,
    **kwargs: Any,
) -> xr.Dataset:
    """Accuracy of one attack on a stochastic model with and without EOT (Athalye et al. 2018).

    Runs :func:`evaluate_robustness` with ``attacks=[attack]`` once per number of EOT draws
    :math:`k` in ``eot_samples`` (same seed, same repeated evaluations) and compares
    :math:`\\mathrm{acc}(k)`:

    - ``eot_helps``: :math:`\\mathrm{acc}(k_{\\min}) - \\mathrm{acc}(k_{\\max}) > \\mathrm{tol}`:
      attacking single noise draws overstated robustness (randomness obfuscates the gradient;
      a number computed without EOT must not be quoted).
    - ``eot_converged``: the last doubling-or-more of :math:`k` changes the accuracy by at most
      ``tol`` (:math:`\\mathrm{acc}(k_{-2}) - \\mathrm{acc}(k_{-1}) \\le \\mathrm{tol}`): more
      draws would not make the attack much stronger. If False, raise ``eot_samples``.

    Parameters
    ----------
    model, images, labels, eps
        As in :func:`evaluate_robustness` (one eps).
    attack
        A registered attack name (:func:`neurovar.perturb.attack_names`).
    eot_samples
        At least two increasing numbers of draws.
    tol
        Tolerance on accuracy differences.
    **kwargs
        Passed on to :func:`evaluate_robustness` (``n_evaluations``, ``steps``, ``rng``,
        ``device``, ``tags``, ...).

    Returns
    -------
    xarray.Dataset
        Over dim ``eot_samples``: ``accuracy``, ``ci_low``, ``ci_high``; scalars ``eot_helps``,
        ``eot_converged``, ``stochastic``; attrs ``attack``, ``eps``, ``tol`` and ``messages``
        (the findings in words, naming the attack).
    """
    owner = "eot_check"
    ks = list(eot_samples)
    if len(ks) < 2 or any(b <= a for a, b in zip(ks, ks[1:], strict=False)):
        raise param_error("eot_samples", owner, "at least two increasing ints", eot_samples)
    for k in ks:
        check_int(k, name="eot_samples", owner=owner, low=1)
    check_real(tol, name="tol", owner=owner, low=0.0)
    if not np.isscalar(eps):
        raise param_error("eps", owner, "one number", eps)
    check_real(eps, name="eps", owner=owner, low=0.0)
    from .evaluate import attack_names

    check_param(attack, [Options(str, attack_names())], name="attack", owner=owner)
    for bad in ("attacks", "eot_samples"):
        if bad in kwargs:
            raise param_error(bad, owner, "not given (set by eot_check)", kwargs[bad])
    rng = kwargs.pop("rng", 0)
    seed = seed_from(rng)
    rows = []
    stochastic = False
    for k in ks:
        res = evaluate_robustness(
            model, images, labels, eps=eps, attacks=[attack], eot_samples=k, rng=seed, **kwargs
        )
        stochastic = bool(res.attrs["stochastic"])
        rows.append(
            (
                float(res.accuracy.sel(attack=attack).item()),
                float(res.accuracy_ci_low.sel(attack=attack).item()),
                float(res.accuracy_ci_high.sel(attack=attack).item()),
            )
        )
    arr = np.array(rows)
    helps = bool(eot_helps(arr[0, 0] - arr[-1, 0], tol))
    converged = bool(arr[-2, 0] - arr[-1, 0] <= tol)
    messages = []
    if not stochastic:
        messages.append(f"{attack}: the model is deterministic, EOT changes nothing")
    if helps:
        messages.append(
            f"{attack}: accuracy {_f(arr[0, 0])} with {ks[0]} draw(s) vs {_f(arr[-1, 0])} with "
            f"{ks[-1]} at eps {eps:g} -> randomness masks the gradient of single draws; "
            "quote only EOT numbers"
        )
    if not converged:
        messages.append(
            f"{attack}: accuracy still falls by {_f(arr[-2, 0] - arr[-1, 0])} from {ks[-2]} to "
            f"{ks[-1]} EOT draws at eps {eps:g} -> EOT not converged, use more draws"
        )
    return xr.Dataset(
        {
            "accuracy": (("eot_samples",), arr[:, 0]),
            "ci_low": (("eot_samples",), arr[:, 1]),
            "ci_high": (("eot_samples",), arr[:, 2]),
            "eot_helps": ((), helps),
            "eot_converged": ((), converged),
            "stochastic": ((), stochastic),
        },
        coords={"eot_samples": ks},
        attrs={"attack": attack, "eps": float(eps), "tol": tol, "messages": json.dumps(messages)},
    )
