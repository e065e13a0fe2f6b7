"""Training benchmark: dpaudit's many-models trainer against Opacus on the same DP-SGD run, in one process.

Usage::

    python bench/training.py --device cpu --epochs 1 --models-at-once 1,2,4,8,16   # the CPU table
    python bench/training.py --device cuda                                        # K = 1, 32, 128, 256, 5 epochs
    python bench/training.py --quick                                              # smoke run: digits, 1 epoch

The run: Fashion-MNIST, the classic DP CNN (``dp_cnn_28``, 26,010 parameters),
Poisson sampling with q = 256/60000, σ = 1, C = 1, SGD with the trainer's
default learning rate and momentum (the same for both), ``--epochs`` epochs.

* **Opacus**: ``PrivacyEngine.make_private`` on the model, an SGD optimizer and a
  ``DataLoader`` of the training set (batch 256, Poisson sampling), moving each
  batch to the device, as its tutorials do; ``--opacus-runs`` models one after
  the other (their mean time and accuracy).
* **dpaudit**: :class:`dpaudit.training.trainer.Trainer` with the seed-interface
  reference ``mechanisms/dpsgd.py`` in the loop, K models at once for each K in
  ``--models-at-once`` (the mechanism under ``vmap``, one call per batch-size
  group; ``--vectorize loop`` for one call per model). The K models of a row
  share their Poisson base batches (as in an audit); every row and repeat has
  its own.

The whole sequence (Opacus, then each K) runs ``--repeats`` times, interleaved,
so that a burst of load from other jobs hits one repeat of a configuration, not
all. Reported per row: seconds for the whole run (first step and test
evaluation included, after a short warm-up of both), the fastest of the
repeats; model-epochs per second, seconds per model-epoch, the ratio of
model-epochs/s to Opacus's, and the test accuracy (mean, min–max over all the
row's models in all repeats); then the load average, and whether the targets
hold (model-epochs/s growing with K, the best K at least 2.5× Opacus's, mean
accuracy within 1 point of Opacus's). A K that runs out of device memory is
reported as such. Timings on shared machines are noisy: compare ratios from
one run. ``--device cuda`` without CUDA is a one-line error (exit 2).
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a machine shared with other jobs, spinning
# threads of a 2-thread pool waiting for a descheduled partner made both trainers several times
# slower and their ratio meaningless. Set before torch starts its thread pool; applies to both.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
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
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.run_config import RunConfig
from dpaudit.training.models import MODELS, model_for, n_params
from dpaudit.training.trainer import DEFAULT_LR, DEFAULT_MOMENTUM, Trainer, device_of

ROOT = Path(__file__).resolve().parent.parent
DPSGD = str(ROOT / "mechanisms" / "dpsgd.py")
SIGMA, CLIP = 1.0, 1.0
RATIO_TARGET, ACCURACY_POINTS = 2.5, 1.0


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


def dpaudit_run(ds, config: RunConfig, device: torch.device, k: int, *, seed: int = 0,
                vectorize: str = "auto") -> dict:
    factory = MechanismFactory.load(DPSGD, config)
    trainer = Trainer(MODELS[tuple(ds.input_shape)], config, ds.x_train, ds.y_train,
                      ds.x_test, ds.y_test, device=device, batch_seed=seed, vectorize=vectorize)
    sync(device)
    start = time.perf_counter()
    result = trainer.train([factory.new() for _ in range(k)], [seed * 100_000 + i for i in range(k)])
    sync(device)
    return {"trainer": "dpaudit Trainer", "k": k, "seconds": time.perf_counter() - start,
            "steps": result.steps, "accuracy": result.test_accuracy.tolist(), "calls": result.calls}


def warm_up(ds, config: RunConfig, device: torch.device, vectorize: str) -> None:
    """Two steps of each trainer on a slice of the data (CUDA context, kernels, buffers)."""
    small = RunConfig(dataset_size=2 * config.batch_size, batch_size=config.batch_size, epochs=1,
                      epsilon=config.epsilon, delta=config.delta, noise_multiplier=SIGMA,
                      max_grad_norm=CLIP, n_params=config.n_params)
    factory = MechanismFactory.load(DPSGD, small)
    n = small.dataset_size
    Trainer(MODELS[tuple(ds.input_shape)], small, ds.x_train[:n], ds.y_train[:n],
            ds.x_test[:64], ds.y_test[:64], device=device, vectorize=vectorize).train(
        [factory.new() for _ in range(2)], [1, 2])
    opacus_run(ds, config, device, epochs=1, max_steps=2)


# ----------------------------------------------------------------------------


def fastest(runs: list[dict]) -> dict:
    """One row for a configuration's runs: the fastest time, every model's accuracy."""
    if any(r.get("error") for r in runs):
        return next(r for r in runs if r.get("error"))
    best = min(runs, key=lambda r: r["seconds"])
    row = {**best, "accuracy": [a for r in runs for a in r["accuracy"]], "repeats": len(runs),
           "all_seconds": [r["seconds"] for r in runs]}
    if best["trainer"].startswith("Opacus"):
        row["runs"] = len(runs)
    return row


def rate(row: dict, epochs: int) -> float:
    return row["k"] * epochs / row["seconds"]


def table(rows: list[dict], epochs: int, opacus_rate: float) -> str:
    out = [
        "| trainer | models at once | mechanism calls | seconds | model-epochs/s | s per model-epoch | vs Opacus "
        "| test accuracy (mean, min–max) |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.get("error"):
            out.append(f"| {r['trainer']} | {r['k']} | – | – | – | – | – | {r['error']} |")
            continue
        rt = rate(r, epochs)
        acc = np.asarray(r["accuracy"]) * 100
        spread = f"{acc.mean():.1f} % ({acc.min():.1f}–{acc.max():.1f})" if acc.size > 1 else f"{acc.mean():.1f} %"
        ratio = rt / opacus_rate if math.isfinite(opacus_rate) else math.nan
        calls = r.get("calls", f"{r['runs']} models, one by one" if "runs" in r else "–")
        out.append(f"| {r['trainer']} | {r['k']} | {calls} | {r['seconds']:.1f} | {rt:.3f} | {1 / rt:.2f} | "
                   f"{ratio:.2f}× | {spread} |")
    return "\n".join(out)


def targets(rows: list[dict], epochs: int, opacus: dict | None) -> list[str]:
    """Whether model-epochs/s grows with K, the best K's ratio, and the accuracy gap, as lines."""
    ours = [r for r in rows if r["trainer"] == "dpaudit Trainer" and not r.get("error")]
    if not ours:
        return []
    rates = [rate(r, epochs) for r in ours]
    ks = [r["k"] for r in ours]
    growing = all(b >= a for a, b in zip(rates, rates[1:]))
    lines = [f"model-epochs/s by K ({', '.join(map(str, ks))}): {', '.join(f'{x:.3f}' for x in rates)} -> "
             f"{'grows with K' if growing else 'does NOT grow with K at every step'}"]
    if 1 in ks and 8 in ks:
        r1, r8 = rates[ks.index(1)], rates[ks.index(8)]
        lines.append(f"K = 8 vs K = 1 per model: {r8 / r1:.2f}x ({'met' if r8 >= r1 else 'NOT met'})")
    best = int(np.argmax(rates))
    if opacus is not None:
        o_rate = epochs / opacus["seconds"]
        ratio = rates[best] / o_rate
        lines.append(f"best K = {ks[best]}: {ratio:.2f}x Opacus model-epochs/s (target {RATIO_TARGET}x: "
                     f"{'met' if ratio >= RATIO_TARGET else 'NOT met'})")
        o_acc = 100 * float(np.mean(opacus["accuracy"]))
        for r in ours:
            gap = 100 * float(np.mean(r["accuracy"])) - o_acc
            lines.append(f"K = {r['k']}: mean test accuracy {100 * np.mean(r['accuracy']):.2f} % vs Opacus "
                         f"{o_acc:.2f} % ({gap:+.2f} points; within {ACCURACY_POINTS:g}: "
                         f"{'yes' if abs(gap) <= ACCURACY_POINTS else 'NO'})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model (default 5 on CUDA, 1 on a CPU)")
    parser.add_argument("--models-at-once", default=None,
                        help="comma-separated K values (default 1,2,4,8,16 on a CPU, 1,32,128,256 on CUDA; --quick: 1,4)")
    parser.add_argument("--dataset", default=None, help="dataset spec (default fmnist; --quick: digits)")
    parser.add_argument("--quick", action="store_true", help="smoke run: digits, 1 epoch, K = 1, 4")
    parser.add_argument("--no-opacus", action="store_true", help="skip the Opacus baseline")
    parser.add_argument("--opacus-runs", type=int, default=2, help="Opacus models per repeat (default 2)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="times the whole sequence runs, interleaved; each row reports its fastest (default 2)")
    parser.add_argument("--vectorize", default="auto", choices=("auto", "loop"),
                        help="how dpaudit calls the mechanism (default auto: vmap)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    try:
        device = device_of(args.device)
    except InputError as exc:
        print(f"bench/training.py: error: {exc}", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=UserWarning)  # Opacus: secure RNG off, backward hooks
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    epochs = args.epochs or (5 if gpu else 1)
    default_ks = "1,4" if args.quick else ("1,32,128,256" if gpu else "1,2,4,8,16")
    ks = [int(k) for k in (args.models_at_once or default_ks).split(",")]
    ds = load_dataset(args.dataset or ("digits" if args.quick else "fmnist"))
    batch = 64 if ds.name == "digits" else 256
    model = model_for(ds.input_shape)
    config = RunConfig(dataset_size=len(ds.x_train), batch_size=batch, epochs=epochs, epsilon=3.0, delta=1e-5,
                       noise_multiplier=SIGMA, max_grad_norm=CLIP, n_params=n_params(model))

    where = torch.cuda.get_device_name(device) if gpu else platform.processor() or platform.machine()
    load_before = os.getloadavg()
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {ds.name}: N = {config.dataset_size}, "
          f"q = {batch}/{config.dataset_size}, sigma = {SIGMA}, C = {CLIP}, {epochs} epochs = {config.steps} steps, "
          f"model {config.n_params} parameters, lr {DEFAULT_LR}, momentum {DEFAULT_MOMENTUM}")
    print(f"# device {device} ({where}), {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; "
          f"python {platform.python_version()}, torch {torch.__version__}, opacus {version('opacus')}, "
          f"numpy {np.__version__}; load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
          flush=True)

    warm_up(ds, config, device, args.vectorize)
    repeats = max(1, args.repeats)
    runs: dict[int, list[dict]] = {}  # 0: Opacus, K: dpaudit with K models at once
    for rep in range(repeats):
        if not args.no_opacus:
            rows_o = [opacus_run(ds, config, device, epochs=epochs, seed=rep * 1000 + s)
                      for s in range(max(1, args.opacus_runs))]
            runs.setdefault(0, []).extend(rows_o)
            times = ", ".join(f"{r['seconds']:.1f}" for r in rows_o)
            print(f"  [{rep + 1}/{repeats}] Opacus: {times} s per model", flush=True)
        for k in ks:
            if any(r.get("error") for r in runs.get(k, [])):
                continue
            try:
                runs.setdefault(k, []).append(
                    dpaudit_run(ds, config, device, k, seed=rep * 1000 + k, vectorize=args.vectorize))
                print(f"  [{rep + 1}/{repeats}] dpaudit K = {k}: {runs[k][-1]['seconds']:.1f} s", flush=True)
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                if not is_oom(exc):
                    raise
                runs.setdefault(k, []).append({"trainer": "dpaudit Trainer", "k": k, "error": "out of device memory"})
                print(f"  dpaudit K = {k}: out of memory", flush=True)
                if gpu:
                    torch.cuda.empty_cache()
    rows = [fastest(r) for _, r in sorted(runs.items())]
    opacus = rows[0] if not args.no_opacus else None
    load_after = os.getloadavg()
    opacus_rate = (epochs / opacus["seconds"]) if opacus is not None else math.nan
    print()
    print(table(rows, epochs, opacus_rate))
    print()
    for line in targets(rows, epochs, opacus):
        print(line)
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "epochs": epochs, "device": str(device), "rows": rows, "load_before": load_before,
            "load_after": load_after, "torch": torch.__version__, "threads": torch.get_num_threads(),
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
