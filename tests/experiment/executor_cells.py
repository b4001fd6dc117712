"""Small real cells for the executor tests: seeded numpy (and torch) work, atomic netCDF writes.

Importable by name on the dask workers of the tests (they inherit the test process's sys.path).
Every attempt and every write leaves a file in ``log_dir``, named with the process id, so a test
can count how often a cell ran, where, and who wrote it.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr


@dataclass(frozen=True)
class FakeSpec:
    """What the executor needs of a cell (cell_id, resources, label) plus the fake cell's knobs."""

    cell_id: str
    seed: int
    label: str = ""
    resources: dict = field(default_factory=dict)
    size: int = 24
    log_dir: str | None = None
    fail_while: str | None = None  # raise while this file exists
    wait_for: str | None = None  # block (write a 'started' file first) until this file exists
    torch_threads: int | None = None  # also run a torch conv with this many intra-op threads


def grid(n: int, log_dir: Path | None = None, **kw) -> list[FakeSpec]:
    return [
        FakeSpec(
            cell_id=f"c{i:02d}", seed=100 + i, label=f"seed={100 + i}",
            log_dir=None if log_dir is None else str(log_dir), **kw,
        )
        for i in range(n)
    ]


def _log(spec: FakeSpec, what: str) -> None:
    if spec.log_dir is not None:
        d = Path(spec.log_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{what}-{spec.cell_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()


def log_entries(log_dir: Path, what: str) -> list[tuple[str, int]]:
    """(cell_id, pid) of every logged attempt/write."""
    out = []
    for p in Path(log_dir).glob(f"{what}-*"):
        _, cid, pid, _ = p.name.split("-")
        out.append((cid, int(pid)))
    return out


def compute(spec: FakeSpec) -> xr.Dataset:
    """Deterministic from the spec alone: eigenvalues of a seeded random Gram matrix."""
    _log(spec, "attempt")
    if spec.wait_for is not None:
        flag = Path(spec.wait_for)
        (flag.parent / f"started-{spec.cell_id}-{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while not flag.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"flag {flag} never appeared")
            time.sleep(0.05)
    if spec.fail_while is not None and Path(spec.fail_while).exists():
        raise ValueError(f"planted failure in cell {spec.cell_id}")
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed))
    a = rng.standard_normal((spec.size, spec.size))
    data = {
        "eig": ("k", np.linalg.eigvalsh(a @ a.T)),
        "draw": ("i", rng.standard_normal(8)),
    }
    attrs = {"cell_id": spec.cell_id, "seed": spec.seed}
    if spec.torch_threads is not None:
        data["conv"], attrs["threads_on_entry"] = _torch_part(spec)
    return xr.Dataset(data, attrs=attrs)


def _torch_part(spec: FakeSpec):
    """A conv + reduction whose float result could depend on the intra-op thread count; the
    cell fixes the count from its spec (and restores the process's count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(spec.torch_threads)
    try:
        g = torch.Generator().manual_seed(spec.seed)
        x = torch.randn(8, 16, 32, 32, generator=g)
        w = torch.randn(32, 16, 3, 3, generator=g)
        y = torch.nn.functional.conv2d(x, w, padding=1)
        return ("j", y.sum(dim=(0, 2, 3)).double().numpy()), before
    finally:
        torch.set_num_threads(before)


def result_path(out_dir: Path, cell_id: str) -> Path:
    return Path(out_dir) / "cells" / cell_id / "result.nc"


def writer(out_dir: Path, spec: FakeSpec, result: xr.Dataset) -> Path:
    """Atomic write: temp file beside the target, then rename."""
    target = result_path(out_dir, spec.cell_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".result-{uuid.uuid4().hex}.nc"
    result.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, target)
    _log(spec, "write")
    return target.parent


def done(out_dir: Path, cell_id: str) -> bool:
    return result_path(out_dir, cell_id).is_file()


def load(out_dir: Path, cell_id: str) -> xr.Dataset:
    return xr.load_dataset(result_path(out_dir, cell_id), engine="h5netcdf")
