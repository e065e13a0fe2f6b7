"""How the probe spends its error probability: one family-wise budget, split by Bonferroni.

Every statistical decision of the probe (a step's noise multiplier below the
declared one, a state leak, a noise scale that follows the batch size) is a
test; a correct mechanism must be failed by *any* of them with probability at
most α = 1 − confidence. The budget is split between the checks in fixed
shares (:data:`SHARES`), and each check splits its share evenly over the tests
it makes (steps, canaries, comparisons). Checks that are exact (coupled
draws) spend nothing.

The same limits decide the other way: a check whose confidence interval
neither excludes a violation nor shows one says "undecided", and the verdict
is ``inconclusive``, never ``pass``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Default family-wise confidence of the probe's statistical checks.
DEFAULT_CONFIDENCE = 0.95

NOISE_LEVEL, SENSITIVITY, LEAK, BATCH = "noise level", "sensitivity", "leak", "batch size"
#: Share of α per check. The noise multiplier σ̂ = noise / sensitivity gets most: without
#: coupling the shift is what limits a decision (thousands of draws for a few percent),
#: while a real leak or a batch-size divisor shows at many standard errors, so a strict
#: level costs those checks nothing and keeps a correct mechanism from an undecided verdict.
SHARES = {NOISE_LEVEL: 0.3, SENSITIVITY: 0.4, LEAK: 0.1, BATCH: 0.2}

#: Relative tolerance of the noise-multiplier check: a step passes when the lower
#: confidence limit of σ̂_t is at least (1 − SIGMA_TOLERANCE)·σ_t, fails when the
#: upper limit is below σ_t, and is undecided otherwise. With coupled draws the
#: limits are within a fraction of a percent, so only uncoupled measurements
#: (whose sensitivity needs thousands of draws) can end undecided.
SIGMA_TOLERANCE = 0.07


@dataclass(frozen=True)
class ErrorBudget:
    """α = 1 − ``confidence``, split by :data:`SHARES` and then evenly over each check's tests."""

    confidence: float = DEFAULT_CONFIDENCE

    def alpha(self, check: str, tests: int = 1) -> float:
        """The error probability of one of ``tests`` tests of ``check``."""
        return (1.0 - self.confidence) * SHARES[check] / max(int(tests), 1)

    def z(self, check: str, tests: int = 1) -> float:
        """One-sided standard-normal quantile for one of ``tests`` tests of ``check``."""
        from scipy.stats import norm

        return float(norm.isf(self.alpha(check, tests)))

    def z_two_sided(self, check: str, tests: int = 1) -> float:
        from scipy.stats import norm

        return float(norm.isf(self.alpha(check, tests) / 2.0))


def below_declared(upper: np.ndarray, declared: np.ndarray) -> np.ndarray:
    """σ̂ is shown below the declared σ: even its upper limit is."""
    return np.asarray(upper) < np.asarray(declared)


def agrees_with_declared(lower: np.ndarray, upper: np.ndarray, declared: np.ndarray) -> np.ndarray:
    """The one tolerance rule: not below the declared σ, and σ̂'s lower limit within the tolerance of it.

    Every step is exactly one of: below (:func:`below_declared`), agreeing, or
    undecided (neither).
    """
    lower_ok = np.asarray(lower) >= (1.0 - SIGMA_TOLERANCE) * np.asarray(declared)
    return lower_ok & ~below_declared(upper, declared)


def lower_upper(value: float, rel_se: float, z: float) -> tuple[float, float]:
    """(value·(1 − z·rel_se), value·(1 + z·rel_se)), the lower limit floored at 0."""
    if not math.isfinite(value):
        return value, value
    return max(value * (1.0 - z * rel_se), 0.0), value * (1.0 + z * rel_se)
