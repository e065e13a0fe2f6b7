"""PNG figures for reports. Headless (Agg); each function writes one file and returns its path."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dpaudit.cli.output import write_atomic  # noqa: E402


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return path


def _caption(fig, text: str) -> None:
    """A caption under the axes, wrapped to the figure's width."""
    import textwrap

    width = int(fig.get_figwidth() * 13)
    fig.text(0.01, -0.02, textwrap.fill(text, width), ha="left", va="top", fontsize=7.5, color="0.25")


def sigma_over_run(
    declared: Sequence[float],
    measured: Sequence[float],
    path: Path,
    *,
    measured_lower: Sequence[float] | None = None,
    tolerance: float | None = None,
    title: str = "noise multiplier per step",
) -> Path:
    """Declared σ_t and measured σ̂_t against the step index.

    ``measured_lower`` is the lower confidence limit of σ̂_t; ``tolerance`` the
    relative tolerance of certify's rule (a step agrees when that limit is at
    least (1 − tolerance)·σ_t): the band (1 ± tolerance)·σ_t is drawn around
    the declared line.
    """
    steps = np.arange(len(declared))
    declared = np.asarray(declared, dtype=float)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if tolerance is not None:
        ax.fill_between(steps, declared * (1 - tolerance), declared * (1 + tolerance), color="tab:blue",
                        alpha=0.18, lw=0, label=f"declared ± {100 * tolerance:g} % (certify's tolerance)")
    ax.plot(steps, declared, label="declared σ_t (get_effective_sigma)", color="tab:blue", lw=2)
    ax.plot(steps, measured, label="measured σ̂_t (probe)", color="tab:red", lw=1, alpha=0.85)
    if measured_lower is not None:
        ax.plot(steps, measured_lower, label="lower confidence limit of σ̂_t", color="tab:red", lw=1, ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel("noise multiplier")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    if tolerance is not None:
        _caption(fig, "A step agrees with its declared σ_t while the lower confidence limit of σ̂_t (dotted) "
                      "stays inside or above the shaded band; it has less noise than declared where even the "
                      "measured line's upper limit falls below the declared line. Above the band the mechanism "
                      "adds more noise than it declares, which costs no privacy.")
    return _save(fig, path)


#: What crossing the limit line means, under the ROC figure and in the reports.
ROC_CAPTION = (
    "No attack on an (eps, delta)-DP mechanism has a true ROC curve above the dashed line. The claim is "
    "contradicted only where the band's lower edge (dotted: TPR at its lower and FPR at its upper "
    "Clopper-Pearson limit) rises above the dashed line; the measured curve alone crossing it is sampling "
    "noise. The verdict comes from the bounds in the report's table, not from this picture."
)


def _cp_interval(k: np.ndarray, n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper–Pearson interval of k successes out of n, at each k."""
    from scipy.stats import beta

    a = (1 - confidence) / 2
    k = np.asarray(k, dtype=float)
    lo = np.where(k > 0, beta.ppf(a, np.maximum(k, 1), n - k + 1), 0.0)
    hi = np.where(k < n, beta.ppf(1 - a, k + 1, np.maximum(n - k, 1)), 1.0)
    return lo, hi


def roc_loglog(
    in_scores: Sequence[float],
    out_scores: Sequence[float],
    path: Path,
    *,
    title: str,
    claimed_epsilon: float | None = None,
    delta: float = 0.0,
    band_confidence: float = 0.95,
) -> Path:
    """ROC of the rules 'score ≥ t ⇒ member' on log-log axes, with Clopper–Pearson bands.

    The band at each threshold spans TPR and FPR over their two-sided
    ``band_confidence`` Clopper–Pearson intervals (pointwise). With
    ``claimed_epsilon``, also the boundary that no attack on an
    (ε, δ)-DP mechanism can cross: TPR ≤ min(1, e^ε·FPR + δ, 1 − (1 − δ − FPR)/e^ε).
    """
    ins = np.sort(np.asarray(in_scores, dtype=float))
    outs = np.sort(np.asarray(out_scores, dtype=float))
    t = np.unique(np.concatenate([ins, outs]))[::-1]
    k_in = np.concatenate([[0], ins.size - np.searchsorted(ins, t, side="left")])
    k_out = np.concatenate([[0], outs.size - np.searchsorted(outs, t, side="left")])
    tpr, fpr = k_in / ins.size, k_out / outs.size
    tpr_lo, tpr_hi = _cp_interval(k_in, ins.size, band_confidence)
    fpr_lo, fpr_hi = _cp_interval(k_out, outs.size, band_confidence)
    floor = 0.5 / max(ins.size, outs.size)
    x = np.geomspace(floor, 1.0, 400)

    def clip(a: np.ndarray) -> np.ndarray:
        return np.maximum(a, floor)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    # The band: from the optimistic corner (low FPR, high TPR) to the pessimistic one.
    band_x = np.concatenate([clip(fpr_lo), clip(fpr_hi)[::-1]])
    band_y = np.concatenate([clip(tpr_hi), clip(tpr_lo)[::-1]])
    ax.fill(band_x, band_y, color="tab:blue", alpha=0.15, lw=0,
            label=f"{band_confidence:.0%} Clopper–Pearson band")
    ax.step(clip(fpr_hi), clip(tpr_lo), where="post", color="tab:blue", lw=0.8, ls=":",
            label="lower edge (TPR low, FPR high)")
    ax.step(clip(fpr), clip(tpr), where="post", color="tab:blue", label="attack (in vs out)")
    if claimed_epsilon is not None:
        e = math.exp(claimed_epsilon)
        bound = np.minimum.reduce([np.ones_like(x), e * x + delta, 1.0 - (1.0 - delta - x) / e])
        ax.plot(x, bound, "r--", label=f"limit of ({claimed_epsilon:.3g}, {delta:g})-DP")
    ax.plot(x, x, color="0.6", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.3)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    if claimed_epsilon is not None:
        _caption(fig, ROC_CAPTION)
    return _save(fig, path)


def score_histograms(
    in_scores: Sequence[float], out_scores: Sequence[float], path: Path, *, title: str, limit: float = math.inf
) -> Path:
    """Histograms of the in- and out-scores on shared bins; scores beyond ``limit`` drawn at the edges."""
    ins = np.asarray(in_scores, dtype=float)
    outs = np.asarray(out_scores, dtype=float)
    pooled = np.concatenate([ins, outs])
    regular = pooled[np.isfinite(pooled) & (np.abs(pooled) < limit)]
    lo, hi = (float(regular.min()), float(regular.max())) if regular.size else (-1.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    bins = np.linspace(lo - 0.03 * span, hi + 0.03 * span, 51)

    def edge(a: np.ndarray) -> np.ndarray:
        return np.clip(a, lo - 0.02 * span, hi + 0.02 * span)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(edge(outs), bins=bins, alpha=0.6, label=f"canary out ({outs.size})")
    ax.hist(edge(ins), bins=bins, alpha=0.6, label=f"canary in ({ins.size})")
    ax.set_xlabel("score (higher = guess in)")
    ax.set_ylabel("runs")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
