"""What the probe found: per-step arrays and findings, as frozen data."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dpaudit.probe.confidence import (
    DEFAULT_CONFIDENCE, SIGMA_TOLERANCE, agrees_with_declared, below_declared,
)
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
    * ``sigma_hat_lower``, ``sigma_hat_upper``: its confidence limits, which
      hold for all steps together at ``confidence`` (the probe's family-wise
      level, :mod:`dpaudit.probe.confidence`);
    * ``worst_canary``: index into ``canary_names`` of the worst neighbour;
    * ``coupled``: whether the step was measured with coupled draws.

    ``undecided`` lists what a statistical check could not decide (the
    verdict is then ``inconclusive`` unless something fails); ``robustness``
    lists inputs the mechanism refused that the run practically never produces.
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
    sigma_hat_upper: np.ndarray = field(compare=False, repr=False)
    worst_canary: np.ndarray = field(compare=False, repr=False)
    coupled: np.ndarray = field(compare=False, repr=False)
    leaks: tuple[LeakFinding, ...] = ()
    leak_check_steps: tuple[int, ...] = ()
    leak_check: str = "done"
    batch_size_dependence: BatchSizeDependence | None = None
    notes: tuple[str, ...] = ()
    undecided: tuple[str, ...] = ()
    robustness: tuple[str, ...] = ()
    confidence: float = DEFAULT_CONFIDENCE
    input_format: str = ""
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
        """The lower confidence limit of σ̂_t, clipped to [SIGMA_FLOOR, SIGMA_CAP]."""
        return np.clip(self.sigma_hat_lower, SIGMA_FLOOR, SIGMA_CAP)

    # ----- the one tolerance rule --------------------------------------------
    def agrees(self) -> np.ndarray:
        """Per step: σ̂ is not shown below σ_t and its lower limit is at least (1 − :data:`SIGMA_TOLERANCE`)·σ_t."""
        return agrees_with_declared(self.sigma_hat_lower, self.sigma_hat_upper, self.declared_sigma)

    def understated_steps(self) -> np.ndarray:
        """Steps whose σ̂ is below the declared σ_t: even its upper confidence limit is."""
        return np.flatnonzero(below_declared(self.sigma_hat_upper, self.declared_sigma))

    def undecided_steps(self) -> np.ndarray:
        """Steps neither agreeing with the declared σ_t nor shown below it."""
        return np.flatnonzero(~self.agrees() & ~below_declared(self.sigma_hat_upper, self.declared_sigma))

    def measured_schedule(self, config: RunConfig) -> Schedule:
        """The run as measured, by the tolerance rule of :meth:`agrees`.

        A step that agrees enters with its declared σ_t (the probe cannot tell
        them apart); any other step with the lower confidence limit of σ̂_t, so
        that the ε of a failing or undecided run is what its measurement allows.
        """
        sigma = np.where(self.agrees(), self.declared_sigma, self.sigma_for_accounting())
        return Schedule.from_steps(sigma, config.sample_rate)

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
            "undecided_steps": int(self.undecided_steps().size),
            "tolerance": SIGMA_TOLERANCE,
            "confidence": self.confidence,
            "input_format": self.input_format,
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
            "undecided": list(self.undecided),
            "robustness": list(self.robustness),
        }
        if self.steps <= MAX_STEPS_IN_DICT:
            d["per_step"] = {
                "batch_size": self.batch_sizes.tolist(),
                "declared_sigma": self.declared_sigma.tolist(),
                "sigma_hat": [_json_float(float(x)) for x in self.sigma_hat],
                "sigma_hat_lower": [_json_float(float(x)) for x in self.sigma_hat_lower],
                "sigma_hat_upper": [_json_float(float(x)) for x in self.sigma_hat_upper],
                "sigma_hat_rel_se": [_json_float(float(x)) for x in self.sigma_hat_rel_se],
                "noise_std": self.noise_std.tolist(),
                "sensitivity": [_json_float(float(x)) for x in self.sensitivity],
            }
        return d
