"""``dpaudit sigma``: the noise multiplier (or a schedule shape's scale) for a target budget."""

from __future__ import annotations

import argparse

from dpaudit.cli.run_flags import add_budget_flags, add_json_flag, add_progress_flag, add_run_flags
from dpaudit.defaults import ACCOUNTANT_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sigma", help="noise multiplier for a target (epsilon, delta)",
        description="The smallest uniform noise multiplier (or, with --schedule, the scale of the "
                    "schedule's sigma column) whose epsilon at --delta is at most --epsilon.",
    )
    add_run_flags(p, noise_multiplier=False)
    add_budget_flags(p, epsilon=True)
    p.add_argument("--accountant", default="prv", choices=ACCOUNTANT_NAMES, type=str.lower,
                   help="rdp, pld, prv (default, its upper bound) or gdp (an approximation)")
    add_json_flag(p)
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dpaudit import validation
    from dpaudit.calibration import calibrate_scale
    from dpaudit.cli.output import emit_json
    from dpaudit.cli.run_flags import prepare_outputs, schedule_from_args

    target = validation.positive("epsilon", args.epsilon)
    delta = validation.open_unit("delta", args.delta)
    shape = schedule_from_args(args, 1.0)
    prepare_outputs(args)
    result = calibrate_scale(shape, target, delta, args.accountant, progress=not args.no_progress)
    shaped = args.schedule is not None
    if args.json is not None:
        out = {"sigma": result.scale, "epsilon": result.epsilon, "accountant": result.accountant, "delta": delta}
        if shaped:
            out["meaning"] = "scale s: sigma_t = s * sigma column of the schedule file"
        emit_json(args.json, out)
        return 0
    print(f"run: {shape.describe() if shaped else result.schedule.describe()}")
    what = "scale s (sigma_t = s * shape_t)" if shaped else "sigma"
    print(f"{what}: {result.scale:.6g}")
    print(f"epsilon: {result.epsilon:.6g} <= target {target:g} at delta {delta:g} ({result.accountant}"
          f"{', upper bound' if result.accountant == 'prv' else ''}; {result.evaluations} evaluations)")
    if result.accountant == "gdp":
        print("warning: GDP is a central-limit approximation that can under-state epsilon")
    return 0
