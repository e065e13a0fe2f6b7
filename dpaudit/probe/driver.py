"""Drive a mechanism through a whole run and measure every step (the probe behind ``certify``)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np
import torch

from dpaudit.mechanism.loader import declared_sensitivity, declared_sigma, epoch_of
from dpaudit.mechanism.robustness import MechanismRaised, first_accepted_format, smallest_accepted_batch
from dpaudit.probe import measure
from dpaudit.probe.calls import Caller, checksum, source_of
from dpaudit.probe.confidence import (
    BATCH, DEFAULT_CONFIDENCE, NOISE_LEVEL, SENSITIVITY, SIGMA_TOLERANCE, ErrorBudget, lower_upper,
)
from dpaudit.probe.gradients import CANARY_NAMES, GRAD_DTYPE, PARAM_SHAPES, SyntheticGradients
from dpaudit.probe.measure import EXACT, NONE, STATE, BATCH_RATIO_RTOL, StepRecord
from dpaudit.probe.randomness import GlobalRandomState, Seeder, derive_seed, find_generators
from dpaudit.probe.result import BatchSizeDependence, ProbeResult
from dpaudit.probe.state_leaks import (
    UNCOUPLED_CHANNELS, UNCOUPLED_LEAK_STEPS, LEAK_CANARIES, check_state_leaks, check_state_leaks_uncoupled,
    choose_leak_steps,
)
from dpaudit.probe.uncoupled import ShiftMeasurement, pool_over_tensors, pool_shifts, pool_windows, sigma_bounds
from dpaudit.progress import track
from dpaudit.run_config import RunConfig

_KEEP_COMPARISONS = 6
#: Consecutive draws per batch for the batch-size comparison when draws are shared through the state.
STATE_BATCH_DRAWS = 16


def probe_mechanism(
    new_mechanism: Callable[[], Any],
    config: RunConfig,
    *,
    seed: int = 0,
    leak_check_steps: int = 24,
    progress: bool = True,
    param_shapes=PARAM_SHAPES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> ProbeResult:
    """Measure the realised noise multiplier of every step of ``config``'s run, black box.

    Args:
        new_mechanism: returns a fresh instance of the mechanism (seed
            interface), constructed for ``config``.
        config: the run (N, B, epochs, σ, C); ``config.steps`` steps are probed.
        seed: seeds the synthetic data, the canaries and every measurement.
        leak_check_steps: at how many steps (spread over the run, the first
            four included) to look for undeclared data-dependent state.
        progress: show a tqdm progress bar on stderr.
        param_shapes: parameter shapes of the synthetic model (other layouts
            with as many parameters are tried if the mechanism refuses them).
        confidence: family-wise confidence of the statistical checks.

    Raises:
        InputError: the mechanism raised, returned a non-finite value or the
            wrong number or shapes of tensors on an input its run produces,
            declared a σ or sensitivity that is not a positive number, or
            cannot be deep-copied; the message names the file, the step and
            the cause. A failure on an input the run practically never
            produces (an empty batch) is a robustness note instead.

    torch's, numpy's and Python's global random states and torch's thread count
    are restored on return.
    """
    threads = torch.get_num_threads()
    with GlobalRandomState():
        torch.set_num_threads(1)  # tiny tensors: threads only add overhead
        try:
            probe = _Probe(new_mechanism, config, seed, leak_check_steps, progress, param_shapes, confidence)
            return probe.run()
        finally:
            torch.set_num_threads(threads)


class _Probe:
    def __init__(self, new_mechanism, config, seed, leak_check_steps, progress, shapes, confidence) -> None:
        self.new_mechanism = new_mechanism
        self.config = config
        self.seed = int(seed)
        self.progress = progress
        self.shapes = tuple(tuple(s) for s in shapes)
        self.dtype = GRAD_DTYPE
        self.budget = ErrorBudget(confidence)
        self.T = config.steps
        self.leak_steps = choose_leak_steps(self.T, leak_check_steps)
        self.notes: list[str] = []
        self.robustness: list[str] = []
        self.defeated: str | None = None
        self.leaks = []
        self.leak_modes: dict[int, str] = {}
        self.undecided_leaks: list[str] = []
        self.extra_batch_ratios: list[tuple[int, int, int, float]] = []
        self.batch_tests: list[tuple[int, int, int, float, float]] = []  # step, B, B', ratio, z
        self.shift_steps: set[int] = set()
        self.none_leak_steps: set[int] = set()
        self.shifts: list = []
        self.input_format = ""

    # ----- helpers ------------------------------------------------------
    def own_seed(self, step: int) -> int:
        """Seed of the run's own call at ``step`` (also one half of the step's fresh noise pair)."""
        return derive_seed(self.seed, step, 3)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    _RANK = {EXACT: 2, STATE: 1, NONE: 0}

    def _set_mode(self, check: measure.CouplingCheck, step: int) -> None:
        """Adopt a coupling check's mode; once defeated, the coupling is never trusted again."""
        if check.input_mutated:
            self._note("the mechanism modifies the per-sample gradients it is given in place; "
                       "every call was given its own copy")
        if self.mode is not None and self._RANK[check.mode] >= self._RANK[self.mode]:
            return
        if check.mode != EXACT and self.defeated is None:
            self.defeated = f"{check.reason} (from step {step})"
        if self.mode is not None:
            self._note(f"coupling changed from '{self.mode}' to '{check.mode}' at step {step}")
        self.mode = check.mode
        if self.mode == NONE:
            self._plan_uncoupled(step)

    def _plan_uncoupled(self, start: int) -> None:
        """Spread the shift measurements and the statistical leak checks over steps ``start``… of the run."""
        last = self.T - 1
        count = min(measure.SHIFT_STEPS, last - start + 1)
        self.shift_steps = {int(round(x)) for x in np.linspace(start, last, count)}
        later = [s for s in self.leak_steps if s >= start]
        pick = np.linspace(0, len(later) - 1, min(UNCOUPLED_LEAK_STEPS, len(later))) if later else []
        self.none_leak_steps = {later[int(round(i))] for i in pick}

    # ----- the inputs the mechanism accepts -------------------------------
    def _choose_input(self, source: str) -> None:
        """Pick the gradient layout and dtype, and the smallest batch the mechanism accepts.

        The synthetic model's float64 tensors come first; if the mechanism
        raises on them, float32 (what real training gives) and other layouts
        with as many parameters are tried before its error is reported (a
        wrongly shaped or non-finite output is reported at once).
        """
        cfg = self.config

        def first_call(shapes, dtype) -> None:
            gen = SyntheticGradients(cfg, shapes, seed=self.seed, empty_step=-1, dtype=dtype)
            mech = self.new_mechanism()
            caller = Caller(source, shapes, Seeder(find_generators(mech)))
            caller.on_copy(mech, gen.batch(0).tensors, 0, epoch_of(0, cfg), self.seed, "the first batch")

        self.shapes, self.dtype, self.input_format, note = first_accepted_format(
            self.shapes, (GRAD_DTYPE, torch.float32), first_call)
        if note:
            self._note(note)

        def attempt(size: int) -> None:
            gen = SyntheticGradients(cfg, self.shapes, seed=self.seed, empty_step=-1, dtype=self.dtype)
            mech = self.new_mechanism()
            caller = Caller(source, self.shapes, Seeder(find_generators(mech)))
            first = gen.batch(0)
            caller.on_copy(mech, gen.first(first, size), 0, epoch_of(0, cfg), self.seed, "a small batch")
            if self.T > 1:  # also after a step, as the run would meet it
                caller.call(mech, first.tensors, 0, epoch_of(0, cfg), self.seed, "the first batch")
                caller.call(mech, gen.first(gen.batch(1), size), 1, epoch_of(1, cfg), self.seed, "a small batch")

        self.min_batch, refused = smallest_accepted_batch(attempt, cfg, source)
        if refused is not None:
            self.robustness.append(refused.note())

    def _use_float32(self, caller, mech) -> bool:
        """Without coupling nothing needs float64's exact differences: take float32, as training does.

        Halves the cost of the thousands of draws the uncoupled measurement
        needs. Kept as it is when the mechanism refuses float32 gradients.
        """
        if self.dtype == torch.float32:
            return False
        gen = SyntheticGradients(self.config, self.shapes, seed=self.seed, dtype=torch.float32,
                                 min_batch=self.min_batch)
        try:
            caller.on_copy(mech, gen.batch(0).tensors, 0, epoch_of(0, self.config), self.seed, "the first batch")
        except MechanismRaised:
            return False
        self.gen, self.dtype = gen, torch.float32
        self.input_format = self.input_format.replace("float64", "float32", 1)
        self._note("the draws are not coupled, so the probe used float32 gradients (as training does): "
                   "float64's exact differences are not needed")
        return True

    # ----- the run ------------------------------------------------------
    def run(self) -> ProbeResult:
        start = time.perf_counter()
        cfg, T = self.config, self.T
        mech = self.new_mechanism()
        source = source_of(mech)
        self._choose_input(source)
        gen = self.gen = SyntheticGradients(cfg, self.shapes, seed=self.seed, dtype=self.dtype,
                                            min_batch=self.min_batch)
        seeder = Seeder(find_generators(mech))
        caller = Caller(source, self.shapes, seeder)
        pool = measure.NoisePool(caller)
        self.mode = None
        n_slots = len(CANARY_NAMES)
        fixed_seeds = (derive_seed(self.seed, 1), derive_seed(self.seed, 2))
        check_steps = {0, 1} | set(self.leak_steps)

        batch_sizes = np.zeros(T, dtype=np.int64)
        sig_decl = np.zeros(T)
        sens_decl = np.zeros(T)
        records: list[StepRecord] = []
        next_batch = gen.batch(0)
        for t in track(range(T), "probe", total=T, unit="step", enabled=self.progress, leave=False):
            batch = next_batch
            next_batch = gen.batch(t + 1) if t + 1 < T else None
            epoch = epoch_of(t, cfg)
            batch_sizes[t] = batch.size
            sig_decl[t] = declared_sigma(mech, t, epoch)
            sens_decl[t] = declared_sensitivity(mech, t, epoch, cfg.max_grad_norm)

            if t in check_steps or self.mode is None:
                paths = find_generators(mech)
                if paths != caller.seeder.private_paths:
                    caller.seeder = Seeder(paths)
                self._set_mode(measure.check_coupling(caller, mech, batch.tensors, t, epoch,
                                                      derive_seed(self.seed, t, 10)), t)
                if t == 0 and self.mode == NONE and self._use_float32(caller, mech):
                    gen = self.gen
                    batch, next_batch = gen.batch(0), (gen.batch(1) if T > 1 else None)
            before = checksum(batch.tensors) if not caller.clone_inputs else None
            rec = self._measure_step(caller, pool, mech, batch, epoch, fixed_seeds, n_slots, sens_decl[t])
            if before is not None and checksum(batch.tensors) != before:
                caller.clone_inputs = True
                self._note("the mechanism modifies the per-sample gradients it is given in place; "
                           "every call was given its own copy")
                batch = gen.batch(t)
                rec = self._measure_step(caller, pool, mech, batch, epoch, fixed_seeds, n_slots, sens_decl[t])
            records.append(rec)
            self._extra_checks(caller, mech, batch, next_batch, epoch, fixed_seeds, sig_decl[t])
            own = caller.call(mech, batch.tensors, t, epoch, self.own_seed(t), "the run's own step")
            measure.complete_fresh_pair(caller, rec, own)

        return self._assemble(caller, pool, records, batch_sizes, sig_decl, sens_decl,
                              time.perf_counter() - start)

    def _measure_step(self, caller, pool, mech, batch, epoch, fixed_seeds, n_slots, sensitivity) -> StepRecord:
        t = batch.step
        canaries = self.gen.canaries(batch)
        if self.mode == EXACT:
            seeds = fixed_seeds + (derive_seed(self.seed, t, 4),)
            try:
                return measure.measure_coupled(caller, pool, self.gen, mech, batch, canaries, epoch,
                                               seeds, EXACT, n_slots)
            except measure.CouplingLost as lost:
                self._set_mode(measure.CouplingCheck(
                    NONE,
                    f"the noise drawn for the batch after '{lost.canary}' was not a rescaling of the "
                    "noise drawn for the batch itself with the same seed (the number or order of "
                    "random draws depends on the data)"), t)
        if self.mode == STATE:
            seeds = fixed_seeds + (None,)
            rec = measure.measure_coupled(caller, None, self.gen, mech, batch, canaries, epoch,
                                          seeds, STATE, n_slots)
            # Two consecutive calls on a copy draw what the run itself draws at this step and
            # the next (copies continue the same stream), so each draw also serves the next
            # step's pair: the pairs overlap, and their pooled variance has the information of
            # 2/3 of independent pairs (Var of Σ_t (z_t − z_t+1)² is 12 per term, not 8).
            outs = measure.draws(caller, mech, batch.tensors, t, epoch,
                                 [derive_seed(self.seed, t, 30, i) for i in range(2)], STATE, "the batch itself")
            rec.noise_var, dof = measure.noise_from_draws(caller, outs)
            rec.noise_dof = dof * (2.0 / 3.0)
            self._note("noise was drawn through the mechanism's state: copies share their draws, so "
                       "the sensitivity is exact but the noise level comes from consecutive calls")
            return rec
        J = len(caller.sizes)
        rec = StepRecord(
            step=t, mode=NONE, batch_size=batch.size, canary_valid=np.zeros(n_slots, dtype=bool),
            shift=np.zeros((n_slots, J)), shift_se=np.zeros((n_slots, J)), rho=np.ones((n_slots, J)),
        )
        if t in self.shift_steps:
            k = max(measure.SHIFT_DRAWS // len(self.shift_steps), 16)
            shift, shift_se, valid, outs = measure.measure_shift_draws(
                caller, self.gen, mech, batch, canaries, epoch, self.seed, k, n_slots)
            self.shifts.append(ShiftMeasurement(t, float(sensitivity), shift, shift_se, valid))
            self._uncoupled_batch_ratio(caller, mech, batch, epoch, outs, measure.HALF_BATCH_DRAWS)
        else:
            outs = measure.draws(caller, mech, batch.tensors, t, epoch,
                                 [derive_seed(self.seed, t, 30, i) for i in range(measure.UNCOUPLED_NOISE_DRAWS)],
                                 NONE, "the batch itself")
        rec.noise_var, rec.noise_dof = measure.noise_from_draws(caller, outs)
        return rec

    def _uncoupled_batch_ratio(self, caller, mech, batch, epoch, outs, k_half: int) -> None:
        """Noise of the batch vs its first half from repeated draws (z-test on the log-variance ratio)."""
        half = batch.size // 2
        if half < max(self.min_batch, 1):
            return
        t = batch.step
        seeds = [derive_seed(self.seed, t, 60, i) for i in range(k_half)]
        half_outs = measure.draws(caller, mech, self.gen.half(batch), t, epoch, seeds, self.mode,
                                  "the first half of the batch")
        v_full, dof_full = measure.noise_from_draws(caller, outs)
        v_half, dof_half = measure.noise_from_draws(caller, half_outs)
        n = caller.sizes.astype(float)
        vf, vh = float(np.sum(v_full * n)), float(np.sum(v_half * n))
        if vf <= 0 and vh <= 0:
            return
        se = math.sqrt(2.0 / float(np.sum(dof_full)) + 2.0 / float(np.sum(dof_half)))
        ratio = math.inf if vf == 0 else math.sqrt(vh / vf)
        z = math.inf if vf == 0 or vh == 0 else abs(math.log(vh / vf)) / se
        self.batch_tests.append((t, batch.size, half, ratio, z))

    def _extra_checks(self, caller, mech, batch, next_batch, epoch, fixed_seeds, declared_sigma) -> None:
        """Batch-size comparisons and the state-leak check at the leak-check steps."""
        t = batch.step
        next_epoch = epoch_of(t + 1, self.config)
        if self.mode == NONE:
            if t in self.none_leak_steps and next_batch is not None:
                tests = len(self.none_leak_steps) * len(LEAK_CANARIES) * len(UNCOUPLED_CHANNELS)
                found, undecided = check_state_leaks_uncoupled(
                    caller, self.gen, mech, batch, next_batch, epoch, next_epoch, self.seed, declared_sigma,
                    self.budget, tests)
                self._leak_result(t, NONE, found, undecided)
            return
        if t not in self.leak_steps:
            return
        if self.mode == STATE:
            seeds = [derive_seed(self.seed, t, 70, i) for i in range(STATE_BATCH_DRAWS)]
            outs = measure.draws(caller, mech, batch.tensors, t, epoch, seeds, STATE, "the batch itself")
            self._uncoupled_batch_ratio(caller, mech, batch, epoch, outs, STATE_BATCH_DRAWS)
        else:
            others = [(self.gen.half(batch), "the first half of the batch")] if batch.size // 2 >= max(
                self.min_batch, 1) else []
            if batch.size > 0 and self.min_batch == 0:
                others.append((self.gen.empty(), "an empty batch"))
            for tensors, what in others:
                r = measure.measure_batch_ratio(caller, mech, tensors, batch, epoch, fixed_seeds, what)
                if r is not None and abs(r[2] - 1.0) > BATCH_RATIO_RTOL:
                    self.extra_batch_ratios.append((t,) + r)
        if next_batch is not None:
            found, undecided = check_state_leaks(
                caller, self.gen, mech, batch, next_batch, epoch, next_epoch, self.seed, declared_sigma,
                self.mode)
            self._leak_result(t, self.mode, found, undecided)

    def _leak_result(self, step: int, mode: str, found, undecided) -> None:
        self.leaks.extend(found)
        self.leak_modes[step] = mode
        self.undecided_leaks.extend(undecided)

    # ----- results ------------------------------------------------------
    def _assemble(self, caller, pool, records, batch_sizes, sig_decl, sens_decl, seconds) -> ProbeResult:
        T = self.T
        sizes = caller.sizes.astype(float)
        s_ref, rel_ref = pool.scales(records)
        z_noise = self.budget.z(NOISE_LEVEL, T)
        uncoupled = [r for r in records if r.mode != EXACT]
        tensors_pooled = False
        if uncoupled:
            steps = [r.step for r in uncoupled]
            scale = np.array([sig_decl[t] * sens_decl[t] for t in steps])
            var, dof, tensors_pooled = pool_over_tensors(np.stack([r.noise_var for r in uncoupled]),
                                                         np.stack([r.noise_dof for r in uncoupled]))
            var, dof, split = pool_windows(steps, var, dof, scale)
            for r, v, d in zip(uncoupled, var, dof):
                r.noise_var, r.noise_dof = v, d
            if split:
                self._note(f"the noise level changed within {len(split)} window(s) of "
                           "consecutive steps (first steps " + ", ".join(map(str, split[:6])) + "); there "
                           "each step's own draws were used")
        shifts = []
        if self.shifts:
            n_canaries = len(measure.UNCOUPLED_CANARIES)
            shifts, split = pool_shifts(self.shifts, self.budget.z(SENSITIVITY, n_canaries),
                                        self.budget.z(SENSITIVITY, n_canaries * len(self.shifts)))
            if split:
                self._note("the shift one example makes differed between the steps where it was measured for "
                           + ", ".join(f"'{CANARY_NAMES[c]}'" for c in split)
                           + "; each of those steps was kept and the largest decides")
        sigma_hat = np.zeros(T)
        rel_se = np.zeros(T)
        lower = np.zeros(T)
        upper = np.zeros(T)
        worst = np.full(T, -1, dtype=np.int64)
        sens = np.zeros(T)
        noise_std = np.zeros(T)
        coupled = np.zeros(T, dtype=bool)
        events: list[tuple[int, int, int, float]] = []
        content = False
        for rec in records:
            t = rec.step
            if rec.mode == NONE:
                s = np.sqrt(rec.noise_var)
                noise_std[t] = math.sqrt(float(np.sum(sizes * s ** 2)) / float(np.sum(sizes)))
                (sigma_hat[t], lower[t], upper[t], rel_se[t], worst[t], norm_shift) = sigma_bounds(
                    rec.noise_var, rec.noise_dof, sig_decl[t] * sens_decl[t], sig_decl[t], shifts, z_noise)
                sens[t] = norm_shift * sens_decl[t]
                continue
            if rec.mode == EXACT:
                r = rec.noise_ratio
                prop = np.isfinite(r)
                pairs = 1.0 if rec.fresh_sq is None else 2.0
                own_sq = rec.fixed_sq + (0.0 if rec.fresh_sq is None else rec.fresh_sq)
                s = np.where(prop, np.abs(np.nan_to_num(r)) * s_ref, np.sqrt(own_sq / (2 * pairs * sizes)))
                rel = np.where(prop, rel_ref, 1.0 / np.sqrt(2 * pairs * sizes))
                coupled[t] = True
            else:
                s = np.sqrt(rec.noise_var)
                rel = 1.0 / np.sqrt(2 * rec.noise_dof)
            rel = np.where(s > 0, rel, 0.0)
            sigma_hat[t], rel_se[t], worst[t], sens[t] = measure.realised_sigma(rec, s, rel, sizes)
            lower[t], upper[t] = lower_upper(sigma_hat[t], rel_se[t], z_noise)
            noise_std[t] = math.sqrt(float(np.sum(sizes * s ** 2)) / float(np.sum(sizes)))
            if rec.mode == EXACT:
                ratios = []
                for c in np.flatnonzero(rec.canary_valid):
                    rho = rec.rho[c]
                    w = rec.fixed_sq
                    if float(np.sum(w)) == 0:
                        continue
                    ratio = math.inf if np.any(np.isinf(rho) & (w == 0)) else math.sqrt(
                        float(np.sum(rho ** 2 * w)) / float(np.sum(w)))
                    other = rec.batch_size - 1 if CANARY_NAMES[c].startswith("remove") else rec.batch_size + 1
                    if CANARY_NAMES[c].startswith("add"):
                        ratios.append(ratio)
                    if abs(ratio - 1.0) > BATCH_RATIO_RTOL:
                        events.append((t, rec.batch_size, other, ratio))
                if ratios and max(ratios) - min(ratios) > BATCH_RATIO_RTOL * max(1.0, min(ratios)):
                    content = True
        events.extend(self.extra_batch_ratios)
        z_batch = self.budget.z_two_sided(BATCH, max(len(self.batch_tests), 1))
        events.extend((t, b, b2, ratio) for t, b, b2, ratio, z in self.batch_tests if z > z_batch)
        dependence = None
        if events:
            events.sort()
            extreme = max(events, key=lambda e: abs(math.log(e[3])) if 0 < e[3] < math.inf else math.inf)
            keep = list(dict.fromkeys(events[:_KEEP_COMPARISONS - 1] + [extreme]))
            dependence = BatchSizeDependence(
                steps=tuple(sorted({e[0] for e in events})),
                comparisons=tuple(keep),
                max_relative_change=max(abs(e[3] - 1.0) for e in events),
                varies_with_content=content,
            )
            if any(r.mode == EXACT for r in records):
                self._note("where the noise scale changed between neighbouring batches the coupled "
                           "difference does not cancel the noise: σ̂ compares the shift of the output "
                           "(with the left-over noise subtracted on average) with the smaller of the "
                           "two noise scales")
        if pool.pooled_over_tensors or tensors_pooled:
            self._note("the noise has one scale in every parameter tensor (to within sampling error); "
                       "its level was pooled over the tensors")
        if self.defeated is None:
            coupling = "exact"
            if caller.seeder.private_paths:
                coupling += f" (reseeding the mechanism's own generator(s): {caller.seeder.describe()})"
        else:
            coupling = f"defeated: {self.defeated}"
            self._note(f"steps measured without coupling use repeated draws; the limits of σ̂ hold for all "
                       f"steps together at {self.budget.confidence:g} confidence, and a step passes when "
                       f"the lower limit is within {SIGMA_TOLERANCE:.0%} of the declared sigma")
            if self.shifts:
                self._note(f"without coupling the shift one example makes was measured from "
                           f"{measure.SHIFT_DRAWS} draws per side at {len(self.shifts)} spread steps "
                           f"({', '.join(map(str, sorted(s.step for s in self.shifts)))}); the other steps "
                           "share it")
        leak_check, leak_undecided = self._leak_summary()
        result = ProbeResult(
            steps=T,
            sample_rate=self.config.sample_rate,
            param_shapes=self.shapes,
            coupling=coupling,
            batch_sizes=batch_sizes,
            declared_sigma=sig_decl,
            declared_sensitivity=sens_decl,
            noise_std=noise_std,
            sensitivity=sens,
            sigma_hat=sigma_hat,
            sigma_hat_rel_se=rel_se,
            sigma_hat_lower=lower,
            sigma_hat_upper=upper,
            worst_canary=worst,
            coupled=coupled,
            leaks=tuple(self.leaks),
            leak_check_steps=tuple(sorted(self.leak_modes)),
            leak_check=leak_check,
            batch_size_dependence=dependence,
            notes=tuple(self.robustness + self.notes),
            robustness=tuple(self.robustness),
            confidence=self.budget.confidence,
            input_format=self.input_format,
            empty_step=self.gen.empty_step,
            seconds=seconds,
            calls=caller.calls,
        )
        open_steps = result.undecided_steps()
        noise_undecided = []
        if open_steps.size:
            w = int(open_steps[np.argmin(lower[open_steps] / sig_decl[open_steps])])
            noise_undecided.append(
                f"noise level: at {open_steps.size} of {T} steps the measurement cannot tell σ̂ from the "
                f"declared sigma within the {SIGMA_TOLERANCE:.0%} tolerance (e.g. step {w}: declared "
                f"{sig_decl[w]:.4g}, measured {sigma_hat[w]:.4g}, {self.budget.confidence:g} limits "
                f"[{lower[w]:.4g}, {upper[w]:.4g}])"
            )
        return dataclasses.replace(result, undecided=tuple(noise_undecided + leak_undecided))

    def _leak_summary(self) -> tuple[str, list[str]]:
        """The leak check's one-line description, and what it left undecided."""
        modes = self.leak_modes
        undecided_leaks = self.undecided_leaks
        if not modes:
            if self.T < 2:
                return "not run: the run has a single step", []
            return "not run", ["leak check: no step could be checked"]
        counts = {m: sum(1 for v in modes.values() if v == m) for m in (EXACT, STATE, NONE)}
        parts = []
        if counts[EXACT]:
            parts.append(f"{counts[EXACT]} step(s) with coupled draws")
        if counts[STATE]:
            parts.append(f"{counts[STATE]} step(s) with draws shared through the state")
        if counts[NONE]:
            parts.append(f"{counts[NONE]} step(s) from independent draws (statistical, "
                         f"{self.budget.confidence:g} family-wise)")
        text = "done at " + ", ".join(parts)
        out = []
        if undecided_leaks:
            how = ("the mechanism's draws cannot be varied without also moving its state"
                   if counts[STATE] else "the draws could not tell a release from noise-covered post-processing")
            out.append(
                f"leak check: one example changes the mechanism's later behaviour and {how} "
                f"({len(undecided_leaks)} case(s), e.g. {undecided_leaks[0]})"
            )
        return text, out
