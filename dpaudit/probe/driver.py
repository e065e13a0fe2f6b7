"""Drive a mechanism through a whole run and measure every step (the probe behind ``certify``)."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch

from dpaudit.mechanism.loader import declared_sensitivity, declared_sigma, epoch_of
from dpaudit.probe import measure
from dpaudit.probe.calls import Caller, checksum, source_of
from dpaudit.probe.gradients import CANARY_NAMES, PARAM_SHAPES, SyntheticGradients
from dpaudit.probe.measure import EXACT, NONE, STATE, BATCH_RATIO_RTOL, StepRecord
from dpaudit.probe.randomness import GlobalRandomState, Seeder, derive_seed, find_generators
from dpaudit.probe.result import BatchSizeDependence, ProbeResult
from dpaudit.probe.state_leaks import check_state_leaks, choose_leak_steps
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
        param_shapes: parameter shapes of the synthetic model.

    Raises:
        InputError: the mechanism raised, returned a non-finite value or the
            wrong number or shapes of tensors, declared a σ or sensitivity
            that is not a positive number, or cannot be deep-copied; the
            message names the file, the step and the cause.

    torch's, numpy's and Python's global random states and torch's thread count
    are restored on return.
    """
    threads = torch.get_num_threads()
    with GlobalRandomState():
        torch.set_num_threads(1)  # tiny tensors: threads only add overhead
        try:
            return _Probe(new_mechanism, config, seed, leak_check_steps, progress, param_shapes).run()
        finally:
            torch.set_num_threads(threads)


class _Probe:
    def __init__(self, new_mechanism, config, seed, leak_check_steps, progress, shapes) -> None:
        self.new_mechanism = new_mechanism
        self.config = config
        self.seed = int(seed)
        self.progress = progress
        self.shapes = tuple(tuple(s) for s in shapes)
        self.T = config.steps
        self.gen = SyntheticGradients(config, self.shapes, seed=self.seed)
        self.leak_steps = choose_leak_steps(self.T, leak_check_steps)
        self.fallback_sens_steps = {
            int(round(x))
            for x in np.linspace(0, self.T - 1, min(measure.FALLBACK_SENSITIVITY_STEPS, self.T))
        }
        self.notes: list[str] = []
        self.defeated: str | None = None
        self.leaks = []
        self.leak_skipped: list[int] = []
        self.extra_batch_ratios: list[tuple[int, int, int, float]] = []
        self.have_fallback_sensitivity = False

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

    # ----- the run ------------------------------------------------------
    def run(self) -> ProbeResult:
        start = time.perf_counter()
        cfg, T, gen = self.config, self.T, self.gen
        mech = self.new_mechanism()
        seeder = Seeder(find_generators(mech))
        caller = Caller(source_of(mech), self.shapes, seeder)
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
            before = checksum(batch.tensors) if not caller.clone_inputs else None
            rec = self._measure_step(caller, pool, mech, batch, epoch, fixed_seeds, n_slots, records)
            if before is not None and checksum(batch.tensors) != before:
                caller.clone_inputs = True
                self._note("the mechanism modifies the per-sample gradients it is given in place; "
                           "every call was given its own copy")
                batch = gen.batch(t)
                rec = self._measure_step(caller, pool, mech, batch, epoch, fixed_seeds, n_slots, records)
            records.append(rec)
            self._extra_checks(caller, mech, batch, next_batch, epoch, fixed_seeds, sig_decl[t])
            own = caller.call(mech, batch.tensors, t, epoch, self.own_seed(t), "the run's own step")
            measure.complete_fresh_pair(caller, rec, own)

        return self._assemble(caller, pool, records, batch_sizes, sig_decl, sens_decl,
                              time.perf_counter() - start)

    def _measure_step(self, caller, pool, mech, batch, epoch, fixed_seeds, n_slots, records) -> StepRecord:
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
            noise, outs = measure.measure_fallback(caller, self.gen, mech, batch, canaries, epoch,
                                                   self.seed, STATE, n_slots, with_sensitivity=False)
            rec.noise_var, rec.noise_dof = noise.noise_var, noise.noise_dof
            self._note("noise was drawn through the mechanism's state: copies share their draws, so "
                       "the sensitivity is exact but the noise scale comes from consecutive calls")
            return rec
        with_sens = t in self.fallback_sens_steps or not self.have_fallback_sensitivity
        rec, outs = measure.measure_fallback(caller, self.gen, mech, batch, canaries, epoch,
                                             self.seed, NONE, n_slots, with_sensitivity=with_sens)
        if with_sens:
            self.have_fallback_sensitivity = True
            self._fallback_batch_ratio(caller, mech, batch, epoch, outs)
        return rec

    def _fallback_batch_ratio(self, caller, mech, batch, epoch, outs) -> None:
        """Noise of the batch vs its first half from repeated draws (z-test on the log-variance ratio)."""
        if batch.size < 2:
            return
        t = batch.step
        k = outs.shape[0]
        seeds = [derive_seed(self.seed, t, 60, i) for i in range(k)]
        half = measure.draws(caller, mech, self.gen.half(batch), t, epoch, seeds, self.mode,
                             "the first half of the batch")
        v_full, dof_full = measure.noise_from_draws(caller, outs)
        v_half, dof_half = measure.noise_from_draws(caller, half)
        n = caller.sizes.astype(float)
        vf, vh = float(np.sum(v_full * n)), float(np.sum(v_half * n))
        if vf <= 0 and vh <= 0:
            return
        se = math.sqrt(2.0 / float(np.sum(dof_full)) + 2.0 / float(np.sum(dof_half)))
        if vf > 0 and vh > 0 and abs(math.log(vh / vf)) < 4.0 * se:
            return
        ratio = math.inf if vf == 0 else math.sqrt(vh / vf)
        self.extra_batch_ratios.append((t, batch.size, batch.size // 2, ratio))

    def _extra_checks(self, caller, mech, batch, next_batch, epoch, fixed_seeds, declared_sigma) -> None:
        """Batch-size comparisons and the state-leak check at the leak-check steps."""
        t = batch.step
        if t not in self.leak_steps:
            return
        if self.mode != EXACT:
            self.leak_skipped.append(t)
            if self.mode == STATE:  # (mode "none" compares batch sizes at its sensitivity steps)
                seeds = [derive_seed(self.seed, t, 70, i) for i in range(STATE_BATCH_DRAWS)]
                outs = measure.draws(caller, mech, batch.tensors, t, epoch, seeds, STATE, "the batch itself")
                self._fallback_batch_ratio(caller, mech, batch, epoch, outs)
            return
        others = [(self.gen.half(batch), "the first half of the batch")] if batch.size >= 2 else []
        if batch.size > 0:
            others.append((self.gen.empty(), "an empty batch"))
        for tensors, what in others:
            r = measure.measure_batch_ratio(caller, mech, tensors, batch, epoch, fixed_seeds, what)
            if r is not None and abs(r[2] - 1.0) > BATCH_RATIO_RTOL:
                self.extra_batch_ratios.append((t,) + r)
        if next_batch is not None:
            self.leaks.extend(check_state_leaks(
                caller, self.gen, mech, batch, next_batch, epoch, epoch_of(t + 1, self.config), self.seed,
                declared_sigma))

    # ----- results ------------------------------------------------------
    def _assemble(self, caller, pool, records, batch_sizes, sig_decl, sens_decl, seconds) -> ProbeResult:
        T = self.T
        sizes = caller.sizes.astype(float)
        s_ref, rel_ref = pool.scales(records)
        fallback_pooled = measure.pool_fallback_noise(records, sizes)
        sigma_hat = np.zeros(T)
        rel_se = np.zeros(T)
        lower = np.zeros(T)
        worst = np.full(T, -1, dtype=np.int64)
        sens = np.zeros(T)
        noise_std = np.zeros(T)
        coupled = np.zeros(T, dtype=bool)
        sens_records = [r for r in records if r.mode == NONE and r.sensitivity_from == r.step]
        events: list[tuple[int, int, int, float]] = []
        content = False
        for rec in records:
            t = rec.step
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
            source = rec
            if rec.mode == NONE and rec.sensitivity_from is None:
                source = min(sens_records, key=lambda x: abs(x.step - t))
            sigma_hat[t], rel_se[t], lower[t], worst[t], sens[t] = measure.realised_sigma(source, s, rel, sizes)
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
        if pool.pooled_over_tensors or fallback_pooled:
            self._note("the noise has one scale in every parameter tensor (to within sampling error); "
                       "its level was pooled over the tensors")
        if self.defeated is None:
            coupling = "exact"
            if caller.seeder.private_paths:
                coupling += f" (reseeding the mechanism's own generator(s): {caller.seeder.describe()})"
        else:
            coupling = f"defeated: {self.defeated}"
            self._note("steps measured without coupling use repeated independent draws; their σ̂ has "
                       "a 95% lower confidence limit (sigma_hat_lower) used for accounting")
            if any(r.mode == NONE for r in records):
                self._note("without coupling the sensitivity is measured along each canary's own "
                           f"direction at {len(sens_records)} spread steps; other steps reuse the "
                           "nearest one")
        if self.leak_skipped:
            leak_check = (f"skipped at {len(self.leak_skipped)} of {len(self.leak_steps)} steps: "
                          "it needs coupled draws")
            if len(self.leak_skipped) == len(self.leak_steps):
                leak_check = "skipped: it needs coupled draws"
        else:
            leak_check = f"done at {len(self.leak_steps)} steps"
        return ProbeResult(
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
            worst_canary=worst,
            coupled=coupled,
            leaks=tuple(self.leaks),
            leak_check_steps=tuple(self.leak_steps),
            leak_check=leak_check,
            batch_size_dependence=dependence,
            notes=tuple(self.notes),
            empty_step=self.gen.empty_step,
            seconds=seconds,
            calls=caller.calls,
        )
