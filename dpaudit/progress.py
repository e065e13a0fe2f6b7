"""Progress of long work: a tqdm bar on a terminal, one summary line otherwise.

A bar redrawn with carriage returns helps on a terminal and is noise in a log
file (thousands of frames), so tqdm draws only when stderr is a terminal
(``disable=None``); when it is not, closing the bar writes one line saying
what was done and how long it took. A bar closed by an exception says
nothing, so that an error stays the one line the CLI prints.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")


class Progress:
    """A tqdm bar (on a terminal) that counts, and off a terminal a summary line at the end.

    Args:
        desc: What is progressing ("audit", "probe", ...), the bar's label.
        total: Units of work in all (None: unknown; see :meth:`set_total`).
        unit: Name of one unit of work, singular ("step", "run", "model").
        enabled: False: no bar and no summary.
        initial: Units already done (a resumed job).
        **options: Passed to tqdm (``leave``, ``unit_scale``, ``bar_format``, ...).
    """

    def __init__(
        self, desc: str, *, total: float | None = None, unit: str = "it", enabled: bool = True,
        initial: float = 0, **options: Any,
    ) -> None:
        from tqdm.auto import tqdm

        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.initial = self.n = initial
        self._start = time.perf_counter()
        self._bar = tqdm(
            total=total, initial=initial, desc=desc, unit=unit,
            disable=None if enabled else True, dynamic_ncols=True, file=sys.stderr, **options,
        )
        self._summarise = enabled and bool(self._bar.disable)
        self._closed = False

    @property
    def total(self) -> float | None:
        return self._bar.total

    def update(self, n: float = 1) -> None:
        """Count ``n`` more units done."""
        self.moveto(self.n + n)

    def moveto(self, n: float) -> None:
        """Set the units done to ``n`` (for work measured in fractions, e.g. training steps)."""
        self.n = n
        if not self._bar.disable:
            self._bar.n = n
            self._bar.refresh()

    def set_total(self, total: float) -> None:
        """Change the total (a calibration learns how many evaluations it needs as it goes)."""
        self._bar.total = total
        if not self._bar.disable:
            self._bar.refresh()

    def set_postfix(self, text: str) -> None:
        """Text after the bar (e.g. the run count when the bar counts steps)."""
        if not self._bar.disable:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self, summary: str | None = None) -> None:
        """Close the bar; off a terminal write one line: ``desc: summary in N s``.

        ``summary`` defaults to the units counted ("1170 steps").
        """
        if self._closed:
            return
        self._closed = True
        self._bar.close()
        if self._summarise:
            done = self.n - self.initial
            text = summary if summary is not None else plural(done, self.unit)
            sys.stderr.write(f"{self.desc}: {text} in {time.perf_counter() - self._start:.1f} s\n")
            sys.stderr.flush()

    def abandon(self) -> None:
        """Close the bar without a summary (the work failed or was interrupted)."""
        self._summarise = False
        self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def track(
    items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it", enabled: bool = True,
    **options: Any,
) -> Iterator[T]:
    """Iterate over ``items`` with a :class:`Progress`; the summary is written only if the loop ends."""
    bar = Progress(desc, total=total, unit=unit, enabled=enabled, **options)
    finished = False
    try:
        for item in items:
            yield item
            bar.update()
        finished = True
    finally:
        bar.close() if finished else bar.abandon()


def note(message: str, enabled: bool = True) -> None:
    """One status line on stderr (printed above a bar that is being drawn)."""
    if enabled:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


def plural(n: float, unit: str) -> str:
    """'1 run', '2,200 runs', '1.5 models'."""
    count = f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"
    return f"{count} {unit}" + ("" if n == 1 else "s")
