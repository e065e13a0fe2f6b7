"""Input checks shared by the estimators, and the perfect scores their ceilings use."""

from __future__ import annotations

from typing import Any

import numpy as np

from dpaudit import validation
from dpaudit.errors import InputError


def check_scores(name: str, scores: Any) -> np.ndarray:
    """``scores`` as a 1-D float array without NaN (±inf allowed), or an InputError naming it."""
    try:
        arr = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a 1-D array of numbers") from None
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty; need at least one score")
    nan = np.isnan(arr)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        raise InputError(
            f"{name}[{i}] is NaN ({int(nan.sum())} NaN scores in total); "
            "scores must be numbers"
        )
    return arr


def check_common(
    in_scores: Any, out_scores: Any, delta: float, confidence: float
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Both score arrays, δ in (0, 1) and the confidence in (0, 1), checked."""
    ins = check_scores("in_scores", in_scores)
    outs = check_scores("out_scores", out_scores)
    delta = validation.open_unit("delta", delta)
    confidence = validation.open_unit("confidence", confidence)
    return ins, outs, delta, confidence


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def n_tied(ins: np.ndarray, outs: np.ndarray) -> int:
    """How many scores share their value with another score (reported in the details)."""
    _, counts = np.unique(np.concatenate([ins, outs]), return_counts=True)
    return int(counts[counts > 1].sum())


def perfect_scores(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Perfectly separated scores of the given sizes, with a wide gap between them.

    The gap keeps a threshold chosen at a midpoint on one split of the data
    perfect on the other split too.
    """
    m = n_in + n_out
    return np.arange(n_in, dtype=float) + 3 * m, np.arange(n_out, dtype=float)
