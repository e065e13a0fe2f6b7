"""The flag language shared by every command: how a run, a budget and an output are named.

A run is described the same way everywhere: ``--noise-multiplier`` (alias
``--sigma``), and either ``--sample-rate``/``--steps`` (aliases
``--sampling-probability``/``--num-compositions``, as prv-accountant names
them), ``--dataset-size``/``--batch-size``/``--epochs``, or ``--schedule
FILE``. The budget is ``--epsilon``/``--delta`` (aliases ``--target-epsilon``/
``--target-delta``, as Opacus names them). Nothing here imports numpy: the
parser is built on every call, ``--help`` included.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from dpaudit.cli.output import STDOUT, JsonTarget, check_output_path
from dpaudit.defaults import (
    CALIBRATION_ACCOUNTANTS, DEFAULT_CALIBRATION_ACCOUNTANT, DEFAULT_CONFIDENCE, DEFAULT_RUNS,
    DEFAULT_TIME_BUDGET,
)
from dpaudit.errors import InputError

#: Every alias the CLI accepts: alias -> the flag it stands for.
ALIASES = {
    "--sigma": "--noise-multiplier",
    "--sampling-probability": "--sample-rate",
    "--num-compositions": "--steps",
    "--target-epsilon": "--epsilon",
    "--target-delta": "--delta",
    "--audit-runs": "--runs",
    "--audit-budget": "--time-budget",
}


def _flag(group, name: str, **kwargs) -> None:
    """Add ``name`` with the aliases :data:`ALIASES` lists for it."""
    aliases = [a for a, canonical in ALIASES.items() if canonical == name]
    group.add_argument(name, *aliases, **kwargs)


def add_run_flags(parser: argparse.ArgumentParser, *, noise_multiplier: bool, mechanism: bool = False) -> None:
    """The flags that describe a run (see the module docstring)."""
    g = parser.add_argument_group("the run (give --sample-rate/--steps, --dataset-size/--batch-size/--epochs, or --schedule)")
    if noise_multiplier:
        default = (
            "default: calibrated for --epsilon/--delta by --calibration-accountant" if mechanism else "required"
        )
        _flag(g, "--noise-multiplier", type=float, metavar="SIGMA",
              help=f"noise multiplier: noise std / L2 sensitivity ({default})")
    _flag(g, "--sample-rate", type=float, metavar="Q", help="Poisson sampling rate q in (0, 1]")
    _flag(g, "--steps", type=int, metavar="T", help="number of steps (compositions)")
    g.add_argument("--dataset-size", type=int, metavar="N", help="N: q = B/N")
    g.add_argument("--batch-size", type=int, metavar="B", help="expected batch size B")
    g.add_argument("--epochs", type=int, metavar="E", help="E: steps = E * floor(N/B)")
    shape = (
        "; certify and audit need one sigma and one sample rate, and --dataset-size or --batch-size"
        if mechanism else ""
    )
    g.add_argument("--schedule", metavar="FILE.csv",
                   help=f"CSV with columns sigma,sample_rate[,steps], one row per step or per run of steps{shape}")


def add_budget_flags(parser: argparse.ArgumentParser, *, epsilon: bool, epsilon_help: str = "target epsilon > 0") -> None:
    """``--epsilon`` (if the command takes one) and ``--delta``."""
    if epsilon:
        _flag(parser, "--epsilon", type=float, required=True, metavar="EPS", help=epsilon_help)
    _flag(parser, "--delta", type=float, required=True, metavar="DELTA", help="delta in (0, 1)")


def add_json_flag(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    parser.add_argument("--json", nargs="?", const=STDOUT, default=None, metavar="PATH",
                        help=f"write {what} as JSON to PATH (stdout when no PATH is given)")


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (bars are drawn only on a terminal; elsewhere one summary line)")


def add_calibration_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--calibration-accountant", choices=CALIBRATION_ACCOUNTANTS, default=DEFAULT_CALIBRATION_ACCOUNTANT,
        type=str.lower,
        help=f"accountant that calibrates the noise multiplier when it is not given "
             f"(default {DEFAULT_CALIBRATION_ACCOUNTANT}, as the seed harness)",
    )


def add_audit_flags(parser: argparse.ArgumentParser, *, runs_help: str) -> None:
    """Runs, time budget, confidence and seed: the same names in certify and audit."""
    _flag(parser, "--runs", type=int, default=None, metavar="N", help=runs_help)
    _flag(parser, "--time-budget", type=float, default=DEFAULT_TIME_BUDGET, metavar="SECONDS",
          help=f"seconds of runs the default audit plan aims at (default {DEFAULT_TIME_BUDGET:g}); "
               "only the scenario on your own run is cut to fit")
    parser.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                        help=f"family-wise confidence of the audit's verdict (default {DEFAULT_CONFIDENCE:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0); the same seed gives the same numbers")


def runs_or_default(args: argparse.Namespace) -> int:
    return DEFAULT_RUNS if args.runs is None else args.runs


# ----------------------------------------------------------------------------
# Checks made before any long work


def prepare_outputs(args: argparse.Namespace, *, results_directory_ok: bool = False) -> None:
    """Check every output path now, and turn ``args.json`` into a :class:`JsonTarget`."""
    if getattr(args, "json", None) is not None:
        if args.json != STDOUT:
            check_output_path("--json", args.json)
        args.json = JsonTarget(args.json, sys.stdout)
    if getattr(args, "report", None) is not None:
        report = check_output_path("--report", args.report)
        if report.suffix.lower() not in (".md", ".markdown"):
            raise InputError(f"--report {args.report}: give a Markdown file name ending in .md "
                             "(its PNG figures are written beside it)")
    if getattr(args, "results", None) is not None:
        check_output_path("--results", args.results, directory_ok=results_directory_ok)


def text_stream(args: argparse.Namespace):
    """Where the human-readable text goes: stderr when JSON owns stdout, else stdout."""
    json = getattr(args, "json", None)
    return sys.stderr if isinstance(json, JsonTarget) and json.to_stdout else sys.stdout


# ----------------------------------------------------------------------------
# The run of epsilon and sigma: a schedule


def _styles(args: argparse.Namespace) -> tuple[bool, bool]:
    run_style = args.sample_rate is not None or args.steps is not None
    epoch_style = any(v is not None for v in (args.dataset_size, args.batch_size, args.epochs))
    return run_style, epoch_style


def schedule_from_args(args: argparse.Namespace, sigma: float | None):
    """The :class:`~dpaudit.schedule.Schedule` the flags describe.

    ``sigma`` is the uniform σ (or 1.0 for a shape to calibrate).
    """
    from dpaudit.schedule import Schedule
    from dpaudit.schedule_csv import read_schedule_csv

    run_style, epoch_style = _styles(args)
    if args.schedule is not None:
        if run_style or epoch_style or getattr(args, "noise_multiplier", None) is not None:
            raise InputError("--schedule replaces --noise-multiplier, --sample-rate/--steps and "
                             "--dataset-size/--batch-size/--epochs")
        return read_schedule_csv(args.schedule)
    if run_style and epoch_style:
        raise InputError("give either --sample-rate and --steps, or --dataset-size, --batch-size and --epochs, not both")
    if sigma is None:
        raise InputError("--noise-multiplier is required (or --schedule FILE)")
    if run_style:
        if args.sample_rate is None or args.steps is None:
            raise InputError("--sample-rate and --steps go together")
        return Schedule.uniform(sigma, args.sample_rate, args.steps)
    if epoch_style:
        missing = [f for f, v in (("--dataset-size", args.dataset_size), ("--batch-size", args.batch_size),
                                  ("--epochs", args.epochs)) if v is None]
        if missing:
            raise InputError(f"missing {', '.join(missing)} (with --dataset-size/--batch-size/--epochs all three are needed)")
        return Schedule.from_epochs(sigma, args.dataset_size, args.batch_size, args.epochs)
    raise InputError("describe the run: --sample-rate Q --steps T, or --dataset-size N --batch-size B --epochs E, "
                     "or --schedule FILE")


# ----------------------------------------------------------------------------
# The run of certify and audit: what the seed interface's constructor takes


@dataclass(frozen=True)
class MechanismRun:
    """N, B, E of the run and the σ the flags give (None: calibrate it)."""

    dataset_size: int
    batch_size: int
    epochs: int
    noise_multiplier: float | None


def mechanism_run_from_args(args: argparse.Namespace) -> MechanismRun:
    """N, B, E (and σ if given) from any of the run descriptions.

    The seed interface constructs a mechanism with N, B and E, so a run given
    as q and T (flags or a schedule file) also needs N or B.
    """
    from dpaudit.run_config import run_sizes

    sigma = args.noise_multiplier
    q, steps = args.sample_rate, args.steps
    if args.schedule is not None:
        if q is not None or steps is not None or args.epochs is not None or sigma is not None:
            raise InputError("--schedule replaces --noise-multiplier, --sample-rate/--steps and --epochs")
        sigma, q, steps = _uniform_schedule(args.schedule)
    n, b, e = run_sizes(
        dataset_size=args.dataset_size, batch_size=args.batch_size, epochs=args.epochs,
        sample_rate=q, steps=steps,
    )
    return MechanismRun(n, b, e, sigma)


def _uniform_schedule(path: str) -> tuple[float, float, int]:
    """(σ, q, steps) of a schedule file with one σ and one sample rate."""
    from dpaudit.schedule_csv import read_schedule_csv

    schedule = read_schedule_csv(path)
    sigmas, rates = set(schedule.sigmas), set(schedule.sample_rates)
    if len(rates) != 1:
        raise InputError(f"schedule file {path}: has {len(rates)} sample rates; a DPMechanism is built for one "
                         "batch size, so certify and audit need one")
    if len(sigmas) != 1:
        raise InputError(f"schedule file {path}: has {len(sigmas)} noise multipliers; a DPMechanism is handed one "
                         "(its get_effective_sigma declares the schedule), so give that one with --noise-multiplier")
    return sigmas.pop(), rates.pop(), int(sum(schedule.counts))
