"""Privacy-random-variable accountant (prv-accountant; Gopi, Lee, Wutschitz 2021).

Returns prv-accountant's (lower, estimate, upper) and certifies with the
upper bound. prv-accountant's subsampled-Gaussian PRV is the *remove*
direction of add/remove neighbours; for the Poisson-subsampled Gaussian that
direction dominates the add direction (checked against dp-accounting's
separate add and remove PLDs in the tests).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.fft
from prv_accountant import PRVAccountant
from prv_accountant.accountant import compute_safe_domain_size
from prv_accountant.privacy_random_variables import (
    GaussianMechanism,
    PoissonSubsampledGaussianMechanism,
)

from dpaudit.accountants.base import Accountant, DeltaResult, EpsilonResult
from dpaudit.accountants.grouping import group
from dpaudit.errors import AccountingError
from dpaudit.schedule import Schedule


def _fft_friendly_half_width(safe_width: float, mesh: float) -> float:
    """A half-width ≥ ``safe_width`` whose aligned domain has an FFT-friendly size.

    prv-accountant's ``Domain.create_aligned(-L, L, mesh)`` has 2·(⌈L/mesh⌉ + 1)
    points; a size with a large prime factor makes each FFT 20–50× slower.
    Widening the domain only adds (safe) room in the tails.
    """
    k = math.ceil(safe_width / mesh)
    size = scipy.fft.next_fast_len(2 * (k + 1), real=True)
    while size % 2:
        size = scipy.fft.next_fast_len(size + 1, real=True)
    # Half a mesh below the grid point so that round-off cannot push ⌈L/mesh⌉ up.
    return (size // 2 - 1.5) * mesh


class PrvAccountant(Accountant):
    """ε bounds from the numerically composed privacy random variable."""

    name = "prv"
    is_upper_bound = True

    def __init__(
        self,
        eps_error: float = 0.01,
        max_groups: int = 32,
        point_budget: int = 2_400_000,
        max_domain_points: int = 800_000,
        delta_error_for_delta: float = 1e-10,
    ) -> None:
        # prv-accountant discretises each distinct PRV on a mesh that shrinks
        # like eps_error / sqrt(total steps) (Gopi et al., Thm 5.5) and its
        # long-double CDFs cost ~1 µs a point: a 100,000-step schedule at
        # eps_error 0.01 needs ~3M points per PRV. So the number of distinct
        # PRVs is capped, the points are shared out (``point_budget`` over the
        # PRVs, at most ``max_domain_points`` each) and eps_error is widened
        # until the mesh fits; the widened eps_error is reported.
        self.eps_error = eps_error
        self.max_groups = max_groups
        self.point_budget = point_budget
        self.max_domain_points = max_domain_points
        self.delta_error_for_delta = delta_error_for_delta

    def _compose(self, schedule: Schedule, delta_error: float):
        """The composed discrete PRV (with ``compute_epsilon``/``compute_delta_estimate``) and notes."""
        grouped, grid = group(schedule, self.max_groups)
        pairs = list(zip(grouped.sigmas, grouped.sample_rates))
        prvs = [
            GaussianMechanism(s) if q == 1.0 else PoissonSubsampledGaussianMechanism(q, s)
            for s, q in pairs
        ]
        counts = list(grouped.counts)
        safe_width = compute_safe_domain_size(prvs, counts, self.eps_error, delta_error)
        spread = math.sqrt(sum(counts) / 2 * math.log(12 / delta_error))
        points = min(self.max_domain_points, self.point_budget // len(prvs))
        eps_error = max(self.eps_error, 2 * safe_width * spread / points)
        half_width = _fft_friendly_half_width(safe_width, eps_error / spread)
        notes = [f"eps_error {eps_error:.3g}, delta_error {delta_error:.3g}", "remove direction"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Assuming that true epsilon < eps_max": we computed it safely
            try:
                composed = PRVAccountant(
                    prvs=prvs, max_self_compositions=counts, eps_error=eps_error,
                    delta_error=delta_error, eps_max=half_width,
                ).compute_composition(counts)
            except (RuntimeError, ValueError, FloatingPointError) as exc:
                # prv-accountant's discretiser rejects some large-ε PRVs ("Discrete
                # mean differs ...") that Opacus's implementation of the same
                # method (Gopi et al.), with a more accurate mean, handles.
                composed = _opacus_composition(pairs, counts, half_width, eps_error / spread, exc, grouped)
                notes.append(f"composed by Opacus's PRV code: prv-accountant failed ({exc})")
        return composed, eps_error, grid, tuple(notes)

    def _epsilon(self, schedule: Schedule, delta: float) -> EpsilonResult:
        if delta <= 1e-14:
            raise AccountingError(
                f"prv: delta={delta:g} is below what prv-accountant resolves (floating-point error dominates below ~1e-14)"
            )
        delta_error = delta * 1e-3
        composed, eps_error, grid, notes = self._compose(schedule, delta_error)
        lower, estimate, upper = (float(x) for x in composed.compute_epsilon(delta, delta_error, eps_error))
        if not np.isfinite(upper):
            raise AccountingError(f"prv: upper bound is not finite at delta={delta:g}")
        lower = max(lower, 0.0)
        estimate = min(max(estimate, lower), upper)
        return EpsilonResult(
            self.name, upper, delta, str(schedule.neighbouring), True,
            lower=lower, estimate=estimate, grid=grid,
            notes=(f"lower {lower:.4f}, estimate {estimate:.4f}, upper {upper:.4f} (certify with upper)",) + notes,
        )

    def _delta(self, schedule: Schedule, epsilon: float) -> DeltaResult:
        delta_error = self.delta_error_for_delta
        composed, eps_error, grid, notes = self._compose(schedule, delta_error)
        # The bounds of prv-accountant's compute_delta (Gopi et al., Thm 5.5).
        estimate = float(composed.compute_delta_estimate(epsilon))
        lower = max(float(composed.compute_delta_estimate(epsilon + eps_error)) - delta_error, 0.0)
        upper = min(float(composed.compute_delta_estimate(epsilon - eps_error)) + delta_error, 1.0)
        estimate = min(max(estimate, lower), upper)
        return DeltaResult(
            self.name, upper, epsilon, str(schedule.neighbouring), True,
            lower=lower, estimate=estimate, grid=grid,
            notes=(f"lower {lower:.3g}, estimate {estimate:.3g}, upper {upper:.3g} (certify with upper)",) + notes,
        )


def _opacus_composition(pairs, counts, half_width, mesh, cause, grouped):
    """The same composition through Opacus's PRV implementation (subsampled steps only)."""
    if any(q == 1.0 for _, q in pairs):
        raise AccountingError(f"prv: prv-accountant failed on {grouped.describe()}: {cause}")
    # Imported here: opacus pulls in torch (seconds), and this fallback is rare.
    from opacus.accountants.analysis.prv import (
        Domain as OpacusDomain,
        PoissonSubsampledGaussianPRV,
        TruncatedPrivacyRandomVariable,
        compose_heterogeneous,
        discretize,
    )
    domain = OpacusDomain.create_aligned(-half_width, half_width, mesh)
    try:
        dprvs = [
            discretize(TruncatedPrivacyRandomVariable(PoissonSubsampledGaussianPRV(q, s), domain.t_min, domain.t_max), domain)
            for s, q in pairs
        ]
        return compose_heterogeneous(dprvs=dprvs, num_self_compositions=counts)
    except (RuntimeError, ValueError, FloatingPointError) as exc:
        raise AccountingError(
            f"prv: neither prv-accountant ({cause}) nor Opacus's PRV ({exc}) could discretise {grouped.describe()}; "
            "use the pld accountant"
        ) from exc
