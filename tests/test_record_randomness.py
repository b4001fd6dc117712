"""Randomness that record_activations does not know about is not erased by trial branching
(issue 21): stochastic depth or a custom module drawing torch.rand before the noise site, and
randomness drawn once per forward pass (which folded trials would share)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import StochasticDepth

from neurovar.noise import IsotropicNoise, inject_noise
from neurovar.record import record_activations


class Gain(nn.Module):
    """Multiplies by 1 + U, U ~ Uniform(0, 1) from torch's global generator, drawn per sample
    (``per="sample"``) or once per forward pass (``per="batch"``); no known random type."""

    def __init__(self, per):
        super().__init__()
        self.per = per

    def forward(self, x):
        shape = (len(x), 1) if self.per == "sample" else ()
        return x * (1 + torch.rand(shape))


class Net(nn.Module):
    """fc1 -> random part -> fc2 -> relu (noise injected here) -> fc3."""

    def __init__(self, random):
        super().__init__()
        torch.manual_seed(0)  # the test's weights; restored by the fixture below
        self.fc1 = nn.Linear(6, 12)
        self.random = random
        self.fc2 = nn.Linear(12, 12)
        self.relu = nn.ReLU()
        self.fc3 = nn.Linear(12, 3)

    def forward(self, x):
        h = self.fc1(x)
        if isinstance(self.random, StochasticDepth):
            h = h + self.random(torch.tanh(h))  # a residual branch dropped per sample
        else:
            h = self.random(h)
        return self.fc3(self.relu(self.fc2(h)))


@pytest.fixture
def stimuli():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return torch.randn(6, 6)


def _make(random):
    with torch.random.fork_rng():
        return Net(random).train()


def _record(model, x, n_trials=200, **kw):
    with inject_noise(model, {"relu": IsotropicNoise(0.1, rng=0)}):
        return record_activations(
            model, x, layers=["fc2", "fc3"], n_trials=n_trials, rng=3, progress=False, **kw
        )


def test_stochastic_depth_before_the_noise_site_is_sampled_per_trial(stimuli, global_rng_guard):
    model = _make(StochasticDepth(0.5, "row"))
    with pytest.warns(RuntimeWarning, match=r"'random' \(StochasticDepth\) is in training mode"):
        tree = _record(model, stimuli)
    assert tree.attrs["branch_site"] == "input"
    fc2 = tree["fc2"]["activation"].values  # (trial, stimulus, unit), upstream of the noise
    # every trial is one of the two outcomes of an independent per-sample draw: the branch
    # dropped (fc2(h)) or kept and scaled by 1 / (1 - p) = 2 (fc2(h + 2 tanh h))
    with torch.no_grad():
        h = model.fc1(stimuli)
        dropped = model.fc2(h).numpy()
        kept = model.fc2(h + 2 * torch.tanh(h)).numpy()
    is_kept = np.abs(fc2 - kept).max(axis=2) < 1e-5
    is_dropped = np.abs(fc2 - dropped).max(axis=2) < 1e-5
    assert (is_kept ^ is_dropped).all()
    # 1200 independent draws with P(kept) = 0.5: the fraction is 0.5 +- 0.0144 (sd)
    assert abs(is_kept.mean() - 0.5) < 0.06
    for s in range(len(stimuli)):
        assert 0.3 < is_kept[:, s].mean() < 0.7  # each stimulus draws its own, per trial
    # trial variance as a per-trial loop has it: p (1 - p) (kept - dropped)^2, not 0
    expected = 0.25 * (kept - dropped) ** 2
    got = fc2.var(axis=0, ddof=1)
    assert got.mean() > 0
    assert abs(got.mean() / expected.mean() - 1) < 0.2


def test_recording_equals_a_per_trial_loop_in_distribution(stimuli):
    model = _make(StochasticDepth(0.5, "row"))
    with pytest.warns(RuntimeWarning, match="Falling back to folding trials at the input"):
        rec = _record(model, stimuli)["fc2"]["activation"].values.var(axis=0, ddof=1)
    loop = []
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(5)
        with inject_noise(model, {"relu": IsotropicNoise(0.1, rng=0)}):
            captured = []
            handle = model.fc2.register_forward_hook(lambda m, i, o: captured.append(o))
            try:
                for _ in range(200):
                    model(stimuli)
            finally:
                handle.remove()
        loop = torch.stack(captured).numpy().var(axis=0, ddof=1)
    # mean trial variance of each stimulus within 30% of the loop's (200 trials each)
    ratio = rec.mean(axis=1) / loop.mean(axis=1)
    assert np.all(np.abs(ratio - 1) < 0.3), ratio


def _gains(act, model, wh):
    """The gain g of every (trial, stimulus) in ``fc2(g h) = g W h + b``, and a check that
    every unit of it has that one gain (the recorded values are such responses)."""
    centred = act - model.fc2.bias.detach().numpy()
    gain = (centred * wh).sum(axis=2) / (wh**2).sum(axis=1)
    np.testing.assert_allclose(centred, gain[:, :, None] * wh, atol=1e-4)
    return gain


def test_custom_module_drawing_torch_rand_per_sample_is_detected(stimuli, global_rng_guard):
    model = _make(Gain("sample"))
    with pytest.warns(RuntimeWarning, match="differs between copies of the same stimulus"):
        tree = _record(model, stimuli, n_trials=300)
    assert tree.attrs["branch_site"] == "input"
    # fc2(g h) with g = 1 + U: trial variance (W h)^2 / 12 per unit
    with torch.no_grad():
        wh = (model.fc1(stimuli) @ model.fc2.weight.T).numpy()
    got = tree["fc2"]["activation"].values.var(axis=0, ddof=1)
    assert abs(got.mean() / (wh**2 / 12).mean() - 1) < 0.2
    # independent per stimulus: the gains of two stimuli in one trial are uncorrelated
    gain = _gains(tree["fc2"]["activation"].values, model, wh)  # (trial, stimulus)
    assert abs(np.corrcoef(gain[:, 0], gain[:, 1])[0, 1]) < 0.25


def test_randomness_drawn_once_per_pass_gets_one_pass_per_trial(stimuli, global_rng_guard):
    model = _make(Gain("batch"))
    with pytest.warns(RuntimeWarning, match="one forward pass per trial"):
        tree = _record(model, stimuli, n_trials=300, batch_size=600)
    assert tree.attrs["branch_site"] == "trial"
    with torch.no_grad():
        wh = (model.fc1(stimuli) @ model.fc2.weight.T).numpy()
    gain = _gains(tree["fc2"]["activation"].values, model, wh)
    # one draw per trial, shared by the stimuli of that trial as in a per-trial loop ...
    assert np.allclose(gain, gain[:, :1], atol=1e-4)
    # ... and independent across trials (folded trials would all share one draw: variance 0)
    assert len(np.unique(gain[:, 0])) > 290  # (float32 ties aside)
    assert abs(gain[:, 0].var(ddof=1) / (1 / 12) - 1) < 0.2


def test_stochastic_depth_batch_mode_gets_one_pass_per_trial(stimuli):
    model = _make(StochasticDepth(0.5, "batch"))
    with pytest.warns(RuntimeWarning, match=r"'random' \(StochasticDepth\).*whole batch|at once"):
        tree = _record(model, stimuli, n_trials=100, batch_size=600)
    assert tree.attrs["branch_site"] == "trial"
    fc2 = tree["fc2"]["activation"].values
    with torch.no_grad():
        h = model.fc1(stimuli)
        kept = model.fc2(h + 2 * torch.tanh(h)).numpy()
    is_kept = np.abs(fc2 - kept).max(axis=2) < 1e-5
    # all stimuli of a trial share the draw, and trials differ
    assert (is_kept == is_kept[:, :1]).all()
    assert 0.25 < is_kept[:, 0].mean() < 0.75


def test_deterministic_prefix_keeps_branching_without_warning(stimuli):
    model = _make(StochasticDepth(0.5, "row"))
    model.random.eval()  # stochastic depth off: the prefix is deterministic
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = _record(model, stimuli, n_trials=4)
    assert tree.attrs["branch_site"] == "relu:output"
    fc2 = tree["fc2"]["activation"].values
    assert np.array_equal(fc2, np.broadcast_to(fc2[:1], fc2.shape))


def test_the_probe_does_not_change_the_recording(stimuli):
    # the probe passes draw in a fork of the RNG: a recording with a random prefix gives the
    # same values as one folded at the input from the start (branch="input")
    model = _make(StochasticDepth(0.5, "row"))
    with pytest.warns(RuntimeWarning):
        auto = _record(model, stimuli, n_trials=5)
    folded = _record(model, stimuli, n_trials=5, branch="input")
    np.testing.assert_array_equal(
        auto["fc3"]["activation"].values, folded["fc3"]["activation"].values
    )


def test_one_pass_per_trial_resumes_exactly(stimuli, tmp_path):
    # the chunk layout of a per-trial recording (one trial of up to batch_size stimuli per
    # pass) is what a resumed call rebuilds from the store's saved site
    kw = dict(layers=["fc2"], n_trials=6, batch_size=4, rng=3, progress=False)
    path = tmp_path / "trial.zarr"
    model = _make(Gain("batch"))
    calls = []

    def fail(_m, _i, _o):
        calls.append(1)
        if len(calls) > 2 + 6 + 3:  # probes, the first chunk (6 trials), 3 passes of the next
            raise RuntimeError("boom")

    handle = model.fc2.register_forward_hook(fail)
    try:
        with pytest.warns(RuntimeWarning, match="one forward pass per trial"):
            with pytest.raises(RuntimeError, match="boom"):
                record_activations(model, stimuli, store=path, **kw)
    finally:
        handle.remove()
    import zarr

    attrs = zarr.open_group(str(path), mode="r").attrs
    assert (attrs["neurovar_chunks_written"], attrs["neurovar_n_chunks"]) == (1, 2)
    resumed = record_activations(model, stimuli, store=path, resume=True, **kw)
    with pytest.warns(RuntimeWarning, match="one forward pass per trial"):
        full = record_activations(model, stimuli, **kw)
    assert resumed.attrs["branch_site"] == full.attrs["branch_site"] == "trial"
    np.testing.assert_array_equal(
        resumed["fc2"]["activation"].values, full["fc2"]["activation"].values
    )
