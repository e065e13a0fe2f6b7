"""Conservative grouping of a schedule onto a grid of (σ, q) values.

Accountants that pay per distinct mechanism (PLD, PRV, RDP) compose one
(σ, q) pair at a time. A schedule with a different σ at each of 100,000 steps
is first mapped onto a geometric grid, rounding σ *down* and q *up*: ε is
decreasing in σ and increasing in q, so the grouped schedule is at least as
private-costly as the original and its ε stays a valid upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpaudit.schedule import Schedule



def _relative_steps():
    """1e-4, 2e-4, 5e-4, 1e-3, ... without end: finest first."""
    scale = 1e-4
    while True:
        for m in (1, 2, 5):
            yield m * scale
        scale *= 10


@dataclass(frozen=True)
class Grid:
    """σ rounded down to, and q rounded up to, powers of (1 + relative_step)."""

    relative_step: float
    groups_before: int
    groups_after: int

    def describe(self) -> str:
        return (
            f"grouped {self.groups_before} distinct (sigma, q) onto {self.groups_after} "
            f"(sigma rounded down, q rounded up, geometric grid step {self.relative_step:g})"
        )


def _round_to_grid(values: np.ndarray, step: float, down: bool) -> np.ndarray:
    base = np.log1p(step)
    k = np.floor(np.log(values) / base) if down else np.ceil(np.log(values) / base)
    out = np.exp(k * base)
    # log/exp round-off can land on the wrong side; move one grid point further.
    if down:
        wrong = out > values
        out[wrong] = np.exp((k[wrong] - 1) * base)
    else:
        wrong = out < values
        out[wrong] = np.exp((k[wrong] + 1) * base)
    return out


def group(schedule: Schedule, max_groups: int) -> tuple[Schedule, Grid | None]:
    """Merge equal steps; if more than ``max_groups`` distinct (σ, q) remain, round onto a grid.

    Returns the schedule to compose and the grid used (None when no rounding
    was needed, in which case the result is exact).
    """
    merged = schedule.merged()
    if len(merged.sigmas) <= max_groups:
        return merged, None
    sig = np.asarray(merged.sigmas)
    q = np.asarray(merged.sample_rates)
    for step in _relative_steps():
        sig_g = _round_to_grid(sig, step, down=True)
        q_g = np.minimum(_round_to_grid(q, step, down=False), 1.0)
        grouped = Schedule(
            tuple(sig_g.tolist()), tuple(q_g.tolist()), merged.counts, schedule.neighbouring
        ).merged()
        if len(grouped.sigmas) <= max_groups:
            return grouped, Grid(step, len(merged.sigmas), len(grouped.sigmas))
    raise AssertionError("unreachable: a coarse enough grid holds one group")  # pragma: no cover
