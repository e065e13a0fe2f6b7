"""``dpaudit certify PATH.py[:Class]``: verdict on a user's mechanism.

Exit codes: 0 pass, 1 fail, 2 input error (including NaN/inf from the
mechanism), 3 inconclusive (a statistical check could not decide).
"""

from __future__ import annotations

import argparse

from dpaudit import validation
from dpaudit.audit.mechanism_audit import audit_mechanism
from dpaudit.certify import certify, default_noise_multiplier, default_sigma_source
from dpaudit.certify.report import summary_lines, write_report
from dpaudit.cli.output import dumps, write_atomic
from dpaudit.probe import N_PARAMS
from dpaudit.run_config import RunConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help="verdict on a DPMechanism file: declared vs measured privacy",
                       description=__doc__)
    p.add_argument("mechanism", help="PATH.py[:ClassName] (class DPMechanism by default)")
    p.add_argument("--dataset-size", type=int, required=True, help="N")
    p.add_argument("--batch-size", type=int, required=True, help="expected batch size B (q = B/N)")
    p.add_argument("--epochs", type=int, required=True, help="E (steps = E * floor(N/B))")
    p.add_argument("--epsilon", type=float, required=True, help="the claimed epsilon")
    p.add_argument("--delta", type=float, required=True, help="the claimed delta, in (0, 1)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="clip norm C handed to the mechanism (default 1.0)")
    p.add_argument("--noise-multiplier", type=float, default=None,
                   help="sigma handed to the mechanism (default: the uniform sigma calibrated for the budget)")
    p.add_argument("--n-params", type=int, default=N_PARAMS,
                   help=f"n_params handed to the mechanism (default {N_PARAMS}: the probe's synthetic MLP 64-32-10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probe's synthetic data and draws")
    p.add_argument("--audit", choices=("mechanism", "none"), default="mechanism",
                   help="also run the gradient-space canary audit and fold it into the verdict "
                        "(default: mechanism, about a minute on 2 CPU cores; none: skip it)")
    p.add_argument("--audit-runs", type=int, default=1000, help="audit runs per side (default 1000)")
    p.add_argument("--audit-budget", type=float, default=60.0,
                   help="seconds the audit plans for (default 60); it cuts scenarios on the user's run to fit")
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    p.add_argument("--report", metavar="PATH.md", help="write a Markdown report with a PNG plot beside it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _gradient_audit(args: argparse.Namespace):
    """The audit certify folds into its verdict, or None with --audit none."""
    if args.audit == "none":
        return None
    runs = validation.positive_int("audit runs", args.audit_runs)

    def audit(factory, config):
        return audit_mechanism(factory, config, runs=runs, seed=args.seed,
                               progress=not args.no_progress, time_budget=args.audit_budget)

    return audit


def run(args: argparse.Namespace) -> int:
    validation.positive("epsilon", args.epsilon)
    validation.open_unit("delta", args.delta)
    if args.noise_multiplier is None:
        sigma = default_noise_multiplier(args.dataset_size, args.batch_size, args.epochs, args.epsilon, args.delta)
        source = default_sigma_source()
    else:
        sigma = args.noise_multiplier
        source = "given"
    config = RunConfig(
        dataset_size=args.dataset_size, batch_size=args.batch_size, epochs=args.epochs,
        epsilon=args.epsilon, delta=args.delta, noise_multiplier=sigma,
        max_grad_norm=args.max_grad_norm, n_params=args.n_params,
    )
    result = certify(args.mechanism, config, noise_multiplier_source=source, seed=args.seed,
                     progress=not args.no_progress, audit=_gradient_audit(args))
    for line in summary_lines(result):
        print(line)
    print(f"verdict: {result.verdict}")
    for i, reason in enumerate(result.reasons, 1):
        print(f"  {i}. {reason}")
    if args.json:
        write_atomic(args.json, dumps(result.to_dict()))
        print(f"json: {args.json}")
    if args.report:
        print(f"report: {write_report(result, args.report)}")
    return {"pass": 0, "fail": 1, "inconclusive": 3}[result.verdict]
