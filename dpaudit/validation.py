"""Input checks whose messages name the value and the allowed range.

Modelled on jax_privacy's ``_validate`` helpers: one function per kind of
range, raising :class:`dpaudit.errors.InputError` so that the CLI can print
the message as a single line and exit with code 2.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from dpaudit.errors import InputError


def _as_finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(v):
        raise InputError(f"{name} must be a number, got NaN")
    return v


def nonnegative(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and >= 0."""
    v = _as_finite(name, value)
    if not (v >= 0 and math.isfinite(v)):
        raise InputError(f"{name} must be >= 0 and finite, got {value}")
    return v


def positive(name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and > 0."""
    v = _as_finite(name, value)
    if not (v > 0 and math.isfinite(v)):
        raise InputError(f"{name} must be > 0 and finite, got {value}")
    return v


def probability(name: str, value: float) -> float:
    """A sampling rate: in (0, 1]."""
    v = _as_finite(name, value)
    if not 0 < v <= 1:
        raise InputError(f"{name} must be in (0, 1], got {value}")
    return v


def open_unit(name: str, value: float) -> float:
    """A δ or a significance level: in (0, 1)."""
    v = _as_finite(name, value)
    if not 0 < v < 1:
        raise InputError(f"{name} must be in (0, 1), got {value}")
    return v


def positive_int(name: str, value: int) -> int:
    """An integer ≥ 1 (a step count, a dataset size)."""
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise InputError(f"{name} must be an integer >= 1, got {value}")
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an integer >= 1, got {value!r}") from None
    if v < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value}")
    return v


def array_in(name: str, values: Iterable[float], *, kind: str) -> np.ndarray:
    """Check a per-step array: ``kind`` is 'positive', 'probability' or 'count'.

    The message names the first offending step so a user can find it in their file.
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
    if kind == "positive":
        bad = ~(np.isfinite(arr) & (arr > 0))
        allowed = "> 0 and finite"
    elif kind == "probability":
        bad = ~((arr > 0) & (arr <= 1))
        allowed = "in (0, 1]"
    elif kind == "count":
        bad = ~(np.isfinite(arr) & (arr >= 1) & (arr == np.round(arr)))
        allowed = "an integer >= 1"
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name}[{i}] must be {allowed}, got {arr[i]}")
    return arr
