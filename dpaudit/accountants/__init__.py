"""Accountants for heterogeneous DP-SGD schedules, by name.

Each takes a :class:`dpaudit.schedule.Schedule` and returns ε(δ) or δ(ε) for
add/remove-one-example neighbours under Poisson sampling:

- ``rdp``: Rényi DP (dp-accounting), an upper bound;
- ``pld``: privacy loss distributions (dp-accounting), the tight upper bound;
- ``prv``: privacy random variables (prv-accountant), certified by its upper bound;
- ``gdp``: Gaussian DP, exact at q = 1, a central-limit *approximation* otherwise.
"""

from __future__ import annotations

from dpaudit.accountants.base import Accountant, DeltaResult, EpsilonResult
from dpaudit.accountants.gdp import GdpAccountant
from dpaudit.accountants.pld import PldAccountant
from dpaudit.accountants.prv import PrvAccountant
from dpaudit.accountants.rdp import RdpAccountant
from dpaudit.errors import InputError

ACCOUNTANTS: dict[str, Accountant] = {
    "rdp": RdpAccountant(),
    "pld": PldAccountant(),
    "prv": PrvAccountant(),
    "gdp": GdpAccountant(),
}

# The accountants whose ε is an upper bound under every schedule, so any one of
# them within a budget proves it (GDP's CLT value can under-state ε).
CERTIFYING = ("rdp", "pld", "prv")


def get_accountant(name: str) -> Accountant:
    """The accountant called ``name`` (one of rdp, pld, prv, gdp)."""
    try:
        return ACCOUNTANTS[name.strip().lower()]
    except KeyError:
        raise InputError(
            f"unknown accountant {name!r}; choose from {', '.join(ACCOUNTANTS)}"
        ) from None


def parse_accountant_list(text: str) -> list[str]:
    """'rdp,pld' -> ['rdp', 'pld'], each checked."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError("--accountant needs at least one of rdp, pld, prv, gdp")
    for n in names:
        get_accountant(n)
    return names


__all__ = [
    "ACCOUNTANTS", "CERTIFYING", "Accountant", "DeltaResult", "EpsilonResult",
    "get_accountant", "parse_accountant_list",
]
