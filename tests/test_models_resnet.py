"""ResNet-18 adapted to 32x32 (CIFAR): architecture, seeded init, recording and noise by name."""

from __future__ import annotations

import pytest
import torch

from neurovar.models import resnet18_cifar
from neurovar.noise import IsotropicNoise, inject_noise
from neurovar.record import record_activations


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def net():
    return resnet18_cifar(rng=0).eval()


def test_cifar_stem_and_stage_sizes(net):
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity) and net.fc.out_features == 10
    sizes = {}
    hooks = [
        getattr(net, name).register_forward_hook(
            lambda m, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[1:]))
        )
        for name in ("layer1", "layer2", "layer3", "layer4")
    ]
    try:
        with torch.no_grad():
            out = net(torch.rand(2, 3, 32, 32))
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == (2, 10)
    assert sizes == {
        "layer1": (64, 32, 32), "layer2": (128, 16, 16),
        "layer3": (256, 8, 8), "layer4": (512, 4, 4),
    }


def test_seeded_init_leaves_global_rng_untouched(global_rng_guard, net):
    again = resnet18_cifar(rng=0)
    assert all(torch.equal(p, q) for p, q in zip(net.state_dict().values(), again.state_dict().values()))
    other = resnet18_cifar(rng=1)
    assert not torch.equal(net.conv1.weight, other.conv1.weight)
    assert not torch.equal(net.layer2[0].conv1.weight, other.layer2[0].conv1.weight)
    assert resnet18_cifar(100, in_channels=1, rng=0)(torch.zeros(1, 1, 32, 32)).shape == (1, 100)
    with pytest.raises(ValueError, match="'n_classes' parameter of resnet18_cifar"):
        resnet18_cifar(0)


def test_record_and_inject_noise_on_layer2_layer3(global_rng_guard, net):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = dict(layers=["layer2", "layer3"], n_trials=3, rng=0, progress=False, device="cpu")
    clean = record_activations(net, x, **kw)
    a2, a3 = clean["layer2"]["activation"], clean["layer3"]["activation"]
    assert a2.sizes == {"trial": 3, "stimulus": 2, "unit": 128 * 16 * 16}
    assert a3.sizes == {"trial": 3, "stimulus": 2, "unit": 256 * 8 * 8}
    assert float(a3.var("trial").max()) < 1e-10  # deterministic without noise (up to rounding)
    with inject_noise(net, {"layer2": IsotropicNoise(0.5, rng=0)}):
        noisy = record_activations(net, x, **kw)
        again = record_activations(net, x, **kw)
    n3 = noisy["layer3"]["activation"]
    assert float(n3.var("trial").mean()) > 1e-4  # noise at layer2 reaches layer3, per trial
    assert torch.equal(torch.as_tensor(n3.values), torch.as_tensor(again["layer3"]["activation"].values))
    assert not any(True for _ in net._forward_hooks.values())  # hooks removed
    with torch.no_grad():  # noise removed: the network is the clean one again
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
