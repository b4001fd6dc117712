"""Defaults shared by the attacks, the robustness evaluation and the experiment config.

One value, read by every function that takes it, so that ``PGD(model, eps=...)``,
``evaluate_robustness(model, x, y, eps=...)``, ``TargetSpec(...)`` and an experiment config
without ``evaluation.steps`` attack with the same budget. Imports nothing.
"""

from __future__ import annotations

__all__ = ["DEFAULT_STEPS"]

#: Iterations of the PGD attacks when the caller does not say. 20: what the robustness
#: evaluation always used (Madry et al. 2018 evaluate CIFAR-10 with 20 steps). The attack class
#: and the config said 10 before; a stronger default errs on the side of lower reported
#: robustness. Every shipped experiment config sets its own ``steps``.
DEFAULT_STEPS = 20
