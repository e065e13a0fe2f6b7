"""``dpaudit certify PATH.py[:Class]``: verdict on a user's mechanism.

Exit 0 pass, 1 fail, 3 inconclusive (a statistical check could not decide), 2 input error
(including NaN/inf from the mechanism).
"""

from __future__ import annotations

import argparse

from dpaudit.cli.run_flags import (
    add_audit_flags, add_budget_flags, add_calibration_flag, add_json_flag, add_progress_flag, add_run_flags,
)
from dpaudit.defaults import DEFAULT_RUNS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "certify", help="verdict on a DPMechanism file: declared vs measured privacy",
        description="Load your DPMechanism file unchanged, account for the noise it declares, probe what it "
                    "does, run the gradient-space canary audit, and give a verdict. Exit codes: 0 pass, "
                    "1 fail, 3 inconclusive (a statistical check could not decide within its budget; never a "
                    "pass), 2 input error (including NaN/inf from the mechanism).",
    )
    p.add_argument("mechanism", help="PATH.py[:ClassName] (class DPMechanism by default)")
    add_run_flags(p, noise_multiplier=True, mechanism=True)
    add_budget_flags(p, epsilon=True, epsilon_help="the claimed epsilon")
    p.add_argument("--max-grad-norm", type=float, default=1.0, metavar="C",
                   help="clip norm C handed to the mechanism (default 1)")
    p.add_argument("--n-params", type=int, default=None,
                   help="n_params handed to the mechanism (default: the probe's synthetic MLP 64-32-10)")
    add_calibration_flag(p)
    p.add_argument("--audit", choices=("mechanism", "none"), default="mechanism", type=str.lower,
                   help="also run the gradient-space canary audit and fold it into the verdict "
                        "(default: mechanism, about a minute on 2 CPU cores; none: skip it)")
    add_audit_flags(p, runs_help=f"audit runs per side (default {DEFAULT_RUNS})")
    add_json_flag(p)
    p.add_argument("--report", metavar="PATH.md", help="write a Markdown report with a PNG plot beside it")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dpaudit.api import certify
    from dpaudit.cli.output import emit_outputs
    from dpaudit.cli.run_flags import mechanism_run_from_args, prepare_outputs, runs_or_default, text_stream
    from dpaudit.verdicts import exit_code

    run_ = mechanism_run_from_args(args)
    prepare_outputs(args)
    result = certify(
        args.mechanism, target_epsilon=args.epsilon, target_delta=args.delta,
        dataset_size=run_.dataset_size, batch_size=run_.batch_size, epochs=run_.epochs,
        noise_multiplier=run_.noise_multiplier, max_grad_norm=args.max_grad_norm, n_params=args.n_params,
        calibration_accountant=args.calibration_accountant, audit=args.audit == "mechanism",
        runs=runs_or_default(args), time_budget=args.time_budget, confidence=args.confidence, seed=args.seed,
        progress=not args.no_progress,
    )
    from dpaudit.certify.report import terminal_lines, write_report

    out = text_stream(args)
    for line in terminal_lines(result):
        print(line, file=out)
    emit_outputs(args, out, result.to_dict(), lambda path: write_report(result, path))
    return exit_code(result.verdict)
