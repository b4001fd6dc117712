"""Deprecated: the demo moved to :mod:`neurovar.cli.demo` (the ``neurovar demo`` command).

``from neurovar.demo import run_demo, DEMO_CONFIG`` keeps working for one release, with a
:class:`DeprecationWarning`; import them from :mod:`neurovar.cli.demo`.
"""

from __future__ import annotations

import warnings

from .cli.demo import DEMO_CONFIG, run_demo

__all__ = ["DEMO_CONFIG", "run_demo"]

warnings.warn(
    "neurovar.demo moved to neurovar.cli.demo; import run_demo and DEMO_CONFIG from there "
    "(the old path is removed in the next release).",
    DeprecationWarning,
    stacklevel=2,
)
