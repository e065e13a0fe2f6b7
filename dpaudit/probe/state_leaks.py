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

**Draws shared through the state** (mode ``state``): copies of the state draw
alike, so the variants stay coupled without seeds; the step-t draws are varied
by advancing a copy's generator with extra calls on the same batch, which also
moves its data-dependent state. That drift can only widen the spread, so a
leak found this way is real, but a shift the spread covers is *undecided*.

**Uncoupled draws** (mode ``none``, :func:`check_state_leaks_uncoupled`): the
fingerprints are estimated from many draws at step t+1 on copies of each
variant's state, and the spread is a variance component between states with
the known measurement variance removed; shift and spread get confidence limits
at the probe's family-wise level, and a leak is declared only when the upper
limit of the implied multiplier is below :data:`LEAK_FRACTION`·σ. The step-t
batch is cut to the smallest batch the mechanism accepts (one example when it
can), which magnifies what one example does to an aggregate of the batch
(a quantile, a count) by the batch size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dpaudit.probe.calls import Caller
from dpaudit.probe.confidence import LEAK, ErrorBudget
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
#: Uncoupled check: states per variant, and draws at step t+1 per state.
UNCOUPLED_STATES = 12
UNCOUPLED_DRAWS = 48
#: Uncoupled check: leak-check steps used (spread over the uncoupled part of the run).
UNCOUPLED_LEAK_STEPS = 4
#: Uncoupled check: the channels it can measure (the clip norm would need a coupled difference).
UNCOUPLED_CHANNELS = ("noise scale", "output")
EXACT, STATE = "exact", "state"


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


def _variants(gen: SyntheticGradients, batch: Batch) -> list[tuple[str, Any, np.ndarray | None]]:
    """The batch itself, then the batch plus each of :data:`LEAK_CANARIES` (name, tensors, direction)."""
    canaries = {c.name: c for c in gen.canaries(batch)}
    return [("", batch.tensors, None)] + [
        (name, gen.neighbour(batch, canaries[name], fresh=True),
         canaries[name].direction(batch).double().numpy())
        for name in LEAK_CANARIES
    ]


def _fingerprints(caller: Caller, state: Any, e: Batch, e_huge, epoch: int, seeds,
                  shared: bool) -> tuple[float, float, np.ndarray]:
    t = e.step
    fa, fb = seeds
    what = "leak check, the next batch"
    if shared:  # copies draw alike: two draws are two consecutive calls on one copy
        first = caller.copy(state, t)
        oa = caller.call(first, e.tensors, t, epoch, fa, what)
        ob = caller.call(first, e.tensors, t, epoch, fb, what)
    else:
        oa = caller.on_copy(state, e.tensors, t, epoch, fa, what)
        ob = caller.on_copy(state, e.tensors, t, epoch, fb, what)
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
    mode: str = EXACT,
) -> tuple[list[LeakFinding], list[str]]:
    """Findings for step ``batch.step``, and the channels left undecided (mode ``state`` only).

    Empty findings mean the step's data only acts through noise (mode
    ``exact``); in mode ``state`` a moved channel the spread covers is undecided.
    """
    t = batch.step
    shared = mode == STATE
    variants = _variants(gen, batch)
    huge_next = gen.canaries(next_batch)[0]
    e_huge = gen.neighbour(next_batch, huge_next, fresh=True)
    fp_seeds = (derive_seed(seed, t, 40), derive_seed(seed, t, 41))
    noise = np.zeros((len(variants), LEAK_SEEDS))
    clip = np.zeros((len(variants), LEAK_SEEDS))
    outs: list[list[np.ndarray]] = [[] for _ in variants]
    for k in range(LEAK_SEEDS):
        s_k = derive_seed(seed, t, 50, k)
        start = base
        if shared:  # vary the step's draws: advance a copy's generator by k calls on the batch
            start = caller.copy(base, t)
            for _ in range(k):
                caller.call(start, batch.tensors, t, epoch, s_k, "leak check (advancing the draws)")
        for v, (name, tensors, _) in enumerate(variants):
            state = caller.copy(start, t)
            caller.call(state, tensors, t, epoch, s_k, f"leak check ({name or 'the batch itself'})")
            noise[v, k], clip[v, k], o = _fingerprints(caller, state, next_batch, e_huge, next_epoch, fp_seeds,
                                                       shared)
            outs[v].append(o)
    findings, undecided = [], []
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
            if isinstance(finding, LeakFinding):
                findings.append(finding)
            elif finding == "covered" and shared:
                undecided.append(f"step {t}: '{name}' moves the {channel} at step {t + 1}")
    return findings, undecided


def _judge(step: int, canary: str, channel: str, x: np.ndarray, y: np.ndarray, size: float,
           min_multiplier: float) -> LeakFinding | str | None:
    """A finding, ``"covered"`` (a shift the spread covers) or None (no shift)."""
    shift = abs(float(np.mean(y)) - float(np.mean(x)))
    spread = math.sqrt(0.5 * (float(np.var(x, ddof=1)) + float(np.var(y, ddof=1))))
    if size <= 0 or shift <= LEAK_RTOL * size:
        return None
    implied = spread / shift
    if implied >= min_multiplier:
        return "covered"
    ratio = math.inf if spread == 0 else shift / spread
    return LeakFinding(step, canary, channel, shift / size, ratio, implied)


def check_state_leaks_uncoupled(
    caller: Caller,
    gen: SyntheticGradients,
    base: Any,
    batch: Batch,
    next_batch: Batch,
    epoch: int,
    next_epoch: int,
    seed: int,
    declared_sigma: float,
    budget: ErrorBudget,
    tests: int,
) -> tuple[list[LeakFinding], list[str]]:
    """The leak check from independent draws (mode ``none``): findings and undecided channels.

    ``tests`` is the number of (step, canary, channel) tests of the whole run,
    over which the leak check's share of the error budget is split.
    """
    from scipy.stats import chi2, t as student

    t = batch.step
    size = max(gen.min_batch, 1)
    small = gen.small(batch, min(size, batch.size))
    following = gen.small(next_batch, min(size, next_batch.size))
    variants = _variants(gen, small)
    n = float(np.sum(caller.sizes))
    log_scale = np.zeros((len(variants), UNCOUPLED_STATES))
    means = np.zeros((len(variants), UNCOUPLED_STATES, int(n)))
    meas_out = np.zeros((len(variants), UNCOUPLED_STATES))
    for v, (name, tensors, _) in enumerate(variants):
        for k in range(UNCOUPLED_STATES):
            state = caller.copy(base, t)
            caller.call(state, tensors, t, epoch, derive_seed(seed, t, 52, v, k),
                        f"leak check ({name or 'the first examples of the batch'})")
            outs = np.stack([
                caller.on_copy(state, following.tensors, t + 1, next_epoch, derive_seed(seed, t, 53, v, k, i),
                               "leak check, the next batch")
                for i in range(UNCOUPLED_DRAWS)
            ])
            var = float(np.sum((outs - outs.mean(axis=0)) ** 2)) / ((UNCOUPLED_DRAWS - 1) * n)
            log_scale[v, k] = 0.5 * math.log(var) if var > 0 else -math.inf
            means[v, k] = outs.mean(axis=0)
            meas_out[v, k] = var / UNCOUPLED_DRAWS
    # log of a std from d degrees of freedom has variance 1/(2d)
    meas_log = 1.0 / (2.0 * (UNCOUPLED_DRAWS - 1) * n)
    alpha = budget.alpha(LEAK, tests) / 2.0   # two limits per decision
    df = 2 * (UNCOUPLED_STATES - 1)
    t_crit = float(student.isf(alpha / 2.0, df))
    chi_lo, chi_hi = float(chi2.ppf(alpha, df)), float(chi2.isf(alpha, df))
    threshold = LEAK_FRACTION * declared_sigma
    findings, undecided = [], []
    for v in range(1, len(variants)):
        name, _, direction = variants[v]
        unit = direction / max(float(np.linalg.norm(direction)), 1e-300)
        out_size = float(np.mean(np.linalg.norm(means[0], axis=1)))
        channels = (
            ("noise scale", log_scale[0], log_scale[v], meas_log, 1.0),
            ("output", means[0] @ unit, means[v] @ unit, float(np.mean(meas_out[[0, v]])), out_size),
        )
        for channel, x, y, meas, size in channels:
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                continue
            d = float(np.mean(y) - np.mean(x))
            v_pooled = 0.5 * (float(np.var(x, ddof=1)) + float(np.var(y, ddof=1)))
            se = math.sqrt(2.0 * v_pooled / UNCOUPLED_STATES)
            if se > 0 and abs(d) <= t_crit * se or se == 0 and d == 0:
                continue  # no shift that the draws can tell from zero
            shift_lo, shift_hi = max(abs(d) - t_crit * se, 0.0), abs(d) + t_crit * se
            spread_hi = math.sqrt(max(v_pooled * df / chi_lo - meas, 0.0))
            spread_lo = math.sqrt(max(v_pooled * df / chi_hi - meas, 0.0))
            if shift_lo > 0 and spread_hi < threshold * shift_lo:
                spread = math.sqrt(max(v_pooled - meas, 0.0))
                findings.append(LeakFinding(
                    t, name, channel, abs(d) / max(size, 1e-300), math.inf if spread == 0 else abs(d) / spread,
                    spread_hi / shift_lo,
                ))
            elif spread_lo < threshold * shift_hi:
                undecided.append(f"step {t}: '{name}' moves the {channel} at step {t + 1}")
    return findings, undecided
