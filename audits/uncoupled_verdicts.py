"""How often certify's probe gets the right verdict when the mechanism's noise cannot be coupled.

Runs ``dpaudit certify`` (probe only, as ``--audit none``) on mechanisms whose
noise comes from fresh entropy (an unseeded numpy generator, the OS), over
``--seeds`` probe seeds, on the default run (N = 60000, B = 256, 5 epochs,
ε = 3, δ = 1e-5, σ the certify default), and counts the verdicts. The noise
is real entropy, so two runs of this script differ; the probe seed changes
the synthetic data and every measurement's design.

    python audits/uncoupled_verdicts.py --seeds 20 --workers 2 --json out/uncoupled-verdicts.json

Expected (docs/certify.md records the counts): the correct DP-SGD passes in
at least 19 of 20 seeds, the same at 0.88·σ fails in at least 19 of 20, the
un-noised-quantile clip with OS-entropy noise fails.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MECHANISMS = (
    "tests/conformance/numpy_unseeded.py",
    "tests/conformance/numpy_unseeded_low_noise.py",
    "tests/conformance/os_entropy_quantile_clip.py",
)


def one(task: tuple[str, int, dict]) -> dict:
    spec, seed, run = task
    import torch

    torch.set_num_threads(1)
    from dpaudit.certify import certify, default_noise_multiplier
    from dpaudit.probe import N_PARAMS
    from dpaudit.run_config import RunConfig

    sigma = default_noise_multiplier(run["N"], run["B"], run["E"], run["eps"], run["delta"])
    config = RunConfig(run["N"], run["B"], run["E"], run["eps"], run["delta"], sigma, 1.0, N_PARAMS)
    start = time.perf_counter()
    result = certify(str(ROOT / spec), config, seed=seed, progress=False)
    return {
        "mechanism": spec, "seed": seed, "verdict": result.verdict, "reasons": list(result.reasons),
        "sigma_hat_over_declared_min": float(result.probe.sigma_ratio.min()),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mechanism", action="append", help="repeatable; default: the three uncoupled ones")
    ap.add_argument("--dataset-size", type=int, default=60000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--json", default=None, help="write every run's verdict here")
    args = ap.parse_args()
    run = {"N": args.dataset_size, "B": args.batch_size, "E": args.epochs, "eps": 3.0, "delta": 1e-5}
    tasks = [(m, s, run) for m in (args.mechanism or MECHANISMS) for s in range(args.seeds)]
    load = os.getloadavg()
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(one, tasks))
    seconds = time.perf_counter() - start
    for m in dict.fromkeys(r["mechanism"] for r in rows):
        counts = Counter(r["verdict"] for r in rows if r["mechanism"] == m)
        print(f"{m}: " + ", ".join(f"{v} {counts[v]}" for v in ("pass", "fail", "inconclusive")))
    print(f"{len(rows)} certify runs in {seconds:.0f} s with {args.workers} workers "
          f"(load average at start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"run": run, "rows": rows, "seconds": seconds}, indent=2))


if __name__ == "__main__":
    main()
