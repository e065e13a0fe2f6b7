"""The Ray backend of the training audit on a local Ray instance with 2 CPUs (skipped without Ray):
the same numbers as --backend local for the same seeds, and a worker killed mid-run loses no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from dpaudit.data.datasets import Dataset, load_digits  # noqa: E402
from dpaudit.run_config import RunConfig  # noqa: E402
from dpaudit.training.training_audit import audit_training  # noqa: E402

MECHANISMS = Path(__file__).resolve().parent.parent / "mechanisms"
DPSGD = (MECHANISMS / "dpsgd.py").read_text()

# DP-SGD whose worker kills itself (SIGKILL, as a crashed node would die) at step 3 of the first chunk
# it trains; the marker file (its path written into the source: workers load a copy of the file)
# makes every later call, the retry included, run normally.
KILLER = DPSGD + '''

import os
import signal
from pathlib import Path

MARKER = Path(MARKER_PATH)


class Killer(DPMechanism):
    def clip_and_noise(self, per_sample_grads, step, epoch):
        if step == 3 and not MARKER.exists():
            MARKER.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().clip_and_noise(per_sample_grads, step, epoch)
'''


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny():
    # 240 digits, 2 epochs of batch 48: 10 steps, a few seconds per chunk.
    d = load_digits()
    return Dataset("digits-240", d.x_train[:240], d.y_train[:240], d.x_test[:100], d.y_test[:100], classes=10)


def config_for(ds):
    return RunConfig(dataset_size=len(ds.x_train), batch_size=48, epochs=2, epsilon=2.0, delta=1e-5,
                     noise_multiplier=1.0, n_params=2410)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


@pytest.mark.slow
def test_ray_backend_gives_the_local_results(local_ray, tiny, tmp_path):
    spec = tmp_path / "dpsgd.py"
    spec.write_text(DPSGD)
    kw = dict(runs=6, models_at_once=4, seed=7)  # 12 models in 3 chunks, vmap calls
    local = audit_training(str(spec), config_for(tiny), tiny, **kw)
    remote = audit_training(str(spec), config_for(tiny), tiny, backend="ray", results_path=tmp_path / "r.jsonl", **kw)
    assert remote.backend == "ray" and local.backend == "local"
    assert remote == local  # every score, accuracy and bound
    records = _records(tmp_path / "r.jsonl")
    assert sorted(r["model"] for r in records) == list(range(12))
    # A rerun with the same file trains nothing and gives the same result.
    again = audit_training(str(spec), config_for(tiny), tiny, backend="ray", results_path=tmp_path / "r.jsonl", **kw)
    assert again.models_trained == 0 and again == local


@pytest.mark.slow
def test_a_killed_worker_loses_no_model_and_counts_none_twice(local_ray, tiny, tmp_path):
    marker = tmp_path / "killed-once"
    spec = tmp_path / "killer.py"
    spec.write_text(KILLER.replace("MARKER_PATH", repr(str(marker))))
    path = tmp_path / "killed.jsonl"
    kw = dict(runs=6, models_at_once=4, seed=3)
    result = audit_training(f"{spec}:Killer", config_for(tiny), tiny, backend="ray", results_path=path, **kw)
    assert marker.exists(), "no worker was killed"
    records = _records(path)
    models = [r["model"] for r in records]
    assert sorted(models) == list(range(12))  # each model written once
    assert result.models == 12 and result.in_scores.size + result.out_scores.size == 12
    # The same audit without the kill (the marker is there now), trained here: identical numbers.
    local = audit_training(f"{spec}:Killer", config_for(tiny), tiny, **kw)
    assert local == result
    killed_pid = int(marker.read_text())
    assert killed_pid not in {r["worker"] for r in records}
    assert np.isfinite(result.test_accuracy).all()
