"""PNG figures for reports. Headless (Agg); each function writes one file and returns its path."""

from __future__ import annotations

import io
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


def roc_loglog(in_scores: Sequence[float], out_scores: Sequence[float], path: Path, *, title: str) -> Path:
    """ROC curve of the threshold attack 'score ≥ t ⇒ member', on log-log axes."""
    s_in = np.sort(np.asarray(in_scores, dtype=float))
    s_out = np.sort(np.asarray(out_scores, dtype=float))
    thresholds = np.unique(np.concatenate([s_in, s_out]))
    tpr = 1 - np.searchsorted(s_in, thresholds, side="left") / len(s_in)
    fpr = 1 - np.searchsorted(s_out, thresholds, side="left") / len(s_out)
    floor = 0.5 / max(len(s_in), len(s_out))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.loglog(np.maximum(fpr, floor), np.maximum(tpr, floor), color="tab:red", lw=1.5, label="attack")
    grid = np.logspace(np.log10(floor), 0, 50)
    ax.loglog(grid, grid, color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def score_histograms(in_scores: Sequence[float], out_scores: Sequence[float], path: Path, *, title: str) -> Path:
    """Overlaid histograms of the scores of runs with and without the canary."""
    s_in = np.asarray(in_scores, dtype=float)
    s_out = np.asarray(out_scores, dtype=float)
    both = np.concatenate([s_in, s_out])
    lo, hi = np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(s_out, bins=bins, alpha=0.55, label=f"canary out ({len(s_out)})", color="tab:blue")
    ax.hist(s_in, bins=bins, alpha=0.55, label=f"canary in ({len(s_in)})", color="tab:red")
    ax.set_xlabel("score")
    ax.set_ylabel("runs")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
