"""One-run audit (Steinke, Nasr, Jagielski 2023). Assumption-free.

m canaries, each included in training independently with probability ½;
guess "in" for the k₊ highest scores and "out" for the k₋ lowest, abstain on
the rest; v of the r guesses are correct. Also the guessing game and the
candidate (k₊, k₋) sets that :mod:`~dpaudit.audit.estimators.one_run_fdp_bound`
reuses with another test.

The guesses need no tie-break: a tie at a cut joins the guesses whole, so
they depend on the scores alone.

Why this is hand-written: none of the installed libraries (numpy, scipy,
dp-accounting, statsmodels) ships it. The reference implementation is
google-deepmind/jax_privacy ``jax_privacy/auditing.py``, which depends on
jax; this code follows it closely enough to reproduce its test values exactly
(``tests/auditing_test.py::test_epsilon_one_run_close``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Literal

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

from dpaudit import validation
from dpaudit.audit.estimators.inputs import check_common, perfect_scores
from dpaudit.audit.estimators.ranks import cp_upper
from dpaudit.audit.estimators.result import EstimateResult, result_of
from dpaudit.errors import InputError

KSelection = Literal["grid", "pareto"]
#: ε search for one (m, r, v) at a significance: (m, r, v, significance, δ, ε_lo) -> ε.
Search = Callable[[int, int, int, float, float, float], float]

_expit = scipy.special.expit
_binom = scipy.stats.binom

# Root finding stops at this absolute ε tolerance (jax_privacy uses the same).
_EPS_XTOL = 1e-6
# Past this the p-value / test statistic is flat to double precision; stop
# doubling the bracket so that degenerate inputs cannot loop forever.
_EPS_MAX = 1024.0


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


def sup_rejected(objective: Callable[[float], float], eps_lo: float) -> float:
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
    return sup_rejected(lambda e: significance - _one_run_p_value(m, r, v, e, delta), eps_lo)


def check_counts(m: int, r: int, v: int, delta: float, significance: float) -> float:
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
    significance = check_counts(m, r, v, delta, significance)
    return _steinke_search(int(m), int(r), int(v), significance, delta, 0.0)



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
    search: Search,
) -> tuple[float, dict[str, Any]]:
    m = ins.size + outs.size
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
        order = np.argsort(-(1.0 - cp_upper(fp, guesses, sig)))
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
    n_in: int, n_out: int, delta: float, significance: float, k_selection: str, search: Search
) -> float:
    # Depends on the sizes only; cached because audits repeat the same design.
    return _one_run_core(*perfect_scores(n_in, n_out), delta, significance, k_selection, search)[0]


def one_run_result(
    in_scores: Any,
    out_scores: Any,
    delta: float,
    confidence: float,
    k_selection: str,
    *,
    search: Search,
    name: str,
    assumption: str | None,
) -> EstimateResult:
    """Play the one-run game on the scores and bound ε with ``search`` (shared with the f-DP test)."""
    ins, outs, delta, confidence = check_common(in_scores, out_scores, delta, confidence)
    if k_selection not in ("grid", "pareto"):
        raise InputError(f"k_selection must be 'grid' or 'pareto', got {k_selection!r}")
    significance = 1 - confidence
    return result_of(
        name, lambda a, b: _one_run_core(a, b, delta, significance, k_selection, search), ins, outs,
        confidence=confidence, delta=delta, assumption=assumption,
        ceiling=_one_run_ceiling(ins.size, outs.size, delta, significance, k_selection, search),
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
    return one_run_result(
        in_scores, out_scores, delta, confidence, k_selection,
        search=_steinke_search, name="one_run", assumption=None,
    )

