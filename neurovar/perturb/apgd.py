"""Deprecated path: APGD lives in :mod:`neurovar.perturb.attacks.apgd` (one file per attack).

Kept for one release; importing it warns.
"""

import warnings

from neurovar.perturb.attacks.apgd import APGD, __all__, apgd_checkpoints  # noqa: F401

warnings.warn("neurovar.perturb.apgd moved to neurovar.perturb.attacks.apgd; the old path will "
              "be removed in the next release", DeprecationWarning, stacklevel=2)
