"""Run the grid on an HPC queue (SLURM, PBS, HTCondor) through dask-jobqueue.

``neurovar run CONFIG --out DIR --cluster slurm --jobs 4 --cores 8 --memory 32GB ...`` (or a
``[cluster]`` table in the config) submits ``jobs`` batch jobs, each running dask workers that
connect back to a scheduler in the submitting process; the cells then run exactly as on any
dask cluster (:func:`neurovar.experiment.executor.run_cells` with a
:class:`distributed.Client`): seeds belong to the cell, so the numbers equal an in-process run,
cell for cell, and a killed job loses only the cells it was running.

Cells are single-threaded tasks, so each job runs one single-threaded worker per core
(``processes = cores``) unless told otherwise. A job with ``gpus > 0`` asks the queue for the
GPUs (SLURM ``--gres=gpu:N``, PBS ``ngpus=N`` in the ``select`` statement, HTCondor
``request_gpus = N``) and runs one worker that advertises the dask resource ``GPU=N``, which
the cells of a CUDA config ask for (one cell per GPU at a time).

The workers must import the same neurovar: by default the job runs the submitting process's
Python (``python``), and SLURM and PBS jobs inherit the submitting environment when the site
allows it (HTCondor jobs do not, unless ``extra_directives = ["getenv = True"]``); otherwise
add ``prologue = ["source /path/to/.venv/bin/activate"]``. The results
folder must be on a filesystem the compute nodes share (checked before any cell runs).

Config (``[cluster]`` table; every key also a ``neurovar run`` flag)::

    [cluster]
    system = "slurm"          # or "pbs", "htcondor"; --cluster
    jobs = 4                  # --jobs
    cores = 8                 # --cores (per job)
    memory = "32GB"           # --memory (per job)
    walltime = "04:00:00"     # --walltime
    account = "proj123"       # --account
    queue = "gpu"             # --queue (SLURM partition, PBS/HTCondor queue)
    gpus = 1                  # --gpus (per job)
    extra_directives = ["--constraint=a100"]   # --job-directive (repeatable)
    prologue = ["module load cuda/12.4"]       # --job-prologue (repeatable)
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neurovar._validation import InvalidParameterError

__all__ = [
    "SYSTEMS",
    "ClusterConfig",
    "cluster_config",
    "cluster_kwargs",
    "make_cluster",
    "job_script",
    "open_cluster",
]

#: Queue systems supported, and their dask-jobqueue cluster classes.
SYSTEMS: dict[str, str] = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "htcondor": "HTCondorCluster",
}


class ClusterConfig(BaseModel):
    """Where and how to run the grid on an HPC queue (the ``[cluster]`` table of a config).

    Nothing here changes a number of the results: only where the cells run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["slurm", "pbs", "htcondor"] | None = Field(
        None, description="Queue system to submit to: 'slurm', 'pbs' or 'htcondor'; unset runs "
        "in-process (or on --scheduler).")
    jobs: int = Field(1, ge=1, description="Number of batch jobs to submit (each runs "
                      "'processes' dask workers).")
    cores: int = Field(1, ge=1, description="CPU cores per job.")
    processes: int | None = Field(
        None, ge=1, description="Dask worker processes per job; default: one single-threaded "
        "worker per core (one per job when gpus > 0).")
    memory: str = Field("4GB", min_length=1, description="Memory per job, e.g. '16GB' (split "
                        "evenly among the job's workers).")
    walltime: str | None = Field("01:00:00", description="Wall-clock limit of a job, in the "
                                 "queue's format ('HH:MM:SS'); SLURM and PBS only (HTCondor "
                                 "has no standard attribute: use extra_directives).")
    account: str | None = Field(None, description="Account (project) the jobs are charged to.")
    queue: str | None = Field(None, description="Queue (PBS) or partition (SLURM) to submit "
                              "to; HTCondor has none.")
    gpus: int = Field(0, ge=0, description="GPUs per job; the job's worker then offers the "
                      "dask resource GPU=gpus, which the cells of a CUDA config ask for.")
    extra_directives: tuple[str, ...] = Field(
        (), description="Extra job directives, one per entry, without the '#SBATCH'/'#PBS' "
        "prefix (e.g. '--constraint=a100'); HTCondor: 'key = value' submit lines.")
    prologue: tuple[str, ...] = Field(
        (), description="Shell lines run in the job before the worker starts (module loads, "
        "'source .venv/bin/activate').")
    python: str | None = Field(None, description="Python on the compute nodes; default: the "
                               "Python running neurovar.")
    interface: str | None = Field(None, description="Network interface of the workers (e.g. "
                                  "'ib0'); default: the one that reaches the scheduler.")
    scheduler_host: str | None = Field(
        None, description="Address the scheduler listens on (this machine's, reachable from "
        "the compute nodes); default: dask-jobqueue's choice.")
    disk: str = Field("4GB", min_length=1, description="Disk per job (HTCondor only).")
    log_directory: str | None = Field(None, description="Folder for the jobs' stdout/stderr.")
    local_directory: str | None = Field(None, description="Scratch folder of the workers on "
                                        "the compute nodes.")
    timeout: float | None = Field(
        None, gt=0, description="Seconds to wait for the first worker to start before giving "
        "up (queues can be slow); default: wait as long as it takes.")

    @field_validator("memory", "disk")
    @classmethod
    def _bytes(cls, value: str) -> str:
        from dask.utils import parse_bytes

        try:
            if parse_bytes(value) <= 0:
                raise ValueError
        except (ValueError, TypeError):
            raise ValueError("must be an amount of memory such as '4GB' or '512MiB'") from None
        return value

    @property
    def worker_processes(self) -> int:
        """Worker processes per job: ``processes``, else 1 with GPUs, else ``cores``."""
        if self.processes is not None:
            return self.processes
        return 1 if self.gpus else self.cores


def cluster_config(table: Mapping[str, Any] | ClusterConfig | None = None, **overrides: Any
                   ) -> ClusterConfig:
    """A validated :class:`ClusterConfig` from a ``[cluster]`` table, with ``overrides``
    (e.g. command-line flags; ``None`` values are ignored) on top.

    Raises
    ------
    InvalidParameterError
        One line per problem, naming the key.
    """
    if isinstance(table, ClusterConfig):
        base = table.model_dump(exclude_unset=True)
    elif table is None:
        base = {}
    elif isinstance(table, Mapping):
        base = dict(table)
    else:
        raise InvalidParameterError(
            "The 'table' parameter of cluster_config must be a mapping (the [cluster] table) or "
            f"a ClusterConfig. Got {type(table).__name__} instead.")
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = ClusterConfig.model_validate(base)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "cluster"
            if e["type"] == "extra_forbidden":
                lines.append(f"unknown key 'cluster.{key}' (valid: "
                             f"{', '.join(ClusterConfig.model_fields)})")
            else:
                lines.append(f"key 'cluster.{key}': {e['msg']}; got {e.get('input')!r}")
        raise InvalidParameterError("\n".join(lines)) from None
    if cfg.processes is not None and cfg.processes > cfg.cores:
        raise InvalidParameterError(
            f"The 'processes' parameter of the cluster must be at most 'cores' ({cfg.cores}): "
            f"each worker needs a core. Got {cfg.processes} instead.")
    if cfg.gpus and cfg.worker_processes != 1:
        raise InvalidParameterError(
            "The 'processes' parameter of the cluster must be 1 when 'gpus' > 0: the workers of "
            "one job cannot be pinned to different GPUs; submit one job per GPU (gpus = 1, "
            f"jobs = number of GPUs). Got {cfg.processes} instead.")
    return cfg


def _condor_pairs(lines: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidParameterError(
                "The 'extra_directives' parameter of an HTCondor cluster must hold 'key = value' "
                f"submit-file lines. Got {line!r} instead.")
        out[key.strip()] = value.strip()
    return out


def cluster_kwargs(cfg: ClusterConfig) -> tuple[str, dict[str, Any]]:
    """The dask-jobqueue class name and keyword arguments for ``cfg`` (its ``system`` set)."""
    if cfg.system is None:
        raise InvalidParameterError(
            "The 'system' parameter of the cluster must be one of "
            f"{', '.join(SYSTEMS)} to build a cluster. Got None instead.")
    procs = cfg.worker_processes
    worker_args: list[str] = []
    if cfg.gpus:
        worker_args += ["--resources", f"GPU={cfg.gpus}"]
    scheduler_options: dict[str, Any] = {"dashboard_address": None}
    if cfg.scheduler_host:
        scheduler_options["host"] = cfg.scheduler_host
    kw: dict[str, Any] = {
        "cores": cfg.cores,
        "processes": procs,
        "memory": cfg.memory,
        "job_name": "neurovar",
        "python": cfg.python or sys.executable,
        "worker_extra_args": worker_args,
        "job_script_prologue": list(cfg.prologue),
        "scheduler_options": scheduler_options,
        "interface": cfg.interface,
        "log_directory": cfg.log_directory,
        "local_directory": cfg.local_directory,
    }
    directives = list(cfg.extra_directives)
    if cfg.system == "slurm":
        if cfg.gpus:
            directives.insert(0, f"--gres=gpu:{cfg.gpus}")
        kw.update(queue=cfg.queue, account=cfg.account, walltime=cfg.walltime,
                  job_extra_directives=directives)
    elif cfg.system == "pbs":
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        select = f"select=1:ncpus={cfg.cores}:mem={pbs_format_bytes_ceil(parse_bytes(cfg.memory))}"
        if cfg.gpus:
            select += f":ngpus={cfg.gpus}"
        kw.update(queue=cfg.queue, account=cfg.account, walltime=cfg.walltime,
                  resource_spec=select, job_extra_directives=directives)
    else:  # htcondor: submit-file attributes; no queues, no standard wall-time attribute
        if cfg.queue:
            raise InvalidParameterError(
                "The 'queue' parameter of an HTCondor cluster must be None: HTCondor has no "
                "queues (put a site attribute such as '+JobFlavour = \"workday\"' in "
                f"extra_directives). Got {cfg.queue!r} instead.")
        extra = _condor_pairs(tuple(directives))
        if cfg.gpus:
            extra.setdefault("request_gpus", str(cfg.gpus))
        if cfg.account:
            extra.setdefault("accounting_group", cfg.account)
        kw.update(disk=cfg.disk, job_extra_directives=extra)
    return SYSTEMS[cfg.system], kw


def make_cluster(cfg: ClusterConfig):
    """A dask-jobqueue cluster for ``cfg`` with no job submitted yet (``cluster.scale`` or
    :func:`open_cluster` submits them). Close it when done."""
    import dask_jobqueue

    name, kw = cluster_kwargs(cfg)
    return getattr(dask_jobqueue, name)(**kw)


def job_script(cfg: ClusterConfig) -> str:
    """The batch script one job of ``cfg`` would submit (nothing is submitted)."""
    cluster = make_cluster(cfg)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def open_cluster(cfg: ClusterConfig, *, log=None):
    """Submit ``cfg.jobs`` jobs; return ``(client, cluster)`` once the first worker is up.

    The caller closes both (client first). ``log`` (a callable taking one line) is told what
    was submitted and when the first worker connected.

    Raises
    ------
    TimeoutError
        No worker connected within ``cfg.timeout`` seconds (the jobs are cancelled).
    RuntimeError
        The queue refused the submission (its message is kept).
    """
    import distributed

    cluster = make_cluster(cfg)
    submit = str(cluster.job_cls.submit_command).split()[0]
    if shutil.which(submit) is None:
        _close_quietly(cluster)
        raise RuntimeError(
            f"'{submit}' is not on PATH: run this on a {cfg.system} submit host (or load the "
            f"module that provides {submit}).")
    client = None
    try:
        cluster.scale(jobs=cfg.jobs)
        _wait_for_submission(cluster)
        client = distributed.Client(cluster)
        if log is not None:
            log(f"submitted {cfg.jobs} {cfg.system} job(s) of {cfg.cores} core(s), "
                f"{cfg.memory}{f', {cfg.gpus} GPU(s)' if cfg.gpus else ''} "
                f"({cfg.worker_processes} worker(s) each); scheduler at "
                f"{cluster.scheduler_address}; waiting for the first worker...")
        try:
            client.wait_for_workers(1, timeout=cfg.timeout)
        except (TimeoutError, distributed.TimeoutError):
            raise TimeoutError(
                f"no worker of the {cfg.system} jobs connected within {cfg.timeout:g} s; the "
                "jobs were cancelled. Check the queue (and the jobs' logs"
                f"{f' in {cfg.log_directory}' if cfg.log_directory else ''})."
            ) from None
        if log is not None:
            log("first worker connected; running the cells")
        return client, cluster
    except BaseException:
        if client is not None:
            client.close()
        _close_quietly(cluster)
        raise


def _wait_for_submission(cluster) -> None:
    """Wait until the queue has answered every submission; raise its refusal as one message.

    dask-jobqueue submits in the background and only logs a refused job, which would leave
    this process waiting for a worker that never comes.
    """
    correct = getattr(cluster, "_correct_state", None)
    if correct is None:  # pragma: no cover - another distributed version: skip the check
        return
    submit = str(cluster.job_cls.submit_command).split()[0]
    try:
        cluster.sync(correct)  # the pending submissions, or a no-op pass once they are done
    except RuntimeError as err:
        text = str(err)
        stderr = text.split("stderr:", 1)[1].strip() if "stderr:" in text else text
        raise RuntimeError(
            f"{submit} refused the job: " + (" ".join(stderr.split()) or text)) from None
    failed = [name for name, job in cluster.workers.items()
              if getattr(job, "job_id", "") is None]
    if failed:
        raise RuntimeError(
            f"{submit} refused {len(failed)} of {len(cluster.workers)} job(s) (its message is "
            "logged above); check the account, queue, walltime and memory asked for.")


def _close_quietly(cluster) -> None:
    """Close a cluster whose jobs may have failed to submit (distributed asserts on those)."""
    with contextlib.suppress(Exception):
        cluster.close()
