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

#: Regimes: noise only at evaluation, noise while fine-tuning (fixed covariance), or
#: re-fitted every ``adapt_every`` epochs with a magnitude that follows the layer.
REGIMES: tuple[str, ...] = ("test-time", "train-time", "train-time-adaptive")
#: Control conditions at matched total variance ("none" injects nothing).
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

    name: Literal["digits", "mnist", "cifar10"] = "digits"
    root: str | None = None
    limit: int | None = Field(default=None, ge=1, description="train images kept (mnist/cifar10)")
    n_fit: int = Field(default=256, ge=8, description="train images used to fit covariances")
    n_eval: int = Field(default=100, ge=2, description="test images evaluated per cell")
    verify: bool = Field(default=True, description="cifar10: check md5 of the official files")


class ModelConfig(_Strict):
    """Network: ``small_cnn`` (:class:`neurovar.models.SmallCNN`) or ``resnet18_cifar``."""

    name: Literal["small_cnn", "resnet18_cifar"] = "small_cnn"
    channels: tuple[int, int] = (16, 32)
    hidden: int = Field(default=64, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class TrainingConfig(_Strict):
    """Training of the base network and fine-tuning of the train-time regimes (Adam)."""

    epochs: int = Field(default=15, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0.0, le=10.0)
    finetune_epochs: int = Field(default=5, ge=1, le=10_000)
    finetune_lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    adapt_every: int = Field(default=1, ge=1, description="re-fit period (epochs), adaptive")


class FitConfig(_Strict):
    """How a source's covariance is fitted (:func:`neurovar.noise.fit_perturbation_covariance`)."""

    method: Literal["difference", "perturbed", "within_image"] = "difference"
    estimator: Literal["sample", "ledoit_wolf", "oas"] = "sample"
    share: Literal["flat", "channel"] = "flat"
    rank: int | None = Field(default=None, ge=1)
    n_versions: int = Field(default=4, ge=2, description="versions per image (within_image)")


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


class SourceConfig(_Strict):
    """A source of structure: a perturbation whose activation changes give a covariance."""

    id: str | None = None
    family: Literal["attack", "corruption", "modification"]
    name: str
    strength: float
    norm: Literal["linf", "l2"] = "linf"
    method: Literal["difference", "perturbed", "within_image"] | None = None

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
    family: Literal["attack", "corruption", "modification"]
    name: str = "ensemble"
    norm: Literal["linf", "l2"] = "linf"
    strengths: tuple[float, ...]
    attacks: tuple[str, ...] | None = Field(
        default=None, description="ensemble of this attack target (default evaluation.attacks)")

    @property
    def target_id(self) -> str:
        if self.id:
            return self.id
        return f"adversarial_{self.norm}" if self.family == "attack" else self.name

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
    device: str = "auto"
    threads: int = Field(default=1, ge=1, le=1024, description="torch threads inside a cell")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    fit: FitConfig = FitConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
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
        """Conditions with ``"structured"`` expanded to one per source, in config order."""
        out: list[str] = []
        for c in self.conditions:
            if c == "structured":
                out.extend(f"structured:{s}" for s in self.source_ids)
            else:
                out.append(c)
        return tuple(dict.fromkeys(out))

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
    from neurovar.perturb.evaluate import ATTACK_NAMES

    problems: list[str] = []
    names = {"attack": ATTACK_NAMES, "corruption": tuple(sorted(CORRUPTIONS)),
             "modification": tuple(sorted(MODIFICATIONS))}

    def check_strength(key: str, family: str, name: str, norm: str, s: float) -> None:
        if family == "attack":
            high = 1.0 if norm == "linf" else float("inf")
            if not 0.0 < s <= high:
                problems.append(f"key '{key}': an eps in (0, {high:g}] for norm {norm!r} is "
                                f"expected; got {s!r}")
        elif family == "corruption":
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
        if r not in REGIMES:
            problems.append(f"key 'regimes[{i}]': unknown regime {r!r}; valid: {', '.join(REGIMES)}")
    if not cfg.regimes:
        problems.append("key 'regimes': at least one regime is needed")
    valid_conditions = (*CONTROLS, "structured", *(f"structured:{s}" for s in cfg.source_ids))
    for i, c in enumerate(cfg.conditions):
        if c not in valid_conditions:
            problems.append(f"key 'conditions[{i}]': unknown condition {c!r}; valid: "
                            f"{', '.join(valid_conditions)}")
    needs_sources = any(c.startswith("structured") or c in ("diagonal", "rotated")
                        for c in cfg.conditions)
    if needs_sources and not cfg.sources:
        problems.append("key 'sources': structured, diagonal and rotated conditions need at "
                        "least one source")
    if len(set(cfg.seeds)) != len(cfg.seeds) or any(s < 0 for s in cfg.seeds):
        problems.append("key 'seeds': distinct non-negative integers are expected")
    if cfg.data.name in ("mnist", "cifar10") and not cfg.data.root:
        problems.append(f"key 'data.root': data set {cfg.data.name!r} is read from a local "
                        "folder (nothing is downloaded); set root")
    elif cfg.data.root and not Path(cfg.data.root).expanduser().is_dir():
        problems.append(f"key 'data.root': {cfg.data.root!r} is not a folder")
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith(("cuda", "mps")):
        problems.append(f"key 'device': 'auto', 'cpu', 'cuda' or 'cuda:N' is expected; got "
                        f"{cfg.device!r}")
    problems.extend(_layer_problems(cfg))
    return problems


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
    if not path.exists() and str(config) in shipped:
        path = shipped[str(config)]
    if not path.is_file():
        raise ConfigError([f"no config file {str(config)!r} (shipped configs: "
                           f"{', '.join(shipped)})"])
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError([f"malformed TOML: {err}"], str(path)) from None
    return parse_config(data, source=str(path))
