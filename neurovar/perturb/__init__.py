"""Perturbations: adversarial attacks honest about stochastic networks, and corruptions.

Attacks (:mod:`.attacks`) keep the model's stochasticity on, average gradients over noise draws
(EOT) and restore model state and global RNG; :func:`evaluate_robustness` runs an
AutoAttack-like ensemble with worst-case counting over repeated evaluations;
:mod:`.diagnostics` holds the gradient-obfuscation checks; :func:`corrupt` applies the 15
CIFAR-10-C corruptions batched in torch, :func:`corrupt_paper` the ImageNet-C corruptions the
way Preble et al. (2026) apply them to 28x28 digits, and :func:`modify` continuous-strength
modifications.
"""

from __future__ import annotations

from .adapters import TorchattacksAttack, torchattacks_names
from .attacks import APGD, FGSM, PGD, Attack, Square, TargetedPGD
from .corruptions import CORRUPTIONS, MODIFICATIONS, SEVERITIES, Corruption, corrupt, modify
from .diagnostics import (
    FrozenNoiseTwin,
    NoiseFreeTwin,
    RobustnessDiagnosis,
    check_robustness_result,
    eot_check,
    gradient_snr,
    is_stochastic,
    randomness_check,
    twin_transfer,
)
from .evaluate import (
    ATTACK_NAMES,
    DEFAULT_NUM_THREADS,
    ENSEMBLE,
    AttackFactory,
    attack_names,
    evaluate_robustness,
    get_attack_factory,
    register_attack,
    robust_accuracy,
    robustness_table,
    unregister_attack,
)
from .imagenet_c import IMAGENET_C_PARAMS, PAPER_CORRUPTIONS, corrupt_paper

__all__ = [
    "APGD",
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
    "DEFAULT_NUM_THREADS",
    "AttackFactory",
    "attack_names",
    "register_attack",
    "unregister_attack",
    "get_attack_factory",
    "robustness_table",
    "randomness_check",
    "is_stochastic",
    "gradient_snr",
    "NoiseFreeTwin",
    "FrozenNoiseTwin",
    "twin_transfer",
    "check_robustness_result",
    "RobustnessDiagnosis",
    "eot_check",
    "CORRUPTIONS",
    "SEVERITIES",
    "Corruption",
    "corrupt",
    "MODIFICATIONS",
    "modify",
    "corrupt_paper",
    "PAPER_CORRUPTIONS",
    "IMAGENET_C_PARAMS",
]
