"""The structure of a seed and layer: what the cells of one seed and layer share.

On the seed's base network (noise off), every source perturbs ``n_fit`` training images and the
activation changes :math:`D = h(\tilde x) - h(x)` at the layer give its covariance
:math:`\\Sigma_s = \\mathrm{cov}(D) + r I` (``fit.ridge`` = r; Preble et al. 2026,
``scripts/compute_covariance.py`` lines 46-49), kept in the exact low-rank-plus-diagonal form
:class:`~.registry.Shape`; their pooled shape, the random rotations of the ``rotated`` controls
(one per seed, layer and source, from its own stream) and the targets' perturbation directions
are computed here too, once (:func:`_structure`; on a cluster one shared task,
:func:`neurovar.experiment.cell.prepare_structure`). A condition's scaled shape
(:func:`condition_shape`), the noise module that draws it (:func:`noise_module`) and the
alignment statistics of a cell (:func:`_alignment`, and the shape's
:attr:`~neurovar.noise.FactorCovariance.participation_ratio`) read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import torch
import xarray as xr
from torch import nn

from neurovar.noise import (
    NoiseModule,
    fit_perturbation_covariance,
    match_total_variance,
    noise_from_covariance,
    rotate_spectrum,
    suspend_noise,
)
from neurovar.noise.fit import _samples, collect_layer_activations
from neurovar.perturb.spec import Perturbation, TargetSpec

from .config import ExperimentConfig
from .grid import SCIENCE_KEYS, stream_seed
from .registry import MAGNITUDE_RULES, Shape, StructureContext, parse_condition
from .setup import load_data

# fit_source_covariance, source_shape, condition_shape, noise_module: the cell's own rooms
# (importable, not public API; tested through compute_cell and tests/experiment/)
__all__: list[str] = []

#: Number of principal directions of a target used for the alignment statistics.
N_ALIGNMENT_COMPONENTS = 3


def _science_key(cfg: ExperimentConfig) -> str:
    d = cfg.to_dict()
    return json.dumps({k: d[k] for k in SCIENCE_KEYS}, sort_keys=True)


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
    """The same spectrum with Haar-random eigenvectors (Mezzadri 2007):
    :func:`neurovar.noise.rotate_spectrum` of the factor form (for :math:`F F^T + d I` only a
    random ``D x r`` frame is drawn; see :meth:`neurovar.noise.FactorCovariance.rotated`)."""
    return rotate_spectrum(shape, rng=rng)


def _structure(cfg: ExperimentConfig, seed: int, layer: str, base: nn.Module,
               device: torch.device) -> _Structure:
    key = (_science_key(cfg), int(seed), layer, str(device))
    if key in _STRUCTURE:
        # the conditions are not science settings: a config with other conditions may have
        # cached this structure without some of this config's rotations (each is a function
        # of its own stream, so adding it equals building the structure anew)
        st = _STRUCTURE[key]
        missing = [src for src in _rotated_sources(cfg) if src not in st.ctx.rotated]
        if missing and st.ctx.sources:
            extra = {src: _rotated(st.ctx.pooled if src is None else st.ctx.sources[src],
                                   _rotation_seed(seed, layer, src)) for src in missing}
            st = replace(st, ctx=replace(st.ctx, rotated={**st.ctx.rotated, **extra}))
            _STRUCTURE[key] = st
        return st
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
    ctx = _context(n_units, clean_trace, shapes,
                   {src: _rotation_seed(seed, layer, src) for src in _rotated_sources(cfg)})
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


def _rotated_sources(cfg: ExperimentConfig) -> list[str | None]:
    """The sources of the config's ``rotated`` conditions (``None``: the pooled structure)."""
    out: list[str | None] = []
    for condition in cfg.expanded_conditions():
        entry, source, _ = parse_condition(condition)
        if entry.name == "rotated" and source not in out:
            out.append(source)
    return out


def _rotation_seed(seed: int, layer: str, source: str | None) -> int:
    """The stream of the ``rotated`` control of ``source`` (``None``: pooled) at the layer."""
    return stream_seed(seed, "fit", "rotated", layer, *([] if source is None else [source]))


def _context(n_units: int, clean_trace: float, shapes: dict[str, Shape],
             rotations: dict[str | None, int]) -> StructureContext:
    """What the conditions read: the sources' shapes and traces, their pooled shape, and for
    each ``rotated`` source (``None``: the pooled shape) its rotation drawn from its seed.

    The structure of a seed and layer is built once with every rotation of the config, each from
    its own stream (:func:`_structure`), so every magnitude and regime shares them; the adaptive
    regime's re-fit builds a new one from the current network (:func:`_refit`)."""
    pooled = _pooled(shapes) if shapes else None
    rotated = {src: _rotated(pooled if src is None else shapes[src], seed)
               for src, seed in rotations.items() if shapes}
    return StructureContext(n_units=n_units, clean_trace=clean_trace, sources=shapes,
                            source_trace={k: v.trace for k, v in shapes.items()},
                            pooled=pooled, rotated=rotated)


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
    shape = match_total_variance(shape, total)
    if entry.after_scaling is not None:
        shape = entry.after_scaling(shape, ctx, param)
    return shape


def noise_module(shape: Shape, cfg: ExperimentConfig, *, seed: int,
                 relative_scale: float | None = None) -> NoiseModule:
    """The noise module that draws exactly :math:`N(0, \\Sigma)` for a :class:`Shape`
    (:func:`neurovar.noise.noise_from_covariance`, kind ``"full"``, in factor form)."""
    return noise_from_covariance(shape, kind="full", share=cfg.fit.share, rng=seed,
                                 relative_scale=relative_scale)


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
