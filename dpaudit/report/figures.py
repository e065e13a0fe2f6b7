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


def sigma_over_run(
    declared: Sequence[float],
    measured: Sequence[float],
    path: Path,
    *,
    measured_lower: Sequence[float] | None = None,
    title: str = "noise multiplier per step",
) -> Path:
    """Declared σ_t and measured σ̂_t against the step index."""
    steps = np.arange(len(declared))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(steps, declared, label="declared σ_t (get_effective_sigma)", color="tab:blue", lw=2)
    ax.plot(steps, measured, label="measured σ̂_t (probe)", color="tab:red", lw=1, alpha=0.85)
    if measured_lower is not None:
        ax.fill_between(steps, measured_lower, measured, color="tab:red", alpha=0.15,
                        label="measurement tolerance")
    ax.set_xlabel("step")
    ax.set_ylabel("noise multiplier")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def roc_loglog(
    in_scores: Sequence[float],
    out_scores: Sequence[float],
    path: Path,
    *,
    title: str,
    claimed_epsilon: float | None = None,
    delta: float = 0.0,
) -> Path:
    """ROC of the rules 'score ≥ t ⇒ member' on log-log axes.

    With ``claimed_epsilon``, also the boundary that no attack on an
    (ε, δ)-DP mechanism can cross: TPR ≤ min(1, e^ε·FPR + δ, 1 − (1 − δ − FPR)/e^ε).
    """
    ins = np.sort(np.asarray(in_scores, dtype=float))
    outs = np.sort(np.asarray(out_scores, dtype=float))
    t = np.unique(np.concatenate([ins, outs]))[::-1]
    tpr = np.concatenate([[0.0], 1.0 - np.searchsorted(ins, t, side="left") / ins.size])
    fpr = np.concatenate([[0.0], 1.0 - np.searchsorted(outs, t, side="left") / outs.size])
    floor = 0.5 / max(ins.size, outs.size)
    x = np.geomspace(floor, 1.0, 400)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.step(np.maximum(fpr, floor), np.maximum(tpr, floor), where="post", label="attack (in vs out)")
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
    ax.legend(loc="lower right", fontsize=8)
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
