"""One cell of the grid: build (and train) the network, inject the condition's noise, evaluate.

A cell is one (seed, regime, condition, magnitude, layer); what each factor does is an entry of
:mod:`neurovar.experiment.registry`:

1. **Base network** (per seed, shared by every cell of the seed: one shared task,
   :func:`prepare_base`, cached per process and on disk): the config's model trained without
   noise.
2. **Structure** (per seed and layer, shared: one shared task, :func:`prepare_structure`; the
   code is in :mod:`neurovar.experiment.structure`): every source perturbs ``n_fit`` training images
   of the base network and the activation changes :math:`D = h(\tilde x) - h(x)` at the layer
   give its covariance :math:`\\Sigma_s = \\mathrm{cov}(D) + r I` (``fit.ridge`` = r; the paper's
   ``np.cov`` of the differences plus :math:`10^{-4} I`, ``scripts/compute_covariance.py`` lines
   46-49), kept in the exact low-rank-plus-diagonal form :class:`~.registry.Shape` (from the
   SVD of :math:`D`: sampling it is exact in both moments and costs ``O(D r)`` per draw). The
   pooled structure :math:`\bar\\Sigma = \frac1S\\sum_s \\Sigma_s/\\mathrm{tr}\\,\\Sigma_s` and the
   random rotations of the ``rotated`` controls are drawn here, once per seed and layer, so
   every magnitude and regime shares them.
3. **Condition** (:data:`~.registry.CONDITIONS`): its shape, scaled to the total variance of
   the magnitude rule (:data:`~.registry.MAGNITUDE_RULES`), as a noise module at the layer; or,
   for a positive control, an input augmentation while training.
4. **Regime** (:data:`~.registry.REGIMES`): test-time, fine-tuning (fixed or adaptive),
   the paper's freeze-re-initialise-retrain, or from scratch.
5. **Evaluation** per target by its protocol (:data:`~.registry.PROTOCOLS`): ``adaptive`` (the
   ensemble's worst case with EOT on the defended network: its prediction is the mean logits of
   ``prediction_passes`` passes) and ``paper`` (each attack alone, ART's budget, single-pass
   gradients, one evaluation of the mean-logit prediction), with the noise on and, for trained
   regimes, off; masking diagnostics; the alignment of the injected covariance with each
   target's perturbation directions; the effective signal-to-noise the cell ended with; trial
   variance (and, where defined, Fano factor) and noise correlation at the layer.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from neurovar._io import atomic_path
from neurovar.models import MeanLogits, layers_after, train
from neurovar.noise import NoiseModule, inject_noise
from neurovar.noise.fit import collect_layer_activations
from neurovar.perturb._utils import fixed_threads, inner_progress
from neurovar.perturb.diagnostics import gradient_snr
from neurovar.perturb.evaluate import correct_matrix, evaluate_robustness
from neurovar.perturb.spec import evaluate_target
from neurovar.record import record_activations
from neurovar.stats import noise_correlation

from .config import ExperimentConfig
from .grid import CellSpec, SharedTask, stream_seed
from .protocols import evaluate_adaptive_target, evaluate_paper_target
from .registry import REGIMES, Shape, ce_attack, parse_condition
from .setup import build_model, load_data, resolve_config_device
from .store import write_cell
from .structure import (  # noqa: F401 - this module's public and test names since 0.1
    _STRUCTURE,
    N_ALIGNMENT_COMPONENTS,
    _alignment,
    _context,
    _Directions,
    _pooled,
    _rotated,
    _science_key,
    _Structure,
    _structure,
    _target_spec,
    condition_shape,
    fit_source_covariance,
    noise_module,
    source_shape,
)

__all__ = ["CellResult", "compute_cell", "run_cell", "base_network"]
# base_entry, prepare_base, prepare_structure, shared_work, clear_caches: the executor's
# plumbing for the shared work (importable, not public API; tests/experiment/test_shared_work.py)

#: Number of principal directions of a target used for the alignment statistics.

@dataclass
class CellResult:
    """What one cell computed: an :class:`xarray.Dataset` and a JSON-able ``info`` dict."""

    cell_id: str
    dataset: xr.Dataset
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- base network
_BASE: dict[tuple[str, int, str], dict[str, Any]] = {}


def clear_caches() -> None:
    """Forget this process's base networks and structures (the disk cache is kept)."""
    _BASE.clear()
    _STRUCTURE.clear()


def base_entry(cfg: ExperimentConfig, seed: int, device: torch.device, *,
               cache_dir: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """The seed's base network as data: ``{"state": CPU state dict, "test_accuracy",
    "train_seconds"}``, trained once (stream ``"base"``) and cached per process and, when
    ``cache_dir`` is given, on disk (written atomically), so a resumed run does not train it
    again."""
    import hashlib

    key = (_science_key(cfg), int(seed), str(device))
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    path = None if cache_dir is None else Path(cache_dir) / f"base-{digest}.pt"
    if key not in _BASE and path is not None and path.exists():
        try:
            _BASE[key] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed
            path.unlink(missing_ok=True)
    if key not in _BASE:
        model = build_model(cfg, rng=stream_seed(seed, "base") % 2**31)
        t0 = time.perf_counter()
        hist = train(
            model, load_data(cfg), epochs=cfg.training.epochs,
            batch_size=cfg.training.batch_size, lr=cfg.training.lr,
            rng=stream_seed(seed, "base", "train") % 2**62, device=device, progress=progress,
        )
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        _BASE[key] = {"state": state, "test_accuracy": float(hist.test_accuracy[-1]),
                      "train_seconds": time.perf_counter() - t0}
    entry = _BASE[key]
    if path is not None and not path.exists():
        # also when this process had it in memory: the folder's cache is what a resumed run
        # (and workers without the shared task's result) read
        with atomic_path(path, overwrite=True, owner="base_network") as tmp:
            torch.save(entry, tmp)
    return entry


def base_network(
    cfg: ExperimentConfig, seed: int, device: torch.device, *, cache_dir: Path | None = None,
    progress: bool = False, entry: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The seed's base network (trained without noise) and its training summary.

    ``entry``: the seed's :func:`base_entry` computed elsewhere (the result of the shared task
    a cell depends on, see :func:`shared_work`); otherwise it is trained here or read from the
    caches of :func:`base_entry`.
    """
    from neurovar._validation import check_bool, check_device, check_int

    seed = check_int(seed, name="seed", owner="base_network", low=0)
    device = check_device(device, owner="base_network", allow_none=False)
    progress = check_bool(progress, name="progress", owner="base_network")
    if entry is None:
        entry = base_entry(cfg, seed, device, cache_dir=cache_dir, progress=progress)
    model = build_model(cfg, rng=0)
    model.load_state_dict(entry["state"])
    model.to(device).eval()
    return model, {"base_test_accuracy": entry["test_accuracy"],
                   "base_train_seconds": float(entry["train_seconds"])}


# ----------------------------------------------------------------------------- shared work
def prepare_base(spec: CellSpec, cache_dir: str | None = None) -> dict[str, Any]:
    """Shared task: the :func:`base_entry` of ``spec``'s seed (any cell of the seed names it)."""
    cfg = spec.config()
    with fixed_threads(cfg.threads), inner_progress(False):
        device = resolve_config_device(cfg.device)
        return base_entry(cfg, spec.seed, device,
                          cache_dir=None if cache_dir is None else Path(cache_dir))


def prepare_structure(spec: CellSpec, base: dict[str, Any]) -> _Structure:
    """Shared task: the structure of ``spec``'s seed and layer (fit and evaluation images, every
    source's covariance shape, the pooled shape, the rotations of the ``rotated`` controls and
    the targets' directions) on the base network ``base`` (:func:`prepare_base`)."""
    cfg = spec.config()
    with fixed_threads(cfg.threads), inner_progress(False):
        device = resolve_config_device(cfg.device)
        model, _ = base_network(cfg, spec.seed, device, entry=base)
        return _structure(cfg, spec.seed, spec.layer, model, device)


def shared_work(specs: Sequence[CellSpec], cache_dir: str | Path | None = None
                ) -> tuple[list[SharedTask], dict[str, dict[str, str]]]:
    """The work that cells share, as tasks they depend on.

    One :func:`prepare_base` per (science settings, seed) and one :func:`prepare_structure` per
    (science settings, seed, layer) among ``specs``, the latter depending on the former; and,
    per cell id, the keyword arguments of :func:`compute_cell` that name them
    (``{"base": key, "structure": key}``). :func:`neurovar.experiment.executor.run_cells`
    computes each task once, before the cells that need it (in-process in order; on a dask
    cluster as futures the cells' tasks depend on, so no two workers repeat them).
    """
    import hashlib

    tasks: dict[str, SharedTask] = {}
    needs: dict[str, dict[str, str]] = {}
    cache = None if cache_dir is None else str(cache_dir)
    for spec in specs:
        science = hashlib.sha256(_science_key(spec.config()).encode()).hexdigest()[:12]
        kb = f"base-{science}-{spec.seed}"
        ks = f"structure-{science}-{spec.seed}-{spec.layer}"
        if kb not in tasks:
            tasks[kb] = SharedTask(kb, prepare_base, (spec, cache), (), dict(spec.resources))
        if ks not in tasks:
            tasks[ks] = SharedTask(ks, prepare_structure, (spec,), (kb,), dict(spec.resources))
        needs[spec.cell_id] = {"base": kb, "structure": ks}
    return list(tasks.values()), needs


# ----------------------------------------------------------------------------- evaluation
def _defended(model: nn.Module, passes: int, stochastic: bool,
              layer: str | None = None) -> nn.Module:
    """The network as it predicts: the mean logits of ``passes`` noisy passes, branched at the
    noise site (the deterministic prefix runs once)."""
    return MeanLogits(model, passes, branch_at=layer) if stochastic and passes > 1 else model


def _evaluate(model: nn.Module, st: _Structure, cfg: ExperimentConfig, *, seed: int,
              stochastic: bool, device: torch.device, layer: str | None = None
              ) -> dict[str, Any]:
    """Clean accuracy, every target by its protocol, and the masking diagnostics."""
    ev = cfg.evaluation
    defended = _defended(model, ev.prediction_passes, stochastic, layer)
    n_eval = ev.n_evaluations if stochastic else 1
    eot: int | str = ev.eot_samples if stochastic else 1
    gen = np.random.default_rng(stream_seed(seed, "evaluation"))
    clean = correct_matrix(defended, st.x_eval, st.y_eval, n_evaluations=n_eval,
                           rng=int(gen.integers(2**62)), batch_size=ev.batch_size,
                           device=device)
    out: dict[str, Any] = {"clean_correct": clean.mean(axis=0), "targets": {}}
    budget = dict(n_evaluations=n_eval, eot_samples=eot, steps=ev.steps, n_queries=ev.n_queries,
                  n_target_classes=ev.n_target_classes, batch_size=ev.batch_size, device=device)
    attacked = defended if ev.attack_passes in (None, ev.prediction_passes) else _defended(
        model, ev.attack_passes, stochastic, layer)
    for t in cfg.targets:
        trng = int(gen.integers(2**62))
        if t.protocol == "paper":
            out["targets"][t.target_id] = evaluate_paper_target(
                model, defended, st.x_eval, st.y_eval, t, cfg, rng=trng, device=device)
        elif t.family == "attack" and stochastic:
            out["targets"][t.target_id] = evaluate_adaptive_target(
                attacked, defended, st.x_eval, st.y_eval, t, cfg, rng=trng, device=device)
        else:
            out["targets"][t.target_id] = evaluate_target(
                defended, st.x_eval, st.y_eval, _target_spec(cfg, t.target_id), rng=trng,
                **budget)
    out["large_eps_accuracy"], out["large_eps_attacks"] = np.array([]), []
    out["eot_gap"] = float("nan")
    out["gradient_snr"] = float("nan")
    if not ev.diagnostics:
        return out
    # masking diagnostics: a large L-inf eps must bring the gradient (the ensemble's CE attack:
    # pgd_ce, else apgd_ce) and the black-box (Square) attack to chance; the CE attack with and
    # without EOT; gradient SNR
    ce = ce_attack(ev.attacks)
    large = evaluate_robustness(
        defended, st.x_eval, st.y_eval, eps=[ev.large_eps], norm="linf",
        attacks=[a for a in ev.attacks if a in (ce, "square")] or list(ev.attacks),
        rng=int(gen.integers(2**62)), **budget)
    out["large_eps_accuracy"] = large["accuracy"].isel(eps=0).values
    out["large_eps_attacks"] = [str(a) for a in large["attack"].values]
    linf = [t for t in cfg.targets if t.family == "attack" and t.norm == "linf"
            and t.protocol == "adaptive"]
    if stochastic and linf and ce is not None:
        eps = sorted(linf[0].strengths)[len(linf[0].strengths) // 2]
        no_eot = evaluate_robustness(
            defended, st.x_eval, st.y_eval, eps=[eps], norm="linf", attacks=[ce],
            rng=int(gen.integers(2**62)), **{**budget, "eot_samples": 1})
        with_eot = out["targets"][linf[0].target_id]
        if ce in with_eot["attack"].values:
            idx = list(with_eot["attack"].values).index(ce)
            pos = int(np.argmin(np.abs(with_eot["strength"].values - eps)))
            out["eot_gap"] = float(no_eot["accuracy"].values[0, 0]
                                   - with_eot["attack_accuracy"].values[pos, idx])
        snr = gradient_snr(defended, st.x_eval[:16], st.y_eval[:16],
                           eot_samples=(int(ev.eot_samples),), n_repeats=4,
                           rng=int(gen.integers(2**62)), device=device)
        out["gradient_snr"] = float(snr["snr"].values[0])
    return out


def _variability(model: nn.Module, st: _Structure, cfg: ExperimentConfig, layer: str, *,
                 seed: int, device: torch.device) -> dict[str, Any]:
    """Trial-to-trial variability of the (noisy) layer over repeated trials.

    ``trial_variance`` (mean over units of the across-trial variance, always defined) and
    ``noise_correlation``; the Fano factor only where it means something: a non-negative,
    count-like response with a positive mean (else NaN and ``fano_reason`` says why).
    """
    from neurovar.stats import fano_factor

    ev = cfg.evaluation
    n = min(ev.n_record_stimuli, st.x_eval.shape[0])
    tree = record_activations(model, st.x_eval[:n], layers=[layer], n_trials=ev.n_record_trials,
                              rng=stream_seed(seed, "evaluation", "record"), device=device,
                              batch_size=512, progress=False)  # the grid's draws, fixed
    act = tree[layer]["activation"]
    values = act.values
    var = np.nanvar(values, axis=0, ddof=1)  # (stimulus, unit)
    out: dict[str, Any] = {"trial_variance": float(np.nanmean(var))}
    mean = np.nanmean(values, axis=0)
    if np.nanmin(values) < 0:
        out.update(fano_factor=float("nan"), fano_reason="negative responses (additive noise "
                   "or a signed nonlinearity): not count-like")
    elif not np.any(mean > 1e-6):
        out.update(fano_factor=float("nan"), fano_reason="no unit has a positive mean")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ff = fano_factor(act).values
        ff = ff[np.isfinite(ff)]
        out.update(fano_factor=float(np.mean(ff)) if ff.size else float("nan"),
                   fano_reason="" if ff.size else "zero variance in every unit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = noise_correlation(act).values
    off = r[~np.eye(r.shape[0], dtype=bool)]
    off = off[np.isfinite(off)]
    out["noise_correlation"] = float(np.mean(off)) if off.size else float("nan")
    return out


_NO_VARIABILITY = {"trial_variance": float("nan"), "fano_factor": float("nan"),
                   "fano_reason": "no noise injected", "noise_correlation": float("nan")}


# ----------------------------------------------------------------------------- regimes
def _train(model: nn.Module, cfg: ExperimentConfig, epochs: int, lr: float, seed: int,
           device: torch.device, progress: bool, augment: Any = None) -> float:
    hist = train(model, load_data(cfg), epochs=epochs, batch_size=cfg.training.batch_size,
                 lr=lr, rng=seed, device=device, progress=progress, augment=augment)
    return float(hist.test_accuracy[-1])


def _start(regime_start: str, base: nn.Module, cfg: ExperimentConfig, spec: CellSpec,
           rng: int) -> nn.Module:
    """The network a regime starts from (see :class:`~.registry.Regime`)."""
    from neurovar._torch import seeded_torch

    if regime_start == "scratch":
        model = build_model(cfg, rng=stream_seed(spec.seed, "base") % 2**31)
        return model.to(next(base.parameters()).device)
    model = copy.deepcopy(base)
    if regime_start == "retrain":
        before, after = layers_after(model, spec.layer)
        modules = dict(model.named_modules())
        for name in before:
            for p in modules[name].parameters(recurse=False):
                p.requires_grad_(False)
        dev = next(model.parameters()).device
        with seeded_torch(rng, dev):
            for name in after:
                modules[name].reset_parameters()
    return model


def _epochs_lr(cfg: ExperimentConfig, regime: str) -> tuple[int, float]:
    r = REGIMES[regime]
    t = cfg.training
    epochs = getattr(t, r.epochs)
    lr = getattr(t, r.lr)
    if r.epochs == "retrain_epochs" and epochs is None:
        epochs = t.epochs
    if r.lr == "retrain_lr" and lr is None:
        lr = t.lr
    return int(epochs), float(lr)


def compute_cell(spec: CellSpec, *, cache_dir: str | Path | None = None,
                 progress: bool = False, base: dict[str, Any] | None = None,
                 structure: _Structure | None = None) -> CellResult:
    """Compute one cell (no files written except the optional base-network cache).

    ``base`` and ``structure``: the results of the shared tasks of the cell's seed and layer
    (:func:`prepare_base`, :func:`prepare_structure`; :func:`shared_work` lists them), as
    :func:`neurovar.experiment.executor.run_cells` passes them; without them the cell computes
    them itself (once per process, cached).

    ``progress`` shows tqdm bars for the long steps (training, fine-tuning); without it the
    attacks and checks of the cell show none either (no bars from inside worker processes).

    All randomness derives from the spec (:func:`neurovar.experiment.grid.stream_seed`), and
    the torch thread count is fixed to ``config.threads`` inside the cell, so the result is
    the same whichever process runs it.
    """
    from neurovar._validation import check_bool, param_error

    progress = check_bool(progress, name="progress", owner="compute_cell")
    if not isinstance(spec, CellSpec):
        raise param_error("spec", "compute_cell", "a CellSpec (from neurovar.experiment.plan)",
                          spec)
    cfg = spec.config()
    if spec.regime not in REGIMES:
        raise param_error("spec", "compute_cell", f"a cell whose regime is one of "
                          f"{list(REGIMES)}", spec.regime)
    entry, _, _ = parse_condition(spec.condition)
    regime = REGIMES[spec.regime]
    t0 = time.perf_counter()
    with fixed_threads(cfg.threads), inner_progress(None if progress else False):
        device = resolve_config_device(cfg.device)
        base_model, info = base_network(
            cfg, spec.seed, device, progress=progress, entry=base,
            cache_dir=None if cache_dir is None else Path(cache_dir))
        st = structure if structure is not None else _structure(cfg, spec.seed, spec.layer,
                                                                base_model, device)
        cell_seed = stream_seed(spec.seed, "cell", spec.regime, spec.condition, spec.magnitude,
                                spec.layer)
        gen = np.random.default_rng(cell_seed)
        adaptive = regime.training == "adaptive"
        shape = condition_shape(cfg, spec.condition, spec.magnitude, st.ctx)
        model = _start(regime.start, base_model, cfg, spec, int(gen.integers(2**62)))
        handle = None
        if shape is not None:
            # the noise follows the layer (its total variance a fixed multiple of the layer's
            # running variance) in the adaptive regime, and in every training regime with
            # training.follow_layer: the multiple is the one the magnitude rule gives on the
            # base network, so a network cannot outgrow its noise while it trains
            follow = adaptive or (regime.trains and cfg.training.follow_layer)
            relative = _relative_magnitude(shape, st) if follow else None
            noise = noise_module(shape.scaled(shape.n_units) if follow else shape, cfg,
                                 seed=int(gen.integers(2**62)), relative_scale=relative)
            if follow:  # start the running estimate at the starting network's clean variance
                _prime(noise, model, st, spec.layer)
            handle = inject_noise(model, {spec.layer: noise})
        augment = entry.augment(cfg, model) if entry.augment is not None else None
        try:
            train_seed = int(gen.integers(2**62))
            if regime.training == "fixed":
                epochs, lr = _epochs_lr(cfg, spec.regime)
                info["trained_test_accuracy"] = _train(model, cfg, epochs, lr, train_seed,
                                                       device, progress, augment)
            elif adaptive:
                epochs, lr = _epochs_lr(cfg, spec.regime)
                done = 0
                while done < epochs:
                    if handle is not None and done > 0 and spec.condition != "isotropic":
                        _refit(cfg, spec, model, st, handle, gen)
                    k = min(cfg.training.adapt_every, epochs - done)
                    info["trained_test_accuracy"] = _train(
                        model, cfg, k, lr, int(gen.integers(2**62)), device, progress, augment)
                    done += k
            model.eval()
            snr = _signal_to_noise(model, st, spec.layer, handle, device)
            evaluations = {}
            if handle is None:
                evaluations[True] = evaluations[False] = _evaluate(
                    model, st, cfg, seed=spec.seed, stochastic=False, device=device)
            else:
                evaluations[True] = _evaluate(model, st, cfg, seed=spec.seed, stochastic=True,
                                              device=device, layer=spec.layer)
                if regime.trains and cfg.evaluation.noise_off:
                    handle.enabled = False
                    evaluations[False] = _evaluate(model, st, cfg, seed=spec.seed,
                                                   stochastic=False, device=device)
                    handle.enabled = True
            variability = (_variability(model, st, cfg, spec.layer, seed=spec.seed,
                                        device=device)
                           if handle is not None else dict(_NO_VARIABILITY))
        finally:
            if handle is not None:
                handle.remove()
        if not regime.trains:
            # a network that was not trained with noise has no noise-off row of its own: in the
            # test-time regime noise off is the base network, which 'none' is
            evaluations.pop(False, None)
        ds = _to_dataset(spec, cfg, st, evaluations, _alignment(shape, st), variability, shape,
                         snr)
    info.update(seconds=time.perf_counter() - t0, device=str(device), threads=cfg.threads,
                noise_to_signal=snr["noise_to_signal"])
    ds.attrs.update(cell_id=spec.cell_id, label=spec.label, info=json.dumps(info, default=float))
    return CellResult(spec.cell_id, ds, info)


def _relative_magnitude(shape: Shape, st: _Structure) -> float:
    """Total noise variance over the layer's clean total variance on the base network."""
    return float(shape.trace / st.ctx.clean_trace) if st.ctx.clean_trace > 0 else 0.0


def _prime(noise: NoiseModule, model: nn.Module, st: _Structure, layer: str) -> None:
    """One training-mode pass of the layer's clean activations through ``noise``, so its
    running variance estimate starts at the network's clean variance (not at the first noisy
    batch)."""
    h = collect_layer_activations(model, st.x_fit, layer=layer)
    was = noise.training
    noise.train()
    with torch.no_grad():
        noise(h)  # the module is still on the CPU, where the activations are collected
    noise.train(was)


def _signal_to_noise(model: nn.Module, st: _Structure, layer: str, handle: Any,
                     device: torch.device) -> dict[str, float]:
    """The total noise variance and the clean activation variance at the layer *as the network
    ended* (noise off, the fit images): ``noise_to_signal`` = their ratio (the magnitude that
    was really reached; 1/``effective_snr``)."""
    out = {"noise_variance": 0.0, "clean_trace_end": float("nan"), "noise_to_signal": 0.0}
    h = collect_layer_activations(model, st.x_fit, layer=layer)
    out["clean_trace_end"] = float(h.reshape(h.shape[0], -1).to(torch.float64)
                                   .var(0, unbiased=True).sum())
    if handle is None:
        return out
    noise = handle.noise[layer]
    if noise.relative_scale is not None:  # E||s eps||^2 = m x the running activation variance
        out["noise_variance"] = float(noise.relative_scale) * float(
            noise.running_activation_variance)
    else:
        with torch.no_grad():
            unit = noise.unit_scale_total_variance(h[:2].to(device))
        out["noise_variance"] = float(noise.scale) ** 2 * float(unit)
    out["noise_to_signal"] = out["noise_variance"] / out["clean_trace_end"] \
        if out["clean_trace_end"] > 0 else float("inf")
    return out


def _refit(cfg: ExperimentConfig, spec: CellSpec, model: nn.Module, st: _Structure,
           handle: Any, gen: np.random.Generator) -> None:
    """Re-fit the condition's structure from the current network and swap it into the hook,
    keeping the module's running variance estimates (the magnitude follows the layer)."""
    entry, source, _ = parse_condition(spec.condition)
    needed = list(st.ctx.sources) if source is None else [source]
    shapes = dict(st.ctx.sources)
    clean = collect_layer_activations(model, st.x_fit, layer=spec.layer)
    for sid in needed:
        shapes[sid] = source_shape(cfg, sid, model, st.x_fit, st.y_fit, layer=spec.layer,
                                   clean=clean, rng=int(gen.integers(2**62)))
    rotations = {source: int(gen.integers(2**62))} if entry.name == "rotated" else {}
    ctx = _context(st.ctx.n_units, st.ctx.clean_trace, shapes, rotations)
    shape = condition_shape(cfg, spec.condition, spec.magnitude, ctx)
    old = handle.noise[spec.layer]
    relative = _relative_magnitude(condition_shape(cfg, spec.condition, spec.magnitude, st.ctx),
                                   st)
    new = noise_module(shape.scaled(shape.n_units), cfg, seed=int(gen.integers(2**62)),
                       relative_scale=relative)
    new.load_state_dict(
        {k: v for k, v in old.state_dict().items() if k.startswith(("running_", "num_batches"))},
        strict=False,
    )
    new.train(old.training)
    handle.hooks[spec.layer].noise = new
    handle.noise[spec.layer] = new


def _to_dataset(spec: CellSpec, cfg: ExperimentConfig, st: _Structure,
                evaluations: dict[bool, dict[str, Any]], align: dict[str, np.ndarray],
                variability: dict[str, Any], shape: Shape | None,
                snr: dict[str, float]) -> xr.Dataset:
    targets = list(cfg.target_ids)
    n_levels = max(len(t.strengths) for t in cfg.targets)
    attacks = list(cfg.all_attacks)
    # every cell has both noise_at_test values so cells combine along the grid dims only;
    # combinations that do not apply (noise off in the test-time regime) stay NaN
    flags = [True, False]
    n_stim = st.x_eval.shape[0]
    shape3 = (len(flags), len(targets), n_levels)
    acc = np.full(shape3, np.nan)
    correct = np.full((*shape3, n_stim), np.nan)
    single = np.full((*shape3, n_stim), np.nan)
    ce_correct = np.full((*shape3, n_stim), np.nan)
    att = np.full((*shape3, len(attacks)), np.nan)
    strength = np.full((len(targets), n_levels), np.nan)
    for ti, t in enumerate(cfg.targets):
        strength[ti, : len(t.strengths)] = t.strengths
    clean = np.full((len(flags), n_stim), np.nan)
    large = np.full((len(flags), len(attacks)), np.nan)
    eot_gap = np.full(len(flags), np.nan)
    gsnr = np.full(len(flags), np.nan)
    for fi, flag in enumerate(flags):
        if flag not in evaluations:
            continue
        e = evaluations[flag]
        clean[fi] = e["clean_correct"]
        for ti, tid in enumerate(targets):
            r = e["targets"][tid]
            k = r.sizes["strength"]
            acc[fi, ti, :k] = r["accuracy"].values
            correct[fi, ti, :k] = r["correct"].values
            single[fi, ti, :k] = (r["correct_single"] if "correct_single" in r
                                  else r["correct"]).values
            # the target's own CE attack (its ensemble may differ from another target's)
            ce_name = ce_attack(r["attack"].values) if "attack_correct" in r else None
            if ce_name is not None:
                ce_correct[fi, ti, :k] = r["attack_correct"].sel(attack=ce_name).values
            if "attack_accuracy" in r:
                for ai, a in enumerate(attacks):
                    if a in r["attack"].values:
                        att[fi, ti, :k, ai] = r["attack_accuracy"].sel(attack=a).values
        for ai, a in enumerate(attacks):
            if a in e["large_eps_attacks"]:
                large[fi, ai] = e["large_eps_accuracy"][e["large_eps_attacks"].index(a)]
        eot_gap[fi], gsnr[fi] = e["eot_gap"], e["gradient_snr"]
    pr = float("nan") if shape is None else shape.participation_ratio
    data = {
        "accuracy": (("noise_at_test", "target", "strength"), acc),
        "correct": (("noise_at_test", "target", "strength", "stimulus"), correct),
        # per image, one evaluation only (= correct where the protocol evaluates once)
        "correct_single": (("noise_at_test", "target", "strength", "stimulus"), single),
        # per image, the target's CE gradient attack alone (pgd_ce, else apgd_ce, of the
        # target's own ensemble; correct in every evaluation; NaN where it runs none): the
        # per-image side of the masking flag (analysis.masking_diagnostics, which picks the
        # same attack from the target's finite attack_accuracy)
        "ce_attack_correct": (("noise_at_test", "target", "strength", "stimulus"), ce_correct),
        "attack_accuracy": (("noise_at_test", "target", "strength", "attack"), att),
        "clean_accuracy": (("noise_at_test",), np.array(
            [row.mean() if np.isfinite(row).all() else np.nan for row in clean])),
        "clean_correct": (("noise_at_test", "stimulus"), clean),
        "large_eps_accuracy": (("noise_at_test", "attack"), large),
        "eot_gap": (("noise_at_test",), eot_gap),
        "gradient_snr": (("noise_at_test",), gsnr),
        "target_alignment": (("target",), align["target_alignment"]),
        "alignment_index": (("target",), align["alignment_index"]),
        "alignment_vs_chance": (("target",), align["alignment_vs_chance"]),
        "participation_ratio": ((), pr),
        "noise_variance": ((), snr["noise_variance"]),
        "noise_to_signal": ((), snr["noise_to_signal"]),
        "trial_variance": ((), variability["trial_variance"]),
        "fano_factor": ((), variability["fano_factor"]),
        "fano_reason": ((), str(variability["fano_reason"])),
        "noise_correlation": ((), variability["noise_correlation"]),
    }
    coords = {
        "noise_at_test": np.array(flags, dtype=bool),
        "target": targets,
        "strength": np.arange(n_levels),
        "strength_value": (("target", "strength"), strength),
        "target_family": ("target", [t.family for t in cfg.targets]),
        "target_kind": ("target", [t.kind for t in cfg.targets]),
        "target_protocol": ("target", [t.protocol for t in cfg.targets]),
        "attack": attacks,
        "stimulus": np.arange(n_stim),
        "label": ("stimulus", st.y_eval.numpy()),
        **{k: v for k, v in spec.coords.items()},
    }
    return xr.Dataset(data, coords=coords)


def run_cell(spec: CellSpec, out_dir: str | Path, *, progress: bool = False) -> str:
    """Compute ``spec`` and write it under ``out_dir/cells/`` (atomically); its cell id.

    The seed's base network is cached in ``out_dir/cache/`` (shared by every worker that can
    see the folder)."""
    from neurovar._validation import check_bool

    progress = check_bool(progress, name="progress", owner="run_cell")
    out_dir = Path(out_dir)
    write_cell(out_dir, spec, compute_cell(spec, cache_dir=out_dir / "cache", progress=progress))
    return spec.cell_id
