"""The attack registry behind :func:`~neurovar.perturb.evaluate_robustness`: the built-in
factories, the call of a factory with the keywords it takes, and the resolution of ``attacks=``.

The public face (:func:`~neurovar.perturb.register_attack`, :func:`~neurovar.perturb.attack_names`,
:class:`~neurovar.perturb.evaluate.AttackFactory`) is in :mod:`neurovar.perturb.evaluate`; this
module holds the one registry dict they edit.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from neurovar._validation import (
    Options,
    check_param,
    param_error,  # one order: (name, owner, ...)
)

from ._defaults import DEFAULT_STEPS
from .adapters import TorchattacksAttack
from .attacks import APGD, FGSM, PGD, Square, TargetedPGD

__all__: list[str] = []

#: Attacks of the default ensemble (AutoAttack-like: CE gradient, targeted margin, black box).
ENSEMBLE: tuple[str, ...] = ("pgd_ce", "pgd_dlr_targeted", "square")


_REQUIRED_FACTORY_KW = ("eps", "norm", "eot_samples", "rng", "device")
_BUDGET_KW = ("steps", "n_queries", "n_target_classes")
_REGISTRY: dict[str, Callable[..., Any]] = {}


def _is_legacy_factory(factory: Callable) -> bool:
    """True for the old ``factory(eps)`` form: no ``model`` parameter, one positional one."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    if "model" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return False
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) == 1


def _call_factory(
    factory: Callable, model: nn.Module, eps: float, budget: Mapping[str, Any], **common: Any
) -> Callable[..., Any]:
    """Call a factory with the common keywords and the budget keywords it accepts."""
    try:
        params = inspect.signature(factory).parameters
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        params, var_kw = {}, True
    extra = {k: v for k, v in budget.items() if var_kw or k in params}
    return factory(model, eps=eps, **common, **extra)


def _fgsm(model, *, eps, norm, eot_samples, rng, device, **_):
    return FGSM(model, eps=eps, norm=norm, eot_samples=eot_samples, rng=rng, device=device)


def _pgd(loss: str) -> Callable[..., Any]:
    def factory(model, *, eps, norm, eot_samples, rng, device, steps=DEFAULT_STEPS, **_):
        return PGD(
            model, eps=eps, norm=norm, steps=steps, loss=loss, eot_samples=eot_samples,
            rng=rng, device=device,
        )  # fmt: skip

    factory.__doc__ = f"Untargeted PGD on the {loss!r} loss."
    return factory


def _targeted(loss: str) -> Callable[..., Any]:
    def factory(
        model, *, eps, norm, eot_samples, rng, device, steps=DEFAULT_STEPS, n_target_classes=3, **_
    ):
        return TargetedPGD(
            model, eps=eps, norm=norm, steps=steps, loss=loss, n_target_classes=n_target_classes,
            eot_samples=eot_samples, rng=rng, device=device,
        )  # fmt: skip

    factory.__doc__ = f"Targeted PGD on the {loss!r} loss."
    return factory


def _square(model, *, eps, norm, eot_samples, rng, device, n_queries=1000, **_):
    if norm == "linf":
        return Square(
            model, eps=eps, norm=norm, n_queries=n_queries, eot_samples=eot_samples, rng=rng,
            device=device,
        )  # fmt: skip
    # torchattacks' L2 Square; no EOT there (see attrs "notes" of the result)
    return TorchattacksAttack(
        "Square", model, norm="L2", eps=eps, n_queries=n_queries, rng=rng, device=device
    )


def _apgd(loss: str) -> Callable[..., Any]:
    def factory(model, *, eps, norm, eot_samples, rng, device, steps=DEFAULT_STEPS, **_):
        # the original's first step (2 eps, Croce & Hein 2020) and one restart: the adaptive
        # ensemble's APGD; the paper protocol builds APGD with ART's defaults directly
        return APGD(model, eps=eps, norm=norm, eps_step=2 * eps if eps > 0 else 0.1,
                    steps=steps, restarts=1, loss=loss, eot_samples=eot_samples, rng=rng,
                    device=device)

    factory.__doc__ = f"Auto-PGD on the {loss!r} loss (one restart, first step 2 eps)."
    return factory


for _name, _factory in (
    ("fgsm", _fgsm),
    ("pgd_ce", _pgd("ce")),
    ("pgd_dlr", _pgd("dlr")),
    ("pgd_dlr_targeted", _targeted("dlr")),
    ("pgd_margin_targeted", _targeted("margin")),
    ("square", _square),
    ("apgd_ce", _apgd("ce")),
    ("apgd_dlr", _apgd("dlr")),
):
    _REGISTRY[_name] = _factory


def _resolve_attacks(attacks: Any, owner: str) -> tuple[list[str], dict[str, Callable], set[str]]:
    """Names, factories and the names given in the old ``factory(eps)`` form."""
    if isinstance(attacks, str):
        if attacks != "ensemble":
            raise param_error(
                "attacks", owner, "'ensemble', a list of attack names or a mapping", attacks
            )
        names = list(ENSEMBLE)
        return names, {k: _REGISTRY[k] for k in names}, set()
    if isinstance(attacks, Mapping):
        names = list(attacks)
        factories = dict(attacks)
        legacy = set()
        for k, f in factories.items():
            if not isinstance(k, str) or not callable(f):
                raise param_error("attacks", owner, "a mapping of names to callables", {k: f})
            if _is_legacy_factory(f):
                legacy.add(k)
        if legacy:
            warnings.warn(
                f"{owner}: attack factories of the form factory(eps) ({sorted(legacy)}) are "
                "deprecated and will stop working in the next release; write "
                "factory(model, *, eps, norm, eot_samples, rng, device, **budget) so that the "
                "attack gets EOT, the seeded rng and the device (see register_attack).",
                FutureWarning,
                stacklevel=4,  # evaluate_robustness -> _check_ensemble_args -> here
            )
        return names, factories, legacy
    if not isinstance(attacks, Sequence):
        raise param_error(
            "attacks", owner, "'ensemble', a list of attack names or a mapping", attacks
        )
    names = list(attacks)
    for k in names:
        check_param(k, [Options(str, tuple(_REGISTRY))], name="attacks", owner=owner)
    if len(set(names)) != len(names):
        raise param_error("attacks", owner, "a sequence of distinct names", attacks)
    return names, {k: _REGISTRY[k] for k in names}, set()
