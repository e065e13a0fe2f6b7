"""The one result type every estimator returns, and the labels of what each assumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from dpaudit.audit.estimators.inputs import n_tied, perfect_scores

#: Label of the assumption-free bounds (printed wherever an estimate is shown).
VERDICT_LABEL = "assumption-free; may decide a verdict"
#: What the Gaussian-DP estimate through thresholds (Nasr et al. 2023) assumes.
GDP_ASSUMPTION = (
    "assumes the mechanism is mu-GDP (Gaussian trade-off curve); never decides a verdict"
)
#: What the parametric Gaussian-DP estimate assumes.
PARAMETRIC_ASSUMPTION = (
    "assumes Gaussian scores of equal variance in and out (so mu-GDP); never decides a verdict"
)
#: What the one-run f-DP test refutes.
FDP_ASSUMPTION = (
    "refutes a Gaussian-shaped (mu-GDP) claim, stronger than (eps, delta)-DP; "
    "never decides a verdict"
)


@dataclass(frozen=True)
class EstimateResult:
    """One estimator's answer.

    Attributes:
        name: Which estimator ("clopper_pearson", "gdp", "gdp_parametric",
            "one_run", "one_run_fdp").
        epsilon_lb: The lower bound on ε (an estimate for the assumption-based ones).
        confidence: Probability, over the randomness of the audit, that
            ``epsilon_lb`` does not exceed the true ε (given ``assumption``).
        delta: The δ at which ε is bounded.
        ceiling: Largest ε this design could certify: the same estimator given a
            perfect distinguisher with the same numbers of runs / canaries /
            candidate thresholds, confidence and δ. An audit whose ceiling is
            below the claimed ε cannot catch a violation, whatever the attack.
            ``inf`` for the parametric estimate, which has no such limit (it
            extrapolates from the score distributions).
        assumption: None for assumption-free bounds, otherwise what must hold
            for ``epsilon_lb`` to be a bound (ending "never decides a verdict").
        valid_for_verdict: True only for the assumption-free estimators.
        details: JSON-able inputs, threshold and counts behind the number.
    """

    name: str
    epsilon_lb: float
    confidence: float
    delta: float
    ceiling: float
    assumption: str | None
    valid_for_verdict: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What to print next to the number: the assumption, or that there is none."""
        return self.assumption if self.assumption is not None else VERDICT_LABEL

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for JSON reports (``label`` included)."""
        return {**asdict(self), "label": self.label}


#: An estimator's computation on checked scores: (in, out) -> (ε, details).
Core = Callable[[np.ndarray, np.ndarray], tuple[float, dict[str, Any]]]


def result_of(
    name: str,
    core: Core,
    ins: np.ndarray,
    outs: np.ndarray,
    *,
    confidence: float,
    delta: float,
    assumption: str | None,
    ceiling: float | None = None,
) -> EstimateResult:
    """``core`` on the scores, with its ceiling (``core`` on perfect scores of the same sizes, unless given).

    Only assumption-free estimates (``assumption`` None) are valid for a verdict.
    """
    eps, details = core(ins, outs)
    if ceiling is None:
        ceiling = core(*perfect_scores(ins.size, outs.size))[0]
    details["tied_scores"] = n_tied(ins, outs)
    return EstimateResult(
        name=name,
        epsilon_lb=eps,
        confidence=confidence,
        delta=delta,
        ceiling=ceiling,
        assumption=assumption,
        valid_for_verdict=assumption is None,
        details=details,
    )
