"""``neurovar report RESULTS``: rebuild the figures and ``report.md`` of a results folder, or
(``--robustbench``) write RobustBench model_info JSONs. Only the standard library is imported
here; the report's modules are imported when it runs."""

from __future__ import annotations

import argparse

from ._common import error

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``neurovar report``."""
    p.add_argument("results", help="results folder of 'neurovar run' or 'neurovar demo'")
    p.add_argument("--robustbench", nargs="?", const="", default=None, metavar="OUT",
                   help="instead of the report, write RobustBench model_info JSONs (one per "
                        "model and threat model: Linf, L2, corruptions) and the unaggregated "
                        "corruption table into OUT (default: RESULTS/robustbench)")
    p.set_defaults(_run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``neurovar report`` with parsed ``args``; the exit status."""
    if args.robustbench is not None:
        from ..experiment.robustbench import export_robustbench

        try:
            paths = export_robustbench(args.results, args.robustbench or None)
        except (FileNotFoundError, ValueError, OSError) as err:
            return error("report", str(err).splitlines()[0])
        folder = args.robustbench or f"{args.results}/robustbench"
        print(f"{len(paths)} RobustBench files written to {folder}/")
        return 0
    from ..experiment.report import report_main

    return report_main(args.results)
