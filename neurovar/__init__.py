"""neurovar: treat the units of an artificial neural network like neurons recorded in cortex.

Subpackages (import what you need; the ``da.nv`` accessor is registered as soon as both
``neurovar`` and ``xarray`` are imported):

- :mod:`neurovar.record`: repeated-trial recording of activations into xarray
- :mod:`neurovar.stats`: Fano factors, noise correlations, covariance, alignment, information
- :mod:`neurovar.noise`: structured noise models, injection, fitting from perturbations
- :mod:`neurovar.perturb`: adversarial attacks (EOT-aware) and naturalistic corruptions
- :mod:`neurovar.inference`: permutation tests, bootstrap CIs, mixed models
- :mod:`neurovar.cortex`: real cortical recordings and ANN-vs-cortex comparison
- :mod:`neurovar.datasets`, :mod:`neurovar.models`: data and small reference networks
- :mod:`neurovar.plot`: matplotlib figures for robustness, variability, correlations, spectra

``import neurovar`` itself imports nothing heavy (no torch, xarray or scipy): every name below
is loaded on first use, so the ``neurovar`` command answers ``--help`` at once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from ._version import __version__

#: Subpackages and modules loaded on first attribute access.
_LAZY = (
    "dims", "stats", "noise", "perturb", "inference", "cortex", "datasets", "models", "record",
    "demo", "plot",
)
#: Functions re-exported from a module, loaded on first access.
_LAZY_NAMES = {
    "record_activations": "record",
    "save_recording": "record",
    "load_recording": "record",
}

__all__ = [
    "__version__",
    "dims",
    "stats",
    "record_activations",
    "save_recording",
    "load_recording",
    *(m for m in _LAZY if m not in ("dims", "stats")),
]


def __getattr__(name: str):
    """Import the subpackages and re-exported functions on first use."""
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'neurovar' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# --------------------------------------------------------------------------------------------
# the ``.nv`` accessor: registered by neurovar.stats, which needs xarray. ``import neurovar``
# must stay light, so when xarray is not imported yet, a one-shot import hook registers the
# accessor right after xarray has been imported (by the user or by neurovar itself).


def _register_accessor() -> None:
    importlib.import_module(f"{__name__}.stats")  # its import registers ``.nv``


class _AfterXarrayLoader(importlib.abc.Loader):
    """Runs xarray's own loader, then registers the accessor."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        # xarray sees its own loader (importlib.resources and friends ask for it)
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _register_accessor()


class _AccessorHook(importlib.abc.MetaPathFinder):
    """Meta-path finder that only wraps the loader of the top-level ``xarray`` import, once."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "xarray":
            return None
        _remove_hook()
        spec = importlib.util.find_spec("xarray")  # the other finders, this one removed
        if spec is not None and spec.loader is not None:
            spec.loader = _AfterXarrayLoader(spec.loader)
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AccessorHook)]


if "xarray" in sys.modules:
    _register_accessor()
elif not any(isinstance(f, _AccessorHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _AccessorHook())
