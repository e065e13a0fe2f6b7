"""Undeclared data-dependent state: one example changing the mechanism's later behaviour.

A mechanism may keep state (a clip norm, an average of past outputs). If the
state after step t depends on the step's data only through the *noised*
output (post-processing: an EMA of outputs, a clip norm driven by a noised
count as in Andrew et al. 2021), one example's effect on it is covered by
noise and varies with the noise drawn at step t. If it depends on the data
deterministically (an un-noised quantile of the norms), it is a release that
no accountant sees.

The check, at a spread subset of steps t: for each of several seeds ``s_k`` of
step t, run copies of the state on the batch D and on D plus one canary (a
huge one and a tiny one) with the same seed, then at step t+1 give each copy
the same input with the same seeds and record a fingerprint of its behaviour:

* ``noise scale``: ‖out(E, a) − out(E, b)‖, fixed seeds a, b;
* ``clip norm``: ‖out(E ∪ {huge}, a) − out(E, a)‖, the step-t+1 sensitivity;
* ``output``: out(E, a) projected on the canary's direction.

For each canary and channel, ``shift`` is the difference of the mean
fingerprint with and without the canary and ``spread`` the standard deviation
of the fingerprint across the step-t seeds (both groups pooled).
``spread / shift`` is the noise multiplier that covers the channel, in units
of one example's effect: about σ for post-processing of the noised output
(less information can only mean more noise per unit of effect), and 0 when
nothing covers it. A shift that is real (above float tolerance) and whose
implied multiplier is below :data:`LEAK_FRACTION` of the declared σ is a *leak*.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dpaudit.probe.calls import Caller
from dpaudit.probe.gradients import CANARY_NAMES, Batch, SyntheticGradients
from dpaudit.probe.randomness import derive_seed

#: Step-t seeds per variant.
LEAK_SEEDS = 6
#: A channel whose implied noise multiplier is below this fraction of the declared σ is a leak.
LEAK_FRACTION = 0.1
#: Relative changes below this are float rounding, not behaviour.
LEAK_RTOL = 1e-6
#: The canaries whose later effect is checked.
LEAK_CANARIES = (CANARY_NAMES[0], CANARY_NAMES[4])
CHANNELS = ("noise scale", "clip norm", "output")


@dataclass(frozen=True)
class LeakFinding:
    """A deterministic effect of one example at ``step`` on the mechanism's behaviour at ``step + 1``."""

    step: int
    canary: str
    channel: str
    relative_change: float           # |shift| / typical fingerprint size
    shift_over_spread: float         # inf when the effect does not vary with the step's noise at all
    implied_noise_multiplier: float  # spread / shift (0 when nothing covers the channel)

    def describe(self) -> str:
        ratio = "does not vary with the noise" if math.isinf(self.shift_over_spread) else (
            f"{self.shift_over_spread:.3g}× its variation with the noise"
        )
        return (
            f"step {self.step}: '{self.canary}' changes the {self.channel} at step {self.step + 1} "
            f"by {self.relative_change:.3g} (relative), {ratio}"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("shift_over_spread", "implied_noise_multiplier", "relative_change"):
            d[k] = _json_float(d[k])
        return d


def _json_float(x: float):
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")


def choose_leak_steps(total_steps: int, count: int) -> tuple[int, ...]:
    """``count`` steps among 0..T−2 (each needs a next step): the first four, then evenly spread."""
    last = total_steps - 2
    if last < 0 or count <= 0:
        return ()
    first = list(range(min(4, count, last + 1)))
    rest = max(count - len(first), 0)
    spread = np.linspace(first[-1] + 1 if first else 0, last, rest) if rest else []
    steps = sorted(set(first) | {int(round(x)) for x in spread})
    return tuple(s for s in steps if 0 <= s <= last)


def _fingerprints(caller: Caller, state: Any, e: Batch, e_huge, epoch: int, seeds) -> tuple[float, float, np.ndarray]:
    t = e.step
    fa, fb = seeds
    oa = caller.on_copy(state, e.tensors, t, epoch, fa, "leak check, the next batch")
    ob = caller.on_copy(state, e.tensors, t, epoch, fb, "leak check, the next batch")
    oh = caller.call(state, e_huge, t, epoch, fa, "leak check, the next batch with a huge example")
    return float(np.linalg.norm(oa - ob)), float(np.linalg.norm(oh - oa)), oa


def check_state_leaks(
    caller: Caller,
    gen: SyntheticGradients,
    base: Any,
    batch: Batch,
    next_batch: Batch,
    epoch: int,
    next_epoch: int,
    seed: int,
    declared_sigma: float,
) -> list[LeakFinding]:
    """Findings for step ``batch.step`` (empty when its data only acts through noise)."""
    t = batch.step
    canaries = {c.name: c for c in gen.canaries(batch)}
    variants = [("", batch.tensors, None)] + [
        (name, gen.neighbour(batch, canaries[name], fresh=True), canaries[name].direction(batch).numpy())
        for name in LEAK_CANARIES
    ]
    huge_next = gen.canaries(next_batch)[0]
    e_huge = gen.neighbour(next_batch, huge_next, fresh=True)
    fp_seeds = (derive_seed(seed, t, 40), derive_seed(seed, t, 41))
    noise = np.zeros((len(variants), LEAK_SEEDS))
    clip = np.zeros((len(variants), LEAK_SEEDS))
    outs: list[list[np.ndarray]] = [[] for _ in variants]
    for k in range(LEAK_SEEDS):
        s_k = derive_seed(seed, t, 50, k)
        for v, (name, tensors, _) in enumerate(variants):
            state = caller.copy(base, t)
            caller.call(state, tensors, t, epoch, s_k, f"leak check ({name or 'the batch itself'})")
            noise[v, k], clip[v, k], o = _fingerprints(caller, state, next_batch, e_huge, next_epoch, fp_seeds)
            outs[v].append(o)
    findings = []
    for v, (name, _, direction) in enumerate(variants):
        if v == 0:
            continue
        unit = direction / max(float(np.linalg.norm(direction)), 1e-300)
        out_base = np.array([o @ unit for o in outs[0]])
        out_var = np.array([o @ unit for o in outs[v]])
        out_size = float(np.mean([np.linalg.norm(o) for o in outs[0]]))
        channels = (
            ("noise scale", noise[0], noise[v], float(np.mean(noise[0]))),
            ("clip norm", clip[0], clip[v], float(np.mean(clip[0]))),
            ("output", out_base, out_var, out_size),
        )
        for channel, x, y, size in channels:
            finding = _judge(t, name, channel, x, y, size, LEAK_FRACTION * declared_sigma)
            if finding is not None:
                findings.append(finding)
    return findings


def _judge(step: int, canary: str, channel: str, x: np.ndarray, y: np.ndarray, size: float,
           min_multiplier: float) -> LeakFinding | None:
    shift = abs(float(np.mean(y)) - float(np.mean(x)))
    spread = math.sqrt(0.5 * (float(np.var(x, ddof=1)) + float(np.var(y, ddof=1))))
    if size <= 0 or shift <= LEAK_RTOL * size:
        return None
    implied = spread / shift
    if implied >= min_multiplier:
        return None
    ratio = math.inf if spread == 0 else shift / spread
    return LeakFinding(step, canary, channel, shift / size, ratio, implied)
