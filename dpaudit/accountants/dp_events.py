"""A :class:`Schedule` as dp-accounting ``DpEvent`` data (for the RDP and PLD accountants)."""

from __future__ import annotations

import dp_accounting

from dpaudit.schedule import Schedule


def schedule_event(schedule: Schedule) -> dp_accounting.DpEvent:
    """Compose[SelfComposed(PoissonSampled(Gaussian σ_i), n_i)], with q = 1 steps left unsampled."""
    events = []
    for sigma, q, n in zip(schedule.sigmas, schedule.sample_rates, schedule.counts):
        gaussian = dp_accounting.GaussianDpEvent(sigma)
        step = gaussian if q == 1.0 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
        events.append(dp_accounting.SelfComposedDpEvent(step, n))
    return dp_accounting.ComposedDpEvent(events)
