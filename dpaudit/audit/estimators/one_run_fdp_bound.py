"""One-run audit of a Gaussian f-DP claim (Mahloujifar, Melis, Chaudhuri 2025). Refutes μ-GDP.

The game and candidate guess sets of :mod:`~dpaudit.audit.estimators.one_run_bound`,
tested against the trade-off curve of the Gaussian mechanism that is exactly
(ε, δ)-DP instead of against (ε, δ)-DP itself. A rejection refutes "the
mechanism is as private as that Gaussian mechanism", which is stronger than
refuting (ε, δ)-DP, so the number may exceed what the Steinke bound certifies
and never decides a verdict.
"""

from __future__ import annotations

from typing import Any

import dp_accounting
import scipy.special

from dpaudit.audit.estimators.one_run_bound import KSelection, check_counts, one_run_result, sup_rejected
from dpaudit.audit.estimators.result import FDP_ASSUMPTION, EstimateResult
from dpaudit.errors import InputError

_ndtr = scipy.special.ndtr
_ndtri = scipy.special.ndtri

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
    return sup_rejected(lambda e: _fdp_statistic(m, r, v, significance, delta, e), eps_lo)


def one_run_fdp_epsilon(m: int, r: int, v: int, delta: float, significance: float) -> float:
    """Largest ε whose Gaussian curve G_μ(ε,δ) the counts reject (Mahloujifar et al. 2025).

    Same game and arguments as :func:`~dpaudit.audit.estimators.one_run_epsilon`;
    refutes the claim "the mechanism is as private as the Gaussian mechanism
    that is (ε, δ)-DP".
    """
    significance = check_counts(m, r, v, delta, significance)
    if delta == 0:
        raise InputError("delta must be in (0, 1) for the f-DP audit, got 0")
    return _fdp_search(int(m), int(r), int(v), significance, delta, 0.0)


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
    :func:`one_run_fdp_epsilon`). Must not back a verdict on an (ε, δ) claim
    on its own (see the module docstring).

    Same game, arguments, candidate sets and multi-run caveat as
    :func:`~dpaudit.audit.estimators.one_run`; "pareto" reproduces
    jax_privacy ``epsilon_one_run_fdp``.
    """
    return one_run_result(
        in_scores, out_scores, delta, confidence, k_selection,
        search=_fdp_search, name="one_run_fdp", assumption=FDP_ASSUMPTION,
    )
