"""Data, model and device of an experiment config (shared by every cell, cached per process)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from neurovar._validation import check_device, check_int
from neurovar.datasets import ImageDataset

__all__ = ["build_model", "load_data", "resolve_config_device", "DATA_SHAPES", "DATA_SIZES",
           "N_CLASSES", "MODEL_INPUTS"]

#: Image shape (channels, side) of each data set.
DATA_SHAPES = {"digits": (1, 8), "mnist_embedded": (1, 28), "mnist": (1, 28),
               "fashion_mnist": (1, 28), "cifar10": (3, 32)}
#: Images in the (train, test) split of each data set (the most ``limit`` can keep).
DATA_SIZES = {"digits": (1347, 450), "mnist_embedded": (4000, 1000), "mnist": (60000, 10000),
              "fashion_mnist": (60000, 10000), "cifar10": (50000, 10000)}
#: Classes of each data set.
N_CLASSES = {"digits": 10, "mnist_embedded": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}
#: What each model accepts: (channels, side) or None for any single/multi-channel square image.
MODEL_INPUTS = {"small_cnn": None, "preble_cnn": (1, 28), "resnet18_cifar": (3, 32)}


def build_model(config, *, rng: int = 0) -> nn.Module:
    """The config's untrained network, its weights initialised from ``rng`` (an int seed).

    ``small_cnn``: :class:`neurovar.models.SmallCNN` for the data set's image shape;
    ``preble_cnn``: :class:`neurovar.models.PrebleCNN` (Preble et al. 2026, 28x28);
    ``resnet18_cifar``: torchvision's ResNet-18 adapted to 32x32 inputs
    (:func:`neurovar.models.resnet18_cifar`).
    """
    from neurovar import models

    rng = check_int(rng, name="rng", owner="build_model", low=0)
    shape = DATA_SHAPES[config.data.name]
    if config.model.name == "preble_cnn":
        return models.PrebleCNN(activation=config.model.activation, n_classes=10, rng=int(rng))
    if config.model.name == "small_cnn":
        return models.SmallCNN(
            in_channels=shape[0],
            image_size=shape[1],
            n_classes=10,
            channels=tuple(config.model.channels),
            hidden=config.model.hidden,
            dropout=config.model.dropout,
            rng=int(rng),
        )
    factory = getattr(models, "resnet18_cifar", None)
    if factory is None:  # pragma: no cover - depends on the models module of this version
        raise ValueError("model 'resnet18_cifar' is not available in this version of neurovar")
    return factory(n_classes=10, rng=int(rng))


@functools.lru_cache(maxsize=4)
def _load(name: str, root: str | None, limit: int | None, verify: bool,
          n_train: int | None) -> ImageDataset:
    from dataclasses import replace

    from neurovar import datasets

    if name == "digits":
        data = datasets.load_digits()
    elif name == "mnist_embedded":
        data = datasets.load_mnist_embedded()
    elif name == "mnist":
        data = datasets.load_mnist(root, limit=limit)
    elif name == "fashion_mnist":
        data = datasets.load_fashion_mnist(root, limit=limit)
    else:
        data = datasets.load_cifar10(root, limit=limit, verify=verify)
    if n_train is not None:
        data = replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train])
    return data


def load_data(config) -> ImageDataset:
    """The config's data set (the split is fixed; seeds vary the network, not the data)."""
    d = config.data
    root = None if d.root is None else str(Path(d.root).expanduser())
    return _load(d.name, root, d.limit, d.verify, d.n_train)


def resolve_config_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # refuses unknown names and devices this machine does not have ("cuda" without CUDA)
    return check_device(device, owner="resolve_config_device", allow_none=False)
