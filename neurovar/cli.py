"""The ``neurovar`` command: ``demo`` (the main job), ``run``, ``report`` and ``stats``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# Only the standard library and the package version at import time: ``neurovar --help`` and
# ``neurovar CMD --help`` must not pay for torch, xarray or scipy. Everything else is imported
# inside the function that needs it.
from ._version import __version__

__all__ = ["main", "build_parser"]


def _add_run_options(p: argparse.ArgumentParser, *, default_out: str | None) -> None:
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


def _add_demo(p: argparse.ArgumentParser) -> None:
    _add_run_options(p, default_out="results")


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML file or shipped config name")
    _add_run_options(p, default_out=None)


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="results folder of 'neurovar run' or 'neurovar demo'")


def _add_stats(p: argparse.ArgumentParser) -> None:
    from .inference import _cli as stats_cli  # scipy, statsmodels, xarray: only when asked

    stats_cli.add_arguments(p)
    p.set_defaults(_run=stats_cli.run)


#: name -> (one-line help, description or None, function adding the command's options)
_COMMANDS: dict[str, tuple[str, str | None, Callable[[argparse.ArgumentParser], None]]] = {
    "demo": (
        "the structured-noise robustness experiment on digits (about 5 min on 2 CPUs)",
        "Run (or resume) the shipped 'demo' experiment: SmallCNN on scikit-learn's digits, "
        "every condition, three regimes, 2 adversarial + 2 naturalistic sources, 3 seeds; "
        "writes results, figures and report.md.",
        _add_demo,
    ),
    "run": (
        "run (or resume) an experiment config",
        "Run the grid of CONFIG (a TOML file or the name of a shipped config: demo, "
        "cifar10-resnet18) into --out; started again with the same --out it resumes where it "
        "stopped.",
        _add_run,
    ),
    "report": ("rebuild figures and report.md of a results folder", None, _add_report),
    "stats": ("compare groups in a results table (permutation tests)", None, _add_stats),
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), if known.

    The top-level options (``--help``, ``--version``) take no value, so the first word that
    does not start with ``-`` is the subcommand.
    """
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in _COMMANDS else None
    return None


def build_parser(command: str | None = None, *, all_commands: bool = True) -> argparse.ArgumentParser:
    """The ``neurovar`` argument parser.

    Parameters
    ----------
    command
        Populate the options of this subcommand only (with ``all_commands=False``).
    all_commands
        Populate the options of every subcommand (the default). :func:`main` passes
        ``False`` with the subcommand it was given, so that ``neurovar --help`` and
        ``neurovar run --help`` import neither torch nor the statistics stack.
    """
    parser = argparse.ArgumentParser(
        prog="neurovar",
        description="Treat ANN units like cortical neurons: variability, structured noise, robustness.",
    )
    parser.add_argument("--version", action="version", version=f"neurovar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_line, description, add_options) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_line, description=description)
        if all_commands or name == command:
            add_options(p)
    return parser


def _error(command: str, message: str) -> int:
    print(f"neurovar {command}: error: {message}", file=sys.stderr)
    return 2


def _run_experiment(args: argparse.Namespace) -> int:
    from .experiment import ConfigError, load_config, run
    from .experiment.executor import parse_scheduler
    from .report import write_report

    try:
        scheduler = parse_scheduler(args.scheduler)
    except ValueError as err:
        return _error(args.command, str(err).splitlines()[0])
    try:
        config = load_config("demo" if args.command == "demo" else args.config)
    except ConfigError as err:
        for problem in err.problems:
            print(f"neurovar {args.command}: {err.source}: {problem}", file=sys.stderr)
        return 2
    try:
        outcome = run(config, args.out, overwrite=args.overwrite,
                      progress=not args.no_progress, scheduler=scheduler, write=args.write)
        if outcome.results is not None:
            write_report(args.out, results=outcome.results)
    except (FileExistsError, NotADirectoryError, PermissionError) as err:
        return _error(args.command, str(err).splitlines()[0])
    except OSError as err:
        return _error(args.command, f"cannot write results to {args.out!r}: {err}")
    except KeyboardInterrupt:
        print(f"neurovar {args.command}: interrupted; finished cells are kept, run the same "
              "command again to resume.", file=sys.stderr)
        return 130
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser(command, all_commands=False)
    args = parser.parse_args(argv)
    if args.command in ("demo", "run"):
        return _run_experiment(args)
    if args.command == "report":
        from .report import write_report

        try:
            path = write_report(args.results)
        except (FileNotFoundError, ValueError) as err:
            return _error("report", str(err).splitlines()[0])
        print(f"report written to {path}")
        return 0
    return int(args._run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
