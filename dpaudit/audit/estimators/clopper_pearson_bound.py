"""Clopper–Pearson multi-run bound (Jagielski et al. 2020; Nasr et al. 2021). Assumption-free.

Three ways to choose the threshold without invalidating the bound:

* ``"rank_grid"`` (default): a small grid fixed in advance, 6 rules at fixed
  ranks of each sample with error rates from 0 to 25 % (probit-spaced), a
  union bound over the 12, and within each rule 70 % of its share of α on the
  rate whose count the rule fixes (the small one, which decides the bound)
  and 30 % on the other.
* ``"bonferroni"``: the design before it, up to 100 rules spread over error
  rates 0 … 50 %, α split evenly over rules and rates.
* ``"split"``: the threshold chosen on a random part of the runs, the bound
  computed on the rest at the full α.

``bench/audit_power.py`` compares the three on the same simulated runs
(Gaussian mechanism, ε ∈ {1, 3, 8}, 250 – 5000 runs per side, 200 seeds);
the rank grid has the largest median bound in every cell (at ε = 3 with 1000
runs per side 0.81 against 0.72 for Bonferroni and 0.61 for the split;
docs/auditing.md has the table), hence the default. The 70/30 split and the
grid's size and range were chosen on a separate simulation (seeds 1000–1039)
as the best average over the same nine cells.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from dpaudit import validation
from dpaudit.audit.estimators.inputs import check_common, check_seed
from dpaudit.audit.estimators.ranks import counts, cp_upper, grid_rules, rank, spread_rules
from dpaudit.audit.estimators.result import EstimateResult, result_of
from dpaudit.errors import InputError

ThresholdSelection = Literal["rank_grid", "bonferroni", "split"]
THRESHOLD_SELECTIONS = ("rank_grid", "bonferroni", "split")
#: Rules per sample in the default grid, and the largest error rate they cover.
GRID_PER_SIDE = 6
GRID_MAX_RATE = 0.25
#: Share of a rule's α on the error count the rule fixes (the small rate).
FIXED_RATE_SHARE = 0.7

_DIRECTIONS = ("TPR <= e^eps FPR + delta", "TNR <= e^eps FNR + delta")


def _log_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(num > 0, np.log(np.maximum(num, 1e-300)) - np.log(den), -np.inf)


def _cp_eps(
    fn: np.ndarray,
    fp: np.ndarray,
    n_in: int,
    n_out: int,
    delta: float,
    fn_significance: np.ndarray | float,
    fp_significance: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ε(t) for each threshold; returns (eps, direction, fnr_ub, fpr_ub).

    (ε, δ)-DP under add/remove implies both TPR ≤ e^ε·FPR + δ and
    TNR ≤ e^ε·FNR + δ (the second is the first with the datasets swapped).
    Both use the same two upper bounds, which hold jointly with probability
    1 − fn_significance − fp_significance, so taking the larger costs no
    extra correction.
    """
    fnr_ub = cp_upper(fn, n_in, fn_significance)
    fpr_ub = cp_upper(fp, n_out, fp_significance)
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
    eps, *_ = _cp_eps(
        np.array([fn]), np.array([fp]), n_in, n_out, delta, significance / 2, significance / 2
    )
    return float(eps[0])


def _details(
    i: int, direction: np.ndarray, fn: np.ndarray, fp: np.ndarray, fnr_ub: np.ndarray, fpr_ub: np.ndarray,
    n_in: int, n_out: int,
) -> dict[str, Any]:
    return {
        "direction": _DIRECTIONS[int(direction[i])],
        "n_in": n_in,
        "n_out": n_out,
        "false_negatives": int(fn[i]),
        "false_positives": int(fp[i]),
        "fnr_upper": float(fnr_ub[i]),
        "fpr_upper": float(fpr_ub[i]),
    }


def _cp_fixed_ranks(
    ins: np.ndarray,
    outs: np.ndarray,
    delta: float,
    significance: float,
    selection: str,
    max_thresholds: int,
) -> tuple[float, dict[str, Any]]:
    r = rank(ins, outs)
    if selection == "rank_grid":
        rules = grid_rules(r, GRID_PER_SIDE, GRID_MAX_RATE)
        share = significance / rules.size
        fixed = FIXED_RATE_SHARE * share
        sig_fp = np.where(rules.fixed_fp, fixed, share - fixed)
        sig_fn = share - sig_fp
    else:
        rules = spread_rules(r, max_thresholds)
        sig_fn = sig_fp = np.full(rules.size, significance / (2 * rules.size))
    fn, fp = counts(r.in_ranks, r.out_ranks, rules.taus)
    eps, direction, fnr_ub, fpr_ub = _cp_eps(fn, fp, r.n_in, r.n_out, delta, sig_fn, sig_fp)
    i = int(np.argmax(eps))
    return float(eps[i]), {
        "threshold_selection": selection,
        "n_candidates": rules.size,
        "threshold": r.score_at(float(rules.taus[i])),
        **_details(i, direction, fn, fp, fnr_ub, fpr_ub, r.n_in, r.n_out),
        "significance_fnr": float(sig_fn[i]),
        "significance_fpr": float(sig_fp[i]),
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
            "or threshold_selection='rank_grid'"
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
    half = significance / 2
    fn_s, fp_s = counts(in_sel, out_sel, cands)
    eps_s, *_ = _cp_eps(fn_s, fp_s, n_in_sel, n_out_sel, delta, half, half)
    t = float(cands[int(np.argmax(eps_s))])
    fn, fp = counts(in_eval, out_eval, np.array([t]))
    eps, direction, fnr_ub, fpr_ub = _cp_eps(fn, fp, in_eval.size, out_eval.size, delta, half, half)
    return float(eps[0]), {
        "threshold_selection": "split",
        "split_fraction": split_fraction,
        "seed": seed,
        "n_in_selection": n_in_sel,
        "n_out_selection": n_out_sel,
        "selection_epsilon": float(np.max(eps_s)),
        "threshold": t,
        **_details(0, direction, fn, fp, fnr_ub, fpr_ub, int(in_eval.size), int(out_eval.size)),
        "significance_fnr": half,
        "significance_fpr": half,
    }


def clopper_pearson(
    in_scores: Any,
    out_scores: Any,
    *,
    delta: float,
    confidence: float = 0.95,
    threshold_selection: ThresholdSelection = "rank_grid",
    split_fraction: float = 0.5,
    seed: int = 0,
    max_thresholds: int = 100,
) -> EstimateResult:
    """Assumption-free (ε, δ) lower bound from a multi-run audit.

    Jagielski, Ullman, Oprea 2020 (arXiv 2006.07709) and Nasr et al. 2021
    (arXiv 2101.04535): train many models with the canary ("in") and without
    it ("out"), score the canary in each, and guess "in" when the score is at
    least a threshold t. With FPR⁺ and FNR⁺ one-sided Clopper–Pearson upper
    bounds on #{out ≥ t}/n_out and #{in < t}/n_in whose significances add up
    to α = 1 − ``confidence`` over all candidate thresholds,

        ε(t) = max(ln((1−δ−FNR⁺)/FPR⁺), ln((1−δ−FPR⁺)/FNR⁺)),  clipped at 0,

    and the largest ε(t) holds with probability ≥ 1 − α.

    Args:
        in_scores: One score per run that trained on the canary; higher = "in".
        out_scores: One score per run that did not.
        delta: δ of the claim being audited, in (0, 1).
        confidence: 1 − α.
        threshold_selection: "rank_grid" (default), "bonferroni" or "split"
            (see the module docstring).
        split_fraction: Fraction of each side used to choose t ("split").
        seed: Seeds the random split ("split" only).
        max_thresholds: Number of candidate rules ("bonferroni" only).

    Returns:
        ``EstimateResult`` with ``valid_for_verdict=True``.
    """
    ins, outs, delta, confidence = check_common(in_scores, out_scores, delta, confidence)
    if threshold_selection not in THRESHOLD_SELECTIONS:
        raise InputError(
            f"threshold_selection must be one of {', '.join(map(repr, THRESHOLD_SELECTIONS))}, "
            f"got {threshold_selection!r}"
        )
    split_fraction = validation.open_unit("split_fraction", split_fraction)
    max_thresholds = validation.positive_int("max_thresholds", max_thresholds)
    seed = check_seed(seed)
    significance = 1 - confidence

    def core(a: np.ndarray, b: np.ndarray) -> tuple[float, dict[str, Any]]:
        if threshold_selection == "split":
            return _cp_split(a, b, delta, significance, split_fraction, seed)
        return _cp_fixed_ranks(a, b, delta, significance, threshold_selection, max_thresholds)

    return result_of("clopper_pearson", core, ins, outs, confidence=confidence, delta=delta, assumption=None)
