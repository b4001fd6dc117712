"""Tests for neurovar.perturb.adapters (torchattacks with neurovar's guarantees)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurovar.perturb import TorchattacksAttack, torchattacks_names

pytest.importorskip("torchattacks")


def _dropout_modes(model, attack, x, y):
    drop = next(m for m in model.modules() if isinstance(m, nn.Dropout))
    seen: list[bool] = []
    handle = drop.register_forward_hook(lambda m, i, o: seen.append(m.training))
    try:
        adv = attack(x, y)
    finally:
        handle.remove()
    return adv, seen


def test_keeps_noise_on_and_restores(dropout_model, test_batch, rng_guard):
    x, y = test_batch
    atk = TorchattacksAttack("EOTPGD", dropout_model, eps=0.1, alpha=0.02, steps=2, eot_iter=2)
    with rng_guard:
        adv, seen = _dropout_modes(dropout_model, atk, x, y)
    assert seen and all(seen)
    assert all(m.training for m in dropout_model.modules())
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    off = TorchattacksAttack("PGD", dropout_model, keep_training_mode=False, eps=0.1, steps=2)
    _, seen_off = _dropout_modes(dropout_model, off, x, y)
    assert seen_off and not any(seen_off)
    assert all(m.training for m in dropout_model.modules())


def test_reproducible(dropout_model, test_batch):
    x, y = test_batch
    kw = dict(eps=0.1, alpha=0.02, steps=2)
    a = TorchattacksAttack("PGD", dropout_model, rng=3, **kw)(x, y)
    b = TorchattacksAttack("PGD", dropout_model, rng=3, **kw)(x, y)
    assert torch.equal(a, b)


def test_zoo_and_errors(det_model, test_batch):
    x, y = test_batch
    names = torchattacks_names()
    assert {"CW", "DeepFool", "APGD", "Square", "AutoAttack"} <= set(names)
    adv = TorchattacksAttack("FGSM", det_model, eps=0.05)(x, y)
    assert float((adv - x).abs().max()) <= 0.05 + 1e-6
    with pytest.raises(ValueError, match=r"'attack' parameter of TorchattacksAttack must be one"):
        TorchattacksAttack("NoSuchAttack", det_model)(x, y)


def test_autoattack_rand_runs_on_stochastic_model(noisy_model, test_batch, rng_guard):
    """AutoAttack's 'rand' version (APGD-CE/DLR with EOT) through the same call."""
    x, y = test_batch
    atk = TorchattacksAttack(
        "AutoAttack", noisy_model, norm="Linf", eps=0.1, version="rand", n_classes=10, rng=0
    )
    with rng_guard:
        adv = atk(x[:4], y[:4])
    assert float((adv - x[:4]).abs().max()) <= 0.1 + 1e-6
    assert torch.equal(adv, atk(x[:4], y[:4]))  # its internal seed is derived from rng
    assert all(m.training for m in noisy_model.modules())


def test_keeps_mixed_modes(dropout_model, test_batch):
    """MC dropout: model in eval mode with its dropout switched on. torchattacks' own mode
    handling (all-eval or all-train) would switch the dropout off; the adapter keeps it on, and
    keeps an eval-mode module in eval inside a train-mode model."""
    x, y = test_batch
    drop = next(m for m in dropout_model.modules() if isinstance(m, nn.Dropout))
    first = dropout_model[1]
    try:
        dropout_model.eval()
        drop.train()
        atk = TorchattacksAttack("PGD", dropout_model, eps=0.1, alpha=0.02, steps=2, rng=0)
        _, seen = _dropout_modes(dropout_model, atk, x, y)
        assert seen and all(seen)
        assert drop.training and not dropout_model.training
        dropout_model.train()
        first.eval()
        modes: list[bool] = []
        handle = first.register_forward_hook(lambda m, i, o: modes.append(m.training))
        try:
            TorchattacksAttack("PGD", dropout_model, eps=0.1, alpha=0.02, steps=2, rng=0)(x, y)
        finally:
            handle.remove()
        assert modes and not any(modes)
        assert not first.training
    finally:
        dropout_model.train()
