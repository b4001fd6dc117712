"""The main job, ``neurovar demo``: the structured-noise robustness experiment on digits.

``neurovar demo --out DIR`` runs the shipped ``demo`` config (``neurovar/configs/demo.toml``:
scikit-learn's digits, :class:`~neurovar.models.SmallCNN`, every condition, the three regimes,
two adversarial and two naturalistic sources, three seeds) with
:func:`neurovar.experiment.run` and writes figures and ``report.md`` with
:func:`neurovar.experiment.report.write_report`. Run again into the same folder, it resumes.
:func:`run_demo` does the same from Python. Only the standard library is imported here: the
experiment is imported when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import run as run_command

if TYPE_CHECKING:
    from ..experiment import RunOutcome

__all__ = ["DEMO_CONFIG", "run_demo", "add_arguments", "run"]

#: Name of the shipped config the demo runs.
DEMO_CONFIG = "demo"


def run_demo(
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    scheduler: Any = None,
    write: str = "worker",
    config: Any = DEMO_CONFIG,
) -> RunOutcome:
    """Run (or resume) the demo experiment into ``out_dir`` and write its report.

    Parameters
    ----------
    out_dir
        Results folder (resumed when it holds a run of the same config).
    overwrite
        Replace a folder holding something else (moved aside until the run finishes).
    progress
        Progress bars.
    scheduler
        ``None`` (in-process), ``"local:N"`` or a dask scheduler address.
    config
        The config to run instead of the shipped demo (a path, name or mapping).

    Returns
    -------
    RunOutcome
        Cells completed, skipped (resumed) and failed; ``report.md`` is in ``out_dir``.
    """
    from ..experiment import load_config
    from ..experiment import run as run_grid
    from ..experiment.report import write_report

    outcome = run_grid(load_config(config), out_dir, overwrite=overwrite, progress=progress,
                  scheduler=scheduler, write=write)
    if outcome.results is not None:
        write_report(out_dir, results=outcome.results)
    return outcome


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``neurovar demo``: those of ``neurovar run`` without the config."""
    run_command.add_run_options(p, default_out="results")
    p.set_defaults(_run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``neurovar demo`` with parsed ``args`` (the shipped config); the exit status."""
    return run_command.run(args)
