"""The datasets a training audit can use, as plain arrays.

Specs: ``fmnist`` (Debian package dataset-fashion-mnist), ``fmnist:DIR``,
``mnist:DIR`` (standard IDX files), ``cifar10:DIR`` (the python pickled
batches), ``digits`` (scikit-learn's 8×8 digits, always available).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dpaudit.data.idx import read_idx
from dpaudit.errors import InputError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"


@dataclass(frozen=True)
class Dataset:
    """Images as float32 in [0, 1], shape [n, channels, height, width]; labels int64 in [0, classes)."""

    name: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def subset(self, n: int) -> "Dataset":
        """The first ``n`` training examples in a fixed random order (the test set unchanged), named
        ``<name>[n]``: small N makes q = B/N large, where training audits are strongest."""
        total = len(self.x_train)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= total:
            raise InputError(f"training subset size must be an integer in [1, {total}] for {self.name}, got {n!r}")
        if n == total:
            return self
        keep = np.sort(np.random.default_rng(0).permutation(total)[:n])
        return Dataset(f"{self.name}[{n}]", self.x_train[keep], self.y_train[keep], self.x_test, self.y_test,
                       self.classes)


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{directory}: missing {stem} (or {stem}.gz); expected the four standard IDX files {', '.join(IDX_FILES.values())}")


def load_idx_directory(directory: Path, name: str) -> Dataset:
    """MNIST-format directory: the four standard IDX files, plain or gzip."""
    if not directory.is_dir():
        raise InputError(f"{name}: directory {directory} does not exist")
    arrays = {key: read_idx(_find_idx(directory, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise InputError(f"{directory}: {split} images {x.shape} and labels {y.shape} do not match")
    return Dataset(
        name,
        (arrays["x_train"].astype(np.float32) / 255.0)[:, None],
        arrays["y_train"].astype(np.int64),
        (arrays["x_test"].astype(np.float32) / 255.0)[:, None],
        arrays["y_test"].astype(np.int64),
        classes=10,
    )


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise InputError(f"cifar10: missing {path}; expected data_batch_1..5 and test_batch (python version)")
    try:
        with path.open("rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise InputError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if len(data) != len(labels):
        raise InputError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def load_cifar10(directory: Path) -> Dataset:
    """CIFAR-10 from the python pickled batches (the ``cifar-10-batches-py`` folder)."""
    if not directory.is_dir():
        raise InputError(f"cifar10: directory {directory} does not exist")
    train = [_cifar_batch(directory / n) for n in CIFAR_TRAIN]
    x_test, y_test = _cifar_batch(directory / CIFAR_TEST)
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    return Dataset(
        "cifar10",
        x_train.astype(np.float32) / 255.0, y_train,
        x_test.astype(np.float32) / 255.0, y_test,
        classes=10,
    )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 digits (1,797 images), split into train and test with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], classes=10)


def load_dataset(spec: str) -> Dataset:
    """``fmnist`` | ``fmnist:DIR`` | ``mnist:DIR`` | ``cifar10:DIR`` | ``digits``."""
    name, _, location = spec.partition(":")
    name = name.strip().lower()
    if name == "digits":
        return load_digits()
    if name in ("fmnist", "fashion-mnist"):
        directory = Path(location) if location else FASHION_MNIST_DIR
        if not directory.is_dir():
            raise InputError(
                f"fmnist: {directory} does not exist; install the Debian package dataset-fashion-mnist "
                "or pass fmnist:DIR with the four IDX files"
            )
        return load_idx_directory(directory, "fmnist")
    if name == "mnist":
        if not location:
            raise InputError("mnist needs a directory: mnist:DIR with the four standard IDX files")
        return load_idx_directory(Path(location), "mnist")
    if name == "cifar10":
        if not location:
            raise InputError("cifar10 needs a directory: cifar10:DIR with data_batch_1..5 and test_batch")
        return load_cifar10(Path(location))
    raise InputError(f"unknown dataset {spec!r}; choose fmnist, digits, mnist:DIR or cifar10:DIR")
