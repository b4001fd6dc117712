"""Deprecated path: the experiment's report lives in :mod:`neurovar.experiment.report`.

Kept for one release; importing it warns.
"""

import warnings

from neurovar.experiment.report import *  # noqa: F401,F403
from neurovar.experiment.report import __all__  # noqa: F401

warnings.warn("neurovar.report moved to neurovar.experiment.report; the old path will be "
              "removed in the next release", DeprecationWarning, stacklevel=2)
