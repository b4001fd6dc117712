"""neurovar: treat the units of an artificial neural network like neurons recorded in cortex.

Subpackages (import what you need; ``import neurovar`` also registers the ``da.nv`` accessor):

- :mod:`neurovar.record`: repeated-trial recording of activations into xarray
- :mod:`neurovar.stats`: Fano factors, noise correlations, covariance, alignment, information
- :mod:`neurovar.noise`: structured noise models, injection, fitting from perturbations
- :mod:`neurovar.perturb`: adversarial attacks (EOT-aware) and naturalistic corruptions
- :mod:`neurovar.inference`: permutation tests, bootstrap CIs, mixed models
- :mod:`neurovar.cortex`: real cortical recordings and ANN-vs-cortex comparison
- :mod:`neurovar.datasets`, :mod:`neurovar.models`: data and small reference networks
- :mod:`neurovar.plot`: matplotlib figures for robustness, variability, correlations, spectra
"""

from __future__ import annotations

from . import dims, stats  # noqa: E402  (stats registers the .nv accessor)
from ._version import __version__  # noqa: E402
from .record import load_recording, record_activations, save_recording  # noqa: E402

_LAZY = ("noise", "perturb", "inference", "cortex", "datasets", "models", "record", "demo", "plot")

__all__ = [
    "__version__",
    "dims",
    "stats",
    "record_activations",
    "save_recording",
    "load_recording",
    *_LAZY,
]


def __getattr__(name: str):
    """Import the heavier subpackages on first use (``neurovar.noise``, ``neurovar.cortex``...)."""
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'neurovar' has no attribute {name!r}")
