"""``python -m neurovar.cli ...``: the ``neurovar`` command."""

import sys

from ._main import main

sys.exit(main())
