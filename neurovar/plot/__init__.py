"""Matplotlib figures of neurovar's results: robustness curves, variability and corruptions.

Every function takes neurovar's xarray results (or image tensors) and returns a
:class:`matplotlib.figure.Figure`; nothing calls ``plt.show()``. Without ``ax=`` a new figure
is built with :class:`matplotlib.figure.Figure` directly, not through :mod:`matplotlib.pyplot`,
so it works under any backend (Agg included), is never registered with pyplot's global figure
list (no "too many open figures" warnings in loops) and is displayed in Jupyter as a cell's
value or saved with ``fig.savefig(path)``. With ``ax=`` the function draws into that existing
axes (e.g. one panel of ``plt.subplots``) and returns its figure.

Artists that tests and users may want to find again carry a ``gid``
(``artist.get_gid()``): ``"attack:<name>"``, ``"worst_case"``, ``"worst_case_ci"``,
``"clean"``, ``"chance"``, ``"poisson"``, ``"mean"``, ``"spectrum"``, ``"panel:<name>:<severity>"``;
in :func:`plot_comparison` ``"reference:<area>"`` (published band of that area) and
``"reference_note"`` (which study each band comes from).
"""

from __future__ import annotations

from .corruptions import plot_corruptions
from .cortex import COMPARISON_DETAIL_PANELS, plot_comparison
from .noise import plot_noise_correlations, plot_spectrum
from .robustness import plot_robustness, plot_robustness_comparison
from .variability import plot_variance_vs_mean

__all__ = [
    "plot_robustness",
    "plot_robustness_comparison",
    "plot_variance_vs_mean",
    "plot_noise_correlations",
    "plot_spectrum",
    "plot_corruptions",
    "plot_comparison",
    "COMPARISON_DETAIL_PANELS",
]

# the public names are documented under the package, not its topic modules
for _f in (
    plot_robustness,
    plot_robustness_comparison,
    plot_variance_vs_mean,
    plot_noise_correlations,
    plot_spectrum,
    plot_corruptions,
    plot_comparison,
):
    _f.__module__ = __name__
del _f
