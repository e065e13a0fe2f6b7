"""Dataset loaders, on small files written here in the standard formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from dpaudit.data import load_dataset
from dpaudit.data.datasets import FASHION_MNIST_DIR
from dpaudit.data.idx import read_idx
from dpaudit.errors import InputError
from dpaudit.training.models import model_for, n_params


def write_idx(path, array, compress=False):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist_dir(directory, n_train=12, n_test=5, compress=False):
    rng = np.random.default_rng(0)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in data.items():
        write_idx(directory / name, arr, compress)
    return data


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_directory_round_trip(tmp_path, compress):
    data = write_mnist_dir(tmp_path, compress=compress)
    ds = load_dataset(f"mnist:{tmp_path}")
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(ds.x_train[:, 0] * 255, data["train-images-idx3-ubyte"], atol=1e-4)
    np.testing.assert_array_equal(ds.y_test, data["t10k-labels-idx1-ubyte"])


def test_idx_reader_handles_wider_types(tmp_path):
    arr = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a", arr)), arr)


def test_missing_and_malformed_mnist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(f"mnist:{tmp_path / 'nope'}")
    write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset(f"mnist:{tmp_path}")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x01\x02garbage")
    with pytest.raises(InputError, match="bad magic"):
        load_dataset(f"mnist:{tmp_path}")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))  # 3 labels for 5 images
    with pytest.raises(InputError, match="do not match"):
        load_dataset(f"mnist:{tmp_path}")
    with pytest.raises(InputError, match="needs a directory"):
        load_dataset("mnist")


def write_cifar_dir(directory, per_batch=4):
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
        }
        with open(directory / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar10_directory(tmp_path):
    write_cifar_dir(tmp_path)
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="data_batch_3"):
        load_dataset(f"cifar10:{tmp_path}")
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(InputError, match="missing .*data_batch_3"):
        load_dataset(f"cifar10:{tmp_path}")


def test_digits_and_unknown():
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and len(ds.x_train) + len(ds.x_test) == 1797
    assert set(np.unique(ds.y_train)) == set(range(10))
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("imagenet")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_package():
    ds = load_dataset("fmnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10


@pytest.mark.parametrize("shape,params", [((1, 28, 28), 26010), ((1, 8, 8), 2410), ((3, 32, 32), None)])
def test_models(shape, params):
    model = model_for(shape)
    assert model(torch.zeros(3, *shape)).shape == (3, 10)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if params is not None:
        assert n_params(model) == params
    with pytest.raises(InputError, match="no model"):
        model_for((2, 5, 5))
