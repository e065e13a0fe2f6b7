"""``dpaudit epsilon``: ε of a run by several accountants, side by side."""

from __future__ import annotations

import argparse
import math

import pandas as pd

from dpaudit import validation
from dpaudit.accountants import ACCOUNTANTS, get_accountant, parse_accountant_list
from dpaudit.cli.output import dumps
from dpaudit.cli.run_flags import add_schedule_flags, schedule_from_args
from dpaudit.errors import AccountingError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("epsilon", help="total epsilon of a DP-SGD run (all accountants)")
    add_schedule_flags(p, with_sigma=True)
    p.add_argument("--delta", type=float, required=True, help="delta in (0, 1)")
    p.add_argument("--accountant", default=",".join(ACCOUNTANTS), help="comma list of rdp,pld,prv,gdp (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = parse_accountant_list(args.accountant)
    delta = validation.open_unit("delta", args.delta)
    schedule = schedule_from_args(args, args.sigma)
    rows, details = [], {}
    for name in names:
        try:
            r = get_accountant(name).epsilon(schedule, delta)
        except AccountingError as exc:
            rows.append({"accountant": name, "epsilon": math.nan, "note": f"failed: {exc}", "seconds": math.nan})
            details[name] = {"error": str(exc)}
            continue
        note = r.note() if r.is_upper_bound else f"APPROXIMATION, not a bound: {r.note()}"
        rows.append({"accountant": name, "epsilon": r.epsilon, "note": note, "seconds": r.seconds})
        details[name] = {
            "epsilon": r.epsilon, "lower": r.lower, "estimate": r.estimate,
            "is_upper_bound": r.is_upper_bound, "note": r.note(), "seconds": r.seconds,
        }
    if all("error" in d for d in details.values()):
        raise AccountingError("; ".join(d["error"] for d in details.values()))
    if args.json:
        print(dumps({
            "delta": delta,
            "epsilon": {r["accountant"]: r["epsilon"] for r in rows},
            "neighbouring": str(schedule.neighbouring),
            "schedule": schedule.describe(),
            "details": details,
        }))
        return 0
    print(f"run: {schedule.describe()}")
    print(f"delta: {delta:g}")
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(table.to_string(index=False, formatters={"epsilon": "{:.4f}".format, "seconds": "{:.2f}".format}))
    return 0
