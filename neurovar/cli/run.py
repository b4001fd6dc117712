"""``neurovar run CONFIG --out DIR``: run (or resume) an experiment config, then its report.

Also the options and the runner ``neurovar demo`` shares (:mod:`neurovar.cli.demo`), the queue
options (``--cluster`` and friends, dask-jobqueue) and their checks. Only the standard library
is imported here: the experiment is imported inside the functions that run it.
"""

from __future__ import annotations

import argparse
import sys

from ._common import error

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``neurovar run``."""
    p.add_argument("config", help="TOML file or shipped config name")
    add_run_options(p, default_out=None)
    p.set_defaults(_run=run)


def add_run_options(p: argparse.ArgumentParser, *, default_out: str | None) -> None:
    p.add_argument("--out", default=default_out, required=default_out is None,
                   help="results folder" + (f" (default: ./{default_out})" if default_out else ""))
    p.add_argument("--overwrite", action="store_true",
                   help="replace a folder that holds a different run (kept until the new one "
                        "finishes)")
    p.add_argument("--scheduler", default=None,
                   help="run cells on dask.distributed: 'local:N' (a LocalCluster with N "
                        "workers) or a scheduler address 'tcp://host:port' (default: in-process)")
    p.add_argument("--write", choices=("worker", "client"), default="worker",
                   help="with --scheduler: workers write their cells into --out (a shared "
                        "filesystem, default) or return them to this process, which writes them")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_cluster_options(p)


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    """``--cluster`` and the queue's options; each overrides the config's ``[cluster]`` key."""
    g = p.add_argument_group(
        "HPC queue (dask-jobqueue)",
        "Submit batch jobs running dask workers and run the cells on them. Every option "
        "overrides the same key of the config's [cluster] table (cluster.KEY).")
    g.add_argument("--cluster", dest="cluster_system", choices=("slurm", "pbs", "htcondor"),
                   default=None, help="queue system to submit to (cluster.system)")
    g.add_argument("--jobs", type=int, default=None, metavar="N", help="batch jobs to submit (default 1)")
    g.add_argument("--cores", type=int, default=None, metavar="N", help="CPU cores per job (default 1)")
    g.add_argument("--processes", type=int, default=None, metavar="N",
                   help="dask workers per job (default: one per core; 1 with --gpus)")
    g.add_argument("--memory", default=None, help="memory per job, e.g. 16GB (default 4GB)")
    g.add_argument("--walltime", default=None, help="job time limit HH:MM:SS (default 01:00:00)")
    g.add_argument("--account", default=None, help="account the jobs are charged to")
    g.add_argument("--queue", default=None, help="queue (PBS) or partition (SLURM)")
    g.add_argument("--gpus", type=int, default=None, metavar="N",
                   help="GPUs per job; the job's worker offers dask resource GPU=N")
    g.add_argument("--job-directive", dest="extra_directives", action="append", default=None,
                   metavar="LINE", help="extra job directive without its prefix, e.g. "
                   "--job-directive=--constraint=a100 (repeatable)")
    g.add_argument("--job-prologue", dest="prologue", action="append", default=None,
                   metavar="LINE", help="shell line run before the worker starts, e.g. "
                   "'source .venv/bin/activate' (repeatable)")
    g.add_argument("--cluster-python", dest="python", default=None, metavar="PATH",
                   help="Python on the compute nodes (default: this one)")
    g.add_argument("--interface", default=None, help="network interface of the workers")
    g.add_argument("--scheduler-host", dest="scheduler_host", default=None, metavar="HOST",
                   help="address the scheduler listens on, reachable from the compute nodes")
    g.add_argument("--job-log-dir", dest="log_directory", default=None, metavar="DIR",
                   help="folder for the jobs' output and error files")
    g.add_argument("--cluster-timeout", dest="timeout", type=float, default=None,
                   metavar="SECONDS",
                   help="seconds to wait for the first worker (default: as long as it takes)")
    g.add_argument("--print-job-script", action="store_true",
                   help="print the job script one job would submit, then exit (nothing runs)")


#: ClusterConfig keys set by the flags above (argparse dest -> key)
_CLUSTER_FLAGS = ("jobs", "cores", "processes", "memory", "walltime", "account", "queue",
                  "gpus", "extra_directives", "prologue", "python", "interface",
                  "scheduler_host", "log_directory", "timeout")


def _load_experiment(args: argparse.Namespace):
    """(config, [cluster] table or None); a ConfigError propagates.

    Until :class:`~neurovar.experiment.config.ExperimentConfig` has a ``cluster`` field, the
    ``[cluster]`` table is taken out of the TOML here and the rest validated as usual.
    """
    from pathlib import Path

    from ..experiment import ExperimentConfig, load_config

    source = "demo" if args.command == "demo" else args.config
    if "cluster" in ExperimentConfig.model_fields:
        config = load_config(source)
        table = config.cluster
        return config, (table.model_dump(exclude_unset=True) if table is not None else None)
    path = Path(source).expanduser()
    if path.is_file():
        from ..experiment.config import ConfigError

        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError([f"malformed TOML: {err}"], str(path)) from None
        if "cluster" in data:
            from ..experiment import config as config_module

            table = data.pop("cluster")
            if not isinstance(table, dict):
                raise ConfigError(["key 'cluster' must be a table ([cluster])"], str(path))
            parse = getattr(config_module, "parse_config", None)
            config = parse(data, source=str(path)) if parse else load_config(data)
            return config, table
    return load_config(source), None


def _same_run(out: str, config) -> bool:
    """Whether ``out`` holds a run of this very config (so that it resumes)."""
    import json
    from pathlib import Path

    from ..experiment import config_hash
    from ..experiment.runner import RUN_FILE

    try:
        marker = json.loads((Path(out) / RUN_FILE).read_text())
        return marker["config_hash"] == config_hash(config)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _refusal(out: str, config, overwrite: bool) -> str | None:
    """Why ``run`` would refuse ``out`` (read-only; checked before submitting jobs)."""
    from pathlib import Path

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        return f"The results folder {out!r} is a file, not a folder."
    if overwrite or not folder.is_dir() or not any(folder.iterdir()) or _same_run(out, config):
        return None
    return (f"The results folder {out!r} holds another run or other files; pass --overwrite "
            "or choose another folder. Nothing was submitted.")


def run(args: argparse.Namespace) -> int:
    """Run ``neurovar run`` (or ``neurovar demo``) with parsed ``args``; the exit status."""
    from ..experiment import ConfigError
    from ..experiment.executor import parse_scheduler

    try:
        scheduler = parse_scheduler(args.scheduler)
    except ValueError as err:
        return error(args.command, str(err).splitlines()[0])
    try:
        config, table = _load_experiment(args)
    except ConfigError as err:
        for problem in err.problems:
            print(f"neurovar {args.command}: {err.source}: {problem}", file=sys.stderr)
        return 2
    cluster = None
    flags = {k: getattr(args, k) for k in _CLUSTER_FLAGS}
    if args.cluster_system or table or any(v is not None for v in flags.values()):
        from ..experiment.cluster import cluster_config

        try:
            cluster = cluster_config(table, system=args.cluster_system, **{
                k: (tuple(v) if isinstance(v, list) else v) for k, v in flags.items()})
        except ValueError as err:
            for line in str(err).splitlines():
                print(f"neurovar {args.command}: cluster: {line}", file=sys.stderr)
            return 2
        if cluster.system is None:
            given = sorted(k for k, v in flags.items() if v is not None)
            if given:
                return error(args.command, f"the queue options ({', '.join(given)}) need "
                              "--cluster slurm|pbs|htcondor (or cluster.system in the config)")
            cluster = None
    if args.print_job_script:
        if cluster is None:
            return error(args.command, "--print-job-script needs --cluster slurm|pbs|htcondor")
        from ..experiment.cluster import job_script

        try:
            print(job_script(cluster))
        except ValueError as err:
            return error(args.command, str(err).splitlines()[0])
        return 0
    if cluster is not None and scheduler is not None:
        return error(args.command, "--scheduler and --cluster are exclusive: the cluster "
                      "starts its own scheduler")
    if cluster is not None:
        refusal = _refusal(args.out, config, args.overwrite)
        if refusal:
            return error(args.command, refusal)
        return _run_on_cluster(args, config, cluster)
    return _run_and_report(args, config, scheduler)


def _run_on_cluster(args: argparse.Namespace, config, cluster) -> int:
    from ..experiment import plan
    from ..experiment.cluster import open_cluster
    from ..experiment.store import done_cells

    done = set(done_cells(args.out)) if _same_run(args.out, config) else set()
    if not {s.cell_id for s in plan(config)} - done:  # resumed and finished: nothing to submit
        return _run_and_report(args, config, None)

    def log(line: str) -> None:
        print(f"neurovar {args.command}: {line}", file=sys.stderr)

    try:
        client, dask_cluster = open_cluster(cluster, log=log)
    except (TimeoutError, RuntimeError, ValueError, OSError) as err:
        return error(args.command, str(err).splitlines()[0])
    try:
        return _run_and_report(args, config, client)
    finally:
        client.close()
        dask_cluster.close()  # cancels the jobs


def _interrupted(command: str) -> int:
    """Ctrl-C during a run or its report: the finished cells are on disk; exit code 130."""
    print(f"neurovar {command}: interrupted; finished cells are kept, run the same "
          "command again to resume.", file=sys.stderr)
    return 130


def _run_and_report(args: argparse.Namespace, config, scheduler) -> int:
    from ..experiment import ConfigError
    from ..experiment import run as run_grid
    from ..experiment.report import write_report

    try:
        outcome = run_grid(config, args.out, overwrite=args.overwrite,
                      progress=not args.no_progress, scheduler=scheduler, write=args.write)
    except ConfigError as err:
        for line in err.problems:
            print(f"neurovar {args.command}: error: {line}", file=sys.stderr)
        return 2
    # a damaged cell found while resuming is a ValueError naming the file
    except (FileExistsError, NotADirectoryError, PermissionError, ValueError) as err:
        return error(args.command, str(err).splitlines()[0])
    except OSError as err:
        return error(args.command, f"cannot write results to {args.out!r}: {err}")
    except KeyboardInterrupt:
        return _interrupted(args.command)
    try:
        if outcome.results is not None:
            write_report(args.out, results=outcome.results)
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as err:
        return error(args.command, f"the grid finished and its results are saved in "
                      f"{args.out}/, but the report failed: {str(err).splitlines()[0]}; "
                      f"run 'neurovar report {args.out}' again")
    except OSError as err:
        return error(args.command, f"cannot write results to {args.out!r}: {err}")
    except KeyboardInterrupt:
        return _interrupted(args.command)
    n = len(outcome.completed) + len(outcome.skipped) + len(outcome.failed)
    print(f"{len(outcome.completed)} cells computed, {len(outcome.skipped)} resumed, "
          f"{len(outcome.failed)} failed of {n}, in {outcome.seconds:.0f} s; results in "
          f"{args.out}/ (see {args.out}/report.md)")
    if outcome.failed:
        print(f"failed cells (tracebacks in {args.out}/failed_cells.txt; run again to retry "
              "them):", file=sys.stderr)
        for text in outcome.failed.values():
            print(f"  {text.splitlines()[0]}", file=sys.stderr)
        if outcome.backup is not None:
            print(f"the replaced folder is kept at {outcome.backup}", file=sys.stderr)
        return 1
    return 0
