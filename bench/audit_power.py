"""Audit power and soundness: every estimator on seeded simulations whose true ε is known.

Usage::

    python bench/audit_power.py                 # full run: 200 repetitions per cell (a few minutes on 2 cores)
    python bench/audit_power.py --reps 40       # the minimum the docs quote
    python bench/audit_power.py --quick         # smoke run: 10 repetitions, small cells
    python bench/audit_power.py --epsilons 4 --runs 500,1000   # other cells (soundness at 1000 runs per side)
    python bench/audit_power.py --markdown      # also print the tables as Markdown

Three tables:

1. **Power.** The Gaussian mechanism (sensitivity 1, q = 1) that is exactly
   (ε, δ)-DP, δ = 1e-5, for ε ∈ {1, 3, 8}: in-scores N(μ, 1), out-scores
   N(0, 1), μ = 1/σ(ε, δ) (what the likelihood-ratio score of a full-batch
   DP-SGD audit gives), 250, 1000 and 5000 runs per side. For every
   estimator, the median and 5 % quantile of its bound over the repetitions,
   and the design's ceiling (the bound of a perfect distinguisher with the
   same numbers) for the assumption-free ones.
2. **Soundness.** The Gaussian, Laplace (scale 1/ε, shift 1) and randomised
   response (ε-DP coin) mechanisms at ε ∈ {1, 3, 8} with 1000 runs per
   side: the fraction of repetitions whose bound exceeds the true ε(δ) of the
   mechanism. A valid estimator at confidence 0.95 exceeds it in at most 5 %
   of repetitions; the table marks (✗) a rate above the 99.9 % binomial
   quantile of Bin(reps, 0.05)/reps. The assumption-based estimators exceed
   it wherever the scores are not Gaussian.
3. **Statistics.** Per-step canary projections of a DP-SGD run (Poisson
   rate q, T steps, σ calibrated with PLD for ε = 3, δ = 1e-5) in units of
   the noise: z_t = μ·b_t + N(0, 1), b_t ~ Bernoulli(q) for in-runs, 0 for
   out-runs, μ = 1/σ. Each of the gradient-space audit's statistics (``lr``:
   the likelihood ratio of the declared mechanism, the Neyman–Pearson
   optimum; ``sum_z``; ``max_z``) with 1000 runs per side: the median
   Clopper–Pearson bound, parametric Gaussian-DP estimate and AUC, as a
   fraction of what ``lr`` reaches.

Every cell's scores come from its own seeded generator (the seeds are fixed
by the cell), so the numbers are reproducible; the simulation of a cell is
vectorised over repetitions, the cells run in ``--workers`` processes. It is
a script, not a test: the tests (``tests/test_estimators.py``) use fewer
repetitions with wider margins.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import dp_accounting
import numpy as np
import pandas as pd
import scipy.stats

from dpaudit.audit import estimators as est
from dpaudit.calibration import calibrate_sigma

DELTA = 1e-5
CONFIDENCE = 0.95
EPSILONS = (1.0, 3.0, 8.0)
RUNS = (250, 1000, 5000)
SOUNDNESS_RUNS = 1000
MECHANISMS = ("gaussian", "laplace", "randomized_response")
#: (q, T) of the DP-SGD runs of the statistics table.
STAT_SETTINGS = ((1.0, 10), (0.1, 100), (0.02, 500))
STAT_STATISTICS = ("lr", "sum_z", "max_z")
STAT_EPSILON = 3.0

#: Every estimator the bench runs: column name -> (function of (ins, outs, rep), valid for a verdict).
ESTIMATORS: dict[str, tuple[Callable[[np.ndarray, np.ndarray, int], est.EstimateResult], bool]] = {
    "CP rank grid (default)": (lambda a, b, i: est.clopper_pearson(a, b, delta=DELTA), True),
    "CP Bonferroni-100": (
        lambda a, b, i: est.clopper_pearson(a, b, delta=DELTA, threshold_selection="bonferroni"), True),
    "CP split": (
        lambda a, b, i: est.clopper_pearson(a, b, delta=DELTA, threshold_selection="split", seed=i), True),
    "one-run": (lambda a, b, i: est.one_run(a, b, delta=DELTA), True),
    "GDP thresholds": (lambda a, b, i: est.gaussian_dp(a, b, delta=DELTA), False),
    "GDP parametric": (lambda a, b, i: est.gaussian_dp_parametric(a, b, delta=DELTA), False),
    "one-run f-DP": (lambda a, b, i: est.one_run_fdp(a, b, delta=DELTA), False),
}


# ----------------------------------------------------------------------------
# Mechanisms with known privacy


def gaussian_mu(eps: float) -> float:
    """Mean shift of the Gaussian mechanism (sensitivity 1) that is exactly (ε, δ)-DP."""
    return 1.0 / dp_accounting.get_sigma_gaussian(eps, DELTA)


def true_epsilon(mechanism: str, eps: float) -> float:
    """ε(δ) of the simulated mechanism, exactly."""
    if mechanism == "gaussian":
        return eps  # calibrated to be exactly (eps, DELTA)-DP
    if mechanism == "laplace":
        # Hockey-stick divergence of Lap(1, b) vs Lap(0, b), b = 1/eps: 1 - e^{(eps' - eps)/2}.
        return eps + 2 * math.log1p(-DELTA)
    # Randomised response with P[correct] = e^eps/(1+e^eps): e^{eps'} = e^eps - delta (1 + e^eps).
    return math.log(math.exp(eps) - DELTA * (1 + math.exp(eps)))


def simulate(mechanism: str, eps: float, n: int, reps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(in-scores, out-scores), each [reps, n], higher = "in"."""
    if mechanism == "gaussian":
        return rng.normal(gaussian_mu(eps), 1.0, (reps, n)), rng.normal(0.0, 1.0, (reps, n))
    if mechanism == "laplace":
        return rng.laplace(1.0, 1 / eps, (reps, n)), rng.laplace(0.0, 1 / eps, (reps, n))
    keep = scipy.special.expit(eps)
    return (rng.random((reps, n)) < keep).astype(float), (rng.random((reps, n)) >= keep).astype(float)


def _cell_seed(*key) -> np.random.Generator:
    return np.random.default_rng([int(round(1000 * k)) if isinstance(k, float) else
                                  (MECHANISMS.index(k) if isinstance(k, str) else int(k)) for k in key])


def run_cell(task: tuple) -> dict:
    """All estimators on ``reps`` repetitions of one (mechanism, ε, runs per side)."""
    mechanism, eps, n, reps, names = task
    ins, outs = simulate(mechanism, eps, n, reps, _cell_seed(mechanism, eps, n))
    values = {name: np.empty(reps) for name in names}
    ceilings = {}
    for i in range(reps):
        for name in names:
            res = ESTIMATORS[name][0](ins[i], outs[i], i)
            values[name][i] = res.epsilon_lb
            ceilings[name] = res.ceiling
    return {"mechanism": mechanism, "eps": eps, "n": n, "values": values, "ceilings": ceilings}


# ----------------------------------------------------------------------------
# Statistics of the gradient-space audit


def _quiet(fn: Callable, *args):
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return fn(*args)
    finally:
        logger.setLevel(level)


def statistic_scores(q: float, steps: int, sigma: float, n: int, rng: np.random.Generator) -> dict[str, tuple]:
    """The audit's statistics of n in-runs and n out-runs (ideal noise units)."""
    mu = 1.0 / sigma
    out: dict[str, list] = {s: [[], []] for s in STAT_STATISTICS}
    for side, inside in ((0, True), (1, False)):
        z = rng.standard_normal((n, steps))
        if inside:
            z += mu * (rng.random((n, steps)) < q)
        llr = mu * z - 0.5 * mu * mu
        lr = llr.sum(1) if q >= 1 else np.logaddexp(math.log1p(-q), math.log(q) + llr).sum(1)
        for name, s in (("lr", lr), ("sum_z", z.sum(1)), ("max_z", z.max(1))):
            out[name][side] = s
    return {k: (v[0], v[1]) for k, v in out.items()}


def run_statistics_cell(task: tuple) -> dict:
    q, steps, n, reps = task
    sigma = _quiet(lambda: calibrate_sigma(STAT_EPSILON, DELTA, q, steps, "pld").sigma)
    rng = _cell_seed(q, steps, n)
    acc = {s: {"cp": [], "param": [], "auc": []} for s in STAT_STATISTICS}
    for _ in range(reps):
        for name, (a, b) in statistic_scores(q, steps, sigma, n, rng).items():
            acc[name]["cp"].append(est.clopper_pearson(a, b, delta=DELTA).epsilon_lb)
            acc[name]["param"].append(est.gaussian_dp_parametric(a, b, delta=DELTA).epsilon_lb)
            u = scipy.stats.mannwhitneyu(a, b, alternative="greater").statistic
            acc[name]["auc"].append(u / (a.size * b.size))
    return {"q": q, "steps": steps, "sigma": sigma,
            "medians": {s: {k: float(np.median(v)) for k, v in d.items()} for s, d in acc.items()}}


# ----------------------------------------------------------------------------
# Tables


def power_table(cells: list[dict], names: list[str]) -> pd.DataFrame:
    rows = []
    for c in cells:
        row = {"eps": c["eps"], "runs/side": c["n"]}
        for name in names:
            v = c["values"][name]
            row[name] = f"{np.median(v):.2f} ({np.quantile(v, 0.05):.2f})"
        for name in names:
            if ESTIMATORS[name][1]:
                row[f"ceiling {name}"] = f"{c['ceilings'][name]:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def soundness_table(cells: list[dict], names: list[str], reps: int) -> pd.DataFrame:
    limit = scipy.stats.binom.ppf(0.999, reps, 1 - CONFIDENCE) / reps
    rows = []
    for c in cells:
        truth = true_epsilon(c["mechanism"], c["eps"])
        row = {"mechanism": c["mechanism"], "eps": c["eps"], "true eps(delta)": f"{truth:.4f}"}
        for name in names:
            rate = float(np.mean(c["values"][name] > truth))
            row[name] = f"{100 * rate:.1f}%" + (" ✗" if rate > limit else "")
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["limit"] = limit
    return frame


def statistics_table(cells: list[dict]) -> pd.DataFrame:
    rows = []
    for c in cells:
        ref = c["medians"]["lr"]
        for name in STAT_STATISTICS:
            m = c["medians"][name]
            rows.append({
                "q": c["q"], "steps": c["steps"], "sigma": f"{c['sigma']:.3f}", "statistic": name,
                "CP eps_lb": f"{m['cp']:.2f}", "parametric eps": f"{m['param']:.2f}", "AUC": f"{m['auc']:.3f}",
                "CP vs lr": f"{m['cp'] / ref['cp']:.2f}" if ref["cp"] > 0 else "-",
                "param vs lr": f"{m['param'] / ref['param']:.2f}" if ref["param"] > 0 else "-",
            })
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False)


def environment() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; Python {platform.python_version()}, numpy {np.__version__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="repetitions per cell (default 200; >= 40 for the docs)")
    parser.add_argument("--stat-reps", type=int, default=40, help="repetitions per statistics cell (default 40)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 repetitions, small cells")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument("--epsilons", default=",".join(f"{e:g}" for e in EPSILONS),
                        help="comma-separated true epsilons (default 1,3,8)")
    parser.add_argument("--runs", default=",".join(map(str, RUNS)),
                        help="comma-separated runs per side of the power table (default 250,1000,5000)")
    args = parser.parse_args(argv)
    reps, stat_reps = (10, 3) if args.quick else (args.reps, args.stat_reps)
    epsilons = [float(e) for e in args.epsilons.split(",")]
    runs = (250, 1000) if args.quick else [int(n) for n in args.runs.split(",")]
    stat_settings = STAT_SETTINGS[:2] if args.quick else STAT_SETTINGS
    names = list(ESTIMATORS)

    start = time.perf_counter()
    power_tasks = [("gaussian", e, n, reps, names) for e in epsilons for n in runs]
    gaussian_sound = [] if SOUNDNESS_RUNS in runs else [("gaussian", e, SOUNDNESS_RUNS, reps, names) for e in epsilons]
    sound_tasks = gaussian_sound + [
        (m, e, SOUNDNESS_RUNS, reps, names) for m in MECHANISMS if m != "gaussian" for e in epsilons
    ]
    stat_tasks = [(q, t, SOUNDNESS_RUNS, stat_reps) for q, t in stat_settings]
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        power = list(pool.map(run_cell, power_tasks))
        others = list(pool.map(run_cell, sound_tasks))
        stats = list(pool.map(run_statistics_cell, stat_tasks))
    seconds = time.perf_counter() - start
    sound = [c for c in power if c["n"] == SOUNDNESS_RUNS] + others

    tables = [
        ("Power: median (5 % quantile) of the bound over repetitions, Gaussian mechanism, delta = 1e-5; "
         "ceilings of the assumption-free designs", power_table(power, names)),
        ("Soundness: share of repetitions above the true eps(delta) (1000 runs per side)",
         soundness_table(sound, names, reps)),
        (f"Statistics: medians over {stat_reps} repetitions, DP-SGD at eps = {STAT_EPSILON:g}, 1000 runs per side",
         statistics_table(stats)),
    ]
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 40):
        for title, frame in tables:
            print(title)
            if "limit" in frame.attrs:
                print(f"(✗: above {100 * frame.attrs['limit']:.1f} %, the 99.9 % binomial quantile of 5 % over {reps})")
            print(frame.to_string(index=False))
            print()
    if args.markdown:
        for title, frame in tables:
            print(f"**{title}**\n")
            print(markdown(frame))
            print()
    print(f"repetitions per cell: {reps}; statistics repetitions: {stat_reps}; {seconds:.1f} s on {environment()}")
    print("command: python " + " ".join([sys.argv[0].split("/")[-2] + "/" + sys.argv[0].split("/")[-1]] + (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
