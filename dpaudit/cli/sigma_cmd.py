"""``dpaudit sigma``: the noise multiplier (or a schedule shape's scale) for a target budget.

σ is printed rounded *up* to the digits shown (a σ rounded to nearest can be
below the calibrated one and exceed the budget); ``--json`` gives the full value.
"""

from __future__ import annotations

import argparse
from decimal import ROUND_CEILING, Decimal

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


#: Significant digits of σ in the text output.
DIGITS = 6
GDP_WARNING = ("GDP is a central-limit approximation that can under-state epsilon: this sigma may not "
               "meet the budget; calibrate with rdp, pld or prv to certify it")


def ceil_significant(x: float, digits: int = DIGITS) -> str:
    """``x`` rounded up (towards +inf) to ``digits`` significant digits, as text (0.6513683 -> '0.651369')."""
    d = Decimal(repr(float(x)))
    if d == 0:
        return "0"
    step = Decimal(1).scaleb(d.adjusted() - digits + 1)
    return format(d.quantize(step, rounding=ROUND_CEILING).normalize(), "f")


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
        if result.accountant == "gdp":
            out["approximate"] = True
            out["warning"] = GDP_WARNING
        emit_json(args.json, out)
        return 0
    shown = ceil_significant(result.scale)
    print(f"run: {shape.describe() if shaped else shape.scaled(float(shown)).describe()}")
    what = "scale s (sigma_t = s * shape_t)" if shaped else "sigma"
    print(f"{what}: {shown} (rounded up)")
    print(f"epsilon: {result.epsilon:.6g} <= target {target:g} at delta {delta:g} ({result.accountant}"
          f"{', upper bound' if result.accountant == 'prv' else ''}; {result.evaluations} evaluations)")
    if result.accountant == "gdp":
        print(f"warning: {GDP_WARNING}")
    return 0
