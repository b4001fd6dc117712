"""Shared fixtures: tiny data and models, and a guard that checks global RNG state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CORTEX_DATA = REPO.parent / "shared" / "data" / "cortex"


@pytest.fixture
def global_rng_guard():
    """Yield, then assert that torch's and numpy's global RNG states are unchanged."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    yield
    assert torch.equal(torch_state, torch.get_rng_state()), "global torch RNG state changed"
    after = np.random.get_state()
    assert (
        np_state[0] == after[0]
        and np.array_equal(np_state[1], after[1])
        and np_state[2:] == after[2:]
    ), "global numpy RNG state changed"


def pytest_configure(config):
    # Under pytest-xdist each worker gets one intra-op thread, so 2 workers fill 2 cores
    # instead of oversubscribing them (torch defaults to one thread per core).
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
