"""Accounting benchmark: dpaudit's accountants against Opacus's on the same inputs, in one run.

Usage::

    python bench/accounting.py              # full run (several minutes)
    python bench/accounting.py --quick      # smoke run (about a minute)
    python bench/accounting.py --markdown   # also print the table as Markdown

Cases (δ = 1e-5 throughout, add/remove neighbours, Poisson sampling):

(a) q = 256/60000, σ = 1.0, 1,170 steps (5 epochs of 60,000 at batch 256);
(b) q = 0.01, σ = 0.8, 10,000 steps;
(c) 100,000 steps, each with its own σ_t = 1.0 + 0.2·cos(2πt/T) + 1e-7·t/T,
    q = 256/60000 (Opacus keeps one history entry per step: it merges only
    *equal consecutive* steps);
(d) σ for ε = 3, q = 256/60000, 1,170 steps: dpaudit ``calibrate_sigma`` vs
    Opacus ``get_noise_multiplier``.

Opacus is driven the way its users drive it: ``accountant.step(noise_multiplier=σ,
sample_rate=q)`` once per step (Opacus merges equal consecutive steps into one
history entry), then ``get_epsilon(delta)``; the step loop is inside the timing.
Each timing is the best of a few repetitions for calls under a second, one call
otherwise. "ratio" is Opacus seconds / dpaudit seconds (> 1: dpaudit is faster).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import textwrap
import time
import warnings
from importlib.metadata import version

import numpy as np
import pandas as pd

from dpaudit.accountants import get_accountant
from dpaudit.calibration import calibrate_sigma
from dpaudit.schedule import Schedule

DELTA = 1e-5
Q_MNIST = 256 / 60000


LAST_CPU = [math.nan]  # CPU seconds (this process, all threads) of the fastest call in the last best_time


def best_time(fn, max_reps: int = 5, budget: float = 1.0):
    """(seconds, value): the fastest of up to ``max_reps`` calls, stopping once ``budget`` s are spent.

    Wall-clock seconds; the CPU seconds of that call are left in ``LAST_CPU[0]``
    (on a shared machine, wall time above CPU time is time spent waiting for a core).
    """
    best, value, spent, cpu = math.inf, None, 0.0, math.nan
    for _ in range(max_reps):
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if dt < best:
            best, cpu = dt, dc
        spent += dt
        if spent >= budget:
            break
    LAST_CPU[0] = cpu
    return best, value


def row(case, method, d_s, d_val, o_s=None, o_val=None, note="", d_cpu=None):
    ratio = o_s / d_s if (o_s is not None and d_s and math.isfinite(o_s)) else None
    return {
        "case": case, "method": method,
        "dpaudit_s": d_s, "dpaudit_cpu_s": d_cpu, "dpaudit": d_val,
        "opacus_s": o_s, "opacus": o_val,
        "ratio": ratio, "note": note,
    }


# ----- Opacus, the way its users call it -------------------------------------


def opacus_accountant(kind: str):
    from opacus.accountants import GaussianAccountant, PRVAccountant, RDPAccountant

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDP's "experimental" warning
        return {"rdp": RDPAccountant, "prv": PRVAccountant, "gdp": GaussianAccountant}[kind]()


def opacus_epsilon(kind: str, sigmas, q: float) -> float:
    acc = opacus_accountant(kind)
    for s in sigmas:
        acc.step(noise_multiplier=float(s), sample_rate=q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(DELTA))


def dpaudit_epsilon(name: str, schedule: Schedule):
    r = get_accountant(name).epsilon(schedule, DELTA)
    return r


# ----- cases -------------------------------------------------------------------


def uniform_case(label: str, sigma: float, q: float, steps: int) -> list[dict]:
    schedule = Schedule.uniform(sigma, q, steps)
    rows = []
    per_step = [sigma] * steps
    for name in ("rdp", "pld", "prv", "gdp"):
        d_s, r = best_time(lambda: dpaudit_epsilon(name, schedule))
        d_cpu = LAST_CPU[0]
        note = r.note() if r.is_upper_bound else "CLT approximation, not a bound"
        if name == "prv":
            note = f"lower {r.lower:.4f} / estimate {r.estimate:.4f} / upper (reported) {r.epsilon:.4f}"
        if name == "pld":
            rows.append(row(label, name, d_s, r.epsilon, note="Opacus has no PLD accountant; " + note, d_cpu=d_cpu))
            continue
        o_s, o_val = best_time(lambda: opacus_epsilon(name, per_step, q))
        rows.append(row(label, name, d_s, r.epsilon, o_s, o_val, note, d_cpu=d_cpu))
    return rows


def heterogeneous_sigmas(steps: int) -> np.ndarray:
    t = np.arange(steps)
    return 1.0 + 0.2 * np.cos(2 * np.pi * t / steps) + 1e-7 * t / steps


OPACUS_PRV_CHILD = textwrap.dedent(
    """
    import sys, time, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from opacus.accountants import PRVAccountant
    T = int(sys.argv[1]); q = float(sys.argv[2])
    t = np.arange(T)
    sig = 1.0 + 0.2 * np.cos(2 * np.pi * t / T) + 1e-7 * t / T
    t0 = time.perf_counter()
    acc = PRVAccountant()
    for s in sig:
        acc.step(noise_multiplier=float(s), sample_rate=q)
    eps = acc.get_epsilon(1e-5)
    print(f"RESULT {eps!r} {time.perf_counter() - t0!r}")
    """
)


def _limit_memory(gib: int):
    def apply():
        limit = gib * 1024**3
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def opacus_prv_in_subprocess(steps: int, q: float, timeout: float, mem_gib: int):
    """(seconds, epsilon, note); Opacus's PRV on a per-step history, killed after ``timeout`` s."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", OPACUS_PRV_CHILD, str(steps), repr(q)],
            capture_output=True, text=True, timeout=timeout, preexec_fn=_limit_memory(mem_gib),
        )
    except subprocess.TimeoutExpired:
        return math.inf, None, f"Opacus PRV did not finish in {timeout:g} s (killed)"
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            _, eps, secs = line.split()
            return float(secs), float(eps), "Opacus PRV (subprocess)"
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return math.inf, None, f"Opacus PRV failed after {wall:.0f} s ({mem_gib} GiB limit): {last[:120]}"


def heterogeneous_case(steps: int, opacus_rdp_steps: int, prv_timeout: float, mem_gib: int) -> list[dict]:
    label = f"(c) {steps:,} steps, distinct sigma each"
    sig = heterogeneous_sigmas(steps)
    t0, c0 = time.perf_counter(), time.process_time()
    schedule = Schedule.from_steps(sig, Q_MNIST)
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = []
    dp = {}
    for name in ("pld", "prv", "rdp", "gdp"):
        d_s, r = best_time(lambda: dpaudit_epsilon(name, schedule), max_reps=1)
        dp[name] = (d_s + build_s, r, LAST_CPU[0] + build_cpu)
    # Opacus RDP: one history entry per step. Time the first opacus_rdp_steps steps and
    # extrapolate linearly when that is fewer than all (its cost is linear in entries).
    sub = heterogeneous_sigmas(steps)[:opacus_rdp_steps]
    o_s, o_val = best_time(lambda: opacus_epsilon("rdp", sub, Q_MNIST), max_reps=1)
    if opacus_rdp_steps < steps:
        o_s_full = o_s * steps / opacus_rdp_steps
        rdp_note = (f"Opacus RDP timed on the first {opacus_rdp_steps:,} steps ({o_s:.1f} s) and "
                    f"extrapolated linearly x{steps / opacus_rdp_steps:g}; its epsilon is for those steps only")
    else:
        o_s_full, rdp_note = o_s, "Opacus RDP, one history entry per step"
    p_s, p_val, p_note = opacus_prv_in_subprocess(steps, Q_MNIST, prv_timeout, mem_gib)
    gdp_note = "Opacus GDP refuses: "
    try:
        opacus_epsilon("gdp", sig[:2], Q_MNIST)
        gdp_note += "(it did not)"
    except ValueError as exc:
        gdp_note += str(exc)
    for name in ("pld", "prv", "rdp", "gdp"):
        d_s, r, d_cpu = dp[name]
        grid = r.grid.describe() if r.grid is not None else ""
        verdict = f"target < 10 s (wall): {'MET' if d_s < 10 else 'MISSED'} ({d_s:.1f} s wall, {d_cpu:.1f} s CPU)"
        if name == "pld":
            rows.append(row(label, name, d_s, r.epsilon, note=f"{verdict}; {grid}", d_cpu=d_cpu))
        elif name == "prv":
            note = (f"{verdict}; lower {r.lower:.4f} / estimate {r.estimate:.4f}; {r.notes[1]}; {grid}; {p_note}")
            rows.append(row(label, name, d_s, r.epsilon, p_s, p_val, note, d_cpu=d_cpu))
        elif name == "rdp":
            rows.append(row(label, name, d_s, r.epsilon, o_s_full,
                            o_val if opacus_rdp_steps == steps else None, f"{grid}; {rdp_note}", d_cpu=d_cpu))
        else:
            rows.append(row(label, name, d_s, r.epsilon, None, None, f"CLT approximation; {gdp_note}", d_cpu=d_cpu))
    return rows


def calibration_case(names) -> list[dict]:
    from opacus.accountants.utils import get_noise_multiplier

    label = "(d) sigma for eps=3, 1,170 steps"
    rows = []
    for name in names:
        d_s, r = best_time(
            lambda: calibrate_sigma(3.0, DELTA, Q_MNIST, 1170, accountant=name), max_reps=3, budget=0.5
        )
        d_cpu = LAST_CPU[0]
        note = f"dpaudit eps at sigma {r.epsilon:.5f} ({r.evaluations} evaluations, rtol 1e-3)"
        if name == "pld":
            rows.append(row(label, name, d_s, r.sigma, note="Opacus has no PLD accountant; " + note, d_cpu=d_cpu))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            o_s, o_sigma = best_time(
                lambda: get_noise_multiplier(target_epsilon=3.0, target_delta=DELTA, sample_rate=Q_MNIST,
                                             steps=1170, accountant=name),
                max_reps=3, budget=0.5,
            )
        o_eps = opacus_epsilon(name, [o_sigma] * 1170, Q_MNIST)
        note += f"; Opacus eps at its sigma {o_eps:.5f} (epsilon_tolerance 0.01)"
        if name == "prv":
            note = f"target < 3 s (wall): {'MET' if d_s < 3 else 'MISSED'} ({d_s:.2f} s wall, {d_cpu:.2f} s CPU); " + note
        rows.append(row(label, name, d_s, r.sigma, o_s, o_sigma, note, d_cpu=d_cpu))
    return rows


def warm_up() -> None:
    """Import everything and run each code path once, so no timing includes an import."""
    from opacus.accountants.utils import get_noise_multiplier  # noqa: F401

    tiny = Schedule.uniform(1.0, 0.01, 10)
    for name in ("rdp", "pld", "prv", "gdp"):
        get_accountant(name).epsilon(tiny, DELTA)
    for kind in ("rdp", "prv", "gdp"):
        opacus_epsilon(kind, [1.0] * 10, 0.01)


# ----- output ----------------------------------------------------------------------


def fmt_seconds(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "did not finish"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_value(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def fmt_ratio(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for c in ("dpaudit_s", "dpaudit_cpu_s", "opacus_s"):
        out[c] = out[c].map(fmt_seconds)
    for c in ("dpaudit", "opacus"):
        out[c] = out[c].map(fmt_value)
    out["ratio"] = out["ratio"].map(fmt_ratio)
    return out


def markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)


def environment() -> str:
    libs = ", ".join(f"{p} {version(p)}" for p in ("dpaudit", "opacus", "dp-accounting", "prv-accountant",
                                                    "torch", "numpy", "scipy"))
    return (f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs "
            f"(load average {os.getloadavg()[0]:.1f} at start); {libs}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (10,000-step case (c), short timeouts)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--opacus-prv-timeout", type=float, default=None, help="seconds (default 120; 20 with --quick)")
    parser.add_argument("--opacus-rdp-steps", type=int, default=None,
                        help="steps of case (c) timed for Opacus RDP, then extrapolated (default 10,000; 1,000 with --quick)")
    parser.add_argument("--memory-gib", type=int, default=12, help="address-space limit of the Opacus PRV subprocess")
    args = parser.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)

    hetero_steps = 10_000 if args.quick else 100_000
    rdp_steps = args.opacus_rdp_steps or (1_000 if args.quick else 10_000)
    prv_timeout = args.opacus_prv_timeout or (20.0 if args.quick else 120.0)
    print(environment(), flush=True)
    warm_up()
    start = time.perf_counter()
    rows = []
    rows += uniform_case("(a) q=256/60000, sigma=1, 1,170 steps", 1.0, Q_MNIST, 1170)
    print(f"  (a) done at {time.perf_counter() - start:.0f} s", flush=True)
    rows += uniform_case("(b) q=0.01, sigma=0.8, 10,000 steps", 0.8, 0.01, 10_000)
    print(f"  (b) done at {time.perf_counter() - start:.0f} s", flush=True)
    rows += heterogeneous_case(hetero_steps, min(rdp_steps, hetero_steps), prv_timeout, args.memory_gib)
    print(f"  (c) done at {time.perf_counter() - start:.0f} s", flush=True)
    rows += calibration_case(("rdp", "gdp") if args.quick else ("prv", "rdp", "pld", "gdp"))
    print(f"  (d) done at {time.perf_counter() - start:.0f} s", flush=True)

    frame = formatted(pd.DataFrame(rows))
    print("\nseconds; epsilon at delta = 1e-5 (case (d): sigma); ratio = Opacus s / dpaudit s")
    with pd.option_context("display.max_colwidth", 60, "display.width", 250, "display.max_rows", 100):
        print(frame.drop(columns="note").to_string(index=False))
        print()
        for _, r in frame.iterrows():
            print(f"{r['case']} / {r['method']}: {r['note']}")
    if args.markdown:
        print()
        print(markdown(frame))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
