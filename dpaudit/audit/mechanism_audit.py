"""The gradient-space audit of a mechanism: does any worst case refute its (ε, δ) claim?

For the user's run and for small worst-case runs chosen here
(:mod:`dpaudit.audit.scenarios`), the audit builds the mechanism with the
noise multiplier calibrated for (ε, δ) on *that* run, plays many independent
runs with and without a canary (:mod:`dpaudit.audit.gradient_game`, each run's
membership a fair coin), scores every run with statistics that use every
released step (:mod:`dpaudit.audit.statistics`) and turns the scores into
lower bounds on ε (the estimators of :mod:`dpaudit.audit.estimators`).

The claim each scenario is held to is the PLD ε (add/remove, Poisson) of the
schedule the mechanism *declares* there (``get_effective_sigma`` step by
step): the tight upper bound of what it claims, so an assumption-free lower
bound above it is a genuine violation, whatever accountant certified the run.

Many bounds are computed (scenarios × statistics × estimators), and the
verdict is "violated" if any bound that is valid without assumptions exceeds
its claim. To keep the chance of a false verdict below 1 − confidence, the
significance α = 1 − confidence is split (weighted Bonferroni): the user's own
run scored by the likelihood-ratio statistic (the test fixed in advance)
gets α/2, every other (scenario, statistic) pair an equal share of the rest,
and each pair's share is split again between the two estimators that can
back a verdict (Clopper–Pearson and one-run). The Gaussian-shape estimates
(GDP, one-run f-DP) form a family of their own with the same split between
pairs, so their largest value also holds at ``confidence`` given their
assumption. Every row reports the confidence it was computed at.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from dpaudit import defaults, progress as progress_lines, validation, verdicts
from dpaudit.accountants import ACCOUNTANTS
from dpaudit.audit import estimators
from dpaudit.audit.estimators import EstimateResult
from dpaudit.audit.gradient_game import accepted_input
from dpaudit.audit.runner import (
    MAIN, REF, Job, ResultsFile, execute, held_out, run_seed, time_per_step,
)
from dpaudit.audit.scenarios import (
    LARGER_SIZES, RUN_EMPTY, RUN_ZERO, SCENARIO_NAMES, WORST_CASES, Scenario, adapted, resized, run_scenarios,
    worst_case_scenarios,
)
from dpaudit.audit.statistics import (
    PRIMARY_STATISTIC, RUN_STATISTICS, SELECTION_FRACTION, STATISTICS, reference_level, scenario_scores,
)
from dpaudit.calibration import calibrate_sigma
from dpaudit.errors import AccountingError, InputError
from dpaudit.mechanism.loader import MechanismFactory, declared_sigma, epoch_of
from dpaudit.run_config import RunConfig
from dpaudit.schedule import Schedule

#: Default wall-clock budget for the runs of one audit (seconds), shared with certify; only the
#: user's run is cut to fit.
DEFAULT_TIME_BUDGET = defaults.DEFAULT_TIME_BUDGET
#: Runs in the pool take longer than the pilot's in-process steps (two workers share the
#: machine, chunks are pickled); measured 1.3-1.6x on the 2-core machine, so plan with 1.5x.
PLAN_SAFETY = 1.5
#: A default audit starts no run after this multiple of its time budget.
DEADLINE_FACTOR = 1.5
#: Below this many mechanism calls the runs stay in this process (a pool costs more to start).
POOL_MIN_CALLS = 20_000
#: Fewer runs per side than this cannot certify anything useful; such a scenario is skipped.
MIN_RUNS = 50
#: Share of α given to the test fixed in advance: the user's run, likelihood-ratio statistic.
PRIMARY_SHARE = 0.5
#: The accountant the claims are computed with (the tight one).
CLAIM_ACCOUNTANT = "pld"
CONFIDENCE_SPLIT = (
    f"weighted Bonferroni over (scenario, statistic) pairs: {PRIMARY_SHARE:g} of alpha = 1 - confidence "
    f"to ({RUN_ZERO} or {RUN_EMPTY}, {PRIMARY_STATISTIC}), the rest in equal shares; within a pair, "
    "clopper_pearson and one_run (which decide the verdict) split the pair's share, and gdp, "
    "gdp_parametric and one_run_fdp (a separate family: they assume Gaussian shapes and never decide "
    "the verdict) each use all of it"
)
#: Version of the audit's statistics and scenarios, part of the results-file fingerprint.
AUDIT_VERSION = 1


def reference_runs(runs: int) -> int:
    """Reference runs (no canary) per scenario, for the two-sided noise statistic."""
    return max(20, runs // 10)


# ----------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class AuditRow:
    """One estimator's bound for one (scenario, statistic) pair."""

    scenario: str
    statistic: str
    estimator: str
    epsilon_lb: float
    ceiling: float
    claimed_epsilon: float
    valid_for_verdict: bool
    confidence: float
    n_in: int
    n_out: int
    estimate: EstimateResult = field(compare=False, repr=False)

    @property
    def violates(self) -> bool:
        """A bound valid without assumptions above the claim."""
        return self.valid_for_verdict and self.epsilon_lb > self.claimed_epsilon

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "statistic": self.statistic, "estimator": self.estimator,
            "epsilon_lb": self.epsilon_lb, "ceiling": self.ceiling,
            "claimed_epsilon": self.claimed_epsilon, "valid_for_verdict": self.valid_for_verdict,
            "violates": self.violates, "confidence": self.confidence,
            "n_in": self.n_in, "n_out": self.n_out,
            "assumption": self.estimate.assumption, "label": self.estimate.label,
            "details": self.estimate.details,
        }


@dataclass(frozen=True)
class ScenarioOutcome:
    """What happened to one scenario: how many runs, its claim, or why it was skipped."""

    scenario: Scenario
    runs_per_side: int
    claimed_epsilon: float | None
    skipped: str | None = None
    n_in: int = 0
    n_out: int = 0
    n_ref: int = 0
    best_choice: str | None = None
    seconds: float = field(default=0.0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.scenario.name,
            "description": self.scenario.describe(),
            "purpose": self.scenario.purpose,
            "noise_multiplier": self.scenario.run.noise_multiplier,
            "run": self.scenario.run.to_dict(),
            "others": self.scenario.others,
            "canary": self.scenario.canary,
            "runs_per_side": self.runs_per_side,
            "claimed_epsilon": self.claimed_epsilon,
            "skipped": self.skipped,
            "n_in": self.n_in, "n_out": self.n_out, "n_ref": self.n_ref,
            "best_choice": self.best_choice,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class MechanismAuditResult:
    """The outcome of :func:`audit_mechanism`.

    ``violation`` is True iff some row with ``valid_for_verdict`` has an ε
    lower bound above its scenario's claimed ε; the family-wise confidence of
    that verdict is ``confidence``. ``scores`` holds the (in, out) scores of
    every (scenario, statistic) pair for plots.
    """

    mechanism: str
    config: RunConfig
    confidence: float
    seed: int
    runs: int
    claimed_epsilon: float
    scenarios: tuple[ScenarioOutcome, ...]
    rows: tuple[AuditRow, ...]
    violation: bool
    calibration_accountant: str
    notes: tuple[str, ...] = ()
    results_path: str | None = field(default=None, compare=False)
    seconds: float = field(default=0.0, compare=False)
    scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def violations(self) -> tuple[AuditRow, ...]:
        return tuple(r for r in self.rows if r.violates)

    def headline(self) -> dict[str, AuditRow]:
        """Per estimator, the row whose bound exceeds its claim by the most (or falls short the least)."""
        out: dict[str, AuditRow] = {}
        for r in self.rows:
            cur = out.get(r.estimator)
            if cur is None or r.epsilon_lb - r.claimed_epsilon > cur.epsilon_lb - cur.claimed_epsilon:
                out[r.estimator] = r
        return out

    def strongest(self) -> AuditRow | None:
        """The valid row with the largest margin over its claim (what the report plots)."""
        valid = [r for r in self.rows if r.valid_for_verdict]
        if not valid:
            return None
        return max(valid, key=lambda r: (r.epsilon_lb - r.claimed_epsilon, r.epsilon_lb))

    def outcome(self, name: str) -> ScenarioOutcome:
        for s in self.scenarios:
            if s.scenario.name == name:
                return s
        raise KeyError(name)

    def table(self) -> pd.DataFrame:
        """One row per (scenario, statistic, estimator)."""
        return pd.DataFrame([
            {
                "scenario": r.scenario, "statistic": r.statistic, "estimator": r.estimator,
                "eps_lb": r.epsilon_lb, "ceiling": r.ceiling, "claimed_eps": r.claimed_epsilon,
                "valid": "yes" if r.valid_for_verdict else r.estimate.assumption,
                "confidence": r.confidence,
                "verdict": "VIOLATION" if r.violates else "",
            }
            for r in self.rows
        ])

    @property
    def verdict(self) -> str:
        """``violation``, ``no violation``, or ``inconclusive`` when no valid design could exceed its claim."""
        return verdicts.audit_verdict(self.violation, verdicts.can_detect(
            (r.ceiling, r.claimed_epsilon) for r in self.rows if r.valid_for_verdict
        ))

    def largest(self) -> AuditRow | None:
        """The valid row with the largest ε lower bound (ties: the smallest claim)."""
        valid = [r for r in self.rows if r.valid_for_verdict]
        return max(valid, key=lambda r: (r.epsilon_lb, -r.claimed_epsilon)) if valid else None

    def summary(self) -> str:
        """One paragraph: the verdict and where it came from."""
        if self.violation:
            top = sorted(self.violations, key=lambda r: r.claimed_epsilon - r.epsilon_lb)[:3]
            parts = [
                f"{r.estimator} eps_lb {r.epsilon_lb:.3f} > claimed {r.claimed_epsilon:.3f} "
                f"in scenario {r.scenario} with the {r.statistic} statistic"
                for r in top
            ]
            where = [
                f"{name}: {self.outcome(name).scenario.describe()}"
                for name in dict.fromkeys(r.scenario for r in top)
            ]
            return "VIOLATION: " + "; ".join(parts) + " [" + "; ".join(where) + "]"
        if self.verdict == verdicts.INCONCLUSIVE:
            ceiling = max((r for r in self.rows if r.valid_for_verdict), default=None,
                          key=lambda r: r.ceiling - r.claimed_epsilon)
            why = (
                f" (the most any valid estimator could certify is eps {ceiling.ceiling:.3f}, in "
                f"{ceiling.scenario} against its claim {ceiling.claimed_epsilon:.3f}; run more runs per side)"
                if ceiling is not None else " (no scenario finished enough runs)"
            )
            return f"inconclusive: {verdicts.CANNOT_DETECT}{why}"
        best = self.largest()
        tail = (
            f" (largest valid eps_lb {best.epsilon_lb:.3f}, {best.estimator}, {best.scenario}/{best.statistic}, "
            f"against its claim {best.claimed_epsilon:.3f})"
            if best is not None else ""
        )
        return f"no violation found at confidence {self.confidence:g}{tail}"

    def to_dict(self) -> dict[str, Any]:
        heads = self.headline()
        return {
            "level": "mechanism",
            "mechanism": self.mechanism,
            "claimed_epsilon": self.claimed_epsilon,
            "delta": self.config.delta,
            "confidence": self.confidence,
            "verdict": self.verdict,
            "violation": self.violation,
            "summary": self.summary(),
            "violations": [
                {k: v for k, v in r.to_dict().items() if k != "details"} for r in self.violations
            ],
            "estimators": {
                name: {
                    "epsilon_lb": r.epsilon_lb, "ceiling": r.ceiling,
                    "claimed_epsilon": r.claimed_epsilon, "scenario": r.scenario,
                    "statistic": r.statistic, "valid_for_verdict": r.valid_for_verdict,
                    "assumption": r.estimate.assumption, "label": r.estimate.label,
                    "confidence": r.confidence,
                }
                for name, r in heads.items()
            },
            "scenarios": [s.to_dict() for s in self.scenarios],
            "rows": [r.to_dict() for r in self.rows],
            "config": {
                **self.config.to_dict(),
                "runs_per_side": self.runs,
                "seed": self.seed,
                "calibration_accountant": self.calibration_accountant,
                "claim_accountant": CLAIM_ACCOUNTANT,
                "results_path": self.results_path,
                "confidence_split": CONFIDENCE_SPLIT,
            },
            "notes": list(self.notes),
            "seconds": self.seconds,
        }


# ----------------------------------------------------------------------------
# Building blocks


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """dp-accounting's RDP logs a warning per unconverged order during calibration; hide them."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def calibrated_sigma(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """Uniform σ for (ε, δ) over ``steps`` Poisson-sampled steps, as the seed harness hands in."""
    with _quiet_absl():
        return calibrate_sigma(epsilon, delta, sample_rate, steps, accountant).sigma


def declared_schedule(factory: MechanismFactory, run: RunConfig) -> Schedule:
    """The schedule a fresh instance declares: ``get_effective_sigma`` at every step of ``run``."""
    mech = factory.new()
    sigmas = [declared_sigma(mech, t, epoch_of(t, run)) for t in range(run.steps)]
    return Schedule.from_steps(sigmas, run.sample_rate)


def claimed_epsilon(schedule: Schedule, delta: float) -> float:
    """PLD ε of the declared schedule (PRV's upper bound if PLD fails numerically)."""
    with _quiet_absl():
        try:
            return ACCOUNTANTS[CLAIM_ACCOUNTANT].epsilon(schedule, delta).epsilon
        except AccountingError:
            return ACCOUNTANTS["prv"].epsilon(schedule, delta).epsilon


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def audit_fingerprint(
    factory: MechanismFactory, config: RunConfig, seed: int, calibration_accountant: str
) -> str:
    """What every run's numbers depend on: mechanism source, run, seed, audit version."""
    payload = {
        "version": AUDIT_VERSION,
        "mechanism": {"class": factory.cls.__name__, "sha256": _file_digest(factory.path)},
        "config": config.to_dict(),
        "seed": int(seed),
        "calibration_accountant": calibration_accountant,
        "statistics": list(RUN_STATISTICS),
        "worst_cases": [t.__dict__ for t in WORST_CASES],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def default_results_path(
    factory: MechanismFactory, config: RunConfig, seed: int = 0, calibration_accountant: str = "prv",
    directory: str | Path = "dpaudit-results",
) -> Path:
    """``directory/<file stem>-<fingerprint>.jsonl``: rerunning the same audit resumes it."""
    fp = audit_fingerprint(factory, config, seed, calibration_accountant)[:12]
    return Path(directory) / f"{factory.path.stem}-{factory.cls.__name__}-{fp}.jsonl"


#: The estimators of :mod:`dpaudit.audit.estimators` the audit runs (the keys of
#: ``estimate_all``), called one by one so that each family gets its own
#: confidence: the two assumption-free ones share a pair's α (they decide the
#: verdict together); the Gaussian-shape ones are a separate family, each at
#: the pair's full α. one_run_fdp costs ~0.7 s per 2,000 scores, so it is
#: computed for the likelihood-ratio statistic only (the Gaussian-shaped test).
VERDICT_ESTIMATORS = ("clopper_pearson", "one_run")
ASSUMPTION_ESTIMATORS = ("gdp", "gdp_parametric", "one_run_fdp")
FDP_STATISTICS = (PRIMARY_STATISTIC,)


def _estimates(
    ins: np.ndarray, outs: np.ndarray, delta: float, pair_alpha: float, statistic: str, seed: int
) -> dict[str, EstimateResult]:
    conf_verdict = 1.0 - pair_alpha / len(VERDICT_ESTIMATORS)
    conf_shape = 1.0 - pair_alpha
    out = {
        "clopper_pearson": estimators.clopper_pearson(ins, outs, delta=delta, confidence=conf_verdict, seed=seed),
        "one_run": estimators.one_run(ins, outs, delta=delta, confidence=conf_verdict),
        "gdp": estimators.gaussian_dp(ins, outs, delta=delta, confidence=conf_shape),
        "gdp_parametric": estimators.gaussian_dp_parametric(ins, outs, delta=delta, confidence=conf_shape),
    }
    if statistic in FDP_STATISTICS:
        out["one_run_fdp"] = estimators.one_run_fdp(ins, outs, delta=delta, confidence=conf_shape)
    for name, e in out.items():
        if e.valid_for_verdict != (name in VERDICT_ESTIMATORS):  # pragma: no cover - API drift guard
            raise RuntimeError(f"estimator {name} changed its validity; update VERDICT_ESTIMATORS")
    return out


# ----------------------------------------------------------------------------
# The audit


def _load_factory(factory_or_spec: MechanismFactory | str, config: RunConfig) -> MechanismFactory:
    if isinstance(factory_or_spec, MechanismFactory):
        f = factory_or_spec
        factory = f if f.config == config else MechanismFactory(f.spec, f.cls, config)
        factory.new()  # the user's run must construct
        return factory
    if isinstance(factory_or_spec, (str, Path)):
        return MechanismFactory.load(str(factory_or_spec), config)
    raise InputError(
        f"mechanism must be a spec PATH.py[:Class] or a MechanismFactory, got {type(factory_or_spec).__name__}"
    )


def _constructible(
    factory: MechanismFactory, scenario: Scenario
) -> tuple[MechanismFactory | None, Scenario, str | None]:
    """A factory for ``scenario``, retried at larger N = B if the constructor rejects the tiny run.

    Returns (factory or None, the scenario used, the first rejection message or None).
    """
    first = None
    for candidate in (scenario,) + tuple(resized(scenario, n) for n in LARGER_SIZES):
        if candidate.run.dataset_size < scenario.run.dataset_size:
            continue
        sf = MechanismFactory(factory.spec, factory.cls, candidate.run)
        try:
            sf.new()
            return sf, candidate, first
        except InputError as exc:
            first = first or str(exc)
    return None, scenario, first


def _plan(
    candidates: dict[str, tuple[Scenario, MechanismFactory]],
    explicit: bool,
    runs: int,
    seed: int,
    workers: int,
    time_budget: float,
) -> tuple[dict[str, int], list[str]]:
    """Runs per side for each scenario, and notes on what was cut to fit ``time_budget``.

    The cost of a scenario is timed on a few steps (:func:`time_per_step`);
    the worst cases always run in full; the user's run gets ``run-zero`` if it
    fits what is left, else ``run-empty``, with fewer runs if need be.
    """
    notes: list[str] = []
    cost: dict[str, float] = {}

    def per_run(name: str) -> float:
        scenario, factory = candidates[name]
        if name not in cost:
            cost[name] = PLAN_SAFETY * time_per_step(factory, scenario, seed) * scenario.steps
        return cost[name]

    def total(name: str, r: int) -> float:
        return per_run(name) * (2 * r + reference_runs(r))

    if explicit:
        return {name: runs for name in candidates}, notes
    plan = {name: runs for name in candidates if name not in (RUN_ZERO, RUN_EMPTY)}
    budget = time_budget * max(workers, 1)  # CPU-seconds
    spent = sum(total(n, runs) for n in plan)
    left = budget - spent
    zero_cost = total(RUN_ZERO, runs)
    if zero_cost <= left:
        plan[RUN_ZERO] = runs
    else:
        empty_cost = total(RUN_EMPTY, runs)
        if empty_cost <= left:
            plan[RUN_EMPTY] = runs
            notes.append(
                f"{RUN_ZERO} would take about {zero_cost / max(workers, 1):.0f} s with {runs} runs per side; "
                f"ran {RUN_EMPTY} (the canary alone in the dataset) instead"
            )
        else:
            r = int(left / (per_run(RUN_EMPTY) * 2.1)) if left > 0 else 0
            if r >= MIN_RUNS:
                plan[RUN_EMPTY] = r
                notes.append(
                    f"{RUN_ZERO} would take about {zero_cost / max(workers, 1):.0f} s and {RUN_EMPTY} about "
                    f"{empty_cost / max(workers, 1):.0f} s with {runs} runs per side; ran {RUN_EMPTY} with "
                    f"{r} runs per side to stay within the {time_budget:g} s budget"
                )
            else:
                notes.append(
                    f"the user's run was not played: {RUN_EMPTY} alone would take about "
                    f"{empty_cost / max(workers, 1):.0f} s with {runs} runs per side (budget {time_budget:g} s; "
                    f"raise it with time_budget / --time-budget, or name it with --scenario {RUN_EMPTY})"
                )
    return plan, notes


def alpha_shares(pairs: Sequence[tuple[str, str]], alpha: float) -> dict[tuple[str, str], float]:
    """Weighted Bonferroni: the user's run with the lr statistic gets PRIMARY_SHARE of α.

    The weights are fixed before any score is seen (they depend only on which
    pairs exist), so the union bound holds: Σ shares = α.
    """
    if not pairs:
        return {}
    primary = next(
        ((n, PRIMARY_STATISTIC) for n in (RUN_ZERO, RUN_EMPTY) if (n, PRIMARY_STATISTIC) in pairs), None
    )
    if primary is None or len(pairs) == 1:
        return {p: alpha / len(pairs) for p in pairs}
    rest = alpha * (1 - PRIMARY_SHARE) / (len(pairs) - 1)
    return {p: alpha * PRIMARY_SHARE if p == primary else rest for p in pairs}


def _score_runs(job: Job, done: dict, seed: int, delta: float):
    """(scores per statistic, details of "best", counts) of a scenario's finished runs, or why not."""
    name = job.scenario.name
    main = [m for m in (done.get((name, MAIN, i)) for i in range(job.n_main)) if m is not None]
    ref = [r for r in (done.get((name, REF, i)) for i in range(job.n_ref)) if r is not None]
    is_in = np.array([bool(m["in"]) for m in main], dtype=bool)
    if is_in.sum() < 2 or (~is_in).sum() < 2:
        return f"too few finished runs ({len(main)})"
    stats = {k: np.array([m["stats"][k] for m in main], dtype=float) for k in RUN_STATISTICS}
    selection = np.array(
        [held_out(run_seed(seed, name, MAIN, int(m["i"])), SELECTION_FRACTION) for m in main], dtype=bool
    )
    reference = reference_level(np.array([r["stats"]["log_scale"] for r in ref], dtype=float))
    scores, best = scenario_scores(stats, is_in, selection, reference, delta)
    counts = {
        "n_in": int(is_in.sum()), "n_out": int((~is_in).sum()), "n_ref": len(ref),
        "seconds": float(sum(m["sec"] for m in main + ref)),
    }
    return scores, best, counts


def audit_mechanism(
    factory_or_spec: MechanismFactory | str,
    config: RunConfig,
    *,
    runs: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    scenarios: Sequence[str] | None = None,
    results_path: str | Path | None = None,
    progress: bool = True,
    workers: int = 2,
    time_budget: float = DEFAULT_TIME_BUDGET,
    calibration_accountant: str = "prv",
    max_runs: int | None = None,
) -> MechanismAuditResult:
    """Audit a mechanism's (ε, δ) claim with gradient canaries in worst-case datasets.

    Args:
        factory_or_spec: A ``PATH.py[:Class]`` spec or a loaded :class:`MechanismFactory`.
        config: The user's run; ``config.noise_multiplier`` is what the mechanism
            is built with in the scenarios on this run.
        runs: Runs per side (on average: 2·runs runs, each in or out by a fair coin).
        confidence: Family-wise confidence of the verdict.
        seed: Audit seed; the same seed gives the same numbers.
        scenarios: Names (see :data:`~dpaudit.audit.scenarios.SCENARIO_NAMES`) to
            run exactly; default: every worst case plus the user's run as the
            time budget allows.
        results_path: JSON-lines file to append runs to and resume from (None: memory only).
        progress: Show a progress bar.
        workers: Worker processes (the audit runs in-process when the work is small).
        time_budget: Seconds of wall-clock the default plan aims at; only the
            user's-run scenario is cut (fewer runs, or the cheap canary-only
            dataset) to fit.
        calibration_accountant: Accountant that calibrates σ for the worst-case runs.
        max_runs: Stop after about this many new runs (then analyse what there is).

    Raises:
        InputError: bad arguments, a mechanism that fails to load, construct or
            run, or a results file of another audit.
    """
    start = time.perf_counter()
    runs = validation.positive_int("runs", runs)
    if runs < 10:
        raise InputError(f"runs must be >= 10 per side, got {runs}")
    confidence = validation.open_unit("confidence", confidence)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    workers = validation.positive_int("workers", workers)
    time_budget = validation.positive("time_budget", time_budget)
    if calibration_accountant not in ("rdp", "pld", "prv"):
        raise InputError(f"calibration_accountant must be rdp, pld or prv, got {calibration_accountant!r}")
    explicit = scenarios is not None
    wanted = list(dict.fromkeys(scenarios)) if explicit else list(SCENARIO_NAMES)
    if explicit and not wanted:
        raise InputError("scenarios is empty; name at least one of " + ", ".join(SCENARIO_NAMES))
    for name in wanted:
        if name not in SCENARIO_NAMES:
            raise InputError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIO_NAMES)}")

    factory = _load_factory(factory_or_spec, config)
    notes: list[str] = []

    # Scenarios, each with its own mechanism factory and claim.
    sigma_cache: dict[tuple[float, int], float] = {}

    def sigma_for(q: float, steps: int) -> float:
        if (q, steps) not in sigma_cache:
            sigma_cache[(q, steps)] = calibrated_sigma(config.epsilon, config.delta, q, steps, calibration_accountant)
        return sigma_cache[(q, steps)]

    catalogue = dict(run_scenarios(config))
    if any(n not in catalogue for n in wanted):
        catalogue.update(worst_case_scenarios(config, sigma_for))
    shapes, min_others, input_notes = accepted_input(factory, config)
    notes.extend(input_notes)
    catalogue = adapted(catalogue, shapes, min_others)
    outcomes: dict[str, ScenarioOutcome] = {}
    candidates: dict[str, tuple[Scenario, MechanismFactory]] = {}
    claims: dict[str, float] = {}
    claim_cache: dict[Schedule, float] = {}

    def claim_of(f: MechanismFactory, run: RunConfig) -> float:
        sched = declared_schedule(f, run)
        if sched not in claim_cache:
            claim_cache[sched] = claimed_epsilon(sched, run.delta)
        return claim_cache[sched]

    user_claim = claim_of(factory, config)
    for name in wanted:
        scenario = catalogue[name]
        if name in (RUN_ZERO, RUN_EMPTY):
            sf = MechanismFactory(factory.spec, factory.cls, scenario.run)
            sf.new()  # constructed once already by _load_factory; the same run
        else:
            sf, scenario, rejected = _constructible(factory, scenario)
            if sf is None:
                outcomes[name] = ScenarioOutcome(
                    scenario, 0, None, skipped=f"the mechanism rejects this run: {rejected}"
                )
                continue
            if rejected:
                notes.append(
                    f"{name}: the mechanism rejects N = B = {catalogue[name].run.dataset_size} "
                    f"({rejected}); played with N = B = {scenario.run.dataset_size} instead"
                )
        claims[name] = user_claim if name in (RUN_ZERO, RUN_EMPTY) else claim_of(sf, scenario.run)
        candidates[name] = (scenario, sf)
    if not candidates:
        raise InputError(
            "no scenario could be run: " + "; ".join(f"{n}: {o.skipped}" for n, o in outcomes.items())
        )

    # Results file and plan (a resumed audit reuses the stored plan).
    fingerprint = audit_fingerprint(factory, config, seed, calibration_accountant)
    results = None
    done: dict[tuple[str, str, int], dict] = {}
    request = {"runs": runs, "scenarios": wanted if explicit else None, "time_budget": time_budget}
    plan = None
    if results_path is not None:
        results = ResultsFile(results_path, fingerprint, {"request": request, "config": config.to_dict()})
        stored, done = results.open()
        if done:
            resumed = f"resumed {len(done)} runs from {results_path}"
            progress_lines.note(resumed, progress)
            notes.append(resumed)
        if stored is not None and stored.get("request") == request and isinstance(stored.get("plan"), dict):
            plan = {k: int(v) for k, v in stored["plan"].items() if k in candidates}
            notes.extend(stored.get("plan_notes", []))
    if plan is None:
        plan, plan_notes = _plan(candidates, explicit, runs, seed, workers, time_budget)
        notes.extend(plan_notes)
        if results is not None:
            results.set_header({
                "request": request, "config": config.to_dict(), "plan": plan, "plan_notes": plan_notes,
            })
    for name in candidates:
        if name not in plan:
            if name == RUN_EMPTY and RUN_ZERO in plan:
                continue  # the user's run was played with its zero-gradient others; nothing to say
            outcomes[name] = ScenarioOutcome(
                candidates[name][0], 0, claims[name], skipped="not run: over the time budget"
            )
    # The worst cases first (cheap and the likeliest to show a leak), the user's run last.
    order = sorted((n for n in candidates if n in plan), key=lambda n: n in (RUN_ZERO, RUN_EMPTY))
    jobs = [Job(candidates[n][0], candidates[n][1], 2 * plan[n], reference_runs(plan[n])) for n in order]
    todo_calls = sum(
        (j.n_main + j.n_ref) * j.scenario.steps for j in jobs
    )
    use_workers = workers if todo_calls > POOL_MIN_CALLS else 1
    n_before = len(done)
    t_run = time.perf_counter()
    # The plan's timing is a guess (a shared machine can be several times slower than the
    # pilot); a default audit stops starting runs at DEADLINE_FACTOR times its budget.
    deadline = None if explicit else t_run + DEADLINE_FACTOR * time_budget
    try:
        done = execute(
            jobs, seed, results, done, workers=use_workers, progress=progress, max_runs=max_runs,
            deadline=deadline,
        )
    except KeyboardInterrupt:
        if results is None:
            raise
        raise KeyboardInterrupt(
            f"the finished runs are saved in {results_path}; rerun the same command to resume"
        ) from None
    run_seconds = time.perf_counter() - t_run

    # Analysis.
    scored: dict[str, tuple[dict, dict]] = {}
    for job in jobs:
        name = job.scenario.name
        analysed = _score_runs(job, done, seed, config.delta)
        if isinstance(analysed, str):
            outcomes[name] = ScenarioOutcome(job.scenario, plan[name], claims[name], skipped=analysed)
            continue
        scores, best, counts = analysed
        scored[name] = (scores, best)
        outcomes[name] = ScenarioOutcome(
            job.scenario, plan[name], claims[name], best_choice=best["chosen"], **counts
        )
    pairs = [(n, s) for n in scored for s in STATISTICS]
    shares = alpha_shares(pairs, 1.0 - confidence)

    rows: list[AuditRow] = []
    all_scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for (name, stat) in pairs:
        ins, outs = scored[name][0][stat]
        all_scores[(name, stat)] = (ins, outs)
        if ins.size == 0 or outs.size == 0:
            continue
        est = _estimates(ins, outs, config.delta, shares[(name, stat)], stat, seed)
        for est_name, e in est.items():
            rows.append(AuditRow(
                name, stat, est_name, float(e.epsilon_lb), float(e.ceiling), float(claims[name]),
                bool(e.valid_for_verdict), float(e.confidence), int(ins.size), int(outs.size), e,
            ))
    for name in scored:
        valid_ceiling = max((r.ceiling for r in rows if r.scenario == name and r.valid_for_verdict), default=0.0)
        if valid_ceiling <= claims[name]:
            notes.append(
                f"{name}: with {plan[name]} runs per side no valid estimator can certify more than "
                f"eps {valid_ceiling:.2f}, below the claim {claims[name]:.2f}; more runs are needed to "
                "show a violation here"
            )
    for job in jobs:
        finished = sum(1 for k in job.keys() if k in done)
        if finished < job.n_main + job.n_ref:
            why = "max_runs" if max_runs is not None else f"time limit {DEADLINE_FACTOR * time_budget:.0f} s"
            rerun = "; rerun with the same results file to finish" if results is not None else ""
            notes.append(
                f"{job.scenario.name}: stopped at {finished} of {job.n_main + job.n_ref} runs ({why}){rerun}"
            )
    n_new = len(done) - n_before
    if n_new == 0:
        notes.append("runs took 0 s (every run was already in the results file)")
    else:
        where = f"{use_workers} worker processes" if use_workers > 1 else "in process"
        notes.append(f"runs took {run_seconds:.1f} s ({n_new} runs, {where})")

    ordered = tuple(outcomes[n] for n in wanted if n in outcomes)
    return MechanismAuditResult(
        mechanism=factory.spec,
        config=config,
        confidence=confidence,
        seed=seed,
        runs=runs,
        claimed_epsilon=float(user_claim),
        scenarios=ordered,
        rows=tuple(rows),
        violation=any(r.violates for r in rows),
        calibration_accountant=calibration_accountant,
        notes=tuple(notes),
        results_path=str(results_path) if results_path is not None else None,
        seconds=time.perf_counter() - start,
        scores=all_scores,
    )
