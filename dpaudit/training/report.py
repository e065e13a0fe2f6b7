"""Reports of a training audit: the ``--json`` file and a Markdown page with its figures."""

from __future__ import annotations

import math
from pathlib import Path

from dpaudit.cli.output import dumps, write_atomic
from dpaudit.report.figures import ROC_CAPTION, roc_loglog, score_histograms
from dpaudit.training.training_audit import TrainingAuditResult
from dpaudit.verdicts import audit_verdict, can_detect


def write_json(result: TrainingAuditResult, path: str | Path) -> Path:
    """``result.to_dict()`` as strict JSON (NaN/inf → null), written atomically."""
    p = Path(path)
    write_atomic(p, dumps(result.to_dict()) + "\n")
    return p


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def training_verdict(result: TrainingAuditResult) -> str:
    """violation, no violation, or inconclusive when no valid estimator's ceiling exceeds the claim."""
    return audit_verdict(result.violation, can_detect(
        (e.ceiling, result.claimed_epsilon) for e in result.estimates.values() if e.valid_for_verdict))


def markdown(result: TrainingAuditResult, *, roc: str | None = None, histogram: str | None = None) -> str:
    """The report as Markdown; ``roc``/``histogram`` are figure paths relative to the page."""
    cfg = result.config
    acc = result.accuracy
    verdict = f"**{training_verdict(result)}**"
    lines = [
        f"# Training audit of `{result.mechanism}`",
        "",
        f"Verdict: {verdict} (confidence {result.confidence:g}). {result.summary()}.",
        "",
        f"Claimed ε = {result.claimed_epsilon:.4f} at δ = {cfg.delta:g}: the PLD ε (add/remove one example, "
        "Poisson sampling) of the noise multipliers the mechanism declares (`get_effective_sigma`) over the run.",
        "",
        "## Run",
        "",
        f"- dataset `{result.dataset}`, N = {cfg.dataset_size}, expected batch {cfg.batch_size} "
        f"(q = {cfg.sample_rate:.4g}), {cfg.epochs} epochs = {cfg.steps} steps",
        f"- σ handed to the mechanism {cfg.noise_multiplier:.4g}, clip norm C = {cfg.max_grad_norm:g}, "
        f"model with {cfg.n_params} parameters, SGD lr {result.lr:g}, momentum {result.momentum:g}",
        f"- {result.mode} audit: {result.canary_description}",
        f"- {result.models} model{'s' if result.models != 1 else ''} "
        f"({result.in_scores.size} canary observations in, {result.out_scores.size} out), "
        f"{result.models_at_once} at once on `{result.device}` ({result.backend} backend), mechanism calls: "
        f"{result.calls}, seed {result.seed}",
        f"- test accuracy of the trained models: mean {_fmt(100 * acc['mean'], 1)} %, "
        f"min {_fmt(100 * acc['min'], 1)} %, max {_fmt(100 * acc['max'], 1)} %",
        f"- {result.seconds:.1f} s, {_fmt(result.models_per_second, 3)} models/s "
        f"({_fmt(result.model_epochs_per_second, 3)} model-epochs/s) for the {result.models_trained} models trained now",
        "",
        "## Estimates",
        "",
        "| statistic | estimator | ε lower bound | ceiling of this design | confidence | valid for a verdict |",
        "|---|---|---:|---:|---:|---|",
    ]
    for stat, row in result.statistics.items():
        for name, e in row.items():
            valid = "yes" if e.valid_for_verdict else (e.assumption or "no")
            lines.append(f"| {stat} | {name} | {_fmt(e.epsilon_lb)} | {_fmt(e.ceiling)} | {e.confidence:.4g} | {valid} |")
    lines += [
        "",
        "The ceiling is what the same estimator would certify from a perfect attack with this many "
        "runs or canaries: a design whose ceiling is below the claim cannot find a violation.",
    ]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    if roc or histogram:
        lines += ["", "## Scores", ""]
        if roc:
            lines += [f"![ROC of the threshold attack]({roc})", "",
                      f"The shaded band is the 95 % Clopper–Pearson range of the measured curve. {ROC_CAPTION}", ""]
        if histogram:
            lines.append(f"![canary scores]({histogram})")
    return "\n".join(lines) + "\n"


def write_report(result: TrainingAuditResult, path: str | Path) -> list[Path]:
    """Write ``path`` (Markdown) with ``<stem>-roc.png`` and ``<stem>-scores.png`` beside it; return the files."""
    md = Path(path)
    title = f"{Path(result.mechanism).name}: {result.mode}, {result.canary_kind} canaries"
    roc = roc_loglog(result.in_scores, result.out_scores, md.with_name(f"{md.stem}-roc.png"), title=title,
                     claimed_epsilon=result.claimed_epsilon, delta=result.config.delta)
    hist = score_histograms(result.in_scores, result.out_scores, md.with_name(f"{md.stem}-scores.png"), title=title)
    write_atomic(md, markdown(result, roc=roc.name, histogram=hist.name))
    return [md, roc, hist]
