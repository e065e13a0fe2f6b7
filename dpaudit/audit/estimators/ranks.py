"""Decision rules at fixed ranks, shared by the multi-run estimators.

The multi-run candidates are order statistics at *fixed ranks* of one sample
("score ≥ the (c+1)-th lowest in-score", "score > the (c+1)-th highest
out-score"). For continuous scores such a rule makes exactly c errors on its
own sample, and its true error rate there is Beta(c+1, n−c) distributed, so
the Clopper–Pearson bound at c has exactly the nominal coverage; the rule is
independent of the other sample, whose error count is then binomial. Which
counts c are candidates depends on the sample sizes alone, never on the
labels, so a union bound over the candidates is rigorous. Thresholds at
quantiles of the *pooled* scores have no such argument.

Tied scores would break that argument. Within a tie the rules order
in-scores below out-scores, which gives every candidate its worst-case
counts and so keeps the bounds valid (see :func:`rank`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.special
import scipy.stats

_ndtr = scipy.special.ndtr
_ndtri = scipy.special.ndtri


def cp_upper(k: np.ndarray | int, n: int, significance: np.ndarray | float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound on a binomial rate from k of n."""
    k = np.asarray(k)
    # beta.ppf needs n - k >= 1; the k == n case is 1 by definition.
    return np.where(
        k < n,
        scipy.stats.beta.ppf(1 - np.asarray(significance), k + 1, np.maximum(n - k, 1)),
        1.0,
    )


@dataclass(frozen=True)
class Ranked:
    """Scores replaced by distinct pooled ranks 0 … m−1 (sorted per side).

    Only the order of the scores matters to the estimators. Equal scores are
    ordered in-scores first, the order that makes every count the auditor's
    worst case (see :func:`rank`). ``pooled_sorted`` maps a rank back to the
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


def rank(ins: np.ndarray, outs: np.ndarray) -> Ranked:
    """Pooled ranks, breaking ties pessimistically (in-scores below out-scores).

    The fixed-rank argument is exact for scores without ties, and for tied
    scores broken by independent random noise. Any such random order gives
    false-positive and false-negative counts no larger than this
    deterministic one at every candidate rule, and the bounds only shrink as
    counts grow, so the pessimistic order stays valid without making the
    result depend on a seed. (A *seeded* random tie-break is not enough: with
    the seed fixed, the noise attached to each input position is fixed, and
    the positions encode the labels.)
    """
    pooled = np.concatenate([ins, outs])
    is_out = np.concatenate([np.zeros(ins.size), np.ones(outs.size)])
    order = np.lexsort((is_out, pooled))  # by score, then in before out
    ranks = np.empty(pooled.size, dtype=float)
    ranks[order] = np.arange(pooled.size, dtype=float)
    return Ranked(np.sort(ranks[: ins.size]), np.sort(ranks[ins.size :]), pooled[order])


def error_counts(n: int, k: int, max_rate: float = 0.5) -> np.ndarray:
    """At most k error counts in 0 … n·max_rate, evenly spaced on the probit scale.

    Dense where an error rate is small, which is where both the (ε, δ) bound
    and the Gaussian μ are decided, and always including 0, which a perfect
    distinguisher needs.
    """
    if k == 0:
        return np.zeros(0, dtype=int)
    z = np.linspace(_ndtri(min(0.5 / n, max_rate)), _ndtri(max_rate), k)
    return np.unique(np.floor(n * _ndtr(z)).astype(int))


@dataclass(frozen=True)
class Rules:
    """Candidate rules 'rank ≥ τ' and, for each, which of its two error counts is fixed.

    ``fixed_fp[i]`` is True for a rule at a fixed out-rank (its false-positive
    count is the chosen c) and False for one at a fixed in-rank (its
    false-negative count is c).
    """

    taus: np.ndarray
    fixed_fp: np.ndarray

    @property
    def size(self) -> int:
        return int(self.taus.size)


def _rules(r: Ranked, fn_counts: np.ndarray, fp_counts: np.ndarray) -> Rules:
    # Rule "score ≥ the (c+1)-th lowest in-score" makes exactly c false
    # negatives; "score > the (c+1)-th highest out-score" exactly c false
    # positives. Ranks are integers, so "> an out-rank" is "≥ that rank + 0.5".
    taus = np.concatenate([r.in_ranks[fn_counts], r.out_ranks[r.n_out - 1 - fp_counts] + 0.5])
    fixed_fp = np.concatenate([np.zeros(fn_counts.size, bool), np.ones(fp_counts.size, bool)])
    return Rules(taus, fixed_fp)


def spread_rules(r: Ranked, max_thresholds: int) -> Rules:
    """Up to ``max_thresholds`` rules, half at fixed in-ranks and half at fixed out-ranks.

    Error counts from 0 to half of each sample (:func:`error_counts`); counts
    above n/2 are left to the other sample's rules.
    """
    n_cand = min(max_thresholds, r.n_in + r.n_out)
    k_in = min(r.n_in, (n_cand + 1) // 2)
    k_out = min(r.n_out, n_cand - k_in)
    k_in = min(r.n_in, n_cand - k_out)
    return _rules(r, error_counts(r.n_in, k_in), error_counts(r.n_out, k_out))


def grid_rules(r: Ranked, per_side: int, max_rate: float) -> Rules:
    """``per_side`` rules at fixed ranks of each sample, error rates from 0 to ``max_rate``."""
    return _rules(
        r, error_counts(r.n_in, min(per_side, r.n_in), max_rate),
        error_counts(r.n_out, min(per_side, r.n_out), max_rate),
    )


def counts(
    in_sorted: np.ndarray, out_sorted: np.ndarray, taus: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """False negatives #{in < τ} and false positives #{out ≥ τ}, vectorised."""
    fn = np.searchsorted(in_sorted, taus, side="left")
    fp = out_sorted.size - np.searchsorted(out_sorted, taus, side="left")
    return fn, fp
