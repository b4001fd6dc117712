"""Fixtures for the noise tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from noise_helpers import make_tiny_cnn
from torch import nn


@pytest.fixture
def tiny_cnn() -> nn.Sequential:
    return make_tiny_cnn()


@pytest.fixture
def images() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.as_tensor(rng.standard_normal((32, 1, 8, 8)), dtype=torch.float32)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and the test budget is one core)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
