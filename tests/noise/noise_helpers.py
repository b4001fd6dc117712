"""Helpers for the noise tests: a tiny CNN (independent of neurovar.models) and covariance checks."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn


def make_tiny_cnn(seed: int = 0, n_classes: int = 3) -> nn.Sequential:
    """conv1 (1->4) - relu1 - conv2 (4->6) - relu2 - pool - flatten - fc, for 1x8x8 images."""
    with torch.random.fork_rng(devices=[]):  # weight init from a seed, global state untouched
        torch.manual_seed(seed)
        return nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, 4, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(4, 6, 3, padding=1),
                relu2=nn.ReLU(),
                pool=nn.AvgPool2d(2),
                flatten=nn.Flatten(),
                fc=nn.Linear(6 * 4 * 4, n_classes),
            )
        )


def random_cov(d: int, rng: np.random.Generator, *, rank: int | None = None) -> np.ndarray:
    """Random PSD matrix; full rank (plus 0.1 I) or of the given rank."""
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d) + (0.0 if rank else 0.1 * np.eye(d))


def assert_cov_close(emp: np.ndarray, target: np.ndarray, n: int, k: float = 5.0) -> None:
    """Each entry within k standard errors: se(S_ij)^2 = (S_ii S_jj + S_ij^2) / n (Gaussian)."""
    d = np.diag(target)
    se = np.sqrt((np.outer(d, d) + target**2) / n)
    err = np.abs(emp - target)
    assert np.all(err <= k * se + 1e-7), f"max err/se = {np.max(err / (se + 1e-12)):.2f}"


def rng_states() -> tuple[torch.Tensor, tuple]:
    """Global torch and numpy RNG states, to check a call leaves them unchanged."""
    return torch.random.get_rng_state().clone(), np.random.get_state()


def assert_rng_unchanged(before: tuple[torch.Tensor, tuple]) -> None:
    torch_state, np_state = before
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]
