"""Gaussian-DP accountant (Dong, Roth & Su 2019; Bu, Dong, Long & Su 2020).

Hand-written because no installed library composes a *heterogeneous*
schedule in μ-GDP (Opacus's GDP accountant takes one (σ, q, steps) entry).

q = 1 steps are exact: a Gaussian step with multiplier σ is (1/σ)-GDP and
μ-GDP composes as μ² = Σ μ_i², so they add 1/σ² to μ². Subsampled steps use
the central-limit approximation μ_t² = q_t²·(exp(1/σ_t²) − 1) (Bu et al.
2020, Thm 5), which is *not* a bound and can under-state ε: the result says
so and never decides a verdict alone.
"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
from scipy.special import log_ndtr

from dpaudit.accountants.base import Accountant, DeltaResult, EpsilonResult
from dpaudit.schedule import Schedule

CLT_WARNING = "CLT approximation: may under-state epsilon, not an upper bound"


def gdp_mu(schedule: Schedule) -> tuple[float, bool]:
    """(μ, exact): μ of the composed schedule; exact is False if any step used the CLT."""
    sig = np.asarray(schedule.sigmas)
    q = np.asarray(schedule.sample_rates)
    n = np.asarray(schedule.counts, dtype=float)
    full = q == 1.0
    mu2 = float(np.sum(n[full] / sig[full] ** 2))
    with np.errstate(over="ignore"):  # tiny σ: exp overflows to inf, and so does μ (correctly)
        mu2 += float(np.sum(n[~full] * q[~full] ** 2 * np.expm1(1.0 / sig[~full] ** 2)))
    return math.sqrt(mu2), bool(full.all())


def gdp_delta(mu: float, epsilon: float) -> float:
    """δ(ε) of μ-GDP: Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) (Dong, Roth, Su, Cor. 2.13), in log space."""
    if mu == 0:
        return 0.0
    a = log_ndtr(-epsilon / mu + mu / 2)
    b = epsilon + log_ndtr(-epsilon / mu - mu / 2)
    return float(math.exp(a) * -math.expm1(b - a)) if b < a else 0.0


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε(δ) of μ-GDP, i.e. of one Gaussian mechanism with multiplier 1/μ (Balle & Wang 2018)."""
    if mu == 0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf
    with np.errstate(divide="ignore"):  # dp-accounting's log1p(0) while bracketing, harmless
        return float(dp_accounting.get_epsilon_gaussian(1.0 / mu, delta))


class GdpAccountant(Accountant):
    """μ-GDP: exact for full-batch steps, central-limit approximation for subsampled ones."""

    name = "gdp"
    is_upper_bound = False

    def _notes(self, mu: float, exact: bool) -> tuple[str, ...]:
        base = f"mu = {mu:.6g}"
        return (base, "exact (q = 1 steps only)") if exact else (base, CLT_WARNING)

    def _epsilon(self, schedule: Schedule, delta: float) -> EpsilonResult:
        mu, exact = gdp_mu(schedule)
        return EpsilonResult(
            self.name, gdp_epsilon(mu, delta), delta, str(schedule.neighbouring), exact,
            notes=self._notes(mu, exact),
        )

    def _delta(self, schedule: Schedule, epsilon: float) -> DeltaResult:
        mu, exact = gdp_mu(schedule)
        return DeltaResult(
            self.name, gdp_delta(mu, epsilon), epsilon, str(schedule.neighbouring), exact,
            notes=self._notes(mu, exact),
        )
