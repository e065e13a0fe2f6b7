"""What every accountant returns, and the interface they share.

An accountant is a stateless object: ε is a pure function of the schedule
(no history to reset, unlike Opacus's ``accountant.history``).
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from dpaudit import validation
from dpaudit.accountants.grouping import Grid
from dpaudit.schedule import Schedule


class _Noted:
    """The one-line note of a result: the accountant's remarks and the grid used."""

    notes: tuple[str, ...]
    grid: Grid | None

    def note(self) -> str:
        parts = list(self.notes)
        if self.grid is not None:
            parts.append(self.grid.describe())
        return "; ".join(parts)


@dataclass(frozen=True)
class EpsilonResult(_Noted):
    """ε of a schedule at a given δ.

    ``epsilon`` is the value to certify with: an upper bound for every
    accountant except GDP, whose central-limit value is an approximation
    (``is_upper_bound`` False). ``lower``/``estimate`` are filled where the
    accountant provides them (PRV).
    """

    accountant: str
    epsilon: float
    delta: float
    neighbouring: str
    is_upper_bound: bool
    lower: float | None = None
    estimate: float | None = None
    grid: Grid | None = None
    notes: tuple[str, ...] = field(default=())
    seconds: float = 0.0


@dataclass(frozen=True)
class DeltaResult(_Noted):
    """δ of a schedule at a given ε (same conventions as :class:`EpsilonResult`)."""

    accountant: str
    delta: float
    epsilon: float
    neighbouring: str
    is_upper_bound: bool
    lower: float | None = None
    estimate: float | None = None
    grid: Grid | None = None
    notes: tuple[str, ...] = field(default=())
    seconds: float = 0.0


R = TypeVar("R", EpsilonResult, DeltaResult)


def timed(fn: Callable[[], R]) -> R:
    """Run ``fn`` and return its result with ``seconds`` filled in."""
    start = time.perf_counter()
    result = fn()
    return type(result)(**{**result.__dict__, "seconds": time.perf_counter() - start})


class Accountant(abc.ABC):
    """ε(δ) and δ(ε) of a :class:`Schedule` of Poisson-subsampled Gaussian steps.

    The neighbouring relation is the schedule's (add/remove one example,
    Poisson sampling). Subclasses implement :meth:`_epsilon` and :meth:`_delta`
    on a validated schedule.
    """

    name: str = ""
    is_upper_bound: bool = True

    def epsilon(self, schedule: Schedule, delta: float) -> EpsilonResult:
        """Total ε of ``schedule`` at ``delta`` ∈ (0, 1)."""
        d = validation.open_unit("delta", delta)
        return timed(lambda: self._epsilon(schedule, d))

    def delta(self, schedule: Schedule, epsilon: float) -> DeltaResult:
        """Total δ of ``schedule`` at ``epsilon`` ≥ 0."""
        e = validation.nonnegative("epsilon", epsilon)
        return timed(lambda: self._delta(schedule, e))

    @abc.abstractmethod
    def _epsilon(self, schedule: Schedule, delta: float) -> EpsilonResult: ...

    @abc.abstractmethod
    def _delta(self, schedule: Schedule, epsilon: float) -> DeltaResult: ...
