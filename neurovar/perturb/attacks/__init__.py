"""Adversarial attacks that attack a stochastic network *as* a stochastic network.

One file per attack on a small base, as torchattacks does: :class:`Attack` (``_base``: checks,
device, RNG and model-state handling around ``_perturb``) with the steps every attack shares
(``_eot``: projection, step, EOT gradient / margin / logits, the losses), and :class:`FGSM`
(``fgsm``), :class:`PGD` (``pgd``), :class:`TargetedPGD` (``targeted_pgd``), :class:`Square`
(``square``), :class:`APGD` (``apgd``: Auto-PGD at ART's defaults, the paper protocol's attack).

A new attack is a subclass of :class:`Attack` defining ``name`` and ``_perturb(x, y, gen,
device)`` (the adversarial images, inside the eps-ball: use ``self._project``), registered with
:func:`neurovar.perturb.register_attack` to be usable by name in experiments (see
docs/architecture.md).
"""

from __future__ import annotations

from ._base import NORMS as NORMS
from ._base import Attack
from ._eot import CPU_EOT_BATCH as CPU_EOT_BATCH
from ._eot import CUDA_EOT_BATCH_MAX as CUDA_EOT_BATCH_MAX
from ._eot import LOSSES, resolve_eot_batch
from ._eot import _loss_per_example as _loss_per_example  # the diagnostics use it
from .apgd import APGD
from .fgsm import FGSM
from .pgd import PGD
from .square import Square
from .targeted_pgd import TargetedPGD

__all__ = [
    "Attack",
    "FGSM",
    "PGD",
    "TargetedPGD",
    "Square",
    "APGD",
    "LOSSES",
    "resolve_eot_batch",
]

# the public function is documented under the package, not its module (a class keeps its own
# module: inspect.getsource finds a class through it)
resolve_eot_batch.__module__ = __name__
