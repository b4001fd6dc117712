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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from neurovar._validation import check_memory

from ._stochastic import is_stochastic, randomness_check
from ._utils import (
    RNGLike,
    check_choice,
    check_images_labels,
    check_number,
    check_progress,
    check_validation_common,
    model_device,
    param_error,
    preserved_state,
    progress_bar,
    renamed_kwarg,
    reseeded_noise,
    seed_from,
)
from .attacks import LOSSES, PGD, _loss_per_example
from .evaluate import STIMULUS, STIMULUS_ID, _wilson, evaluate_robustness, robust_accuracy

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
    check_choice(loss, "loss", owner, LOSSES)
    check_number(n_repeats, "n_repeats", owner, low=2, integer=True)
    progress = check_progress(progress, owner)
    ks = list(eot_samples)
    for k in ks:
        check_number(k, "eot_samples", owner, low=1, integer=True)
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


@dataclass(frozen=True)
class RobustnessDiagnosis:
    """What :func:`check_robustness_result` found, per check and per attack.

    Attributes
    ----------
    checks
        :class:`xarray.Dataset` over dim ``attack`` (and ``eps`` where the number depends on
        it): booleans ``reaches_chance``, ``near_worst_case``, ``not_beaten_by_black_box``,
        ``monotone_in_eps``, ``masking_suspected``, ``is_black_box``; the numbers behind them
        ``accuracy_at_max_eps``, ``gap_to_worst_case`` (eps, attack) with ``gap_ci_low`` /
        ``gap_ci_high``, ``max_gap``, ``eps_of_max_gap``, ``black_box_advantage`` (eps, attack),
        ``max_rise``; and the worst-case checks ``worst_case_monotone``,
        ``worst_case_reaches_chance`` (scalars) and ``black_box_beats_every_gradient_attack``
        (eps). ``attrs``: ``chance``, ``tol``, ``max_eps``, ``confidence_level``.
    messages
        One sentence per problem, naming the attack, e.g. ``"pgd_ce: accuracy 0.63 at eps 0.3
        does not reach chance (0.10); square beats it by 0.36 at eps 0.3 -> gradient masking
        suspected"``.
    """

    checks: xr.Dataset
    messages: list[str] = field(default_factory=list)

    @property
    def flags(self) -> dict[str, bool]:
        """The worst-case flags of earlier releases: ``monotone_in_eps``, ``reaches_chance``
        (both of the worst case) and ``black_box_not_stronger`` (no black-box attack beats
        the strongest white-box attack by more than ``tol``; present if both kinds ran)."""
        c = self.checks
        out = {
            "monotone_in_eps": bool(c.worst_case_monotone),
            "reaches_chance": bool(c.worst_case_reaches_chance),
        }
        if "black_box_not_stronger" in c:
            out["black_box_not_stronger"] = bool(c.black_box_not_stronger)
        return out

    @property
    def masked_attacks(self) -> list[str]:
        """White-box attacks whose numbers look masked (``masking_suspected``)."""
        c = self.checks
        return [str(a) for a in c.attack.values[c.masking_suspected.values]]

    @property
    def flagged_attacks(self) -> list[str]:
        """Attacks that fail any per-attack check (weak black-box attacks included)."""
        c = self.checks
        ok = c.reaches_chance & c.near_worst_case & c.not_beaten_by_black_box & c.monotone_in_eps
        return [str(a) for a in c.attack.values[~ok.values]]

    @property
    def ok(self) -> bool:
        """No attack suspected of masking and every worst-case flag passes."""
        return not self.masked_attacks and all(self.flags.values())

    def __str__(self) -> str:
        return "\n".join(self.messages) if self.messages else "no robustness check failed"


def _f(x: float) -> str:
    return f"{x:.2f}"


# The checks themselves, one definition each: check_robustness_result and eot_check here, and
# neurovar.experiment.analysis.masking_diagnostics on the assembled grid, all call these.


def _reaches_chance(accuracy: Any, chance: float, tol: float) -> np.ndarray:
    """Whether an attack takes accuracy to chance: :math:`\\mathrm{acc} \\le 1/K + \\mathrm{tol}`.

    Applied at the largest eps: an attack that works drives any classifier to chance when the
    perturbation can destroy the image; one that does not is not evidence of robustness
    (Athalye et al. 2018, Sec. 3.1). NaN accuracies do not reach chance.
    """
    return np.asarray(accuracy, dtype=float) <= chance + tol


def _near_worst_case(gap: Any, tol: float) -> np.ndarray:
    """Whether an attack is close to the ensemble's worst case: ``gap <= tol``.

    ``gap`` is the attack's accuracy above the per-stimulus worst case of the ensemble (or the
    fraction of stimuli that survive it but not some other attack). A larger gap means the
    attack alone overstates robustness: quote the worst case.
    """
    return np.asarray(gap, dtype=float) <= tol


def _black_box_advantage(gradient_accuracy: Any, black_box_accuracy: Any) -> np.ndarray:
    """Accuracy of each gradient attack minus that of the strongest black-box attack.

    Both arrays have the attacks on the last axis (any leading axes, e.g. eps, must agree);
    positive: the gradient-free attack is stronger.
    """
    grad = np.asarray(gradient_accuracy, dtype=float)
    best_bb = np.min(np.asarray(black_box_accuracy, dtype=float), axis=-1, keepdims=True)
    return grad - best_bb


def _black_box_beats_every_gradient_attack(
    gradient_accuracy: Any, black_box_accuracy: Any, margin: float
) -> np.ndarray:
    """Whether the strongest black-box attack beats every gradient attack by more than ``margin``.

    The classic sign of gradient masking (Athalye et al. 2018, Sec. 3.1): a gradient-free
    attack can only beat all gradient attacks if their gradients are useless. Reduces the last
    axis (attacks); a NaN accuracy is not beaten.
    """
    advantage = _black_box_advantage(gradient_accuracy, black_box_accuracy)
    return np.all(advantage > margin, axis=-1)


def _eot_helps(gap: Any, tol: float) -> np.ndarray:
    """Whether averaging over noise draws makes an attack stronger: ``gap > tol``.

    ``gap`` is the accuracy under the attack with fewer draws (none: one draw) minus with more;
    beyond ``tol`` the attack on single draws overstated robustness (randomness obfuscates
    the gradient; EOT, Athalye et al. 2018), so only EOT numbers may be quoted.
    """
    return np.asarray(gap, dtype=float) > tol


def check_robustness_result(
    result: xr.Dataset,
    *,
    n_classes: int,
    black_box: Sequence[str] = ("square",),
    tol: float = 0.05,
    warn: bool = True,
) -> RobustnessDiagnosis:
    """Judge every attack of an :func:`evaluate_robustness` result (Athalye et al. 2018, Sec. 3.1).

    For every attack :math:`a` with accuracy :math:`\\mathrm{acc}_a(\\epsilon)` and the
    ensemble's per-stimulus worst case :math:`\\bar w(\\epsilon)`:

    - ``reaches_chance``: at the largest eps, :math:`\\mathrm{acc}_a \\le 1/K + \\mathrm{tol}`
      (only meaningful if the largest eps destroys the image; for digits in [0, 1], L-inf 0.5).
    - ``near_worst_case``: :math:`\\max_\\epsilon (\\mathrm{acc}_a - \\bar w) \\le \\mathrm{tol}`.
      The gap is the fraction of stimuli that survive :math:`a` but not some other attack
      (:math:`c_{a,n} \\ge w_n`), a proportion, given with its Wilson interval when the result
      holds the per-stimulus ``correct``.
    - ``not_beaten_by_black_box`` (white-box attacks): no black-box attack is more than ``tol``
      stronger than :math:`a` at any eps. A gradient-free attack beating a gradient attack is the
      classic sign of gradient masking; ``black_box_beats_every_gradient_attack`` (per eps)
      marks the case where it beats all of them.
    - ``monotone_in_eps``: :math:`\\mathrm{acc}_a` does not rise by more than ``tol`` as eps
      grows.

    A white-box attack failing any of these is ``masking_suspected``: its number alone
    overstates robustness (quote the worst case). A black-box attack failing them is only
    weaker than the ensemble. The worst-case flags of earlier releases are in
    :attr:`RobustnessDiagnosis.flags`. To compare attacks with and without EOT on a
    stochastic model, see :func:`eot_check`.

    Parameters
    ----------
    result
        Output of :func:`evaluate_robustness` (``accuracy`` (eps, attack),
        ``worst_case_accuracy`` (eps); ``correct`` and ``worst_case_correct`` give the gap CIs).
    n_classes
        Number of classes; chance is :math:`1/K`.
    black_box
        Names of the gradient-free attacks in the result.
    tol
        Tolerance on accuracy differences.
    warn
        Emit one :class:`UserWarning` listing the messages if masking is suspected or a
        worst-case flag fails.

    Returns
    -------
    RobustnessDiagnosis
        ``checks`` (Dataset of per-attack booleans and numbers), ``messages``, ``flags`` (old
        dict), ``masked_attacks``, ``flagged_attacks``, ``ok``.
    """
    owner = "check_robustness_result"
    check_validation_common(owner, warn=warn)
    check_number(n_classes, "n_classes", owner, low=2, integer=True)
    check_number(tol, "tol", owner, low=0.0, high=1.0)
    if not isinstance(result, xr.Dataset):
        raise param_error(owner, "result", "an evaluate_robustness Dataset", type(result).__name__)
    for var in ("worst_case_accuracy", "accuracy"):
        if var not in result:
            raise param_error(
                owner,
                "result",
                "an evaluate_robustness Dataset",
                f"a Dataset without '{var}' (has {list(result.data_vars)})",
            )
    extra = [d for d in result.accuracy.dims if d not in ("eps", "attack")]
    if extra:
        raise param_error(
            owner, "result", "one evaluation (dims eps, attack); select one element first",
            f"a Dataset with extra dims {extra}",
        )  # fmt: skip
    res = result.sortby("eps")
    eps = np.asarray(res.eps.values, dtype=float)
    attacks = [str(a) for a in res.attack.values]
    acc = res.accuracy.transpose("eps", "attack").values.astype(float)  # (E, A)
    wc = res.worst_case_accuracy.values.astype(float)  # (E,)
    chance = 1.0 / n_classes
    level = float(res.attrs.get("confidence_level", 0.95))
    is_bb = np.array([a in black_box for a in attacks])
    n_e, n_a = acc.shape

    # gap to the worst case, a proportion of stimuli (with CI if per-stimulus data are there)
    gap = acc - wc[:, None]
    gap_lo = np.full_like(gap, np.nan)
    gap_hi = np.full_like(gap, np.nan)
    if "correct" in res and "worst_case_correct" in res:
        c = res.correct.transpose("eps", "attack", ...).values.astype(bool)
        w = res.worst_case_correct.transpose("eps", ...).values.astype(bool)
        only = c & ~w[:, None, :]
        n_stim = c.shape[-1]
        gap = only.mean(axis=-1)
        for i in range(n_e):
            for j in range(n_a):
                gap_lo[i, j], gap_hi[i, j] = _wilson(int(only[i, j].sum()), n_stim, level)
    i_gap = np.argmax(gap, axis=0)
    max_gap = gap[i_gap, np.arange(n_a)]
    near = _near_worst_case(max_gap, tol)

    at_max = acc[-1]
    reaches = _reaches_chance(at_max, chance, tol)
    rise = np.max(np.diff(acc, axis=0), axis=0) if n_e > 1 else np.zeros(n_a)
    monotone = rise <= tol

    bb_adv = np.full_like(acc, np.nan)  # acc_a - (strongest black box), white-box attacks
    not_beaten = np.ones(n_a, dtype=bool)
    beats_all = np.zeros(n_e, dtype=bool)
    strongest_bb = None
    if is_bb.any() and (~is_bb).any():
        bb_acc = acc[:, is_bb]
        strongest_bb = np.array(attacks)[is_bb][np.argmin(bb_acc, axis=1)]  # per eps
        bb_adv[:, ~is_bb] = _black_box_advantage(acc[:, ~is_bb], bb_acc)
        for j in np.flatnonzero(~is_bb):
            not_beaten[j] = bool(np.all(bb_adv[:, j] <= tol))
        beats_all = _black_box_beats_every_gradient_attack(acc[:, ~is_bb], bb_acc, tol) & (eps > 0)
    masking = ~is_bb & ~(near & reaches & not_beaten & monotone)

    # worst-case flags (as before)
    wc_monotone = bool(np.all(np.diff(wc) <= tol))
    wc_chance = bool(wc[-1] <= chance + tol)
    data: dict[str, Any] = {
        "is_black_box": (("attack",), is_bb),
        "reaches_chance": (("attack",), reaches),
        "accuracy_at_max_eps": (("attack",), at_max),
        "near_worst_case": (("attack",), near),
        "gap_to_worst_case": (("eps", "attack"), gap),
        "gap_ci_low": (("eps", "attack"), gap_lo),
        "gap_ci_high": (("eps", "attack"), gap_hi),
        "max_gap": (("attack",), max_gap),
        "eps_of_max_gap": (("attack",), eps[i_gap]),
        "not_beaten_by_black_box": (("attack",), not_beaten),
        "black_box_advantage": (("eps", "attack"), bb_adv),
        "black_box_beats_every_gradient_attack": (("eps",), beats_all),
        "monotone_in_eps": (("attack",), monotone),
        "max_rise": (("attack",), rise),
        "masking_suspected": (("attack",), masking),
        "worst_case_monotone": ((), wc_monotone),
        "worst_case_reaches_chance": ((), wc_chance),
    }
    if strongest_bb is not None:
        best_wb = acc[:, ~is_bb].min(axis=1)
        bb_ok = bool(np.all(acc[:, is_bb].min(axis=1) >= best_wb - tol))
        data["black_box_not_stronger"] = ((), bb_ok)
    checks = xr.Dataset(
        data,
        coords={"eps": eps, "attack": attacks},
        attrs={"chance": chance, "tol": tol, "max_eps": float(eps[-1]), "confidence_level": level},
    )

    messages = []
    for j, a in enumerate(attacks):
        problems = []
        if not reaches[j]:
            problems.append(
                f"accuracy {_f(at_max[j])} at eps {eps[-1]:g} does not reach chance ({_f(chance)})"
            )
        if not not_beaten[j]:
            i = int(np.nanargmax(bb_adv[:, j]))
            problems.append(f"{strongest_bb[i]} beats it by {_f(bb_adv[i, j])} at eps {eps[i]:g}")
        if not near[j]:
            i = int(i_gap[j])
            ci = (
                f" ({100 * level:.0f}% CI {_f(gap_lo[i, j])}-{_f(gap_hi[i, j])})"
                if np.isfinite(gap_lo[i, j])
                else ""
            )
            problems.append(
                f"exceeds the worst case ({_f(wc[i])}) by {_f(gap[i, j])}{ci} at eps {eps[i]:g}"
            )
        if not monotone[j]:
            problems.append(f"accuracy rises by {_f(rise[j])} as eps grows")
        if problems:
            verdict = (
                "weaker than the ensemble (a black-box attack: no masking sign by itself)"
                if is_bb[j]
                else "gradient masking suspected; quote the worst case"
            )
            messages.append(f"{a}: " + "; ".join(problems) + f" -> {verdict}")
    for i in np.flatnonzero(beats_all):
        messages.append(
            f"at eps {eps[i]:g} the black-box {strongest_bb[i]} beats every gradient attack "
            "-> gradient masking suspected"
        )
    if not wc_monotone:
        messages.append("worst case: accuracy rises as eps grows (attacks too weak or masked)")
    if not wc_chance:
        messages.append(
            f"worst case: accuracy {_f(wc[-1])} at eps {eps[-1]:g} does not reach chance "
            f"({_f(chance)}): every attack may be masked, or the largest eps is too small"
        )
    diagnosis = RobustnessDiagnosis(checks=checks, messages=messages)
    if warn and (diagnosis.masked_attacks or not all(diagnosis.flags.values())):
        warnings.warn(
            "Robustness checks failed, the white-box numbers may reflect gradient masking "
            "(Athalye et al. 2018); quote the worst case:\n" + "\n".join(messages),
            UserWarning,
            stacklevel=2,
        )
    return diagnosis


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
        raise param_error(owner, "eot_samples", "at least two increasing ints", eot_samples)
    for k in ks:
        check_number(k, "eot_samples", owner, low=1, integer=True)
    check_number(tol, "tol", owner, low=0.0)
    if not np.isscalar(eps):
        raise param_error(owner, "eps", "one number", eps)
    check_number(eps, "eps", owner, low=0.0)
    from .evaluate import attack_names

    check_choice(attack, "attack", owner, attack_names())
    for bad in ("attacks", "eot_samples"):
        if bad in kwargs:
            raise param_error(owner, bad, "not given (set by eot_check)", kwargs[bad])
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
    helps = bool(_eot_helps(arr[0, 0] - arr[-1, 0], tol))
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
