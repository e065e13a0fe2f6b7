"""The data description of a DP-SGD run: which Gaussian steps it composes.

A :class:`Schedule` is plain frozen data, separate from the accountants that
compute on it (as dp-accounting separates its ``DpEvent`` from its
accountants). It holds a sequence of *runs*: ``counts[i]`` consecutive steps
that each add Gaussian noise with multiplier ``sigmas[i]`` (noise standard
deviation divided by the L2 sensitivity) to a sum over a batch drawn by
Poisson sampling with rate ``sample_rates[i]``.

The neighbouring relation is part of the description; the only one dpaudit
accounts for today is add/remove one example under Poisson sampling.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from dpaudit import validation
from dpaudit.errors import InputError


class Neighbouring(enum.Enum):
    """Which pairs of datasets the (ε, δ) guarantee is about."""

    ADD_REMOVE_POISSON = "add/remove one example, Poisson sampling"

    def __str__(self) -> str:
        return self.value


def steps_for_epochs(dataset_size: int, batch_size: int, epochs: int) -> int:
    """Number of steps in ``epochs`` passes with expected batch ``batch_size``: E·⌊N/B⌋.

    This is the one place dpaudit converts epochs to steps (Opacus has two
    formulas that disagree; we keep one).
    """
    n = validation.positive_int("dataset_size", dataset_size)
    b = validation.positive_int("batch_size", batch_size)
    e = validation.positive_int("epochs", epochs)
    if b > n:
        raise InputError(f"batch_size must be <= dataset_size ({n}), got {b}")
    return e * (n // b)


@dataclass(frozen=True)
class Schedule:
    """Run-length compressed sequence of Poisson-subsampled Gaussian steps.

    Attributes:
        sigmas: noise multiplier of each run (σ > 0, noise std / sensitivity).
        sample_rates: Poisson sampling rate of each run, in (0, 1].
        counts: number of consecutive steps in each run (≥ 1).
        neighbouring: the neighbouring relation the privacy guarantee refers to.
    """

    sigmas: tuple[float, ...]
    sample_rates: tuple[float, ...]
    counts: tuple[int, ...]
    neighbouring: Neighbouring = field(default=Neighbouring.ADD_REMOVE_POISSON)

    def __post_init__(self) -> None:
        if not (len(self.sigmas) == len(self.sample_rates) == len(self.counts)):
            raise InputError(
                "sigmas, sample_rates and counts must have equal lengths, got "
                f"{len(self.sigmas)}, {len(self.sample_rates)}, {len(self.counts)}"
            )
        validation.array_in("sigma", self.sigmas, kind="positive")
        validation.array_in("sample_rate", self.sample_rates, kind="probability")
        validation.array_in("steps", self.counts, kind="count")

    # ----- constructors -------------------------------------------------
    @classmethod
    def uniform(cls, sigma: float, sample_rate: float, steps: int) -> "Schedule":
        """``steps`` identical steps with noise multiplier ``sigma`` and rate ``sample_rate``."""
        return cls(
            (validation.positive("sigma", sigma),),
            (validation.probability("sample_rate", sample_rate),),
            (validation.positive_int("steps", steps),),
        )

    @classmethod
    def from_epochs(
        cls, sigma: float, dataset_size: int, batch_size: int, epochs: int
    ) -> "Schedule":
        """Uniform run with q = B/N and E·⌊N/B⌋ steps (see :func:`steps_for_epochs`)."""
        steps = steps_for_epochs(dataset_size, batch_size, epochs)
        return cls.uniform(sigma, batch_size / dataset_size, steps)

    @classmethod
    def from_runs(
        cls,
        sigmas: Sequence[float],
        sample_rates: Sequence[float] | float,
        counts: Sequence[int] | None = None,
    ) -> "Schedule":
        """Runs of steps; ``sample_rates`` may be one rate for all, ``counts`` defaults to 1 each.

        Consecutive runs with the same (σ, q) are merged.
        """
        sig = validation.array_in("sigma", sigmas, kind="positive")
        q = np.asarray(sample_rates, dtype=float)
        if q.ndim == 0:
            q = np.full(sig.shape, float(q))
        if q.shape != sig.shape:
            raise InputError(
                f"sample_rate must be one rate or one per run ({sig.size}), got {q.size} values"
            )
        validation.array_in("sample_rate", q, kind="probability")
        if counts is None:
            n = np.ones(sig.shape, dtype=np.int64)
        else:
            n = validation.array_in("steps", counts, kind="count")
            if n.shape != sig.shape:
                raise InputError(
                    f"steps must have one entry per run ({sig.size}), got {n.size}"
                )
            n = n.astype(np.int64)
        # Run-length compress consecutive equal steps.
        change = np.ones(sig.shape, dtype=bool)
        change[1:] = (sig[1:] != sig[:-1]) | (q[1:] != q[:-1])
        starts = np.flatnonzero(change)
        summed = np.add.reduceat(n, starts)
        return cls(
            tuple(float(x) for x in sig[starts]),
            tuple(float(x) for x in q[starts]),
            tuple(int(x) for x in summed),
        )

    @classmethod
    def from_steps(
        cls, sigmas: Sequence[float], sample_rates: Sequence[float] | float
    ) -> "Schedule":
        """One entry per step (per-step arrays), run-length compressed."""
        return cls.from_runs(sigmas, sample_rates, None)

    # ----- views --------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return int(sum(self.counts))

    @property
    def is_full_batch(self) -> bool:
        return all(q == 1.0 for q in self.sample_rates)

    def per_step(self) -> tuple[np.ndarray, np.ndarray]:
        """(σ_t, q_t) expanded to one entry per step."""
        n = np.asarray(self.counts)
        return np.repeat(np.asarray(self.sigmas), n), np.repeat(np.asarray(self.sample_rates), n)

    def merged(self) -> "Schedule":
        """Equal (σ, q) pairs anywhere in the run summed into one run each.

        Composition is commutative, so this has exactly the privacy of ``self``;
        accountants call it to compose each distinct mechanism once.
        """
        keys = np.stack([np.asarray(self.sigmas), np.asarray(self.sample_rates)], axis=1)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        counts = np.bincount(inverse.ravel(), weights=np.asarray(self.counts, dtype=float))
        return Schedule(
            tuple(float(x) for x in uniq[:, 0]),
            tuple(float(x) for x in uniq[:, 1]),
            tuple(int(round(c)) for c in counts),
            self.neighbouring,
        )

    def scaled(self, factor: float) -> "Schedule":
        """Every σ multiplied by ``factor`` (the calibration of a schedule's shape)."""
        f = validation.positive("scale", factor)
        return Schedule(
            tuple(s * f for s in self.sigmas), self.sample_rates, self.counts, self.neighbouring
        )

    def describe(self) -> str:
        """One line for tables and reports."""
        if len(self.sigmas) == 1:
            return (
                f"{self.total_steps} steps, sigma={self.sigmas[0]:.6g}, q={self.sample_rates[0]:.6g}"
                f" ({self.neighbouring})"
            )
        return (
            f"{self.total_steps} steps in {len(self.sigmas)} runs, sigma in "
            f"[{min(self.sigmas):.6g}, {max(self.sigmas):.6g}], q in "
            f"[{min(self.sample_rates):.6g}, {max(self.sample_rates):.6g}] ({self.neighbouring})"
        )
