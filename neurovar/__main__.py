"""``python -m neurovar ...``: the ``neurovar`` command (see :mod:`neurovar.cli`)."""

import sys

from .cli import main

sys.exit(main())
