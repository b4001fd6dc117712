"""Perturbations: adversarial attacks honest about stochastic networks, and corruptions.

Attacks (:mod:`.attacks`) keep the model's stochasticity on, average gradients over noise draws
(EOT) and restore model state and global RNG; :func:`evaluate_robustness` runs an
AutoAttack-like ensemble with worst-case counting over repeated evaluations;
:mod:`.diagnostics` holds the gradient-obfuscation checks; :func:`corrupt` applies the 15
CIFAR-10-C corruptions batched in torch and :func:`modify` continuous-strength modifications.
"""

from __future__ import annotations

from .adapters import TorchattacksAttack, torchattacks_names
from .attacks import FGSM, PGD, Attack, Square, TargetedPGD
from .corruptions import CORRUPTIONS, MODIFICATIONS, SEVERITIES, Corruption, corrupt, modify
from .diagnostics import (
    FrozenNoiseTwin,
    NoiseFreeTwin,
    check_robustness_result,
    gradient_snr,
    is_stochastic,
    randomness_check,
    twin_transfer,
)
from .evaluate import ATTACK_NAMES, ENSEMBLE, evaluate_robustness, robust_accuracy

__all__ = [
    "Attack",
    "FGSM",
    "PGD",
    "TargetedPGD",
    "Square",
    "TorchattacksAttack",
    "torchattacks_names",
    "evaluate_robustness",
    "robust_accuracy",
    "ENSEMBLE",
    "ATTACK_NAMES",
    "randomness_check",
    "is_stochastic",
    "gradient_snr",
    "NoiseFreeTwin",
    "FrozenNoiseTwin",
    "twin_transfer",
    "check_robustness_result",
    "CORRUPTIONS",
    "SEVERITIES",
    "Corruption",
    "corrupt",
    "MODIFICATIONS",
    "modify",
]
