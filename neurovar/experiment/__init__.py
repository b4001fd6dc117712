"""The structured-noise robustness experiment: sources x targets x controls x regimes x seeds.

Does noise with covariance fitted from perturbations make a network robust, which structure
transfers, and why (Preble, Venkatesh, Mihalas & Harris 2026)? A config
(:class:`ExperimentConfig`, from TOML with :func:`load_config`) defines a grid of cells
(:func:`plan`); each cell (:func:`compute_cell`) trains/injects/evaluates one network and is
written atomically under ``DIR/cells/``; :func:`run` runs or resumes the grid and assembles
``results.nc`` / ``results.csv``; :func:`transfer_matrix`, :func:`claims`,
:func:`masking_diagnostics` and :func:`link_model` say what the numbers mean. Figures and
``report.md`` come from :func:`neurovar.experiment.report.write_report` (``neurovar report DIR``).

Examples
--------
>>> from neurovar import experiment                        # doctest: +SKIP
>>> outcome = experiment.run("demo", "results")            # doctest: +SKIP
>>> tm = experiment.transfer_matrix(outcome.results, outcome.config)  # doctest: +SKIP
"""

from __future__ import annotations

from .analysis import (
    claims,
    clean_cost,
    is_diagonal,
    link_model,
    masking_diagnostics,
    transfer_matrix,
)
from .cell import CellResult, compute_cell, run_cell
from .config import (
    CONTROLS,
    REGIMES,
    ConfigError,
    ExperimentConfig,
    config_hash,
    load_config,
    shipped_configs,
)
from .grid import CellSpec, plan, stream_seed
from .runner import RunOutcome, collect, run
from .store import assemble, done_cells, is_done, read_cell, results_table, write_cell
from .store import to_tidy as to_tidy  # deprecated name of results_table (warns)

__all__ = [
    "ExperimentConfig",
    "ConfigError",
    "load_config",
    "shipped_configs",
    "config_hash",
    "REGIMES",
    "CONTROLS",
    "CellSpec",
    "plan",
    "stream_seed",
    "CellResult",
    "compute_cell",
    "run_cell",
    "write_cell",
    "read_cell",
    "is_done",
    "done_cells",
    "assemble",
    "results_table",
    "run",
    "collect",
    "RunOutcome",
    "transfer_matrix",
    "claims",
    "clean_cost",
    "masking_diagnostics",
    "link_model",
    "is_diagonal",
]
