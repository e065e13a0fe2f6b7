"""``dpaudit audit``: empirical lower bounds on ε for a mechanism, against its claim.

Exit codes: 0 no violation, 1 a violation (an assumption-free bound above the
claimed ε), 3 inconclusive (these runs cannot detect a violation of this
claim), 2 input errors.
"""

from __future__ import annotations

import argparse
import sys

from dpaudit.cli.run_flags import (
    add_audit_flags, add_budget_flags, add_calibration_flag, add_json_flag, add_progress_flag, add_run_flags,
)
from dpaudit.defaults import AUDIT_LEVELS, DEFAULT_RESULTS_DIR, DEFAULT_RUNS
from dpaudit.training.audit_cli import add_training_flags


def register(sub: argparse._SubParsersAction) -> None:
    from dpaudit.audit.scenarios import SCENARIO_NAMES

    p = sub.add_parser(
        "audit",
        help="canary audit: empirical lower bounds on epsilon against the claim",
        description="Empirical lower bounds on epsilon against the claimed budget: no violation (exit 0), "
                    "violation (1) or inconclusive (3: these runs cannot detect a violation of this claim).",
    )
    p.add_argument("mechanism", help="PATH.py[:ClassName] (class DPMechanism by default)")
    p.add_argument("--level", default="mechanism", choices=AUDIT_LEVELS, type=str.lower,
                   help="mechanism: gradient canaries, fast, CPU (default); training: train models with "
                        "canaries (needs --dataset)")
    add_run_flags(p, noise_multiplier=True, mechanism=True)
    add_budget_flags(p, epsilon=True, epsilon_help="target epsilon the run is calibrated for")
    p.add_argument("--max-grad-norm", type=float, default=1.0, metavar="C",
                   help="clip norm C handed to the mechanism (default 1)")
    add_calibration_flag(p)
    add_audit_flags(p, runs_help=f"mechanism: runs per side (default {DEFAULT_RUNS}); training: models per side, "
                                 "or one-run models with --canaries")
    p.add_argument("--scenario", action="append", default=None, metavar="NAME", choices=SCENARIO_NAMES,
                   help=f"run only this scenario (repeatable): {', '.join(SCENARIO_NAMES)}")
    p.add_argument("--results", default=None, metavar="PATH",
                   help="JSON-lines file of finished runs, resumed if it exists; a directory: a file named "
                        f"for the audit in it (default: ./{DEFAULT_RESULTS_DIR}/<file>-<class>-<fingerprint>.jsonl)")
    p.add_argument("--no-results", action="store_true", help="keep runs in memory only")
    add_json_flag(p)
    p.add_argument("--report", default=None, metavar="PATH.md", help="write a Markdown report with PNG plots")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    add_progress_flag(p)
    add_training_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.level == "training":
        return _run_training(args)
    from dpaudit.api import audit
    from dpaudit.cli.output import emit_outputs
    from dpaudit.cli.run_flags import mechanism_run_from_args, runs_or_default, text_stream
    from dpaudit.verdicts import exit_code

    run_ = mechanism_run_from_args(args)
    results = _results_location(args)
    result = audit(
        args.mechanism, target_epsilon=args.epsilon, target_delta=args.delta,
        dataset_size=run_.dataset_size, batch_size=run_.batch_size, epochs=run_.epochs,
        noise_multiplier=run_.noise_multiplier, max_grad_norm=args.max_grad_norm,
        calibration_accountant=args.calibration_accountant, runs=runs_or_default(args),
        time_budget=args.time_budget, confidence=args.confidence, seed=args.seed, scenarios=args.scenario,
        results_path=results, workers=args.workers, progress=not args.no_progress,
    )
    out = text_stream(args)
    sigma_note = (
        "given" if run_.noise_multiplier is not None
        else f"calibrated by {args.calibration_accountant} for epsilon {result.config.epsilon:g}, "
             f"delta {result.config.delta:g}"
    )
    from dpaudit.audit.report import terminal_lines, write_report

    for line in terminal_lines(result, sigma_note):
        print(line, file=out)
    emit_outputs(args, out, result.to_dict(), lambda path: write_report(result, path))
    return exit_code(result.verdict)


def _results_location(args: argparse.Namespace) -> str | None:
    """Check every output path; the results file or directory (None: --no-results).

    By default the runs go to a file named for the audit in ./dpaudit-results,
    so rerunning the same command resumes it.
    """
    import os
    from pathlib import Path

    from dpaudit.cli.run_flags import prepare_outputs
    from dpaudit.errors import InputError

    if args.no_results and args.results is not None:
        raise InputError("--no-results and --results exclude each other")
    if not args.no_results and args.results is None:
        args.results = DEFAULT_RESULTS_DIR
    prepare_outputs(args, results_directory_ok=True)
    if args.results is not None and (args.results == DEFAULT_RESULTS_DIR or args.results.endswith(("/", os.sep))):
        Path(args.results).mkdir(parents=True, exist_ok=True)  # a directory: a file named for the audit in it
    return args.results


def _run_training(args: argparse.Namespace) -> int:
    """``--level training``: the run is the dataset's N with --batch-size and --epochs."""
    from dpaudit.cli.run_flags import text_stream
    from dpaudit.errors import InputError
    from dpaudit.training.audit_cli import run_training

    given = [f for f, v in (("--sample-rate", args.sample_rate), ("--steps", args.steps),
                            ("--schedule", args.schedule)) if v is not None]
    if given:
        raise InputError(f"--level training takes the run as --batch-size and --epochs (N is the dataset's), "
                         f"not {', '.join(given)}")
    missing = [f for f, v in (("--batch-size", args.batch_size), ("--epochs", args.epochs)) if v is None]
    if missing:
        raise InputError(f"--level training needs {' and '.join(missing)}")
    _results_location(args)
    out = text_stream(args)
    if out is sys.stdout:
        return run_training(args)
    import contextlib

    with contextlib.redirect_stdout(out):
        return run_training(args)
