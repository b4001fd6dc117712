"""Small reference networks and a seeded, device-agnostic training loop."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ._compat import renamed_parameters
from ._progress import check_progress, progress_bar
from ._torch import resolve_device, seed_from, seeded_torch
from .datasets import ImageDataset

# resolve_device is re-exported: the one device rule lives in neurovar._torch
__all__ = ["SmallCNN", "PrebleCNN", "PREBLE_LAYERS", "MeanLogits", "layers_after",
           "TrainHistory", "train",
           "evaluate_accuracy", "gaussian_augmentation", "adversarial_augmentation",
           "resolve_device"]

RNGLike = int | np.random.Generator | torch.Generator


class SmallCNN(nn.Sequential):
    """A small convolutional network for 8x8 (digits) or larger single/multi-channel images.

    Layers (dotted names usable in :func:`neurovar.record.record_activations`)::

        input (identity: noise at the input) - conv1 (C->c1, 3x3) - relu1 - conv2 (c1->c2, 3x3) - relu2 - pool (2x2)
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
                ("input", nn.Identity()),  # a named site for noise at the input (no weights)
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


#: The noise sites of :class:`PrebleCNN` by the paper's layer index (``--noisy-layer``).
PREBLE_LAYERS: dict[int, str] = {0: "pool0", 1: "tanh1", 2: "pool2", 3: "tanh3", 4: "tanh4"}


class PrebleCNN(nn.Sequential):
    """The network of Preble et al. (2026), ``Mnist_v2_3C3F``: 3 conv + 3 fc layers for 28x28.

    Layers (dotted names usable in :func:`neurovar.record.record_activations` and
    :func:`neurovar.noise.inject_noise`)::

        input (identity: a site for noise at the input, 1x28x28)
        conv0 (1->6, 5x5, pad 2) - tanh0 - pool0 (2x2)        # layer 0: 6x14x14
        conv1 (6->16, 3x3, pad 1) - tanh1                     # layer 1: 16x14x14 = 3,136
        conv2 (16->16, 5x5) - tanh2 - pool2 (2x2) - flatten   # layer 2: 16x5x5
        fc3 (400->32) - tanh3                                 # layer 3: 32
        fc4 (32->16) - tanh4                                  # layer 4: 16
        fc5 (16->10)

    The paper injects its noise at "layer 1", the output of ``tanh1`` (:data:`PREBLE_LAYERS`
    maps the paper's layer index to the module name); its supplementary figure sweeps layers
    0-4. Weights use PyTorch's default initialisers, as the paper's code does.

    Parameters
    ----------
    activation
        ``"tanh"`` (the paper's default, ``--activn tanh``) or ``"relu"``.
    n_classes
        Number of output classes.
    rng
        Seed (or numpy / torch Generator giving one) of the weight initialisation; the global
        torch RNG state is unchanged.

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). Neural variability enhances artificial network
    robustness. arXiv:2606.13801. Code: github.com/glomerulus-lab/structured-noise-robustness,
    ``scripts/models.py`` lines 215-253 (commit 450bcbd).
    """

    def __init__(self, *, activation: str = "tanh", n_classes: int = 10, rng: RNGLike = 0) -> None:
        from ._validation import check_choice, check_int, check_rng

        check_choice(activation, name="activation", owner="PrebleCNN", options=("tanh", "relu"))
        check_int(n_classes, name="n_classes", owner="PrebleCNN", low=1, high=1_000_000)
        check_rng(rng, name="rng", owner="PrebleCNN")
        act = nn.Tanh if activation == "tanh" else nn.ReLU
        seed = seed_from(rng)
        with seeded_torch(seed, torch.device("cpu")):
            super().__init__(OrderedDict([
                ("input", nn.Identity()),  # a named site for noise at the input (no weights)
                ("conv0", nn.Conv2d(1, 6, kernel_size=5, padding=2)),
                ("tanh0", act()),
                ("pool0", nn.MaxPool2d(2)),
                ("conv1", nn.Conv2d(6, 16, kernel_size=3, padding=1)),
                ("tanh1", act()),
                ("conv2", nn.Conv2d(16, 16, kernel_size=5)),
                ("tanh2", act()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc3", nn.Linear(16 * 5 * 5, 32)),
                ("tanh3", act()),
                ("fc4", nn.Linear(32, 16)),
                ("tanh4", act()),
                ("fc5", nn.Linear(16, n_classes)),
            ]))
        self.config = {"arch": "preble_cnn", "activation": activation, "n_classes": n_classes,
                       "seed": seed}


def layers_after(model: nn.Module, layer: str) -> tuple[list[str], list[str]]:
    """Names of the parametrised modules computed up to and including ``layer``, and after it.

    The order is the order in which the modules *run* in one forward pass of a probe input
    (forward hooks on every leaf module), so it holds for any feed-forward network, not only
    for ``nn.Sequential``; a module with parameters that runs both before and after ``layer``
    (weight sharing across the site) is refused. Used by the ``retrain`` regime (Preble et al.
    2026: the layers up to the noise site frozen, the later ones re-initialised and retrained;
    ``scripts/models.py`` lines 159-175).
    """
    from ._validation import param_error

    names = dict(model.named_modules())
    if layer not in names or layer == "":
        raise param_error("layer", "layers_after", "a module name of the model",
                          layer)
    leaves = [n for n, m in model.named_modules() if n and not list(m.children())]
    order: list[str] = []
    handles = [names[n].register_forward_hook(lambda m, i, o, n=n: order.append(n))
               for n in leaves]
    if layer not in leaves:
        handles.append(names[layer].register_forward_hook(
            lambda m, i, o: order.append(layer)))
    probe = getattr(model, "_probe_shape", None)
    try:
        was = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(probe or _probe_input(model)))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    cut = order.index(layer)
    before = {n for n in order[: cut + 1]}
    after = {n for n in order[cut + 1:]}
    def with_params(ns: set[str]) -> list[str]:
        return [n for n in leaves if n in ns and any(True for _ in names[n].parameters(recurse=False))]
    b, a = with_params(before), with_params(after)
    shared = sorted(set(b) & set(a))
    if shared:
        raise param_error("layer", "layers_after", "a site that no module with parameters "
                          f"spans (modules {shared} run both before and after it)", layer)
    return b, a


def _probe_input(model: nn.Module) -> tuple[int, ...]:
    cfg = getattr(model, "config", {}) or {}
    if cfg.get("arch") == "preble_cnn":
        return (1, 1, 28, 28)
    if "image_size" in cfg:
        return (1, cfg.get("in_channels", 1), cfg["image_size"], cfg["image_size"])
    if cfg.get("arch") == "resnet18_cifar":
        return (1, cfg.get("in_channels", 3), 32, 32)
    raise ValueError("layers_after: cannot tell the model's input shape; set "
                     "model._probe_shape = (1, C, H, W)")


class MeanLogits(nn.Module):
    r"""A stochastic network's prediction as the mean logits of ``n_passes`` forward passes.

    :math:`\bar z(x) = \frac1n \sum_{i=1}^n f_{\xi_i}(x)`, each pass with its own draw of the
    network's noise. Preble et al. (2026) classify with the mean of 10 passes
    (``scripts/eval_robustness.py`` lines 163-173, ``--n-ensemble 10``). The passes are folded
    into the batch, so the gradient of :math:`\bar z` is itself an average over ``n_passes``
    draws: attacking this module is EOT through the defended prediction.

    With ``branch_at`` (the name of the noise site, the first stochastic layer) the
    deterministic prefix runs once: a forward hook, registered *before* the noise hook of that
    layer, repeats the layer's output ``n_passes`` times, so each copy then gets its own noise
    draw and only the rest of the network runs ``n_passes`` times. Folding changes batch
    statistics of BatchNorm layers in training mode.
    """

    def __init__(self, model: nn.Module, n_passes: int, *, branch_at: str | None = None
                 ) -> None:
        from ._validation import check_instance, check_int, param_error

        check_instance(model, nn.Module, name="model", owner="MeanLogits",
                       expected="a torch.nn.Module")
        super().__init__()
        self.model = model
        self.n_passes = check_int(n_passes, name="n_passes", owner="MeanLogits", low=1,
                                  high=100_000)
        modules = dict(model.named_modules())
        if branch_at is not None and (branch_at not in modules or branch_at == ""):
            raise param_error("branch_at", "MeanLogits", "a module name of the model (the "
                              "noise site) or None", branch_at)
        self.branch_at = branch_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.n_passes
        if n == 1:
            return self.model(x)
        if self.branch_at is None:
            out = self.model(x.repeat(n, *([1] * (x.dim() - 1))))
            return out.view(n, x.shape[0], *out.shape[1:]).mean(0)
        site = dict(self.model.named_modules())[self.branch_at]

        def repeat(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            return output.repeat(n, *([1] * (output.dim() - 1)))

        handle = site.register_forward_hook(repeat, prepend=True)
        try:
            out = self.model(x)
        finally:
            handle.remove()
        return out.view(n, x.shape[0], *out.shape[1:]).mean(0)


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
    from ._validation import check_instance, check_int, check_model_input, check_tensor, param_error

    owner = "evaluate_accuracy"
    check_instance(model, nn.Module, name="model", owner=owner, expected="a torch.nn.Module")
    check_tensor(images, name="images", owner=owner, floating=True, finite=True)
    check_model_input(model, images, owner=owner)  # dtype and channels, before torch sees them
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
    progress: bool | None = None,
    augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
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
        A tqdm progress bar over epochs: None (default) after a few seconds of work, True at
        once, False never (:mod:`neurovar._progress`).
    augment
        Optional ``augment(images, labels, generator) -> images`` applied to every mini-batch
        before the forward pass (on ``device``; ``generator`` is a ``torch.Generator`` on that
        device seeded from ``rng``): Gaussian input augmentation, adversarial training
        (:func:`gaussian_augmentation`, :func:`adversarial_augmentation`). Only trainable
        parameters (``requires_grad``) are optimised, so frozen layers stay as they are.

    Returns
    -------
    TrainHistory
        Mean training loss, train accuracy and test accuracy per epoch.
    """
    from ._validation import check_instance, check_int, check_real, check_rng

    check_instance(model, nn.Module, name="model", owner="train", expected="a torch.nn.Module")
    check_rng(rng, name="rng", owner="train")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        check_int(value, name=name, owner="train", low=1)
    check_real(lr, name="lr", owner="train", low=0, low_open=True)
    check_real(weight_decay, name="weight_decay", owner="train", low=0)
    progress = check_progress(progress, owner="train")
    if augment is not None and not callable(augment):
        from ._validation import param_error

        raise param_error("augment", "train", "a callable augment(images, labels, generator)",
                          augment)
    dev = resolve_device(device, model=model, owner="train")
    seed = seed_from(rng)
    model.to(dev)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        from ._validation import param_error

        raise param_error("model", "train", "a model with trainable parameters (all have "
                          "requires_grad=False)", type(model).__name__)
    opt = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    aug_gen = None if augment is None else torch.Generator(device=dev).manual_seed(seed ^ 0x5A5A)
    loss_fn = nn.CrossEntropyLoss()
    history = TrainHistory()
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = _train_tensors_on(dev, data)
    n = len(x_train)
    with seeded_torch(seed, dev):
        for _ in progress_bar(range(epochs), desc="train", unit="epoch", progress=progress):
            model.train()
            order = torch.randperm(n, generator=gen)
            total, correct, seen = 0.0, 0, 0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                xb, yb = x_train[idx].to(dev), y_train[idx].to(dev)
                if augment is not None:
                    xb = augment(xb, yb, aug_gen).detach()
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


def gaussian_augmentation(sigma: float) -> Callable[..., torch.Tensor]:
    """Gaussian input augmentation for :func:`train`: :math:`\\mathrm{clip}_{[0,1]}(x + \\sigma
    \\xi)`, :math:`\\xi \\sim N(0, I)` drawn from the training generator.

    The positive control of the grid (a gain every network shows against pixel noise). Preble
    et al. (2026)'s Gaussian-augmentation baseline (their ART ``GaussianAugmentation(sigma,
    augmentation=False, clip_values=(0, 1))``) differs: it trains on one fixed noisy copy of
    the training set and also adds fresh input noise at prediction and inside the attacks
    (``apply_predict=True``); here the noise is fresh every batch and at training only.
    """
    from ._validation import check_real

    sigma = float(check_real(sigma, name="sigma", owner="gaussian_augmentation", low=0.0,
                             low_open=True, high=10.0))

    def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return (x + sigma * noise).clamp_(0.0, 1.0)

    augment.__doc__ = f"Gaussian input augmentation, sigma {sigma:g}."
    return augment


def adversarial_augmentation(eps: float, *, steps: int = 7, fraction: float = 1.0,
                             ) -> Callable[..., torch.Tensor]:
    """PGD adversarial training (Madry et al. 2018) for :func:`train`: each mini-batch is
    replaced (a ``fraction`` of it) by L-inf PGD examples of the current network at ``eps``
    (``steps`` steps of size :math:`2.5\\,\\epsilon/\\mathrm{steps}`, random start).

    The second positive control (PGD training against a PGD target) and the paper's
    adversarial-training baseline (``scripts/adversarial_training.py``).
    """
    from ._validation import check_int, check_real

    eps = float(check_real(eps, name="eps", owner="adversarial_augmentation", low=0.0,
                           low_open=True, high=1.0))
    steps = check_int(steps, name="steps", owner="adversarial_augmentation", low=1,
                      high=10_000)
    fraction = float(check_real(fraction, name="fraction", owner="adversarial_augmentation",
                                low=0.0, low_open=True, high=1.0))

    class _Adversarial:
        def __init__(self, model: nn.Module | None = None) -> None:
            self.model = model

        def bind(self, model: nn.Module) -> _Adversarial:
            return _Adversarial(model)

        def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
                     ) -> torch.Tensor:
            if self.model is None:
                raise RuntimeError("adversarial_augmentation needs the network it attacks: pass "
                                   "adversarial_augmentation(eps).bind(model) to train")
            n_adv = max(1, int(round(fraction * x.shape[0])))
            xa, ya = x[:n_adv], y[:n_adv]
            alpha = 2.5 * eps / steps
            delta = (torch.rand(xa.shape, generator=gen, device=x.device, dtype=x.dtype)
                     * 2 - 1) * eps
            was = self.model.training
            for _ in range(steps):
                xd = (xa + delta).clamp(0, 1).requires_grad_(True)
                loss = nn.functional.cross_entropy(self.model(xd), ya)
                (g,) = torch.autograd.grad(loss, xd)
                delta = (delta + alpha * g.sign()).clamp(-eps, eps).detach()
            self.model.train(was)
            out = x.clone()
            out[:n_adv] = (xa + delta).clamp(0, 1)
            return out

    return _Adversarial()


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
