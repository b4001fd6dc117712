"""The grid of cells: one cell per (seed, regime, condition, magnitude, layer).

A cell's identity is a stable hash of its resolved settings (the grid coordinates plus every
setting that changes its numbers: data, model, training, fit, evaluation, sources, targets).
Its seeds derive from that identity through :class:`numpy.random.SeedSequence`
(``entropy=seed``, ``spawn_key`` from the cell's coordinates), never from the order in which
cells run or the worker that runs them, so in-process, ``LocalCluster`` and remote runs give
the same numbers and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurovar._validation import check_choice, check_int

from .config import ExperimentConfig, load_config, validate_cell_spec
from .registry import GRID_DIMS, REGIMES, parse_condition

__all__ = ["CellSpec", "SharedTask", "plan", "SCIENCE_KEYS", "stream_seed"]

#: Config sections that change a cell's numbers (``name``, ``device`` and ``threads`` do not
#: enter the identity; device and threads are recorded with every cell).
SCIENCE_KEYS: tuple[str, ...] = (
    "data", "model", "training", "fit", "evaluation", "sources", "targets", "controls",
    "magnitude_rule",
)

#: Streams of randomness, one spawn key each (see :func:`stream_seed`).
_STREAMS = {"base": 0, "fit": 1, "cell": 2, "evaluation": 3}


def _key_ints(*parts: Any) -> tuple[int, ...]:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


def stream_seed(seed: int, stream: str, *parts: Any) -> int:
    """A 63-bit seed for one stream of randomness of one seed of the grid.

    ``SeedSequence(entropy=seed, spawn_key=(stream, *hash(parts)))``: ``"base"`` (network
    initialisation and training order, shared by every cell of a seed), ``"fit"`` (source
    perturbations used to fit covariances, shared by every cell of a seed and layer),
    ``"cell"`` (noise draws, random rotation, fine-tuning order: this cell's own) and
    ``"evaluation"`` (attack and evaluation draws, shared across conditions of a seed: common
    random numbers for paired comparisons).
    """
    seed = check_int(seed, name="seed", owner="stream_seed", low=0)
    check_choice(stream, name="stream", owner="stream_seed", options=tuple(_STREAMS))
    key = (_STREAMS[stream], *(_key_ints(*parts) if parts else ()))
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=key)
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass(frozen=True)
class CellSpec:
    """One cell of the grid (picklable; everything a worker needs).

    Attributes
    ----------
    cell_id
        Stable hash of the resolved settings (file name and dask key).
    seed, regime, condition, magnitude, layer
        Grid coordinates.
    settings
        JSON of the config (science settings plus ``device`` and ``threads``).
    label
        Short description for progress bars and failure lists.
    resources
        Dask worker resources the cell needs (``{"GPU": 1}`` on CUDA).
    """

    cell_id: str
    seed: int
    regime: str
    condition: str
    magnitude: float
    layer: str
    settings: str = field(repr=False)
    label: str = ""
    resources: dict[str, float] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        validate_cell_spec(self)  # every field checked when made (config.CELL_SPEC_CONSTRAINTS)

    def config(self) -> ExperimentConfig:
        """The experiment config this cell belongs to (validated again)."""
        return ExperimentConfig.model_validate(json.loads(self.settings))

    @property
    def coords(self) -> dict[str, Any]:
        """The cell's grid coordinates (:data:`~.registry.GRID_DIMS`)."""
        return {dim: getattr(self, dim) for dim in GRID_DIMS}

    def to_dict(self) -> dict[str, Any]:
        return {"cell_id": self.cell_id, "label": self.label, **self.coords,
                "settings": json.loads(self.settings)}


@dataclass(frozen=True)
class SharedTask:
    """Work that several cells share (a seed's base network, a seed and layer's structure), as
    a task the cells depend on.

    ``func(*args, *results of deps)`` computes it; ``key`` is unique within a grid, ``deps``
    are keys of other shared tasks, ``resources`` the dask worker resources it needs. See
    :func:`neurovar.experiment.cell.shared_work` and
    :func:`neurovar.experiment.executor.run_cells`.
    """

    key: str
    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    deps: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)


def plan(config: ExperimentConfig | Any) -> list[CellSpec]:
    """Every cell of the grid, ordered by seed, layer, regime, condition, magnitude.

    Conditions that inject no noise (``"none"``, the positive controls) have a single cell per
    (seed, regime, layer) with ``magnitude = 0``; the results table repeats it for every
    magnitude. A source's conditions run at the source's own ``magnitudes`` when it has them;
    positive controls only in regimes that train.

    Cells that share a seed share a base network (trained once per process and cached), so
    this order keeps that cache warm.
    """
    cfg = load_config(config)
    resolved = cfg.to_dict()
    science = {k: resolved[k] for k in SCIENCE_KEYS}
    settings = json.dumps(resolved, sort_keys=True)
    gpu = cfg.device.startswith("cuda")
    cells = []
    for seed in cfg.seeds:
        for layer in cfg.layers:
            for regime in cfg.regimes:
                for condition in cfg.expanded_conditions():
                    entry = parse_condition(condition)[0]
                    if entry.kind == "augment" and not REGIMES[regime].trains:
                        continue  # a positive control is a way of training
                    # conditions that inject nothing ("none", the positive controls): one cell
                    # (magnitude 0) serves every magnitude
                    for magnitude in cfg.condition_magnitudes(condition):
                        coords = {"seed": int(seed), "regime": regime, "condition": condition,
                                  "magnitude": float(magnitude), "layer": layer}
                        ident = json.dumps({**coords, **science}, sort_keys=True)
                        cell_id = hashlib.sha256(ident.encode()).hexdigest()[:16]
                        label = f"seed={seed} {regime} {condition} m={magnitude:g} {layer}"
                        cells.append(CellSpec(
                            cell_id=cell_id, seed=int(seed), regime=regime,
                            condition=condition, magnitude=float(magnitude), layer=layer,
                            settings=settings, label=label,
                            resources={"GPU": 1.0} if gpu else {},
                        ))
    return cells
