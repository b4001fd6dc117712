"""Run the grid into a results folder: validate, resume, run cells, assemble.

``run(config, out)``:

1. validates the whole config (:class:`~neurovar.experiment.config.ConfigError`, nothing
   written);
2. checks the folder: a folder holding a run of the *same* resolved config resumes (finished
   cells are kept and skipped); a different config, or a folder that is not a neurovar run, is
   refused unless ``overwrite=True`` — then the old folder is moved aside to a backup sibling
   and deleted only once the new run has finished (a failed run leaves it, and says where);
3. runs every unfinished cell (in-process, or on a dask cluster, see ``scheduler``), each
   written atomically under ``cells/`` as it finishes; a cell that fails is reported with its
   traceback and the rest go on;
4. assembles ``results.nc`` and ``results.csv`` from ``cells/`` (atomic writes).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from neurovar._validation import check_bool

from .config import ExperimentConfig, config_hash, load_config
from .executor import run_cells
from .grid import CellSpec, plan
from .store import assemble, done_cells, is_done, to_tidy

__all__ = ["run", "RunOutcome", "prepare_folder", "collect", "RUN_FILE"]

#: File that marks a folder as a neurovar run and records its resolved config and hash.
RUN_FILE = "experiment.json"


@dataclass
class RunOutcome:
    """What :func:`run` did: the folder, cells computed / skipped (resumed) / failed."""

    out_dir: Path
    config: ExperimentConfig
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    results: xr.Dataset | None = None
    backup: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare_folder(out: str | Path, cfg: ExperimentConfig, *, overwrite: bool = False) -> Path | None:
    """Make ``out`` ready for ``cfg``; returns the backup folder to delete after success.

    Raises
    ------
    FileExistsError
        ``out`` holds a different run or other files, and ``overwrite`` is False.
    """
    overwrite = check_bool(overwrite, name="overwrite")  # names run() when called from it
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"The results folder {str(out)!r} is a file, not a folder.")
    backup = None
    if out.is_dir() and any(out.iterdir()):
        marker = out / RUN_FILE
        same = False
        if marker.is_file():
            try:
                same = json.loads(marker.read_text())["config_hash"] == config_hash(cfg)
            except (ValueError, KeyError):
                same = False
        if not same:
            if not overwrite:
                what = ("a run of a different config" if marker.is_file()
                        else "files that are not a neurovar run")
                raise FileExistsError(
                    f"The results folder {str(out)!r} holds {what}; pass overwrite=True "
                    "(--overwrite) to replace it, or choose another folder. Nothing was written."
                )
            backup = out.with_name(f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(out, backup)
    out.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(out / RUN_FILE, json.dumps(
        {"config_hash": config_hash(cfg), "config": cfg.to_dict()}, indent=1))
    return backup


def collect(out: str | Path, cfg: ExperimentConfig, specs: Sequence[CellSpec] | None = None
            ) -> xr.Dataset:
    """Assemble ``results.nc`` and ``results.csv`` in ``out`` from its finished cells."""
    out = Path(out)
    specs = plan(cfg) if specs is None else specs
    results = assemble(out, specs, cfg.all_magnitudes)
    results.attrs.update(config_hash=config_hash(cfg), name=cfg.name,
                         n_cells=len(specs), n_done=sum(is_done(out, s.cell_id) for s in specs))
    tmp = out / f".results.nc.{os.getpid()}.tmp"
    results.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, out / "results.nc")
    _write_text_atomic(out / "results.csv", to_tidy(results).to_csv(index=False))
    return results


def run(
    config: str | Path | ExperimentConfig | Any,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    scheduler: Any = None,
    write: str = "worker",
) -> RunOutcome:
    """Run (or resume) the experiment grid of ``config`` into ``out``.

    Parameters
    ----------
    config
        A config, a TOML path, a shipped config name, or a mapping (see
        :func:`~neurovar.experiment.config.load_config`).
    out
        Results folder. Started again with the same config, the run resumes: finished cells
        are kept, and the results equal an uninterrupted run's.
    overwrite
        Replace a folder holding a different run (moved aside until the new run finishes).
    progress
        tqdm progress bars over cells.
    scheduler
        ``None`` (in-process), ``"local:N"`` (a ``dask.distributed.LocalCluster`` with N
        workers), a scheduler address ``"tcp://host:port"``, or a ``distributed.Client``
        (see :func:`neurovar.experiment.executor.run_cells`). The numbers are the same
        whichever way the grid runs: a cell's seeds and thread count belong to the cell.
    write
        ``"worker"`` (workers write their cells into ``out``: a shared filesystem) or
        ``"client"`` (cells are returned to this process, which writes them).

    Returns
    -------
    RunOutcome
        With ``results`` (the assembled Dataset) when at least one cell is finished.
    """
    overwrite = check_bool(overwrite, name="overwrite", owner="run")  # "False" must not delete
    progress = check_bool(progress, name="progress", owner="run")
    cfg = load_config(config)
    t0 = time.perf_counter()
    specs = plan(cfg)
    out = Path(out)
    backup = prepare_folder(out, cfg, overwrite=overwrite)
    before = set(done_cells(out))
    todo = [s for s in specs if s.cell_id not in before]
    outcome = RunOutcome(out, cfg, skipped=[s.cell_id for s in specs if s.cell_id in before],
                         backup=backup)
    grid = run_cells(todo, out, scheduler=scheduler, write=write, progress=progress)
    outcome.completed = list(grid.completed)
    outcome.failed = {cid: f"{grid.labels.get(cid, cid)}\n{tb}" for cid, tb in grid.failed.items()}
    if any(is_done(out, s.cell_id) for s in specs):
        outcome.results = collect(out, cfg, specs)
    if outcome.failed:
        _write_text_atomic(out / "failed_cells.txt", "\n\n".join(outcome.failed.values()))
    else:
        (out / "failed_cells.txt").unlink(missing_ok=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
            outcome.backup = None
    outcome.seconds = time.perf_counter() - t0
    return outcome
