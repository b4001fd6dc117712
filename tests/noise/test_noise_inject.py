"""Tests for neurovar.noise.inject: hooks added/removed, reproducibility, training with noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from noise_helpers import assert_cov_close, assert_rng_unchanged, make_tiny_cnn, rng_states
from torch import nn

from neurovar.noise import (
    CovarianceNoise,
    IsotropicNoise,
    LowRankNoise,
    NoiseHook,
    PoissonLikeNoise,
    find_noise_hooks,
    frozen_noise,
    inject_noise,
    suspend_noise,
)


def _n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def _low_rank(seed: int = 0) -> LowRankNoise:
    f = np.random.default_rng(0).standard_normal((6, 2))
    return LowRankNoise(f, 0.1, share="channel", rng=seed)


def test_injection_changes_output_and_is_removed(tiny_cnn, images):
    clean = tiny_cnn(images)
    with inject_noise(tiny_cnn, {"conv2": _low_rank()}) as handle:
        assert _n_hooks(tiny_cnn) == 1
        noisy = tiny_cnn(images)
        assert not torch.allclose(noisy, clean)
        assert not handle.removed
    assert handle.removed
    assert _n_hooks(tiny_cnn) == 0
    assert torch.equal(tiny_cnn(images), clean)


def test_hooks_removed_after_exception(tiny_cnn, images):
    clean = tiny_cnn(images)
    with pytest.raises(RuntimeError, match="boom"):
        with inject_noise(tiny_cnn, {"conv1": IsotropicNoise(1.0, rng=0)}):
            tiny_cnn(images)
            raise RuntimeError("boom")
    assert _n_hooks(tiny_cnn) == 0
    assert torch.equal(tiny_cnn(images), clean)


def test_persistent_handle_enable_toggle_and_remove(tiny_cnn, images):
    clean = tiny_cnn(images)
    handle = inject_noise(tiny_cnn, {"conv1": IsotropicNoise(1.0, rng=0)}, enabled=False)
    assert torch.equal(tiny_cnn(images), clean)
    hook = next(iter(tiny_cnn.conv1._forward_hooks.values()))
    assert not hook._neurovar_noise  # recorder sees no active noise while disabled
    handle.enabled = True
    assert hook._neurovar_noise is True
    assert not torch.allclose(tiny_cnn(images), clean)
    handle.remove()
    handle.remove()  # idempotent
    assert _n_hooks(tiny_cnn) == 0


def test_unknown_layer_lists_valid_names(tiny_cnn):
    with pytest.raises(ValueError, match=r"\['conv3'\].*'conv1', 'relu1', 'conv2'"):
        inject_noise(tiny_cnn, {"conv3": IsotropicNoise(1.0)})
    with pytest.raises(ValueError, match="non-empty mapping"):
        inject_noise(tiny_cnn, {})
    with pytest.raises(TypeError, match="noise module"):
        inject_noise(tiny_cnn, {"conv1": 3.0})
    assert _n_hooks(tiny_cnn) == 0


def test_same_seed_bit_identical_outputs(images):
    outs = []
    for _ in range(2):
        model = make_tiny_cnn()
        with inject_noise(model, {"conv1": _low_rank_c4(seed=3), "fc": IsotropicNoise(0.5, rng=9)}):
            outs.append(model(images))
    assert torch.equal(outs[0], outs[1])
    model = make_tiny_cnn()
    with inject_noise(model, {"conv1": _low_rank_c4(seed=4), "fc": IsotropicNoise(0.5, rng=9)}):
        assert not torch.equal(model(images), outs[0])


def _low_rank_c4(seed: int) -> LowRankNoise:
    return LowRankNoise(np.ones((4, 1)), 0.2, share="channel", rng=seed)


def test_earlier_layers_untouched(tiny_cnn, images):
    seen: dict[str, list[torch.Tensor]] = {"conv1": [], "relu2": []}

    def grab(name):
        return lambda m, i, o: seen[name].append(o.detach().clone())

    handles = [getattr(tiny_cnn, n).register_forward_hook(grab(n)) for n in seen]
    try:
        tiny_cnn(images)
        with inject_noise(tiny_cnn, {"conv2": CovarianceNoise(np.eye(6), share="channel", rng=0)}):
            tiny_cnn(images)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(seen["conv1"][0], seen["conv1"][1])  # before the noise site
    assert not torch.allclose(seen["relu2"][0], seen["relu2"][1])  # after it


def test_marker_and_find_noise_hooks(tiny_cnn):
    with inject_noise(tiny_cnn, {"fc": IsotropicNoise(1.0), "conv2": PoissonLikeNoise()}):
        found = find_noise_hooks(tiny_cnn)
        assert [name for name, _ in found] == ["conv2", "fc"]  # forward order
        for _, hook in found:
            assert isinstance(hook, NoiseHook) and hook._neurovar_noise is True
        markers = [
            h
            for m in tiny_cnn.modules()
            for h in m._forward_hooks.values()
            if getattr(h, "_neurovar_noise", False)
        ]
        assert len(markers) == 2
    assert find_noise_hooks(tiny_cnn) == []


def test_batch_expanded_before_noise_gives_independent_trials(tiny_cnn, images):
    """Mimic the recorder: a prepended hook repeats each image n_trials times at the noise site."""
    n_trials = 50
    x = images[:2]
    clean = tiny_cnn(x)
    noise = CovarianceNoise(0.05 * np.eye(6), share="channel", rng=0)
    with inject_noise(tiny_cnn, {"conv2": noise}):
        expand = tiny_cnn.conv2.register_forward_hook(
            lambda m, i, o: o.repeat_interleave(n_trials, dim=0), prepend=True
        )
        try:
            out = tiny_cnn(x).reshape(2, n_trials, -1)
        finally:
            expand.remove()
    assert not torch.allclose(out[:, 0], out[:, 1])  # trials differ
    sd = out.std(dim=1)
    assert torch.all(sd > 0)
    # trial mean is close to the clean output (small noise, averaged over trials)
    assert torch.allclose(
        out.mean(dim=1), clean, atol=4 * sd.max().item() / np.sqrt(n_trials) + 0.05
    )


def test_frozen_noise_context(tiny_cnn, images):
    noise = IsotropicNoise(1.0, rng=0)
    with inject_noise(tiny_cnn, {"conv1": noise}) as handle:
        with frozen_noise(handle):
            a, b = tiny_cnn(images), tiny_cnn(images)
            assert noise.frozen
        assert torch.equal(a, b)
        assert not noise.frozen
        assert not torch.equal(tiny_cnn(images), tiny_cnn(images))
        with frozen_noise(tiny_cnn):  # a model: all its injected noise
            assert noise.frozen
        handle.freeze()
        c = tiny_cnn(images)
        assert torch.equal(c, tiny_cnn(images))
        handle.unfreeze()
    with pytest.raises(TypeError, match="frozen_noise"):
        with frozen_noise("noise"):
            pass


def test_suspend_noise_gives_clean_output(tiny_cnn, images):
    clean = tiny_cnn(images)
    with inject_noise(tiny_cnn, {"conv1": IsotropicNoise(1.0, rng=0)}):
        with suspend_noise(tiny_cnn):
            assert torch.equal(tiny_cnn(images), clean)
        assert not torch.allclose(tiny_cnn(images), clean)


def test_model_state_and_global_rng_unchanged(tiny_cnn, images):
    tiny_cnn.eval()
    before = rng_states()
    with inject_noise(tiny_cnn, {"conv2": _low_rank(), "fc": PoissonLikeNoise(rng=1)}):
        tiny_cnn(images)
    assert_rng_unchanged(before)
    assert not tiny_cnn.training
    assert all(not m.training for m in tiny_cnn.modules())


def test_noise_applied_in_eval_and_train_and_running_stats_follow_mode(tiny_cnn, images):
    noise = IsotropicNoise(0.5, n_units=4, share="channel", relative_scale=0.1, rng=0)
    with inject_noise(tiny_cnn, {"conv1": noise}):
        tiny_cnn.train()
        tiny_cnn(images)
        assert int(noise.num_batches_tracked) == 1 and noise.training
        tiny_cnn.eval()
        clean = None
        with suspend_noise(tiny_cnn):
            clean = tiny_cnn(images)
        assert not torch.allclose(tiny_cnn(images), clean)  # noise also at test time
        assert int(noise.num_batches_tracked) == 1 and not noise.training


def test_training_with_injected_noise_reduces_loss():
    gen = torch.Generator().manual_seed(0)
    n = 96
    labels = torch.arange(n) % 3
    templates = torch.randn(3, 1, 8, 8, generator=gen)
    x = templates[labels] + 0.8 * torch.randn(n, 1, 8, 8, generator=gen)
    model = make_tiny_cnn(seed=1)
    noise = LowRankNoise(np.ones((6, 2)) / 2, 0.05, share="channel", relative_scale=0.2, rng=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    handle = inject_noise(model, {"conv2": noise})
    losses = []
    try:
        model.train()
        for _ in range(60):
            opt.zero_grad()
            loss = loss_fn(model(x), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        handle.remove()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert noise.effective_snr == pytest.approx(5.0, rel=0.25)
    assert _n_hooks(model) == 0


def test_record_activations_branches_at_channel_shared_low_rank_noise(tiny_cnn):
    """Composes with record_activations: trials branch at the noisy conv layer, the layer before
    it is identical across trials, and the trial covariance of the C channels at one spatial
    position is the target F F^T + diag(d)."""
    record = pytest.importorskip("neurovar.record")
    tiny_cnn.eval()
    rng = np.random.default_rng(3)
    f, d = 0.5 * rng.standard_normal((6, 2)), rng.uniform(0.05, 0.2, 6)
    noise = LowRankNoise(f, d, share="channel", rng=0)
    x = torch.as_tensor(rng.standard_normal((2, 1, 8, 8)), dtype=torch.float32)
    n_trials = 3000
    before = rng_states()
    with inject_noise(tiny_cnn, {"conv2": noise}):
        tree = record.record_activations(
            tiny_cnn, x, layers=["conv1", "conv2"], n_trials=n_trials, rng=1, progress=False
        )
    assert_rng_unchanged(before)
    assert _n_hooks(tiny_cnn) == 0
    assert tree.attrs["branch_site"] == "conv2:output"
    conv1 = tree["conv1"]["activation"].values
    assert np.array_equal(conv1, np.broadcast_to(conv1[:1], conv1.shape))
    act = tree["conv2"]["activation"]
    for stim, (yy, xx) in ((0, (3, 5)), (1, (0, 7))):
        at = act.isel(stimulus=stim).where((act.y == yy) & (act.x == xx), drop=True)
        assert list(at.channel.values) == list(range(6))
        assert_cov_close(np.cov(at.values, rowvar=False), f @ f.T + np.diag(d), n_trials)
    # different positions get independent draws: cross-covariance ~ 0
    a = act.isel(stimulus=0).where((act.y == 3) & (act.x == 5), drop=True).values
    b = act.isel(stimulus=0).where((act.y == 4) & (act.x == 5), drop=True).values
    cross = np.cov(a, b, rowvar=False)[:6, 6:]
    sd = np.sqrt(np.diag(f @ f.T + np.diag(d)))
    assert np.all(np.abs(cross) <= 5 * np.outer(sd, sd) / np.sqrt(n_trials))


def test_frozen_noise_restores_every_module_after_an_exception(tiny_cnn, images):
    a, b = IsotropicNoise(1.0, rng=0), IsotropicNoise(1.0, rng=1)
    h = torch.zeros(2, 10)
    b.freeze()
    replayed = b(h)  # b was frozen before, with this draw
    with inject_noise(tiny_cnn, {"conv1": a, "fc": b}) as handle:
        with pytest.raises(RuntimeError, match="boom"):
            with frozen_noise(handle, tiny_cnn, a):  # a module reached three ways
                assert a.frozen and b.frozen
                tiny_cnn(images)  # new draws for both
                raise RuntimeError("boom")
    assert not a.frozen and b.frozen
    assert torch.equal(b(h), replayed)  # b's earlier draw is back, not the one of the block


def test_noise_hook_layer_and_its_old_name():
    hook = NoiseHook(IsotropicNoise(1.0, rng=0), layer="fc")
    assert hook.layer == "fc" and repr(hook).startswith("NoiseHook(layer='fc'")
    assert NoiseHook(IsotropicNoise(1.0, rng=0), "fc").layer == "fc"  # positional
    with pytest.warns(FutureWarning, match="'layer_name' parameter of NoiseHook was renamed"):
        old = NoiseHook(IsotropicNoise(1.0, rng=0), layer_name="conv1")
    assert old.layer == "conv1"
    with pytest.warns(FutureWarning, match="'layer_name' attribute of NoiseHook was renamed"):
        assert old.layer_name == "conv1"
    with pytest.warns(FutureWarning, match="'layer_name' attribute of NoiseHook was renamed"):
        old.layer_name = "conv2"
    assert old.layer == "conv2"
    # a hook pickled before the rename (its state holds 'layer_name') loads with .layer
    import pickle

    legacy = pickle.loads(pickle.dumps(old))
    legacy_state = {k: v for k, v in vars(legacy).items() if k != "layer"}
    legacy_state["layer_name"] = "conv3"
    fresh = NoiseHook.__new__(NoiseHook)
    fresh.__setstate__(legacy_state)
    assert fresh.layer == "conv3" and "layer_name" not in vars(fresh)
    assert repr(fresh).startswith("NoiseHook(layer='conv3'")
    with pytest.raises(TypeError, match="not both"):
        NoiseHook(IsotropicNoise(1.0), layer="a", layer_name="b")


def test_hooks_of_inject_noise_know_their_layer(tiny_cnn, images):
    with inject_noise(tiny_cnn, {"conv2": IsotropicNoise(1.0, rng=0)}) as handle:
        assert [(name, hook.layer) for name, hook in handle.hooks.items()] == [("conv2", "conv2")]
        assert [hook.layer for _, hook in find_noise_hooks(tiny_cnn)] == ["conv2"]
