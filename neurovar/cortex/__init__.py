"""Cortical recordings with repeated trials, published reference values, ANN-vs-cortex comparison.

- Loaders return the package's data model, ``("trial", "stimulus", "unit")`` DataArrays:
  :func:`load_cowley_v4` (awake macaque V4, natural images, with
  :func:`load_cowley_v4_images`), :func:`load_semedo_v1v2` (anesthetized V1/V2 residuals),
  :func:`load_nwb` (any NWB file with units and stimulus intervals) and :func:`from_array`.
- :func:`fetch` downloads public files once into a checksum-verified cache.
- :func:`load_reference_values` returns published Fano factors and noise correlations.
- :func:`compare` runs the same statistics on ANN layers and cortical areas;
  :func:`neurovar.plot.plot_comparison` draws them side by side (the figure lives in the
  plot module at the roof; this package never imports it).
"""

from neurovar.cortex.cache import (
    REGISTRY,
    data_home_candidates,
    data_home_path,
    fetch,
    find_data_home,
)
from neurovar.cortex.compare import CI_METHODS, compare
from neurovar.cortex.loaders import (
    from_array,
    load_cowley_v4,
    load_cowley_v4_images,
    load_semedo_v1v2,
    require_counts,
)
from neurovar.cortex.nwb import counts_from_nwbfile, load_nwb
from neurovar.cortex.reference import count_window_ms, load_reference_values, match_reference

__all__ = [
    "CI_METHODS",
    "REGISTRY",
    "compare",
    "count_window_ms",
    "counts_from_nwbfile",
    "data_home_candidates",
    "data_home_path",
    "fetch",
    "find_data_home",
    "from_array",
    "load_cowley_v4",
    "load_cowley_v4_images",
    "load_nwb",
    "load_reference_values",
    "load_semedo_v1v2",
    "match_reference",
    "require_counts",
]
