"""The rules of an experiment config beyond its types, stated as data where they can be.

Names that must be registered (``_NAME_RULES``), lists that must be non-empty or distinct,
each family's strength rule (:func:`neurovar.perturb.spec.strength_violation`), the
conditions, and the combinations that need several settings (model input against the data,
counts against the splits, target classes against classes, layers against the model). Every
function returns problem lines ("key '...': ... is expected; got ..."), so
:func:`neurovar.experiment.config.parse_config` reports every problem of a config at once.
"""

from __future__ import annotations

import re
from numbers import Real
from pathlib import Path
from typing import Any

from neurovar._validation import Interval, Options, Satisfies, did_you_mean, make_constraint

from .registry import (
    CONDITIONS,
    MAGNITUDE_RULES,
    PAPER_ATTACKS,
    PROTOCOLS,
)
from .registry import REGIMES as _REGIMES

ExperimentConfig = Any  # the type of ``cfg`` below (config.py imports this module)


# ----------------------------------------------------------------------------- rules as data
# Every rule below is a row: the key it names, how to get the value(s) from a config, and the
# constraint (:mod:`neurovar._validation`) they must satisfy. One loop turns failing rows into
# problem lines, so a new rule is a new row, not a new branch.


def _attack_names() -> tuple[str, ...]:
    from neurovar.perturb.evaluate import attack_names

    return tuple(attack_names())  # built-in and user-registered attacks


def _family_names() -> dict[str, tuple[str, ...]]:
    from neurovar.perturb.corruptions import CORRUPTIONS, MODIFICATIONS
    from neurovar.perturb.imagenet_c import PAPER_CORRUPTIONS

    return {"attack": _attack_names(), "corruption": tuple(sorted(CORRUPTIONS)),
            "modification": tuple(sorted(MODIFICATIONS)),
            "paper_corruption": tuple(PAPER_CORRUPTIONS)}


def _each(key: str, values: Any) -> list[tuple[str, Any]]:
    return [(f"{key}[{i}]", v) for i, v in enumerate(values or ())]


#: (noun, entries(cfg) -> [(key, name)], options() -> names): names that must be registered.
_NAME_RULES: tuple[tuple[str, Any, Any], ...] = (
    ("regime", lambda c: _each("regimes", c.regimes), lambda: tuple(_REGIMES)),
    ("rule", lambda c: [("magnitude_rule", c.magnitude_rule)], lambda: tuple(MAGNITUDE_RULES)),
    ("attack", lambda c: _each("evaluation.attacks", c.evaluation.attacks), _attack_names),
    ("attack", lambda c: [e for i, t in enumerate(c.targets) if t.family == "attack"
                          and t.protocol != "paper" for e in _each(f"targets[{i}].attacks",
                                                                   t.attacks)], _attack_names),
    ("protocol", lambda c: [(f"targets[{i}].protocol", t.protocol)
                            for i, t in enumerate(c.targets)], lambda: tuple(PROTOCOLS)),
)

#: (key, values(cfg)): lists that must not be empty.
_NONEMPTY_RULES: tuple[tuple[str, Any], ...] = (
    ("regimes", lambda c: c.regimes), ("conditions", lambda c: c.conditions),
    ("targets", lambda c: c.targets), ("evaluation.attacks", lambda c: c.evaluation.attacks),
    ("layers", lambda c: c.layers),
)

#: (key, values(cfg)): lists whose entries must be distinct.
_DISTINCT_RULES: tuple[tuple[str, Any], ...] = (
    ("regimes", lambda c: c.regimes), ("seeds", lambda c: c.seeds),
    ("magnitudes", lambda c: c.magnitudes), ("conditions", lambda c: c.conditions),
    ("layers", lambda c: c.layers), ("sources", lambda c: c.source_ids),
    ("targets", lambda c: c.target_ids),
)

_MAGNITUDE = Interval(Real, 0.0, 100.0, closed="right")
_DEVICE = Satisfies(lambda d: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", d) is not None,
                    "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")


def _name_problems(cfg: ExperimentConfig) -> list[str]:
    problems = []
    for noun, entries, options in _NAME_RULES:
        valid = options()
        rule = Options(str, valid)
        for key, value in entries(cfg):
            if not rule.is_satisfied_by(value):
                problems.append(f"key '{key}': unknown {noun} {value!r}"
                                f"{did_you_mean(value, valid)}; valid: {', '.join(valid)}")
    return problems


def _list_problems(cfg: ExperimentConfig) -> list[str]:
    problems = [f"key '{key}': at least one entry is needed" for key, get in _NONEMPTY_RULES
                if not get(cfg)]
    keyed = list(_DISTINCT_RULES) + [(f"sources[{i}].magnitudes", lambda c, s=s: s.magnitudes)
                                     for i, s in enumerate(cfg.sources)]
    keyed += [(f"targets[{i}].strengths", lambda c, t=t: t.strengths)
              for i, t in enumerate(cfg.targets)]
    for key, get in keyed:
        values = list(get(cfg) or ())
        dup = sorted({str(v) for v in values if values.count(v) > 1})
        if dup:
            problems.append(f"key '{key}': entries must be distinct; repeated: {', '.join(dup)}"
                            + (" (set 'id' to tell them apart)" if key in ("sources", "targets")
                               else ""))
    for key, value in _each("seeds", cfg.seeds):
        if value < 0:
            problems.append(f"key '{key}': a non-negative int seed is expected; got {value!r}")
    for key, value in [e for i, s in enumerate(cfg.sources)
                       for e in _each(f"sources[{i}].magnitudes", s.magnitudes)]:
        if not _MAGNITUDE.is_satisfied_by(value):
            problems.append(f"key '{key}': {_MAGNITUDE} is expected; got {value!r}")
    if not _DEVICE.is_satisfied_by(cfg.device):
        problems.append(f"key 'device': {_DEVICE} is expected; got {cfg.device!r}")
    return problems


def _strength_rule(family: str, name: str, norm: str) -> Any:
    """The constraint of a source's strength or a target's strengths: the library's one
    strength rule (:func:`neurovar.perturb.spec.strength_violation`) without the clean point,
    which an experiment measures apart from its targets."""
    from neurovar.perturb.spec import strength_violation

    def ok(s: Any) -> bool:
        return strength_violation(family, name, norm, s, clean_ok=False) is None

    # -1 breaks every family's rule, so its message is the rule's expected text
    return Satisfies(ok, strength_violation(family, name, norm, -1.0, clean_ok=False)
                     or "a valid strength")


def _perturbation_problems(cfg: ExperimentConfig) -> list[str]:
    """Sources and targets: registered names, strengths in their family's range, ensembles."""
    names = _family_names()
    problems = []
    entries = [(f"sources[{i}]", s, [(f"sources[{i}].strength", s.strength)])
               for i, s in enumerate(cfg.sources)]
    entries += [(f"targets[{i}]", t, _each(f"targets[{i}].strengths", t.strengths))
                for i, t in enumerate(cfg.targets)]
    for key, p, strengths in entries:
        is_target = key.startswith("targets")
        if p.family == "attack" and is_target:
            if p.name != "ensemble":
                problems.append(f"key '{key}.name': an attack target is the ensemble "
                                f"(evaluation.attacks); use name = 'ensemble', got {p.name!r}")
        elif p.name not in names[p.family]:
            problems.append(f"key '{key}.name': unknown {p.family} {p.name!r}"
                            f"{did_you_mean(p.name, names[p.family])}; valid: "
                            f"{', '.join(names[p.family])}")
            continue
        rule = _strength_rule(p.family, p.name, p.norm)
        for skey, value in strengths:
            if not make_constraint(rule).is_satisfied_by(value):
                extra = f" for norm {p.norm!r}" if p.family == "attack" else ""
                problems.append(f"key '{skey}': {rule}{extra} is expected; got {value!r}")
        if p.family == "attack" and p.norm != "linf" and (
                p.name == "square" or (is_target and p.protocol == "paper")):
            problems.append(f"key '{key}.norm': {'the paper protocol' if is_target else 'square'}"
                            " is L-inf only")
    for i, t in enumerate(cfg.targets):
        if t.family != "attack":
            if t.attacks is not None:
                problems.append(f"key 'targets[{i}].attacks': only attack targets have an "
                                "ensemble")
            continue
        if t.protocol == "paper":
            for key, a in _each(f"targets[{i}].attacks", t.attacks):
                if a not in PAPER_ATTACKS:
                    problems.append(f"key '{key}': the paper protocol runs "
                                    f"{', '.join(PAPER_ATTACKS)}; got {a!r}"
                                    f"{did_you_mean(a, PAPER_ATTACKS)}")
            if not t.attacks:
                problems.append(f"key 'targets[{i}].attacks': a paper-protocol attack target "
                                f"names its attacks (from {', '.join(PAPER_ATTACKS)})")
            continue
        ensemble = cfg.evaluation.attacks if t.attacks is None else t.attacks
        key = "evaluation.attacks" if t.attacks is None else f"targets[{i}].attacks"
        if t.attacks is not None and not t.attacks:
            problems.append(f"key '{key}': at least one attack is needed")
        if t.norm == "l2" and "square" in ensemble:
            problems.append(f"key '{key}': 'square' supports only norm 'linf' with EOT; give "
                            f"targets[{i}] (norm 'l2') its own 'attacks' without 'square'")
    return problems


def _condition_problems(cfg: ExperimentConfig) -> list[str]:
    """Conditions: registered names (with their parameter and source), and what they need."""
    problems = []
    for key, c in _each("conditions", cfg.conditions):
        parts = c.split(":")
        entry = CONDITIONS.get(parts[0])
        if entry is None:
            problems.append(f"key '{key}': unknown condition {c!r}"
                            f"{did_you_mean(parts[0], CONDITIONS)}; valid: "
                            f"{', '.join(CONDITIONS)} (per source: structured:<source>, "
                            "diagonal:<source>, mix:<alpha>:<source>; ':*' for every source)")
            continue
        if entry.param is not None:
            try:
                alpha = float(parts[1]) if len(parts) > 1 else float("nan")
            except ValueError:
                alpha = float("nan")
            if not Interval(Real, 0.0, 1.0).is_satisfied_by(alpha):
                problems.append(f"key '{key}': {entry.name} needs its {entry.param} in "
                                f"[0, 1] as '{entry.name}:<{entry.param}>[:<source>]'; got {c!r}")
                continue
        if entry.name == "mix" and cfg.magnitude_rule != "units":
            problems.append(f"key '{key}': {c!r} mixes with the identity as the paper "
                            "does (1 per unit), which is matched in variance only under "
                            "magnitude_rule = 'units'")
        n_fixed = 1 + (entry.param is not None)
        if len(parts) > n_fixed:
            src = parts[n_fixed]
            if not entry.per_source or len(parts) > n_fixed + 1:
                problems.append(f"key '{key}': {c!r} is malformed; {entry.name} "
                                f"{'takes a source' if entry.per_source else 'takes no source'}")
            elif src != "*" and src not in cfg.source_ids:
                problems.append(f"key '{key}': unknown source {src!r} in {c!r}"
                                f"{did_you_mean(src, cfg.source_ids)}; sources: "
                                f"{', '.join(cfg.source_ids) or '(none)'}")
        if entry.needs_sources and not cfg.sources:
            problems.append(f"key 'sources': condition {c!r} needs at least one source")
        if entry.kind == "augment" and not any(_REGIMES[r].trains for r in cfg.regimes
                                               if r in _REGIMES):
            problems.append(f"key '{key}': the positive control {c!r} trains a network; "
                            "add a training regime (retrain, scratch, train-time)")
    return problems


def _semantic_problems(cfg: ExperimentConfig) -> list[str]:
    """Every problem of a typed config, in one pass: registered names, list rules, sources and
    targets, conditions, settings that do not fit together, data folder and layers."""
    problems = (_name_problems(cfg) + _list_problems(cfg) + _perturbation_problems(cfg)
                + _condition_problems(cfg) + _combination_problems(cfg))
    if cfg.data.name in ("mnist", "fashion_mnist", "cifar10") and not cfg.data.root:
        problems.append(f"key 'data.root': data set {cfg.data.name!r} is read from a local "
                        "folder (nothing is downloaded); set root")
    elif cfg.data.root and not Path(cfg.data.root).expanduser().is_dir():
        problems.append(f"key 'data.root': {cfg.data.root!r} is not a folder")
    problems.extend(_layer_problems(cfg))
    return problems


def _combination_problems(cfg: ExperimentConfig) -> list[str]:
    """Settings that are each valid but do not fit together, found before any work: the
    model's input against the data's images, image counts against the data's splits (and
    ``limit``), stimuli recorded against images evaluated, target classes against classes.
    Counts left at their defaults are capped to the data (``n_fit`` 256 on 100 images uses
    100); a count the config sets beyond the data is an error."""
    from .setup import DATA_SHAPES, DATA_SIZES, MODEL_INPUTS, N_CLASSES

    problems = []
    want = MODEL_INPUTS.get(cfg.model.name)
    have = DATA_SHAPES.get(cfg.data.name)
    if want is not None and have is not None and want != have:
        problems.append(f"key 'model.name': {cfg.model.name!r} takes {want[0]}x{want[1]}x{want[1]} "
                        f"images; data {cfg.data.name!r} has {have[0]}x{have[1]}x{have[1]}")
    n_train, n_test = DATA_SIZES[cfg.data.name]
    limit = cfg.data.limit if cfg.data.name in ("mnist", "fashion_mnist", "cifar10") else None
    if limit is not None:  # the embedded data sets are not limited
        n_train, n_test = min(n_train, limit), min(n_test, limit)
    where = f"data {cfg.data.name!r}" + (f" (limit {limit})" if limit else "")
    # a count the config sets beyond the data is refused; a default one is capped to the data
    data_set = cfg.data.model_fields_set
    for key, value, limit in (("data.n_fit", cfg.data.n_fit, n_train),
                              ("data.n_train", cfg.data.n_train, n_train),
                              ("data.n_eval", cfg.data.n_eval, n_test)):
        if value is not None and value > limit and key[5:] in data_set:
            problems.append(f"key '{key}': {value} images asked for; {where} has {limit} "
                            "in that split")
    n_eval = min(cfg.data.n_eval, n_test)
    if (cfg.evaluation.n_record_stimuli > n_eval
            and "n_record_stimuli" in cfg.evaluation.model_fields_set):
        problems.append(f"key 'evaluation.n_record_stimuli': {cfg.evaluation.n_record_stimuli} "
                        f"stimuli asked for; they are taken from the {n_eval} evaluated images "
                        "(data.n_eval)")
    n_classes = N_CLASSES[cfg.data.name]
    if cfg.evaluation.n_target_classes > n_classes - 1:
        problems.append(f"key 'evaluation.n_target_classes': at most {n_classes - 1} wrong "
                        f"classes exist for {n_classes} classes; got "
                        f"{cfg.evaluation.n_target_classes}")
    return problems


def local_device_problems(cfg: ExperimentConfig) -> list[str]:
    """Problems of running ``cfg`` *on this machine* (a config for GPU workers is valid on a
    login node without one; :func:`neurovar.experiment.run` checks this before running
    in-process)."""
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return [f"key 'device': {cfg.device!r} is asked for but this machine has no CUDA "
                    "device (use 'auto' or 'cpu', or run on GPU workers with --scheduler)"]
    return []


def _layer_problems(cfg: ExperimentConfig) -> list[str]:
    from .setup import build_model

    try:
        model = build_model(cfg, rng=0)
    except Exception as err:  # noqa: BLE001 - reported as a config problem
        return [f"key 'model': cannot build the model: {err}"]
    from neurovar.record import layer_names

    valid = layer_names(model)
    problems = []
    for i, layer in enumerate(cfg.layers):
        if layer not in valid:
            shown = ", ".join(valid[:40]) + (" ..." if len(valid) > 40 else "")
            problems.append(f"key 'layers[{i}]': the model has no layer {layer!r}; valid: {shown}")
    return problems
