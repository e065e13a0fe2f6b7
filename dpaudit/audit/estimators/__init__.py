"""Empirical lower bounds on ε from membership-inference scores.

Every estimator takes two arrays of attack scores and returns an
:class:`EstimateResult`:

* ``in_scores``: one score per observation where the target example (the
  canary) *was* in the training set;
* ``out_scores``: one score per observation where it was *not*.

A **higher score means "guess in" (member)**. If your attack gives members
lower scores (a loss, say), negate it first. The neighbouring relation is
add/remove one example, which is the relation dpaudit's accountants use, so an
estimate can be compared directly with an accountant's ε at the same δ.

One module per estimator, from the weakest assumptions to the strongest:

==========================  ====================  =====================================================
function                    module                what it assumes
==========================  ====================  =====================================================
:func:`clopper_pearson`     clopper_pearson_bound nothing: multi-run (ε, δ) bound (Jagielski 2020, Nasr 2021)
:func:`one_run`             one_run_bound         nothing: one run, many canaries (Steinke et al. 2023)
:func:`gaussian_dp`         gdp_thresholds        a Gaussian trade-off curve (Nasr et al. 2023)
:func:`gaussian_dp_parametric` gdp_parametric     Gaussian scores of equal variance
:func:`one_run_fdp`         one_run_fdp_bound     refutes a Gaussian-shaped claim (Mahloujifar et al. 2025)
==========================  ====================  =====================================================

Only the first two may back a pass/fail verdict (``valid_for_verdict``);
every result's ``label`` says which kind it is, and every output prints it.

Taking the best of many thresholds (or guess counts) and reporting its bound
as if it had been fixed in advance inflates the bound. Each estimator
therefore either corrects over a candidate set fixed before looking at the
labels, or chooses on one part of the data and bounds on the other (the one
exception is the opt-in ``k_selection="pareto"`` of the one-run estimators,
which copies jax_privacy's convention to reproduce its numbers). Results are
deterministic except for the random split of
``clopper_pearson(threshold_selection="split")``.
"""

from __future__ import annotations

from typing import Any

from dpaudit.audit.estimators.clopper_pearson_bound import (
    ThresholdSelection,
    clopper_pearson,
    clopper_pearson_epsilon,
)
from dpaudit.audit.estimators.gdp_parametric import gaussian_dp_parametric
from dpaudit.audit.estimators.gdp_thresholds import gaussian_dp, gdp_epsilon
from dpaudit.audit.estimators.inputs import check_common
from dpaudit.audit.estimators.one_run_bound import KSelection, one_run, one_run_epsilon
from dpaudit.audit.estimators.one_run_fdp_bound import one_run_fdp, one_run_fdp_epsilon
from dpaudit.audit.estimators.result import (
    FDP_ASSUMPTION,
    GDP_ASSUMPTION,
    PARAMETRIC_ASSUMPTION,
    VERDICT_LABEL,
    EstimateResult,
)

__all__ = [
    "EstimateResult",
    "clopper_pearson",
    "clopper_pearson_epsilon",
    "gaussian_dp",
    "gaussian_dp_parametric",
    "gdp_epsilon",
    "one_run",
    "one_run_epsilon",
    "one_run_fdp",
    "one_run_fdp_epsilon",
    "estimate_all",
    "ESTIMATOR_NAMES",
    "FDP_ASSUMPTION",
    "GDP_ASSUMPTION",
    "PARAMETRIC_ASSUMPTION",
    "VERDICT_LABEL",
    "KSelection",
    "ThresholdSelection",
]

#: The keys of :func:`estimate_all`, in its order.
ESTIMATOR_NAMES = ("clopper_pearson", "gdp", "gdp_parametric", "one_run", "one_run_fdp")


def estimate_all(
    in_scores: Any,
    out_scores: Any,
    *,
    delta: float,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, EstimateResult]:
    """Run every estimator with its defaults on the same scores.

    Keys: :data:`ESTIMATOR_NAMES`. For multi-run data the one-run estimators
    treat each run's score as one canary (see :func:`one_run` for what that
    assumes). Only results with ``valid_for_verdict`` may decide whether a
    claim is violated. ``seed`` only matters for a split threshold
    selection, which is not the default.
    """
    ins, outs, delta, confidence = check_common(in_scores, out_scores, delta, confidence)
    kw = dict(delta=delta, confidence=confidence)
    return {
        "clopper_pearson": clopper_pearson(ins, outs, seed=seed, **kw),
        "gdp": gaussian_dp(ins, outs, **kw),
        "gdp_parametric": gaussian_dp_parametric(ins, outs, **kw),
        "one_run": one_run(ins, outs, **kw),
        "one_run_fdp": one_run_fdp(ins, outs, **kw),
    }
