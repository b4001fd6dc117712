"""Tiny models on the 8x8 digits for the perturbation tests (trained in about a second)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Tiny models: one torch thread is much faster than several on a shared CPU
    (oversubscription); restored for the rest of the session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ActivationNoise(nn.Module):
    """Additive Gaussian activation noise drawn from the global torch RNG when training."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sigma > 0:
            return x + self.sigma * torch.randn_like(x)
        return x


def _mlp(noise: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 64), nn.ReLU()]
    if noise is not None:
        layers.append(noise)
    layers.append(nn.Linear(64, 10))
    return nn.Sequential(*layers)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 200) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.fixture(scope="package")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(data.target, dtype=torch.long)
    return x, y


@pytest.fixture(scope="package")
def test_batch(digits) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits
    return x[-64:].clone(), y[-64:].clone()


@pytest.fixture(scope="package")
def det_model(digits) -> nn.Module:
    """Deterministic MLP (eval mode)."""
    x, y = digits
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _train(_mlp(None), x[:-64], y[:-64])
    return model.eval()


@pytest.fixture(scope="package")
def noisy_model(digits) -> nn.Module:
    """MLP with activation noise, left in train mode (stochastic)."""
    x, y = digits
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = _train(_mlp(ActivationNoise(1.0)), x[:-64], y[:-64])
    return model.train()


@pytest.fixture(scope="package")
def dropout_model(digits) -> nn.Module:
    """MLP with dropout, left in train mode (stochastic)."""
    x, y = digits
    with torch.random.fork_rng():
        torch.manual_seed(2)
        model = _train(_mlp(nn.Dropout(0.3)), x[:-64], y[:-64])
    return model.train()


@pytest.fixture
def rng_guard():
    """Check that a block leaves the global torch and numpy RNG state unchanged."""

    class Guard:
        def __enter__(self):
            self.torch_state = torch.get_rng_state()
            self.np_state = np.random.get_state()[1].copy()
            return self

        def __exit__(self, *exc):
            if exc[0] is None:
                assert torch.equal(torch.get_rng_state(), self.torch_state)
                assert np.array_equal(np.random.get_state()[1], self.np_state)
            return False

    return Guard()


@pytest.fixture
def injected_model(det_model):
    """The deterministic MLP in eval mode with neurovar IsotropicNoise injected after the ReLU
    (test-time injection: the noise module draws from its own generator, in eval mode too).
    Yields ``(model, noise)``; the hook is removed afterwards."""
    from neurovar.noise import IsotropicNoise, inject_noise

    noise = IsotropicNoise(1.0, rng=123)
    with inject_noise(det_model, {"2": noise}):
        yield det_model, noise


class Saturated(nn.Module):
    """Logits x 1e4: float32 softmax saturates, so cross-entropy gradients vanish (masking)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return 1e4 * self.model(x)


@pytest.fixture
def saturated():
    """Wrap a model so that its logits are multiplied by 1e4 (a gradient-masking model)."""
    return Saturated


class InputRecorder(nn.Module):
    """Deterministic model that records every input it sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


@pytest.fixture
def input_recorder():
    """Wrap a deterministic model so that it records every input it sees (``.seen``)."""
    return InputRecorder
