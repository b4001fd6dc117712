"""Run the experiment grid's cells in-process or on a :mod:`dask.distributed` cluster.

Every cell is an independent task whose seeds derive from its own settings (its ``cell_id``),
never from the worker that runs it or from the order in which cells finish, so the numbers of a
grid are identical cell for cell whichever way it ran: in-process, on a ``LocalCluster`` or on
a remote cluster, uninterrupted or resumed.

Ways to run (``scheduler=``):

``None``
    In-process loop, one cell after the other (the default).
``"local:N"``
    A :class:`distributed.LocalCluster` of ``N`` worker processes with one thread each, on
    the loopback interface, started for the run and closed at its end.
``"tcp://HOST:PORT"`` (or ``"HOST:PORT"``, ``"tls://..."``)
    An existing scheduler, e.g. started with ``dask scheduler`` and workers joined with
    ``dask worker tcp://HOST:8786 --nthreads 1``. Workers need ``neurovar`` importable.
``"PATH.json"``
    A scheduler file written by ``dask scheduler --scheduler-file PATH.json`` (HPC launchers
    such as dask-jobqueue and dask-mpi write one).
a :class:`distributed.Client`
    Used as it is and left open.

GPU cells. A cell declares what it needs in ``spec.resources`` (``{"GPU": 1}`` when the
config's device is CUDA), and the task is submitted with ``resources=spec.resources``, so dask
only runs it on a worker that advertises that resource. GPU and CPU cells can then share a
cluster: start one worker per GPU with one thread, pinned to its GPU::

    CUDA_VISIBLE_DEVICES=0 dask worker tcp://HOST:8786 --nthreads 1 --resources GPU=1
    CUDA_VISIBLE_DEVICES=1 dask worker tcp://HOST:8786 --nthreads 1 --resources GPU=1
    dask worker tcp://HOST:8786 --nworkers 8 --nthreads 1      # CPU-only cells

With ``"local:N"`` on a machine where CUDA is available, every local worker advertises
``GPU=1`` (they all see the same devices: ``local:1`` gives the GPU to one cell at a time). A
grid whose cells need a resource that no worker offers is refused before anything runs
(instead of waiting forever).

Where results are written (``write=``):

``"worker"``
    The worker that computed a cell writes it to ``out_dir`` (which must be the same folder on
    every worker: a shared filesystem; checked before the run with a marker file).
``"client"``
    Workers return the cell's result, and this process writes it. Use it when workers share no
    filesystem with the client.

Either way a cell is written atomically as soon as it finishes (by ``writer``, by default
:func:`neurovar.experiment.store.write_cell`), so a killed run loses at most the cells that were
running, and a rerun skips the cells that are done.

Shared work. Cells of one seed share its base network, and cells of one seed and layer share
the fitted source covariances, the controls' rotations and the targets' directions. The default
compute declares these as tasks (:func:`neurovar.experiment.cell.shared_work`) that the cells
depend on: in-process each is computed once, before the first cell that needs it, and dropped
after the last; on a cluster each is one dask task whose result the cells' tasks take as an
argument, so no two workers repeat it, the scheduler runs it before its cells, and its result
moves from the worker that computed it directly to the workers that need it (peer to peer, not
through the scheduler, and without a shared filesystem, so it works with ``write="client"``
too). A shared task that fails fails the cells that need it, with its traceback.

Failures. A worker that dies mid-cell (killed, out of memory, segfault) loses only that cell:
the scheduler reschedules it on another worker (``retries`` times on a ``"local:N"`` cluster,
the scheduler's ``distributed.scheduler.allowed-failures`` on an existing one, 3 by default).
A cell that raises an exception is recorded in :attr:`GridOutcome.failed` with its traceback
and the rest of the grid goes on; it is not retried (its seeds belong to the cell, so a rerun
would raise the same error), and a rerun of the grid redoes only the failed and missing cells.
"""

from __future__ import annotations

import functools
import os
import re
import traceback
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from neurovar._validation import InvalidParameterError, check_bool

if TYPE_CHECKING:  # pragma: no cover
    import distributed

__all__ = ["GridOutcome", "run_cells", "parse_scheduler", "local_cluster", "WRITE_MODES"]

WRITE_MODES = ("worker", "client")

_ADDRESS = re.compile(r"^(?:(tcp|tls|ucx|inproc)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d+)$")
_SCHEDULER_HELP = (
    "'local:N' (a LocalCluster of N >= 1 worker processes), a scheduler address such as "
    "'tcp://127.0.0.1:8786', or a dask scheduler file '*.json'"
)


@dataclass
class GridOutcome:
    """What :func:`run_cells` did.

    Attributes
    ----------
    completed
        Cell ids computed (and written) in this run, in the order of the specs.
    skipped
        Cell ids already done before the run (resume), in the order of the specs.
    failed
        Cell id -> traceback text of the cells that failed in this run.
    labels
        Cell id -> the cell's human-readable label, for every spec given.
    """

    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no cell failed."""
        return not self.failed

    def summary(self) -> str:
        """One line of counts, then one line per failed cell (id, label, last traceback line)."""
        lines = [
            f"{len(self.completed)} cells computed, {len(self.skipped)} already done, "
            f"{len(self.failed)} failed"
        ]
        for cid, tb in self.failed.items():
            last = tb.strip().splitlines()[-1] if tb.strip() else "(no traceback)"
            lines.append(f"  FAILED {cid} ({self.labels.get(cid, '?')}): {last}")
        return "\n".join(lines)


def parse_scheduler(text: str | None) -> str | None:
    """Validate a ``--scheduler`` value; return it normalised.

    Parameters
    ----------
    text
        ``None`` or ``""`` (in-process), ``"local:N"``, a scheduler address ``[tcp://]HOST:PORT``
        (``tls://``, ``ucx://``, ``inproc://`` kept as given), or the path of an existing dask
        scheduler file ending in ``.json``.

    Returns
    -------
    str or None
        ``None``, ``"local:N"``, ``"PROTOCOL://HOST:PORT"`` (``tcp://`` added when missing), or
        the scheduler file's path.

    Raises
    ------
    InvalidParameterError
        (a ValueError) naming the parameter, what is valid and what was given.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidParameterError(f"The 'scheduler' parameter must be {_SCHEDULER_HELP}. Got {text!r} instead.")
    value = text.strip()
    if value == "":
        return None
    if value.lower() == "local" or value.lower().startswith("local:"):
        m = re.fullmatch(r"local:(\d+)", value, flags=re.IGNORECASE)
        if m is None or int(m.group(1)) < 1:
            raise InvalidParameterError(
                "The 'scheduler' parameter must be 'local:N' with N a positive number of "
                f"workers (e.g. 'local:2'), or {_SCHEDULER_HELP}. Got {text!r} instead."
            )
        return f"local:{int(m.group(1))}"
    if value.endswith(".json"):
        if not Path(value).is_file():
            raise InvalidParameterError(
                f"The 'scheduler' parameter names a scheduler file that does not exist: {text!r} "
                "(written by 'dask scheduler --scheduler-file PATH.json')."
            )
        return value
    m = _ADDRESS.match(value)
    if m is None or not 1 <= int(m.group(3)) <= 65535:
        raise InvalidParameterError(f"The 'scheduler' parameter must be {_SCHEDULER_HELP}. Got {text!r} instead.")
    protocol = m.group(1) or "tcp"
    return f"{protocol}://{m.group(2)}:{int(m.group(3))}"


# --------------------------------------------------------------------------------------------
# the task that runs on a worker (top level: importable there)


def _attempt(
    spec: Any,
    out_dir: str,
    compute: Callable[..., Any],
    writer: Callable[[Path, Any, Any], Any] | None,
    names: tuple[str, ...] = (),
    *shared: Any,
) -> tuple[str, str, Any]:
    """Compute one cell (and write it when ``writer`` is given).

    ``names`` and ``shared``: the results of the shared tasks the cell depends on, passed to
    ``compute`` as keyword arguments (``compute(spec, **dict(zip(names, shared)))``).

    Returns ``("ok", cell_id, result_or_None)`` or ``("failed", cell_id, traceback_text)``: the
    traceback is formatted where the error happened, so it is complete even when the exception
    itself would not survive pickling.
    """
    try:
        result = compute(spec, **dict(zip(names, shared, strict=True)))
        if writer is None:
            return ("ok", spec.cell_id, result)
        writer(Path(out_dir), spec, result)
        return ("ok", spec.cell_id, None)
    except Exception:  # a real error of this cell: report it, the grid goes on
        return ("failed", spec.cell_id, traceback.format_exc())


def _sees_marker(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


# --------------------------------------------------------------------------------------------


def _defaults(compute, writer, done, shared, out: Path, write: str, in_process: bool):
    """The real cell functions where none were injected.

    The default compute is :func:`neurovar.experiment.cell.compute_cell` with the run's disk
    cache of base networks (``out_dir/cache``, as :func:`~neurovar.experiment.cell.run_cell`
    uses it) in-process and with ``write="worker"`` (a shared filesystem); with
    ``write="client"`` workers share no folder, so nothing is cached on disk. Its shared work
    is :func:`neurovar.experiment.cell.shared_work` (with the same cache); an injected compute
    has none unless ``shared`` is given.
    """
    if compute is None or writer is None or done is None:
        from . import store  # the cell store (write_cell, is_done)

        if compute is None:
            from .cell import compute_cell, shared_work

            cache = str((out / "cache").resolve()) if in_process or write == "worker" else None
            compute = functools.partial(compute_cell, cache_dir=cache)
            if shared is None:
                shared = functools.partial(shared_work, cache_dir=cache)
        writer = store.write_cell if writer is None else writer
        done = store.is_done if done is None else done
    return compute, writer, done, shared


def _shared_plan(shared, todo) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """``shared(todo)`` checked: (tasks by key, ordered so that deps come first; per cell id the
    keyword -> task key it needs)."""
    if shared is None:
        return {}, {}
    tasks, needs = shared(todo)
    by_key = {t.key: t for t in tasks}
    ordered: dict[str, Any] = {}

    def visit(key: str, path: tuple[str, ...]) -> None:
        if key in ordered:
            return
        if key in path or key not in by_key:
            raise InvalidParameterError(
                f"The shared work of run_cells must be tasks whose 'deps' name other tasks, "
                f"without cycles. Got task key {key!r} (via {' -> '.join(path) or 'a cell'}).")
        for dep in by_key[key].deps:
            visit(dep, (*path, key))
        ordered[key] = by_key[key]

    for key in by_key:
        visit(key, ())
    for cid, kw in needs.items():
        for key in kw.values():
            visit(key, (cid,))
    return ordered, needs


def _check_specs(specs: Sequence[Any]) -> None:
    seen: dict[str, Any] = {}
    for i, spec in enumerate(specs):
        cid = getattr(spec, "cell_id", None)
        if not isinstance(cid, str) or not cid:
            raise InvalidParameterError(
                f"The 'specs' parameter of run_cells must hold cell specs with a non-empty "
                f"'cell_id' string. Got {cid!r} at position {i}."
            )
        if cid in seen:
            raise InvalidParameterError(
                f"The 'specs' parameter of run_cells holds cell id {cid!r} twice (positions "
                f"{seen[cid]} and {i}); every cell must be unique."
            )
        seen[cid] = i


def run_cells(
    specs: Sequence[Any],
    out_dir: str | Path,
    *,
    scheduler: None | str | distributed.Client = None,
    write: str = "worker",
    retries: int = 2,
    progress: bool = True,
    compute: Callable[[Any], Any] | None = None,
    writer: Callable[[Path, Any, Any], Any] | None = None,
    done: Callable[[Path, str], bool] | None = None,
    shared: Callable[[Sequence[Any]], Any] | None = None,
) -> GridOutcome:
    """Run the cells that are not done yet; write each one as it finishes.

    Parameters
    ----------
    specs
        The grid's cells (:class:`neurovar.experiment.grid.CellSpec`): each has ``cell_id``
        (unique), ``resources`` (dask worker resources, e.g. ``{"GPU": 1}``) and ``label``.
    out_dir
        Results folder; cells go to ``out_dir/cells/<cell_id>/``.
    scheduler
        ``None`` (in-process), ``"local:N"``, a scheduler address or scheduler file (see
        :func:`parse_scheduler`), or a :class:`distributed.Client` (left open).
    write
        ``"worker"``: the worker writes the cell to ``out_dir`` (shared filesystem);
        ``"client"``: the worker returns the result and this process writes it. Ignored
        in-process.
    retries
        How many times a cell whose worker died is rescheduled on a ``"local:N"`` cluster
        (``distributed.scheduler.allowed-failures``); an existing scheduler uses its own setting.
    progress
        tqdm progress bar over the cells.
    compute, writer, done
        ``compute(spec) -> result``, ``writer(out_dir, spec, result)`` and
        ``done(out_dir, cell_id) -> bool``; defaults: ``neurovar.experiment.cell.compute_cell``
        (with the base-network cache ``out_dir/cache`` in-process and with
        ``write="worker"``), ``neurovar.experiment.store.write_cell`` and
        ``neurovar.experiment.store.is_done``.
        On a cluster they must be importable (or picklable) on the workers.
    shared
        ``shared(specs) -> (tasks, needs)``: the work cells share, as
        :class:`~neurovar.experiment.grid.SharedTask` s (``key``, ``func``, ``args``,
        ``deps``, ``resources``) and, per cell id, ``{keyword: task key}``: the cell is
        computed as ``compute(spec, keyword=result, ...)``. Default with the default compute:
        :func:`neurovar.experiment.cell.shared_work` (base network per seed, structure per seed
        and layer); none with an injected compute. Each task runs once per run (see the module
        notes).

    Returns
    -------
    GridOutcome
        Which cells were computed, skipped (done before) and failed (with tracebacks).

    Raises
    ------
    InvalidParameterError
        (a ValueError) for a malformed ``scheduler``, ``write`` or ``retries``, duplicate cell
        ids, cells that need a resource no worker offers, or ``write="worker"`` with workers
        that do not see ``out_dir``. Nothing is computed in these cases.
    """
    if write not in WRITE_MODES:
        raise InvalidParameterError(
            f"The 'write' parameter of run_cells must be one of {WRITE_MODES}. Got {write!r} instead."
        )
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InvalidParameterError(
            f"The 'retries' parameter of run_cells must be an integer >= 0. Got {retries!r} instead."
        )
    progress = check_bool(progress, name="progress", owner="run_cells")
    specs = list(specs)
    _check_specs(specs)
    client_given = scheduler is not None and not isinstance(scheduler, str)
    address = None if client_given else parse_scheduler(scheduler)  # type: ignore[arg-type]
    out = Path(out_dir)
    in_process = not client_given and address is None
    compute, writer, done, shared = _defaults(compute, writer, done, shared, out, write,
                                              in_process)

    outcome = GridOutcome(labels={s.cell_id: str(getattr(s, "label", s.cell_id)) for s in specs})
    out.mkdir(parents=True, exist_ok=True)  # store.is_done refuses a folder that is missing
    todo = []
    for spec in specs:
        if done(out, spec.cell_id):
            outcome.skipped.append(spec.cell_id)
        else:
            todo.append(spec)
    if not todo:
        return outcome
    (out / "cells").mkdir(parents=True, exist_ok=True)
    tasks, needs = _shared_plan(shared, todo)

    bar = tqdm(total=len(todo), desc="grid", unit="cell", disable=not progress)
    finished: set[str] = set()

    def record(status: str, cid: str, payload: str | None) -> None:
        if status == "ok":
            finished.add(cid)
            outcome.failed.pop(cid, None)
        else:
            outcome.failed[cid] = payload or ""
            if progress:
                tqdm.write(f"cell {cid} ({outcome.labels[cid]}) failed")
        bar.update(1)
        bar.set_postfix(failed=len(outcome.failed), refresh=False)

    try:
        if in_process:
            _run_in_process(todo, out, compute, writer, tasks, needs, record)
        else:
            _run_distributed(
                todo, out, scheduler if client_given else address, write, retries,
                compute, writer, record, tasks, needs,
            )
    finally:
        bar.close()
    outcome.completed = [s.cell_id for s in todo if s.cell_id in finished]
    return outcome


def _run_in_process(todo, out: Path, compute, writer, tasks, needs, record) -> None:
    """One cell after the other; each shared task computed once, before the first cell that
    needs it, and its result dropped after the last one."""
    users: dict[str, int] = {}

    def closure(key: str) -> list[str]:
        return [key, *(k for d in tasks[key].deps for k in closure(d))]

    cell_keys = {s.cell_id: sorted({k for key in needs.get(s.cell_id, {}).values()
                                    for k in closure(key)}) for s in todo}
    for keys in cell_keys.values():
        for k in keys:
            users[k] = users.get(k, 0) + 1
    results: dict[str, tuple[bool, Any]] = {}

    def get(key: str) -> Any:
        if key not in results:
            t = tasks[key]
            try:
                results[key] = (True, t.func(*t.args, *(get(d) for d in t.deps)))
            except _SharedFailed as err:
                results[key] = (False, str(err))
            except Exception:
                results[key] = (False, f"shared task {key} failed:\n{traceback.format_exc()}")
        ok, value = results[key]
        if not ok:
            raise _SharedFailed(value)
        return value

    for spec in todo:
        kw = needs.get(spec.cell_id, {})
        try:
            values = {name: get(key) for name, key in kw.items()}
        except _SharedFailed as err:
            record("failed", spec.cell_id, str(err))
        else:
            status, cid, payload = _attempt(spec, str(out), compute, writer, tuple(values),
                                            *values.values())
            record(status, cid, payload)
        for k in cell_keys[spec.cell_id]:
            users[k] -= 1
            if users[k] == 0:
                results.pop(k, None)


class _SharedFailed(Exception):
    """A shared task failed (its traceback is the message)."""


# --------------------------------------------------------------------------------------------
# dask.distributed


def local_cluster(
    n_workers: int,
    *,
    resources: dict[str, float] | None = None,
    allowed_failures: int | None = None,
) -> distributed.LocalCluster:
    """A :class:`distributed.LocalCluster` as ``"local:N"`` starts it: ``n_workers`` worker
    processes with one thread each, everything on 127.0.0.1 (no dashboard), each worker
    advertising ``resources``; a task whose worker dies is rescheduled ``allowed_failures``
    times (default: dask's ``distributed.scheduler.allowed-failures``). Close it when done.
    """
    import dask
    import distributed

    if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 1:
        raise InvalidParameterError(
            f"The 'n_workers' parameter of local_cluster must be a positive integer. Got {n_workers!r} instead."
        )
    config = {} if allowed_failures is None else {"distributed.scheduler.allowed-failures": allowed_failures}
    # dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536. Setting that variable at all
    # (to any value) switches off glibc's dynamic mmap threshold (mallopt(3): setting
    # M_TRIM_THRESHOLD disables the dynamic adjustment), so every tensor above 128 KiB is a
    # fresh mmap, page-faulted in and unmapped again: 1.7x the CPU of the same cells in-process
    # with the variable at 64 MiB (benchmarks/results/grid.md). Unset (None: dask's way to drop
    # a pre-spawn variable), the workers allocate as this process does.
    config["distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"] = None
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        # inherited by the workers all the same (set in the shell, or left in this process by
        # an earlier dask Nanny, which writes its pre-spawn variables into os.environ)
        warnings.warn(
            "MALLOC_TRIM_THRESHOLD_ is set in this process's environment "
            f"({os.environ['MALLOC_TRIM_THRESHOLD_']}); the LocalCluster's workers inherit it, "
            "which switches off glibc's dynamic mmap threshold and costs about 1.7x the CPU "
            "per cell (benchmarks/results/grid.md). Unset it before starting the cluster.",
            RuntimeWarning, stacklevel=2)
    with dask.config.set(config):
        return distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # no dashboard, loopback
            resources=resources,
        )


def _open_client(target: Any, retries: int, needs: set[str]):
    """(client, cluster_or_None, owned): a Client for ``target``; owned ones are closed later."""
    import distributed

    if not isinstance(target, str):
        return target, None, False
    if target.startswith("local:"):
        n = int(target.split(":", 1)[1])
        resources: dict[str, float] = {}
        if "GPU" in needs:
            import torch

            if torch.cuda.is_available():
                resources["GPU"] = 1
        cluster = local_cluster(n, resources=resources or None, allowed_failures=retries)
        try:
            client = distributed.Client(cluster)
        except BaseException:
            cluster.close()
            raise
        return client, cluster, True
    if target.endswith(".json"):
        return distributed.Client(scheduler_file=target), None, True
    return distributed.Client(target), None, True


def _check_resources(client, todo: Sequence[Any]) -> None:
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        return  # an adaptive cluster may add workers later: nothing to check against yet
    offered = [w.get("resources", {}) or {} for w in workers.values()]
    for spec in todo:
        need = dict(getattr(spec, "resources", {}) or {})
        if need and not any(all(res.get(k, 0) >= v for k, v in need.items()) for res in offered):
            have = sorted({k for res in offered for k in res}) or "none"
            raise InvalidParameterError(
                f"Cell {spec.cell_id} ({getattr(spec, 'label', '')}) needs worker resources "
                f"{need}, but no worker of the cluster offers them (resources offered: {have}). "
                "Start GPU workers with 'dask worker ADDRESS --nthreads 1 --resources GPU=1' "
                "(one per GPU, CUDA_VISIBLE_DEVICES pinning each), or run on a machine with CUDA."
            )


def _check_shared_dir(client, out: Path) -> None:
    token = uuid.uuid4().hex
    marker = out / "cells" / f".shared-check-{token}"
    marker.write_text(token)
    try:
        seen = client.run(_sees_marker, str(marker.resolve()), token)
    finally:
        marker.unlink(missing_ok=True)
    blind = sorted(addr for addr, ok in seen.items() if not ok)
    if blind:
        raise InvalidParameterError(
            f"The 'write' parameter of run_cells is 'worker', but workers {blind} do not see the "
            f"results folder {str(out.resolve())!r} (no shared filesystem). Use write='client'."
        )


def _run_distributed(todo, out, target, write, retries, compute, writer, record, tasks=None,
                     needs=None) -> None:
    import distributed

    wanted = {k for s in todo for k in (getattr(s, "resources", {}) or {})}
    client, cluster, owned = _open_client(target, retries, wanted)
    by_future: dict[Any, Any] = {}
    try:
        _check_resources(client, todo)
        if write == "worker":
            _check_shared_dir(client, out)
        run = uuid.uuid4().hex[:8]  # fresh keys: never reuse a stale key of a shared scheduler
        on_worker_writer = writer if write == "worker" else None
        # shared work first (deps before the tasks that need them): one task each, whose
        # result stays on its worker and goes peer to peer to the cells' workers
        shared: dict[str, Any] = {}
        for key, t in (tasks or {}).items():
            shared[key] = client.submit(
                t.func, *t.args, *(shared[d] for d in t.deps),
                key=f"neurovar_{key}-{run}", resources=dict(t.resources) or None, pure=False,
            )
        for spec in todo:
            kw = (needs or {}).get(spec.cell_id, {})
            fut = client.submit(
                _attempt,
                spec,
                str(out.resolve()),
                compute,
                on_worker_writer,
                tuple(kw),
                *(shared[k] for k in kw.values()),
                key=f"neurovar_cell-{spec.cell_id}-{run}",
                resources=dict(getattr(spec, "resources", {}) or {}) or None,
                pure=False,
            )
            by_future[fut] = spec
        # the cells hold their dependencies now: the scheduler frees each shared result once
        # the last cell that needs it is done
        shared.clear()
        for fut in distributed.as_completed(list(by_future)):
            spec = by_future.pop(fut)
            if fut.status == "finished":
                try:
                    status, cid, payload = fut.result()
                    if status == "ok" and write == "client":
                        writer(out, spec, payload)
                        payload = None
                except Exception:
                    status, cid, payload = "failed", spec.cell_id, traceback.format_exc()
            else:  # erred outside the cell: KilledWorker, task not unpicklable on a worker...
                try:
                    exc = fut.exception()
                    text = "".join(traceback.format_exception(type(exc), exc, fut.traceback()))
                except Exception as err:  # cancelled (e.g. the scheduler went away)
                    text = f"{type(err).__name__}: {err} (future status {fut.status!r})"
                status, cid, payload = "failed", spec.cell_id, text
            fut.release()
            record(status, cid, payload)
    finally:
        for fut in list(by_future):  # interrupted: do not leave cells running
            fut.cancel()
        if owned:
            client.close()
            if cluster is not None:
                cluster.close()

