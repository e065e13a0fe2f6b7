"""Flags that describe a run, shared by ``epsilon``, ``sigma`` and the mechanism commands."""

from __future__ import annotations

import argparse

from dpaudit.errors import InputError
from dpaudit.schedule import Schedule
from dpaudit.schedule_csv import read_schedule_csv


def add_schedule_flags(parser: argparse.ArgumentParser, with_sigma: bool) -> None:
    """--sample-rate/--steps, or --dataset-size/--batch-size/--epochs, or --schedule FILE."""
    if with_sigma:
        parser.add_argument("--sigma", type=float, help="noise multiplier (noise std / sensitivity)")
    parser.add_argument("--sample-rate", type=float, help="Poisson sampling rate q in (0, 1]")
    parser.add_argument("--steps", type=int, help="number of steps")
    parser.add_argument("--dataset-size", type=int, help="N: q = B/N")
    parser.add_argument("--batch-size", type=int, help="expected batch size B")
    parser.add_argument("--epochs", type=int, help="E: steps = E * floor(N/B)")
    parser.add_argument(
        "--schedule",
        help="CSV with columns sigma,sample_rate[,steps], one row per step or per run of steps",
    )


def schedule_from_args(args: argparse.Namespace, sigma: float | None) -> Schedule:
    """The run the flags describe. ``sigma`` is the uniform σ (or 1.0 for a shape to calibrate)."""
    run_style = args.sample_rate is not None or args.steps is not None
    epoch_style = any(v is not None for v in (args.dataset_size, args.batch_size, args.epochs))
    if args.schedule is not None:
        if run_style or epoch_style or getattr(args, "sigma", None) is not None:
            raise InputError("--schedule replaces --sigma, --sample-rate/--steps and --dataset-size/--batch-size/--epochs")
        return read_schedule_csv(args.schedule)
    if run_style and epoch_style:
        raise InputError("give either --sample-rate and --steps, or --dataset-size, --batch-size and --epochs, not both")
    if sigma is None:
        raise InputError("--sigma is required (or --schedule FILE)")
    if run_style:
        if args.sample_rate is None or args.steps is None:
            raise InputError("--sample-rate and --steps go together")
        return Schedule.uniform(sigma, args.sample_rate, args.steps)
    if epoch_style:
        missing = [f for f, v in (("--dataset-size", args.dataset_size), ("--batch-size", args.batch_size), ("--epochs", args.epochs)) if v is None]
        if missing:
            raise InputError(f"missing {', '.join(missing)} (with --dataset-size/--batch-size/--epochs all three are needed)")
        return Schedule.from_epochs(sigma, args.dataset_size, args.batch_size, args.epochs)
    raise InputError("describe the run: --sample-rate Q --steps T, or --dataset-size N --batch-size B --epochs E, or --schedule FILE")
