"""The ``neurovar`` command: ``neurovar demo`` (the main job) and ``neurovar stats``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurovar",
        description="Treat ANN units like cortical neurons: variability, structured noise, robustness.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"neurovar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train the small CNN on digits, record noisy trials, report")
    demo.add_argument("--out", default="results", help="results folder (default: ./results)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs", type=int, default=15)
    demo.add_argument("--n-trials", type=int, default=50)
    demo.add_argument("--n-stimuli", type=int, default=200)
    demo.add_argument("--dropout", type=float, default=0.3)
    demo.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if available)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    demo.add_argument("--no-progress", action="store_true")

    try:
        from .inference import _cli as stats_cli
    except ImportError:  # pragma: no cover - inference is part of the package
        stats_cli = None
    if stats_cli is not None:
        stats = sub.add_parser(
            "stats", help="compare groups in a results table (permutation tests)"
        )
        stats_cli.add_arguments(stats)
        stats.set_defaults(_run=stats_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import DemoConfig, run_demo

        for name in ("epochs", "n_trials", "n_stimuli"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        cfg = DemoConfig(
            seed=args.seed,
            epochs=args.epochs,
            n_trials=args.n_trials,
            n_stimuli=args.n_stimuli,
            dropout=args.dropout,
            device=args.device,
        )
        try:
            out = run_demo(args.out, cfg, progress=not args.no_progress, overwrite=args.overwrite)
        except (FileExistsError, ValueError) as err:
            print(f"neurovar demo: error: {err}", file=sys.stderr)
            return 2
        print(f"results written to {out}/ (see {out}/report.md)")
        return 0
    return int(args._run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
