"""Where a training audit's chunks of models are trained: in this process, or as Ray tasks on a cluster.

A training audit is split into *chunks* of K models (models ``[cK, (c+1)K)``);
a chunk is the unit of work and of the results file. Every model's numbers
follow from (audit seed, model id, chunk), so a chunk gives the same records
wherever it runs.

* :class:`LocalBackend` trains the chunks one after the other here.
* :class:`RayBackend` sends each chunk to a Ray task (``num_gpus=1`` on CUDA,
  else ``num_cpus`` CPUs, each with that many torch threads) and hands each
  finished chunk back to the caller, which appends it to the results file:
  only the driver writes. A task whose worker dies is retried by Ray
  (``max_retries``); a chunk's records are written once, when its task
  returns, so no model is lost or counted twice. If the driver dies, rerunning
  the audit with the same results file trains the missing chunks only.

The mechanism travels as its source text (the workers of a cluster need not
share the driver's file system; a mechanism file that imports sibling modules
needs them installed on the workers); the training data goes through Ray's
object store once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from dpaudit.data.datasets import Dataset
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.run_config import RunConfig
from dpaudit.training.canaries import CanaryDesign, membership, model_seed
from dpaudit.training.choices import BACKENDS, RAY_INSTALL_HINT
from dpaudit.training.trainer import Trainer, is_batched, torch_threads

#: Ray retries a chunk whose worker died this many times.
RAY_MAX_RETRIES = 3


@dataclass(frozen=True)
class ChunkJob:
    """Everything needed to train any chunk of one audit, on any machine (picklable)."""

    mechanism_file: str
    mechanism_source: bytes
    mechanism_class: str
    config: RunConfig
    design: CanaryDesign
    model_fn: Callable[[], nn.Module]
    seed: int
    batch_seed: int
    init_seed: int | None
    lr: float
    momentum: float
    device: str
    vectorize: str
    models_at_once: int
    total: int

    @property
    def key(self) -> str:
        h = hashlib.sha256(self.mechanism_source)
        h.update(repr((self.mechanism_class, self.config, self.seed, self.batch_seed, self.init_seed, self.lr,
                       self.momentum, self.device, self.vectorize)).encode())
        return h.hexdigest()

    def chunk_ids(self, chunk: int) -> list[int]:
        lo = chunk * self.models_at_once
        return list(range(lo, min(lo + self.models_at_once, self.total)))


def chunks_of(total: int, models_at_once: int) -> int:
    return -(-total // models_at_once)


def train_chunk(job: ChunkJob, factory: MechanismFactory, trainer: Trainer, chunk: int,
                on_step: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Train chunk ``chunk`` of ``job``; one record per model (the results file's lines)."""
    ids = job.chunk_ids(chunk)
    m = job.design.m
    seeds = [model_seed(job.seed, i) for i in ids]
    memb = np.stack([membership(job.seed, i, m) for i in ids])
    mechs = factory.new() if is_batched(factory.cls) else [factory.new() for _ in ids]
    result = trainer.train(mechs, seeds, memb, on_step=on_step)
    return [
        {
            "model": int(i), "chunk": int(chunk), "seed": int(s),
            "membership": [int(b) for b in memb[j]],
            "scores": [float(v) for v in result.scores[j]],
            "log_scale": None if not np.isfinite(result.log_scale[j]) else float(result.log_scale[j]),
            "accuracy": float(result.test_accuracy[j]),
            "seconds": result.seconds / len(ids),
            "calls": result.calls,
            "empty_batch_steps": int(result.empty_batch_steps[j]),
            "notes": list(result.notes),
        }
        for j, (i, s) in enumerate(zip(ids, seeds))
    ]


def build_trainer(job: ChunkJob, dataset: Dataset) -> Trainer:
    ds = dataset
    return Trainer(
        job.model_fn, job.config, ds.x_train[job.design.base], ds.y_train[job.design.base], ds.x_test, ds.y_test,
        lr=job.lr, momentum=job.momentum, device=job.device, canaries=job.design.canaries,
        batch_seed=job.batch_seed, init_seed=job.init_seed, vectorize=job.vectorize,
    )


class LocalBackend:
    """Chunks one after the other in this process."""

    name = "local"

    def __init__(self, factory: MechanismFactory, dataset: Dataset) -> None:
        self.factory, self.dataset = factory, dataset

    def run(self, job: ChunkJob, chunks: Sequence[int],
            progress: Callable[[int, float], None] | None = None) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        trainer = build_trainer(job, self.dataset)
        steps = job.config.steps
        for c in chunks:
            k = len(job.chunk_ids(c))

            def on_step(step: int, c: int = c, k: int = k) -> None:
                if step % 10 == 9 or step == steps - 1:
                    progress(c, k * (step + 1) / steps)

            yield c, train_chunk(job, self.factory, trainer, c, on_step if progress is not None else None)


# ----------------------------------------------------------------------------
# Ray


def import_ray() -> Any:
    """The ``ray`` module, or InputError naming how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--backend ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


_WORKER_CACHE: dict[str, tuple[MechanismFactory, Trainer]] = {}


def _worker_setup(job: ChunkJob, dataset: Dataset) -> tuple[MechanismFactory, Trainer]:
    """(factory, trainer) for ``job`` in this worker process, built once per audit."""
    cached = _WORKER_CACHE.get(job.key)
    if cached is not None:
        return cached
    directory = Path(tempfile.mkdtemp(prefix="dpaudit-mechanism-"))
    path = directory / Path(job.mechanism_file).name
    path.write_bytes(job.mechanism_source)
    factory = MechanismFactory.load(f"{path}:{job.mechanism_class}", job.config)
    _WORKER_CACHE.clear()
    _WORKER_CACHE[job.key] = (factory, build_trainer(job, dataset))
    return _WORKER_CACHE[job.key]


def _ray_chunk(job: ChunkJob, dataset: Dataset, chunk: int, threads: int | None) -> list[dict[str, Any]]:
    with torch_threads(threads):
        factory, trainer = _worker_setup(job, dataset)
        records = train_chunk(job, factory, trainer, chunk)
    for r in records:
        r["worker"] = os.getpid()
    return records


class RayBackend:
    """Each chunk a Ray task (see the module docstring)."""

    name = "ray"

    def __init__(self, dataset: Dataset, *, address: str | None = None, device: str = "cpu",
                 cpus_per_task: int = 1) -> None:
        self.ray = import_ray()
        self.dataset = dataset
        self.gpu = torch.device(device).type == "cuda"
        self.cpus = max(1, int(cpus_per_task))
        if not self.ray.is_initialized():
            try:
                self.ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                              include_dashboard=False, configure_logging=False)
            except Exception as exc:  # a wrong address, a cluster that is down
                where = f"at {address}" if address else "locally"
                raise InputError(f"could not start or reach a Ray cluster {where}: {' '.join(str(exc).split())}") from None

    def resources(self) -> dict[str, float]:
        return {"num_gpus": 1, "num_cpus": 1} if self.gpu else {"num_cpus": self.cpus}

    def run(self, job: ChunkJob, chunks: Sequence[int],
            progress: Callable[[int, float], None] | None = None) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        ray = self.ray
        remote = ray.remote(_ray_chunk).options(max_retries=RAY_MAX_RETRIES, retry_exceptions=False,
                                                **self.resources())
        data = ray.put(self.dataset)
        threads = None if self.gpu else self.cpus
        pending = {remote.remote(job, data, c, threads): c for c in chunks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                chunk = pending.pop(ref)
                try:
                    records = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, InputError):
                        raise InputError(str(cause)) from None
                    raise
                yield chunk, records
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def make_backend(name: str, factory: MechanismFactory, dataset: Dataset, *, address: str | None = None,
                 device: str = "cpu", cpus_per_task: int = 1) -> LocalBackend | RayBackend:
    if name == "local":
        if address is not None:
            raise InputError("--ray-address is for --backend ray")
        return LocalBackend(factory, dataset)
    if name == "ray":
        return RayBackend(dataset, address=address, device=device, cpus_per_task=cpus_per_task)
    raise InputError(f"unknown backend {name!r}; choose {' or '.join(BACKENDS)}")
