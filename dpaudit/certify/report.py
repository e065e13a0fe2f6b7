"""The Markdown report of ``certify``, with a PNG of declared vs measured σ_t."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dpaudit.accountants import EpsilonResult
from dpaudit.certify.run import CertifyResult
from dpaudit.cli.output import wrap, write_atomic
from dpaudit.probe.confidence import SIGMA_TOLERANCE
from dpaudit.report.figures import sigma_over_run

LIMITS = (
    "A `pass` means that no violation was found by these checks, not a proof of privacy: the "
    "probe drives the mechanism with synthetic gradients and a fixed set of worst-case "
    "neighbours, and a mechanism could behave differently on other data. See docs/certify.md."
)


def accounting_table(result: CertifyResult) -> pd.DataFrame:
    """One row per accountant: ε of the declared and of the measured schedule."""
    def value(r):
        return f"{r.epsilon:.4f}" if isinstance(r, EpsilonResult) else f"failed: {r}"

    rows = []
    for name in result.declared:
        d = result.declared[name]
        kind = "approximation" if isinstance(d, EpsilonResult) and not d.is_upper_bound else "upper bound"
        rows.append({
            "accountant": name,
            "declared epsilon": value(d),
            "measured epsilon": value(result.measured[name]),
            "kind": kind,
        })
    return pd.DataFrame(rows)


def _epsilons(results) -> str:
    """'rdp 3.31, pld 2.99, prv 3.00, gdp 2.61 (approximation)'."""
    parts = []
    for name, r in results.items():
        if not isinstance(r, EpsilonResult):
            parts.append(f"{name} failed")
        else:
            parts.append(f"{name} {r.epsilon:.4f}" + ("" if r.is_upper_bound else " (approximation)"))
    return ", ".join(parts)


def summary_lines(result: CertifyResult) -> list[str]:
    """The summary of the run and the findings (the terminal's and the report's top)."""
    c = result.config
    p = result.probe
    lines = [
        f"mechanism: {result.spec}",
        f"run: N={c.dataset_size}, B={c.batch_size}, {c.epochs} epochs = {c.steps} steps, q={c.sample_rate:.6g}, "
        f"C={c.max_grad_norm:g}, sigma={c.noise_multiplier:.6g} ({result.noise_multiplier_source})",
        f"budget: epsilon {c.epsilon:g}, delta {c.delta:g} ({result.declared_schedule.neighbouring})",
        f"declared: {result.declared_schedule.describe()}",
        f"epsilon of the declared schedule: {_epsilons(result.declared)}",
        f"probe: {p.steps} steps, coupling {p.coupling}, sigma_hat/declared in "
        f"[{p.sigma_ratio.min():.4f}, {p.sigma_ratio.max():.4f}], {len(p.leaks)} state leak(s), "
        f"batch-size dependence: {'yes' if p.batch_size_dependence else 'no'} ({p.seconds:.1f} s)",
    ]
    if p.leak_check != "done":
        lines.append(f"leak check: {p.leak_check}")
    lines.extend(f"note: {n}" for n in p.notes)
    if result.audit is not None:
        lines.append(f"audit: {result.audit.summary()}")
    return lines


def terminal_lines(result: CertifyResult) -> list[str]:
    """What ``dpaudit certify`` prints: the summary, the verdict and its numbered reasons, wrapped."""
    lines = [wrap(line, indent="    ") for line in summary_lines(result)]
    lines.append(f"verdict: {result.verdict}")
    for i, reason in enumerate(result.reasons, 1):
        lines.append(wrap(reason, indent="     ", first=f"  {i}. "))
    return lines


def write_report(result: CertifyResult, path: Path) -> Path:
    """Write ``path`` (Markdown) and ``<stem>_sigma.png`` beside it."""
    path = Path(path)
    png = path.with_name(f"{path.stem}_sigma.png")
    sigma_over_run(
        result.probe.declared_sigma, result.probe.sigma_hat, png,
        measured_lower=result.probe.sigma_hat_lower, tolerance=SIGMA_TOLERANCE,
        title=f"{Path(result.spec.split(':')[0]).name}: declared vs measured noise multiplier",
    )
    verdict = result.verdict.upper()
    parts = [
        f"# dpaudit certify: {verdict}",
        "",
        *[f"- {line}" for line in summary_lines(result)],
        "",
        "## Verdict",
        "",
        f"**{result.verdict}**" + ("" if result.reasons else ": every check passed."),
        "",
        *[f"{i}. {r}" for i, r in enumerate(result.reasons, 1)],
        "",
        "## Accounting",
        "",
        f"ε at δ = {result.config.delta:g}, {result.declared_schedule.neighbouring}. "
        "The verdict uses RDP, PLD and PRV's upper bound; GDP is a central-limit approximation.",
        "",
        accounting_table(result).to_markdown(index=False),
        "",
        "## Declared vs measured noise",
        "",
        f"![declared vs measured sigma]({png.name})",
        "",
        "The probe measured the noise scale of every step (two coupled calls with different random "
        "draws) and the largest change one added or removed example can make (coupled draws, so the "
        "noise cancels; without coupling, repeated independent draws); σ̂_t is their ratio. The shaded "
        f"band is certify's tolerance, ±{100 * SIGMA_TOLERANCE:g} % around the declared σ_t: a step agrees "
        "while the lower confidence limit of σ̂_t (dotted) stays above the band's lower edge, and has less "
        "noise than declared where even σ̂_t's upper limit is below the declared line.",
        "",
        "## Limits",
        "",
        LIMITS,
        "",
    ]
    if result.audit is not None:
        parts[-4:-4] = [
            "## Canary audit (gradient space)", "",
            result.audit.summary(), "",
            result.audit.table().to_markdown(index=False, floatfmt=".4f"), "",
        ]
    write_atomic(path, "\n".join(parts))
    return path
