"""A module called more than once per forward pass (torchvision's BasicBlock calls one
``self.relu`` twice) is refused by the recorder and by noise injection (issue 21): its noise
would be added at every call and its recording would be the last call's output."""

import pytest
import torch
from torch import nn

from neurovar._validation import InvalidParameterError
from neurovar.noise import IsotropicNoise, inject_noise
from neurovar.record import record_activations


class Block(nn.Module):
    """A residual block that reuses one ReLU, as torchvision's BasicBlock does."""

    def __init__(self, reuse_dropout=False):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.reuse_dropout = reuse_dropout
        self.head = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        h = self.relu(self.conv1(x))
        if self.reuse_dropout:
            h = self.drop(h)
        out = self.relu(self.conv2(h) + x)  # the same ReLU a second time
        if self.reuse_dropout:
            out = self.drop(out)
        return self.head(out.flatten(1))


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture
def x():
    return torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))


def test_noise_injected_into_a_module_called_twice_is_refused(x):
    model = Block().eval()
    with inject_noise(model, {"relu": IsotropicNoise(1.0, rng=0)}):
        with pytest.raises(InvalidParameterError) as err:
            model(x)
    message = str(err.value)
    assert message.startswith(
        "The 'noise' parameter of inject_noise must name layers that run once"
    )
    assert "'relu', called 2 times in one forward pass" in message
    assert "nn.Identity" in message
    assert _no_hooks(model)


def test_noise_at_a_module_called_once_per_pass_is_accepted(x):
    model = Block().eval()
    with inject_noise(model, {"conv1": IsotropicNoise(1.0, rng=0)}):
        a, b = model(x), model(x)  # one call per forward pass, pass after pass
        assert not torch.equal(a, b)
        # the submodule called directly, twice, outside a forward pass of the model
        model.conv1(x)
        model.conv1(x)


def test_recording_a_module_called_twice_is_refused(x):
    model = Block().eval()
    with pytest.raises(InvalidParameterError) as err:
        record_activations(model, x, layers=["conv1", "relu"], n_trials=2, progress=False)
    message = str(err.value)
    assert message.startswith("The 'layers' parameter of record_activations")
    assert "'relu', which is called 2 times per forward pass" in message
    assert _no_hooks(model)
    # a module that runs once is recorded as before
    tree = record_activations(model, x, layers=["conv1"], n_trials=2, progress=False)
    assert tree["conv1"]["activation"].shape == (2, 3, 2 * 4 * 4)


def test_branching_at_a_module_called_twice_is_refused(x):
    model = Block().eval()
    with pytest.raises(
        InvalidParameterError, match="'branch' parameter.*'relu', which is called 2"
    ):
        record_activations(model, x, layers=["head"], n_trials=2, branch="relu", progress=False)
    # a dropout module used twice is the first stochastic site: trials cannot branch there, and
    # the error says so instead of blaming a skip connection
    model = Block(reuse_dropout=True).train()
    with pytest.raises(InvalidParameterError, match="'model' parameter.*'drop', which is called 2"):
        record_activations(model, x, layers=["head"], n_trials=2, progress=False)
    assert _no_hooks(model) and model.training
