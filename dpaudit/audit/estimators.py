"""Empirical lower bounds on ε from membership-inference scores.

Every estimator here takes two arrays of attack scores and returns an
:class:`EstimateResult`:

* ``in_scores``: one score per observation where the target example (the
  canary) *was* in the training set;
* ``out_scores``: one score per observation where it was *not*.

A **higher score means "guess in" (member)**. If your attack gives members
lower scores (a loss, say), negate it first. The neighbouring relation is
add/remove one example, which is the relation dpaudit's accountants use, so an
estimate can be compared directly with an accountant's ε at the same δ.

Four estimators, from the weakest assumptions to the strongest:

* :func:`clopper_pearson`: multi-run audit (Jagielski et al. 2020, Nasr et al.
  2021). Assumption-free (ε, δ) lower bound.
* :func:`one_run`: one training run with many canaries (Steinke, Nasr and
  Jagielski 2023). Assumption-free (ε, δ) lower bound.
* :func:`gaussian_dp`: multi-run audit that fits a Gaussian trade-off curve
  (Nasr et al. 2023, "Tight auditing"). Only valid if the mechanism is μ-GDP.
* :func:`one_run_fdp`: one-run audit of an f-DP claim (Mahloujifar, Melis and
  Chaudhuri, ICML 2025). Refutes a Gaussian-shaped claim.

Only the first two may back a pass/fail verdict (``valid_for_verdict``).

Why this module is hand-written: none of the installed libraries (numpy,
scipy, dp-accounting, statsmodels) ships these estimators. The reference
implementation is google-deepmind/jax_privacy ``jax_privacy/auditing.py``,
which depends on jax; the one-run code follows it closely enough to reproduce
its test values exactly (``tests/auditing_test.py::test_epsilon_one_run_close``).

Threshold choice and validity
-----------------------------
Taking the best of many thresholds and reporting its bound as if it had been
fixed in advance inflates the bound. Each estimator therefore either
Bonferroni-corrects over a candidate set fixed before looking at the labels,
or chooses on one part of the data and bounds on the other. (The one
exception is the opt-in ``k_selection="pareto"`` of the one-run estimators,
which copies jax_privacy's convention to reproduce its numbers.)

The multi-run candidates are order statistics at *fixed ranks* of one sample
("score ≥ the r-th lowest in-score", "score > the r-th lowest out-score").
For continuous scores such a rule's Clopper–Pearson bound on its own sample's
error rate has exactly the nominal coverage (the true rate at an order
statistic is Beta distributed), and the rule is independent of the other
sample, so the union bound over candidates is rigorous. Thresholds at quantiles
of the *pooled* scores have no such argument.

Tied scores would break that argument. Within a tie the multi-run
estimators order in-scores below out-scores, which gives every candidate rule
its worst-case counts and so keeps the bound valid (see :func:`_rank`). The
one-run estimators need no tie-break at all: a tie at a cut joins the guesses
whole, so the guesses depend on the scores alone. Results are deterministic
except for the random split of ``clopper_pearson(threshold_selection="split")``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

import dp_accounting
import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

from dpaudit import validation
from dpaudit.errors import InputError

__all__ = [
    "EstimateResult",
    "clopper_pearson",
    "clopper_pearson_epsilon",
    "gaussian_dp",
    "one_run",
    "one_run_epsilon",
    "one_run_fdp",
    "one_run_fdp_epsilon",
    "estimate_all",
]

_ndtr = scipy.special.ndtr
_ndtri = scipy.special.ndtri
_expit = scipy.special.expit
_binom = scipy.stats.binom

GDP_ASSUMPTION = "assumes the mechanism is mu-GDP (Gaussian trade-off curve)"
FDP_ASSUMPTION = (
    "refutes a Gaussian-shaped (mu-GDP) claim, stronger than (eps, delta)-DP"
)

ThresholdSelection = Literal["bonferroni", "split"]
KSelection = Literal["grid", "pareto"]

# Root finding stops at this absolute ε tolerance (jax_privacy uses the same).
_EPS_XTOL = 1e-6
# Past this the p-value / test statistic is flat to double precision; stop
# doubling the bracket so that degenerate inputs cannot loop forever.
_EPS_MAX = 1024.0


@dataclass(frozen=True)
class EstimateResult:
    """One estimator's answer.

    Attributes:
        name: Which estimator ("clopper_pearson", "gdp", "one_run", "one_run_fdp").
        epsilon_lb: The lower bound on ε (an estimate for the assumption-based ones).
        confidence: Probability, over the randomness of the audit, that
            ``epsilon_lb`` does not exceed the true ε (given ``assumption``).
        delta: The δ at which ε is bounded.
        ceiling: Largest ε this design could certify: the same estimator given a
            perfect distinguisher with the same numbers of runs / canaries /
            candidate thresholds, confidence and δ. An audit whose ceiling is
            below the claimed ε cannot catch a violation, whatever the attack.
        assumption: None for assumption-free bounds, otherwise what must hold
            for ``epsilon_lb`` to be a bound.
        valid_for_verdict: True only for the assumption-free estimators.
        details: JSON-able inputs, threshold and counts behind the number.
    """

    name: str
    epsilon_lb: float
    confidence: float
    delta: float
    ceiling: float
    assumption: str | None
    valid_for_verdict: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for JSON reports."""
        return asdict(self)


# ---------------------------------------------------------------------------
# Input handling


def _check_scores(name: str, scores: Any) -> np.ndarray:
    try:
        arr = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a 1-D array of numbers") from None
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty; need at least one score")
    nan = np.isnan(arr)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        raise InputError(
            f"{name}[{i}] is NaN ({int(nan.sum())} NaN scores in total); "
            "scores must be numbers"
        )
    return arr


def _check_common(
    in_scores: Any, out_scores: Any, delta: float, confidence: float
) -> tuple[np.ndarray, np.ndarray, float, float]:
    ins = _check_scores("in_scores", in_scores)
    outs = _check_scores("out_scores", out_scores)
    delta = validation.open_unit("delta", delta)
    confidence = validation.open_unit("confidence", confidence)
    return ins, outs, delta, confidence


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _n_tied(ins: np.ndarray, outs: np.ndarray) -> int:
    """How many scores share their value with another score (reported, not corrected)."""
    _, counts = np.unique(np.concatenate([ins, outs]), return_counts=True)
    return int(counts[counts > 1].sum())


def _perfect_scores(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Perfectly separated scores of the given sizes, with a wide gap between them.

    The gap keeps a threshold chosen at a midpoint on one split of the data
    perfect on the other split too.
    """
    m = n_in + n_out
    return np.arange(n_in, dtype=float) + 3 * m, np.arange(n_out, dtype=float)


@dataclass(frozen=True)
class _Ranked:
    """Scores replaced by distinct pooled ranks 0 … m−1 (sorted per side).

    Only the order of the scores matters to the estimators. Equal scores are
    ordered in-scores first, the order that makes every count the auditor's
    worst case (see :func:`_rank`). ``pooled_sorted`` maps a rank back to the
    original score for reporting.
    """

    in_ranks: np.ndarray
    out_ranks: np.ndarray
    pooled_sorted: np.ndarray

    @property
    def n_in(self) -> int:
        return int(self.in_ranks.size)

    @property
    def n_out(self) -> int:
        return int(self.out_ranks.size)

    def score_at(self, tau: float) -> float:
        """Original score of the lowest observation that the rule 'rank >= tau' calls "in"."""
        j = int(math.ceil(tau))
        if j >= self.pooled_sorted.size:
            return math.inf
        return float(self.pooled_sorted[max(j, 0)])


def _rank(ins: np.ndarray, outs: np.ndarray) -> _Ranked:
    """Pooled ranks, breaking ties pessimistically (in-scores below out-scores).

    The fixed-rank argument in the module docstring is exact for scores
    without ties, and for tied scores broken by independent random noise. Any
    such random order gives false-positive and false-negative counts no larger
    than this deterministic one at every candidate rule, and the bounds only
    shrink as counts grow, so the pessimistic order stays valid without making
    the result depend on a seed. (A *seeded* random tie-break is not enough:
    with the seed fixed, the noise attached to each input position is fixed,
    and the positions encode the labels.)
    """
    pooled = np.concatenate([ins, outs])
    is_out = np.concatenate([np.zeros(ins.size), np.ones(outs.size)])
    order = np.lexsort((is_out, pooled))  # by score, then in before out
    ranks = np.empty(pooled.size, dtype=float)
    ranks[order] = np.arange(pooled.size, dtype=float)
    return _Ranked(np.sort(ranks[: ins.size]), np.sort(ranks[ins.size :]), pooled[order])


# ---------------------------------------------------------------------------
# Clopper–Pearson multi-run bound (Jagielski et al. 2020; Nasr et al. 2021)


def _cp_upper(k: np.ndarray | int, n: int, significance: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound on a binomial rate from k of n."""
    k = np.asarray(k)
    # beta.ppf needs n - k >= 1; the k == n case is 1 by definition.
    return np.where(
        k < n,
        scipy.stats.beta.ppf(1 - significance, k + 1, np.maximum(n - k, 1)),
        1.0,
    )


def _log_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(num > 0, np.log(np.maximum(num, 1e-300)) - np.log(den), -np.inf)


def _cp_eps(
    fn: np.ndarray,
    fp: np.ndarray,
    n_in: int,
    n_out: int,
    delta: float,
    rate_significance: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ε(t) for each threshold; returns (eps, direction, fnr_ub, fpr_ub).

    (ε, δ)-DP under add/remove implies both TPR ≤ e^ε·FPR + δ and
    TNR ≤ e^ε·FNR + δ (the second is the first with the datasets swapped).
    Both use the same two upper bounds, which hold jointly with probability
    1 − 2·rate_significance, so taking the larger costs no extra correction.
    """
    fnr_ub = _cp_upper(fn, n_in, rate_significance)
    fpr_ub = _cp_upper(fp, n_out, rate_significance)
    e_tpr = _log_ratio(1 - delta - fnr_ub, fpr_ub)
    e_tnr = _log_ratio(1 - delta - fpr_ub, fnr_ub)
    direction = (e_tnr > e_tpr).astype(int)
    eps = np.maximum(np.maximum(e_tpr, e_tnr), 0.0)
    return eps, direction, fnr_ub, fpr_ub


def clopper_pearson_epsilon(
    n_in: int, n_out: int, fn: int, fp: int, delta: float, significance: float
) -> float:
    """Clopper–Pearson ε lower bound at one threshold fixed in advance.

    ``fn`` of ``n_in`` in-runs scored below the threshold and ``fp`` of ``n_out``
    out-runs at or above it. Each rate gets a one-sided bound at
    ``significance / 2`` so that both hold jointly; ε is the larger of
    ln((1−δ−FNR⁺)/FPR⁺) and ln((1−δ−FPR⁺)/FNR⁺), clipped at 0. δ = 0 is allowed
    here (the pure-DP bound).

    >>> round(clopper_pearson_epsilon(100, 100, 0, 0, 0.0, 0.05), 2)
    3.28
    """
    n_in = validation.positive_int("n_in", n_in)
    n_out = validation.positive_int("n_out", n_out)
    if not 0 <= fn <= n_in:
        raise InputError(f"fn must be in [0, n_in={n_in}], got {fn}")
    if not 0 <= fp <= n_out:
        raise InputError(f"fp must be in [0, n_out={n_out}], got {fp}")
    if not 0 <= delta < 1:
        raise InputError(f"delta must be in [0, 1), got {delta}")
    significance = validation.open_unit("significance", significance)
    eps, *_ = _cp_eps(np.array([fn]), np.array([fp]), n_in, n_out, delta, significance / 2)
    return float(eps[0])


def _error_counts(n: int, k: int) -> np.ndarray:
    """At most k error counts in 0 … n/2, evenly spaced on the probit scale.

    Dense where an error rate is small, which is where both the (ε, δ) bound
    and the Gaussian μ are decided, and always including 0, which a perfect
    distinguisher needs. Counts above n/2 are left to the other sample's rules.
    """
    if k == 0:
        return np.zeros(0, dtype=int)
    z = np.linspace(_ndtri(0.5 / n), 0.0, k)
    return np.unique(np.floor(n * _ndtr(z)).astype(int))


def _candidate_taus(r: _Ranked, max_thresholds: int) -> np.ndarray:
    """Decision rules 'rank ≥ τ' at fixed ranks of each sample (see module docstring).

    Rule "score ≥ the (c+1)-th lowest in-score" makes exactly c false
    negatives; rule "score > the (c+1)-th highest out-score" exactly c false
    positives. The counts c depend only on the sample sizes, never on the
    labels, so the union bound is over a set fixed in advance.
    """
    n_cand = min(max_thresholds, r.n_in + r.n_out)
    k_in = min(r.n_in, (n_cand + 1) // 2)
    k_out = min(r.n_out, n_cand - k_in)
    k_in = min(r.n_in, n_cand - k_out)
    idx_in = _error_counts(r.n_in, k_in)
    idx_out = r.n_out - 1 - _error_counts(r.n_out, k_out)
    # Ranks are integers, so "> an out-rank" is "≥ that rank + 0.5".
    return np.concatenate([r.in_ranks[idx_in], r.out_ranks[idx_out] + 0.5])


def _counts(
    in_sorted: np.ndarray, out_sorted: np.ndarray, taus: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """False negatives #{in < τ} and false positives #{out ≥ τ}, vectorised."""
    fn = np.searchsorted(in_sorted, taus, side="left")
    fp = out_sorted.size - np.searchsorted(out_sorted, taus, side="left")
    return fn, fp


_DIRECTIONS = ("TPR <= e^eps FPR + delta", "TNR <= e^eps FNR + delta")


def _cp_bonferroni(
    ins: np.ndarray, outs: np.ndarray, delta: float, significance: float, max_thresholds: int
) -> tuple[float, dict[str, Any]]:
    r = _rank(ins, outs)
    taus = _candidate_taus(r, max_thresholds)
    fn, fp = _counts(r.in_ranks, r.out_ranks, taus)
    rate_sig = significance / (2 * taus.size)
    eps, direction, fnr_ub, fpr_ub = _cp_eps(fn, fp, r.n_in, r.n_out, delta, rate_sig)
    i = int(np.argmax(eps))
    return float(eps[i]), {
        "threshold_selection": "bonferroni",
        "n_candidates": int(taus.size),
        "threshold": r.score_at(float(taus[i])),
        "direction": _DIRECTIONS[int(direction[i])],
        "n_in": r.n_in,
        "n_out": r.n_out,
        "false_negatives": int(fn[i]),
        "false_positives": int(fp[i]),
        "fnr_upper": float(fnr_ub[i]),
        "fpr_upper": float(fpr_ub[i]),
        "significance_per_rate": rate_sig,
    }


def _cp_split(
    ins: np.ndarray,
    outs: np.ndarray,
    delta: float,
    significance: float,
    split_fraction: float,
    seed: int,
) -> tuple[float, dict[str, Any]]:
    n_in_sel = int(ins.size * split_fraction)
    n_out_sel = int(outs.size * split_fraction)
    if not (1 <= n_in_sel < ins.size and 1 <= n_out_sel < outs.size):
        raise InputError(
            f"split_fraction={split_fraction} leaves an empty part "
            f"(n_in={ins.size}, n_out={outs.size}); need >= 2 scores per side "
            "or threshold_selection='bonferroni'"
        )
    # Scores within one side are exchangeable, so a fixed seed is as good as a
    # fresh one here: the held-out part is independent of the chosen threshold.
    rng = np.random.default_rng(seed)
    in_perm, out_perm = rng.permutation(ins), rng.permutation(outs)
    in_sel, in_eval = np.sort(in_perm[:n_in_sel]), np.sort(in_perm[n_in_sel:])
    out_sel, out_eval = np.sort(out_perm[:n_out_sel]), np.sort(out_perm[n_out_sel:])
    # Thresholds in score units, strictly between distinct selection scores:
    # "score ≥ t" is then a fixed rule for the held-out part, ties or not.
    u = np.unique(np.concatenate([in_sel, out_sel]))
    with np.errstate(over="ignore", invalid="ignore"):
        mids = u[:-1] / 2 + u[1:] / 2
    cands = np.concatenate([u[:1], mids[~np.isnan(mids)], [np.inf]])
    fn_s, fp_s = _counts(in_sel, out_sel, cands)
    eps_s, *_ = _cp_eps(fn_s, fp_s, n_in_sel, n_out_sel, delta, significance / 2)
    t = float(cands[int(np.argmax(eps_s))])
    fn, fp = _counts(in_eval, out_eval, np.array([t]))
    rate_sig = significance / 2
    eps, direction, fnr_ub, fpr_ub = _cp_eps(fn, fp, in_eval.size, out_eval.size, delta, rate_sig)
    return float(eps[0]), {
        "threshold_selection": "split",
        "split_fraction": split_fraction,
        "seed": seed,
        "n_in_selection": n_in_sel,
        "n_out_selection": n_out_sel,
        "selection_epsilon": float(np.max(eps_s)),
        "threshold": t,
        "direction": _DIRECTIONS[int(direction[0])],
        "n_in": int(in_eval.size),
        "n_out": int(out_eval.size),
        "false_negatives": int(fn[0]),
        "false_positives": int(fp[0]),
        "fnr_upper": float(fnr_ub[0]),
        "fpr_upper": float(fpr_ub[0]),
        "significance_per_rate": rate_sig,
    }


def clopper_pearson(
    in_scores: Any,
    out_scores: Any,
    *,
    delta: float,
    confidence: float = 0.95,
    threshold_selection: ThresholdSelection = "bonferroni",
    split_fraction: float = 0.5,
    seed: int = 0,
    max_thresholds: int = 100,
) -> EstimateResult:
    """Assumption-free (ε, δ) lower bound from a multi-run audit.

    Jagielski, Ullman, Oprea 2020 (arXiv 2006.07709) and Nasr et al. 2021
    (arXiv 2101.04535): train many models with the canary ("in") and without
    it ("out"), score the canary in each, and guess "in" when the score is at
    least a threshold t. With FPR⁺ and FNR⁺ one-sided Clopper–Pearson upper
    bounds on #{out ≥ t}/n_out and #{in < t}/n_in, each at significance α/2,

        ε(t) = max(ln((1−δ−FNR⁺)/FPR⁺), ln((1−δ−FPR⁺)/FNR⁺)),  clipped at 0,

    holds with probability ≥ 1 − α = ``confidence``.

    Args:
        in_scores: One score per run that trained on the canary; higher = "in".
        out_scores: One score per run that did not.
        delta: δ of the claim being audited, in (0, 1).
        confidence: 1 − α.
        threshold_selection: How to pick t without invalidating the bound.
            "bonferroni" (default): best of at most ``max_thresholds`` rules at
            fixed ranks of each sample, α divided by their number. "split":
            pick t on a ``split_fraction`` random part of each side, bound on
            the rest at the full α. On a Gaussian mechanism at ε = 3 with 1000
            runs per side the Bonferroni bound is the larger (median over 200
            seeds 0.74 against 0.58), hence the default.
        split_fraction: Fraction of each side used to choose t ("split").
        seed: Seeds the random split ("split" only).
        max_thresholds: Number of candidate rules ("bonferroni" only).

    Returns:
        ``EstimateResult`` with ``valid_for_verdict=True``.
    """
    ins, outs, delta, confidence = _check_common(in_scores, out_scores, delta, confidence)
    if threshold_selection not in ("bonferroni", "split"):
        raise InputError(
            "threshold_selection must be 'bonferroni' or 'split', "
            f"got {threshold_selection!r}"
        )
    split_fraction = validation.open_unit("split_fraction", split_fraction)
    max_thresholds = validation.positive_int("max_thresholds", max_thresholds)
    seed = _check_seed(seed)
    significance = 1 - confidence

    def core(a: np.ndarray, b: np.ndarray) -> tuple[float, dict[str, Any]]:
        if threshold_selection == "bonferroni":
            return _cp_bonferroni(a, b, delta, significance, max_thresholds)
        return _cp_split(a, b, delta, significance, split_fraction, seed)

    eps, details = core(ins, outs)
    ceiling, _ = core(*_perfect_scores(ins.size, outs.size))
    details["tied_scores"] = _n_tied(ins, outs)
    return EstimateResult(
        name="clopper_pearson",
        epsilon_lb=eps,
        confidence=confidence,
        delta=delta,
        ceiling=ceiling,
        assumption=None,
        valid_for_verdict=True,
        details=details,
    )


# ---------------------------------------------------------------------------
# Gaussian-DP estimate (Nasr et al. 2023, "Tight Auditing of DPML")


def _gdp_epsilon(mu: float, delta: float) -> float:
    if mu <= 0:
        return 0.0
    return float(dp_accounting.get_epsilon_gaussian(1 / mu, delta))


def _gdp_core(
    ins: np.ndarray, outs: np.ndarray, delta: float, significance: float, max_thresholds: int
) -> tuple[float, dict[str, Any]]:
    r = _rank(ins, outs)
    taus = _candidate_taus(r, max_thresholds)
    fn, fp = _counts(r.in_ranks, r.out_ranks, taus)
    rate_sig = significance / (2 * taus.size)
    fnr_ub = _cp_upper(fn, r.n_in, rate_sig)
    fpr_ub = _cp_upper(fp, r.n_out, rate_sig)
    keep = np.maximum(fnr_ub, fpr_ub) < 1 - delta
    details: dict[str, Any] = {
        "n_in": r.n_in,
        "n_out": r.n_out,
        "n_candidates": int(taus.size),
        "significance_per_rate": rate_sig,
    }
    if not keep.any():
        details.update(mu_lb=0.0, threshold=None)
        return 0.0, details
    # Dong, Roth, Su (arXiv 1905.02383) Eq. 6: a test with FPR α and FNR β
    # certifies μ ≥ Φ⁻¹(1−α) − Φ⁻¹(β). Swapping the two datasets swaps α and
    # β, which leaves this expression unchanged, so one formula covers both
    # directions. A negative value certifies nothing and is clamped to 0:
    # taking |μ| instead (jax_privacy before PR #270) turns a useless attack
    # into a large ε on null data.
    mus = np.where(keep, -_ndtri(fpr_ub) - _ndtri(fnr_ub), -np.inf)
    i = int(np.argmax(mus))
    mu_lb = max(0.0, float(mus[i]))
    details.update(
        mu_lb=mu_lb,
        threshold=r.score_at(float(taus[i])),
        false_negatives=int(fn[i]),
        false_positives=int(fp[i]),
        fnr_upper=float(fnr_ub[i]),
        fpr_upper=float(fpr_ub[i]),
    )
    return _gdp_epsilon(mu_lb, delta), details


def gaussian_dp(
    in_scores: Any,
    out_scores: Any,
    *,
    delta: float,
    confidence: float = 0.95,
    max_thresholds: int = 10,
) -> EstimateResult:
    """ε estimate that assumes the mechanism is μ-GDP (Nasr et al. 2023).

    Nasr, Hayes, Steinke, Balle, Tramèr, Jagielski, Carlini, Terzis, "Tight
    Auditing of Differentially Private Machine Learning" (arXiv 2302.07956),
    as implemented in jax_privacy ``CanaryScoreAuditor.epsilon_from_gdp``:
    Clopper–Pearson upper bounds on FPR and FNR at significance α/(2n) for n
    candidate thresholds; thresholds with max(FPR⁺, FNR⁺) ≥ 1 − δ dropped;
    μ_lb = max_t [Φ⁻¹(1 − FPR⁺) − Φ⁻¹(FNR⁺)] clamped at 0; reported ε is the
    ε of μ_lb-GDP at δ (Dong, Roth, Su Cor. 2.13, via dp_accounting).

    It is a lower bound only if the mechanism's trade-off curve is Gaussian
    (true for a single Gaussian mechanism, approximately for DP-SGD with many
    steps). A perfect distinguisher on 100 vs 100 runs gives ε ≈ 21 here at a
    single threshold, against 3.28 from :func:`clopper_pearson`, so always
    report that bound next to it.

    Args:
        in_scores, out_scores: As in :func:`clopper_pearson` (higher = "in").
        delta: δ in (0, 1).
        confidence: 1 − α.
        max_thresholds: Number of candidate rules (the fixed-rank rules of
            :func:`clopper_pearson`). The default is 10, not 100: if the
            curve is Gaussian, μ is the same at every threshold, so a coarse
            grid loses little while the correction shrinks. On the ε = 3
            Gaussian mechanism with 1000 runs per side the median estimate
            over 200 seeds is 2.06 with 10 candidates, 2.03 with 20 and
            1.97 with 100.
    """
    ins, outs, delta, confidence = _check_common(in_scores, out_scores, delta, confidence)
    max_thresholds = validation.positive_int("max_thresholds", max_thresholds)
    significance = 1 - confidence
    eps, details = _gdp_core(ins, outs, delta, significance, max_thresholds)
    perfect = _perfect_scores(ins.size, outs.size)
    ceiling, _ = _gdp_core(*perfect, delta, significance, max_thresholds)
    details["tied_scores"] = _n_tied(ins, outs)
    return EstimateResult(
        name="gdp",
        epsilon_lb=eps,
        confidence=confidence,
        delta=delta,
        ceiling=ceiling,
        assumption=GDP_ASSUMPTION,
        valid_for_verdict=False,
        details=details,
    )


# ---------------------------------------------------------------------------
# One-run audits (Steinke, Nasr, Jagielski 2023; Mahloujifar, Melis, Chaudhuri 2025)


def _one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """p-value of "v of r guesses correct" under an (ε, δ)-DP null.

    Steinke, Nasr, Jagielski (arXiv 2305.08846), Theorem 3.2 / Appendix code,
    in jax_privacy's vectorised form: q = e^ε/(1+e^ε),
    β = P[Bin(r, q) ≥ v], α_δ = max_{1≤i≤v} P[v−i ≤ Bin(r, q) < v] / i,
    p = min(1, β + 2mδ·α_δ).
    """
    q = _expit(eps)
    beta = float(_binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return beta
    i = np.arange(1, v + 1)
    window = _binom.sf(v - i - 1, r, q) - beta
    alpha = float(np.max(window / i, initial=0.0))
    return min(beta + alpha * delta * 2 * m, 1.0)


def _sup_rejected(objective: Callable[[float], float], eps_lo: float) -> float:
    """Largest ε with objective(ε) > 0, searching upward from ``eps_lo``.

    The objective is positive where the null "the mechanism is ε-private" is
    rejected and changes sign once; returns ``eps_lo`` if it is not positive
    there. Same bracketing as jax_privacy, so the golden values match.
    """
    if objective(eps_lo) <= 0:
        return eps_lo
    eps_hi = max(1.0, 2 * eps_lo)
    while objective(eps_hi) > 0:
        if eps_hi >= _EPS_MAX:
            return eps_hi
        eps_lo, eps_hi = eps_hi, eps_hi * 2
    return float(scipy.optimize.brentq(objective, eps_lo, eps_hi, xtol=_EPS_XTOL))


def _steinke_search(
    m: int, r: int, v: int, significance: float, delta: float, eps_lo: float
) -> float:
    # The p-value with δ = 0 is a lower bound on the one with δ > 0; if even
    # that one is not below the significance, no ε above eps_lo is rejected.
    if _one_run_p_value(m, r, v, eps_lo, 0.0) > significance:
        return eps_lo
    return _sup_rejected(lambda e: significance - _one_run_p_value(m, r, v, e, delta), eps_lo)


_sigma_cache: dict[tuple[float, float], float] = {}


def _gdp_sigma(eps: float, delta: float) -> float:
    key = (eps, delta)
    if key not in _sigma_cache:
        if len(_sigma_cache) > 4096:
            _sigma_cache.clear()
        _sigma_cache[key] = float(dp_accounting.get_sigma_gaussian(eps, delta))
    return _sigma_cache[key]


def _fdp_statistic(
    m: int, r: int, v: int, significance: float, delta: float, eps: float
) -> float:
    """Positive iff v of r correct guesses reject "the mechanism is G_μ-DP", μ = μ(ε, δ).

    Mahloujifar, Melis, Chaudhuri (arXiv 2410.22235), "audit_rh_with_cap" for
    membership (alphabet size k = 2), as in jax_privacy ``_epsilon_one_run_fdp``.
    The Gaussian curve is the one of the Gaussian mechanism that is exactly
    (ε, δ)-DP, i.e. σ = get_sigma_gaussian(ε, δ), μ = 1/σ.
    """
    sigma = _gdp_sigma(eps, delta)
    if sigma == 0:
        def inv(x: float) -> float:
            return float(x == 1.0)
    else:
        mu = 1 / sigma

        def inv(x: float) -> float:  # inverse blow-up of G_μ: Φ(Φ⁻¹(x) − μ)
            return float(_ndtr(_ndtri(x) - mu))

    rr = significance * v / m
    h = significance * (r - v) / m
    for i in range(v - 1, -1, -1):
        h_new = max(h, inv(rr))
        if h_new == h:
            # Neither h nor rr can change again (jax_privacy's early exit).
            break
        rr = min(rr + (i / (r - i)) * (h_new - h), 1.0)
        h = h_new
    return rr + h - r / m


def _fdp_search(
    m: int, r: int, v: int, significance: float, delta: float, eps_lo: float
) -> float:
    return _sup_rejected(lambda e: _fdp_statistic(m, r, v, significance, delta, e), eps_lo)


def _check_one_run_counts(m: int, r: int, v: int, delta: float, significance: float) -> float:
    m = validation.positive_int("m", m)
    r = validation.positive_int("r", r)
    if r > m:
        raise InputError(f"r (number of guesses) must be <= m={m}, got {r}")
    if not (isinstance(v, (int, np.integer)) and 0 <= v <= r):
        raise InputError(f"v (correct guesses) must be an integer in [0, r={r}], got {v}")
    if not 0 <= delta < 1:
        raise InputError(f"delta must be in [0, 1), got {delta}")
    return validation.open_unit("significance", significance)


def one_run_epsilon(m: int, r: int, v: int, delta: float, significance: float) -> float:
    """Steinke–Nasr–Jagielski ε lower bound from raw one-run counts.

    m canaries, each included independently with probability 1/2; r guesses
    made (the rest abstain), v of them correct. Returns
    sup{ε : p(ε) < significance} (0 if no ε ≥ 0 is rejected), with the
    p-value of arXiv 2305.08846. The guesses must be fixed before looking at
    the inclusion labels; one (r, v) only, so no multiple-testing correction.

    >>> round(one_run_epsilon(1000, 600, 600, 1e-5, 0.05), 4)
    5.2704
    """
    significance = _check_one_run_counts(m, r, v, delta, significance)
    return _steinke_search(int(m), int(r), int(v), significance, delta, 0.0)


def one_run_fdp_epsilon(m: int, r: int, v: int, delta: float, significance: float) -> float:
    """Largest ε whose Gaussian curve G_μ(ε,δ) the counts reject (Mahloujifar et al. 2025).

    Same game and arguments as :func:`one_run_epsilon`; refutes the claim "the
    mechanism is as private as the Gaussian mechanism that is (ε, δ)-DP".
    """
    significance = _check_one_run_counts(m, r, v, delta, significance)
    if delta == 0:
        raise InputError("delta must be in (0, 1) for the f-DP audit, got 0")
    return _fdp_search(int(m), int(r), int(v), significance, delta, 0.0)


def _pareto_frontier(points: np.ndarray) -> np.ndarray:
    """Indices of the vertices of the upper convex hull of a sorted polyline.

    jax_privacy ``_pareto_frontier``: repeatedly drop points on or below the
    chord of their neighbours. Only used to reproduce jax_privacy's candidate
    set ("pareto" k selection).
    """
    idx = np.arange(points.shape[0])
    while idx.size > 2:
        d = np.diff(points[idx], axis=0)
        cross = d[:-1, 1] * d[1:, 0] - d[1:, 1] * d[:-1, 0]
        dominated = cross <= 0
        if not dominated.any():
            break
        idx = idx[np.r_[True, ~dominated, True]]
    return idx


def _grid_ks(m: int) -> np.ndarray:
    """Guess counts fixed in advance: 4 per factor of 10 (geometric), from 1 to m."""
    n = max(2, int(round(4 * math.log10(m))) + 1)
    return np.unique(np.round(np.geomspace(1, m, n)).astype(int))


def _one_run_grid(
    ins: np.ndarray, outs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate guess rules (k₊, k₋) fixed from m alone, and their (r, v) counts.

    Two families for each k on the grid: top-k only (k₋ = 0), and ⌈k/2⌉ top
    with ⌊k/2⌋ bottom. "Top k₊" means every canary scoring at least the
    k₊-th highest score, so a tie at the cut brings its whole block in: the
    guesses are then a function of the scores alone, never of the labels,
    which is all Steinke et al.'s theorem asks of them. r can exceed k₊ + k₋.
    """
    m = ins.size + outs.size
    ks = _grid_ks(m)
    pairs = np.unique(
        np.concatenate(
            [np.stack([ks, np.zeros_like(ks)], 1), np.stack([ks - ks // 2, ks // 2], 1)]
        ),
        axis=0,
    )
    kp, km = pairs[:, 0], pairs[:, 1]
    ps = np.sort(np.concatenate([ins, outs]))
    in_s, out_s = np.sort(ins), np.sort(outs)
    has_p, has_m = kp > 0, km > 0
    t_plus = np.where(has_p, ps[np.clip(m - kp, 0, m - 1)], np.inf)
    t_minus = np.where(has_m, ps[np.clip(km - 1, 0, m - 1)], -np.inf)
    r_plus = np.where(has_p, m - np.searchsorted(ps, t_plus, "left"), 0)
    v_plus = np.where(has_p, in_s.size - np.searchsorted(in_s, t_plus, "left"), 0)
    r_minus = np.where(has_m, np.searchsorted(ps, t_minus, "right"), 0)
    v_minus = np.where(has_m, np.searchsorted(out_s, t_minus, "right"), 0)
    guesses = r_plus + r_minus
    correct = v_plus + v_minus
    # A tie block cut by both rules would be guessed both ways; such a
    # candidate is dropped (it still counts towards the correction).
    overlap = has_p & has_m & (t_minus >= t_plus)
    guesses = np.where(overlap, 0, guesses)
    return kp, km, guesses, correct, t_plus, t_minus


def _one_run_core(
    ins: np.ndarray,
    outs: np.ndarray,
    delta: float,
    significance: float,
    k_selection: str,
    fdp: bool,
) -> tuple[float, dict[str, Any]]:
    m = ins.size + outs.size
    search = _fdp_search if fdp else _steinke_search
    if k_selection == "pareto":
        # jax_privacy ``epsilon_one_run`` / ``epsilon_one_run_fdp`` exactly:
        # one-sided guesses ("in" iff score ≥ t) at every threshold on the
        # empirical ROC's upper convex hull, α divided by their number. The
        # hull is found with the labels, so that number is not fixed in
        # advance and the correction is a heuristic, not a proof; this mode
        # is kept to reproduce jax_privacy's published values.
        in_s, out_s = np.sort(ins), np.sort(outs)
        thresholds = np.concatenate([np.union1d(ins, outs), [np.inf]])
        fn = np.searchsorted(in_s, thresholds, "left")
        tn = np.searchsorted(out_s, thresholds, "left")
        idx = _pareto_frontier(np.stack([fn, tn], axis=1))
        n_cand = int(idx.size)
        sig = significance / n_cand
        correct = ins.size - fn[idx]
        fp = outs.size - tn[idx]
        guesses = correct + fp
        t_plus = thresholds[idx]
        t_minus = np.full(idx.size, -np.inf)
        kp, km = guesses, np.zeros_like(guesses)
        # jax's search order (decreasing Clopper–Pearson lower bound on
        # precision) and skip rule (raw precision ≤ the best q so far) only
        # affect speed, except that the skip can miss an f-DP maximum; both
        # are copied so that the numbers match.
        order = np.argsort(-(1.0 - _cp_upper(fp, guesses, sig)))
        skip_by_q = True
    else:
        kp, km, guesses, correct, t_plus, t_minus = _one_run_grid(ins, outs)
        n_cand = int(kp.size)
        sig = significance / n_cand
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(guesses > 0, correct / np.maximum(guesses, 1), 0.0)
        order = np.argsort(-precision, kind="stable")
        skip_by_q = False

    best_eps, best = 0.0, -1
    for i in order:
        g, c = int(guesses[i]), int(correct[i])
        if g == 0:
            continue
        if skip_by_q and c / g <= _expit(best_eps):
            continue
        e = search(m, g, c, sig, delta, best_eps)
        if e > best_eps:
            best_eps, best = e, int(i)
    details: dict[str, Any] = {
        "m": m,
        "k_selection": k_selection,
        "n_candidates": n_cand,
        "significance_per_candidate": sig,
    }
    if best >= 0:
        details.update(
            k_plus=int(kp[best]),
            k_minus=int(km[best]),
            guesses=int(guesses[best]),
            correct=int(correct[best]),
            # Guess "in" iff score >= threshold_in, "out" iff <= threshold_out.
            threshold_in=float(t_plus[best]) if kp[best] else None,
            threshold_out=float(t_minus[best]) if km[best] else None,
        )
    return best_eps, details


@functools.lru_cache(maxsize=256)
def _one_run_ceiling(
    n_in: int, n_out: int, delta: float, significance: float, k_selection: str, fdp: bool
) -> float:
    # Depends on the sizes only; cached because audits repeat the same design.
    perfect = _perfect_scores(n_in, n_out)
    return _one_run_core(*perfect, delta, significance, k_selection, fdp)[0]


def _one_run_result(
    in_scores: Any,
    out_scores: Any,
    delta: float,
    confidence: float,
    k_selection: str,
    fdp: bool,
) -> EstimateResult:
    ins, outs, delta, confidence = _check_common(in_scores, out_scores, delta, confidence)
    if k_selection not in ("grid", "pareto"):
        raise InputError(f"k_selection must be 'grid' or 'pareto', got {k_selection!r}")
    significance = 1 - confidence
    eps, details = _one_run_core(ins, outs, delta, significance, k_selection, fdp)
    ceiling = _one_run_ceiling(ins.size, outs.size, delta, significance, k_selection, fdp)
    details["tied_scores"] = _n_tied(ins, outs)
    return EstimateResult(
        name="one_run_fdp" if fdp else "one_run",
        epsilon_lb=eps,
        confidence=confidence,
        delta=delta,
        ceiling=ceiling,
        assumption=FDP_ASSUMPTION if fdp else None,
        valid_for_verdict=not fdp,
        details=details,
    )


def one_run(
    in_scores: Any,
    out_scores: Any,
    *,
    delta: float,
    confidence: float = 0.95,
    k_selection: KSelection = "grid",
) -> EstimateResult:
    """Assumption-free (ε, δ) lower bound from one training run (Steinke et al. 2023).

    Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run"
    (arXiv 2305.08846), Algorithm 1: m = len(in_scores) + len(out_scores)
    canaries, each included in training independently with probability 1/2;
    guess "in" for the k₊ highest scores and "out" for the k₋ lowest,
    abstain on the rest; v of the r guesses are correct. The bound is
    sup{ε : p(ε) < α'} (see :func:`one_run_epsilon`).

    Choosing (k₊, k₋) after seeing the result needs a correction; α' is α
    divided by the number of candidate (k₊, k₋) pairs:

    * "grid" (default): pairs fixed from m alone, (k, 0) and (⌈k/2⌉, ⌊k/2⌋)
      for k on a geometric grid from 1 to m with 4 points per decade. A
      rigorous union bound.
    * "pareto": jax_privacy's ``epsilon_one_run`` convention (k₋ = 0, every
      threshold on the empirical ROC's convex hull, α divided by their
      number). Reproduces jax_privacy's values; the candidate count depends
      on the labels, so the correction is a heuristic.

    Multi-run data (one canary, many models) can be passed too; each run's
    score then counts as one canary. The guarantee assumes each canary's
    in/out assignment was a fair coin independent of everything else; a fixed
    50/50 design is treated as if it were.

    Args:
        in_scores: Scores of canaries that were trained on; higher = "in".
        out_scores: Scores of canaries that were not.
        delta: δ in (0, 1).
        confidence: 1 − α.
        k_selection: "grid" or "pareto", see above.
    """
    return _one_run_result(in_scores, out_scores, delta, confidence, k_selection, fdp=False)


def one_run_fdp(
    in_scores: Any,
    out_scores: Any,
    *,
    delta: float,
    confidence: float = 0.95,
    k_selection: KSelection = "grid",
) -> EstimateResult:
    """One-run audit of a Gaussian f-DP claim (Mahloujifar, Melis, Chaudhuri 2025).

    "Auditing f-Differential Privacy in One Run" (ICML 2025, arXiv
    2410.22235), test "audit_rh_with_cap" with f the trade-off curve of the
    Gaussian mechanism that is exactly (ε, δ)-DP. The reported ε is the
    largest one whose curve the guesses reject (see
    :func:`one_run_fdp_epsilon`). A rejection refutes "the mechanism is as
    private as that Gaussian mechanism", which is stronger than refuting
    (ε, δ)-DP, so the number may exceed what :func:`one_run` certifies and
    must not back a verdict on an (ε, δ) claim on its own.

    Same game, arguments, candidate sets and multi-run caveat as
    :func:`one_run`; "pareto" reproduces jax_privacy ``epsilon_one_run_fdp``.
    """
    return _one_run_result(in_scores, out_scores, delta, confidence, k_selection, fdp=True)


# ---------------------------------------------------------------------------


def estimate_all(
    in_scores: Any,
    out_scores: Any,
    *,
    delta: float,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, EstimateResult]:
    """Run all four estimators with their defaults on the same scores.

    Keys: "clopper_pearson", "gdp", "one_run", "one_run_fdp". For multi-run
    data the one-run estimators treat each run's score as one canary (see
    :func:`one_run` for what that assumes). Only results with
    ``valid_for_verdict`` may decide whether a claim is violated. ``seed``
    only matters for a split threshold selection, which is not the default.
    """
    ins, outs, delta, confidence = _check_common(in_scores, out_scores, delta, confidence)
    kw = dict(delta=delta, confidence=confidence)
    return {
        "clopper_pearson": clopper_pearson(ins, outs, seed=seed, **kw),
        "gdp": gaussian_dp(ins, outs, **kw),
        "one_run": one_run(ins, outs, **kw),
        "one_run_fdp": one_run_fdp(ins, outs, **kw),
    }
