"""Rényi-DP accountant (Mironov 2017; Mironov, Talwar, Zhang 2019 for the sampled Gaussian).

Uses dp-accounting's ``RdpAccountant`` rather than Opacus's: its order grid
reaches 1024 (Opacus stops at 63, so large-ε runs hit the edge), it treats
q = 1 steps as exact Gaussian steps, and it reads the same ``DpEvent``
description as the PLD accountant. Both convert RDP to (ε, δ) with the same
bound (Canonne, Kamath & Steinke 2020); at fractional orders dp-accounting's
series is slightly more conservative, so its ε can sit up to ~0.3 % above
Opacus's. Opacus's RDP is the cross-check in the tests.
"""

from __future__ import annotations

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant

from dpaudit.accountants.base import Accountant, DeltaResult, EpsilonResult
from dpaudit.accountants.dp_events import schedule_event
from dpaudit.accountants.grouping import group
from dpaudit.schedule import Schedule


class RdpAccountant(Accountant):
    """Upper bound on ε via Rényi DP; loose (5–40 % above PLD) but fast and robust."""

    name = "rdp"
    is_upper_bound = True

    def __init__(self, max_groups: int = 128) -> None:
        # dp-accounting spends ~35 ms per distinct (σ, q); 128 keeps a fully
        # heterogeneous schedule under ~5 s.
        self.max_groups = max_groups

    def _compose(self, schedule: Schedule):
        grouped, grid = group(schedule, self.max_groups)
        acc = rdp_privacy_accountant.RdpAccountant(
            neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
        )
        acc.compose(schedule_event(grouped))
        return acc, grid

    def _edge_note(self, order: float, orders) -> tuple[str, ...]:
        if order in (min(orders), max(orders)):
            return (f"optimal RDP order {order:g} is at the edge of the order grid: the bound may be loose",)
        return ()

    def _epsilon(self, schedule: Schedule, delta: float) -> EpsilonResult:
        acc, grid = self._compose(schedule)
        eps, order = acc.get_epsilon_and_optimal_order(delta)
        return EpsilonResult(
            self.name, float(eps), delta, str(schedule.neighbouring), True, grid=grid,
            notes=(f"RDP order {order:g}",) + self._edge_note(order, acc._orders),
        )

    def _delta(self, schedule: Schedule, epsilon: float) -> DeltaResult:
        acc, grid = self._compose(schedule)
        d, order = acc.get_delta_and_optimal_order(epsilon)
        return DeltaResult(
            self.name, float(min(d, 1.0)), epsilon, str(schedule.neighbouring), True, grid=grid,
            notes=(f"RDP order {order:g}",) + self._edge_note(order, acc._orders),
        )
