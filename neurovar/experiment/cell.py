"""One cell of the grid: build (and train) the network, inject the condition's noise, evaluate.

A cell is one (seed, regime, condition, magnitude, layer):

1. **Base network** (per seed, shared by every cell of the seed and cached per process and
   on disk): the config's model trained without noise.
2. **Covariances** (per seed and layer, shared): every source perturbs ``n_fit`` training
   images of the base network and :func:`neurovar.noise.fit_perturbation_covariance` fits a
   covariance at the layer (``method`` of the source or ``fit.method``). Controls come from
   the *pooled* source structure :math:`\\bar\\Sigma = \\frac1S\\sum_s \\Sigma_s /
   \\mathrm{tr}\\,\\Sigma_s`: ``diagonal`` = :math:`\\mathrm{diag}(\\bar\\Sigma)`, ``rotated`` =
   its spectrum with random eigenvectors; ``isotropic`` = :math:`I`. Every noise is scaled to
   the same total variance :math:`m\\,\\mathrm{tr}\\,\\Sigma_{clean}` (the clean activation
   covariance of the layer across the fit images), so conditions differ in structure only.
3. **Regime**: ``test-time`` injects the noise into the base network; ``train-time``
   fine-tunes the base network with the noise (fixed covariance fitted on the base network;
   ``none`` is fine-tuned without noise for the same epochs); ``train-time-adaptive`` re-fits
   the covariance from the current network every ``adapt_every`` epochs, with a magnitude
   that follows the layer's running variance (``relative_scale=m``).
4. **Evaluation** with the noise on (a stochastic network: EOT attacks, ``n_evaluations``
   repeated evaluations) and, for the train-time regimes, with the noise off: clean accuracy,
   every target at every strength (attack targets: the ensemble's per-example worst case),
   masking diagnostics (per-attack accuracy, a large eps that must reach chance, CE-PGD with
   and without EOT, gradient SNR), the alignment of the injected covariance with each
   target's perturbation directions, and the Fano factor / noise correlation of the layer.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from neurovar.models import train
from neurovar.noise import (
    CovarianceNoise,
    DiagonalNoise,
    IsotropicNoise,
    LowRankNoise,
    NoiseModule,
    fit_perturbation_covariance,
    inject_noise,
    scale_to_activation_variance,
    suspend_noise,
)
from neurovar.noise.controls import rotate_spectrum
from neurovar.perturb._utils import inner_progress
from neurovar.perturb.diagnostics import gradient_snr
from neurovar.perturb.evaluate import correct_matrix, evaluate_robustness
from neurovar.perturb.spec import Perturbation, TargetSpec, evaluate_target
from neurovar.record import record_activations
from neurovar.stats import (
    alignment_index,
    fano_factor,
    noise_correlation,
    participation_ratio,
    top_subspace,
    variance_along,
)

from .config import ExperimentConfig
from .grid import SCIENCE_KEYS, CellSpec, stream_seed
from .setup import build_model, load_data, resolve_config_device
from .store import write_cell

__all__ = ["CellResult", "compute_cell", "run_cell", "base_network"]

#: Number of principal directions of a target used for the alignment statistics.
N_ALIGNMENT_COMPONENTS = 3


@dataclass
class CellResult:
    """What one cell computed: an :class:`xarray.Dataset` and a JSON-able ``info`` dict."""

    cell_id: str
    dataset: xr.Dataset
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)``, restored on exit.

    The intra-op thread count changes the order of float reductions and so, at the margin,
    attack decisions; fixing it per cell makes a cell's numbers the same in-process and on a
    dask worker (whose thread count differs).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _science_key(cfg: ExperimentConfig) -> str:
    d = cfg.to_dict()
    return json.dumps({k: d[k] for k in SCIENCE_KEYS}, sort_keys=True)


# ----------------------------------------------------------------------------- base network
_BASE: dict[tuple[str, int, str], dict[str, Any]] = {}


def base_network(
    cfg: ExperimentConfig, seed: int, device: torch.device, *, cache_dir: Path | None = None,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """The seed's base network (trained without noise) and its training summary.

    Cached per process and, when ``cache_dir`` is given, on disk (written atomically), so the
    cells of one seed share one network whichever worker runs them.
    """
    import hashlib

    from neurovar._validation import check_bool, check_device, check_int

    seed = check_int(seed, name="seed", owner="base_network", low=0)
    device = check_device(device, owner="base_network", allow_none=False)
    progress = check_bool(progress, name="progress", owner="base_network")
    key = (_science_key(cfg), int(seed), str(device))
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    if key not in _BASE:
        path = None if cache_dir is None else Path(cache_dir) / f"base-{digest}.pt"
        if path is not None and path.exists():
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
            entry = {"state": state, "test_accuracy": float(hist.test_accuracy[-1]),
                     "train_seconds": time.perf_counter() - t0}
            _BASE[key] = entry
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                torch.save(entry, tmp)
                os.replace(tmp, path)
    entry = _BASE[key]
    model = build_model(cfg, rng=0)
    model.load_state_dict(entry["state"])
    model.to(device).eval()
    return model, {"base_test_accuracy": entry["test_accuracy"],
                   "base_train_seconds": float(entry["train_seconds"])}


# ----------------------------------------------------------------------------- covariances
@dataclass
class _Structure:
    """Per seed and layer: fit data, the clean trace, source covariances, target directions."""

    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    sources: dict[str, xr.DataArray]
    pooled: xr.DataArray
    targets: dict[str, xr.DataArray]


_STRUCTURE: dict[tuple[str, int, str, str], _Structure] = {}


def _source_perturbation(cfg: ExperimentConfig, source_id: str) -> Perturbation:
    s = cfg.source(source_id)
    ev = cfg.evaluation
    return Perturbation(s.family, s.name, s.strength, norm=s.norm, steps=ev.steps,
                        n_queries=ev.n_queries, n_target_classes=ev.n_target_classes)


def fit_source_covariance(
    cfg: ExperimentConfig, source_id: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
    *, layer: str, rng: int,
) -> xr.DataArray:
    """Covariance of ``source_id``'s activation changes at ``layer`` of ``model`` (noise off)."""
    src = cfg.source(source_id)
    method = src.method or cfg.fit.method
    pert = _source_perturbation(cfg, source_id)
    gen = np.random.default_rng(rng)
    with suspend_noise(model):
        if method == "within_image":
            versions = torch.stack([
                pert.apply(x, y, model=model, rng=int(gen.integers(2**62)))
                for _ in range(cfg.fit.n_versions)
            ])
        else:
            versions = pert.apply(x, y, model=model, rng=int(gen.integers(2**62)))
    return fit_perturbation_covariance(
        model, x, versions, layer=layer, method=method, estimator=cfg.fit.estimator,
        rank=cfg.fit.rank, share=cfg.fit.share,
    )


def _pooled(covs: dict[str, xr.DataArray]) -> xr.DataArray:
    mats = [c / float(np.trace(c.values)) for c in covs.values()]
    out = sum(mats[1:], mats[0]) / len(mats)
    out.attrs = {**next(iter(covs.values())).attrs, "method": "pooled", "sources": list(covs)}
    return out


def _structure(cfg: ExperimentConfig, seed: int, layer: str, base: nn.Module,
               device: torch.device) -> _Structure:
    key = (_science_key(cfg), int(seed), layer, str(device))
    if key in _STRUCTURE:
        return _STRUCTURE[key]
    data = load_data(cfg)
    n_fit = min(cfg.data.n_fit, len(data.x_train))
    n_eval = min(cfg.data.n_eval, len(data.x_test))
    x_fit, y_fit = data.x_train[:n_fit], data.y_train[:n_fit]
    x_eval, y_eval = data.x_test[:n_eval], data.y_test[:n_eval]
    sources = {
        sid: fit_source_covariance(cfg, sid, base, x_fit, y_fit, layer=layer,
                                   rng=stream_seed(seed, "fit", sid, layer))
        for sid in cfg.source_ids
    }
    # the perturbation directions of every target, at its middle strength, on the base network
    targets = {}
    for t in cfg.targets:
        spec = _target_spec(cfg, t.target_id)
        middle = spec.strengths[len(spec.strengths) // 2]
        pert = spec.perturbation(middle, steps=cfg.evaluation.steps,
                                 n_queries=cfg.evaluation.n_queries)
        with suspend_noise(base):
            x_pert = pert.apply(x_eval, y_eval, model=base,
                                rng=stream_seed(seed, "fit", "target", t.target_id))
        targets[t.target_id] = fit_perturbation_covariance(
            base, x_eval, x_pert, layer=layer, method="difference", share=cfg.fit.share)
    st = _Structure(x_fit, y_fit, x_eval, y_eval, sources,
                    _pooled(sources) if sources else None, targets)
    _STRUCTURE[key] = st
    return st


def _target_spec(cfg: ExperimentConfig, target_id: str) -> TargetSpec:
    t = cfg.target(target_id)
    attacks = cfg.target_attacks(target_id) if t.family == "attack" else ()
    return TargetSpec(t.family, t.name, tuple(t.strengths), norm=t.norm,
                      **({"attacks": tuple(attacks)} if attacks else {}))


def _condition_covariance(cfg: ExperimentConfig, condition: str, covs: dict[str, xr.DataArray],
                          pooled: xr.DataArray | None, template: xr.DataArray,
                          rng: int) -> xr.DataArray | None:
    """The (unnormalised) covariance shape of a condition; None for ``none``."""
    if condition == "none":
        return None
    if condition == "isotropic":
        eye = template.copy(data=np.eye(template.shape[0]))
        eye.attrs = {**template.attrs, "method": "isotropic"}
        return eye
    if condition == "diagonal":
        out = pooled.copy(data=np.diag(np.diag(pooled.values)))
        out.attrs = {**pooled.attrs, "method": "diagonal"}
        return out
    if condition == "rotated":
        out = rotate_spectrum(pooled, rng=rng)
        out.attrs = {**pooled.attrs, "method": "rotated"}
        return out
    return covs[condition.split(":", 1)[1]]


def _noise_module(cov: xr.DataArray, condition: str, cfg: ExperimentConfig, *, seed: int,
                  relative_scale: float | None) -> NoiseModule:
    kw: dict[str, Any] = {"share": cfg.fit.share, "rng": seed, "relative_scale": relative_scale}
    d = cov.shape[0]
    if condition == "isotropic":
        return IsotropicNoise(1.0, n_units=d, **kw)
    if condition == "diagonal":
        return DiagonalNoise(np.diag(cov.values).copy(), **kw)
    if cfg.fit.rank is not None:
        return LowRankNoise.from_covariance(cov, min(cfg.fit.rank, d), **kw)
    return CovarianceNoise(cov.values, **kw)


# ----------------------------------------------------------------------------- evaluation
def _evaluate(model: nn.Module, st: _Structure, cfg: ExperimentConfig, *, seed: int,
              stochastic: bool, device: torch.device) -> dict[str, Any]:
    """Clean accuracy, every target, and the masking diagnostics of the network as it is."""
    ev = cfg.evaluation
    n_eval = ev.n_evaluations if stochastic else 1
    eot: int | str = ev.eot_samples if stochastic else 1
    gen = np.random.default_rng(stream_seed(seed, "evaluation"))
    clean = correct_matrix(model, st.x_eval, st.y_eval, n_evaluations=n_eval,
                           rng=int(gen.integers(2**62)), batch_size=ev.batch_size,
                           device=device)
    out: dict[str, Any] = {"clean_correct": clean.mean(axis=0), "targets": {}}
    budget = dict(n_evaluations=n_eval, eot_samples=eot, steps=ev.steps, n_queries=ev.n_queries,
                  n_target_classes=ev.n_target_classes, batch_size=ev.batch_size, device=device)
    for t in cfg.targets:
        spec = _target_spec(cfg, t.target_id)
        out["targets"][t.target_id] = evaluate_target(
            model, st.x_eval, st.y_eval, spec, rng=int(gen.integers(2**62)), **budget)
    # masking diagnostics: a large L-inf eps must bring the gradient (CE-PGD) and the
    # black-box (Square) attack to chance; CE-PGD with and without EOT; gradient SNR
    large = evaluate_robustness(
        model, st.x_eval, st.y_eval, eps=[ev.large_eps], norm="linf",
        attacks=[a for a in ev.attacks if a in ("pgd_ce", "square")] or list(ev.attacks),
        rng=int(gen.integers(2**62)),
        **{k: v for k, v in budget.items()},
    )
    out["large_eps_accuracy"] = large["accuracy"].isel(eps=0).values
    out["large_eps_attacks"] = [str(a) for a in large["attack"].values]
    linf = [t for t in cfg.targets if t.family == "attack" and t.norm == "linf"]
    out["eot_gap"] = float("nan")
    out["gradient_snr"] = float("nan")
    if stochastic and linf:
        eps = sorted(linf[0].strengths)[len(linf[0].strengths) // 2]
        no_eot = evaluate_robustness(
            model, st.x_eval, st.y_eval, eps=[eps], norm="linf", attacks=["pgd_ce"],
            rng=int(gen.integers(2**62)), **{**budget, "eot_samples": 1})
        with_eot = out["targets"][linf[0].target_id]
        idx = list(with_eot["attack"].values).index("pgd_ce") if "pgd_ce" in with_eot["attack"].values else None
        if idx is not None:
            pos = int(np.argmin(np.abs(with_eot["strength"].values - eps)))
            out["eot_gap"] = float(no_eot["accuracy"].values[0, 0]
                                   - with_eot["attack_accuracy"].values[pos, idx])
        snr = gradient_snr(model, st.x_eval[:16], st.y_eval[:16],
                           eot_samples=(int(ev.eot_samples),), n_repeats=4,
                           rng=int(gen.integers(2**62)), device=device)
        out["gradient_snr"] = float(snr["snr"].values[0])
    return out


def _alignment(cov: xr.DataArray | None, st: _Structure) -> dict[str, np.ndarray]:
    """Alignment of an injected covariance shape with every target's perturbation directions."""
    n = len(st.targets)
    res = {"variance_ratio": np.full(n, np.nan), "alignment_index": np.full(n, np.nan),
           "alignment_vs_chance": np.full(n, np.nan)}
    if cov is None:
        return res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, c_t in enumerate(st.targets.values()):
            k = min(N_ALIGNMENT_COMPONENTS, c_t.shape[0])
            try:
                basis = top_subspace(c_t, k)
            except ValueError:
                continue
            v = variance_along(cov, basis.rename(component="direction"))
            res["variance_ratio"][i] = float(v.mean())
            ai = alignment_index(c_t, cov, n_components=k)
            res["alignment_index"][i] = float(ai["alignment_index"])
            res["alignment_vs_chance"][i] = float(ai["relative_to_chance"])
    return res


def _variability(model: nn.Module, st: _Structure, cfg: ExperimentConfig, layer: str, *,
                 seed: int, device: torch.device) -> dict[str, float]:
    """Mean Fano factor and noise correlation of the (noisy) layer over repeated trials."""
    ev = cfg.evaluation
    n = min(ev.n_record_stimuli, st.x_eval.shape[0])
    tree = record_activations(model, st.x_eval[:n], layers=[layer], n_trials=ev.n_record_trials,
                              rng=stream_seed(seed, "evaluation", "record"), device=device,
                              progress=False)
    act = tree[layer]["activation"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero-variance units -> NaN, counted
        ff = fano_factor(act)
        rsc = noise_correlation(act)
    ff_vals = ff.values[np.isfinite(ff.values)]
    r = rsc.values
    off = r[~np.eye(r.shape[0], dtype=bool)]
    off = off[np.isfinite(off)]
    return {
        "fano_factor": float(np.mean(ff_vals)) if ff_vals.size else float("nan"),
        "noise_correlation": float(np.mean(off)) if off.size else float("nan"),
        "fano_defined_fraction": float(ff_vals.size / max(ff.size, 1)),
    }


# ----------------------------------------------------------------------------- the cell
def _fine_tune(model: nn.Module, cfg: ExperimentConfig, epochs: int, seed: int,
               device: torch.device, progress: bool = False) -> float:
    hist = train(model, load_data(cfg), epochs=epochs, batch_size=cfg.training.batch_size,
                 lr=cfg.training.finetune_lr, rng=seed, device=device, progress=progress)
    return float(hist.test_accuracy[-1])


def compute_cell(spec: CellSpec, *, cache_dir: str | Path | None = None,
                 progress: bool = False) -> CellResult:
    """Compute one cell (no files written except the optional base-network cache).

    ``progress`` shows tqdm bars for the long steps (training, fine-tuning); without it the
    attacks and checks of the cell show none either (no bars from inside worker processes).

    All randomness derives from the spec (:func:`neurovar.experiment.grid.stream_seed`), and
    the torch thread count is fixed to ``config.threads`` inside the cell, so the result is
    the same whichever process runs it.
    """
    from neurovar._validation import check_bool

    progress = check_bool(progress, name="progress", owner="compute_cell")
    cfg = spec.config()
    t0 = time.perf_counter()
    with fixed_threads(cfg.threads), inner_progress(None if progress else False):
        device = resolve_config_device(cfg.device)
        base, info = base_network(cfg, spec.seed, device, progress=progress,
                                  cache_dir=None if cache_dir is None else Path(cache_dir))
        st = _structure(cfg, spec.seed, spec.layer, base, device)
        cell_seed = stream_seed(spec.seed, "cell", spec.regime, spec.condition, spec.magnitude,
                                spec.layer)
        gen = np.random.default_rng(cell_seed)
        template = next(iter(st.targets.values()))
        covs = dict(st.sources)
        cov = _condition_covariance(cfg, spec.condition, covs, st.pooled, template,
                                    int(gen.integers(2**62)))
        model = copy.deepcopy(base)
        adaptive = spec.regime == "train-time-adaptive"
        handle = None
        calibration: dict[str, Any] = {}
        if cov is not None:
            noise = _noise_module(cov, spec.condition, cfg, seed=int(gen.integers(2**62)),
                                  relative_scale=spec.magnitude if adaptive else None)
            if not adaptive:
                calibration = scale_to_activation_variance(
                    noise, model, st.x_fit, layer=spec.layer, m=spec.magnitude).to_dict()
            handle = inject_noise(model, {spec.layer: noise})
        try:
            if spec.regime == "train-time":
                info["finetune_test_accuracy"] = _fine_tune(
                    model, cfg, cfg.training.finetune_epochs, int(gen.integers(2**62)), device,
                    progress)
            elif adaptive:
                done = 0
                while done < cfg.training.finetune_epochs:
                    if handle is not None and done > 0 and spec.condition != "isotropic":
                        cov = _refit(cfg, spec, model, st, covs, handle, gen)
                    k = min(cfg.training.adapt_every, cfg.training.finetune_epochs - done)
                    info["finetune_test_accuracy"] = _fine_tune(
                        model, cfg, k, int(gen.integers(2**62)), device, progress)
                    done += k
                if handle is not None:
                    noise = handle.noise[spec.layer]
                    calibration = {"effective_snr": float(getattr(noise, "effective_snr",
                                                                  float("nan")))}
            model.eval()
            evaluations = {}
            if handle is None:
                evaluations[True] = evaluations[False] = _evaluate(
                    model, st, cfg, seed=spec.seed, stochastic=False, device=device)
            else:
                evaluations[True] = _evaluate(model, st, cfg, seed=spec.seed, stochastic=True,
                                              device=device)
                if spec.regime != "test-time":
                    handle.enabled = False
                    evaluations[False] = _evaluate(model, st, cfg, seed=spec.seed,
                                                   stochastic=False, device=device)
                    handle.enabled = True
            variability = (_variability(model, st, cfg, spec.layer, seed=spec.seed, device=device)
                           if handle is not None else
                           {"fano_factor": float("nan"), "noise_correlation": float("nan"),
                            "fano_defined_fraction": 0.0})
        finally:
            if handle is not None:
                handle.remove()
        if spec.regime == "test-time" and False in evaluations:
            del evaluations[False]
        ds = _to_dataset(spec, cfg, st, evaluations, _alignment(cov, st), variability, cov)
    info.update(calibration=calibration, seconds=time.perf_counter() - t0,
                device=str(device), threads=cfg.threads)
    ds.attrs.update(cell_id=spec.cell_id, label=spec.label, info=json.dumps(info, default=float))
    return CellResult(spec.cell_id, ds, info)


def _refit(cfg: ExperimentConfig, spec: CellSpec, model: nn.Module, st: _Structure,
           covs: dict[str, xr.DataArray], handle: Any, gen: np.random.Generator) -> xr.DataArray:
    """Re-fit the condition's covariance from the current network and swap it into the hook,
    keeping the module's running variance estimates (the magnitude follows the layer)."""
    needed = (list(covs) if spec.condition in ("diagonal", "rotated")
              else [spec.condition.split(":", 1)[1]])
    for sid in needed:
        covs[sid] = fit_source_covariance(cfg, sid, model, st.x_fit, st.y_fit, layer=spec.layer,
                                          rng=int(gen.integers(2**62)))
    pooled = _pooled(covs)
    cov = _condition_covariance(cfg, spec.condition, covs, pooled, pooled,
                                int(gen.integers(2**62)))
    old = handle.noise[spec.layer]
    new = _noise_module(cov, spec.condition, cfg, seed=int(gen.integers(2**62)),
                        relative_scale=spec.magnitude)
    new.load_state_dict(
        {k: v for k, v in old.state_dict().items() if k.startswith(("running_", "num_batches"))},
        strict=False,
    )
    new.train(old.training)
    handle.hooks[spec.layer].noise = new
    handle.noise[spec.layer] = new
    return cov


def _to_dataset(spec: CellSpec, cfg: ExperimentConfig, st: _Structure,
                evaluations: dict[bool, dict[str, Any]], align: dict[str, np.ndarray],
                variability: dict[str, float], cov: xr.DataArray | None) -> xr.Dataset:
    targets = list(cfg.target_ids)
    n_levels = max(len(t.strengths) for t in cfg.targets)
    attacks = list(cfg.all_attacks)
    # every cell has both noise_at_test values so cells combine along the grid dims only;
    # combinations that do not apply (noise off in the test-time regime) stay NaN
    flags = [True, False]
    n_stim = st.x_eval.shape[0]
    shape = (len(flags), len(targets), n_levels)
    acc = np.full(shape, np.nan)
    correct = np.full((*shape, n_stim), np.nan)
    att = np.full((*shape, len(attacks)), np.nan)
    strength = np.full((len(targets), n_levels), np.nan)
    for ti, t in enumerate(cfg.targets):
        strength[ti, : len(t.strengths)] = t.strengths
    clean = np.zeros((len(flags), n_stim))
    large = np.full((len(flags), len(attacks)), np.nan)
    eot_gap = np.full(len(flags), np.nan)
    snr = np.full(len(flags), np.nan)
    for fi, flag in enumerate(flags):
        if flag not in evaluations:
            clean[fi] = np.nan
            continue
        e = evaluations[flag]
        clean[fi] = e["clean_correct"]
        for ti, tid in enumerate(targets):
            r = e["targets"][tid]
            k = r.sizes["strength"]
            acc[fi, ti, :k] = r["accuracy"].values
            correct[fi, ti, :k] = r["correct"].values
            if "attack_accuracy" in r:
                for ai, a in enumerate(attacks):
                    if a in r["attack"].values:
                        att[fi, ti, :k, ai] = r["attack_accuracy"].sel(attack=a).values
        for ai, a in enumerate(attacks):
            if a in e["large_eps_attacks"]:
                large[fi, ai] = e["large_eps_accuracy"][e["large_eps_attacks"].index(a)]
        eot_gap[fi], snr[fi] = e["eot_gap"], e["gradient_snr"]
    pr = float("nan")
    if cov is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pr = float(participation_ratio(cov))
    data = {
        "accuracy": (("noise_at_test", "target", "strength"), acc),
        "correct": (("noise_at_test", "target", "strength", "stimulus"), correct),
        "attack_accuracy": (("noise_at_test", "target", "strength", "attack"), att),
        "clean_accuracy": (("noise_at_test",), clean.mean(axis=1)),
        "clean_correct": (("noise_at_test", "stimulus"), clean),
        "large_eps_accuracy": (("noise_at_test", "attack"), large),
        "eot_gap": (("noise_at_test",), eot_gap),
        "gradient_snr": (("noise_at_test",), snr),
        "variance_ratio": (("target",), align["variance_ratio"]),
        "alignment_index": (("target",), align["alignment_index"]),
        "alignment_vs_chance": (("target",), align["alignment_vs_chance"]),
        "participation_ratio": ((), pr),
        "fano_factor": ((), variability["fano_factor"]),
        "noise_correlation": ((), variability["noise_correlation"]),
    }
    coords = {
        "noise_at_test": np.array(flags, dtype=bool),
        "target": targets,
        "strength": np.arange(n_levels),
        "strength_value": (("target", "strength"), strength),
        "target_family": ("target", [t.family for t in cfg.targets]),
        "target_kind": ("target", [t.kind for t in cfg.targets]),
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
