"""Small reference networks and a seeded, device-agnostic training loop."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ._rng import seeded_torch
from .datasets import ImageDataset

__all__ = ["SmallCNN", "TrainHistory", "train", "evaluate_accuracy", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SmallCNN(nn.Sequential):
    """A small convolutional network for 8x8 (digits) or larger single/multi-channel images.

    Layers (dotted names usable in :func:`neurovar.record.record_activations`)::

        conv1 (C->c1, 3x3) - relu1 - conv2 (c1->c2, 3x3) - relu2 - pool (2x2)
        - flatten - fc1 (->hidden) - relu3 - [dropout] - fc2 (->n_classes)

    Parameters
    ----------
    in_channels, image_size
        Input shape ``(in_channels, image_size, image_size)``; ``image_size`` must be even.
    n_classes
        Number of output classes.
    channels
        ``(c1, c2)`` feature maps of the two conv layers.
    hidden
        Width of ``fc1``.
    dropout
        Dropout probability after ``relu3`` (0 disables the layer: it is not created).
    seed
        Seed of the weight initialisation (PyTorch's default initialisers). The caller's global
        torch RNG state is unchanged.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        n_classes: int = 10,
        channels: tuple[int, int] = (16, 32),
        hidden: int = 64,
        dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        if image_size < 2 or image_size % 2:
            raise ValueError(
                f"The 'image_size' parameter of SmallCNN must be an even integer >= 2. Got {image_size!r} instead."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"The 'dropout' parameter of SmallCNN must be in [0, 1). Got {dropout!r} instead."
            )
        c1, c2 = channels
        flat = c2 * (image_size // 2) ** 2
        # Weight initialisers draw from torch's global generator: build under a fork of it.
        with seeded_torch(seed, torch.device("cpu")):
            layers: list[tuple[str, nn.Module]] = [
                ("conv1", nn.Conv2d(in_channels, c1, 3, padding=1)),
                ("relu1", nn.ReLU()),
                ("conv2", nn.Conv2d(c1, c2, 3, padding=1)),
                ("relu2", nn.ReLU()),
                ("pool", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(flat, hidden)),
                ("relu3", nn.ReLU()),
            ]
            if dropout > 0:
                layers.append(("dropout", nn.Dropout(dropout)))
            layers.append(("fc2", nn.Linear(hidden, n_classes)))
            super().__init__(OrderedDict(layers))
        self.config = {
            "in_channels": in_channels,
            "image_size": image_size,
            "n_classes": n_classes,
            "channels": list(channels),
            "hidden": hidden,
            "dropout": dropout,
            "seed": seed,
        }


@dataclass
class TrainHistory:
    """Loss and accuracy per epoch of :func:`train`."""

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> float:
    """Fraction of ``images`` classified as ``labels`` (model used in its current train/eval mode)."""
    dev = resolve_device(device)
    correct = 0
    for start in range(0, len(images), batch_size):
        xb = images[start : start + batch_size].to(dev)
        yb = labels[start : start + batch_size].to(dev)
        correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / max(len(images), 1)


def train(
    model: nn.Module,
    data: ImageDataset,
    *,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> TrainHistory:
    """Train ``model`` on ``data`` with Adam and cross-entropy, reproducibly from ``seed``.

    Mini-batch order and every draw of stochastic layers (dropout, noise modules that use the
    global generator) come from ``seed``; the caller's global torch RNG state is unchanged
    afterwards. Noise injected with :func:`neurovar.noise.inject_noise` stays active during
    training (train-time injection). The model is left in eval mode with its parameters on
    ``device``.

    Parameters
    ----------
    model
        The network; modified in place.
    data
        Train and test tensors (:class:`neurovar.datasets.ImageDataset`).
    epochs, batch_size, lr, weight_decay
        Optimisation settings (Adam, Kingma & Ba 2015).
    seed
        Seed for batch order and stochastic layers.
    device
        ``None`` picks CUDA when available.
    progress
        Show a tqdm progress bar over epochs.

    Returns
    -------
    TrainHistory
        Mean training loss, train accuracy and test accuracy per epoch.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"The '{name}' parameter of train must be a positive integer. Got {value!r} instead."
            )
    if lr <= 0:
        raise ValueError(f"The 'lr' parameter of train must be > 0. Got {lr!r} instead.")
    dev = resolve_device(device)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    history = TrainHistory()
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = _train_tensors_on(dev, data)
    n = len(x_train)
    with seeded_torch(seed, dev):
        for _ in tqdm(range(epochs), desc="train", disable=not progress, leave=False):
            model.train()
            order = torch.randperm(n, generator=gen)
            total, correct, seen = 0.0, 0, 0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                xb, yb = x_train[idx].to(dev), y_train[idx].to(dev)
                opt.zero_grad(set_to_none=True)
                logits = model(xb)
                loss = loss_fn(logits, yb)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                correct += (logits.argmax(1) == yb).sum().item()
                seen += len(idx)
            model.eval()
            history.loss.append(total / seen)
            history.train_accuracy.append(correct / seen)
            history.test_accuracy.append(
                evaluate_accuracy(model, data.x_test, data.y_test, device=dev)
            )
    model.eval()
    return history


__all__ += ["resnet18_cifar"]


def resnet18_cifar(
    n_classes: int = 10, *, in_channels: int = 3, rng: int | torch.Generator | None = None
) -> nn.Module:
    """torchvision's ResNet-18 adapted to 32x32 images (CIFAR-10), seeded.

    The ImageNet stem (7x7 conv stride 2, then 3x3 max-pool stride 2) would shrink a 32x32 image
    to 8x8 before the first residual stage; as usual for CIFAR (He et al. 2016, Sec. 4.2) the
    stem is one 3x3 conv with stride 1 and no max-pool, so the stages see 32, 16, 8 and 4 pixels.

    Module names (for :func:`neurovar.record.record_activations` and
    :func:`neurovar.noise.inject_noise`): ``conv1``, ``bn1``, ``relu``, ``layer1`` ...
    ``layer4`` (each with blocks ``layer2.0``, ``layer2.1``...), ``avgpool``, ``fc``. Outputs of
    ``layer1..4`` have 64, 128, 256 and 512 channels at 32, 16, 8 and 4 pixels.

    Parameters
    ----------
    n_classes
        Number of output classes.
    in_channels
        Channels of the input images.
    rng
        Seed (int, numpy or torch Generator; ``None``: fresh entropy) of the weight
        initialisation (torchvision's: Kaiming-normal convs, BatchNorm weight 1 and bias 0).
        The caller's global torch RNG state is unchanged.

    References
    ----------
    He, K., Zhang, X., Ren, S. & Sun, J. (2016). Deep residual learning for image recognition.
    CVPR, 770-778.
    """
    from torchvision.models import resnet18

    from ._rng import seed_from

    for name, value in (("n_classes", n_classes), ("in_channels", in_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"The '{name}' parameter of resnet18_cifar must be a positive integer. "
                f"Got {value!r} instead."
            )
    seed = seed_from(rng)
    # Weight initialisers draw from torch's global generator: build under a fork of it.
    with seeded_torch(seed, torch.device("cpu")):
        model = resnet18(weights=None, num_classes=n_classes)
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    model.config = {  # type: ignore[assignment]
        "arch": "resnet18_cifar",
        "n_classes": n_classes,
        "in_channels": in_channels,
        "seed": seed,
    }
    return model


def _train_tensors_on(dev: torch.device, data: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The training tensors, copied once to a CUDA ``dev`` when they take at most a quarter of
    its free memory: mini-batches are then gathered on the GPU instead of a host gather and a
    blocking host-to-device copy per step (in-memory data needs no DataLoader workers). The
    batches, and so the training, are the same either way."""
    x, y = data.x_train, data.y_train
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        if x.element_size() * x.nelement() + y.element_size() * y.nelement() <= free // 4:
            return x.to(dev), y.to(dev)
    return x, y
