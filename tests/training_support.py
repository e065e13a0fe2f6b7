"""Helpers shared by the training-audit tests (imported by tests/test_training*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpaudit.data.datasets import load_digits
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.run_config import RunConfig
from dpaudit.training.trainer import torch_threads

MECHANISMS = Path(__file__).resolve().parent.parent / "mechanisms"
DPSGD = str(MECHANISMS / "dpsgd.py")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: intra-op threads only add contention on a shared machine.
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def config_for(ds, batch_size=64, epochs=1, sigma=1.0):
    return RunConfig(
        dataset_size=len(ds.x_train), batch_size=batch_size, epochs=epochs, epsilon=1.0, delta=1e-5,
        noise_multiplier=sigma, n_params=2410,
    )


def mechanism_file(tmp_path, source, name="mech.py"):
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def new_mechanisms(spec, config, k):
    factory = MechanismFactory.load(spec, config)
    return [factory.new() for _ in range(k)]
