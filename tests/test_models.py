import pytest
import torch

from neurovar.datasets import load_digits
from neurovar.models import SmallCNN, evaluate_accuracy, train


def test_small_cnn_reaches_95_percent_on_digits(global_rng_guard):
    data = load_digits()
    model = SmallCNN(rng=0)
    history = train(model, data, epochs=15, rng=0, progress=False)
    assert history.test_accuracy[-1] >= 0.95
    assert history.loss[-1] < history.loss[0]
    assert not model.training
    assert evaluate_accuracy(model, data.x_test, data.y_test) == pytest.approx(
        history.test_accuracy[-1]
    )


def test_training_is_reproducible_from_seed():
    data = load_digits()
    a, b = SmallCNN(dropout=0.2, rng=3), SmallCNN(dropout=0.2, rng=3)
    train(a, data, epochs=2, rng=5, progress=False)
    train(b, data, epochs=2, rng=5, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c = SmallCNN(dropout=0.2, rng=3)
    train(c, data, epochs=2, rng=6, progress=False)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_init_seed_and_global_rng(global_rng_guard):
    assert all(
        torch.equal(p, q)
        for p, q in zip(SmallCNN(rng=1).parameters(), SmallCNN(rng=1).parameters())
    )
    assert not torch.equal(SmallCNN(rng=1).conv1.weight, SmallCNN(rng=2).conv1.weight)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'dropout' parameter of SmallCNN"):
        SmallCNN(dropout=1.0)
    with pytest.raises(ValueError, match="'image_size' parameter of SmallCNN"):
        SmallCNN(image_size=7)
    with pytest.raises(ValueError, match="'epochs' parameter of train"):
        train(SmallCNN(), load_digits(), epochs=0)


def test_rgb_32px_variant_runs():
    model = SmallCNN(in_channels=3, image_size=32)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_cifar_refuses_sizes_that_cannot_fit(monkeypatch):
    from neurovar._validation import InvalidParameterError
    from neurovar.models import resnet18_cifar

    monkeypatch.setenv("NEUROVAR_MAX_BYTES", str(2**20))  # 1 MiB: a 10**12-class head is refused
    for name in ("n_classes", "in_channels"):
        with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of resnet18_cifar"):
            resnet18_cifar(**{name: 10**12})
