"""Fake cells with shared work for the executor tests: a per-"seed" base task and a per-"layer"
task depending on it, each logging every run (file named with the pid), so a test can count
how often each shared task ran and where. Importable on the test cluster's workers."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from neurovar.experiment.grid import SharedTask


@dataclass(frozen=True)
class Spec:
    cell_id: str
    seed: int
    layer: str
    log_dir: str
    label: str = ""
    resources: dict = field(default_factory=dict)
    fail_base: bool = False


def _log(log_dir: str, what: str) -> None:
    (Path(log_dir) / f"{what}@{os.getpid()}@{uuid.uuid4().hex[:6]}").touch()


def runs(log_dir: Path) -> list[str]:
    """The name of every logged run of a shared task or cell (one entry per run; the cell
    writer's own log entries are not runs)."""
    return sorted(p.name.split("@")[0] for p in Path(log_dir).iterdir() if "@" in p.name)


def base(seed: int, log_dir: str, fail: bool = False) -> np.ndarray:
    _log(log_dir, f"base-{seed}")
    if fail:
        raise RuntimeError(f"planted failure in the base of seed {seed}")
    return np.random.default_rng(seed).standard_normal(16)


def structure(seed: int, layer: str, log_dir: str, b: np.ndarray) -> np.ndarray:
    _log(log_dir, f"structure-{seed}-{layer}")
    return b * (1.0 + len(layer)) + np.random.default_rng([seed, len(layer)]).standard_normal(16)


def shared(specs):
    tasks, needs = {}, {}
    for s in specs:
        kb, ks = f"b{s.seed}", f"s{s.seed}{s.layer}"
        tasks.setdefault(kb, SharedTask(kb, base, (s.seed, s.log_dir, s.fail_base)))
        tasks.setdefault(ks, SharedTask(ks, structure, (s.seed, s.layer, s.log_dir), (kb,)))
        needs[s.cell_id] = {"base": kb, "structure": ks}
    return list(tasks.values()), needs


def compute(spec: Spec, *, base: np.ndarray, structure: np.ndarray) -> xr.Dataset:
    _log(spec.log_dir, f"cell-{spec.cell_id}")
    rng = np.random.default_rng([ord(c) for c in spec.cell_id])
    return xr.Dataset({"base": ("i", base), "structure": ("i", structure),
                       "own": ("j", rng.standard_normal(4))})


def grid(log_dir: Path, seeds=(0, 1), layers=("a", "bb"), cells_per=3, **kw) -> list[Spec]:
    return [Spec(f"c{seed}{layer}{k}", seed, layer, str(log_dir), label=f"{seed} {layer} {k}",
                 **kw)
            for seed in seeds for layer in layers for k in range(cells_per)]
