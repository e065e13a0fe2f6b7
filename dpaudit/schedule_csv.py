"""Reading a schedule from a CSV file (columns ``sigma,sample_rate`` and optionally ``steps``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dpaudit.errors import InputError
from dpaudit.schedule import Schedule

REQUIRED = ("sigma", "sample_rate")


def read_schedule_csv(path: str | Path) -> Schedule:
    """One row per step, or per run of ``steps`` equal steps.

    Every problem (missing file, missing column, a bad value) is an
    :class:`InputError` that names the file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"schedule file {p}: no such file")
    if not p.is_file():
        raise InputError(f"schedule file {p}: is not a file")
    try:
        frame = pd.read_csv(p, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"schedule file {p}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise InputError(
            f"schedule file {p}: missing column(s) {', '.join(missing)}; "
            f"expected sigma,sample_rate[,steps], found {','.join(frame.columns)}"
        )
    if frame.empty:
        raise InputError(f"schedule file {p}: no rows")
    try:
        sigma = pd.to_numeric(frame["sigma"], errors="raise").to_numpy(float)
        rate = pd.to_numeric(frame["sample_rate"], errors="raise").to_numpy(float)
        steps = (
            pd.to_numeric(frame["steps"], errors="raise").to_numpy(float) if "steps" in frame else None
        )
    except (ValueError, TypeError) as exc:
        raise InputError(f"schedule file {p}: non-numeric value ({exc})") from None
    try:
        return Schedule.from_runs(sigma, rate, steps)
    except InputError as exc:
        raise InputError(f"schedule file {p}: {exc} (row index counts from 0 after the header)") from None
