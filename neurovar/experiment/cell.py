"""One cell of the grid: build (and train) the network, inject the condition's noise, evaluate.

A cell is one (seed, regime, condition, magnitude, layer); what each factor does is an entry of
:mod:`neurovar.experiment.registry`:

1. **Base network** (per seed, shared by every cell of the seed and cached per process and
   on disk): the config's model trained without noise.
2. **Structure** (per seed and layer, shared): every source perturbs ``n_fit`` training images
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

from neurovar.models import MeanLogits, layers_after, train
from neurovar.noise import (
    DiagonalNoise,
    IsotropicNoise,
    LowRankNoise,
    NoiseModule,
    fit_perturbation_covariance,
    inject_noise,
    suspend_noise,
)
from neurovar.noise.fit import _samples, collect_layer_activations
from neurovar.perturb._utils import inner_progress
from neurovar.perturb.diagnostics import gradient_snr
from neurovar.perturb.evaluate import correct_matrix, evaluate_robustness
from neurovar.perturb.spec import Perturbation, TargetSpec, evaluate_target
from neurovar.record import record_activations
from neurovar.stats import noise_correlation

from .config import ExperimentConfig
from .grid import SCIENCE_KEYS, CellSpec, stream_seed
from .protocols import evaluate_adaptive_target, evaluate_paper_target
from .registry import MAGNITUDE_RULES, REGIMES, Shape, StructureContext, parse_condition
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
    path = None if cache_dir is None else Path(cache_dir) / f"base-{digest}.pt"
    if key not in _BASE:
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
    entry = _BASE[key]
    if path is not None and not path.exists():
        # also when this process had it in memory: the folder's cache is what other workers
        # (and a resumed run) read
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(entry, tmp)
        os.replace(tmp, path)
    model = build_model(cfg, rng=0)
    model.load_state_dict(entry["state"])
    model.to(device).eval()
    return model, {"base_test_accuracy": entry["test_accuracy"],
                   "base_train_seconds": float(entry["train_seconds"])}


# ----------------------------------------------------------------------------- structure
@dataclass
class _Directions:
    """A target's perturbation directions at the layer: the centred activation changes ``D``
    (``n x N``), their top right singular vectors ``basis`` (``N x k``) and the eigenvalues
    :math:`s^2/(n-1)` of their covariance (top ``k``), its trace."""

    diffs: np.ndarray
    basis: np.ndarray
    top: np.ndarray
    trace: float

    @classmethod
    def from_differences(cls, d: np.ndarray) -> _Directions:
        d = np.asarray(d, dtype=float)
        d = d - d.mean(axis=0, keepdims=True)
        _, sv, vt = np.linalg.svd(d, full_matrices=False)
        k = min(N_ALIGNMENT_COMPONENTS, int(np.sum(sv > sv.max(initial=0) * 1e-10)))
        denom = max(d.shape[0] - 1, 1)
        return cls(d, vt[:k].T.copy(), sv[:k] ** 2 / denom, float(np.sum(sv**2) / denom))


@dataclass
class _Structure:
    """Per seed and layer: fit/eval data, the shapes of every source, target directions."""

    x_fit: torch.Tensor
    y_fit: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    ctx: StructureContext
    targets: dict[str, _Directions]


_STRUCTURE: dict[tuple[str, int, str, str], _Structure] = {}


def _source_perturbation(cfg: ExperimentConfig, source_id: str) -> Perturbation:
    s = cfg.source(source_id)
    ev = cfg.evaluation
    return Perturbation(s.family, s.name, s.strength, norm=s.norm, steps=ev.steps,
                        n_queries=ev.n_queries, n_target_classes=ev.n_target_classes)


def _perturbed(cfg: ExperimentConfig, source_id: str, model: nn.Module, x: torch.Tensor,
               y: torch.Tensor, rng: int) -> torch.Tensor:
    method = cfg.source(source_id).method or cfg.fit.method
    pert = _source_perturbation(cfg, source_id)
    gen = np.random.default_rng(rng)
    with suspend_noise(model):
        if method == "within_image":
            return torch.stack([pert.apply(x, y, model=model, rng=int(gen.integers(2**62)))
                                for _ in range(cfg.fit.n_versions)])
        return pert.apply(x, y, model=model, rng=int(gen.integers(2**62)))


def fit_source_covariance(
    cfg: ExperimentConfig, source_id: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
    *, layer: str, rng: int,
) -> xr.DataArray:
    """Covariance of ``source_id``'s activation changes at ``layer`` of ``model`` (noise off),
    as :func:`neurovar.noise.fit_perturbation_covariance` fits it (``fit.ridge`` not added)."""
    versions = _perturbed(cfg, source_id, model, x, y, rng)
    method = cfg.source(source_id).method or cfg.fit.method
    return fit_perturbation_covariance(
        model, x, versions, layer=layer, method=method, estimator=cfg.fit.estimator,
        rank=cfg.fit.rank, share=cfg.fit.share,
    )


def source_shape(cfg: ExperimentConfig, source_id: str, model: nn.Module, x: torch.Tensor,
                 y: torch.Tensor, *, layer: str, rng: int,
                 clean: torch.Tensor | None = None) -> Shape:
    """The source's covariance :math:`\\Sigma_s = \\mathrm{cov}(h(\\tilde x) - h(x)) + r I` as an
    exact :class:`~.registry.Shape`.

    With the sample estimator, ``method="difference"`` and ``share="flat"`` (the paper's
    estimator) the factor comes from the thin SVD of the centred differences,
    :math:`D_c = U S V^T`, :math:`\\mathrm{cov}(D) = V \\frac{S^2}{n-1} V^T`, so
    :math:`F = V S/\\sqrt{n-1}` (rank at most ``n - 1``) and :math:`d = r` reproduce
    :math:`\\Sigma_s` exactly, without forming the ``D x D`` matrix. Other estimators go through
    :func:`fit_source_covariance` and an eigendecomposition.
    """
    ridge = float(cfg.fit.ridge)
    method = cfg.source(source_id).method or cfg.fit.method
    if method == "difference" and cfg.fit.estimator == "sample" and cfg.fit.share == "flat" \
            and cfg.fit.rank is None:
        x_mod = _perturbed(cfg, source_id, model, x, y, rng)
        h0 = clean if clean is not None else collect_layer_activations(model, x, layer=layer)
        h1 = collect_layer_activations(model, x_mod, layer=layer)
        d = (h1 - h0).reshape(h0.shape[0], -1).to(torch.float64)
        d = d - d.mean(0, keepdim=True)
        _, sv, vt = torch.linalg.svd(d, full_matrices=False)
        keep = sv > sv.max() * 1e-10 if sv.numel() else sv > 0
        factors = (vt[keep].T * (sv[keep] / np.sqrt(max(d.shape[0] - 1, 1)))).numpy()
        return Shape(np.full(d.shape[1], ridge), factors if factors.shape[1] else None)
    cov = fit_source_covariance(cfg, source_id, model, x, y, layer=layer, rng=rng).values
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2)
    keep = evals > max(evals.max(), 0) * 1e-10
    factors = evecs[:, keep] * np.sqrt(evals[keep])[None, :]
    return Shape(np.full(cov.shape[0], ridge), factors if factors.shape[1] else None)


def _pooled(shapes: dict[str, Shape]) -> Shape:
    """:math:`\\bar\\Sigma = \\frac1S \\sum_s \\Sigma_s / \\mathrm{tr}\\,\\Sigma_s`, exactly (stacked
    factors)."""
    n = len(shapes)
    facs = [s.factors / np.sqrt(n * s.trace) for s in shapes.values() if s.factors is not None]
    diag = sum(s.diagonal / (n * s.trace) for s in shapes.values())
    return Shape(np.asarray(diag, dtype=float), np.concatenate(facs, axis=1) if facs else None)


def _rotated(shape: Shape, rng: int) -> Shape:
    """The same spectrum with Haar-random eigenvectors (Mezzadri 2007): for
    :math:`\\Sigma = F F^T + d I`, :math:`Q F F^T Q^T + d I` needs only a random ``D x r``
    orthonormal frame. A non-constant diagonal is rotated through the dense matrix."""
    gen = np.random.default_rng(rng)
    d = shape.diagonal
    if shape.factors is not None and np.allclose(d, d[0], rtol=1e-9, atol=0.0):
        _, sv, _ = np.linalg.svd(shape.factors, full_matrices=False)
        q, r = np.linalg.qr(gen.standard_normal((shape.n_units, sv.size)))
        q = q * np.sign(np.diag(r))[None, :]
        return Shape(d.copy(), q * sv[None, :])
    evals, _ = np.linalg.eigh(shape.dense())
    q, r = np.linalg.qr(gen.standard_normal((shape.n_units, shape.n_units)))
    q = q * np.sign(np.diag(r))[None, :]
    keep = evals > 0
    return Shape(np.zeros(shape.n_units), q[:, keep] * np.sqrt(evals[keep])[None, :])


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
    clean = collect_layer_activations(base, x_fit, layer=layer)
    samples = _samples(clean, cfg.fit.share)
    clean_trace = float(samples.var(axis=0, ddof=1).sum())
    n_units = samples.shape[1]
    shapes = {sid: source_shape(cfg, sid, base, x_fit, y_fit, layer=layer, clean=clean,
                                rng=stream_seed(seed, "fit", sid, layer))
              for sid in cfg.source_ids}
    ctx = StructureContext(n_units=n_units, clean_trace=clean_trace, sources=shapes,
                           source_trace={k: v.trace for k, v in shapes.items()},
                           pooled=None, rotated={})
    # the perturbation directions of every target (one per family/name/norm), at its middle
    # strength, on the base network: the thin SVD of the centred activation changes
    targets: dict[str, _Directions] = {}
    by_kind: dict[tuple[str, str, str], _Directions] = {}
    h_eval = None
    for t in cfg.targets:
        kind = (t.family, "attack" if t.family == "attack" else t.name, t.norm)
        if kind not in by_kind:
            spec = _target_spec(cfg, t.target_id)
            middle = spec.strengths[len(spec.strengths) // 2]
            pert = spec.perturbation(middle, steps=cfg.evaluation.steps,
                                     n_queries=cfg.evaluation.n_queries)
            with suspend_noise(base):
                x_pert = pert.apply(x_eval, y_eval, model=base,
                                    rng=stream_seed(seed, "fit", "target", t.target_id))
            if h_eval is None:
                h_eval = collect_layer_activations(base, x_eval, layer=layer)
            h_pert = collect_layer_activations(base, x_pert, layer=layer)
            by_kind[kind] = _Directions.from_differences(
                _samples(h_pert, cfg.fit.share) - _samples(h_eval, cfg.fit.share))
        targets[t.target_id] = by_kind[kind]
    st = _Structure(x_fit, y_fit, x_eval, y_eval, ctx, targets)
    _STRUCTURE[key] = st
    return st


def _complete(st: _Structure, condition: str, seed: int, layer: str) -> None:
    """Add what ``condition`` needs to the seed and layer's structure: the pooled shape, and
    the random rotation of a ``rotated`` control, drawn once per seed and layer from its own
    stream (so every magnitude and regime shares it, whichever cell asks first)."""
    entry, source, _ = parse_condition(condition)
    ctx = st.ctx
    if not ctx.sources:
        return
    if ctx.pooled is None and source is None and entry.needs_sources:
        ctx.pooled = _pooled(ctx.sources)
    if entry.name == "rotated" and source not in ctx.rotated:
        ctx.rotated[source] = _rotated(
            ctx.pooled if source is None else ctx.sources[source],
            stream_seed(seed, "fit", "rotated", layer, *([] if source is None else [source])))


def _target_spec(cfg: ExperimentConfig, target_id: str) -> TargetSpec:
    t = cfg.target(target_id)
    attacks = cfg.target_attacks(target_id) if t.family == "attack" and t.protocol != "paper" \
        else ()
    return TargetSpec(t.family, t.name if t.family != "attack" else "ensemble",
                      tuple(t.strengths), norm=t.norm,
                      **({"attacks": tuple(attacks)} if attacks else {}))


# ----------------------------------------------------------------------------- noise
def condition_shape(cfg: ExperimentConfig, condition: str, magnitude: float,
                    ctx: StructureContext) -> Shape | None:
    """The scaled covariance of ``condition`` at ``magnitude`` (None: nothing injected)."""
    entry, source, param = parse_condition(condition)
    if entry.kind != "noise":
        return None
    shape = entry.shape(ctx, source, param)
    total = MAGNITUDE_RULES[cfg.magnitude_rule].total(float(magnitude), ctx, source)
    shape = shape.scaled(total)
    if entry.after_scaling is not None:
        shape = entry.after_scaling(shape, ctx, param)
    return shape


def noise_module(shape: Shape, cfg: ExperimentConfig, *, seed: int,
                 relative_scale: float | None = None) -> NoiseModule:
    """The noise module that draws exactly :math:`N(0, \\Sigma)` for a :class:`Shape`."""
    kw: dict[str, Any] = {"share": cfg.fit.share, "rng": seed, "relative_scale": relative_scale}
    d = shape.diagonal
    if shape.factors is None:
        if np.allclose(d, d[0], rtol=1e-9, atol=0.0):
            return IsotropicNoise(float(np.sqrt(d[0])), n_units=shape.n_units, **kw)
        return DiagonalNoise(d.copy(), **kw)
    return LowRankNoise(shape.factors, d.copy(), **kw)


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
    # masking diagnostics: a large L-inf eps must bring the gradient (CE-PGD) and the
    # black-box (Square) attack to chance; CE-PGD with and without EOT; gradient SNR
    large = evaluate_robustness(
        defended, st.x_eval, st.y_eval, eps=[ev.large_eps], norm="linf",
        attacks=[a for a in ev.attacks if a in ("pgd_ce", "square")] or list(ev.attacks),
        rng=int(gen.integers(2**62)), **budget)
    out["large_eps_accuracy"] = large["accuracy"].isel(eps=0).values
    out["large_eps_attacks"] = [str(a) for a in large["attack"].values]
    linf = [t for t in cfg.targets if t.family == "attack" and t.norm == "linf"
            and t.protocol == "adaptive"]
    if stochastic and linf:
        eps = sorted(linf[0].strengths)[len(linf[0].strengths) // 2]
        no_eot = evaluate_robustness(
            defended, st.x_eval, st.y_eval, eps=[eps], norm="linf", attacks=["pgd_ce"],
            rng=int(gen.integers(2**62)), **{**budget, "eot_samples": 1})
        with_eot = out["targets"][linf[0].target_id]
        if "pgd_ce" in with_eot["attack"].values:
            idx = list(with_eot["attack"].values).index("pgd_ce")
            pos = int(np.argmin(np.abs(with_eot["strength"].values - eps)))
            out["eot_gap"] = float(no_eot["accuracy"].values[0, 0]
                                   - with_eot["attack_accuracy"].values[pos, idx])
        snr = gradient_snr(defended, st.x_eval[:16], st.y_eval[:16],
                           eot_samples=(int(ev.eot_samples),), n_repeats=4,
                           rng=int(gen.integers(2**62)), device=device)
        out["gradient_snr"] = float(snr["snr"].values[0])
    return out


def _top_eigenvectors(shape: Shape, k: int) -> np.ndarray | None:
    r"""Top ``k`` eigenvectors of :math:`FF^T + \mathrm{diag}(d)` without the ``D x D`` matrix
    (None when the top subspace is not unique, e.g. isotropic noise)."""
    d = shape.diagonal
    if shape.factors is None:
        order = np.argsort(d)[::-1]
        if len(d) > k and np.isclose(d[order[k - 1]], d[order[k]]):
            return None
        out = np.zeros((len(d), k))
        out[order[:k], np.arange(k)] = 1.0
        return out
    if np.allclose(d, d[0], rtol=1e-9, atol=0.0):
        u, sv, _ = np.linalg.svd(shape.factors, full_matrices=False)
        if sv.size < k or (sv.size > k and np.isclose(sv[k - 1], sv[k])):
            return None
        return u[:, :k]
    from scipy.sparse.linalg import LinearOperator, eigsh

    f = shape.factors
    op = LinearOperator((len(d), len(d)), matvec=lambda v: f @ (f.T @ v) + d * v,
                        dtype=float)
    _, vec = eigsh(op, k=k, which="LA")
    return vec


def _alignment(shape: Shape | None, st: _Structure) -> dict[str, np.ndarray]:
    """Alignment of an injected covariance :math:`\\Sigma` with every target's perturbation
    directions, in the factor form (``O(N r k)``, no ``N x N`` matrix):

    - ``target_alignment``: the mean noise variance along the target's top-``k`` directions
      :math:`u_j` relative to isotropic noise of the same total variance,
      :math:`\frac1k\\sum_j u_j^T\\Sigma u_j / (\\mathrm{tr}\\,\\Sigma / N)` (1 = isotropic);
    - ``alignment_index`` and ``alignment_vs_chance``: the formula of
      :func:`neurovar.stats.alignment_index` with A the target's covariance and B the noise,
      :math:`\\mathrm{tr}(U_\\Sigma^T \\Sigma_t U_\\Sigma) / \\sum_{i\\le k}\\lambda^t_i` and its
      ratio to chance :math:`(k/N)\\,\\mathrm{tr}\\,\\Sigma_t / \\sum_{i\\le k}\\lambda^t_i`
      (``tests/experiment/test_cell_alignment.py`` checks both against the dense functions).
    """
    n = len(st.targets)
    res = {"target_alignment": np.full(n, np.nan), "alignment_index": np.full(n, np.nan),
           "alignment_vs_chance": np.full(n, np.nan)}
    if shape is None:
        return res
    n_units = shape.n_units
    per_unit = shape.trace / n_units
    cache: dict[int, np.ndarray | None] = {}
    for i, t in enumerate(st.targets.values()):
        k = t.basis.shape[1]
        if k == 0 or t.basis.shape[0] != n_units:
            continue
        u = t.basis
        along = np.sum(shape.diagonal[:, None] * u**2, axis=0)
        if shape.factors is not None:
            along = along + np.sum((shape.factors.T @ u) ** 2, axis=0)
        res["target_alignment"][i] = float(np.mean(along) / per_unit)
        if k not in cache:
            cache[k] = _top_eigenvectors(shape, k)
        ub = cache[k]
        if ub is None or t.top.sum() <= 0:
            continue
        captured = float(np.sum((t.diffs @ ub) ** 2) / max(t.diffs.shape[0] - 1, 1))
        index = captured / float(t.top.sum())
        chance = (k / n_units) * t.trace / float(t.top.sum())
        res["alignment_index"][i] = index
        res["alignment_vs_chance"][i] = index / chance if chance > 0 else np.nan
    return res


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
                              progress=False)
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
                 progress: bool = False) -> CellResult:
    """Compute one cell (no files written except the optional base-network cache).

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
        base, info = base_network(cfg, spec.seed, device, progress=progress,
                                  cache_dir=None if cache_dir is None else Path(cache_dir))
        st = _structure(cfg, spec.seed, spec.layer, base, device)
        cell_seed = stream_seed(spec.seed, "cell", spec.regime, spec.condition, spec.magnitude,
                                spec.layer)
        gen = np.random.default_rng(cell_seed)
        adaptive = regime.training == "adaptive"
        _complete(st, spec.condition, spec.seed, spec.layer)
        shape = condition_shape(cfg, spec.condition, spec.magnitude, st.ctx)
        model = _start(regime.start, base, cfg, spec, int(gen.integers(2**62)))
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
    pooled = _pooled(shapes)
    rotated = dict(st.ctx.rotated or {})
    if entry.name == "rotated":
        key = source
        rotated[key] = _rotated(pooled if key is None else shapes[key],
                                int(gen.integers(2**62)))
    ctx = StructureContext(n_units=st.ctx.n_units, clean_trace=st.ctx.clean_trace,
                           sources=shapes, source_trace={k: v.trace for k, v in shapes.items()},
                           pooled=pooled, rotated=rotated)
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


def _participation_ratio(shape: Shape) -> float:
    r""":math:`(\mathrm{tr}\,\Sigma)^2 / \mathrm{tr}(\Sigma^2)` of :math:`\Sigma = FF^T +
    \mathrm{diag}(d)`, exactly: :math:`\mathrm{tr}(\Sigma^2) = \|F^TF\|_F^2 + 2\sum_i d_i
    (FF^T)_{ii} + \sum_i d_i^2` (no ``D x D`` matrix)."""
    d = shape.diagonal.astype(float)
    tr2 = float(np.sum(d**2))
    if shape.factors is not None:
        f = shape.factors.astype(float)
        tr2 += float(np.sum((f.T @ f) ** 2)) + 2.0 * float(np.sum(d * np.sum(f**2, axis=1)))
    return shape.trace**2 / tr2 if tr2 > 0 else float("nan")


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
            if "attack_accuracy" in r:
                for ai, a in enumerate(attacks):
                    if a in r["attack"].values:
                        att[fi, ti, :k, ai] = r["attack_accuracy"].sel(attack=a).values
        for ai, a in enumerate(attacks):
            if a in e["large_eps_attacks"]:
                large[fi, ai] = e["large_eps_accuracy"][e["large_eps_attacks"].index(a)]
        eot_gap[fi], gsnr[fi] = e["eot_gap"], e["gradient_snr"]
    pr = float("nan") if shape is None else _participation_ratio(shape)
    data = {
        "accuracy": (("noise_at_test", "target", "strength"), acc),
        "correct": (("noise_at_test", "target", "strength", "stimulus"), correct),
        # per image, one evaluation only (= correct where the protocol evaluates once)
        "correct_single": (("noise_at_test", "target", "strength", "stimulus"), single),
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
