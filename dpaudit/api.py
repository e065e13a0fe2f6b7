"""The Python API: what the four commands do, as functions that return data.

Exported lazily from the package (``dpaudit.epsilon``, ``dpaudit.noise_multiplier``,
``dpaudit.certify``, ``dpaudit.audit``); the CLI calls the same functions.
Every privacy number is for add/remove-one-example neighbours under Poisson
sampling. Keyword names follow Opacus (``target_epsilon``, ``target_delta``,
``sample_rate``, ``noise_multiplier``, ``max_grad_norm``) and the seed
interface's ``DPMechanism`` constructor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from dpaudit.defaults import (
    ACCOUNTANT_NAMES, CALIBRATION_ACCOUNTANTS, DEFAULT_CALIBRATION_ACCOUNTANT, DEFAULT_CONFIDENCE,
    DEFAULT_RUNS, DEFAULT_TIME_BUDGET,
)
from dpaudit.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from dpaudit.audit.mechanism_audit import MechanismAuditResult
    from dpaudit.certify.run import CertifyResult
    from dpaudit.run_config import RunConfig
    from dpaudit.schedule import Schedule


def epsilon(
    run: "Schedule | RunConfig", delta: float, accountants: Iterable[str] | str = ACCOUNTANT_NAMES
) -> "pd.DataFrame":
    """ε of ``run`` at ``delta`` by each accountant: one row per accountant.

    Args:
        run: A :class:`~dpaudit.schedule.Schedule` (any per-step σ_t, q_t), or a
            :class:`~dpaudit.run_config.RunConfig` (its uniform noise multiplier
            over E·⌊N/B⌋ steps at q = B/N).
        delta: δ in (0, 1).
        accountants: Names among rdp, pld, prv, gdp (a list or "rdp,pld").

    Returns:
        A DataFrame indexed by accountant with columns ``epsilon`` (NaN if the
        accountant failed), ``bound`` ("upper bound", "approximation" for GDP's
        central-limit value, or "failed"), ``notes`` (grid, errors, the reason
        of a failure), ``seconds``, and PRV's ``lower``/``estimate``.
    """
    import pandas as pd

    from dpaudit import validation
    from dpaudit.accountants import get_accountant, parse_accountant_list
    from dpaudit.errors import AccountingError

    names = parse_accountant_list(accountants if isinstance(accountants, str) else ",".join(accountants))
    d = validation.open_unit("delta", delta)
    schedule = as_schedule(run)
    rows = []
    for name in names:
        try:
            r = get_accountant(name).epsilon(schedule, d)
        except AccountingError as exc:
            rows.append({"accountant": name, "epsilon": math.nan, "bound": "failed", "notes": str(exc),
                         "seconds": math.nan, "lower": math.nan, "estimate": math.nan})
            continue
        rows.append({
            "accountant": name, "epsilon": r.epsilon,
            "bound": "upper bound" if r.is_upper_bound else "approximation",
            "notes": r.note(), "seconds": r.seconds,
            "lower": math.nan if r.lower is None else r.lower,
            "estimate": math.nan if r.estimate is None else r.estimate,
        })
    frame = pd.DataFrame(rows).set_index("accountant")
    frame.attrs.update(delta=d, neighbouring=str(schedule.neighbouring), schedule=schedule.describe())
    return frame


def as_schedule(run: "Schedule | RunConfig") -> "Schedule":
    """The schedule of a run description."""
    from dpaudit.run_config import RunConfig
    from dpaudit.schedule import Schedule

    if isinstance(run, Schedule):
        return run
    if isinstance(run, RunConfig):
        return Schedule.from_epochs(run.noise_multiplier, run.dataset_size, run.batch_size, run.epochs)
    raise InputError(f"run must be a Schedule or a RunConfig, got {type(run).__name__}")


def noise_multiplier(
    target_epsilon: float,
    target_delta: float,
    sample_rate: float | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    *,
    dataset_size: int | None = None,
    batch_size: int | None = None,
    schedule: "Schedule | None" = None,
    accountant: str = "prv",
    epsilon_tolerance: float | None = None,
    progress: bool = False,
) -> float:
    """The smallest noise multiplier whose ε at ``target_delta`` is at most ``target_epsilon``.

    Called as Opacus's ``get_noise_multiplier`` (same keyword names): the run
    is ``sample_rate`` with ``steps``, or with ``epochs`` (then
    steps = int(epochs / sample_rate), Opacus's rule), or
    ``dataset_size``/``batch_size``/``epochs`` (steps = E·⌊N/B⌋). With
    ``schedule`` (a shape σ_t, q_t), returns the scale s such that s·σ_t fits.

    Args:
        accountant: rdp, pld, prv (default: its upper bound) or gdp (an
            approximation that can under-state ε).
        epsilon_tolerance: The returned σ's ε is within this much below the
            target (default 0.1 % of it).
    """
    from dpaudit import validation
    from dpaudit.calibration import calibrate_scale
    from dpaudit.schedule import Schedule, steps_for_epochs

    target = validation.positive("target_epsilon", target_epsilon)
    rtol = 1e-3 if epsilon_tolerance is None else validation.positive("epsilon_tolerance", epsilon_tolerance) / target
    if schedule is not None:
        if any(v is not None for v in (sample_rate, steps, epochs, dataset_size, batch_size)):
            raise InputError("schedule replaces sample_rate, steps, epochs, dataset_size and batch_size")
        shape = schedule
    else:
        if sample_rate is None and dataset_size is not None and batch_size is not None:
            sample_rate = validation.positive_int("batch_size", batch_size) / validation.positive_int(
                "dataset_size", dataset_size)
        if sample_rate is None:
            raise InputError("give sample_rate (or dataset_size and batch_size), and steps or epochs")
        q = validation.probability("sample_rate", sample_rate)
        if steps is None and epochs is not None:
            steps = (
                steps_for_epochs(dataset_size, batch_size, epochs) if dataset_size and batch_size
                else int(validation.positive("epochs", epochs) / q)
            )
        if steps is None:
            raise InputError("give steps or epochs")
        shape = Schedule.uniform(1.0, q, steps)
    return calibrate_scale(shape, target, target_delta, accountant, rtol=min(rtol, 0.5), progress=progress).scale


def run_config(
    *,
    target_epsilon: float,
    target_delta: float,
    dataset_size: int | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    sample_rate: float | None = None,
    steps: int | None = None,
    noise_multiplier: float | None = None,
    max_grad_norm: float = 1.0,
    n_params: int = 0,
    calibration_accountant: str = DEFAULT_CALIBRATION_ACCOUNTANT,
    progress: bool = False,
) -> tuple["RunConfig", str]:
    """The run a mechanism is built for, and where its noise multiplier came from.

    N, B, E come from any two of N, B, q and E or T (see
    :func:`~dpaudit.run_config.run_sizes`); without ``noise_multiplier`` the
    uniform σ is calibrated for (target_epsilon, target_delta) by
    ``calibration_accountant``, as the seed harness does.
    """
    from dpaudit import validation
    from dpaudit.run_config import RunConfig, run_sizes

    eps = validation.positive("target_epsilon", target_epsilon)
    delta = validation.open_unit("target_delta", target_delta)
    accountant = calibration_accountant.strip().lower()
    if accountant not in CALIBRATION_ACCOUNTANTS:
        raise InputError(f"calibration accountant must be one of {', '.join(CALIBRATION_ACCOUNTANTS)}, "
                         f"got {calibration_accountant!r}")
    n, b, e = run_sizes(dataset_size=dataset_size, batch_size=batch_size, epochs=epochs,
                        sample_rate=sample_rate, steps=steps)
    if n_params != 0:
        validation.positive_int("n_params", n_params)
    clip = validation.positive("max_grad_norm", max_grad_norm)
    if noise_multiplier is None:
        from dpaudit.calibration import calibrate_sigma
        from dpaudit.schedule import steps_for_epochs

        sigma = calibrate_sigma(eps, delta, b / n, steps_for_epochs(n, b, e), accountant, progress=progress).sigma
        source = f"calibrated by {accountant} for epsilon {eps:g}, delta {delta:g}"
    else:
        sigma = validation.positive("noise_multiplier", noise_multiplier)
        source = "given"
    config = RunConfig(dataset_size=n, batch_size=b, epochs=e, epsilon=eps, delta=delta, noise_multiplier=sigma,
                       max_grad_norm=clip, n_params=n_params)
    return config, source


def certify(
    mechanism: str | Path,
    *,
    target_epsilon: float,
    target_delta: float,
    dataset_size: int | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    sample_rate: float | None = None,
    steps: int | None = None,
    noise_multiplier: float | None = None,
    max_grad_norm: float = 1.0,
    n_params: int | None = None,
    calibration_accountant: str = DEFAULT_CALIBRATION_ACCOUNTANT,
    audit: bool = True,
    runs: int = DEFAULT_RUNS,
    time_budget: float = DEFAULT_TIME_BUDGET,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    progress: bool = False,
) -> "CertifyResult":
    """Verdict on the ``DPMechanism`` in ``mechanism`` (``PATH.py[:ClassName]``) for the run described.

    Loads the file unchanged, accounts for the σ_t it declares, probes what it
    does and (``audit=True``) runs the gradient-space canary audit. Returns a
    :class:`~dpaudit.certify.run.CertifyResult` (``verdict``, ``reasons``,
    ``to_dict()``).
    """
    from dpaudit import validation

    n_params = None if n_params is None else validation.positive_int("n_params", n_params)
    hook: Callable | None = None
    if audit:
        # Checked before the calibration and the probe run, not after.
        runs = validation.positive_int("runs", runs)
        time_budget = validation.positive("time_budget", time_budget)
        confidence = validation.open_unit("confidence", confidence)
        accountant = calibration_accountant.strip().lower()

        def run_audit(factory, cfg):
            from dpaudit.audit.mechanism_audit import audit_mechanism

            return audit_mechanism(
                factory, cfg, runs=runs, confidence=confidence, seed=seed, progress=progress,
                time_budget=time_budget, calibration_accountant=accountant,
            )

        hook = run_audit

    from dpaudit.certify.run import certify as certify_run
    from dpaudit.probe import N_PARAMS

    config, source = run_config(
        target_epsilon=target_epsilon, target_delta=target_delta, dataset_size=dataset_size,
        batch_size=batch_size, epochs=epochs, sample_rate=sample_rate, steps=steps,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        n_params=N_PARAMS if n_params is None else n_params,
        calibration_accountant=calibration_accountant, progress=progress,
    )
    return certify_run(str(mechanism), config, noise_multiplier_source=source, seed=seed, progress=progress,
                       audit=hook)


def audit(
    mechanism: str | Path,
    *,
    target_epsilon: float,
    target_delta: float,
    dataset_size: int | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    sample_rate: float | None = None,
    steps: int | None = None,
    noise_multiplier: float | None = None,
    max_grad_norm: float = 1.0,
    calibration_accountant: str = DEFAULT_CALIBRATION_ACCOUNTANT,
    runs: int = DEFAULT_RUNS,
    time_budget: float = DEFAULT_TIME_BUDGET,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    scenarios: Sequence[str] | None = None,
    results_path: str | Path | None = None,
    workers: int = 2,
    progress: bool = False,
) -> "MechanismAuditResult":
    """Gradient-space canary audit of the mechanism in ``mechanism`` (``PATH.py[:ClassName]``).

    Returns a :class:`~dpaudit.audit.mechanism_audit.MechanismAuditResult`:
    ``verdict`` is "violation", "no violation" or "inconclusive" (these runs
    cannot detect a violation of this claim); ``table()`` and ``to_dict()``
    give the bounds. ``results_path`` (a JSON-lines file, or a directory to
    put one named for this audit in) makes the audit resumable.
    """
    from dpaudit.audit.mechanism_audit import audit_mechanism, default_results_path
    from dpaudit.mechanism.loader import MechanismFactory

    accountant = calibration_accountant.strip().lower()
    config, _ = run_config(
        target_epsilon=target_epsilon, target_delta=target_delta, dataset_size=dataset_size,
        batch_size=batch_size, epochs=epochs, sample_rate=sample_rate, steps=steps,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        calibration_accountant=accountant, progress=progress,
    )
    factory = MechanismFactory.load(str(mechanism), config)
    if results_path is not None and Path(results_path).is_dir():
        results_path = default_results_path(factory, config, seed, accountant, directory=results_path)
    return audit_mechanism(
        factory, config, runs=runs, confidence=confidence, seed=seed, scenarios=scenarios,
        results_path=results_path, progress=progress, workers=workers, time_budget=time_budget,
        calibration_accountant=accountant,
    )
