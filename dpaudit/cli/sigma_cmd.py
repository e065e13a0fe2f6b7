"""``dpaudit sigma``: the noise multiplier (or a schedule shape's scale) for a target budget."""

from __future__ import annotations

import argparse

from dpaudit import validation
from dpaudit.calibration import calibrate_scale
from dpaudit.cli.output import dumps
from dpaudit.cli.run_flags import add_schedule_flags, schedule_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sigma", help="noise multiplier for a target (epsilon, delta)")
    add_schedule_flags(p, with_sigma=False)
    p.add_argument("--epsilon", type=float, required=True, help="target epsilon > 0")
    p.add_argument("--delta", type=float, required=True, help="delta in (0, 1)")
    p.add_argument("--accountant", default="prv", help="rdp, pld, prv (default, its upper bound) or gdp")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    target = validation.positive("epsilon", args.epsilon)
    delta = validation.open_unit("delta", args.delta)
    shape = schedule_from_args(args, 1.0)
    result = calibrate_scale(shape, target, delta, args.accountant, progress=not args.no_progress)
    shaped = args.schedule is not None
    if args.json:
        out = {"sigma": result.scale, "epsilon": result.epsilon, "accountant": result.accountant, "delta": delta}
        if shaped:
            out["meaning"] = "scale s: sigma_t = s * sigma column of the schedule file"
        print(dumps(out))
        return 0
    print(f"run: {shape.describe() if shaped else result.schedule.describe()}")
    what = "scale s (sigma_t = s * shape_t)" if shaped else "sigma"
    print(f"{what}: {result.scale:.6g}")
    print(f"epsilon: {result.epsilon:.6g} <= target {target:g} at delta {delta:g} ({result.accountant}"
          f"{', upper bound' if result.accountant == 'prv' else ''}; {result.evaluations} evaluations)")
    if result.accountant == "gdp":
        print("warning: GDP is a central-limit approximation that can under-state epsilon")
    return 0
