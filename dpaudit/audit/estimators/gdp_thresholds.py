"""Gaussian-DP estimate through thresholds (Nasr et al. 2023, "Tight auditing"). Assumes μ-GDP."""

from __future__ import annotations

from typing import Any

import dp_accounting
import numpy as np
import scipy.special

from dpaudit import validation
from dpaudit.audit.estimators.inputs import check_common
from dpaudit.audit.estimators.ranks import counts, cp_upper, rank, spread_rules
from dpaudit.audit.estimators.result import GDP_ASSUMPTION, EstimateResult, result_of

_ndtri = scipy.special.ndtri


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε(δ) of μ-GDP (Dong, Roth, Su Cor. 2.13, via dp_accounting); 0 for μ ≤ 0."""
    if mu <= 0:
        return 0.0
    if not np.isfinite(mu):
        return float("inf")
    return float(dp_accounting.get_epsilon_gaussian(1 / mu, delta))


def _gdp_core(
    ins: np.ndarray, outs: np.ndarray, delta: float, significance: float, max_thresholds: int
) -> tuple[float, dict[str, Any]]:
    r = rank(ins, outs)
    rules = spread_rules(r, max_thresholds)
    fn, fp = counts(r.in_ranks, r.out_ranks, rules.taus)
    rate_sig = significance / (2 * rules.size)
    fnr_ub = cp_upper(fn, r.n_in, rate_sig)
    fpr_ub = cp_upper(fp, r.n_out, rate_sig)
    keep = np.maximum(fnr_ub, fpr_ub) < 1 - delta
    details: dict[str, Any] = {
        "n_in": r.n_in,
        "n_out": r.n_out,
        "n_candidates": rules.size,
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
        threshold=r.score_at(float(rules.taus[i])),
        false_negatives=int(fn[i]),
        false_positives=int(fp[i]),
        fnr_upper=float(fnr_ub[i]),
        fpr_upper=float(fpr_ub[i]),
    )
    return gdp_epsilon(mu_lb, delta), details


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
        max_thresholds: Number of candidate rules (at fixed ranks of each
            sample, error rates 0 … 50 %). The default is 10, not 100: if the
            curve is Gaussian, μ is the same at every threshold, so a coarse
            grid loses little while the correction shrinks. On the ε = 3
            Gaussian mechanism with 1000 runs per side the median estimate
            over 200 seeds is 2.06 with 10 candidates, 2.03 with 20 and
            1.97 with 100.
    """
    ins, outs, delta, confidence = check_common(in_scores, out_scores, delta, confidence)
    max_thresholds = validation.positive_int("max_thresholds", max_thresholds)
    significance = 1 - confidence
    return result_of(
        "gdp", lambda a, b: _gdp_core(a, b, delta, significance, max_thresholds), ins, outs,
        confidence=confidence, delta=delta, assumption=GDP_ASSUMPTION,
    )
