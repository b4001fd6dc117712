import json
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from neurovar.models import SmallCNN
from neurovar.record import (
    find_noise_site,
    load_recording,
    record_activations,
    save_recording,
    unit_coords,
)

LAYERS = ["conv1", "relu3", "dropout", "fc2"]


class AddNoise:
    """A minimal noise hook following the inject_noise contract (``_neurovar_noise``)."""

    _neurovar_noise = True

    def __init__(self, std, seed=0):
        self.std = std
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, module, inp, out):
        return out + self.std * torch.randn(out.shape, generator=self.gen)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(7, 1, 8, 8, generator=g)


def test_dims_coords_and_attrs(images, global_rng_guard):
    model = SmallCNN(dropout=0.5).train()
    tree = record_activations(
        model, images, layers=LAYERS, n_trials=4, labels=torch.arange(7) % 3, rng=1, progress=False
    )
    assert set(tree.children) == set(LAYERS)
    conv = tree["conv1"]["activation"]
    assert conv.dims == ("trial", "stimulus", "unit")
    assert conv.shape == (4, 7, 16 * 8 * 8)
    assert conv["stimulus_id"].values.tolist() == list(range(7))
    assert conv["label"].values.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert conv["unit_id"].values.tolist() == list(range(1024))
    # unit coordinates match tensor.flatten(1) of the (C, H, W) map
    assert (conv["channel"].values[:64] == 0).all() and conv["channel"].values[64] == 1
    assert conv["y"].values[8] == 1 and conv["x"].values[9] == 1
    assert conv.sel(channel=3).shape == (4, 7, 64)
    assert (conv["layer"].values == "conv1").all()
    fc2 = tree["fc2"]["activation"]
    assert fc2.shape == (4, 7, 10) and "y" not in fc2.coords
    attrs = tree["fc2"].attrs
    assert attrs["layer"] == "fc2" and attrs["seed"] == 1 and attrs["n_trials"] == 4
    assert attrs["branch_site"] == "dropout:input"
    assert "dropout" in json.loads(attrs["noise_config"])
    # values equal a direct forward pass for the deterministic prefix
    with torch.no_grad():
        direct = model.conv1(images).flatten(1).numpy()
    np.testing.assert_allclose(conv.isel(trial=2).values, direct, rtol=1e-6, atol=1e-6)


def test_deterministic_model_gives_identical_trials(images):
    model = SmallCNN(dropout=0.5).eval()
    tree = record_activations(model, images, layers=LAYERS, n_trials=5, progress=False)
    assert tree.attrs["branch_site"] == "input"
    for layer in LAYERS:
        a = tree[layer]["activation"].values
        assert np.array_equal(a, np.broadcast_to(a[:1], a.shape))
    assert not model.training


def test_dropout_trials_differ_after_site_only(images):
    model = SmallCNN(dropout=0.5).train()
    tree = record_activations(model, images, layers=LAYERS, n_trials=6, rng=0, progress=False)
    before = tree["relu3"]["activation"].values
    assert np.array_equal(before, np.broadcast_to(before[:1], before.shape))
    after = tree["dropout"]["activation"].values
    assert not np.array_equal(after[0], after[1])
    # dropout zeroes about half of the active units in every trial
    active = np.broadcast_to(before[:1], before.shape) > 0
    zero_frac = (after[active] == 0).mean()
    assert 0.4 < zero_frac < 0.6
    assert model.training  # train/eval state untouched


def test_prefix_runs_once_per_stimulus(images):
    model = SmallCNN(dropout=0.5).train()
    seen = []
    h = model.conv1.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    try:
        record_activations(model, images, layers=["fc2"], n_trials=10, rng=0, progress=False)
    finally:
        h.remove()
    # one probe pass on a single stimulus, two passes on two copies of it (the check for
    # randomness neurovar does not track; the first also measures the activation bytes of
    # batch_size="auto"), then 7 stimuli (not 70) through the prefix
    assert seen == [1, 2, 2, 7]


def test_noise_hook_site_is_branched_at_output(images, global_rng_guard):
    model = SmallCNN().eval()
    hook = model.relu1.register_forward_hook(AddNoise(0.1))
    try:
        assert find_noise_site(model, images[:1]) == ("relu1", "output")
        tree = record_activations(
            model, images, layers=["conv1", "relu1", "fc2"], n_trials=8, progress=False
        )
    finally:
        hook.remove()
    assert tree.attrs["branch_site"] == "relu1:output"
    conv = tree["conv1"]["activation"].values
    assert np.array_equal(conv, np.broadcast_to(conv[:1], conv.shape))
    noisy = tree["relu1"]["activation"]
    # the recorded noisy layer includes the noise: trial std close to the injected std
    assert abs(float(noisy.std("trial", ddof=1).mean()) - 0.1) < 0.01


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        return self.head((self.conv(x) + x).flatten(1))  # skip connection jumps over conv


def test_skip_connection_falls_back_to_input_folding(images):
    model = Residual().eval()
    hook = model.conv.register_forward_hook(AddNoise(0.5))
    try:
        with pytest.warns(RuntimeWarning, match="Falling back to folding trials at the input"):
            tree = record_activations(
                model, images, layers=["conv", "head"], n_trials=3, progress=False
            )
    finally:
        hook.remove()
    assert tree.attrs["branch_site"] == "input"
    head = tree["head"]["activation"].values
    assert head.shape == (3, 7, 3) and not np.array_equal(head[0], head[1])


def test_reproducible_from_seed_and_global_rng_untouched(images, global_rng_guard):
    model = SmallCNN(dropout=0.5).train()
    a = record_activations(model, images, layers=["dropout"], n_trials=3, rng=7, progress=False)
    b = record_activations(model, images, layers=["dropout"], n_trials=3, rng=7, progress=False)
    c = record_activations(model, images, layers=["dropout"], n_trials=3, rng=8, progress=False)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a["dropout"]["activation"].values, c["dropout"]["activation"].values)
    gen = np.random.default_rng(7)
    d = record_activations(model, images, layers=["dropout"], n_trials=3, rng=gen, progress=False)
    assert d.attrs["seed"] != 7


def test_trials_split_across_batches(images):
    model = SmallCNN(dropout=0.5).train()
    tree = record_activations(
        model, images, layers=["fc2"], n_trials=9, batch_size=4, rng=0, progress=False
    )
    vals = tree["fc2"]["activation"].values
    assert vals.shape == (9, 7, 10)
    assert len({vals[t].tobytes() for t in range(9)}) == 9  # all trials are distinct draws


def test_hooks_and_modes_restored_after_error(images):
    model = SmallCNN(dropout=0.5).train()
    bn = nn.BatchNorm1d(10).train()
    model.add_module("bn", bn)
    with pytest.raises(TypeError, match="'stimuli' parameter"):
        record_activations(model, [1, 2], layers=["fc2"], n_trials=2)

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model.fc2 = nn.Sequential(model.fc2, Boom())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine model error is raised, not a fallback warning
        with pytest.raises(RuntimeError, match="boom"):
            record_activations(model, images, layers=["conv1", "fc2"], n_trials=2, progress=False)
    assert _no_hooks(model)
    assert model.training and bn.training


def test_bad_input_errors(images):
    model = SmallCNN()
    with pytest.raises(
        ValueError,
        match=r"'layers' parameter of record_activations.*Got \['conv9'\] instead.*'conv1'",
    ):
        record_activations(model, images, layers=["conv9"], n_trials=2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="'n_trials' parameter"):
            record_activations(model, images, layers=["fc2"], n_trials=bad)
    with pytest.raises(ValueError, match="'stimuli' parameter"):
        record_activations(model, torch.zeros(0, 1, 8, 8), layers=["fc2"], n_trials=2)
    with pytest.raises(
        ValueError, match="'labels' parameter of record_activations must be of shape \\(7,\\)"
    ):
        record_activations(model, images, layers=["fc2"], n_trials=2, labels=[1, 2])
    with pytest.raises(ValueError, match="'branch' parameter"):
        record_activations(model, images, layers=["fc2"], n_trials=2, branch="nowhere")
    with pytest.raises(
        ValueError, match="'store' parameter of record_activations must be a path ending in '.zarr'"
    ):
        record_activations(model, images, layers=["fc2"], n_trials=2, store="x.h5")
    assert _no_hooks(model)


def test_store_streams_to_zarr_identically(images, tmp_path):
    model = SmallCNN(dropout=0.5).train()
    kwargs = dict(
        layers=["conv1", "dropout", "fc2"],
        n_trials=3,
        rng=4,
        batch_size=6,
        progress=False,
        stimulus_coords={"severity": np.arange(7) % 2},
    )
    mem = record_activations(model, images, **kwargs)
    path = tmp_path / "rec.zarr"
    disk = record_activations(model, images, store=path, **kwargs)
    act = disk["fc2"]["activation"]
    assert act.chunks is not None  # lazily opened with dask
    assert act.chunks[1] == (2, 2, 2, 1)  # one chunk per recording batch of 2 stimuli x 3 trials
    xr.testing.assert_identical(disk.load(), mem)
    # an existing store is never clobbered without overwrite=True
    before = sorted(p.name for p in path.rglob("*"))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        record_activations(model, images, store=path, **kwargs)
    assert sorted(p.name for p in path.rglob("*")) == before
    again = record_activations(model, images, store=path, overwrite=True, **kwargs)
    xr.testing.assert_identical(again.load(), mem)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_save_load_round_trip_is_exact(images, tmp_path, suffix):
    model = SmallCNN(dropout=0.5).train()
    tree = record_activations(
        model,
        images,
        layers=["conv1", "fc2"],
        n_trials=2,
        rng=0,
        labels=np.arange(7),
        progress=False,
    )
    path = save_recording(tree, tmp_path / f"rec{suffix}")
    back = load_recording(path)
    xr.testing.assert_identical(back.load(), tree)
    assert back["conv1"].attrs == tree["conv1"].attrs and back.attrs == tree.attrs
    assert back["conv1"]["activation"].sel(channel=2).shape == (2, 7, 64)
    with pytest.raises(FileExistsError):
        save_recording(tree, path)
    with pytest.raises(ValueError, match="'.nc' or '.zarr'"):
        save_recording(tree, tmp_path / "rec.csv")


def test_unit_coords_for_other_shapes():
    c = unit_coords("x", (4, 3))
    assert c["channel"][1].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert "y" not in c


def test_rng_reseeds_injected_noise_modules(images):
    from neurovar.noise import IsotropicNoise, inject_noise

    model = SmallCNN().eval()
    with inject_noise(model, {"relu2": IsotropicNoise(0.2, rng=123)}):
        a = record_activations(model, images, layers=["fc2"], n_trials=4, rng=5, progress=False)
        b = record_activations(model, images, layers=["fc2"], n_trials=4, rng=5, progress=False)
        c = record_activations(model, images, layers=["fc2"], n_trials=4, progress=False)
        d = record_activations(model, images, layers=["fc2"], n_trials=4, progress=False)
    xr.testing.assert_identical(a, b)
    assert a.attrs["branch_site"] == "relu2:output"
    config = json.loads(a.attrs["noise_config"])["relu2"]
    assert config["type"] == "IsotropicNoise" and config["std"] == 0.2
    # without rng the module keeps drawing from its own stream: successive recordings differ
    assert not np.array_equal(c["fc2"]["activation"].values, d["fc2"]["activation"].values)
    # with rng the module's own stream is left where it was
    own, fresh = IsotropicNoise(0.2, rng=9), IsotropicNoise(0.2, rng=9)
    with inject_noise(model, {"relu2": own}):
        record_activations(model, images, layers=["fc2"], n_trials=2, rng=1, progress=False)
    z = torch.zeros(3, 4)
    assert torch.equal(own(z), fresh(z))


def test_frozen_and_running_estimate_noise_survive_recording(images):
    from neurovar.noise import IsotropicNoise, frozen_noise, inject_noise

    model = SmallCNN().eval()
    noise = IsotropicNoise(0.3, rng=0)
    with inject_noise(model, {"relu2": noise}):
        with frozen_noise(noise):
            # the probe draws no noise, so the frozen draw is made for the real batch
            tree = record_activations(model, images, layers=["fc2"], n_trials=3, progress=False)
        vals = tree["fc2"]["activation"].values
        assert vals.shape == (3, 7, 10)
    relative = IsotropicNoise(1.0, relative_scale=0.5, rng=0)
    model.train()
    with inject_noise(model, {"relu2": relative}):
        model(torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)))  # estimate
        before = [b.clone() for b in relative.buffers()]
        record_activations(model, images, layers=["fc2"], n_trials=4, rng=0, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, relative.buffers()))


def test_training_mode_relative_noise_is_warned_about(images):
    """Relative-scale noise in training mode would size itself on trial copies: say so."""
    from neurovar.noise import IsotropicNoise, inject_noise

    model = SmallCNN().train()
    relative = IsotropicNoise(1.0, relative_scale=0.5, rng=0)
    with inject_noise(model, {"relu2": relative}):
        model(torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)))  # estimate
        with pytest.warns(RuntimeWarning, match="'relu2' has relative_scale=0.5 and the layer"):
            record_activations(model, images, layers=["fc2"], n_trials=4, rng=0, progress=False)
        model.eval()  # the noise uses its running estimate: no warning, and noise is added
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            tree = record_activations(
                model, images, layers=["fc2"], n_trials=4, batch_size=4, rng=0, progress=False
            )
    spread = tree["fc2"]["activation"].std("trial")
    assert float(spread.min()) > 0  # one stimulus per pass and still noisy across trials
