"""Noise calibration: the σ (or the scale of a σ schedule's shape) for a target (ε, δ).

Hand-written search because dp-accounting's ``calibrate_dp_mechanism`` only
drives dp-accounting accountants, and Opacus's ``get_noise_multiplier``
overwrites accountant state and bisects slowly. The search keeps a bracket
[s_lo, s_hi] with ε(s_lo) > target ≥ ε(s_hi) and returns only an s_hi whose ε
was computed, is ≤ target and within ``rtol`` of it, as dp-accounting's
calibration forces a conservative answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from dpaudit import validation
from dpaudit.accountants import EpsilonResult, get_accountant
from dpaudit.accountants.gdp import gdp_epsilon, gdp_mu
from dpaudit.errors import AccountingError, CalibrationError
from dpaudit.progress import Progress
from dpaudit.schedule import Schedule

# Noise multipliers outside this range are not a calibration result anyone can use.
SCALE_RANGE = (1e-3, 1e4)
# Evaluations a calibration usually needs (measured: 3-6 for rdp/pld/prv, 2 for gdp); the
# progress bar's total, raised as the search goes if it needs more.
USUAL_EVALUATIONS = 6


@dataclass(frozen=True)
class CalibrationResult:
    """The scale s with σ_t = s·shape_t, and the checked ε of the calibrated schedule."""

    scale: float
    schedule: Schedule
    epsilon: float
    target_epsilon: float
    delta: float
    accountant: str
    evaluations: int
    result: EpsilonResult

    @property
    def sigma(self) -> float:
        """σ of a uniform schedule (the scale times the shape's single σ)."""
        return self.schedule.sigmas[0] if len(self.schedule.sigmas) == 1 else self.scale


def calibrate_scale(
    shape: Schedule,
    target_epsilon: float,
    delta: float,
    accountant: str = "prv",
    rtol: float = 1e-3,
    progress: bool = False,
) -> CalibrationResult:
    """Smallest scale s (within ``rtol`` in ε) such that ``shape.scaled(s)`` is (target_epsilon, delta)-DP.

    ε is that of the named accountant's certifying value (PRV: its upper
    bound; GDP: its approximation), for add/remove neighbours under Poisson
    sampling. The returned ε is ≤ target and ≥ target·(1 − rtol), recomputed.
    """
    target = validation.positive("target epsilon", target_epsilon)
    d = validation.open_unit("delta", delta)
    acc = get_accountant(accountant)
    bar = Progress(f"calibrating sigma ({acc.name})", total=2 if acc.name == "gdp" else USUAL_EVALUATIONS,
                   unit="evaluation", enabled=progress, leave=False)
    cache: dict[float, EpsilonResult] = {}

    def eps_at(log_s: float) -> float:
        if log_s not in cache:
            try:
                cache[log_s] = acc.epsilon(shape.scaled(math.exp(log_s)), d)
            except AccountingError as exc:
                raise CalibrationError(
                    f"calibration with {acc.name} failed at scale {math.exp(log_s):.4g}: {exc}"
                ) from exc
            if bar.n + 1 > bar.total:
                bar.set_total(bar.n + 2)
            bar.update(1)
        return cache[log_s].epsilon

    with bar:
        log_lo, log_hi = _bracket(eps_at, target, _initial_guess(shape, target, d, acc.name))
        log_s = _illinois(eps_at, target, log_lo, log_hi, rtol)
    result = cache[log_s]
    if not (result.epsilon <= target and result.epsilon >= target * (1 - rtol)):
        raise CalibrationError(  # pragma: no cover - guarded by the search invariant
            f"calibration check failed: epsilon {result.epsilon} not within {rtol:g} below {target}"
        )
    s = math.exp(log_s)
    return CalibrationResult(
        s, shape.scaled(s), result.epsilon, target, d, acc.name, len(cache), result
    )


def calibrate_sigma(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    rtol: float = 1e-3,
    progress: bool = False,
) -> CalibrationResult:
    """Uniform σ for ``steps`` Poisson-subsampled Gaussian steps at rate ``sample_rate``."""
    return calibrate_scale(
        Schedule.uniform(1.0, sample_rate, steps), target_epsilon, delta, accountant, rtol, progress
    )


def _initial_guess(shape: Schedule, target: float, delta: float, accountant: str) -> float:
    """A starting log s from cheap accountants.

    GDP's closed form under-states ε (its s is too small) and RDP over-states
    it (its s is too large); the tight accountants land between, near the
    geometric mean, which saves the expensive ones most of their evaluations.
    """
    lo, hi = math.log(SCALE_RANGE[0]), math.log(SCALE_RANGE[1])
    for _ in range(60):
        mid = (lo + hi) / 2
        mu, _ = gdp_mu(shape.scaled(math.exp(mid)))
        if gdp_epsilon(mu, delta) > target:
            lo = mid
        else:
            hi = mid
    if accountant in ("gdp", "rdp"):
        return hi
    rdp = calibrate_scale(shape, target, delta, "rdp", rtol=1e-2)
    return (hi + math.log(rdp.scale)) / 2


def _bracket(eps_at: Callable[[float], float], target: float, log_s: float) -> tuple[float, float]:
    """[log_lo, log_hi] with ε(lo) > target ≥ ε(hi), walking out geometrically from ``log_s``."""
    lo_limit, hi_limit = math.log(SCALE_RANGE[0]), math.log(SCALE_RANGE[1])
    step = 0.04
    if eps_at(log_s) > target:
        lo = log_s
        hi = log_s + step
        while eps_at(hi) > target:
            lo, step = hi, step * 2
            hi = min(hi + step, hi_limit)
            if hi >= hi_limit and eps_at(hi) > target:
                raise CalibrationError(
                    f"no noise multiplier up to {SCALE_RANGE[1]:g} reaches epsilon {target:g}"
                )
        return lo, hi
    hi = log_s
    lo = log_s - step
    while eps_at(lo) <= target:
        hi, step = lo, step * 2
        lo = max(lo - step, lo_limit)
        if lo <= lo_limit and eps_at(lo) <= target:
            raise CalibrationError(
                f"epsilon {target:g} is reached with less noise than sigma = {SCALE_RANGE[0]:g}; "
                "the target is too large to calibrate"
            )
    return lo, hi


def _illinois(
    eps_at: Callable[[float], float], target: float, lo: float, hi: float, rtol: float
) -> float:
    """Regula falsi (Illinois variant) on log ε vs log s, keeping the bracket; returns the safe end."""
    def g(x: float) -> float:
        e = eps_at(x)
        return math.log(e / target) if math.isfinite(e) and e > 0 else 50.0  # inf ε: far above

    g_lo, g_hi = g(lo), g(hi)
    side = 0
    for _ in range(100):
        if eps_at(hi) >= target * (1 - rtol):
            return hi
        x = hi - g_hi * (hi - lo) / (g_hi - g_lo) if g_hi != g_lo else (lo + hi) / 2
        if not lo < x < hi:
            x = (lo + hi) / 2
        gx = g(x)
        if gx > 0:
            lo, g_lo = x, gx
            if side == -1:
                g_hi /= 2
            side = -1
        else:
            hi, g_hi = x, gx
            if side == 1:
                g_lo /= 2
            side = 1
    raise CalibrationError(  # pragma: no cover - 100 Illinois steps always converge here
        f"calibration did not converge to within {rtol:g} of epsilon {target:g}"
    )
