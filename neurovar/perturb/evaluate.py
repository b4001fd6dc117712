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

import dataclasses
import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from neurovar._validation import (
    Options,
    check_bool,
    check_int,
    check_memory,
    check_param,
    param_error,  # one order: (name, owner, ...)
)
from neurovar.dims import STIMULUS

from ._defaults import DEFAULT_STEPS
from ._eval_checks import (
    CONFIDENCE_LEVEL,
    STIMULUS_ID,
    check_budget,
    check_common,
    check_eps_list,
    check_tags,
)
from ._eval_checks import confidence_level as confidence_level_of
from ._eval_result import ensemble_dataset, wilson
from ._registry import (
    _REGISTRY,
    ENSEMBLE,
    _call_factory,
    _resolve_attacks,
)
from ._stochastic import is_stochastic
from ._utils import (
    RNGLike,
    check_images_labels,
    check_progress,
    check_validation_common,
    fixed_threads,
    inner_progress,
    model_device,
    preserved_state,
    progress_bar,
    renamed_kwarg,
    seed_from,
)

__all__ = [
    "evaluate_robustness",
    "robust_accuracy",
    "robustness_table",
    "correct_matrix",
    "register_attack",
    "unregister_attack",
    "attack_names",
    "get_attack_factory",
    "AttackFactory",
    "ENSEMBLE",
    "ATTACK_NAMES",
    "DEFAULT_NUM_THREADS",
    "DEFAULT_STEPS",
    "TABLE_COLUMNS",
]

#: Intra-op CPU threads that attacks and evaluations run with by default (see
#: :func:`evaluate_robustness`, "Reproducibility").
DEFAULT_NUM_THREADS = 1

_wilson = wilson  # the interval helper, under the name perturb.diagnostics imports

AttackCallable = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AttackFactory(Protocol):
    """Builds one attack of the ensemble for one radius.

    Called as ``factory(model, eps=, norm=, eot_samples=, rng=, device=, steps=, n_queries=,
    n_target_classes=)``. ``rng`` is a :class:`numpy.random.Generator` (pass it on to the attack,
    so that every batch of a batched evaluation gets its own draws); ``device`` a
    :class:`torch.device`. A factory may leave out of its signature any of the budget keywords
    ``steps``, ``n_queries``, ``n_target_classes`` (they are then not passed) or take
    ``**kwargs``. Returns a callable ``attack(images, labels) -> adversarial images``.
    """

    def __call__(
        self,
        model: nn.Module,
        *,
        eps: float,
        norm: str,
        eot_samples: int,
        rng: np.random.Generator,
        device: torch.device,
        **budget: Any,
    ) -> AttackCallable: ...


def register_attack(
    name: str, factory: AttackFactory | None = None, *, overwrite: bool = False
) -> Any:
    """Add an attack to the registry that :func:`evaluate_robustness` draws names from.

    ``register_attack("mine", factory)`` or, as a decorator, ``@register_attack("mine")``. The
    factory follows :class:`AttackFactory`: it receives ``model, eps, norm, eot_samples, rng,
    device`` (and those of ``steps, n_queries, n_target_classes`` it names), so a registered
    attack gets EOT on a stochastic model, its own seeded random stream and the device like the
    built-in ones. Registering an existing name raises unless ``overwrite=True``.

    Returns the factory (so it works as a decorator).
    """
    owner = "register_attack"
    check_bool(overwrite, name="overwrite", owner=owner)
    if not isinstance(name, str) or not name or name in ("worst_case", "clean"):
        raise param_error(
            "name", owner, "a non-empty str other than 'worst_case' and 'clean'", name
        )

    def add(f: AttackFactory) -> AttackFactory:
        if not callable(f):
            raise param_error("factory", owner, "a callable factory(model, eps=, ...)", f)
        if name in _REGISTRY and not overwrite:
            raise param_error(
                "name",
                owner,
                "a name that is not already registered (pass overwrite=True to replace it)",
                name,
            )
        _REGISTRY[name] = f
        return f

    return add if factory is None else add(factory)


def unregister_attack(name: str) -> None:
    """Remove a registered attack (built-in ones included)."""
    if name not in _REGISTRY:
        raise param_error("name", "unregister_attack", f"one of {list(_REGISTRY)}", name)
    del _REGISTRY[name]


def attack_names() -> tuple[str, ...]:
    """Names currently in the attack registry (built-in and user-registered)."""
    return tuple(_REGISTRY)


def get_attack_factory(name: str) -> AttackFactory:
    """The registered factory of attack ``name``."""
    check_param(name, [Options(str, attack_names())], name="name", owner="get_attack_factory")
    return _REGISTRY[name]


#: The built-in attack names (the registry, :func:`attack_names`, may hold more).
ATTACK_NAMES: tuple[str, ...] = attack_names()


@torch.no_grad()
def correct_matrix(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_evaluations: int,
    rng: RNGLike = None,
    batch_size: int | None = None,
    device: torch.device | None = None,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    seed: int | None = None,
) -> np.ndarray:
    """Boolean array (n_evaluations, N): is stimulus n classified correctly in evaluation e.

    Runs in the model's current mode, inside :func:`torch.random.fork_rng` seeded from ``rng``
    (an int is the seed itself; injected :mod:`neurovar.noise` modules reseeded from it too), with
    ``num_threads`` intra-op threads (``None``: the caller's). The evaluations are successive
    passes on one noise stream, hence independent noise draws, not one draw repeated.
    ``seed=`` is the deprecated name of ``rng=``.
    """
    rng = renamed_kwarg("correct_matrix", "seed", "rng", seed, rng, None)
    device = model_device(model, device)
    n = images.shape[0]
    bs = n if batch_size is None else batch_size
    out = np.zeros((n_evaluations, n), dtype=bool)
    with fixed_threads(num_threads), preserved_state(model, device, seed_from(rng)):
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
    attack_batch_size: int | None | str = "same",
    num_threads: int | None = None,
) -> np.ndarray:
    """:func:`correct_matrix` on ``attack(images, labels)`` (on ``images`` if ``attack`` is None),
    the evaluation noise seeded from ``gen``; the attack runs in batches of
    ``attack_batch_size`` (``"same"``: ``batch_size``), the evaluations with ``num_threads``
    (None: the caller fixed them)."""
    if attack is None:
        x = images
    else:
        abs_ = batch_size if attack_batch_size == "same" else attack_batch_size
        x = _attack_batched(attack, images, labels, abs_)
    return correct_matrix(
        model,
        x,
        labels,
        n_evaluations=n_evaluations,
        rng=int(gen.integers(2**62)),
        batch_size=batch_size,
        device=device,
        num_threads=num_threads,
    )


def robust_accuracy(
    model: nn.Module,
    attack: AttackCallable | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_evaluations: int = 10,
    confidence_level: float = CONFIDENCE_LEVEL,
    method: str = "wilson",
    batch_size: int | None = None,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    tags: Mapping[str, Any] | None = None,
    alpha: float | None = None,
) -> xr.Dataset:
    """Worst-case accuracy of a (stochastic) model under one attack, with a confidence interval.

    A stimulus is robust if it is classified correctly in *every* one of ``n_evaluations``
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
    confidence_level
        Confidence level of the interval, in (0, 1).
    method
        Any method of ``proportion_confint`` (``"wilson"``, ``"beta"``, ``"agresti_coull"``...).
    batch_size
        Examples per attack/forward call; default all at once.
    rng
        Seed for the evaluation noise.
    device
        Device; default the model's.
    num_threads
        Intra-op CPU threads for the attack and the evaluations (restored afterwards); None
        keeps the caller's. See :func:`evaluate_robustness`, "Reproducibility".
    tags
        Labels stored as scalar coordinates (see :func:`evaluate_robustness`).
    alpha
        Deprecated: ``1 - confidence_level``.

    Returns
    -------
    xarray.Dataset
        ``accuracy``, ``ci_low``, ``ci_high`` (scalars), ``correct`` (stimulus; bool) and
        ``correct_fraction`` (stimulus; fraction of evaluations correct on the attacked image);
        coords ``stimulus_id``, ``label`` and the tags.
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
    level = confidence_level_of(owner, confidence_level, alpha)
    check_common(owner, n_evaluations, batch_size, num_threads)
    methods = ("wilson", "beta", "normal", "agresti_coull", "jeffreys")
    check_param(method, [Options(str, methods)], name="method", owner=owner)
    if attack is not None and not callable(attack):
        raise param_error("attack", owner, "a callable attack(images, labels) or None", attack)
    images, labels = check_images_labels(images, labels, owner)
    tag_coords = check_tags(tags, owner)
    dev = model_device(model, device)
    gen = np.random.default_rng(rng)
    kw = dict(n_evaluations=n_evaluations, gen=gen, batch_size=batch_size, device=dev)
    with fixed_threads(num_threads):
        clean = _evaluations(model, None, images, labels, **kw)
        adv_correct = clean if attack is None else _evaluations(model, attack, images, labels, **kw)
    correct = clean.all(axis=0) & adv_correct.all(axis=0)
    n = correct.size
    low, high = wilson(int(correct.sum()), n, level, method)
    return xr.Dataset(
        {
            "accuracy": ((), float(correct.mean()) if n else float("nan")),
            "ci_low": ((), low),
            "ci_high": ((), high),
            "correct": ((STIMULUS,), correct),
            "correct_fraction": ((STIMULUS,), adv_correct.mean(axis=0)),
        },
        coords={
            STIMULUS_ID: (STIMULUS, np.arange(n)),
            "label": (STIMULUS, labels.cpu().numpy()),
            **tag_coords,
        },
        attrs={
            "n_evaluations": n_evaluations,
            "confidence_level": level,
            "ci_method": method,
            "attack": repr(attack),
            "num_threads": -1 if num_threads is None else num_threads,
            "tags": json.dumps(sorted(tag_coords)),
        },
    )


def evaluate_robustness(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float | Sequence[float],
    norm: str = "linf",
    attacks: str | Sequence[str] | Mapping[str, AttackFactory] = "ensemble",
    n_evaluations: int = 10,
    eot_samples: int | str = "auto",
    steps: int = DEFAULT_STEPS,
    n_queries: int = 1000,
    n_target_classes: int = 3,
    confidence_level: float = CONFIDENCE_LEVEL,
    batch_size: int | None = None,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
    num_threads: int | None = DEFAULT_NUM_THREADS,
    tags: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    alpha: float | None = None,
    eval_model: nn.Module | None = None,
) -> xr.Dataset:
    """Robust accuracy over eps under an attack ensemble, per attack and worst case per stimulus.

    The default ensemble (``attacks="ensemble"``, :data:`ENSEMBLE`) follows AutoAttack (Croce &
    Hein 2020): ``"pgd_ce"`` (cross-entropy PGD, Madry et al. 2018), ``"pgd_dlr_targeted"``
    (targeted DLR-margin PGD against the top ``n_target_classes`` wrong classes) and ``"square"``
    (gradient-free Square attack, Andriushchenko et al. 2020). If the model is stochastic
    (outputs differ between two passes on the same input, :func:`is_stochastic`), every attack
    averages over ``eot_samples`` noise draws (EOT, Athalye et al. 2018) and the model is
    evaluated ``n_evaluations`` times. Per attack :math:`a` and stimulus :math:`n`,

    .. math:: c_{a,n} = \\prod_{e} 1[f_{\\xi_e}(x_n) = y_n]\\, 1[f_{\\xi'_e}(x^{a}_n) = y_n],
       \\qquad w_n = \\min_a c_{a,n},

    and the reported numbers are :math:`\\mathrm{acc}_a = \\bar c_{a}` and the worst case
    :math:`\\bar w` (what to quote), with Wilson intervals.

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
        ``"ensemble"``, a sequence of registered names (:func:`attack_names`; built-in:
        :data:`ATTACK_NAMES`; add your own with :func:`register_attack`), or a mapping
        ``name -> factory`` with the :class:`AttackFactory` signature
        ``factory(model, *, eps, norm, eot_samples, rng, device, **budget)``. The old form
        ``factory(eps)`` still works for one release (:class:`FutureWarning`); it gets neither
        EOT nor the seeded rng nor the device.
    n_evaluations
        Repeated evaluations of a stochastic model (a deterministic model is evaluated once).
    eot_samples
        EOT draws per gradient/loss; ``"auto"``: 8 for a stochastic model, 1 otherwise.
    steps, n_queries, n_target_classes
        PGD iterations, Square queries, and target classes of the targeted attack (passed to
        the factories that name them).
    confidence_level
        Confidence level of the Wilson intervals, in (0, 1).
    batch_size
        Examples per attack call; default all.
    rng
        None, int or numpy Generator; seeds every attack and evaluation.
    device
        Device; default the model's.
    num_threads
        Number of intra-op CPU threads that the attacks and evaluations run with
        (``torch.set_num_threads``, the caller's count restored afterwards); default
        :data:`DEFAULT_NUM_THREADS` = 1. ``None`` keeps the caller's count, and the results then
        depend on it (see "Reproducibility").
    tags
        Labels of this evaluation, e.g. ``{"condition": "isotropic", "seed": 0, "regime":
        "test-time", "noise_at_test": True}``: stored as scalar coordinates, so that results
        of several conditions can be joined with ``xr.concat(results, dim="condition")``, and
        copied into every row of :func:`robustness_table`. Keys must be identifiers other than
        the result's own coordinates; values str, bool, int or float.
    progress
        A tqdm bar over (eps, attack): ``None`` (default) shows it once the call has run a few
        seconds, ``True`` at once, ``False`` never -- and ``False`` also silences the bars of
        the attacks and checks it runs (which otherwise appear on their own when they run
        long).
    alpha
        Deprecated: ``1 - confidence_level`` (:class:`FutureWarning`).
    eval_model
        The model on which the clean and the adversarial images are judged; default ``model``
        (the attacked one). With a separate ``eval_model`` the attacks run on ``model`` (e.g. a
        cheaper surrogate, or a transfer source) and ``n_evaluations`` applies when
        ``eval_model`` is stochastic, ``eot_samples="auto"`` when ``model`` is.

    Returns
    -------
    xarray.Dataset
        Dims ``("eps", "attack", "stimulus")``: ``accuracy``, ``accuracy_ci_low``,
        ``accuracy_ci_high`` (eps, attack), ``correct`` and ``correct_fraction`` (eps, attack,
        stimulus), ``worst_case_accuracy``, ``ci_low``, ``ci_high`` (eps; the worst case's
        interval), ``worst_case_correct`` (eps, stimulus), ``clean_accuracy`` and
        ``clean_correct`` (stimulus). Coordinates ``stimulus_id`` and ``label`` along
        ``stimulus``, and the ``tags`` as scalars. ``attrs`` record the settings and whether
        the model was found stochastic.

    Notes
    -----
    **Reproducibility.** With an int ``rng``, a result is bit-identical when re-run on the same
    machine, software and device, whatever the caller's thread settings: the attacks and
    evaluations run with ``num_threads`` intra-op threads (default 1), and they never read or
    change the global RNG state. The thread count matters because it changes the order of float
    reductions in CPU kernels, so the last bits of logits and gradients, and with them attack
    decisions at the margin (reported: re-run on another machine with 2 threads, the worst case
    of one condition of ``notebooks/03_robustness.ipynb`` moved from 0.172 to 0.156; on the
    machine the tests were written on, 1-4 threads happened to give identical bits even
    without fixing the count, which depends on the CPU and the BLAS build).
    Across machines (other CPU instruction sets, other BLAS, GPU vs CPU, other torch versions)
    the same holds only statistically: results differ by a few stimuli, within the stated
    confidence intervals -- that is the guarantee to rely on when comparing runs from
    different machines.

    References
    ----------
    Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", ICML. Athalye, Carlini & Wagner (2018), "Obfuscated
    gradients give a false sense of security", ICML.
    """
    owner = "evaluate_robustness"
    plan = _check_ensemble_args(
        owner, images, labels, eps=eps, norm=norm, attacks=attacks, n_evaluations=n_evaluations,
        steps=steps, n_queries=n_queries, n_target_classes=n_target_classes,
        confidence_level=confidence_level, batch_size=batch_size, rng=rng,
        num_threads=num_threads, tags=tags, progress=progress, alpha=alpha, eval_model=eval_model,
    )  # fmt: skip
    dev = model_device(model, device)
    gen = np.random.default_rng(rng)
    with fixed_threads(num_threads), inner_progress(plan.progress):
        run = _run_ensemble(
            model, model if eval_model is None else eval_model, plan, n_evaluations=n_evaluations,
            eot_samples=eot_samples, batch_size=batch_size, gen=gen, device=dev, owner=owner,
        )  # fmt: skip
    attrs = _ensemble_attrs(plan, run, num_threads=num_threads, separate=eval_model is not None)
    return ensemble_dataset(
        run.correct, run.fraction, run.clean, eps_list=plan.eps_list, names=plan.names,
        labels=plan.labels, tag_coords=plan.tag_coords, level=plan.level, attrs=attrs,
    )  # fmt: skip


def _ensemble_attrs(
    plan: _EnsemblePlan, run: _EnsembleRun, *, num_threads: int | None, separate: bool
) -> dict[str, Any]:
    """The settings of an :func:`evaluate_robustness` result (its ``attrs``), with notes."""
    names, factories, legacy = plan.names, plan.factories, plan.legacy
    notes = []
    if (
        plan.norm == "l2"
        and "square" in names
        and factories.get("square") is _REGISTRY.get("square")
    ):
        notes.append("L2 'square' is torchattacks' Square: no EOT averaging of its loss.")
    if legacy:
        notes.append(f"Attacks {sorted(legacy)} came from old factory(eps) forms: no EOT/rng.")
    attrs = {
        "norm": plan.norm, "n_evaluations": run.n_evaluations, "eot_samples": run.eot_samples,
        "stochastic": int(run.stochastic), **plan.budget, "confidence_level": plan.level,
        "ci_method": "wilson", "attacks": json.dumps(names),
        "num_threads": -1 if num_threads is None else num_threads,
        "tags": json.dumps(sorted(plan.tag_coords)), "notes": " ".join(notes),
    }  # fmt: skip
    if separate:  # the model the images are judged on is not the attacked one
        attrs["eval_model_stochastic"] = int(run.eval_stochastic)
    return attrs


@dataclasses.dataclass(frozen=True)
class _EnsemblePlan:
    """The checked arguments of :func:`evaluate_robustness`."""

    images: torch.Tensor
    labels: torch.Tensor
    eps_list: list[Any]
    names: list[str]
    factories: dict[str, Callable]
    legacy: set[str]
    budget: dict[str, Any]
    norm: str
    level: float
    tag_coords: dict[str, Any]
    progress: bool | None


def _check_ensemble_args(
    owner: str, images: Any, labels: Any, *, eps: Any, norm: Any, attacks: Any,
    n_evaluations: Any, steps: Any, n_queries: Any, n_target_classes: Any,
    confidence_level: Any, batch_size: Any, rng: Any, num_threads: Any, tags: Any,
    progress: Any, alpha: Any, eval_model: Any,
) -> _EnsemblePlan:  # fmt: skip
    """Validation of :func:`evaluate_robustness` (one job: refuse bad input, resolve names)."""
    check_validation_common(owner, rng=rng)
    progress = check_progress(progress, owner=owner)
    if not isinstance(attacks, (str, Sequence, Mapping)):
        raise param_error(
            "attacks", owner, "'ensemble', a list of attack names or a mapping", attacks
        )
    level = confidence_level_of(owner, confidence_level, alpha)
    check_common(owner, n_evaluations, batch_size, num_threads)
    check_param(norm, [Options(str, ("linf", "l2"))], name="norm", owner=owner)
    if eval_model is not None and not isinstance(eval_model, nn.Module):
        raise param_error("eval_model", owner, "a torch.nn.Module or None", eval_model)
    images, labels = check_images_labels(images, labels, owner)
    eps_list = check_eps_list(eps, norm, owner)
    budget = check_budget(owner, steps, n_queries, n_target_classes)
    names, factories, legacy = _resolve_attacks(attacks, owner)
    if not names:
        raise param_error("attacks", owner, "at least one attack", attacks)
    tag_coords = check_tags(tags, owner)
    return _EnsemblePlan(
        images,
        labels,
        eps_list,
        names,
        factories,
        legacy,
        budget,
        norm,
        level,
        tag_coords,
        progress,
    )


@dataclasses.dataclass(frozen=True)
class _EnsembleRun:
    """Per-stimulus outcomes of an ensemble run, and the settings it resolved."""

    correct: np.ndarray  # (eps, attack, stimulus): clean and attacked correct in every evaluation
    fraction: np.ndarray  # (eps, attack, stimulus): fraction of evaluations correct when attacked
    clean: np.ndarray  # (stimulus,)
    stochastic: bool  # the attacked model
    eval_stochastic: bool  # the model the images are judged on
    eot_samples: int
    n_evaluations: int


def _run_ensemble(
    model: nn.Module, eval_model: nn.Module, plan: _EnsemblePlan, *, n_evaluations: int,
    eot_samples: int | str, batch_size: int | None, gen: np.random.Generator,
    device: torch.device, owner: str,
) -> _EnsembleRun:  # fmt: skip
    """Probe stochasticity, evaluate the clean images, run every (eps, attack) of the plan."""
    images, labels = plan.images, plan.labels
    probe = images[: min(16, len(images))]
    stochastic = is_stochastic(model, probe, rng=gen, device=device)
    eval_stochastic = (
        stochastic
        if eval_model is model
        else is_stochastic(eval_model, probe, rng=gen, device=device)
    )
    if eot_samples == "auto":
        eot = 8 if stochastic else 1
    else:
        check_int(eot_samples, name="eot_samples", owner=owner, low=1)
        eot = int(eot_samples)
    n_eval = n_evaluations if eval_stochastic else 1
    kw = dict(n_evaluations=n_eval, gen=gen, batch_size=batch_size, device=device)
    clean_mat = _evaluations(eval_model, None, images, labels, **kw)
    clean = clean_mat.all(axis=0)
    shape = (len(plan.eps_list), len(plan.names), images.shape[0])
    correct, fraction = np.zeros(shape, dtype=bool), np.zeros(shape)
    bar = progress_bar(total=shape[0] * shape[1], desc=owner, progress=plan.progress, unit="attack")
    try:
        for i, j, mat in attack_ensemble(
            model, images, labels, plan.eps_list, plan.names, plan.factories, plan.budget,
            legacy=plan.legacy, eval_model=eval_model, norm=plan.norm, eot_samples=eot,
            clean_shortcut=True, **kw,
        ):  # fmt: skip
            mat = clean_mat if mat is None else mat  # eps 0: the clean evaluations
            correct[i, j] = clean if mat is clean_mat else clean & mat.all(axis=0)
            fraction[i, j] = mat.mean(axis=0)
            bar.update()
    finally:
        bar.close()
    return _EnsembleRun(correct, fraction, clean, stochastic, eval_stochastic, eot, n_eval)


def attack_ensemble(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps_list: Sequence[float],
    names: Sequence[str], factories: Mapping[str, Callable], budget: Mapping[str, Any], *,
    eval_model: nn.Module, norm: str, eot_samples: int, n_evaluations: int,
    gen: np.random.Generator, batch_size: int | None, device: torch.device,
    legacy: set[str] = frozenset(), clean_shortcut: bool = False,
    attack_batch_size: int | None | str = "same", num_threads: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray | None]]:  # fmt: skip
    """The attack-ensemble loop: every attack at every eps on ``model``, judged on ``eval_model``.

    Yields ``(i, j, mat)`` for eps ``i`` and attack ``j``: ``mat`` is the
    ``(n_evaluations, N)`` :func:`correct_matrix` of ``eval_model`` on the adversarial images
    (None at eps 0 when ``clean_shortcut``: no perturbation, the caller's clean evaluations).
    Randomness, in this order for each pair: one seed from ``gen`` for the attack (a
    Generator seeded with it, so every batch gets its own draws), one for the evaluations.
    :func:`evaluate_robustness` and the experiment's adaptive protocol both run this loop.
    """
    for i, e in enumerate(eps_list):
        for j, name in enumerate(names):
            seed = int(gen.integers(2**62))
            if e == 0 and clean_shortcut:
                yield i, j, None
                continue
            if name in legacy:
                attack = factories[name](e)
            else:
                attack = _call_factory(
                    factories[name], model, float(e), budget, norm=norm, eot_samples=eot_samples,
                    rng=np.random.default_rng(seed), device=device,
                )  # fmt: skip
            yield i, j, _evaluations(
                eval_model, attack, images, labels, n_evaluations=n_evaluations, gen=gen,
                batch_size=batch_size, device=device, attack_batch_size=attack_batch_size,
                num_threads=num_threads,
            )  # fmt: skip


#: Columns of :func:`robustness_table` before the tags.
TABLE_COLUMNS = (
    "attack",
    "eps",
    "accuracy",
    "ci_low",
    "ci_high",
    "n",
    "n_correct",
    "norm",
    "stochastic",
    "n_evaluations",
    "eot_samples",
    "confidence_level",
)


def _table_one(res: xr.Dataset, level: float, scalars: dict[str, Any]) -> list[dict[str, Any]]:
    n = int(res.sizes[STIMULUS]) if STIMULUS in res.sizes else int(res.attrs.get("n", 0))
    common = {
        "norm": res.attrs.get("norm", ""),
        "stochastic": bool(int(res.attrs.get("stochastic", 0))),
        "n_evaluations": int(res.attrs.get("n_evaluations", 1)),
        "eot_samples": int(res.attrs.get("eot_samples", 1)),
        "confidence_level": level,
    }

    def row(attack: str, eps: float, acc: float, k: int | None, low=None, high=None) -> dict:
        if k is None:  # no per-stimulus outcomes: the count from the accuracy
            k = int(round(float(acc) * n))
        if low is None or high is None:
            low, high = wilson(k, n, level)
        return {
            "attack": attack, "eps": float(eps), "accuracy": float(acc),
            "ci_low": float(low), "ci_high": float(high), "n": n, "n_correct": int(k),
            **common, **scalars,
        }  # fmt: skip

    rows = []
    if "clean_accuracy" in res:
        k = int(res.clean_correct.sum()) if "clean_correct" in res else None
        rows.append(row("clean", 0.0, float(res.clean_accuracy), k))
    has_correct = "correct" in res
    for e in res.eps.values:
        for a in res.attack.values:
            sel = res.sel(eps=e, attack=a)
            k = int(sel.correct.sum()) if has_correct else None
            low = float(sel.accuracy_ci_low) if "accuracy_ci_low" in res else None
            high = float(sel.accuracy_ci_high) if "accuracy_ci_high" in res else None
            rows.append(row(str(a), e, float(sel.accuracy), k, low, high))
        sel = res.sel(eps=e)
        k = int(sel.worst_case_correct.sum()) if "worst_case_correct" in res else None
        rows.append(
            row("worst_case", e, float(sel.worst_case_accuracy), k, float(sel.ci_low),
                float(sel.ci_high))
        )  # fmt: skip
    return rows


def robustness_table(result: xr.Dataset) -> pd.DataFrame:
    """Tidy table of an :func:`evaluate_robustness` result: one row per (eps, attack).

    Rows: every attack at every eps, the per-stimulus ``worst_case`` over the attacks at every
    eps (the number to quote) and one ``clean`` row (eps 0). Columns :data:`TABLE_COLUMNS` --
    ``attack, eps, accuracy, ci_low, ci_high`` (Wilson interval at the result's confidence
    level), ``n`` (stimuli), ``n_correct``, ``norm``, ``stochastic``, ``n_evaluations``,
    ``eot_samples``, ``confidence_level`` -- then one column per tag (scalar coordinates, see
    ``tags=``). A result joined over further dims (``xr.concat(results, dim="condition")``)
    gives the rows of every element, with those dims as columns. Readable by pandas,
    statsmodels and ``neurovar stats`` (group by ``attack``: rows of different attacks are
    different quantities).

    Returns
    -------
    pandas.DataFrame
    """
    owner = "robustness_table"
    if not isinstance(result, xr.Dataset) or any(
        v not in result for v in ("accuracy", "worst_case_accuracy", "ci_low", "ci_high")
    ):
        raise param_error(
            "result",
            owner,
            "an evaluate_robustness Dataset (accuracy, worst_case_accuracy, ci_low, ci_high)",
            type(result).__name__ if not isinstance(result, xr.Dataset) else list(result),
        )
    level = float(result.attrs.get("confidence_level", 0.95))
    extra = [d for d in result.dims if d not in ("eps", "attack", STIMULUS)]
    rows: list[dict[str, Any]] = []
    for idx in itertools.product(*(range(result.sizes[d]) for d in extra)):
        sub = result.isel(dict(zip(extra, idx, strict=True))) if extra else result
        scalars = {
            str(k): (v.item() if hasattr(v, "item") else v)
            for k, v in ((k, sub.coords[k].values) for k in sub.coords)
            if sub.coords[k].ndim == 0
        }
        rows.extend(_table_one(sub, level, scalars))
    cols = list(TABLE_COLUMNS)
    df = pd.DataFrame(rows)
    return df[cols + [c for c in df.columns if c not in cols]]
