"""The main job, ``neurovar demo``: the structured-noise robustness experiment on digits.

``neurovar demo --out DIR`` runs the shipped ``demo`` config (``neurovar/configs/demo.toml``:
scikit-learn's digits, :class:`~neurovar.models.SmallCNN`, every condition, the three regimes,
two adversarial and two naturalistic sources, three seeds) with
:func:`neurovar.experiment.run` and writes figures and ``report.md`` with
:func:`neurovar.report.write_report`. Run again into the same folder, it resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .experiment import RunOutcome, load_config, run
from .report import write_report

__all__ = ["DEMO_CONFIG", "run_demo"]

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
    outcome = run(load_config(config), out_dir, overwrite=overwrite, progress=progress,
                  scheduler=scheduler, write=write)
    if outcome.results is not None:
        write_report(out_dir, results=outcome.results)
    return outcome
