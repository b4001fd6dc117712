"""The experiment's factors, each defined once: regimes, conditions, magnitude rules, protocols.

A grid cell is one (seed, regime, condition, magnitude, layer). What a regime *does* (train or
not, from where, with which noise), what a condition injects (a covariance shape, or an input
augmentation for the positive controls), how a magnitude becomes a total noise variance, and
how a network is evaluated (the ``paper`` protocol of Preble et al. 2026 or the ``adaptive``
one) are entries of the registries below. The config (validation and ``"did you mean"``), the
grid (which cells exist), the cell (what runs), the store and the report (labels, colours,
order) all read them, so a new regime, control or magnitude rule is one
``register_*`` call: see ``docs/architecture.md`` for the recipes.

Conventions: a *covariance shape* is :class:`Shape`, :math:`\\Sigma = F F^T + \\mathrm{diag}(d)`
(``F`` may be empty), the form in which every shape of the grid is exact and cheap to sample
(:class:`neurovar.noise.LowRankNoise`, :class:`~neurovar.noise.DiagonalNoise`); a magnitude
rule turns ``(magnitude, context)`` into the total variance :math:`\\mathrm{tr}\\,\\Sigma` the
shape is scaled to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurovar._validation import did_you_mean
from neurovar.noise.controls import diagonal_control, isotropic_control
from neurovar.noise.factor import FactorCovariance

__all__ = [
    "Shape",
    "Regime",
    "Condition",
    "MagnitudeRule",
    "Protocol",
    "GRID_DIMS",
    "REGIMES",
    "CONDITIONS",
    "MAGNITUDE_RULES",
    "PROTOCOLS",
    "PAPER_ATTACKS",
    "CE_ATTACKS",
    "register_regime",
    "register_condition",
    "register_magnitude_rule",
    "parse_condition",
    "condition_colour",
    "condition_label",
    "suggest",
]


#: The factors of the grid, in order: a cell is one value of each (its coordinates; the
#: dims of the assembled results; the keys of the tidy table).
GRID_DIMS: tuple[str, ...] = ("seed", "regime", "condition", "magnitude", "layer")


# ----------------------------------------------------------------------------- helpers
def _add(registry: dict[str, Any], name: str, entry: Any, owner: str, overwrite: bool) -> None:
    from neurovar._validation import param_error

    if not isinstance(name, str) or not name or ":" in name:
        raise param_error("name", owner, "a non-empty str without ':'", name)
    if name in registry and not overwrite:
        raise param_error("name", owner, "a name not registered yet (pass overwrite=True to "
                          "replace it)", name)
    registry[name] = entry


def suggest(word: str, options: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ``""``
    (:func:`neurovar._validation.did_you_mean`, the package's one definition)."""
    return did_you_mean(word, options)


# ----------------------------------------------------------------------------- shapes
#: A covariance shape of the grid: :class:`neurovar.noise.FactorCovariance`,
#: :math:`\Sigma = F F^T + \mathrm{diag}(d)` (the experiment's name for it).
Shape = FactorCovariance


# ----------------------------------------------------------------------------- regimes
@dataclass(frozen=True)
class Regime:
    """How a cell's network comes to be.

    ``start``: ``"base"`` (a copy of the seed's base network), ``"retrain"`` (the base network's
    layers up to the noise site frozen, the later ones re-initialised; Preble et al. 2026,
    ``scripts/mnist_train.py`` lines 61-66) or ``"scratch"`` (a fresh initialisation).
    ``training``: ``None`` (no training: noise at evaluation only), ``"fixed"`` (train with the
    noise as built) or ``"adaptive"`` (re-fit the covariance every ``adapt_every`` epochs, the
    magnitude following the layer's running variance). ``epochs`` / ``lr`` name the
    :class:`~neurovar.experiment.config.TrainingConfig` fields it uses.
    """

    name: str
    start: str
    training: str | None
    epochs: str | None
    lr: str | None
    description: str

    @property
    def trains(self) -> bool:
        return self.training is not None


REGIMES: dict[str, Regime] = {}


def register_regime(regime: Regime, *, overwrite: bool = False) -> Regime:
    """Add a regime (see :class:`Regime`)."""
    _add(REGIMES, regime.name, regime, "register_regime", overwrite)
    return regime


for _r in (
    Regime("test-time", "base", None, None, None,
           "noise injected at evaluation into the normally trained base network"),
    Regime("train-time", "base", "fixed", "finetune_epochs", "finetune_lr",
           "the base network fine-tuned with the noise (covariance fitted on the base network)"),
    Regime("train-time-adaptive", "base", "adaptive", "finetune_epochs", "finetune_lr",
           "fine-tuned while the covariance is re-fitted from the current network every "
           "adapt_every epochs, the magnitude following the layer's running variance"),
    Regime("retrain", "retrain", "fixed", "retrain_epochs", "retrain_lr",
           "Preble et al. (2026): layers up to the noise site frozen, the later ones "
           "re-initialised and retrained with the noise"),
    Regime("scratch", "scratch", "fixed", "epochs", "lr",
           "trained from a fresh initialisation with the noise"),
):
    register_regime(_r)


# ----------------------------------------------------------------------------- conditions
@dataclass(frozen=True)
class Condition:
    """A condition of the grid: what is injected (or, for a positive control, how the network is
    trained), matched in total variance to the other noise conditions.

    ``name`` is the prefix of the condition string: ``"structured:pgd_ce"`` is condition
    ``structured`` with source ``pgd_ce``; ``"mix:0.5:pgd_ce"`` is ``mix`` with parameter 0.5.
    ``kind``: ``"none"`` (nothing injected), ``"noise"`` (a covariance shape at the layer) or
    ``"augment"`` (a positive control: an input augmentation while training, no noise).
    ``per_source``: the condition takes a source (``True``: the bare name in the config expands
    to one condition per source) or may take one (``"optional"``). ``shape(ctx, source, param)`` returns the unscaled
    :class:`Shape`; ``after_scaling(shape, ctx, param)`` may change the scaled one (the
    paper's mixes). ``colour`` is used by every figure.
    """

    name: str
    kind: str
    description: str
    colour: str
    per_source: bool | str = False
    param: str | None = None
    shape: Callable[..., Shape] | None = None
    after_scaling: Callable[..., Shape] | None = None
    augment: Callable[..., Any] | None = None
    needs_sources: bool = False
    paper_label: str | None = None


CONDITIONS: dict[str, Condition] = {}


def register_condition(condition: Condition, *, overwrite: bool = False) -> Condition:
    """Add a condition (see :class:`Condition`)."""
    _add(CONDITIONS, condition.name, condition, "register_condition", overwrite)
    return condition


def _isotropic(ctx: Any, source: str | None, param: Any) -> Shape:
    # the isotropic control of any covariance, before scaling: I (needs no source)
    return isotropic_control(Shape.identity(ctx.n_units))


def _diagonal(ctx: Any, source: str | None, param: Any) -> Shape:
    return diagonal_control(ctx.pooled if source is None else ctx.sources[source])


def _rotated(ctx: Any, source: str | None, param: Any) -> Shape:
    # drawn once per seed and layer with neurovar.noise.rotate_spectrum (structure._rotated)
    return ctx.rotated[source]


def _full(ctx: Any, source: str | None, param: Any) -> Shape:
    return ctx.sources[source]


def _mix_after(shape: Shape, ctx: Any, param: Any) -> Shape:
    """Preble et al. (2026) ``scripts/models.py`` lines 87-90: the trace-normalised covariance
    mixed with the identity, :math:`\\alpha\\Sigma + (1-\\alpha) I` (total variance therefore
    :math:`\\alpha\\,\\mathrm{tr}\\Sigma + (1-\\alpha) N`, as in their code)."""
    a = float(param)
    f = None if shape.factors is None else shape.factors * np.sqrt(a)
    return Shape(shape.diagonal * a + (1.0 - a), f)


def _gaussian_augment(cfg: Any, model: Any) -> Any:
    from neurovar.models import gaussian_augmentation

    return gaussian_augmentation(cfg.controls.gaussian_sigma)


def _adversarial_augment(cfg: Any, model: Any) -> Any:
    from neurovar.models import adversarial_augmentation

    c = cfg.controls
    return adversarial_augmentation(c.adversarial_eps, steps=c.adversarial_steps).bind(model)


for _c in (
    Condition("none", "none", "no noise (the paper's 'zero': the same training without noise)",
              "#4d4d4d", paper_label="none"),
    Condition("isotropic", "noise", "isotropic noise, Sigma = I (the paper's 'identity')",
              "#1f77b4", shape=_isotropic, paper_label="identity"),
    Condition("diagonal", "noise", "per-unit variances only: of the pooled source structure, "
              "or with a source ('diagonal:<source>') of that source's covariance, its "
              "off-diagonal zeroed (the paper's 'diagonal')", "#2ca02c", per_source="optional",
              shape=_diagonal, needs_sources=True, paper_label="diagonal"),
    Condition("rotated", "noise", "the pooled (or the source's) spectrum with random "
              "eigenvectors, drawn once per seed and layer", "#9467bd", per_source="optional",
              shape=_rotated, needs_sources=True),
    Condition("structured", "noise", "the source's full covariance", "#d62728",
              per_source=True, shape=_full, needs_sources=True, paper_label="full"),
    Condition("mix", "noise", "alpha x the source's scaled covariance + (1 - alpha) x I",
              "#8c564b", per_source=True, param="alpha", shape=_full,
              after_scaling=_mix_after, needs_sources=True),
    Condition("augment-gaussian", "augment", "positive control: Gaussian input augmentation "
              "while training (pixel sigma = controls.gaussian_sigma), no noise", "#17becf",
              augment=_gaussian_augment),
    Condition("augment-adversarial", "augment", "positive control: PGD adversarial training "
              "(controls.adversarial_eps), no noise", "#bcbd22", augment=_adversarial_augment),
):
    register_condition(_c)


def parse_condition(condition: str) -> tuple[Condition, str | None, float | None]:
    """``"mix:0.5:pgd_ce"`` -> (the ``mix`` entry, ``"pgd_ce"``, 0.5); raises ``KeyError``."""
    parts = str(condition).split(":")
    entry = CONDITIONS.get(parts[0])
    if entry is None:
        raise KeyError(condition)
    n_param = int(entry.param is not None)
    allowed = {1 + n_param + 1} if entry.per_source is True else (
        {1 + n_param, 1 + n_param + 1} if entry.per_source == "optional" else {1 + n_param})
    if len(parts) not in allowed:
        raise KeyError(condition)
    param = float(parts[1]) if entry.param is not None else None
    source = parts[1 + n_param] if len(parts) == 2 + n_param else None
    return entry, source, param


def condition_colour(condition: str) -> str:
    """One colour per condition, the same in every figure: the entry's hue, and for a
    per-source condition a shade of it chosen from the source's name (stable across runs), so
    ``structured:pgd_ce`` and ``structured:motion_blur`` differ but keep the hue of "full"."""
    import zlib

    from matplotlib.colors import to_hex, to_rgb

    try:
        entry, source, _ = parse_condition(condition)
    except (KeyError, ValueError):
        return "#7f7f7f"
    if source is None:
        return entry.colour
    rgb = np.array(to_rgb(entry.colour))
    shade = (zlib.crc32(source.encode()) % 5 - 2) * 0.18  # -0.36 .. +0.36
    mixed = rgb * (1 + shade) if shade < 0 else rgb + (1 - rgb) * shade
    return to_hex(np.clip(mixed, 0, 1))


def condition_label(condition: str) -> str:
    """The condition with the paper's name in brackets where it has one (``isotropic``
    [identity], ``structured:pgd_ce`` [full])."""
    try:
        entry = parse_condition(condition)[0]
    except (KeyError, ValueError):
        return str(condition)
    return f"{condition} [{entry.paper_label}]" if entry.paper_label else str(condition)


# ----------------------------------------------------------------------------- magnitudes
@dataclass(frozen=True)
class MagnitudeRule:
    """How a magnitude ``m`` becomes the total noise variance :math:`\\mathrm{tr}\\,\\Sigma`.

    ``total(m, ctx, source)`` gets the cell's structure context (``clean_trace``: the trace of
    the clean activation covariance at the layer on the fit images; ``n_units``; the sources'
    own traces ``source_trace``) and the condition's source (``None`` for source-free
    conditions). In the adaptive regime (and with ``training.follow_layer``) the ratio of this
    total to the clean trace is kept while the layer changes.
    """

    name: str
    description: str
    total: Callable[[float, Any, str | None], float]


MAGNITUDE_RULES: dict[str, MagnitudeRule] = {}


def register_magnitude_rule(rule: MagnitudeRule, *, overwrite: bool = False) -> MagnitudeRule:
    """Add a magnitude rule (see :class:`MagnitudeRule`)."""
    _add(MAGNITUDE_RULES, rule.name, rule, "register_magnitude_rule", overwrite)
    return rule


def _source_total(m: float, ctx: Any, source: str | None) -> float:
    if source is not None:
        return m * ctx.source_trace[source]
    return m * float(np.mean(list(ctx.source_trace.values())))


for _m in (
    MagnitudeRule("clean-trace", "m x the trace of the layer's clean activation covariance "
                  "(signal-to-noise 1/m)", lambda m, ctx, s: m * ctx.clean_trace),
    MagnitudeRule("units", "m x N, N units at the site: the paper's trace normalisation "
                  "(tr = m; scripts/models.py lines 74-83)", lambda m, ctx, s: m * ctx.n_units),
    MagnitudeRule("source", "m x the trace of the source's own activation change (source-free "
                  "conditions: the mean over sources)", _source_total),
):
    register_magnitude_rule(_m)


# ----------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class Protocol:
    """How a target is evaluated on the (possibly stochastic) network.

    ``adaptive``: the attack ensemble's per-image worst case on the defended network (its
    prediction rule included), gradients averaged over noise draws (EOT), repeated evaluation.
    ``paper``: as Preble et al. (2026) evaluate (``scripts/eval_robustness.py``): each attack
    alone with ART's default budget on the single-pass stochastic network (one noise draw per
    gradient, no EOT), the adversarial images then classified once by the prediction rule.
    """

    name: str
    description: str


PROTOCOLS: dict[str, Protocol] = {
    "adaptive": Protocol("adaptive", "worst case over the attack ensemble with EOT through the "
                         "defended prediction, repeated evaluation"),
    "paper": Protocol("paper", "each attack alone, ART default budget, single-pass gradients "
                      "(no EOT), one evaluation of the averaged prediction"),
}

#: The paper protocol's attacks (ART defaults; ``scripts/eval_robustness.py`` lines 294-344).
PAPER_ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "apgd", "square")

#: The adaptive ensemble's cross-entropy gradient attacks, in order of preference: the one the
#: masking flag holds against the ensemble's worst case (CE-PGD, else APGD-CE, the first member
#: of AutoAttack; Croce & Hein 2020).
CE_ATTACKS: tuple[str, ...] = ("pgd_ce", "apgd_ce")


def ce_attack(attacks: Any) -> str | None:
    """The first of :data:`CE_ATTACKS` among ``attacks`` (None: the ensemble has none)."""
    names = [str(a) for a in attacks]
    return next((a for a in CE_ATTACKS if a in names), None)


@dataclass
class StructureContext:
    """What the conditions and magnitude rules read (built per seed and layer by the cell)."""

    n_units: int
    clean_trace: float
    sources: dict[str, Shape]
    source_trace: dict[str, float]
    pooled: Shape | None = None
    rotated: dict[str | None, Shape] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


__all__ += ["StructureContext"]
