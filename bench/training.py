"""Training benchmark: dpaudit's many-models trainer against Opacus on the same DP-SGD run, in one process.

Usage::

    python bench/training.py --device cuda             # full run (FMNIST, 5 epochs, K = 1, 32, 128, 512)
    python bench/training.py --device cuda --epochs 2 --models-at-once 32,128
    python bench/training.py --quick                   # CPU smoke run: digits, 1 epoch, K = 1, 4, 1 thread

The run: Fashion-MNIST, the classic DP CNN (``dp_cnn_28``, 26,010 parameters),
Poisson sampling with q = 256/60000, σ = 1, C = 1, SGD with the trainer's
default learning rate and momentum (the same for both), ``--epochs`` epochs
(5 by default).

* **Opacus**: ``PrivacyEngine.make_private`` on the model, an SGD optimizer and a
  CPU ``DataLoader`` of the training set (batch 256, Poisson sampling), moving
  each batch to the device, as its tutorials do. One model.
* **dpaudit**: :class:`dpaudit.training.trainer.Trainer` with the seed-interface
  reference ``mechanisms/dpsgd.py`` in the loop (one call per model per step),
  K models at once for each K in ``--models-at-once``.

Reported per row: seconds for the whole run (first step and test evaluation
included, after a short warm-up of both), model-epochs per second, seconds per
model-epoch, the ratio of model-epochs/s to Opacus's measured in the same run,
and the test accuracy (mean, min–max over the K models). K that runs out of
device memory is reported as such. Timings on shared machines are noisy:
compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from dpaudit.data import load_dataset
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.run_config import RunConfig
from dpaudit.training.models import MODELS, model_for, n_params
from dpaudit.training.trainer import DEFAULT_LR, DEFAULT_MOMENTUM, Trainer

ROOT = Path(__file__).resolve().parent.parent
DPSGD = str(ROOT / "mechanisms" / "dpsgd.py")
SIGMA, CLIP = 1.0, 1.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ----------------------------------------------------------------------------
# Opacus, as a user writes it


def opacus_run(ds, config: RunConfig, device: torch.device, *, epochs: int, seed: int = 0,
               max_steps: int | None = None) -> dict:
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    model = model_for(ds.input_shape).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=DEFAULT_LR, momentum=DEFAULT_MOMENTUM)
    loader = DataLoader(TensorDataset(torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)),
                        batch_size=config.batch_size)
    engine = PrivacyEngine(accountant="rdp")
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader,
        noise_multiplier=SIGMA, max_grad_norm=CLIP, poisson_sampling=True,
    )
    criterion = torch.nn.CrossEntropyLoss()
    sync(device)
    start = time.perf_counter()
    steps = 0
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            criterion(model(x), y).backward()
            optimizer.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
    model.eval()
    x_test = torch.from_numpy(ds.x_test).to(device)
    y_test = torch.from_numpy(ds.y_test).to(device)
    with torch.no_grad():
        correct = sum(int((model(x_test[i:i + 2048]).argmax(1) == y_test[i:i + 2048]).sum())
                      for i in range(0, len(x_test), 2048))
    sync(device)
    seconds = time.perf_counter() - start
    return {"trainer": "Opacus PrivacyEngine", "k": 1, "seconds": seconds, "steps": steps,
            "accuracy": [correct / len(x_test)]}


# ----------------------------------------------------------------------------
# dpaudit's trainer


def dpaudit_run(ds, config: RunConfig, device: torch.device, k: int, *, seed: int = 0) -> dict:
    factory = MechanismFactory.load(DPSGD, config)
    trainer = Trainer(MODELS[tuple(ds.input_shape)], config, ds.x_train, ds.y_train,
                      ds.x_test, ds.y_test, device=device)
    sync(device)
    start = time.perf_counter()
    result = trainer.train([factory.new() for _ in range(k)], [seed * 100_000 + i for i in range(k)])
    sync(device)
    return {"trainer": "dpaudit Trainer", "k": k, "seconds": time.perf_counter() - start,
            "steps": result.steps, "accuracy": result.test_accuracy.tolist()}


def warm_up(ds, config: RunConfig, device: torch.device) -> None:
    """Two steps of each trainer on a slice of the data (CUDA context, kernels, functorch)."""
    small = RunConfig(dataset_size=2 * config.batch_size, batch_size=config.batch_size, epochs=1,
                      epsilon=config.epsilon, delta=config.delta, noise_multiplier=SIGMA,
                      max_grad_norm=CLIP, n_params=config.n_params)
    factory = MechanismFactory.load(DPSGD, small)
    n = small.dataset_size
    Trainer(MODELS[tuple(ds.input_shape)], small, ds.x_train[:n], ds.y_train[:n],
            ds.x_test[:64], ds.y_test[:64], device=device).train([factory.new() for _ in range(2)], [1, 2])
    opacus_run(ds, config, device, epochs=1, max_steps=2)


# ----------------------------------------------------------------------------


def table(rows: list[dict], epochs: int, opacus_rate: float) -> str:
    out = [
        "| trainer | models at once | seconds | model-epochs/s | s per model-epoch | vs Opacus | test accuracy (mean, min–max) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.get("error"):
            out.append(f"| {r['trainer']} | {r['k']} | – | – | – | – | {r['error']} |")
            continue
        rate = r["k"] * epochs / r["seconds"]
        acc = np.asarray(r["accuracy"]) * 100
        spread = f"{acc.mean():.1f} % ({acc.min():.1f}–{acc.max():.1f})" if acc.size > 1 else f"{acc.mean():.1f} %"
        ratio = rate / opacus_rate if math.isfinite(opacus_rate) else math.nan
        out.append(f"| {r['trainer']} | {r['k']} | {r['seconds']:.1f} | {rate:.3f} | {1 / rate:.3f} | "
                   f"{ratio:.2f}× | {spread} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model (default 5; --quick: 1)")
    parser.add_argument("--models-at-once", default=None, help="comma-separated K values (default 1,32,128,512; --quick: 1,4)")
    parser.add_argument("--dataset", default=None, help="dataset spec (default fmnist; --quick: digits)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: digits, 1 epoch, K = 1, 4")
    parser.add_argument("--no-opacus", action="store_true", help="skip the Opacus baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (--quick: 1)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)  # Opacus: secure RNG off, backward hooks

    threads = args.threads or (1 if args.quick else None)  # tiny models: threads only contend
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(args.device)
    epochs = args.epochs or (1 if args.quick else 5)
    ks = [int(k) for k in (args.models_at_once or ("1,4" if args.quick else "1,32,128,512")).split(",")]
    ds = load_dataset(args.dataset or ("digits" if args.quick else "fmnist"))
    batch = 64 if ds.name == "digits" else 256
    model = model_for(ds.input_shape)
    config = RunConfig(dataset_size=len(ds.x_train), batch_size=batch, epochs=epochs, epsilon=3.0, delta=1e-5,
                       noise_multiplier=SIGMA, max_grad_norm=CLIP, n_params=n_params(model))

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"# {ds.name}: N = {config.dataset_size}, q = {batch}/{config.dataset_size}, sigma = {SIGMA}, C = {CLIP}, "
          f"{epochs} epochs = {config.steps} steps, model {config.n_params} parameters, lr {DEFAULT_LR}, "
          f"momentum {DEFAULT_MOMENTUM}")
    print(f"# device {device} ({gpu}), torch {torch.__version__}, opacus {version('opacus')}, "
          f"{torch.get_num_threads()} CPU threads", flush=True)

    warm_up(ds, config, device)
    rows = []
    if not args.no_opacus:
        rows.append(opacus_run(ds, config, device, epochs=epochs))
        print(f"  Opacus: {rows[-1]['seconds']:.1f} s", flush=True)
    for k in ks:
        try:
            rows.append(dpaudit_run(ds, config, device, k))
            print(f"  dpaudit K = {k}: {rows[-1]['seconds']:.1f} s", flush=True)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not is_oom(exc):
                raise
            rows.append({"trainer": "dpaudit Trainer", "k": k, "error": "out of device memory"})
            print(f"  dpaudit K = {k}: out of memory", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    opacus_rate = (epochs / rows[0]["seconds"]) if not args.no_opacus else math.nan
    print()
    print(table(rows, epochs, opacus_rate))
    if args.json:
        Path(args.json).write_text(json.dumps({"epochs": epochs, "device": str(device), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
