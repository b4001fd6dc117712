"""One perturbation interface: a spec (family, name, strength) usable as a source and a target.

Attacks, CIFAR-10-C corruptions and parametric modifications are called three ways
(``Attack(model, eps=...)(x, y)``, ``corrupt(x, name, severity=...)``, ``modify(x, name,
strength=...)``). A :class:`Perturbation` names one of them at one strength and

- **as a source** (:meth:`Perturbation.apply`) returns perturbed images, e.g. to fit a noise
  covariance from the activation change :math:`h(\\tilde x) - h(x)`
  (:func:`neurovar.noise.fit_perturbation_covariance`);
- **as a target** (:func:`evaluate_target`) is evaluated over several strengths. An attack
  target's number is the per-example worst case of the attack ensemble of
  :func:`evaluate_robustness` (never one attack alone); a corruption or modification target's
  number is the accuracy under it. Corruption targets are never mixed into the attack
  ensemble's worst case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from neurovar._validation import param_error  # one order: (name, owner, ...)

from .._rng import seed_from
from .._validation import InvalidParameterError, check_device, check_int, check_rng
from ._defaults import DEFAULT_STEPS
from ._utils import RNGLike, check_images_labels, model_device
from .corruptions import CORRUPTIONS, MODIFICATIONS, SEVERITIES, corrupt, modify
from .evaluate import (
    ENSEMBLE,
    _call_factory,
    attack_names,
    correct_matrix,
    evaluate_robustness,
    get_attack_factory,
)
from .imagenet_c import PAPER_CORRUPTIONS, corrupt_paper

__all__ = ["FAMILIES", "Perturbation", "TargetSpec", "evaluate_target", "perturbation_names"]

#: The families of perturbations: attacks, CIFAR-10-C corruptions, parametric modifications, and
#: the ImageNet-C corruptions as Preble et al. (2026) apply them to 28x28 images
#: (:func:`neurovar.perturb.corrupt_paper`).
FAMILIES: tuple[str, ...] = ("attack", "corruption", "modification", "paper_corruption")


def perturbation_names(family: str) -> tuple[str, ...]:
    """Valid ``name`` values of a family (attack names of the ensemble registry, the 15
    CIFAR-10-C corruptions, or the parametric modifications)."""
    if family == "attack":
        return attack_names()
    if family == "corruption":
        return tuple(sorted(CORRUPTIONS))
    if family == "modification":
        return tuple(sorted(MODIFICATIONS))
    if family == "paper_corruption":
        return tuple(PAPER_CORRUPTIONS)
    raise param_error("family", "perturbation_names", f"one of {FAMILIES}", family)


def _check_family_name(owner: str, family: Any, name: Any) -> None:
    if family not in FAMILIES:
        raise param_error("family", owner, f"one of {FAMILIES}", family)
    if family == "attack" and name == "ensemble":
        return
    valid = perturbation_names(family)
    if name not in valid:
        raise param_error("name", owner, f"one of {list(valid)} for family {family!r}", name)


def strength_violation(
    family: str, name: str, norm: str, strength: float, *, clean_ok: bool = True
) -> str | None:
    r"""What a perturbation strength must be, if ``strength`` breaks the rule; else None.

    The one strength rule of the package (the library's specs and the experiment config both
    read it):

    - attacks: an eps in :math:`[0, 1]` for ``norm="linf"`` (images live in [0, 1]) and in
      :math:`[0, \infty)` for ``"l2"``;
    - corruptions (CIFAR-10-C and the paper's ImageNet-C ones): a severity in
      :data:`neurovar.perturb.corruptions.SEVERITIES`;
    - modifications: a strength in the modification's range
      (:data:`neurovar.perturb.corruptions.MODIFICATIONS`).

    ``clean_ok`` decides the clean point (eps 0, or a modification's identity strength). In a
    sweep of the library it is legitimate -- the clean point of an accuracy-vs-eps curve, and
    :func:`~neurovar.perturb.evaluate_robustness` evaluates it without attacking -- so the
    library passes ``clean_ok=True``. An experiment measures the clean accuracy once, apart
    from its targets, and a clean "target" would be a duplicate of it with a degenerate
    paired test: its config passes ``clean_ok=False`` (eps in :math:`(0, 1]`).

    Parameters
    ----------
    family, name, norm
        The perturbation (``name`` matters for modifications; ``norm`` for attacks).
    strength
        A finite number.
    clean_ok
        Whether the clean point is allowed.

    Returns
    -------
    str or None
        The expectation, e.g. ``"an eps in [0, 1] for norm 'linf'"``, or None when
        ``strength`` follows the rule (or the modification ``name`` is unknown, which is
        reported by the name check).
    """
    if family == "attack":
        high = 1.0 if norm == "linf" else np.inf
        low_ok = 0.0 <= strength if clean_ok else 0.0 < strength
        if not (low_ok and strength <= high):
            bracket = "[" if clean_ok else "("
            return f"an eps in {bracket}0, {high:g}] for norm {norm!r}"
        return None
    if family in ("corruption", "paper_corruption"):
        return None if strength in SEVERITIES else f"a severity in {list(SEVERITIES)}"
    if name not in MODIFICATIONS:
        return None
    _, (low, high), identity = MODIFICATIONS[name]
    if clean_ok and not low <= strength <= high:
        return f"a strength in [{low:g}, {high:g}] for {name!r}"
    if not clean_ok and (not low <= strength <= high or strength == identity):
        return f"a strength in [{low:g}, {high:g}] other than {identity:g} (no change)"
    return None


def _check_strength(owner: str, family: str, name: str, norm: str, strength: Any) -> float:
    """A finite number that follows :func:`strength_violation` (clean point allowed)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.number)):
        raise param_error("strength", owner, "a number", strength)
    s = float(strength)
    if not np.isfinite(s):
        raise param_error("strength", owner, "a finite number", strength)
    expected = strength_violation(family, name, norm, s, clean_ok=True)
    if expected is not None:
        raise param_error("strength", owner, expected, strength)
    return s


@dataclass(frozen=True)
class Perturbation:
    """One perturbation at one strength: an attack, a corruption or a modification.

    Parameters
    ----------
    family
        ``"attack"``, ``"corruption"`` (CIFAR-10-C, Hendrycks & Dietterich 2019) or
        ``"modification"`` (parametric, :func:`modify`).
    name
        An attack of the registry (:func:`neurovar.perturb.attack_names`), a corruption of ``CORRUPTIONS`` or a modification
        of ``MODIFICATIONS``.
    strength
        eps for attacks (L-inf in [0, 1], L2 >= 0), severity 1-5 for corruptions, the
        modification's strength otherwise.
    norm
        ``"linf"`` or ``"l2"`` (attacks only).
    steps, n_queries, n_target_classes, eot_samples
        Attack budget (PGD steps, Square queries, targeted classes, EOT draws).
    """

    family: str
    name: str
    strength: float
    norm: str = "linf"
    steps: int = DEFAULT_STEPS
    n_queries: int = 1000
    n_target_classes: int = 3
    eot_samples: int = 1

    def __post_init__(self) -> None:
        owner = "Perturbation"
        _check_family_name(owner, self.family, self.name)
        if self.family == "attack" and self.name == "ensemble":
            raise param_error("name", owner, "a single attack (the ensemble is a target)", "ensemble")
        if self.norm not in ("linf", "l2"):
            raise param_error("norm", owner, "'linf' or 'l2'", self.norm)
        for budget in ("steps", "n_queries", "n_target_classes", "eot_samples"):
            value = check_int(getattr(self, budget), name=budget, owner=owner, low=1)
            object.__setattr__(self, budget, value)
        object.__setattr__(
            self, "strength", _check_strength(owner, self.family, self.name, self.norm, self.strength)
        )

    @property
    def key(self) -> str:
        """Short identifier, e.g. ``"attack:pgd_ce[linf]@0.1"``."""
        norm = f"[{self.norm}]" if self.family == "attack" else ""
        return f"{self.family}:{self.name}{norm}@{self.strength:g}"

    def apply(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        model: nn.Module | None = None,
        rng: RNGLike = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Perturbed versions of ``images`` (same shape, in [0, 1]).

        Attacks need ``model`` and ``labels`` and attack the model in the mode it is in;
        corruptions and modifications ignore both. ``rng`` seeds every random choice.
        """
        owner = "Perturbation.apply"
        if self.family == "attack":
            if model is None or labels is None:
                raise param_error("model", owner, "a model and labels for an attack", model)
            images, labels = check_images_labels(images, labels, owner)
            budget = {"steps": self.steps, "n_queries": self.n_queries,
                      "n_target_classes": self.n_target_classes}
            attack = _call_factory(
                get_attack_factory(self.name), model, self.strength, budget,
                norm=self.norm, eot_samples=self.eot_samples,
                rng=np.random.default_rng(seed_from(rng)), device=model_device(model, device),
            )
            return attack(images, labels)
        if self.family == "corruption":
            return corrupt(images, self.name, severity=int(self.strength), rng=rng)
        if self.family == "paper_corruption":
            return corrupt_paper(images, self.name, severity=int(self.strength), rng=rng)
        return modify(images, self.name, strength=self.strength, rng=rng)


@dataclass(frozen=True)
class TargetSpec:
    """A target: a perturbation family/name evaluated at several strengths.

    Parameters
    ----------
    family, name
        As in :class:`Perturbation`; for attacks ``name="ensemble"`` (default) evaluates the
        AutoAttack-like ensemble :data:`ENSEMBLE` and reports its per-example worst case.
    strengths
        eps values / severities / modification strengths.
    norm
        Threat model of an attack target.
    attacks
        Attacks of the ensemble (attack targets only).
    """

    family: str
    name: str
    strengths: tuple[float, ...]
    norm: str = "linf"
    attacks: tuple[str, ...] = field(default=ENSEMBLE)

    def __post_init__(self) -> None:
        owner = "TargetSpec"
        _check_family_name(owner, self.family, self.name)
        if self.norm not in ("linf", "l2"):
            raise param_error("norm", owner, "'linf' or 'l2'", self.norm)
        strengths = tuple(self.strengths)
        if not strengths:
            raise param_error("strengths", owner, "a non-empty sequence", self.strengths)
        name = self.name if self.family != "attack" else "pgd_ce"
        checked = tuple(_check_strength(owner, self.family, name, self.norm, s) for s in strengths)
        if len(set(checked)) != len(checked):
            raise param_error("strengths", owner, "distinct values", self.strengths)
        object.__setattr__(self, "strengths", checked)
        object.__setattr__(self, "attacks", tuple(self.attacks))
        for a in self.attacks:
            if a not in attack_names():
                raise param_error("attacks", owner, f"names from {list(attack_names())}", a)

    def perturbation(self, strength: float, **budget: Any) -> Perturbation:
        """The :class:`Perturbation` of this target at ``strength`` (attacks: CE-PGD)."""
        name = "pgd_ce" if self.family == "attack" and self.name == "ensemble" else self.name
        return Perturbation(self.family, name, strength, norm=self.norm, **budget)


def evaluate_target(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: TargetSpec,
    *,
    n_evaluations: int = 1,
    eot_samples: int | str = "auto",
    steps: int = DEFAULT_STEPS,
    n_queries: int = 1000,
    n_target_classes: int = 3,
    batch_size: int | None = None,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
) -> xr.Dataset:
    r"""Accuracy of ``model`` under ``target`` at each of its strengths, per stimulus.

    - attack targets: :func:`evaluate_robustness` with the ensemble ``target.attacks``; the
      per-stimulus outcome is the worst case over attacks and evaluations,
      :math:`w_n = \min_a c_{a,n}`, and ``attack_accuracy`` keeps each attack's accuracy
      (for the masking diagnostics);
    - corruption / modification targets: the fraction of ``n_evaluations`` forward passes
      that classify the perturbed image correctly, :math:`\frac1E \sum_e 1[f_{\xi_e}(\tilde
      x_n) = y_n]` (the expected accuracy of a stochastic network), one seeded perturbation per
      strength.

    Returns
    -------
    xarray.Dataset
        ``correct`` (strength, stimulus), ``accuracy`` (strength), ``attack_accuracy``
        (strength, attack) and ``attack_correct`` (strength, attack, stimulus: each attack's
        per-stimulus outcome, correct in every evaluation) for attack targets only; attrs ``family``, ``name``,
        ``norm``, ``outcome`` ("worst_case" or "mean_over_evaluations").
    """
    owner = "evaluate_target"
    if not isinstance(target, TargetSpec):
        raise param_error("target", owner, "a TargetSpec", target)
    for budget, value in (("n_evaluations", n_evaluations), ("steps", steps),
                          ("n_queries", n_queries), ("n_target_classes", n_target_classes)):
        check_int(value, name=budget, owner=owner, low=1)
    if not (isinstance(eot_samples, str) and eot_samples == "auto"):
        try:
            check_int(eot_samples, name="eot_samples", owner=owner, low=1)
        except InvalidParameterError:
            raise param_error("eot_samples", owner, "an int >= 1 or 'auto'", eot_samples) from None
    check_int(batch_size, name="batch_size", owner=owner, low=1, allow_none=True)
    check_rng(rng, owner=owner, torch_ok=False)
    device = check_device(device, owner=owner) if device is not None else None
    images, labels = check_images_labels(images, labels, owner)
    gen = np.random.default_rng(rng)
    strengths = np.asarray(target.strengths, dtype=float)
    n = images.shape[0]
    if target.family == "attack":
        res = evaluate_robustness(
            model,
            images,
            labels,
            eps=list(target.strengths),
            norm=target.norm,
            attacks=list(target.attacks),
            n_evaluations=n_evaluations,
            eot_samples=eot_samples,
            steps=steps,
            n_queries=n_queries,
            n_target_classes=n_target_classes,
            batch_size=batch_size,
            rng=gen,
            device=device,
        )
        correct = res["worst_case_correct"].transpose("eps", "stimulus").values.astype(float)
        out = xr.Dataset(
            {
                "correct": (("strength", "stimulus"), correct),
                "accuracy": (("strength",), correct.mean(axis=1)),
                "attack_accuracy": (("strength", "attack"), res["accuracy"].values),
                "attack_correct": (("strength", "attack", "stimulus"),
                                   res["correct"].transpose("eps", "attack", ...)
                                   .values.astype(float)),
            },
            coords={"strength": strengths, "attack": list(res["attack"].values)},
            attrs={"outcome": "worst_case", "eot_samples": int(res.attrs["eot_samples"]),
                   "n_evaluations": int(res.attrs["n_evaluations"]),
                   "stochastic": int(res.attrs["stochastic"])},
        )
    else:
        dev = model_device(model, device)
        correct = np.zeros((len(strengths), n))
        for i, s in enumerate(target.strengths):
            pert = target.perturbation(s).apply(images, rng=gen)
            mat = correct_matrix(
                model, pert, labels, n_evaluations=n_evaluations,
                rng=int(gen.integers(2**62)), batch_size=batch_size, device=dev,
            )
            correct[i] = mat.mean(axis=0)
        out = xr.Dataset(
            {
                "correct": (("strength", "stimulus"), correct),
                "accuracy": (("strength",), correct.mean(axis=1)),
            },
            coords={"strength": strengths},
            attrs={"outcome": "mean_over_evaluations", "n_evaluations": int(n_evaluations)},
        )
    out.attrs.update(family=target.family, name=target.name, norm=target.norm)
    return out

