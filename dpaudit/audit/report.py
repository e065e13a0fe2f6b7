"""A Markdown report of a mechanism audit, with its ROC curve and score histograms as PNGs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence


from dpaudit.audit.statistics import SCORE_LIMIT
from dpaudit.cli.output import write_atomic
from dpaudit.report.figures import roc_loglog, score_histograms


def _md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if not math.isfinite(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


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
        "`gdp`, `gdp_parametric` and `one_run_fdp` assume Gaussian shapes (see the valid column) and never "
        "decide the verdict; "
        "`clopper_pearson` and `one_run` are assumption-free.",
        "",
        _md_table(
            ["scenario", "statistic", "estimator", "eps_lb", "ceiling", "claimed eps", "valid", "confidence", ""],
            [
                [
                    row.scenario, row.statistic, row.estimator, row.epsilon_lb, row.ceiling,
                    row.claimed_epsilon, "yes" if row.valid_for_verdict else row.estimate.assumption,
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
        roc_loglog(ins, outs, roc, title=title, claimed_epsilon=top.claimed_epsilon, delta=r.config.delta)
        score_histograms(ins, outs, hist, title=title, limit=SCORE_LIMIT)
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
