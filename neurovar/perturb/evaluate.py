"""Robust accuracy of (possibly stochastic) networks: an attack ensemble and worst-case counting.

A single attack can report a false robustness gain for a network that masks its gradients
(Athalye, Carlini & Wagner 2018; Croce & Hein 2020). :func:`evaluate_robustness` therefore runs
an ensemble in the spirit of AutoAttack -- cross-entropy PGD, a targeted margin (DLR) PGD and the
gradient-free Square attack, each with EOT when the model is stochastic -- and reports every
attack's accuracy *and* the per-example worst case. A stochastic model is evaluated
``n_evaluations`` times: an example counts as correct only if it is classified correctly in
every evaluation, on the clean image and on the attacked image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from statsmodels.stats.proportion import proportion_confint
from torch import nn
from tqdm.auto import tqdm

from neurovar._validation import check_memory

from ._utils import (
    RNGLike,
    check_choice,
    check_images_labels,
    check_number,
    check_validation_common,
    model_device,
    param_error,
    preserved_state,
)
from .adapters import TorchattacksAttack
from .attacks import FGSM, PGD, Square, TargetedPGD
from .diagnostics import is_stochastic

__all__ = ["evaluate_robustness", "robust_accuracy", "ENSEMBLE", "ATTACK_NAMES", "correct_matrix"]

#: Attacks of the default ensemble (AutoAttack-like: CE gradient, targeted margin, black box).
ENSEMBLE: tuple[str, ...] = ("pgd_ce", "pgd_dlr_targeted", "square")

AttackCallable = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _build_attack(
    name: str,
    model: nn.Module,
    *,
    eps: float,
    norm: str,
    steps: int,
    n_queries: int,
    n_target_classes: int,
    eot_samples: int,
    seed: int,
    device: torch.device,
) -> AttackCallable:
    # a Generator, not the int: every batch of a batched evaluation gets its own draws
    rng = np.random.default_rng(seed)
    common = dict(eps=eps, norm=norm, eot_samples=eot_samples, rng=rng, device=device)
    if name == "fgsm":
        return FGSM(model, **common)
    if name == "pgd_ce":
        return PGD(model, steps=steps, loss="ce", **common)
    if name == "pgd_dlr":
        return PGD(model, steps=steps, loss="dlr", **common)
    if name == "pgd_dlr_targeted":
        return TargetedPGD(
            model, steps=steps, loss="dlr", n_target_classes=n_target_classes, **common
        )
    if name == "pgd_margin_targeted":
        return TargetedPGD(
            model, steps=steps, loss="margin", n_target_classes=n_target_classes, **common
        )
    if name == "square":
        if norm == "linf":
            return Square(model, n_queries=n_queries, **common)
        # torchattacks' L2 Square; no EOT there (see attrs "notes" of the result)
        return TorchattacksAttack(
            "Square", model, norm="L2", eps=eps, n_queries=n_queries, rng=rng, device=device
        )
    raise AssertionError(name)  # unreachable: names validated before


ATTACK_NAMES: tuple[str, ...] = (
    "fgsm",
    "pgd_ce",
    "pgd_dlr",
    "pgd_dlr_targeted",
    "pgd_margin_targeted",
    "square",
)


@torch.no_grad()
def correct_matrix(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_evaluations: int,
    seed: int,
    batch_size: int | None = None,
    device: torch.device | None = None,
) -> np.ndarray:
    """Boolean array (n_evaluations, N): is example n classified correctly in evaluation e.

    Runs in the model's current mode, inside :func:`torch.random.fork_rng` seeded by ``seed``
    (injected :mod:`neurovar.noise` modules reseeded from it too). The evaluations are
    successive passes on one noise stream, hence independent noise draws, not one draw repeated.
    """
    device = model_device(model, device)
    n = images.shape[0]
    bs = n if batch_size is None else batch_size
    out = np.zeros((n_evaluations, n), dtype=bool)
    with preserved_state(model, device, seed):
        for e in range(n_evaluations):
            for start in range(0, n, max(bs, 1)):
                xb = images[start : start + bs].to(device)
                yb = labels[start : start + bs].to(device)
                pred = model(xb).argmax(dim=1)
                out[e, start : start + bs] = (pred == yb).cpu().numpy()
    return out


def _attack_batched(
    attack: AttackCallable, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None
) -> torch.Tensor:
    if batch_size is None or batch_size >= images.shape[0]:
        return attack(images, labels)
    parts = [
        attack(images[s : s + batch_size], labels[s : s + batch_size])
        for s in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(parts)


def _evaluations(
    model: nn.Module,
    attack: AttackCallable | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_evaluations: int,
    gen: np.random.Generator,
    batch_size: int | None,
    device: torch.device,
) -> np.ndarray:
    """:func:`correct_matrix` on ``attack(images, labels)`` (on ``images`` if ``attack`` is None),
    the evaluation noise seeded from ``gen``."""
    x = images if attack is None else _attack_batched(attack, images, labels, batch_size)
    return correct_matrix(
        model,
        x,
        labels,
        n_evaluations=n_evaluations,
        seed=int(gen.integers(2**62)),
        batch_size=batch_size,
        device=device,
    )


def _wilson(successes: int, n: int, alpha: float, method: str) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    low, high = proportion_confint(successes, n, alpha=alpha, method=method)
    return float(low), float(high)


def _check_common(owner: str, n_evaluations: Any, batch_size: Any, alpha: float) -> None:
    check_number(n_evaluations, "n_evaluations", owner, low=1, integer=True)
    if batch_size is not None:
        check_number(batch_size, "batch_size", owner, low=1, integer=True)
    check_number(alpha, "alpha", owner, low=0.0, high=1.0, low_inclusive=False)


def robust_accuracy(
    model: nn.Module,
    attack: AttackCallable | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_evaluations: int = 10,
    alpha: float = 0.05,
    method: str = "wilson",
    batch_size: int | None = None,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
) -> xr.Dataset:
    """Worst-case accuracy of a (stochastic) model under one attack, with a confidence interval.

    An example is robust if it is classified correctly in *every* one of ``n_evaluations``
    forward passes on the clean image and on the attacked image:

    .. math:: r_n = \\prod_{e=1}^{E} 1[f_{\\xi_e}(x_n) = y_n]\\,1[f_{\\xi'_e}(x'_n) = y_n],
       \\qquad \\mathrm{acc} = \\frac1N \\sum_n r_n,

    with a binomial confidence interval for ``acc`` from
    :func:`statsmodels.stats.proportion.proportion_confint` (Wilson 1927 by default;
    ``method="beta"`` gives Clopper-Pearson). Counting the worst case over evaluations follows
    the recommendation for randomized defenses of Athalye et al. (2018) and Croce et al. (2022).

    Parameters
    ----------
    model
        The network, evaluated in the mode it is in.
    attack
        A callable ``attack(images, labels) -> adversarial images`` (any neurovar attack or
        :class:`TorchattacksAttack`), or None for clean accuracy.
    images, labels
        Images in [0, 1] of shape (N, C, H, W) and integer labels (N,).
    n_evaluations
        Number of repeated evaluations (use 1 for a deterministic model).
    alpha
        1 - confidence level of the interval.
    method
        Any method of ``proportion_confint`` (``"wilson"``, ``"beta"``, ``"agresti_coull"``...).
    batch_size
        Examples per attack/forward call; default all at once.
    rng
        Seed for the evaluation noise.
    device
        Device; default the model's.

    Returns
    -------
    xarray.Dataset
        ``accuracy``, ``ci_low``, ``ci_high`` (scalars), ``correct`` (example; bool) and
        ``correct_fraction`` (example; fraction of evaluations correct on the attacked image).
    """
    owner = "robust_accuracy"
    check_validation_common(owner, rng=rng)
    if hasattr(images, "shape") and len(images.shape) and isinstance(n_evaluations, int):
        check_memory(
            2.0 * n_evaluations * images.shape[0],
            name="n_evaluations",
            owner=owner,
            value=n_evaluations,
        )
    _check_common(owner, n_evaluations, batch_size, alpha)
    check_choice(method, "method", owner, ("wilson", "beta", "normal", "agresti_coull", "jeffreys"))
    if attack is not None and not callable(attack):
        raise param_error(owner, "attack", "a callable attack(images, labels) or None", attack)
    images, labels = check_images_labels(images, labels, owner)
    dev = model_device(model, device)
    gen = np.random.default_rng(rng)
    kw = dict(n_evaluations=n_evaluations, gen=gen, batch_size=batch_size, device=dev)
    clean = _evaluations(model, None, images, labels, **kw)
    adv_correct = clean if attack is None else _evaluations(model, attack, images, labels, **kw)
    correct = clean.all(axis=0) & adv_correct.all(axis=0)
    n = correct.size
    low, high = _wilson(int(correct.sum()), n, alpha, method)
    return xr.Dataset(
        {
            "accuracy": ((), float(correct.mean()) if n else float("nan")),
            "ci_low": ((), low),
            "ci_high": ((), high),
            "correct": (("example",), correct),
            "correct_fraction": (("example",), adv_correct.mean(axis=0)),
        },
        coords={"example": np.arange(n), "label": ("example", labels.cpu().numpy())},
        attrs={
            "n_evaluations": n_evaluations,
            "confidence_level": 1 - alpha,
            "ci_method": method,
            "attack": repr(attack),
        },
    )


def evaluate_robustness(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float | Sequence[float],
    norm: str = "linf",
    attacks: str | Sequence[str] | Mapping[str, Callable[[float], AttackCallable]] = "ensemble",
    n_evaluations: int = 10,
    eot_samples: int | str = "auto",
    steps: int = 20,
    n_queries: int = 1000,
    n_target_classes: int = 3,
    alpha: float = 0.05,
    batch_size: int | None = None,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Robust accuracy over eps under an attack ensemble, per attack and worst case per example.

    The default ensemble (``attacks="ensemble"``, :data:`ENSEMBLE`) follows AutoAttack (Croce &
    Hein 2020): ``"pgd_ce"`` (cross-entropy PGD, Madry et al. 2018), ``"pgd_dlr_targeted"``
    (targeted DLR-margin PGD against the top ``n_target_classes`` wrong classes) and ``"square"``
    (gradient-free Square attack, Andriushchenko et al. 2020). If the model is stochastic
    (outputs differ between two passes on the same input, :func:`is_stochastic`), every attack
    averages over ``eot_samples`` noise draws (EOT, Athalye et al. 2018) and the model is
    evaluated ``n_evaluations`` times. Per attack :math:`a` and example :math:`n`,

    .. math:: c_{a,n} = \\prod_{e} 1[f_{\\xi_e}(x_n) = y_n]\\, 1[f_{\\xi'_e}(x^{a}_n) = y_n],
       \\qquad w_n = \\min_a c_{a,n},

    and the reported numbers are :math:`\\mathrm{acc}_a = \\bar c_{a}` and the worst case
    :math:`\\bar w` (what to quote), with a Wilson interval.

    Parameters
    ----------
    model
        Network mapping images in [0, 1] to logits; evaluated and attacked in its current mode.
    images, labels
        Images in [0, 1], shape (N, C, H, W); integer labels (N,).
    eps
        One radius or a sequence of radii (0 gives clean accuracy).
    norm
        ``"linf"`` or ``"l2"``.
    attacks
        ``"ensemble"``, a sequence of names from :data:`ATTACK_NAMES`, or a mapping
        ``name -> factory`` where ``factory(eps)`` returns a callable
        ``attack(images, labels) -> adversarial images``.
    n_evaluations
        Repeated evaluations of a stochastic model (a deterministic model is evaluated once).
    eot_samples
        EOT draws per gradient/loss; ``"auto"``: 8 for a stochastic model, 1 otherwise.
    steps, n_queries, n_target_classes
        PGD iterations, Square queries, and target classes of the targeted attack.
    alpha
        1 - confidence level of the intervals.
    batch_size
        Examples per attack call; default all.
    rng
        None, int or numpy Generator; seeds every attack and evaluation.
    device
        Device; default the model's.
    progress
        Show a tqdm progress bar over (eps, attack).

    Returns
    -------
    xarray.Dataset
        Dims ``("eps", "attack", "example")``: ``accuracy`` (eps, attack), ``correct`` and
        ``correct_fraction`` (eps, attack, example), ``worst_case_accuracy``, ``ci_low``,
        ``ci_high`` (eps), ``worst_case_correct`` (eps, example), ``clean_accuracy`` and
        ``clean_correct`` (example). ``attrs`` record the settings and whether the model was
        found stochastic.

    References
    ----------
    Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", ICML. Athalye, Carlini & Wagner (2018), "Obfuscated
    gradients give a false sense of security", ICML.
    """
    owner = "evaluate_robustness"
    check_validation_common(owner, rng=rng, progress=progress)
    if not isinstance(attacks, (str, Sequence, Mapping)):
        raise param_error(
            owner, "attacks", "'ensemble', a list of attack names or a mapping", attacks
        )
    _check_common(owner, n_evaluations, batch_size, alpha)
    check_choice(norm, "norm", owner, ("linf", "l2"))
    images, labels = check_images_labels(images, labels, owner)
    eps_list = [eps] if np.isscalar(eps) else list(eps)
    if not eps_list:
        raise param_error(owner, "eps", "a number or a non-empty sequence of numbers", eps)
    for e in eps_list:
        if norm == "linf":
            check_number(e, "eps", owner, low=0.0, high=1.0)
        else:
            check_number(e, "eps", owner, low=0.0)
    if len(set(eps_list)) != len(eps_list):
        raise param_error(owner, "eps", "a sequence of distinct values", eps)
    for name, value in (("steps", steps), ("n_queries", n_queries)):
        check_number(value, name, owner, low=1, integer=True)
    check_number(n_target_classes, "n_target_classes", owner, low=1, integer=True)

    if isinstance(attacks, str):
        if attacks != "ensemble":
            raise param_error(
                owner, "attacks", "'ensemble', a list of attack names or a mapping", attacks
            )
        names: list[str] = list(ENSEMBLE)
        factories: dict[str, Callable[[float], AttackCallable]] | None = None
    elif isinstance(attacks, Mapping):
        names = list(attacks)
        factories = dict(attacks)
        for k, f in factories.items():
            if not callable(f):
                raise param_error(owner, "attacks", "a mapping of names to callables", {k: f})
    else:
        names = list(attacks)
        factories = None
        for k in names:
            check_choice(k, "attacks", owner, ATTACK_NAMES)
    if not names:
        raise param_error(owner, "attacks", "at least one attack", attacks)

    dev = model_device(model, device)
    gen = np.random.default_rng(rng)
    stochastic = is_stochastic(model, images[: min(16, len(images))], rng=gen, device=dev)
    if eot_samples == "auto":
        eot = 8 if stochastic else 1
    else:
        check_number(eot_samples, "eot_samples", owner, low=1, integer=True)
        eot = int(eot_samples)
    n_eval = n_evaluations if stochastic else 1

    kw = dict(n_evaluations=n_eval, gen=gen, batch_size=batch_size, device=dev)
    clean_mat = _evaluations(model, None, images, labels, **kw)
    clean = clean_mat.all(axis=0)

    n, n_eps, n_att = images.shape[0], len(eps_list), len(names)
    correct = np.zeros((n_eps, n_att, n), dtype=bool)
    fraction = np.zeros((n_eps, n_att, n))
    bar = tqdm(total=n_eps * n_att, disable=not progress, desc="evaluate_robustness")
    try:
        for i, e in enumerate(eps_list):
            for j, name in enumerate(names):
                seed = int(gen.integers(2**62))
                if e == 0:  # no perturbation: the clean evaluations, shared by all attacks
                    correct[i, j] = clean
                    fraction[i, j] = clean_mat.mean(axis=0)
                    bar.update()
                    continue
                if factories is not None:
                    attack = factories[name](e)
                else:
                    attack = _build_attack(
                        name,
                        model,
                        eps=float(e),
                        norm=norm,
                        steps=steps,
                        n_queries=n_queries,
                        n_target_classes=n_target_classes,
                        eot_samples=eot,
                        seed=seed,
                        device=dev,
                    )
                mat = _evaluations(model, attack, images, labels, **kw)
                correct[i, j] = clean & mat.all(axis=0)
                fraction[i, j] = mat.mean(axis=0)
                bar.update()
    finally:
        bar.close()

    worst = correct.all(axis=1)
    ci = np.array([_wilson(int(w.sum()), n, alpha, "wilson") for w in worst])
    notes = []
    if norm == "l2" and "square" in names and factories is None:
        notes.append("L2 'square' is torchattacks' Square: no EOT averaging of its loss.")
    return xr.Dataset(
        {
            "accuracy": (("eps", "attack"), correct.mean(axis=2)),
            "correct": (("eps", "attack", "example"), correct),
            "correct_fraction": (("eps", "attack", "example"), fraction),
            "worst_case_accuracy": (("eps",), worst.mean(axis=1)),
            "worst_case_correct": (("eps", "example"), worst),
            "ci_low": (("eps",), ci[:, 0]),
            "ci_high": (("eps",), ci[:, 1]),
            "clean_accuracy": ((), float(clean.mean())),
            "clean_correct": (("example",), clean),
        },
        coords={
            "eps": np.asarray(eps_list, dtype=float),
            "attack": names,
            "example": np.arange(n),
            "label": ("example", labels.cpu().numpy()),
        },
        attrs={
            "norm": norm,
            "n_evaluations": n_eval,
            "eot_samples": eot,
            "stochastic": int(stochastic),
            "steps": steps,
            "n_queries": n_queries,
            "n_target_classes": n_target_classes,
            "confidence_level": 1 - alpha,
            "ci_method": "wilson",
            "attacks": json.dumps(names),
            "notes": " ".join(notes),
        },
    )
