"""``batch_size="auto"`` (the default): samples per pass from a probe pass's activation bytes.

The batch size chosen is stored in ``attrs["batch_size"]`` and an explicit ``batch_size`` of
that value reproduces the recording bit for bit (the probe pass draws nothing the recording
draws); an int ``batch_size`` records exactly as before; a store started with ``"auto"`` resumes
with the batch size it was started with, whatever the budget of the resuming process.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from neurovar._validation import InvalidParameterError
from neurovar.models import SmallCNN
from neurovar.noise import IsotropicNoise, inject_noise
from neurovar.record import _budget, record_activations
from neurovar.record import _state as _store

# SmallCNN (channels 16, 32; hidden 64; 10 classes) on 1 x 8 x 8 inputs: the floats each
# leaf module outputs for one stimulus, in execution order
_LEAF_FLOATS = {
    "input": 64, "conv1": 1024, "relu1": 1024, "conv2": 2048, "relu2": 2048, "pool": 512,
    "flatten": 512, "fc1": 64, "relu3": 64, "fc2": 10,
}  # fmt: skip


def _digits(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _values(tree, layer):
    return tree[layer]["activation"].values


_ALL = 4 * sum(_LEAF_FLOATS.values())


@pytest.mark.parametrize(
    ("site", "expected"),
    [
        # trials branch at relu3's output: everything up to it once per stimulus (largest:
        # conv2 and relu2, 2048 floats), its expanded copy and fc2 once per trial
        (("relu3", "output"), (4 * 7360, 4 * (64 + 10), 4 * 2048, 4 * 64)),
        # a dropout-like site branching at conv2's input: conv2 on gets the expanded input
        (
            ("conv2", "input"),
            (4 * (64 + 1024 + 1024), 4 * (1024 + 2048 + 2048 + 512 + 512 + 64 + 64 + 10),
             4 * 1024, 4 * 2048),
        ),  # fmt: skip
        (None, (0, _ALL, 0, 4 * 2048)),  # folded at the input: all per trial
        (_store.PER_TRIAL, (0, _ALL, 0, 4 * 2048)),
    ],
)
def test_activation_bytes_split_at_the_branch_site(site, expected):
    model = SmallCNN().eval()
    got = _budget.activation_bytes(model, _digits(1), site, torch.device("cpu"))
    assert tuple(got) == expected


def test_auto_batch_size_follows_the_budgets(monkeypatch):
    model = SmallCNN().eval()
    x, cpu = _digits(1), torch.device("cpu")
    site = ("relu3", "output")
    peak = 4 * 2048 + 50 * 4 * 64  # the largest activation of a pass, per stimulus
    total = 4 * 7360 + 50 * 4 * 74  # all leaf outputs of a pass, per stimulus
    monkeypatch.setenv("NEUROVAR_MAX_BYTES", str(10**12))  # memory: PASS_BYTES_MAX (1 GiB)
    # speed: 100 stimuli fit; 256 run as 3 passes of 86 (not 100, 100, 56)
    monkeypatch.setattr(_budget, "PEAK_BYTES_CPU", 100 * peak)
    assert _budget.auto_batch_size(model, x, site, 50, 256, cpu) == 86 * 50
    assert _budget.auto_batch_size(model, x, site, 50, 30, cpu) == 30 * 50
    # not even one stimulus's trials fit: as many trials of one stimulus as fit, at least 1
    monkeypatch.setattr(_budget, "PEAK_BYTES_CPU", 4 * 2048 + 7 * 4 * 64 + 1)
    assert _budget.auto_batch_size(model, x, site, 50, 256, cpu) == 7
    monkeypatch.setattr(_budget, "PEAK_BYTES_CPU", 1)
    assert _budget.auto_batch_size(model, x, site, 50, 256, cpu) == 1
    # memory: the limit of check_memory caps the sum of all leaf outputs
    monkeypatch.setattr(_budget, "PEAK_BYTES_CPU", 2**40)
    monkeypatch.setenv("NEUROVAR_MAX_BYTES", str(3 * total))
    assert _budget.auto_batch_size(model, x, site, 50, 256, cpu) == 3 * 50
    monkeypatch.setenv("NEUROVAR_MAX_BYTES", str(10**12))
    monkeypatch.setattr(_budget, "PASS_BYTES_MAX", 2 * total)
    assert _budget.auto_batch_size(model, x, site, 50, 256, cpu) == 2 * 50
    # one pass per trial: stimuli only
    monkeypatch.setattr(_budget, "PASS_BYTES_MAX", 5 * _ALL)
    assert _budget.auto_batch_size(model, x, _store.PER_TRIAL, 50, 256, cpu) == 5
    # the defaults: one pass for issue 22 (256 x 50 at relu3), 20 stimuli a pass at relu2
    monkeypatch.undo()
    assert _budget.auto_batch_size(model, x, site, 50, 256, cpu) == 256 * 50
    assert _budget.auto_batch_size(model, x, ("relu2", "output"), 50, 500, cpu) == 20 * 50


def test_a_failing_probe_pass_falls_back_to_512():
    class Fails(nn.Module):
        def forward(self, x):
            raise ValueError("no")

    assert _budget.auto_batch_size(Fails(), _digits(1), None, 4, 9, torch.device("cpu")) == 512


@pytest.mark.parametrize(
    ("site", "record", "n_stim", "max_bytes"),
    [
        ("relu3", "relu3", 256, None),  # issue 22: one pass of all 12,800 samples
        ("relu2", "fc2", 60, None),  # passes of a few stimuli
        ("relu2", "fc2", 6, 3e5),  # trials of one stimulus split over passes
    ],
)
def test_auto_is_reproduced_by_its_recorded_batch_size(
    site, record, n_stim, max_bytes, monkeypatch, global_rng_guard
):
    if max_bytes is not None:
        monkeypatch.setenv("NEUROVAR_MAX_BYTES", str(max_bytes))
    model = SmallCNN(dropout=0.5).train()  # dropout draws from torch's generator too
    x = _digits(n_stim)
    kw = dict(layers=[record, "fc1"], n_trials=50, rng=3, progress=False)
    with inject_noise(model, {site: IsotropicNoise(0.2, rng=1)}):
        auto = record_activations(model, x, **kw)
        bs = auto.attrs["batch_size"]
        assert isinstance(bs, int)
        explicit = record_activations(model, x, batch_size=bs, **kw)
        assert explicit.attrs["batch_size"] == bs
        for layer in (record, "fc1"):
            np.testing.assert_array_equal(_values(auto, layer), _values(explicit, layer))
    if max_bytes is None and site == "relu3":
        assert bs == n_stim * 50
    elif max_bytes is None:  # relu2's 8 KB x (1 + 50 trials) per stimulus: 20 in 8 MiB
        assert bs == 20 * 50
    else:
        assert bs < 50  # the budget holds less than one stimulus's trials


def test_int_batch_size_records_as_before():
    # pinned: the first values of a recording with batch_size=512 (the default before
    # batch_size="auto"), made with the code before it (commit 464c4ad)
    model = SmallCNN().eval()
    x = _digits(20)
    with inject_noise(model, {"relu3": IsotropicNoise(0.1, rng=0)}):
        tree = record_activations(
            model, x, layers=["relu3"], n_trials=50, batch_size=512, rng=0, progress=False
        )
    got = _values(tree, "relu3")
    assert got.shape == (50, 20, 64)
    np.testing.assert_array_equal(got[[0, 7, 49], [0, 11, 19], [0, 5, 63]], PINNED_512)


PINNED_512 = np.array(
    [-0.12128575146198273, -0.09239157289266586, -0.00951448269188404], dtype=np.float32
)


def test_auto_store_resumes_with_the_batch_size_it_was_started_with(tmp_path, monkeypatch):
    model = SmallCNN().eval()
    x = _digits(12)
    kw = dict(layers=["fc2"], n_trials=4, rng=0, progress=False)
    per_stimulus = 4 * 7360 + 4 * 4 * 74  # shared + n_trials * per_trial at relu3
    monkeypatch.setenv("NEUROVAR_MAX_BYTES", str(3 * per_stimulus))  # 3 stimuli per pass
    path = tmp_path / "rec.zarr"
    with inject_noise(model, {"relu3": IsotropicNoise(0.1, rng=0)}):
        whole = record_activations(model, x, **kw).load()
        assert whole.attrs["batch_size"] == 12

        class Boom:
            calls = 0

            def __call__(self, m, i, o):
                Boom.calls += 1
                if Boom.calls > 3:  # the probe pass, then two chunks
                    raise RuntimeError("boom")

        h = model.fc2.register_forward_hook(Boom())
        try:
            with pytest.raises(RuntimeError, match="boom"):
                record_activations(model, x, store=path, **kw)
        finally:
            h.remove()
        import zarr

        root = dict(zarr.open_group(str(path), mode="r").attrs)
        assert root["neurovar_chunks_written"] == 2 and root["batch_size"] == 12
        # another budget now (another machine): resumed with the store's 12, not 4 * 12
        monkeypatch.setenv("NEUROVAR_MAX_BYTES", str(12 * per_stimulus))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            resumed = record_activations(model, x, store=path, resume=True, **kw).load()
        fresh = record_activations(model, x, **kw)
    assert fresh.attrs["batch_size"] == 48
    assert resumed.attrs["batch_size"] == 12
    np.testing.assert_array_equal(_values(resumed, "fc2"), _values(whole, "fc2"))


@pytest.mark.parametrize("bad", ["big", 0, 2.5, None])
def test_bad_batch_size_is_refused(bad):
    with pytest.raises(InvalidParameterError, match="'batch_size' parameter of record_activations"):
        record_activations(SmallCNN().eval(), _digits(2), layers=["fc2"], n_trials=2, batch_size=bad)


def test_the_probe_pass_draws_nothing_from_a_noise_with_its_own_generator():
    # a custom noise callable drawing from a generator of its own: probe_guard cannot restore
    # it, so the probe pass must not run it (else "auto" and its batch_size would differ)
    class OwnStream:
        def __init__(self):
            self.gen = torch.Generator().manual_seed(7)
            self.calls = 0

        def __call__(self, out):
            self.calls += 1
            return out + 0.1 * torch.randn(out.shape, generator=self.gen)

    from neurovar.noise import inject_noise as inject

    model = SmallCNN().eval()
    x = _digits(30)
    kw = dict(layers=["fc2"], n_trials=8, rng=None, progress=False)
    trees, calls = [], []
    for batch_size in ("auto", None):
        noise = OwnStream()
        with inject(model, {"relu3": noise}):
            tree = record_activations(
                model, x, batch_size=batch_size or trees[0].attrs["batch_size"], **kw
            )
        trees.append(tree)
        calls.append(noise.calls)
    assert trees[0].attrs["batch_size"] == 30 * 8
    assert calls == [1, 1]  # one pass each: the probe ran no noise
    np.testing.assert_array_equal(_values(trees[0], "fc2"), _values(trees[1], "fc2"))


@pytest.mark.parametrize("site", [("relu3", "output"), ("conv2", "input"), None])
def test_the_randomness_probe_measures_what_a_probe_pass_of_its_own_does(site):
    from neurovar.record._sites import LeafBytes, _untracked_randomness

    model = SmallCNN().eval()
    cpu = torch.device("cpu")
    with inject_noise(model, {"relu3": IsotropicNoise(0.1, rng=0)}):
        measured = LeafBytes()
        assert _untracked_randomness(model, _digits(1), site, cpu, leaf_bytes=measured) == site
        alone = _budget.activation_bytes(model, _digits(1), site, cpu)
    assert measured.result(site) == alone
    assert measured.result(None) == _budget.activation_bytes(model, _digits(1), None, cpu)


def test_an_in_place_layer_after_the_site_does_not_look_like_randomness():
    # the measured probe pass goes on past the site; ReLU(inplace=True) right after it would
    # change the site's output captured for the comparison of the two passes, unless copied
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 3)).eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    with inject_noise(model, {"0": IsotropicNoise(0.5, rng=0)}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tree = record_activations(model, x, layers=["2"], n_trials=3, rng=0, progress=False)
    assert tree.attrs["branch_site"] == "0:output"
    assert tree.attrs["batch_size"] == 5 * 3


def test_a_failure_after_the_site_in_the_probe_only_costs_a_probe_pass():
    class NotTwo(nn.Module):  # fails on the probe's batch of two copies only
        def forward(self, x):
            if len(x) == 2:
                raise RuntimeError("a batch of two")
            return x

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), NotTwo(), nn.Linear(8, 3)).eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    kw = dict(layers=["2"], n_trials=3, rng=0, progress=False)
    with inject_noise(model, {"0": IsotropicNoise(0.5, rng=0)}):
        auto = record_activations(model, x, **kw)
        explicit = record_activations(model, x, batch_size=15, **kw)
    assert auto.attrs["batch_size"] == 15  # from a probe pass of its own (one stimulus)
    np.testing.assert_array_equal(_values(auto, "2"), _values(explicit, "2"))
