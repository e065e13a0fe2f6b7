"""The verdict words of ``certify`` and ``audit`` and the exit code of each.

``certify`` answers pass / fail / inconclusive (0 / 1 / 3); ``audit`` answers
no violation / violation / inconclusive (0 / 1 / 3). Exit code 2 is an input
error (nothing was judged) and 130 an interrupt.
"""

from __future__ import annotations

from typing import Iterable

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
VIOLATION, NO_VIOLATION = "violation", "no violation"

EXIT_CODES = {PASS: 0, NO_VIOLATION: 0, FAIL: 1, VIOLATION: 1, INCONCLUSIVE: 3}
EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130

#: What an audit that could not have found a violation says.
CANNOT_DETECT = "these runs cannot detect a violation of this claim"


def can_detect(ceilings_and_claims: Iterable[tuple[float, float]]) -> bool:
    """Whether any design could have certified more than its claim.

    Each pair is (ceiling, claimed ε) of an estimator that may decide the
    verdict; its ceiling is the largest ε lower bound it can return with this
    many runs or canaries, so a ceiling at or below the claim cannot show a
    violation however leaky the mechanism is.
    """
    return any(ceiling > claim for ceiling, claim in ceilings_and_claims)


def audit_verdict(violation: bool, detectable: bool) -> str:
    """``violation``, else ``no violation`` if some design could have found one, else ``inconclusive``."""
    if violation:
        return VIOLATION
    return NO_VIOLATION if detectable else INCONCLUSIVE


def exit_code(verdict: str) -> int:
    """The process exit code of a verdict word."""
    return EXIT_CODES[verdict]
