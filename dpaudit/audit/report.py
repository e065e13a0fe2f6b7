"""A Markdown report of a mechanism audit, with its ROC curve and score histograms as PNGs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from dpaudit.audit.statistics import SCORE_LIMIT
from dpaudit.cli.output import write_atomic


def _md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if not math.isfinite(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def roc_points(in_scores: np.ndarray, out_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the rules "score ≥ t" for every distinct t, from (0, 0) to (1, 1)."""
    ins = np.sort(np.asarray(in_scores, dtype=float))
    outs = np.sort(np.asarray(out_scores, dtype=float))
    t = np.unique(np.concatenate([ins, outs]))[::-1]
    tpr = 1.0 - np.searchsorted(ins, t, side="left") / ins.size
    fpr = 1.0 - np.searchsorted(outs, t, side="left") / outs.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def plot_roc(in_scores, out_scores, claimed_epsilon: float, delta: float, title: str, path: Path) -> None:
    """ROC on log-log axes with the boundary an (ε, δ)-DP mechanism cannot cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr = roc_points(in_scores, out_scores)
    floor = 0.5 / max(len(in_scores), len(out_scores))
    x = np.geomspace(floor, 1.0, 400)
    e = math.exp(claimed_epsilon)
    bound = np.minimum.reduce([np.ones_like(x), e * x + delta, 1.0 - (1.0 - delta - x) / e])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.step(np.maximum(fpr, floor), np.maximum(tpr, floor), where="post", label="audit (in vs out)")
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
    fig.tight_layout()
    buf = _png(fig)
    plt.close(fig)
    write_atomic(path, buf)


def plot_histograms(in_scores, out_scores, title: str, path: Path) -> None:
    """Histograms of the in- and out-scores on shared bins (±inf scores drawn at the edges)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ins = np.asarray(in_scores, dtype=float)
    outs = np.asarray(out_scores, dtype=float)
    pooled = np.concatenate([ins, outs])
    regular = pooled[np.abs(pooled) < SCORE_LIMIT]
    lo, hi = (float(regular.min()), float(regular.max())) if regular.size else (-1.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    clip = lambda a: np.clip(a, lo - 0.02 * span, hi + 0.02 * span)  # noqa: E731
    bins = np.linspace(lo - 0.03 * span, hi + 0.03 * span, 51)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(clip(outs), bins=bins, alpha=0.6, label=f"canary out ({outs.size})")
    ax.hist(clip(ins), bins=bins, alpha=0.6, label=f"canary in ({ins.size})")
    ax.set_xlabel("score (higher = guess in)")
    ax.set_ylabel("runs")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = _png(fig)
    plt.close(fig)
    write_atomic(path, buf)


def _png(fig) -> bytes:
    import io

    b = io.BytesIO()
    fig.savefig(b, format="png", dpi=110)
    return b.getvalue()


def write_report(result, path: str | Path) -> list[Path]:
    """Write ``path`` (Markdown) and its PNGs beside it; return every file written.

    The plots are for the (scenario, statistic) whose valid bound is largest
    relative to its claim (the violation, if there is one).
    """
    md = Path(path)
    written: list[Path] = []
    r = result
    lines = [
        f"# Mechanism audit of `{r.mechanism}`",
        "",
        f"**Verdict:** {r.summary()}",
        "",
        f"Run: N = {r.config.dataset_size}, B = {r.config.batch_size}, {r.config.epochs} epochs, "
        f"claimed (eps, delta) = ({r.claimed_epsilon:.4g}, {r.config.delta:g}) "
        f"(PLD of the declared schedule; target eps {r.config.epsilon:g}), "
        f"noise multiplier {r.config.noise_multiplier:.4g}, clip norm {r.config.max_grad_norm:g}.",
        f"Audit: {r.runs} runs per side (each run's membership a fair coin), seed {r.seed}, "
        f"family-wise confidence {r.confidence:g} (weighted Bonferroni over scenarios x statistics x "
        "verdict estimators).",
        "",
        "## Scenarios",
        "",
        _md_table(
            ["scenario", "dataset and run", "why", "runs per side", "in / out / ref", "claimed eps", "best", "status"],
            [
                [
                    s.scenario.name, s.scenario.describe(), s.scenario.purpose, s.runs_per_side,
                    f"{s.n_in} / {s.n_out} / {s.n_ref}",
                    s.claimed_epsilon if s.claimed_epsilon is not None else float("nan"),
                    s.best_choice or "", s.skipped or "run",
                ]
                for s in r.scenarios
            ],
        ),
        "",
        "## Bounds",
        "",
        "`gdp` and `one_run_fdp` assume a Gaussian trade-off curve and never decide the verdict; "
        "`clopper_pearson` and `one_run` are assumption-free.",
        "",
        _md_table(
            ["scenario", "statistic", "estimator", "eps_lb", "ceiling", "claimed eps", "valid", "confidence", ""],
            [
                [
                    row.scenario, row.statistic, row.estimator, row.epsilon_lb, row.ceiling,
                    row.claimed_epsilon, "yes" if row.valid_for_verdict else "assumes GDP",
                    f"{row.confidence:.5g}", "VIOLATION" if row.violates else "",
                ]
                for row in r.rows
            ],
        ),
    ]
    top = r.strongest()
    if top is not None and (top.scenario, top.statistic) in r.scores:
        ins, outs = r.scores[(top.scenario, top.statistic)]
        title = f"{top.scenario} / {top.statistic}: {top.estimator} eps_lb {top.epsilon_lb:.3g} vs claimed {top.claimed_epsilon:.3g}"
        roc = md.with_name(md.stem + "-roc.png")
        hist = md.with_name(md.stem + "-scores.png")
        plot_roc(ins, outs, top.claimed_epsilon, r.config.delta, title, roc)
        plot_histograms(ins, outs, title, hist)
        written += [roc, hist]
        lines += [
            "",
            f"## Scores of {top.scenario} / {top.statistic}",
            "",
            f"The pair with the largest assumption-free bound relative to its claim. "
            f"The ROC curve may not cross the dashed line if the mechanism is "
            f"({top.claimed_epsilon:.3g}, {r.config.delta:g})-DP.",
            "",
            f"![ROC curve]({roc.name})",
            "",
            f"![Score histograms]({hist.name})",
        ]
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    write_atomic(md, "\n".join(lines) + "\n")
    return [md] + written
