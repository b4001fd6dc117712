"""The ``neurovar`` command line: ``demo`` (the main job), ``run``, ``report`` and ``stats``.

One module per command (:mod:`neurovar.cli.demo`, :mod:`neurovar.cli.run`,
:mod:`neurovar.cli.report`, :mod:`neurovar.cli.stats`); :func:`main` is the entry point of the
``neurovar`` script, ``python -m neurovar`` and ``python -m neurovar.cli``. Importing this
package imports only the standard library (the commands import what they need when they run).
"""

from __future__ import annotations

from ._main import _COMMANDS as _COMMANDS  # the command table (tests read it)
from ._main import build_parser, main

__all__ = ["main", "build_parser"]
