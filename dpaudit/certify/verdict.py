"""The verdict rules of ``certify``, as plain functions over its findings.

``pass`` needs all three: the declared schedule fits (ε, δ) by the tightest
certifying upper bound (the smallest of RDP, PLD and PRV's upper bound: each is
a valid upper bound, so any one within the budget proves it; GDP, a
central-limit approximation, never decides); the measured noise multiplier
agrees with the declared one at every step by the probe's tolerance rule
(:meth:`~dpaudit.probe.ProbeResult.agrees`); and no undeclared data-dependent
release was found. ``fail`` when any of them is shown violated;
``inconclusive`` when nothing failed but a statistical check could not decide.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dpaudit.accountants import CERTIFYING, EpsilonResult
from dpaudit.probe import ProbeResult


def step_ranges(steps: np.ndarray, limit: int = 6) -> str:
    """[0,1,2,5,7,8] -> '0-2, 5, 7-8' (at most ``limit`` ranges, then '…')."""
    steps = np.asarray(sorted(int(s) for s in steps))
    if steps.size == 0:
        return "none"
    breaks = np.flatnonzero(np.diff(steps) != 1)
    starts = np.concatenate([[steps[0]], steps[breaks + 1]])
    ends = np.concatenate([steps[breaks], [steps[-1]]])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, ends)]
    more = f", … ({len(parts) - limit} more ranges)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def _eps_list(results: Mapping[str, EpsilonResult | str]) -> str:
    parts = []
    for name, r in results.items():
        parts.append(f"{name} {r.epsilon:.3f}" if isinstance(r, EpsilonResult) else f"{name} failed")
    return ", ".join(parts)


def declared_budget_reasons(
    declared: Mapping[str, EpsilonResult | str], epsilon: float, delta: float
) -> list[str]:
    """Reasons the *declared* schedule does not fit (ε, δ) by the tightest certifying upper bound."""
    bounds = {n: r for n, r in declared.items() if n in CERTIFYING and isinstance(r, EpsilonResult)}
    if not bounds:
        failures = "; ".join(f"{n}: {declared[n]}" for n in CERTIFYING if isinstance(declared.get(n), str))
        return [f"the declared schedule could not be accounted by any certifying accountant ({failures})"]
    name = min(bounds, key=lambda n: bounds[n].epsilon)
    if bounds[name].epsilon <= epsilon:
        return []
    return [
        f"the declared schedule exceeds the budget: the tightest certifying upper bound, {name}, gives "
        f"epsilon {bounds[name].epsilon:.4f} > {epsilon:g} at delta {delta:g} (all: {_eps_list(bounds)})"
    ]


def measured_noise_reasons(
    probe: ProbeResult, measured: Mapping[str, EpsilonResult | str], epsilon: float
) -> list[str]:
    """Reasons from steps whose measured σ̂_t is shown below the declared σ_t."""
    under = probe.understated_steps()
    if under.size == 0:
        return []
    ratio = probe.sigma_ratio
    worst = int(under[np.argmin(ratio[under])])
    return [
        f"the noise is below what the mechanism declares at {under.size} of {probe.steps} steps "
        f"(steps {step_ranges(under)}); worst at step {worst}: declared sigma "
        f"{probe.declared_sigma[worst]:.4g}, measured {probe.sigma_hat[worst]:.4g} "
        f"({ratio[worst]:.1%} of declared; {probe.confidence:g} limits [{probe.sigma_hat_lower[worst]:.4g}, "
        f"{probe.sigma_hat_upper[worst]:.4g}]). The measured schedule (each such step at its lower limit) "
        f"costs epsilon {_eps_list(measured)} (budget {epsilon:g})"
    ]


def undecided_reasons(probe: ProbeResult) -> list[str]:
    """What the probe's statistical checks could not decide (an ``inconclusive`` verdict)."""
    return [f"could not decide: {u}" for u in probe.undecided]


def leak_reasons(probe: ProbeResult) -> list[str]:
    """Reasons from undeclared data-dependent state and batch-size-dependent noise."""
    reasons = []
    if probe.leaks:
        channels = sorted({f.channel for f in probe.leaks})
        example = probe.leaks[0]
        reasons.append(
            "undeclared data-dependent release: one example changes the mechanism's later "
            f"{' and '.join(channels)} deterministically (not masked by its noise), at "
            f"{len({f.step for f in probe.leaks})} of {len(probe.leak_check_steps)} checked steps; "
            f"e.g. {example.describe()}. Nothing accounts for this release "
            "(typical cause: clipping driven by an un-noised quantile or count)"
        )
    if probe.batch_size_dependence is not None:
        reasons.append(
            f"{probe.batch_size_dependence.describe()}: the noise scale reveals the realised batch "
            "size, so whether an example was sampled leaks (typical cause: normalising by the "
            "realised instead of the expected batch size)"
        )
    return reasons
