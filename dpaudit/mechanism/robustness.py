"""Inputs a mechanism refuses: a refusal the run practically never meets is a note, not an error.

The probe and the audits invent inputs a real run hardly ever produces: an
empty batch, a batch of one, half a batch. The seed's own idiom
(``g.reshape(batch_size, -1)``) raises on an empty batch, which a Poisson run
at q = 256/60000 meets with probability e^-256 per step. Such a mechanism is
not refused: the run's chance of ever producing the input is worked out, and
when it is *negligible* (below :data:`NEGLIGIBLE_SHARE_OF_DELTA` of δ, so the
failure can change the (ε, δ) claim by no more than that share of δ) the
refusal becomes a robustness note and every measurement goes on without that
input. A refusal of an input the run really produces is still an input error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from dpaudit.errors import InputError
from dpaudit.run_config import RunConfig

class MechanismRaised(InputError):
    """``clip_and_noise`` raised an exception (as opposed to returning something unusable).

    Only such a refusal of an input makes the probe and the audit try another
    gradient layout; a wrongly shaped or non-finite output is an error at once.
    """


#: A failure whose chance over the whole run is below this share of δ is negligible.
NEGLIGIBLE_SHARE_OF_DELTA = 0.01
#: Largest batch size tried when looking for the smallest batch a mechanism accepts.
MAX_MIN_BATCH = 4


def log_probability_batch_below(config: RunConfig, size: int) -> float:
    """Natural log of an upper bound on P(some step of the run has fewer than ``size`` examples).

    Each of the T steps draws B ~ Binomial(N, q) (Poisson sampling); the
    union bound gives T·P(B < size). ``-inf`` when ``size <= 0``.
    """
    from scipy.stats import binom

    if size <= 0:
        return -math.inf
    per_step = float(binom.logcdf(size - 1, config.dataset_size, config.sample_rate))
    return min(0.0, per_step + math.log(config.steps))


def format_probability(log_p: float) -> str:
    """'about 3e-109' from a natural log (values below 1e-300 would underflow as floats)."""
    if log_p == -math.inf:
        return "0"
    exponent = log_p / math.log(10)
    if exponent > -4:
        return f"{math.exp(log_p):.3g}"
    whole = math.floor(exponent)
    return f"about {10 ** (exponent - whole):.1f}e{whole}"


@dataclass(frozen=True)
class RefusedInput:
    """An input the mechanism failed on, and how likely the user's run is to produce it.

    ``what`` names the input ("a batch of 0 examples"); ``error`` is what the
    mechanism did (raised, or returned NaN); ``log_probability`` is the natural
    log of the chance that the run ever produces it (an upper bound).
    """

    what: str
    error: str
    log_probability: float

    def negligible(self, delta: float) -> bool:
        return self.log_probability < math.log(NEGLIGIBLE_SHARE_OF_DELTA * delta)

    def note(self, consequence: str = "every measurement was made without such batches") -> str:
        return (
            f"robustness: the mechanism fails on {self.what} ({self.error}); the run produces one with "
            f"probability {format_probability(self.log_probability)} over all its steps, which is "
            f"negligible, so {consequence}"
        )


def require_negligible(refused: RefusedInput, config: RunConfig, source: str) -> None:
    """Raise an :class:`InputError` unless the run practically never produces the refused input."""
    if refused.negligible(config.delta):
        return
    raise InputError(
        f"{source}: {refused.error} on {refused.what}; your run (N={config.dataset_size}, "
        f"q={config.sample_rate:.6g}, {config.steps} steps) produces one with probability "
        f"{format_probability(refused.log_probability)}, more than "
        f"{NEGLIGIBLE_SHARE_OF_DELTA:g}·delta, so the mechanism must handle it"
    )


def smallest_accepted_batch(
    attempt: Callable[[int], None], config: RunConfig, source: str
) -> tuple[int, RefusedInput | None]:
    """The smallest batch size (0 … :data:`MAX_MIN_BATCH`) for which ``attempt(size)`` succeeds.

    ``attempt`` raises :class:`InputError` when the mechanism fails on a batch
    of that size. Returns the size and, when it is above 0, what was refused
    (already checked to be negligible for ``config``'s run).

    Raises:
        InputError: the mechanism fails on every size tried, or on a size the
            run produces with more than negligible probability.
    """
    first: RefusedInput | None = None
    for size in range(MAX_MIN_BATCH + 1):
        try:
            attempt(size)
        except InputError as exc:
            if first is None:
                first = RefusedInput(_plural(size), _cause(str(exc)), 0.0)
            continue
        if size == 0:
            return 0, None
        what = first.what if size == 1 else f"batches of fewer than {size} examples ({first.what})"
        refused = RefusedInput(what, first.error, log_probability_batch_below(config, size))
        require_negligible(refused, config, source)
        return size, refused
    raise InputError(f"{source}: {first.error} on {first.what}, and on every batch of up to "
                     f"{MAX_MIN_BATCH} examples")


def input_formats(shapes: Sequence[tuple[int, ...]], dtypes: Sequence) -> list[tuple[tuple, object, str]]:
    """The gradient layouts to try, first choice first: ``(shapes, dtype, description)``.

    Every dtype with ``shapes`` itself, then with every tensor made at least
    two-dimensional (a bias of shape (n,) as (1, n)), then with the parameters
    as one flat vector: as many parameters each time, so that a mechanism
    built for ``n_params`` still fits.
    """
    shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    layouts = [(shapes, "the probe's model")]
    rank2 = tuple(s if len(s) >= 2 else (1,) * (2 - len(s)) + s for s in shapes)
    if rank2 != shapes:
        layouts.append((rank2, "every parameter tensor at least two-dimensional"))
    flat = ((sum(math.prod(s) for s in shapes),),)
    if flat != shapes:
        layouts.append((flat, "one flat parameter vector"))
    out = []
    for layout, what in layouts:
        for dtype in dtypes:
            name = str(dtype).replace("torch.", "")
            out.append((layout, dtype, f"{name} gradients, {what} ({', '.join(map(str, layout))})"))
    return out


def first_accepted_format(
    shapes: Sequence[tuple[int, ...]], dtypes: Sequence, attempt: Callable[[tuple, object], None]
) -> tuple[tuple, object, str, str | None]:
    """The first layout of :func:`input_formats` that ``attempt(shapes, dtype)`` accepts.

    ``attempt`` raises :class:`MechanismRaised` when the mechanism refuses the
    layout. Returns ``(shapes, dtype, description, note)``; the note says what
    was refused when it is not the first choice.

    Raises:
        InputError: the first layout's error, when every layout is refused.
    """
    first_error = None
    for layout, dtype, what in input_formats(shapes, dtypes):
        try:
            attempt(layout, dtype)
        except MechanismRaised as exc:
            first_error = first_error or exc
            continue
        note = None if first_error is None else (
            f"the mechanism failed on the first choice of gradients ({first_error}); it was given {what}")
        return layout, dtype, what, note
    raise first_error


def _plural(n: int) -> str:
    return f"a batch of {n} example" if n == 1 else f"a batch of {n} examples"


def _cause(message: str) -> str:
    """The part of a call's error message after its location ('clip_and_noise raised …')."""
    marker = message.find("clip_and_noise ")
    return message[marker:] if marker >= 0 else message
