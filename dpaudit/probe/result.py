"""What the probe found: per-step arrays and findings, as frozen data."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dpaudit.probe.gradients import CANARY_NAMES
from dpaudit.probe.state_leaks import LeakFinding, _json_float
from dpaudit.run_config import RunConfig
from dpaudit.schedule import Schedule

#: σ used in :meth:`ProbeResult.measured_schedule` for a step with no measurable noise.
SIGMA_FLOOR = 1e-3
#: σ used for a step where no canary moved the output at all.
SIGMA_CAP = 1e6
#: Per-step arrays are included in :meth:`ProbeResult.to_dict` up to this many steps.
MAX_STEPS_IN_DICT = 64


@dataclass(frozen=True)
class BatchSizeDependence:
    """The noise scale changed with the realised batch.

    ``comparisons`` are ``(step, B, B', ratio)``: the noise scale with B'
    examples over that with B (exact when the draws are coupled). Only the
    first and the most extreme comparisons are kept; ``steps`` lists every
    step where a change was seen.
    """

    steps: tuple[int, ...]
    comparisons: tuple[tuple[int, int, int, float], ...]
    max_relative_change: float
    varies_with_content: bool = False

    def describe(self) -> str:
        step, b, b2, ratio = max(self.comparisons, key=lambda c: abs(math.log(c[3])) if 0 < c[3] < math.inf else math.inf)
        text = (
            f"the noise scale depends on the realised batch: at step {step} a batch of {b2} "
            f"examples gets {ratio:.6g}× the noise of one of {b} (changes at {len(self.steps)} steps)"
        )
        if self.varies_with_content:
            text += "; it also differs between neighbours of the same size (it depends on the data)"
        return text

    def to_dict(self) -> dict:
        return {
            "steps_with_change": len(self.steps),
            "first_steps": list(self.steps[:10]),
            "comparisons": [
                {"step": s, "batch": b, "other_batch": b2, "noise_ratio": _json_float(r)}
                for s, b, b2, r in self.comparisons
            ],
            "max_relative_change": _json_float(self.max_relative_change),
            "varies_with_content": self.varies_with_content,
            "description": self.describe(),
        }


@dataclass(frozen=True)
class ProbeResult:
    """The black-box measurement of one mechanism over one run.

    Per-step arrays (length ``steps``):

    * ``batch_sizes``: realised batch size B_t fed to the mechanism;
    * ``declared_sigma``, ``declared_sensitivity``: what the mechanism claims;
    * ``noise_std``: measured per-coordinate noise std of the output (pooled
      over parameter tensors), in the output's own units (e.g. after division
      by the batch size);
    * ``sensitivity``: ‖Δ‖ of the worst neighbour, same units;
    * ``sigma_hat``: realised noise multiplier σ̂_t (noise over shift, taken per
      tensor, for the worst neighbour), comparable with ``declared_sigma``;
    * ``sigma_hat_rel_se``: its relative standard error;
    * ``sigma_hat_lower``: its one-sided 95% lower confidence limit;
    * ``worst_canary``: index into ``canary_names`` of the worst neighbour;
    * ``coupled``: whether the step was measured with coupled draws.
    """

    steps: int
    sample_rate: float
    param_shapes: tuple[tuple[int, ...], ...]
    coupling: str
    batch_sizes: np.ndarray = field(compare=False, repr=False)
    declared_sigma: np.ndarray = field(compare=False, repr=False)
    declared_sensitivity: np.ndarray = field(compare=False, repr=False)
    noise_std: np.ndarray = field(compare=False, repr=False)
    sensitivity: np.ndarray = field(compare=False, repr=False)
    sigma_hat: np.ndarray = field(compare=False, repr=False)
    sigma_hat_rel_se: np.ndarray = field(compare=False, repr=False)
    sigma_hat_lower: np.ndarray = field(compare=False, repr=False)
    worst_canary: np.ndarray = field(compare=False, repr=False)
    coupled: np.ndarray = field(compare=False, repr=False)
    leaks: tuple[LeakFinding, ...] = ()
    leak_check_steps: tuple[int, ...] = ()
    leak_check: str = "done"
    batch_size_dependence: BatchSizeDependence | None = None
    notes: tuple[str, ...] = ()
    canary_names: tuple[str, ...] = CANARY_NAMES
    empty_step: int = -1
    seconds: float = 0.0
    calls: int = 0

    # ----- views --------------------------------------------------------
    @property
    def is_coupled(self) -> bool:
        return self.coupling.startswith("exact")

    @property
    def sigma_ratio(self) -> np.ndarray:
        """σ̂_t / declared σ_t."""
        return self.sigma_hat / self.declared_sigma

    def sigma_for_accounting(self) -> np.ndarray:
        """σ̂_t when coupled, else its lower confidence limit; clipped to [SIGMA_FLOOR, SIGMA_CAP]."""
        s = np.where(self.coupled, self.sigma_hat, self.sigma_hat_lower)
        return np.clip(s, SIGMA_FLOOR, SIGMA_CAP)

    def measured_schedule(self, config: RunConfig) -> Schedule:
        """The realised per-step σ̂ as a schedule at Poisson rate ``config.sample_rate``.

        Steps measured without coupling enter with the lower confidence limit
        of σ̂; a step without measurable noise enters as :data:`SIGMA_FLOOR`.
        """
        return Schedule.from_steps(self.sigma_for_accounting(), config.sample_rate)

    def tolerance(self, z: float = 4.0, rtol: float = 1e-6) -> np.ndarray:
        """Relative measurement tolerance of σ̂_t: ``z`` standard errors plus ``rtol``."""
        return z * self.sigma_hat_rel_se + rtol

    def understated_steps(self, z: float = 4.0, rtol: float = 1e-6) -> np.ndarray:
        """Steps where σ̂_t is below the declared σ_t by more than :meth:`tolerance`."""
        return np.flatnonzero(self.sigma_hat * (1.0 + self.tolerance(z, rtol)) < self.declared_sigma)

    # ----- serialisation ------------------------------------------------
    def _summary(self, a: np.ndarray) -> dict:
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return {"min": _json_float(float(np.min(a))), "max": _json_float(float(np.max(a)))}
        return {
            "min": float(np.min(a)), "median": float(np.median(finite)), "max": _json_float(float(np.max(a))),
            "argmin": int(np.argmin(a)),
        }

    def to_dict(self) -> dict:
        ratio = self.sigma_ratio
        worst = int(np.argmin(ratio))
        names, counts = np.unique(self.worst_canary[self.worst_canary >= 0], return_counts=True)
        leaks_by_channel: dict[str, int] = {}
        for f in self.leaks:
            leaks_by_channel[f.channel] = leaks_by_channel.get(f.channel, 0) + 1
        d = {
            "steps": self.steps,
            "sample_rate": self.sample_rate,
            "param_shapes": [list(s) for s in self.param_shapes],
            "n_params": int(sum(math.prod(s) for s in self.param_shapes)),
            "coupling": self.coupling,
            "seconds": round(self.seconds, 3),
            "mechanism_calls": self.calls,
            "empty_batch_step": self.empty_step,
            "batch_size": self._summary(self.batch_sizes.astype(float)),
            "declared_sigma": self._summary(self.declared_sigma),
            "sigma_hat": self._summary(self.sigma_hat),
            "sigma_hat_over_declared": {
                **self._summary(ratio),
                "worst_step": worst,
                "worst_step_rel_se": float(self.sigma_hat_rel_se[worst]),
                "worst_step_lower": _json_float(float(self.sigma_hat_lower[worst] / self.declared_sigma[worst])),
            },
            "sigma_hat_rel_se_max": _json_float(float(np.max(self.sigma_hat_rel_se))),
            "understated_steps": int(self.understated_steps().size),
            "worst_canary_counts": {
                self.canary_names[int(i)]: int(c) for i, c in zip(names, counts)
            },
            "leak_check": self.leak_check,
            "leak_check_steps": list(self.leak_check_steps),
            "leaks": {
                "count": len(self.leaks),
                "steps": sorted({f.step for f in self.leaks}),
                "by_channel": leaks_by_channel,
                "examples": [f.to_dict() for f in self.leaks[:10]],
            },
            "batch_size_dependence": (
                None if self.batch_size_dependence is None else self.batch_size_dependence.to_dict()
            ),
            "notes": list(self.notes),
        }
        if self.steps <= MAX_STEPS_IN_DICT:
            d["per_step"] = {
                "batch_size": self.batch_sizes.tolist(),
                "declared_sigma": self.declared_sigma.tolist(),
                "sigma_hat": [_json_float(float(x)) for x in self.sigma_hat],
                "sigma_hat_lower": [_json_float(float(x)) for x in self.sigma_hat_lower],
                "sigma_hat_rel_se": [_json_float(float(x)) for x in self.sigma_hat_rel_se],
                "noise_std": self.noise_std.tolist(),
                "sensitivity": [_json_float(float(x)) for x in self.sensitivity],
            }
        return d
