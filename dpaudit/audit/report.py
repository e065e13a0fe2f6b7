"""A Markdown report of a mechanism audit, with its ROC curve and score histograms as PNGs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence


from dpaudit.audit.statistics import SCORE_LIMIT
from dpaudit.cli.output import table, wrap, write_atomic
from dpaudit.report.figures import ROC_CAPTION, roc_loglog, score_histograms

ASSUMPTIONS = (
    "valid: the bound decides the verdict without assumptions (clopper_pearson, one_run); "
    "gdp and one_run_fdp assume a Gaussian trade-off curve and never decide it."
)


def design_line(result) -> str:
    """How many runs, and why the in/out counts are not exactly that."""
    return (
        f"design: {result.runs} planned runs per side (each run's canary is in or out by a fair coin, "
        f"so the in/out counts vary around it), plus runs without a canary for reference; "
        f"confidence {result.confidence:g} family-wise; seed {result.seed}"
    )


def _status(s) -> str:
    if s.skipped is None:
        return "run"
    return "not run" if s.skipped.startswith("not run") else "skipped"


def terminal_lines(result, sigma_note: str) -> list[str]:
    """What ``dpaudit audit`` prints: run, design, two tables, notes and the verdict, within 100 columns."""
    c = result.config
    lines = [
        f"mechanism: {result.mechanism}",
        wrap(f"run: N={c.dataset_size}, B={c.batch_size}, epochs={c.epochs}, steps={c.steps}, "
             f"q={c.sample_rate:.6g}, sigma={c.noise_multiplier:.6g} ({sigma_note}), C={c.max_grad_norm:g}",
             indent="    "),
        wrap(f"claimed epsilon: {result.claimed_epsilon:.4f} at delta {c.delta:g} (pld of the noise the "
             "mechanism declares on this run; each scenario is held to the claim on its own run)", indent="    "),
        wrap(design_line(result), indent="    "),
    ]
    if result.results_path:
        lines.append(f"results file: {result.results_path}")
    lines += ["", "scenarios:", table(
        [{"scenario": s.scenario.name, "runs/side": s.runs_per_side, "in/out/ref": f"{s.n_in}/{s.n_out}/{s.n_ref}",
          "claimed eps": s.claimed_epsilon, "status": _status(s)} for s in result.scenarios],
        {"claimed eps": ".4f"},
    )]
    for s in result.scenarios:
        what = s.scenario.describe() + (f". {s.skipped}" if s.skipped else "")
        lines.append(wrap(what, indent="    ", first=f"  {s.scenario.name}: "))
    if result.rows:
        lines += ["", "bounds:", table(
            [{"scenario": r.scenario, "statistic": r.statistic, "estimator": r.estimator, "eps_lb": r.epsilon_lb,
              "ceiling": r.ceiling, "claimed": r.claimed_epsilon, "valid": "yes" if r.valid_for_verdict else "no",
              "conf.": r.confidence, "": "VIOLATION" if r.violates else ""} for r in result.rows],
            {"eps_lb": ".4f", "ceiling": ".4f", "claimed": ".4f", "conf.": ".5f"},
        ), wrap(ASSUMPTIONS + " conf.: the confidence each bound was computed at (its share of the "
                "family-wise level).", indent="  ", first="  ")]
    lines.append("")
    lines += [wrap(note, indent="      ", first="note: ") for note in result.notes]
    lines.append(f"verdict: {result.verdict}")
    lines.append(wrap(result.summary(), indent="  ", first="  "))
    return lines


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
        f"**Verdict: {r.verdict}.** {r.summary()}",
        "",
        f"Run: N = {r.config.dataset_size}, B = {r.config.batch_size}, {r.config.epochs} epochs, "
        f"claimed (eps, delta) = ({r.claimed_epsilon:.4g}, {r.config.delta:g}) "
        f"(PLD of the declared schedule; target eps {r.config.epsilon:g}), "
        f"noise multiplier {r.config.noise_multiplier:.4g}, clip norm {r.config.max_grad_norm:g}.",
        f"Audit: {r.runs} planned runs per side (each run's canary in or out by a fair coin, so the "
        f"in/out counts vary), seed {r.seed}, family-wise confidence {r.confidence:g} (weighted Bonferroni "
        "over scenarios x statistics x verdict estimators).",
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
            f"The pair with the largest assumption-free bound relative to its claim "
            f"(claimed ({top.claimed_epsilon:.3g}, {r.config.delta:g})). The shaded band is the 95 % "
            f"Clopper–Pearson range of the measured curve at each threshold. {ROC_CAPTION}",
            "",
            f"![ROC curve]({roc.name})",
            "",
            f"![Score histograms]({hist.name})",
        ]
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    write_atomic(md, "\n".join(lines) + "\n")
    return [md] + written
