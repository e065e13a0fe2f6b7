"""Membership scores of audit runs, from the per-step features of every released step.

Two layers:

* :func:`run_statistics` turns one run's :class:`~dpaudit.audit.gradient_game.Features`
  into a handful of numbers (computed where the run ran; the results file
  stores only these).
* :func:`scenario_scores` turns the numbers of all runs of a scenario into
  the audit's statistics, higher meaning "the canary was in":

  ``lr``
      The likelihood-ratio score of the mechanism the run *declares*: each step
      a Poisson-subsampled Gaussian with multiplier σ_t, observed through the
      canary projection in units of the noise, z_t. With μ_t = 1/σ_t,
      ``Σ_t log(1 − q + q·exp(μ_t z_t − μ_t²/2))`` (for q = 1, Σ μ_t z_t − μ_t²/2),
      the most powerful test against a mechanism that is what it claims.
  ``noise``
      ``|Σ_t log ŝ_t − ref|``: how far the run's noise scales are from those of
      reference runs without the canary (run separately, so the reference is
      independent of the runs scored). Catches membership that leaks through
      the magnitude of the noise, in either direction.
  ``best``
      The best of several candidates (:data:`CANDIDATES`), chosen on a held-out
      part of the runs and then scored on the other part only, so the choice
      costs no correction.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from dpaudit.audit.estimators import clopper_pearson, gaussian_dp
from dpaudit.audit.gradient_game import Features

#: Per-run numbers stored in the results file.
RUN_STATISTICS = ("lr", "sum_z", "max_z", "log_scale", "min_log_scale", "max_log_scale")
#: The statistics the audit bounds ε with, per scenario.
STATISTICS = ("lr", "noise", "best")
#: The test fixed in advance: the likelihood ratio of the declared Gaussian mechanism is the
#: Neyman–Pearson optimal test against a mechanism that is what it claims
#: (``bench/audit_power.py`` shows how far the other candidates fall short of it).
PRIMARY_STATISTIC = "lr"
#: What "best" chooses from (order breaks ties).
CANDIDATES = (
    "lr", "sum_z", "max_z", "noise", "noise_low", "noise_high", "min_scale_low", "max_scale_high",
)
#: Fraction of a scenario's runs held out to choose "best".
SELECTION_FRACTION = 0.3
#: Scores are clipped to ± this so that the estimators get finite numbers.
SCORE_LIMIT = 1e300


def run_statistics(features: Features, sample_rate: float) -> dict[str, float]:
    """The per-run numbers of :data:`RUN_STATISTICS` (may be ±inf or NaN for broken outputs)."""
    z = features.z
    mu = 1.0 / features.sigma
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        llr = mu * z - 0.5 * mu * mu
        if sample_rate >= 1.0:
            lr = float(np.sum(llr))
        else:
            lr = float(np.sum(np.logaddexp(math.log1p(-sample_rate), math.log(sample_rate) + llr)))
        log_scale = np.log(features.scale)
    return {
        "lr": lr,
        "sum_z": float(np.sum(z)),
        "max_z": float(np.max(z)),
        "log_scale": float(np.sum(log_scale)),
        "min_log_scale": float(np.min(log_scale)),
        "max_log_scale": float(np.max(log_scale)),
    }


def finite(scores: np.ndarray) -> np.ndarray:
    """Scores with NaN and ±inf replaced by ±:data:`SCORE_LIMIT` (a fixed post-processing).

    A NaN output is treated as the largest score: a mechanism that breaks only
    when the canary is in is a perfect distinguisher, and one that always
    breaks gives ties, which the estimators count against the auditor.
    """
    return np.nan_to_num(np.asarray(scores, dtype=float), nan=SCORE_LIMIT, posinf=SCORE_LIMIT, neginf=-SCORE_LIMIT)


def reference_level(ref_log_scale: np.ndarray) -> float:
    """The median Σ_t log ŝ_t of the reference runs (0 if there are none or all are broken)."""
    x = np.asarray(ref_log_scale, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else 0.0


def candidate_scores(stats: Mapping[str, np.ndarray], reference: float) -> dict[str, np.ndarray]:
    """Every candidate of :data:`CANDIDATES` for the runs whose per-run numbers are ``stats``."""
    log_scale = np.asarray(stats["log_scale"], dtype=float)
    with np.errstate(invalid="ignore"):
        noise = np.abs(log_scale - reference)
    return {
        "lr": finite(stats["lr"]),
        "sum_z": finite(stats["sum_z"]),
        "max_z": finite(stats["max_z"]),
        "noise": finite(noise),
        "noise_low": finite(-log_scale),
        "noise_high": finite(log_scale),
        "min_scale_low": finite(-np.asarray(stats["min_log_scale"], dtype=float)),
        "max_scale_high": finite(stats["max_log_scale"]),
    }


def choose_best(
    candidates: Mapping[str, np.ndarray],
    is_in: np.ndarray,
    delta: float,
) -> tuple[str, dict[str, float]]:
    """The candidate with the largest Clopper–Pearson bound (then Gaussian-DP estimate) on these runs.

    Call it on the held-out selection runs only. Returns the name and each
    candidate's selection value (for the report).
    """
    is_in = np.asarray(is_in, dtype=bool)
    if is_in.all() or not is_in.any():
        return CANDIDATES[0], {}
    best, best_key, values = CANDIDATES[0], (-1.0, -1.0), {}
    for name in CANDIDATES:
        s = candidates[name]
        cp = clopper_pearson(s[is_in], s[~is_in], delta=delta, confidence=0.95).epsilon_lb
        gdp = gaussian_dp(s[is_in], s[~is_in], delta=delta, confidence=0.95).epsilon_lb
        values[name] = cp
        if (cp, gdp) > best_key:
            best, best_key = name, (cp, gdp)
    return best, values


def scenario_scores(
    stats: Mapping[str, np.ndarray],
    is_in: np.ndarray,
    selection: np.ndarray,
    reference: float,
    delta: float,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """(in-scores, out-scores) for each statistic of :data:`STATISTICS`.

    Args:
        stats: Per-run numbers (:data:`RUN_STATISTICS`) of the scored runs.
        is_in: Which of those runs had the canary in the dataset.
        selection: Which runs are held out to choose "best" (fixed before any run).
        reference: :func:`reference_level` of the reference runs.
        delta: δ of the claim (for the selection's bounds).

    Returns:
        The scores, and details of the "best" choice.
    """
    is_in = np.asarray(is_in, dtype=bool)
    selection = np.asarray(selection, dtype=bool)
    cands = candidate_scores(stats, reference)
    out = {
        "lr": (cands["lr"][is_in], cands["lr"][~is_in]),
        "noise": (cands["noise"][is_in], cands["noise"][~is_in]),
    }
    sel_cands = {k: v[selection] for k, v in cands.items()}
    chosen, values = choose_best(sel_cands, is_in[selection], delta)
    ev = ~selection
    s = cands[chosen]
    out["best"] = (s[ev & is_in], s[ev & ~is_in])
    details = {
        "chosen": chosen,
        "selection_runs": int(selection.sum()),
        "evaluation_runs": int(ev.sum()),
        "selection_clopper_pearson": values,
    }
    return out, details
