"""``dpaudit audit``: empirical lower bounds on ε for a mechanism, against its claim.

Exit codes: 0 no violation found, 1 a violation (an assumption-free bound
above the claimed ε), 2 input errors.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from dpaudit import validation
from dpaudit.audit.scenarios import SCENARIO_NAMES
from dpaudit.cli.output import dumps, write_atomic
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.run_config import RunConfig
from dpaudit.schedule import steps_for_epochs
from dpaudit.training.audit_cli import add_training_flags, run_training

LEVELS = ("mechanism", "training")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="empirical lower bounds on epsilon (canary audits); exit 1 on a violation",
        description=__doc__,
    )
    p.add_argument("mechanism", help="PATH.py[:ClassName] (class DPMechanism by default)")
    p.add_argument("--level", default="mechanism",
                   help="what to audit: mechanism (gradient canaries; default) or training (train models with canaries; needs --dataset)")
    p.add_argument("--runs", type=int, default=None,
                   help="mechanism: runs per side (default 1000); training: models per side, or one-run models with --canaries")
    p.add_argument("--dataset-size", type=int, default=None, help="N (mechanism level; the training level takes N from --dataset)")
    p.add_argument("--batch-size", type=int, required=True, help="expected batch size B (q = B/N)")
    p.add_argument("--epochs", type=int, required=True, help="E: steps = E * floor(N/B)")
    p.add_argument("--epsilon", type=float, required=True, help="target epsilon the run is calibrated for")
    p.add_argument("--delta", type=float, required=True, help="delta in (0, 1)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="clip norm C handed to the mechanism (default 1)")
    p.add_argument(
        "--noise-multiplier", type=float, default=None,
        help="sigma handed to the mechanism on your run (default: calibrated for --epsilon/--delta)",
    )
    p.add_argument(
        "--calibration-accountant", default="prv",
        help="accountant that calibrates sigma: prv (default, as the seed harness), pld or rdp",
    )
    p.add_argument("--confidence", type=float, default=0.95, help="family-wise confidence of the verdict (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="audit seed (default 0); same seed, same numbers")
    p.add_argument(
        "--scenario", action="append", default=None, metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIO_NAMES)}",
    )
    p.add_argument(
        "--results", default=None, metavar="PATH",
        help="JSON-lines file of finished runs, resumed if it exists "
             "(default: ./dpaudit-results/<file>-<class>-<fingerprint>.jsonl)",
    )
    p.add_argument("--no-results", action="store_true", help="keep runs in memory only")
    p.add_argument("--json", default=None, metavar="PATH", help="write the result as JSON to PATH")
    p.add_argument("--report", default=None, metavar="PATH.md", help="write a Markdown report with PNG plots")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--time-budget", type=float, default=None,
        help="seconds of running the default plan aims at (default 120); only your run is cut to fit",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_training_flags(p)
    p.set_defaults(run=run)


def build_config(args: argparse.Namespace) -> RunConfig:
    """The user's run, with σ calibrated unless given."""
    from dpaudit.audit.mechanism_audit import calibrated_sigma

    epsilon = validation.positive("epsilon", args.epsilon)
    delta = validation.open_unit("delta", args.delta)
    steps = steps_for_epochs(args.dataset_size, args.batch_size, args.epochs)
    if args.calibration_accountant not in ("prv", "pld", "rdp"):
        raise InputError(f"--calibration-accountant must be prv, pld or rdp, got {args.calibration_accountant!r}")
    if args.noise_multiplier is None:
        sigma = calibrated_sigma(epsilon, delta, args.batch_size / args.dataset_size, steps, args.calibration_accountant)
    else:
        sigma = validation.positive("noise multiplier", args.noise_multiplier)
    return RunConfig(
        dataset_size=args.dataset_size, batch_size=args.batch_size, epochs=args.epochs,
        epsilon=epsilon, delta=delta, noise_multiplier=sigma, max_grad_norm=args.max_grad_norm,
    )


def run(args: argparse.Namespace) -> int:
    level = str(args.level).strip().lower()
    if level == "training":
        return run_training(args)
    if level != "mechanism":
        raise InputError(f"--level must be mechanism or training, got {args.level!r}")
    if args.dataset_size is None:
        raise InputError("--level mechanism needs --dataset-size")
    if args.runs is None:
        args.runs = 1000
    # Imported here: the audit pulls in torch, which `dpaudit epsilon` does not need.
    from dpaudit.audit.mechanism_audit import DEFAULT_TIME_BUDGET, audit_mechanism, default_results_path

    config = build_config(args)
    factory = MechanismFactory.load(args.mechanism, config)
    if args.no_results:
        results = None
    elif args.results is not None:
        results = args.results
    else:
        results = default_results_path(factory, config, args.seed, args.calibration_accountant)
    result = audit_mechanism(
        factory, config, runs=args.runs, confidence=args.confidence, seed=args.seed,
        scenarios=args.scenario, results_path=results, progress=not args.no_progress,
        workers=args.workers,
        time_budget=DEFAULT_TIME_BUDGET if args.time_budget is None else args.time_budget,
        calibration_accountant=args.calibration_accountant,
    )

    print(f"mechanism: {result.mechanism}")
    sigma_note = "given" if args.noise_multiplier is not None else f"calibrated with {args.calibration_accountant}"
    print(
        f"run: N={config.dataset_size}, B={config.batch_size}, epochs={config.epochs}, steps={config.steps}, "
        f"q={config.sample_rate:.6g}, sigma={config.noise_multiplier:.6g} ({sigma_note} for eps={config.epsilon:g}, "
        f"delta={config.delta:g}), C={config.max_grad_norm:g}"
    )
    print(f"claimed eps (PLD of the declared schedule): {result.claimed_epsilon:.4f}")
    print(f"confidence: {result.confidence:g} family-wise; runs per side: {result.runs}; seed: {result.seed}")
    if result.results_path:
        print(f"results file: {result.results_path}")
    print()
    scen = pd.DataFrame([
        {
            "scenario": s.scenario.name, "runs/side": s.runs_per_side,
            "in/out/ref": f"{s.n_in}/{s.n_out}/{s.n_ref}",
            "claimed_eps": s.claimed_epsilon, "status": s.skipped or "run",
            "dataset and run": s.scenario.describe(),
        }
        for s in result.scenarios
    ])
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print(scen.to_string(index=False, formatters={"claimed_eps": _fmt}))
        print()
        print(result.table().to_string(index=False, formatters={
            "eps_lb": _fmt, "ceiling": _fmt, "claimed_eps": _fmt, "confidence": "{:.5f}".format,
        }))
    print()
    for note in result.notes:
        print(f"note: {note}")
    print(("VERDICT: " if result.violation else "verdict: ") + result.summary())

    if args.json:
        write_atomic(args.json, dumps(result.to_dict()) + "\n")
    if args.report:
        from dpaudit.audit.report import write_report

        files = write_report(result, args.report)
        print(f"report: {', '.join(str(f) for f in files)}", file=sys.stderr)
    return 1 if result.violation else 0


def _fmt(v) -> str:
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)
