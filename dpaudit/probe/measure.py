"""Per-step measurements: the coupling check, the realised noise scale and the realised sensitivity.

Notation: ``out(D, s)`` is the mechanism's output (all parameter tensors
flattened) on batch ``D`` when its random state was seeded with ``s``, always
on a fresh copy of the mechanism's state before the step. ``n_j`` is the size
of parameter tensor ``j``.

**Coupled (exact) measurement.** When two copies seeded alike draw the same
noise, ``out(D, s) = f(D) + s_j·z_j(s)`` per tensor, and

* the noise difference ``d = out(D, s1) − out(D, s2) = s_j·(z(s1) − z(s2))`` has
  the same random part at every step (``s1, s2`` are fixed for the run), so the
  ratio of the noise scale at step t to that at a reference step is exact
  (``d_t,j = r_t,j·d_ref,j``); the absolute scale is estimated once for the
  run from one extra pair of fresh seeds per step (n_j per step degrees of
  freedom, pooled over all steps where the ratio is exact);
* for a neighbouring batch ``D'`` (one example added or removed) the noise
  scale ratio ``ρ_j = s_j(D')/s_j(D)`` is exact (``d'_j = ρ_j·d_j``; a ratio that
  is not exact means the draws were not aligned, and the probe falls back).
  When ``ρ = 1`` (to :data:`BATCH_RATIO_RTOL`) the shift
  ``Δ_j = out(D', s) − out(D, s) = f_j(D') − f_j(D)`` has no noise in it at all.
  When ``ρ ≠ 1`` the noise scale depends on the batch (reported separately);
  ``(ρ_j − 1)·noise`` is left in Δ, so Δ is averaged over both seeds and the
  left-over noise's expected share is subtracted from ‖Δ_j‖² and counted in
  the standard error.

The realised noise multiplier for ``D'`` is the Gaussian shift in noise units,
``σ̂ = (Σ_j ‖Δ_j‖² / s_j²)^(-1/2)`` with ``s_j = min(s_j(D), s_j(D'))``, which
is ``s/‖Δ‖`` for noise of one scale; the step's ``σ̂_t`` is the smallest over
the canaries.

**Uncoupled.** When copies share their draws through the mechanism's state
(mode ``state``) the shift is still exact but the noise comes from
consecutive calls; when nothing couples the draws (mode ``none``) both the
noise and the shift come from repeated independent draws
(:func:`draws`, :func:`measure_shift_draws`) and are turned into σ̂ with
confidence limits by :mod:`dpaudit.probe.uncoupled`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from dpaudit.probe.calls import Caller
from dpaudit.probe.gradients import Batch, Canary, SyntheticGradients
from dpaudit.probe.randomness import derive_seed

#: Relative tolerance for "the same noise up to scale" (float64 mechanisms reach ~1e-15).
PROPORTIONAL_RTOL = 1e-4
#: A noise-scale ratio further than this from 1 counts as a dependence on the batch.
BATCH_RATIO_RTOL = 1e-5
#: Two outputs closer than this (relative to their size) count as identical.
IDENTICAL_RTOL = 1e-12
#: Draws of the batch itself per step for the noise level when the draws are not coupled.
UNCOUPLED_NOISE_DRAWS = 4
#: Draws per side (the batch, and each neighbour) for the shift without coupling, in total
#: over the shift steps: the shift's relative standard error is about σ·sqrt(2/this).
SHIFT_DRAWS = 6400
#: Steps (spread over the uncoupled part of the run) where the shift is measured.
SHIFT_STEPS = 8
#: The neighbour measured without coupling (index into CANARY_NAMES): a huge canary in a
#: random direction, whose norm is huge in every tensor and coordinate too, so that clipping
#: of any granularity shows in it. Every extra neighbour would cost SHIFT_DRAWS more calls.
UNCOUPLED_CANARIES = (0,)
#: Draws of half the batch for the batch-size comparison without coupling.
HALF_BATCH_DRAWS = 32

EXACT, STATE, NONE = "exact", "state", "none"


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return float(np.max(np.abs(a - b), initial=0.0)) <= IDENTICAL_RTOL * scale


# ----------------------------------------------------------------------------
# Coupling check
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CouplingCheck:
    """How a mechanism's randomness responds to seeding (see the module docstring).

    ``mode``: ``"exact"`` (same seed → same draws, different seed → different
    draws), ``"state"`` (draws ignore the seed but copies of the state share
    them) or ``"none"`` (two copies seeded alike draw differently).
    """

    mode: str
    reason: str = ""
    input_mutated: bool = False


def check_coupling(
    caller: Caller, base: Any, tensors: Sequence, step: int, epoch: int, seed: int
) -> CouplingCheck:
    """Three calls on copies: same seed twice, then another seed."""
    before = [t.clone() for t in tensors]
    s_a, s_b = derive_seed(seed, 11), derive_seed(seed, 12)
    what = "coupling check"
    o1 = caller.on_copy(base, tensors, step, epoch, s_a, what)
    o2 = caller.on_copy(base, tensors, step, epoch, s_a, what)
    o3 = caller.on_copy(base, tensors, step, epoch, s_b, what)
    mutated = any(not bool((x == y).all()) for x, y in zip(before, tensors))
    if mutated:
        # The mechanism edits its input: give every call its own copy and look again.
        for x, y in zip(before, tensors):
            y.copy_(x)
        caller.clone_inputs = True
        again = check_coupling(caller, base, tensors, step, epoch, seed)
        return CouplingCheck(again.mode, again.reason, True)
    same = identical(o1, o2)
    differ = not identical(o1, o3)
    if same and differ:
        return CouplingCheck(EXACT)
    if not same:
        return CouplingCheck(
            NONE,
            "two copies of the mechanism seeded alike drew different noise: its randomness "
            "comes from a source the probe cannot seed (a module-level generator, OS entropy, "
            "a hand-written generator)",
        )
    m = caller.copy(base, step)
    x1 = caller.call(m, tensors, step, epoch, s_a, what)
    x2 = caller.call(m, tensors, step, epoch, s_b, what)
    if identical(x1, x2):
        return CouplingCheck(
            STATE,
            "the outputs change neither with the seed nor between consecutive calls: "
            "the mechanism adds no noise the probe can see",
        )
    return CouplingCheck(
        STATE,
        "the outputs ignore the seed but change between consecutive calls: the randomness "
        "is carried in the mechanism's state by a generator the probe cannot reseed",
    )


# ----------------------------------------------------------------------------
# Per-step records
# ----------------------------------------------------------------------------
@dataclass
class StepRecord:
    """What one step's measurement produced (arrays are per canary × per tensor)."""

    step: int
    mode: str
    batch_size: int
    canary_valid: np.ndarray            # [C] bool
    shift: np.ndarray                   # [C, J] ‖Δ_j‖ (exact) or |projection| (fallback)
    shift_se: np.ndarray                # [C, J] standard error of ``shift`` (0 when exact)
    rho: np.ndarray                     # [C, J] noise-scale ratio s(D')/s(D); 1 when unknown
    residual: np.ndarray | None = None  # [C, J] noise left in ``shift``, per unit of s_j(D) (ρ ≠ 1)
    # Noise, coupled: ratio to the reference pair (nan where not exactly proportional)
    noise_ratio: np.ndarray | None = None  # [J]
    fixed_sq: np.ndarray | None = None     # [J] ‖d_fixed,j‖²
    fresh_sq: np.ndarray | None = None     # [J] ‖d_fresh,j‖²
    fresh_other: np.ndarray | None = None  # output for the second fresh seed, until completed
    # Noise, fallback: variance estimate and its degrees of freedom
    noise_var: np.ndarray | None = None    # [J]
    noise_dof: np.ndarray | None = None    # [J]
    sensitivity_from: int | None = None    # fallback: the step whose sensitivity was measured here


#: p-value below which the per-tensor noise levels are not pooled into one.
POOLING_P_VALUE = 1e-3


class NoisePool:
    """Pools the coupled noise measurements of all steps into one absolute scale per tensor.

    When every tensor's noise moves by the same exact ratio at every step and
    their levels agree to within sampling error (chi-square test on the log
    variances, p > :data:`POOLING_P_VALUE`), the levels are pooled over
    tensors too, which makes the small tensors' scales as precise as the
    large ones'.
    """

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.reference: list[np.ndarray | None] = [None] * len(caller.sizes)
        self.reference_sq = np.zeros(len(caller.sizes))
        self.reference_step = [-1] * len(caller.sizes)
        self.uniform_ratios = True
        self.pooled_over_tensors = False

    def ratio_to_reference(self, d: np.ndarray, step: int = -1) -> np.ndarray:
        """r_j with d_j = r_j·d_ref,j exactly, or nan where not proportional (sets the reference)."""
        out = np.full(len(self.caller.sizes), np.nan)
        for j, (a, b) in enumerate(zip(self.caller.offsets[:-1], self.caller.offsets[1:])):
            dj = d[a:b]
            sq = float(dj @ dj)
            ref = self.reference[j]
            if ref is None:
                if sq > 0:
                    self.reference[j] = dj.copy()
                    self.reference_sq[j] = sq
                    self.reference_step[j] = step
                    out[j] = 1.0
                continue
            r = float(dj @ ref) / self.reference_sq[j]
            resid = dj - r * ref
            if float(resid @ resid) <= (PROPORTIONAL_RTOL ** 2) * max(sq, 1e-300):
                out[j] = r
            elif sq == 0:
                out[j] = 0.0
        if not (np.all(np.isfinite(out)) and np.ptp(out) <= PROPORTIONAL_RTOL * np.max(np.abs(out))):
            if not np.all(out == 0):
                self.uniform_ratios = False
        return out

    def scales(self, records: Sequence[StepRecord]) -> tuple[np.ndarray, np.ndarray]:
        """(s_ref,j, relative standard error) from the fresh pairs of all proportional steps."""
        from scipy.stats import chi2

        sizes = self.caller.sizes.astype(float)
        total = self.reference_sq.copy()
        count = np.where(self.reference_sq > 0, 1.0, 0.0)
        for rec in records:
            if rec.mode != EXACT or rec.noise_ratio is None or rec.fresh_sq is None:
                continue
            r = rec.noise_ratio
            ok = np.isfinite(r) & (r != 0)
            total[ok] += rec.fresh_sq[ok] / r[ok] ** 2
            count[ok] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(count > 0, total / (2 * sizes * count), 0.0)
            dof = sizes * count
            rel_se = np.where(count > 0, 1.0 / np.sqrt(2 * dof), np.inf)
        self.pooled_over_tensors = False
        if (self.uniform_ratios and len(set(self.reference_step)) == 1 and self.reference_step[0] >= 0
                and np.all(var > 0) and len(var) > 1):
            pooled = float(np.sum(dof * var) / np.sum(dof))
            stat = float(np.sum(dof / 2 * np.log(var / pooled) ** 2))
            if chi2.sf(stat, len(var) - 1) > POOLING_P_VALUE:
                var = np.full_like(var, pooled)
                rel_se = np.full_like(rel_se, 1.0 / math.sqrt(2 * float(np.sum(dof))))
                self.pooled_over_tensors = True
        return np.sqrt(var), rel_se


# ----------------------------------------------------------------------------
# Coupled measurement of one step
# ----------------------------------------------------------------------------
def _pair_ratio(caller: Caller, d: np.ndarray, d_new: np.ndarray) -> tuple[np.ndarray, bool]:
    """ρ_j with d_new,j = ρ_j·d_j (inf when only d_new has noise), and whether all are exact."""
    rho = np.ones(len(caller.sizes))
    ok = True
    for j, (a, b) in enumerate(zip(caller.offsets[:-1], caller.offsets[1:])):
        x, y = d[a:b], d_new[a:b]
        xx, yy = float(x @ x), float(y @ y)
        if xx == 0 and yy == 0:
            continue
        if xx == 0:
            rho[j] = math.inf
            continue
        r = float(y @ x) / xx
        resid = y - r * x
        if float(resid @ resid) > (PROPORTIONAL_RTOL ** 2) * max(yy, r * r * xx):
            ok = False
        rho[j] = r
    return rho, ok


def complete_fresh_pair(caller: Caller, rec: StepRecord, own_output: np.ndarray) -> None:
    """Finish the fresh noise pair of an exact record with the run's own output at the step."""
    if rec.mode == EXACT and rec.fresh_other is not None:
        rec.fresh_sq = caller.per_tensor_sq(own_output - rec.fresh_other)
    rec.fresh_other = None


class CouplingLost(Exception):
    """The draws for a neighbouring batch were not aligned with those for the batch."""

    def __init__(self, canary: str) -> None:
        super().__init__(canary)
        self.canary = canary


#: Canaries whose own noise-scale ratio is measured (one more call each); the other
#: added canaries give a batch of the same size and reuse the ratio of the first.
OWN_RATIO = frozenset({0, 4, 5})


def measure_coupled(
    caller: Caller,
    pool: NoisePool | None,
    gen: SyntheticGradients,
    base: Any,
    batch: Batch,
    canaries: Sequence[Canary],
    epoch: int,
    seeds: tuple[int, int, int | None],
    mode: str,
    n_canary_slots: int,
) -> StepRecord:
    """One step with coupled draws (mode ``exact``), or with draws shared through copies (``state``).

    ``seeds`` are the fixed pair (s1, s2) and one seed of a fresh pair (or
    ``None``); the other half of the fresh pair is the run's own call at this
    step, whose output the caller passes to :func:`complete_fresh_pair`.
    The added canaries not in
    :data:`OWN_RATIO` reuse the noise ratio of the first canary; if their own
    ratio differed, noise would be left in their shift, which can only lower σ̂.

    Raises:
        CouplingLost: in exact mode, when a neighbouring batch's noise is not an
            exact multiple of the batch's (the draws were not aligned).
    """
    t = batch.step
    s1, s2, fb = seeds
    D = batch.tensors
    exact = mode == EXACT
    o1 = caller.on_copy(base, D, t, epoch, s1, "the batch itself")
    J = len(caller.sizes)
    rec = StepRecord(
        step=t, mode=mode, batch_size=batch.size,
        canary_valid=np.zeros(n_canary_slots, dtype=bool),
        shift=np.zeros((n_canary_slots, J)), shift_se=np.zeros((n_canary_slots, J)),
        rho=np.ones((n_canary_slots, J)), residual=np.zeros((n_canary_slots, J)),
    )
    if exact:
        o2 = caller.on_copy(base, D, t, epoch, s2, "the batch itself")
        d = o1 - o2
        rec.noise_ratio = pool.ratio_to_reference(d, t)
        rec.fixed_sq = caller.per_tensor_sq(d)
        if fb is not None:
            rec.fresh_other = caller.on_copy(base, D, t, epoch, fb, "the batch itself")
    else:
        d = np.zeros_like(o1)
    shared_rho = np.ones(J)
    for i, canary in enumerate(canaries):
        what = f"the batch after '{canary.name}'"
        nb = gen.neighbour(batch, canary)
        p1 = caller.on_copy(base, nb, t, epoch, s1, what)
        p2 = None
        if exact and i in OWN_RATIO:
            p2 = caller.on_copy(base, nb, t, epoch, s2, what)
            rho, ok = _pair_ratio(caller, d, p1 - p2)
            if not ok:
                raise CouplingLost(canary.name)
            if i == 0:
                shared_rho = rho
        elif exact:
            rho = shared_rho
        else:
            rho = np.ones(J)
        # Δ = out(D', s) − out(D, s): with ρ = 1 the noise cancels exactly; otherwise
        # (ρ − 1)·noise is left, averaged over the seeds available and debiased later.
        delta = p1 - o1 if p2 is None else 0.5 * ((p1 - o1) + (p2 - o2))
        seeds_used = 1.0 if p2 is None else 2.0
        shift = np.sqrt(caller.per_tensor_sq(delta))
        changed = np.abs(rho - 1.0) > BATCH_RATIO_RTOL
        shift = np.where(np.isinf(rho) | (rho == 0.0), math.inf, shift)  # noise in only one of the two
        rec.residual[i] = np.where(changed & np.isfinite(rho), np.abs(rho - 1.0) / math.sqrt(seeds_used), 0.0)
        rec.canary_valid[i] = True
        rec.shift[i] = shift
        rec.rho[i] = rho
    return rec


def measure_batch_ratio(
    caller: Caller, base: Any, tensors: Sequence, batch: Batch, epoch: int, seeds: tuple[int, int],
    what: str,
) -> tuple[int, int, float] | None:
    """Coupled noise-scale ratio between ``batch`` and another batch ``tensors``, pooled over tensors."""
    t = batch.step
    s1, s2 = seeds
    d = (caller.on_copy(base, batch.tensors, t, epoch, s1, "the batch itself")
         - caller.on_copy(base, batch.tensors, t, epoch, s2, "the batch itself"))
    d_new = (caller.on_copy(base, tensors, t, epoch, s1, what)
             - caller.on_copy(base, tensors, t, epoch, s2, what))
    dd, nn = float(d @ d), float(d_new @ d_new)
    b_new = int(tensors[0].shape[0])
    if dd == 0 and nn == 0:
        return None
    ratio = math.inf if dd == 0 else math.sqrt(nn / dd)
    return (batch.size, b_new, ratio)


# ----------------------------------------------------------------------------
# Fallback: repeated independent draws
# ----------------------------------------------------------------------------
def draws(
    caller: Caller, base: Any, tensors: Sequence, step: int, epoch: int, seeds: Sequence[int],
    mode: str, what: str,
) -> np.ndarray:
    """Independent outputs for one input: separate copies, or consecutive calls on one copy.

    With ``mode == "state"`` copies share their draws, so the draws come from
    consecutive calls on one copy (its state moves on between them; the
    mechanism is assumed to change little in one call).
    """
    if mode == STATE:
        m = caller.copy(base, step)
        return np.stack([caller.call(m, tensors, step, epoch, s, what) for s in seeds])
    return np.stack([caller.on_copy(base, tensors, step, epoch, s, what) for s in seeds])


def noise_from_draws(caller: Caller, outs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-tensor noise variance (pooled over coordinates) and its degrees of freedom."""
    k = outs.shape[0]
    centred = outs - outs.mean(axis=0, keepdims=True)
    ss = caller.per_tensor_sq(centred).sum(axis=0)
    dof = (k - 1) * caller.sizes.astype(float)
    return ss / dof, dof


def measure_shift_draws(
    caller: Caller,
    gen: SyntheticGradients,
    base: Any,
    batch: Batch,
    canaries: Sequence[Canary],
    epoch: int,
    seed: int,
    k: int,
    n_canary_slots: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean shift of each neighbour from ``k`` independent draws per side (mode ``none``).

    Returns ``(shift, shift_se, valid, outs)``: per neighbour slot and tensor,
    the mean of the neighbour's outputs minus the mean of the batch's, projected
    on the neighbour's own direction in that tensor (a full-norm estimate would
    drown in the noise of thousands of coordinates), its standard error from the
    draws, which slots were measured, and the batch's own ``k`` outputs.
    """
    t = batch.step
    J = len(caller.sizes)
    seeds = [derive_seed(seed, t, 30, i) for i in range(k)]
    outs = draws(caller, base, batch.tensors, t, epoch, seeds, NONE, "the batch itself")
    shift = np.zeros((n_canary_slots, J))
    shift_se = np.zeros((n_canary_slots, J))
    valid = np.zeros(n_canary_slots, dtype=bool)
    for i, canary in enumerate(canaries):
        if i not in UNCOUPLED_CANARIES:
            continue
        nb = gen.neighbour(batch, canary)
        outs_c = draws(caller, base, nb, t, epoch, [derive_seed(seed, t, 31, i, j) for j in range(k)],
                       NONE, f"the batch after '{canary.name}'")
        u = canary.direction(batch).to(torch.float64).numpy()
        norms = np.sqrt(caller.per_tensor_sq(u))
        unit = u / np.repeat(np.where(norms > 0, norms, 1.0), caller.sizes)
        pc = caller.per_tensor_dot(outs_c, unit[None, :])   # [k, J]
        pb = caller.per_tensor_dot(outs, unit[None, :])
        shift[i] = pc.mean(axis=0) - pb.mean(axis=0)
        shift_se[i] = np.sqrt(pc.var(axis=0, ddof=1) / k + pb.var(axis=0, ddof=1) / k)
        valid[i] = True
    return shift, shift_se, valid, outs


# ----------------------------------------------------------------------------
# From records to σ̂
# ----------------------------------------------------------------------------
def realised_sigma(
    rec: StepRecord, noise_std: np.ndarray, noise_rel_se: np.ndarray, sizes: np.ndarray,
) -> tuple[float, float, int, float]:
    """σ̂ of a step from a coupled record's per-canary shifts and the step's per-tensor noise scales.

    For each neighbour, σ̂ = (Σ_j ‖Δ_j‖² / s_j²)^(-1/2) with s_j the smaller of
    the two batches' noise scales. Where the noise scale changed (ρ ≠ 1), the
    noise left in Δ is subtracted from ‖Δ_j‖² on average and counted in the
    standard error. Returns (σ̂, relative standard error, index of the worst
    neighbour, ‖Δ‖ of the worst neighbour).
    """
    best = (math.inf, 0.0, -1, 0.0)
    for c in np.flatnonzero(rec.canary_valid):
        rho = rec.rho[c]
        s = np.minimum(1.0, np.abs(rho)) * noise_std
        resid = (rec.residual[c] if rec.residual is not None else np.zeros_like(s)) * noise_std
        sh = rec.shift[c]
        with np.errstate(invalid="ignore"):
            sq = np.where(np.isinf(sh), math.inf, np.maximum(sh ** 2 - resid ** 2 * sizes, 0.0))
        sh = np.sqrt(sq)
        se = np.hypot(rec.shift_se[c], resid)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(sh == 0, 0.0, sh ** 2 / s ** 2)
        q = float(np.sum(terms))
        sigma = math.inf if q == 0 else (0.0 if math.isinf(q) else 1.0 / math.sqrt(q))
        if math.isfinite(q) and q > 0:
            w = terms / q
            with np.errstate(divide="ignore", invalid="ignore"):
                rel_shift = np.where(sh > 0, se / sh, 0.0)
            # Noise-scale errors may be shared by the tensors (pooled levels): add them linearly.
            rel = math.hypot(float(np.sum(w * noise_rel_se)), float(np.sqrt(np.sum(w ** 2 * rel_shift ** 2))))
        else:
            rel = 0.0
        if sigma < best[0] or best[2] < 0:
            best = (sigma, rel, int(c), float(np.sqrt(np.sum(sq))))
    return best
