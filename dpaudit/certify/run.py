"""Orchestration of ``certify``: load, probe, account, judge."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from dpaudit.accountants import ACCOUNTANTS, Accountant, EpsilonResult
from dpaudit.accountants.gdp import GdpAccountant
from dpaudit.accountants.pld import PldAccountant
from dpaudit.accountants.prv import PrvAccountant
from dpaudit.accountants.rdp import RdpAccountant
from dpaudit.calibration import calibrate_sigma
from dpaudit.certify import verdict as rules
from dpaudit.defaults import DEFAULT_CALIBRATION_ACCOUNTANT
from dpaudit.errors import AccountingError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.probe import ProbeResult, probe_mechanism
from dpaudit.run_config import RunConfig
from dpaudit.schedule import Schedule, steps_for_epochs

@functools.lru_cache(maxsize=32)
def default_noise_multiplier(
    dataset_size: int, batch_size: int, epochs: int, epsilon: float, delta: float
) -> float:
    """The σ ``dpaudit certify`` hands to the mechanism when the user gives none.

    The uniform σ that the default calibration accountant (PRV) calibrates for
    (ε, δ) at q = B/N over E·⌊N/B⌋ Poisson-sampled steps (add/remove
    neighbours). Cached: it is a pure function of its arguments.
    """
    steps = steps_for_epochs(dataset_size, batch_size, epochs)
    return calibrate_sigma(epsilon, delta, batch_size / dataset_size, steps, DEFAULT_CALIBRATION_ACCOUNTANT).sigma


@dataclass(frozen=True)
class CertifyResult:
    """Everything ``certify`` found.

    ``verdict`` is 'pass', 'fail' or 'inconclusive'; ``reasons`` explain a
    verdict other than pass (what failed first, then what could not be decided).
    """

    spec: str
    config: RunConfig
    noise_multiplier_source: str
    declared_schedule: Schedule = field(repr=False)
    declared: Mapping[str, EpsilonResult | str] = field(repr=False)
    measured: Mapping[str, EpsilonResult | str] = field(repr=False)
    probe: ProbeResult = field(repr=False)
    verdict: str
    reasons: tuple[str, ...]
    audit: Any = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict:
        def eps_map(results):
            return {k: (r.epsilon if isinstance(r, EpsilonResult) else None) for k, r in results.items()}

        def details(results):
            return {
                k: (
                    {"epsilon": r.epsilon, "lower": r.lower, "estimate": r.estimate,
                     "is_upper_bound": r.is_upper_bound, "note": r.note()}
                    if isinstance(r, EpsilonResult) else {"error": r}
                )
                for k, r in results.items()
            }

        config = {**self.config.to_dict(), "steps": self.config.steps,
                  "sample_rate": self.config.sample_rate,
                  "noise_multiplier_source": self.noise_multiplier_source}
        out = {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "robustness": list(self.probe.robustness),
            "mechanism": self.spec,
            "config": config,
            "declared": {
                "schedule": self.declared_schedule.describe(),
                "sigma_min": min(self.declared_schedule.sigmas),
                "sigma_max": max(self.declared_schedule.sigmas),
                "epsilon": eps_map(self.declared),
            },
            "measured": {**self.probe.to_dict(), "epsilon": eps_map(self.measured)},
            "accounting": {
                "delta": self.config.delta,
                "neighbouring": str(self.declared_schedule.neighbouring),
                "certifying_accountants": ["rdp", "pld", "prv (upper bound)"],
                "rule": "the declared schedule fits if the smallest certifying upper bound is within the budget",
                "declared": details(self.declared),
                "measured": details(self.measured),
            },
            "seconds": round(self.seconds, 2),
        }
        if self.audit is not None:
            out["audit"] = self.audit.to_dict()
        return out


# The measured schedule has a different σ̂ at many steps, and its ε only
# explains a fail, so it is composed on a coarser grid (σ rounded down, still
# an upper bound; the note reports the grid) to keep certify within minutes.
MEASURED_ACCOUNTANTS: dict[str, Accountant] = {
    "rdp": RdpAccountant(max_groups=16),
    "pld": PldAccountant(max_groups=16),
    "prv": PrvAccountant(max_groups=8),
    "gdp": GdpAccountant(),
}


def account_all(
    schedule: Schedule, delta: float, accountants: Mapping[str, Accountant] = ACCOUNTANTS
) -> dict[str, EpsilonResult | str]:
    """ε by every accountant; an accountant's numerical failure is kept as its message."""
    out: dict[str, EpsilonResult | str] = {}
    for name, acc in accountants.items():
        try:
            out[name] = acc.epsilon(schedule, delta)
        except AccountingError as exc:
            out[name] = str(exc)
    return out


def certify(
    spec: str,
    config: RunConfig,
    *,
    noise_multiplier_source: str = "given",
    seed: int = 0,
    progress: bool = True,
    audit: Any = None,
) -> CertifyResult:
    """Judge the mechanism in ``spec`` (PATH.py[:Class]) on ``config``'s run.

    Privacy is for add/remove-one-example neighbours under Poisson sampling at
    q = B/N. The verdict is ``fail`` if any check shows a violation, else
    ``inconclusive`` if a statistical check could not decide, else ``pass``.
    ``audit``, if given, is a callable ``audit(factory, config) ->
    result`` whose result has ``violation`` (bool), ``reasons()`` and
    ``to_dict()``; a violation it finds fails the mechanism.
    """
    start = time.perf_counter()
    factory = MechanismFactory.load(spec, config)
    probe = probe_mechanism(factory.new, config, seed=seed, progress=progress)
    declared_schedule = Schedule.from_steps(probe.declared_sigma, config.sample_rate)
    declared = account_all(declared_schedule, config.delta)
    measured = account_all(probe.measured_schedule(config), config.delta, MEASURED_ACCOUNTANTS)
    reasons = (
        rules.declared_budget_reasons(declared, config.epsilon, config.delta)
        + rules.measured_noise_reasons(probe, measured, config.epsilon)
        + rules.leak_reasons(probe)
    )
    audit_result = audit(factory, config) if audit is not None else None
    if audit_result is not None and audit_result.violation:
        reasons.append(f"the canary audit extracted more privacy than claimed: {audit_result.summary()}")
    undecided = rules.undecided_reasons(probe)
    verdict = "fail" if reasons else ("inconclusive" if undecided else "pass")
    return CertifyResult(
        spec=spec,
        config=config,
        noise_multiplier_source=noise_multiplier_source,
        declared_schedule=declared_schedule,
        declared=declared,
        measured=measured,
        probe=probe,
        verdict=verdict,
        reasons=tuple(reasons + undecided),
        audit=audit_result,
        seconds=time.perf_counter() - start,
    )
