"""Small reference networks and a seeded, device-agnostic training loop."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._compat import renamed_parameters
from ._torch import resolve_device, seed_from, seeded_torch
from .datasets import ImageDataset

# resolve_device is re-exported: the one device rule lives in neurovar._torch
__all__ = ["SmallCNN", "TrainHistory", "train", "evaluate_accuracy", "resolve_device"]

RNGLike = int | np.random.Generator | torch.Generator


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
    rng
        Seed (or numpy / torch Generator giving one) of the weight initialisation (PyTorch's
        default initialisers). The caller's global torch RNG state is unchanged.
    """

    @renamed_parameters({"seed": "rng"})
    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        n_classes: int = 10,
        channels: tuple[int, int] = (16, 32),
        hidden: int = 64,
        dropout: float = 0.0,
        rng: RNGLike = 0,
    ) -> None:
        from ._validation import check_int, check_real, check_rng, param_error

        for pname, value in (
            ("in_channels", in_channels),
            ("n_classes", n_classes),
            ("hidden", hidden),
        ):
            check_int(value, name=pname, owner="SmallCNN", low=1)
        check_rng(rng, name="rng", owner="SmallCNN")
        image_size = check_int(image_size, name="image_size", owner="SmallCNN", low=2)
        if image_size % 2:
            raise param_error("image_size", "SmallCNN", "an even integer >= 2", image_size)
        check_real(dropout, name="dropout", owner="SmallCNN", low=0.0, high=1.0, high_open=True)
        if (
            not isinstance(channels, (tuple, list))
            or len(channels) != 2
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels)
        ):
            raise param_error("channels", "SmallCNN", "a pair of ints >= 1", channels)
        from ._validation import check_memory

        c1_, c2_ = channels
        flat_ = c2_ * (image_size // 2) ** 2
        for pname, value, n_weights in (
            ("in_channels", in_channels, in_channels * c1_ * 9),
            ("channels", channels, c1_ * c2_ * 9 + c2_),
            ("image_size", image_size, flat_),
            ("hidden", hidden, flat_ * hidden),
            ("n_classes", n_classes, hidden * n_classes),
        ):
            check_memory(
                4.0 * n_weights, name=pname, owner="SmallCNN", value=value, what="the weights"
            )
        seed = seed_from(rng)
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
    """Fraction of ``images`` classified as ``labels`` (model used in its current train/eval mode).

    Runs where the model is unless ``device`` is given (:func:`neurovar._torch.resolve_device`).
    """
    from ._validation import check_instance, check_int, check_tensor, param_error

    owner = "evaluate_accuracy"
    check_instance(model, nn.Module, name="model", owner=owner, expected="a torch.nn.Module")
    check_tensor(images, name="images", owner=owner, floating=True)
    check_tensor(labels, name="labels", owner=owner, ndim=1, floating=False)
    if len(labels) != len(images):
        raise param_error("labels", owner, f"of length {len(images)} (one per image)", len(labels))
    if int(labels.min()) < 0:
        raise param_error("labels", owner, "class indices >= 0", f"min label {int(labels.min())}")
    batch_size = check_int(batch_size, name="batch_size", owner=owner, low=1)
    dev = resolve_device(device, model=model, owner=owner)
    n_out: int | None = None
    correct = 0
    for start in range(0, len(images), batch_size):
        xb = images[start : start + batch_size].to(dev)
        yb = labels[start : start + batch_size].to(dev)
        logits = model(xb)
        if n_out is None:
            n_out = logits.shape[-1]
            if int(labels.max()) >= n_out:
                raise param_error(
                    "labels",
                    owner,
                    f"class indices in [0, {n_out - 1}] (the model has {n_out} outputs)",
                    f"max label {int(labels.max())}",
                )
        correct += (logits.argmax(1) == yb).sum().item()
    return correct / len(images)


@renamed_parameters({"seed": "rng"})
def train(
    model: nn.Module,
    data: ImageDataset,
    *,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    rng: RNGLike = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> TrainHistory:
    """Train ``model`` on ``data`` with Adam and cross-entropy, reproducibly from ``rng``.

    Mini-batch order and every draw of stochastic layers (dropout, noise modules that use the
    global generator) come from ``rng``; the caller's global torch RNG state is unchanged
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
    rng
        Seed (or numpy / torch Generator giving one) for batch order and stochastic layers.
    device
        Where to train; default: where the model is (its parameters' device, else the CPU;
        :func:`neurovar._torch.resolve_device`). Pass ``device="cuda"`` to train on a GPU.
    progress
        Show a tqdm progress bar over epochs.

    Returns
    -------
    TrainHistory
        Mean training loss, train accuracy and test accuracy per epoch.
    """
    from ._validation import check_bool, check_instance, check_int, check_real, check_rng

    check_instance(model, nn.Module, name="model", owner="train", expected="a torch.nn.Module")
    check_rng(rng, name="rng", owner="train")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        check_int(value, name=name, owner="train", low=1)
    check_real(lr, name="lr", owner="train", low=0, low_open=True)
    check_real(weight_decay, name="weight_decay", owner="train", low=0)
    progress = check_bool(progress, name="progress", owner="train")
    dev = resolve_device(device, model=model, owner="train")
    seed = seed_from(rng)
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
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"train: the loss became {loss.item()} in epoch {len(history.loss) + 1} "
                        f"(batch starting at {start}); lower 'lr' (now {lr!r}) or check the data."
                    )
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
    n_classes: int = 10, *, in_channels: int = 3, rng: RNGLike | None = None
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

    from ._validation import check_int, check_memory

    for name, value, per_unit in (("n_classes", n_classes, 513), ("in_channels", in_channels, 576)):
        check_int(value, name=name, owner="resnet18_cifar", low=1)
        # the final layer holds 512 weights + 1 bias per class; conv1 64 x 3 x 3 per channel
        check_memory(4.0 * per_unit * value, name=name, owner="resnet18_cifar", value=value,
                     what="the weights it implies")
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
