"""The lowest floor: layer names, the one device rule, noise discovery, seeded RNG, renames."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import neurovar
from neurovar import _torch
from neurovar._compat import renamed_parameters


def _model() -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 2)))


def test_one_implementation_is_re_exported_everywhere():
    from neurovar import models, noise, record
    from neurovar.perturb import _utils

    assert record.layer_names is _torch.layer_names
    assert models.resolve_device is _torch.resolve_device
    assert noise.find_noise_hooks is _torch.find_noise_hooks
    assert _utils.model_device is _torch.model_device
    assert _utils.noise_modules is _torch.noise_modules
    assert record.unit_coords is neurovar.dims.unit_coords
    assert _torch.layer_names(_model()) == ["0", "1", "2", "2.0"]


def test_device_rule_explicit_then_model_then_cpu():
    model = _model()
    assert _torch.resolve_device("cpu", model=model) == torch.device("cpu")
    assert _torch.resolve_device(torch.device("meta"), model=model) == torch.device("meta")
    assert _torch.resolve_device(model=model.to("meta")) == torch.device("meta")
    buffers_only = nn.BatchNorm1d(3, affine=False).to("meta")
    assert _torch.resolve_device(model=buffers_only) == torch.device("meta")
    assert _torch.resolve_device(model=nn.ReLU()) == torch.device("cpu")
    # no model: the CPU, never a GPU behind the caller's back
    assert _torch.resolve_device() == torch.device("cpu")
    assert _torch.model_device(model) == torch.device("meta")


def test_record_and_train_run_where_the_model_is(monkeypatch):
    from neurovar import models, record
    from neurovar.record import _record as record_room  # where record_activations resolves

    seen = []
    real = _torch.resolve_device

    def spy(device=None, *, model=None, **kwargs):
        seen.append((device, model is not None))
        return real(device, model=model, **kwargs)

    monkeypatch.setattr(record_room, "resolve_device", spy)
    monkeypatch.setattr(models, "resolve_device", spy)
    model = models.SmallCNN(rng=0, channels=(2, 2), hidden=4)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    record.record_activations(model, x, layers="fc1", n_trials=2, rng=0, progress=False)
    models.evaluate_accuracy(model, x, torch.zeros(3, dtype=torch.long))
    assert seen == [(None, True), (None, True)]


class _Marker(nn.Module):
    """A user's noise module: found by the class marker, not by a neurovar base class."""

    _neurovar_noise_module = True

    def __init__(self):
        super().__init__()
        self.seed, self.log = 0, []

    def manual_seed(self, seed):
        self.log.append(("seed", seed))
        self.seed = seed

    def get_rng_state(self):
        return {"seed": self.seed}

    def set_rng_state(self, state):
        self.log.append(("restore", state["seed"]))
        self.seed = state["seed"]


class _Hook:
    def __init__(self, noise, active=True):
        self.noise, self._neurovar_noise = noise, active

    def __call__(self, module, inputs, output):
        return output


def test_noise_discovery_by_marker_finds_submodules_and_hooks_once():
    model = _model()
    sub, hooked = _Marker(), _Marker()
    model.append(sub)
    model[0].register_forward_hook(_Hook(hooked))
    model[2][0].register_forward_hook(_Hook(hooked, active=False))  # same module, twice
    model[2][0].register_forward_hook(lambda m, i, o: o)  # a plain hook is not noise
    assert [n for n, _ in _torch.find_noise_hooks(model)] == ["0", "2.0"]
    assert [n for n, _ in _torch.find_noise_hooks(model, active_only=True)] == ["0"]
    assert len(_torch.noise_hooks(model[2][0])) == 1
    assert _torch.noise_modules(model) == [sub, hooked]
    assert not _torch.is_noise_module(nn.ReLU()) and _torch.is_noise_module(sub)


def test_reseeded_noise_uses_the_public_rng_state_and_restores_it_after_errors():
    model = _model()
    a, b = _Marker(), _Marker()
    a.seed, b.seed = 11, 22
    model.extend([a, b])
    with pytest.raises(RuntimeError, match="boom"):
        with _torch.reseeded_noise(model, 5):
            inner = (a.seed, b.seed)
            raise RuntimeError("boom")
    assert (a.seed, b.seed) == (11, 22)
    assert inner[0] != inner[1]  # one independent stream per module
    assert a.log[-1] == ("restore", 11) and b.log[-1] == ("restore", 22)
    with _torch.reseeded_noise(model, 5):
        assert (a.seed, b.seed) == inner  # reproducible from the seed


def test_noise_module_rng_state_round_trip():
    from neurovar.noise import IsotropicNoise, LowRankNoise

    x = torch.zeros(6, 4)
    for noise in (IsotropicNoise(1.0, rng=3), LowRankNoise(np.ones((4, 1)), 0.5, rng=4)):
        noise(x)  # the stream has started
        state = noise.get_rng_state()
        first, second = noise(x), noise(x)
        noise.set_rng_state(state)
        assert torch.equal(noise(x), first) and torch.equal(noise(x), second)
    gen = torch.Generator().manual_seed(0)
    shared = IsotropicNoise(1.0, rng=gen)
    state = shared.get_rng_state()
    first = shared(x)
    shared.set_rng_state(state)  # a user generator is rewound too
    assert torch.equal(shared(x), first) and shared.generator is gen
    with pytest.raises(TypeError, match="get_rng_state"):
        shared.set_rng_state({"seed": 1})


def test_seeded_torch_forks_the_global_state():
    before = torch.get_rng_state()
    with _torch.seeded_torch(3):
        a = torch.rand(3)
    with _torch.seeded_torch(3):
        b = torch.rand(3)
    assert torch.equal(a, b) and torch.equal(before, torch.get_rng_state())
    assert _torch.seed_from(7) == 7
    gen = np.random.default_rng(0)
    assert _torch.seed_from(np.random.default_rng(0)) == _torch.seed_from(gen)


def test_renamed_parameters_warn_once_and_refuse_both():
    @renamed_parameters({"seed": "rng"}, positional=("rng",))
    def f(x, *, rng=None):
        return x, rng

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f(1, rng=2) == (1, 2)  # the new name is silent
    with pytest.warns(FutureWarning, match="'seed' parameter of .*f was renamed to 'rng'"):
        assert f(1, seed=2) == (1, 2)
    with pytest.warns(FutureWarning, match="keyword-only"):
        assert f(1, 2) == (1, 2)
    with pytest.raises(TypeError, match="not both"):
        f(1, seed=2, rng=3)
    import inspect

    assert list(inspect.signature(f).parameters) == ["x", "rng"]  # docs show the new names


def test_old_names_still_work_with_a_future_warning():
    from neurovar.datasets import load_digits
    from neurovar.models import SmallCNN
    from neurovar.noise import CovarianceNoise, rotate_spectrum
    from neurovar.stats import mean_matched_fano_factor

    with pytest.warns(FutureWarning, match="'seed' parameter of SmallCNN"):
        old = SmallCNN(seed=3, channels=(2, 2), hidden=4)
    new = SmallCNN(rng=3, channels=(2, 2), hidden=4)
    assert all(torch.equal(p, q) for p, q in zip(old.parameters(), new.parameters()))
    with pytest.warns(FutureWarning, match="'seed' parameter of load_digits"):
        assert torch.equal(load_digits(seed=1).y_test, load_digits(rng=1).y_test)
    with pytest.warns(FutureWarning, match="'seed' parameter of CovarianceNoise was renamed"):
        noise = CovarianceNoise(np.eye(2), seed=5)
    assert noise.seed == 5
    cov = np.diag([1.0, 2.0, 3.0])
    with pytest.warns(FutureWarning, match="keyword-only"):
        positional = rotate_spectrum(cov, 0)
    np.testing.assert_array_equal(positional, rotate_spectrum(cov, rng=0))
    import xarray as xr

    counts = np.random.default_rng(0).poisson(3.0, size=(6, 4, 5)).astype(float)
    da = xr.DataArray(counts, dims=("trial", "stimulus", "unit"))
    with pytest.warns(FutureWarning, match="'confidence' parameter"):
        old_ff = mean_matched_fano_factor(da, confidence=0.9, n_resamples=2, rng=0)
    new_ff = mean_matched_fano_factor(da, confidence_level=0.9, n_resamples=2, rng=0)
    xr.testing.assert_identical(old_ff, new_ff)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rng_state_round_trip_on_cuda():
    from neurovar.noise import IsotropicNoise

    noise = IsotropicNoise(1.0, rng=3)
    x = torch.zeros(6, 4, device="cuda")
    noise(x)
    state = noise.get_rng_state()
    first = noise(x)
    noise.set_rng_state(state)
    assert torch.equal(noise(x), first)
    gen = torch.Generator(device="cuda").manual_seed(0)
    assert _torch.seed_from(gen) == _torch.seed_from(torch.Generator(device="cuda").manual_seed(0))
