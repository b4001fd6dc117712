"""Figures and ``report.md`` of an experiment folder, rebuilt from its saved cells.

:func:`write_report` (``neurovar report DIR``) reads ``DIR/experiment.json`` and ``DIR/cells``,
re-assembles ``results.nc`` / ``results.csv``, computes the transfer matrix, the masking
diagnostics, the link model and the claims (:mod:`neurovar.experiment.analysis`,
:mod:`neurovar.experiment.reproduction`), and writes ``transfer_matrix.nc``,
``figures/*.png`` and ``report.md``, null results included.

Rooms: ``_write`` (the folder and the markdown), ``_figures`` (the grid's general figures),
``_reproduction`` (the paper-reproduction section and its figures). Figures are pyplot-free and
drawn with :mod:`neurovar.plot`'s shared helpers. Formerly ``neurovar.report`` and
``neurovar.report_reproduction`` (those paths re-export, with a DeprecationWarning).
"""

from ._figures import (
    plot_alignment_gain,
    plot_clean_cost,
    plot_masking,
    plot_robustness_curves,
    plot_transfer_matrix,
)
from ._reproduction import (
    plot_magnitude_sweep,
    plot_positive_controls,
    plot_protocol_curves,
    plot_robustness_vs_clean,
    plot_source_target_heatmap,
    plot_target_curves,
    reproduction_section,
)
from ._write import report_main, write_report

__all__ = [
    "write_report",
    "report_main",
    "reproduction_section",
    "plot_robustness_curves",
    "plot_transfer_matrix",
    "plot_alignment_gain",
    "plot_clean_cost",
    "plot_masking",
    "plot_protocol_curves",
    "plot_target_curves",
    "plot_source_target_heatmap",
    "plot_positive_controls",
    "plot_magnitude_sweep",
    "plot_robustness_vs_clean",
]

for _name in __all__:  # API tables, docs and pickles see the package path
    globals()[_name].__module__ = __name__
del _name
