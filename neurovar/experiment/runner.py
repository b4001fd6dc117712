"""Run the grid into a results folder: validate, resume, run cells, assemble.

``run(config, out)``:

1. validates the whole config (:class:`~neurovar.experiment.config.ConfigError`, nothing
   written);
2. checks the folder: a folder holding a run of the *same* resolved config resumes (finished
   cells are kept and skipped); a different config, or a folder that is not a neurovar run, is
   refused unless ``overwrite=True`` — then the old folder is moved aside to a backup sibling
   and deleted only once the new run has finished (a failed run leaves it, and says where);
   Before any of this the run takes the folder's lock (:func:`run_lock`): a second ``run``
   into the same folder while the first is alive is refused, naming the first process;
3. runs every unfinished cell (in-process, or on a dask cluster, see ``scheduler``), each
   written atomically under ``cells/`` as it finishes; a cell that fails is reported with its
   traceback and the rest go on;
4. assembles ``results.nc`` and ``results.csv`` from ``cells/`` (atomic writes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from neurovar._io import atomic_path
from neurovar._validation import check_bool

from .config import ExperimentConfig, config_hash, load_config
from .executor import run_cells
from .grid import CellSpec, plan
from .store import assemble, done_cells, is_done, results_table

__all__ = ["run", "RunOutcome", "prepare_folder", "collect", "run_lock", "RunLockedError",
           "RUN_FILE"]

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
    with atomic_path(path, overwrite=True, owner="run") as tmp:
        tmp.write_text(text, encoding="utf-8")


class RunLockedError(FileExistsError):
    """Another live ``neurovar run`` holds the results folder (see :func:`run_lock`)."""


def lock_path(out: str | Path) -> Path:
    """The lock file of results folder ``out``: a hidden sibling ``.<name>.neurovar-lock``.

    It sits beside the folder, not in it, so that it also guards the moment when
    ``overwrite=True`` moves the old folder aside and creates a new one. Where the parent
    folder cannot be written but ``out`` is an existing folder (a shared, read-only parent),
    the lock is ``out/.neurovar-lock`` instead.
    """
    out = Path(os.path.abspath(out))
    parent = out.parent
    if out.is_dir() and parent.is_dir() and not os.access(parent, os.W_OK):
        return out / ".neurovar-lock"
    return out.with_name(f".{out.name}.neurovar-lock")


def _process_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None: it
    tells a live process from a later one that reused its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` (started at ``start`` ticks, when known) runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    except OSError:
        return False
    now = _process_start(pid)
    return start is None or now is None or now == start


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half-written: treated as held, never deleted


def _describe_holder(info: dict[str, Any]) -> str:
    if not info:
        return "an unknown process (the lock file is unreadable)"
    started = info.get("started")
    when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
            if isinstance(started, (int, float)) else "at an unknown time")
    return f"pid {info.get('pid')} on host {info.get('host')!r}, started {when}"


@contextlib.contextmanager
def run_lock(out: str | Path) -> Iterator[Path]:
    """Hold the write lock of results folder ``out`` for the duration of a run.

    The lock is a file (:func:`lock_path`) created atomically with ``O_CREAT | O_EXCL``
    holding the pid, host, process start and start time of the run. A lock whose process is
    gone (same host, pid dead or reused) is stale and taken over; a live one, or one from
    another host (whose process this host cannot see), is refused. Released in ``finally``,
    only if it is still this run's.

    Raises
    ------
    RunLockedError
        Another run holds the folder; the message names its pid, host, start time and the
        lock file.
    """
    folder = Path(os.path.abspath(out))
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    me = {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid),
          "started": time.time(), "token": uuid.uuid4().hex, "folder": str(folder)}
    payload = json.dumps(me).encode()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = _read_lock(path)
            if info is None:
                continue  # released in between: try again
            stale = (info.get("host") == me["host"] and isinstance(info.get("pid"), int)
                     and not _alive(info["pid"], info.get("process_start")))
            if not stale:
                if info and info.get("host") == me["host"]:
                    hint = f"Lock file: {str(path)!r}."
                elif info:
                    hint = (f"This host cannot see processes on {info.get('host')!r}: if that "
                            f"run is gone, delete the lock file {str(path)!r}.")
                else:
                    hint = (f"If no run is going on (a run killed while taking the lock), "
                            f"delete the lock file {str(path)!r}.")
                raise RunLockedError(
                    f"The results folder {str(folder)!r} is being written by another "
                    f"neurovar run ({_describe_holder(info)}); wait for it to finish or stop it, "
                    f"then run again (it resumes). Nothing was written. {hint}"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its process is gone
            continue
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
        break
    else:
        raise RunLockedError(f"Could not take the lock {str(path)!r} of the results folder "
                             "(other runs keep taking it); nothing was written.")
    try:
        yield path
    finally:
        if (_read_lock(path) or {}).get("token") == me["token"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


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
    if out.is_dir() and any(p.name != ".neurovar-lock" for p in out.iterdir()):
        marker = out / RUN_FILE
        same = False
        if marker.is_file():
            try:
                same = json.loads(marker.read_text())["config_hash"] == config_hash(cfg)
            except (OSError, ValueError, KeyError, TypeError) as err:
                # half-written or damaged: the cells tell whose run it is (their ids hash the
                # cell's settings), so a run of this config resumes and rewrites the file
                finished = set(done_cells(out))
                planned = {spec.cell_id for spec in plan(cfg)}
                if finished <= planned:
                    same = True
                elif not overwrite:
                    raise FileExistsError(
                        f"The run file {str(marker)!r} is damaged ({type(err).__name__}: "
                        f"{(str(err).splitlines() or [''])[0]}) and {len(finished - planned)} "
                        f"finished cell(s) in {str(out)!r} are not cells of this config; pass "
                        "overwrite=True (--overwrite) to replace the folder, or choose another "
                        "folder. Nothing was written."
                    ) from err
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
    with atomic_path(out / "results.nc", overwrite=True, owner="run") as tmp:
        results.to_netcdf(tmp, engine="h5netcdf")
    _write_text_atomic(out / "results.csv", results_table(results).to_csv(index=False))
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

    Raises
    ------
    RunLockedError
        Another live run writes into ``out`` (a :class:`FileExistsError`; nothing written).
    FileExistsError
        ``out`` holds a different run or other files and ``overwrite`` is False.
    """
    overwrite = check_bool(overwrite, name="overwrite", owner="run")  # "False" must not delete
    progress = check_bool(progress, name="progress", owner="run")
    cfg = load_config(config)
    if scheduler is None:  # in-process: this machine must have the device the config asks for
        from ._config_rules import local_device_problems
        from .config import ConfigError

        problems = local_device_problems(cfg)
        if problems:
            raise ConfigError(problems)
    floor = 2.0 ** (1 - len(cfg.seeds))
    alpha = 1 - cfg.evaluation.confidence_level
    if floor > alpha:
        import warnings

        warnings.warn(f"{len(cfg.seeds)} seed(s): the exact seed-level permutation test cannot "
                      f"go below p = {floor:.3g}, above alpha = {alpha:.3g}; seed-level "
                      f"p-values of this run cannot be significant (use at least "
                      f"{int(np.ceil(1 - np.log2(alpha)))} seeds). Image-level and crossed-"
                      "bootstrap results are still reported.", UserWarning, stacklevel=2)
    t0 = time.perf_counter()
    specs = plan(cfg)
    out = Path(out)
    with run_lock(out):
        return _run_locked(cfg, specs, out, overwrite=overwrite, progress=progress,
                           scheduler=scheduler, write=write, t0=t0)


def _run_locked(cfg, specs, out: Path, *, overwrite, progress, scheduler, write, t0
                ) -> RunOutcome:
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
