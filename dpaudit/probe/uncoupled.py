"""σ̂ from independent draws, when the probe cannot couple the mechanism's randomness.

Without coupling the noise does not cancel, so σ̂_t = noise_t / shift_t is
estimated from repeated draws, in two factors measured differently:

* the **noise level** of every step, from a few draws of the step's batch
  (thousands of coordinates each, so a few draws already give a percent),
  normalised by what the step declares (σ_t times its sensitivity) and pooled
  over windows of :data:`NOISE_WINDOW` consecutive steps when those agree
  (χ² test on the log variances; a window that disagrees keeps per-step values);
* the **shift** one neighbour makes, normalised by the declared sensitivity,
  from thousands of draws with and without the neighbour, projected on the
  neighbour's direction in each parameter tensor, at a few spread steps and
  pooled over them when they agree (otherwise the largest is used).

Both come with confidence limits at the probe's family-wise level
(:mod:`dpaudit.probe.confidence`): the noise limits Bonferroni-corrected over
the steps, the shift limits over the neighbours, so every step's σ̂ limits
hold together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Consecutive steps whose (normalised) noise levels are pooled when they agree.
NOISE_WINDOW = 32
#: p-value below which a window's (or the shift's) steps are not pooled.
HOMOGENEITY_P_VALUE = 1e-4


def chi2_homogeneous(values: np.ndarray, variances: np.ndarray) -> bool:
    """Whether independent estimates with known variances agree with one common value (p > threshold)."""
    from scipy.stats import chi2

    if values.size < 2 or np.any(variances <= 0):
        return True
    w = 1.0 / variances
    mean = float(np.sum(w * values) / np.sum(w))
    stat = float(np.sum(w * (values - mean) ** 2))
    return bool(chi2.sf(stat, values.size - 1) > HOMOGENEITY_P_VALUE)


def bartlett(variances: np.ndarray, dof: np.ndarray) -> tuple[float, int]:
    """Bartlett's statistic for equal variances of Gaussian samples, and its χ² degrees of freedom.

    ``variances[i]`` estimates a variance with ``dof[i]`` degrees of freedom.
    The correction factor keeps the χ² approximation calibrated for small
    degrees of freedom (a 10-coordinate bias tensor drawn 4 times has 30),
    where the plain log-variance statistic is skewed; summed over thousands of
    steps, that skew alone would reject a correct mechanism.
    """
    v = np.asarray(variances, dtype=float)
    d = np.asarray(dof, dtype=float)
    k = v.size
    if k < 2:
        return 0.0, 0
    total = float(np.sum(d))
    pooled = float(np.sum(d * v)) / total
    stat = total * math.log(pooled) - float(np.sum(d * np.log(v)))
    correction = 1.0 + (float(np.sum(1.0 / d)) - 1.0 / total) / (3.0 * (k - 1))
    return stat / correction, k - 1


def _agree(parts: Sequence[tuple[float, int]]) -> bool:
    from scipy.stats import chi2

    stat = sum(p[0] for p in parts)
    df = sum(p[1] for p in parts)
    return df == 0 or bool(chi2.sf(stat, df) > HOMOGENEITY_P_VALUE)


def pool_over_tensors(var: np.ndarray, dof: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """One noise level for every parameter tensor of every step, when that fits all steps.

    ``var`` and ``dof`` are ``[steps, J]``. Bartlett's test per step, summed
    over the steps; when they agree, each step's variance becomes its pooled
    value over the tensors, with the summed degrees of freedom.
    """
    var = np.asarray(var, dtype=float)
    dof = np.asarray(dof, dtype=float)
    if var.shape[1] < 2 or np.any(var <= 0) or not _agree([bartlett(v, d) for v, d in zip(var, dof)]):
        return var, dof, False
    total = dof.sum(axis=1, keepdims=True)
    pooled = (dof * var).sum(axis=1, keepdims=True) / total
    return np.broadcast_to(pooled, var.shape).copy(), np.broadcast_to(total, dof.shape).copy(), True


def pool_windows(
    steps: Sequence[int], var: np.ndarray, dof: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Pool per-step noise variances over windows of consecutive ``steps``.

    ``var`` and ``dof`` are ``[len(steps), J]`` (per parameter tensor);
    ``scale`` is each step's declared noise std in output-free units
    (σ_t times the declared sensitivity), so that a correct mechanism has
    the same ``var / scale²`` at every step. A window is pooled when its steps
    agree (Bartlett's test per tensor, summed over the tensors). Returns the
    per-step variances after pooling, their degrees of freedom, and the first
    step of every window whose steps disagreed (kept unpooled).
    """
    var = np.asarray(var, dtype=float)
    dof = np.asarray(dof, dtype=float)
    out_var, out_dof = var.copy(), dof.copy()
    split: list[int] = []
    norm = (np.asarray(scale, dtype=float) ** 2)[:, None]
    for start in range(0, len(steps), NOISE_WINDOW):
        sl = slice(start, start + NOISE_WINDOW)
        v, d = var[sl] / norm[sl], dof[sl]
        if v.shape[0] < 2 or np.any(v <= 0):
            continue
        # Tensors already pooled into one level carry the same numbers: test it once.
        columns = 1 if np.all(v == v[:, :1]) else v.shape[1]
        if not _agree([bartlett(v[:, j], d[:, j]) for j in range(columns)]):
            split.append(int(steps[start]))
            continue
        pooled = np.sum(d * v, axis=0) / np.sum(d, axis=0)
        out_var[sl] = pooled[None, :] * norm[sl]
        out_dof[sl] = np.sum(d, axis=0)[None, :]
    return out_var, out_dof, split


@dataclass(frozen=True)
class ShiftMeasurement:
    """One sensitivity step: per neighbour and tensor, the projected mean shift and its standard error."""

    step: int
    sensitivity: float          # declared sensitivity at the step
    shift: np.ndarray           # [C, J] mean(out(D')·u_j) − mean(out(D)·u_j)
    shift_se: np.ndarray        # [C, J]
    valid: np.ndarray           # [C] whether the neighbour was measured at this step


@dataclass(frozen=True)
class ShiftEstimate:
    """A squared shift per tensor, in units of the declared sensitivity, with its variance.

    ``z`` is the number of standard errors its confidence limits take: one
    interval per neighbour when pooled over steps, one per (neighbour, step)
    when the steps disagreed and each is kept.
    """

    canary: int
    square: np.ndarray          # [J], unbiased
    square_var: np.ndarray      # [J]
    z: float
    step: int | None = None     # None: pooled over the steps


def pool_shifts(
    measurements: Sequence[ShiftMeasurement], z_pooled: float, z_each: float
) -> tuple[list[ShiftEstimate], list[int]]:
    """Pool each neighbour's squared normalised shifts over the steps where they agree.

    (p² − se²)/c² is unbiased for the squared shift in units of the declared
    sensitivity c. A neighbour whose steps agree (χ²) gets one estimate, their
    mean; one whose steps disagree (its shift depends on the batch, like
    removing the largest example, or on the step) keeps one estimate per step,
    so that the largest is not averaged away. Returns the estimates and the
    neighbours that were not pooled.
    """
    p = np.stack([m.shift for m in measurements])            # [S, C, J]
    se = np.stack([m.shift_se for m in measurements])
    c = np.array([m.sensitivity for m in measurements])[:, None, None]
    valid = np.stack([m.valid for m in measurements])         # [S, C]
    x = (p ** 2 - se ** 2) / c ** 2
    xv = (4.0 * p ** 2 * se ** 2 + 2.0 * se ** 4) / c ** 4
    out: list[ShiftEstimate] = []
    split: list[int] = []
    for ci in range(p.shape[1]):
        rows = np.flatnonzero(valid[:, ci])
        if rows.size == 0:
            continue
        xs, vs = x[rows, ci], xv[rows, ci]
        if chi2_homogeneous(xs.sum(axis=1), vs.sum(axis=1)):
            out.append(ShiftEstimate(ci, xs.mean(axis=0), vs.sum(axis=0) / rows.size ** 2, z_pooled))
        else:
            split.append(ci)
            out.extend(ShiftEstimate(ci, xs[i], vs[i], z_each, measurements[r].step) for i, r in enumerate(rows))
    return out, split


def sigma_bounds(
    noise_var: np.ndarray, noise_dof: np.ndarray, declared_scale: float, declared_sigma: float,
    shifts: Sequence[ShiftEstimate], z_noise: float,
) -> tuple[float, float, float, float, int, float]:
    """σ̂ of one step from its noise variances ``[J]`` and the shift estimates.

    For each estimate, (σ_t/σ̂)² = Σ_j shift²_j / n²_j with n_j the step's noise
    std in units of the declared noise scale σ_t·c_t. Its limits combine the
    shift's (``estimate.z`` standard errors) and the noise level's (``z_noise``
    standard errors of the step's pooled noise std). σ̂ is the smallest over
    the estimates, and its limits the smallest of theirs.
    Returns (σ̂, lower, upper, relative standard error, worst neighbour, ‖Δ‖/c).
    """
    n2 = np.asarray(noise_var, dtype=float) / declared_scale ** 2
    rel_noise = float(np.max(1.0 / np.sqrt(2.0 * np.asarray(noise_dof, dtype=float))))
    rows = []
    for est in shifts:
        sq, sq_var = est.square, est.square_var
        with np.errstate(divide="ignore", invalid="ignore"):
            q = float(np.sum(np.where(n2 > 0, sq / n2, np.where(sq > 0, math.inf, 0.0))))
            q_se = float(np.sqrt(np.sum(np.where(n2 > 0, sq_var / n2 ** 2, 0.0))))
        q_hi, q_lo = q + est.z * q_se, q - est.z * q_se
        ratio = math.inf if q <= 0 else 1.0 / math.sqrt(q)
        lower = math.inf if q_hi <= 0 else max(1.0 - z_noise * rel_noise, 0.0) / math.sqrt(q_hi)
        upper = math.inf if q_lo <= 0 else (1.0 + z_noise * rel_noise) / math.sqrt(q_lo)
        rel = math.hypot(rel_noise, 0.5 * q_se / q) if 0 < q < math.inf else 0.0
        rows.append((ratio, lower, upper, rel, est.canary, math.sqrt(max(float(np.sum(sq)), 0.0))))
    if not rows:
        return math.inf, math.inf, math.inf, 0.0, -1, 0.0
    ratio, _, _, rel, worst, norm_shift = min(rows, key=lambda r: r[0])
    lower = min(r[1] for r in rows)
    upper = min(r[2] for r in rows)
    s = declared_sigma
    return ratio * s, lower * s, upper * s, rel, worst, norm_shift
