"""``dpaudit epsilon``: ε of a run by several accountants, side by side."""

from __future__ import annotations

import argparse

from dpaudit.cli.run_flags import add_budget_flags, add_json_flag, add_run_flags
from dpaudit.defaults import ACCOUNTANT_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "epsilon", help="epsilon of a DP-SGD run by every accountant",
        description="Total epsilon at --delta of a run with any per-step sigma_t, q_t, by RDP, PLD, "
                    "PRV (upper bound) and GDP (a central-limit approximation), side by side.",
    )
    add_run_flags(p, noise_multiplier=True)
    add_budget_flags(p, epsilon=False)
    p.add_argument("--accountant", default=",".join(ACCOUNTANT_NAMES), metavar="LIST",
                   help=f"comma list of {','.join(ACCOUNTANT_NAMES)} (default: all)")
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dpaudit import validation
    from dpaudit.accountants import parse_accountant_list
    from dpaudit.api import epsilon
    from dpaudit.cli.output import emit_json, table, wrap
    from dpaudit.cli.run_flags import prepare_outputs, schedule_from_args
    from dpaudit.errors import AccountingError

    names = parse_accountant_list(args.accountant)
    delta = validation.open_unit("delta", args.delta)
    schedule = schedule_from_args(args, args.noise_multiplier)
    prepare_outputs(args)
    frame = epsilon(schedule, delta, names)
    failed = frame["bound"] == "failed"
    if failed.all():
        raise AccountingError("; ".join(frame["notes"]))
    if args.json is not None:
        emit_json(args.json, {
            "delta": delta,
            "epsilon": {name: row.epsilon for name, row in frame.iterrows()},
            "neighbouring": str(schedule.neighbouring),
            "schedule": schedule.describe(),
            "details": {
                name: {"error": row.notes} if row.bound == "failed" else {
                    "epsilon": row.epsilon, "lower": _none(row.lower), "estimate": _none(row.estimate),
                    "is_upper_bound": row.bound == "upper bound", "note": row.notes, "seconds": row.seconds,
                }
                for name, row in frame.iterrows()
            },
        })
        return 0
    print(wrap(f"run: {schedule.describe()}"))
    print(f"delta: {delta:g}")
    print()
    print(table(
        [{"accountant": name, "epsilon": row.epsilon, "bound": row.bound, "seconds": row.seconds}
         for name, row in frame.iterrows()],
        {"epsilon": ".4f", "seconds": ".2f"},
    ))
    print()
    print("notes:")
    for name, row in frame.iterrows():
        if row.notes:
            print(wrap(f"{name}: {row.notes}", indent="  " + " " * (len(name) + 2), first="  "))
    return 0


def _none(x: float) -> float | None:
    return None if x != x else float(x)
