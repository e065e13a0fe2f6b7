"""The black-box probe: realised σ̂, state leaks, batch-size dependence, coupling and errors.

Most tests probe a short run (N = 3000, B = 32, 1 epoch: 93 steps) of the
reference mechanisms in mechanisms/ and of small mechanisms defined here.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.probe import CANARY_NAMES, N_PARAMS, PARAM_SHAPES, ProbeResult, probe_mechanism
from dpaudit.probe.gradients import EMPTY_STEP, HUGE_NORM, SyntheticGradients
from dpaudit.probe.state_leaks import choose_leak_steps
from dpaudit.run_config import RunConfig

MECHANISMS = Path(__file__).resolve().parent.parent / "mechanisms"
CONFORMANCE = Path(__file__).resolve().parent / "conformance"
SIGMA = 0.6519
SMALL = RunConfig(dataset_size=3000, batch_size=32, epochs=1, epsilon=3.0, delta=1e-5,
                  noise_multiplier=SIGMA, n_params=N_PARAMS)
DEFAULT = RunConfig(dataset_size=60000, batch_size=256, epochs=5, epsilon=3.0, delta=1e-5,
                    noise_multiplier=SIGMA, n_params=N_PARAMS)


def probe_file(name: str, config: RunConfig = SMALL, **kw) -> ProbeResult:
    factory = MechanismFactory.load(str(MECHANISMS / name), config)
    return probe_mechanism(factory.new, config, progress=False, **kw)


def probe_class(cls, config: RunConfig = SMALL, **kw) -> ProbeResult:
    return probe_mechanism(lambda: cls(**config.seed_arguments()), config, progress=False, **kw)


def assert_sigma_matches(result: ProbeResult, z: float = 4.0) -> None:
    """σ̂_t = declared σ_t at every step, within z standard errors of the measurement."""
    ratio = result.sigma_ratio
    tol = z * result.sigma_hat_rel_se + 1e-9
    assert np.all(np.abs(ratio - 1.0) <= tol), (ratio.min(), ratio.max(), tol.max())
    assert result.understated_steps().size == 0


# ----------------------------------------------------------------------------
# Small mechanisms written for these tests (seed interface, torch only)
# ----------------------------------------------------------------------------
def _norms(grads):
    b = grads[0].shape[0]
    per = [torch.linalg.vector_norm(g.reshape(b, g.shape[1:].numel()), dim=1) for g in grads]
    return torch.linalg.vector_norm(torch.stack(per, dim=1), dim=1)


class Gaussian:
    """Plain DP-SGD; subclasses change only where the noise comes from."""

    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size,
                 epochs, target_epsilon, target_delta):
        self.C = float(max_grad_norm)
        self.sigma = float(noise_multiplier)
        self.B = float(batch_size)

    def noise(self, shape, dtype):
        return torch.randn(shape, dtype=dtype)

    def clip_and_noise(self, grads, step, epoch):
        scale = (self.C / (_norms(grads) + 1e-6)).clamp(max=1.0)
        return [(torch.tensordot(scale, g, dims=1) + self.sigma * self.C * self.noise(g.shape[1:], g.dtype))
                / self.B for g in grads]

    def get_effective_sigma(self, step, epoch):
        return self.sigma


class PrivateTorchGenerator(Gaussian):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.gen = torch.Generator().manual_seed(1234)

    def noise(self, shape, dtype):
        return torch.randn(shape, generator=self.gen, dtype=dtype)


class NumpyGlobal(Gaussian):
    def noise(self, shape, dtype):
        return torch.as_tensor(np.random.normal(size=shape), dtype=dtype)


_MODULE_GENERATOR = torch.Generator().manual_seed(99)


class ModuleGenerator(Gaussian):
    """A generator at module level: deepcopy does not copy it, seeding does not reach it."""

    def noise(self, shape, dtype):
        return torch.randn(shape, generator=_MODULE_GENERATOR, dtype=dtype)


class QuantileClip(Gaussian):
    """Clip norm follows the exact, un-noised fraction of unclipped norms (expected-B divisor)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.clip = self.C

    def clip_and_noise(self, grads, step, epoch):
        c = self.clip
        norms = _norms(grads)
        scale = (c / (norms + 1e-6)).clamp(max=1.0)
        out = [(torch.tensordot(scale, g, dims=1) + self.sigma * c * torch.randn(g.shape[1:], dtype=g.dtype))
               / self.B for g in grads]
        if norms.numel():
            self.clip = c * math.exp(-0.2 * (float((norms <= c).double().mean()) - 0.5))
        return out


class NoisedCountClip(QuantileClip):
    """Andrew et al. 2021 with a small count noise σ_b = 1 (count units) and σ_grad adjusted."""

    COUNT_STD = 1.0

    def __init__(self, **kw):
        super().__init__(**kw)
        self.grad_sigma = (self.sigma ** -2 - (2 * self.COUNT_STD) ** -2) ** -0.5

    def clip_and_noise(self, grads, step, epoch):
        c = self.clip
        norms = _norms(grads)
        scale = (c / (norms + 1e-6)).clamp(max=1.0)
        out = [(torch.tensordot(scale, g, dims=1) + self.grad_sigma * c * torch.randn(g.shape[1:], dtype=g.dtype))
               / self.B for g in grads]
        count = float(((norms <= c).double() - 0.5).sum()) + self.COUNT_STD * float(torch.randn(()))
        self.clip = c * math.exp(-0.2 * (min(max(count / self.B + 0.5, 0.0), 1.0) - 0.5))
        return out

    def get_sensitivity(self, step, epoch):
        return self.clip


class ErrorFeedback(Gaussian):
    """Adds a decaying, un-noised memory of past clipping residuals to later outputs."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.memory = None

    def clip_and_noise(self, grads, step, epoch):
        scale = (self.C / (_norms(grads) + 1e-6)).clamp(max=1.0)
        if self.memory is None:
            self.memory = [torch.zeros(g.shape[1:], dtype=g.dtype) for g in grads]
        out, memory = [], []
        for g, m in zip(grads, self.memory):
            clipped = torch.tensordot(scale, g, dims=1)
            out.append((clipped + 0.01 * m + self.sigma * self.C * torch.randn(g.shape[1:], dtype=g.dtype)) / self.B)
            memory.append(0.5 * m + 1e-4 * (g.sum(0) - clipped))
        self.memory = memory
        return out


class PerLayerClip(Gaussian):
    """Clips every tensor to C separately (sensitivity 2C over 4 tensors) but adds noise σC: σ̂ = σ/2."""

    def clip_and_noise(self, grads, step, epoch):
        b = grads[0].shape[0]
        out = []
        for g in grads:
            scale = (self.C / (torch.linalg.vector_norm(g.reshape(b, g.shape[1:].numel()), dim=1) + 1e-6)).clamp(max=1.0)
            out.append((torch.tensordot(scale, g, dims=1) + self.sigma * self.C * torch.randn(g.shape[1:], dtype=g.dtype))
                       / self.B)
        return out


class InPlaceClip(Gaussian):
    """Clips the per-sample gradients it is given in place."""

    def clip_and_noise(self, grads, step, epoch):
        scale = (self.C / (_norms(grads) + 1e-6)).clamp(max=1.0)
        out = []
        for g in grads:
            g.mul_(scale.reshape((-1,) + (1,) * (g.dim() - 1)))
            out.append((g.sum(0) + self.sigma * self.C * torch.randn(g.shape[1:], dtype=g.dtype)) / self.B)
        return out


class RealisedMeanNaN(Gaussian):
    """Divides by the realised batch size without a guard: NaN on an empty batch."""

    def clip_and_noise(self, grads, step, epoch):
        b = grads[0].shape[0]
        scale = (self.C / (_norms(grads) + 1e-6)).clamp(max=1.0)
        return [torch.tensordot(scale, g, dims=1) / b + self.sigma * self.C / self.B * torch.randn(g.shape[1:], dtype=g.dtype)
                for g in grads]


class RaisesLate(Gaussian):
    def clip_and_noise(self, grads, step, epoch):
        if step == 5:
            raise ZeroDivisionError("late failure")
        return super().clip_and_noise(grads, step, epoch)


class NaNLate(Gaussian):
    def clip_and_noise(self, grads, step, epoch):
        out = super().clip_and_noise(grads, step, epoch)
        return [o * float("nan") for o in out] if step == 5 else out


class WrongShape(Gaussian):
    def clip_and_noise(self, grads, step, epoch):
        return [o.reshape(-1) for o in super().clip_and_noise(grads, step, epoch)]


class Uncopyable(Gaussian):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.lock = threading.Lock()


# ----------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------
def test_default_model_shapes():
    assert PARAM_SHAPES == ((32, 64), (32,), (10, 32), (10,))
    assert N_PARAMS == 2410


def test_batches_are_poisson_sized_correlated_and_partly_clipped():
    gen = SyntheticGradients(DEFAULT, seed=3)
    sizes = np.array([gen.batch_size(t) for t in range(DEFAULT.steps)])
    assert sizes[EMPTY_STEP] == 0
    others = np.delete(sizes, EMPTY_STEP)
    assert abs(others.mean() - 256) < 3 and 10 < others.std() < 22  # Binomial(60000, q): sd ≈ 16
    early, late = gen.batch(0), gen.batch(DEFAULT.steps - 1)
    assert [tuple(t.shape) for t in early.tensors] == [(early.size,) + s for s in PARAM_SHAPES]
    assert all(t.is_contiguous() and t.dtype == torch.float64 for t in early.tensors)
    flat = torch.cat([t.reshape(early.size, -1) for t in early.tensors], dim=1)
    assert torch.allclose(flat.norm(dim=1), early.norms)
    unit = flat / flat.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    mean_cos = float((cos.sum() - cos.trace()) / (early.size * (early.size - 1)))
    assert 0.05 < mean_cos < 0.5  # correlated, not identical
    assert float((early.norms <= 1.0).double().mean()) < 0.3   # mostly clipped early
    assert float((late.norms <= 1.0).double().mean()) > 0.7    # mostly unclipped late
    again = SyntheticGradients(DEFAULT, seed=3).batch(0)
    assert all(torch.equal(a, b) for a, b in zip(early.tensors, again.tensors))
    assert gen.batch(EMPTY_STEP).size == 0


def test_canaries_and_neighbours():
    gen = SyntheticGradients(SMALL)
    batch = gen.batch(0)
    canaries = gen.canaries(batch)
    assert tuple(c.name for c in canaries) == CANARY_NAMES
    huge = canaries[1].added
    blocks = torch.split(huge, [math.prod(s) for s in PARAM_SHAPES])
    assert all(math.isclose(float(b.norm()), HUGE_NORM, rel_tol=1e-12) for b in blocks)
    assert float(canaries[4].added.norm()) < 1e-3
    added = gen.neighbour(batch, canaries[0])
    assert added[0].shape[0] == batch.size + 1
    assert torch.equal(added[0][: batch.size], batch.tensors[0])
    removed = gen.neighbour(batch, canaries[5])
    assert removed[0].shape[0] == batch.size - 1
    assert float(batch.norms[canaries[5].removed_index]) == float(batch.norms.max())
    assert len(gen.canaries(gen.batch(EMPTY_STEP))) == len(CANARY_NAMES) - 1  # nothing to remove


def test_leak_steps_include_the_first_and_spread():
    steps = choose_leak_steps(1170, 24)
    assert steps[:4] == (0, 1, 2, 3) and len(steps) == 24 and steps[-1] == 1168
    assert choose_leak_steps(1, 24) == ()
    assert choose_leak_steps(3, 24) == (0, 1)


# ----------------------------------------------------------------------------
# Reference mechanisms
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dpsgd() -> ProbeResult:
    return probe_file("dpsgd.py")


def test_dpsgd_realised_sigma_is_declared_sigma(dpsgd):
    assert dpsgd.coupling == "exact" and dpsgd.coupled.all()
    assert_sigma_matches(dpsgd)
    assert dpsgd.sigma_hat_rel_se.max() < 3e-3
    # The coupled ratios are exact: the same σ̂ at every step, up to float rounding.
    assert np.ptp(dpsgd.sigma_hat) < 1e-9 * dpsgd.sigma_hat.max()
    assert dpsgd.leaks == () and dpsgd.batch_size_dependence is None
    assert dpsgd.batch_sizes[EMPTY_STEP] == 0
    assert np.all(dpsgd.declared_sensitivity == 1.0)
    assert np.all(dpsgd.sensitivity > 0) and np.all(dpsgd.noise_std > 0)
    sigmas, rates = dpsgd.measured_schedule(SMALL).per_step()
    assert sigmas.size == SMALL.steps and np.allclose(rates, SMALL.sample_rate)
    assert np.allclose(sigmas, SIGMA, rtol=4 * dpsgd.sigma_hat_rel_se.max())


def test_result_to_dict_is_json(dpsgd):
    d = json.loads(json.dumps(dpsgd.to_dict()))
    assert d["coupling"] == "exact" and d["steps"] == SMALL.steps and d["n_params"] == N_PARAMS
    assert d["leaks"]["count"] == 0 and d["batch_size_dependence"] is None
    assert abs(d["sigma_hat_over_declared"]["min"] - 1.0) < 0.01
    assert "per_step" not in d  # 93 steps: summaries only
    assert dpsgd.seconds > 0 and dpsgd.calls > SMALL.steps


def test_autos_normalisation_with_declared_sensitivity_one():
    result = probe_file("autos.py", leak_check_steps=4)
    assert_sigma_matches(result)
    assert np.all(result.declared_sensitivity == 1.0)
    assert result.leaks == () and result.batch_size_dependence is None


def test_decreasing_sigma_is_measured_step_by_step():
    result = probe_file("decreasing_sigma.py", leak_check_steps=4)
    assert_sigma_matches(result)
    assert result.sigma_hat[0] / result.sigma_hat[-1] == pytest.approx(1.25, rel=1e-6)


def test_andrew_adaptive_clipping_with_noised_count_passes():
    result = probe_file("adaptive_clip_noised.py", leak_check_steps=12)
    assert result.coupling == "exact"
    # σ_grad = (σ⁻² − (2σ_b)⁻²)^(-1/2) > σ, σ_b = B/20
    sigma_grad = (SIGMA ** -2 - (2 * SMALL.batch_size / 20) ** -2) ** -0.5
    assert np.allclose(result.sigma_hat, sigma_grad, rtol=4 * result.sigma_hat_rel_se.max())
    assert result.understated_steps().size == 0
    assert result.leaks == ()  # the clip norm moves, but only through a noised count
    assert np.ptp(result.declared_sensitivity) > 0.01  # get_sensitivity follows C_t


def test_noised_count_with_small_count_noise_is_not_a_leak():
    result = probe_class(NoisedCountClip, leak_check_steps=12)
    assert result.leaks == ()
    assert result.understated_steps().size == 0


def test_unnoised_quantile_clipping_is_a_leak():
    result = probe_class(QuantileClip, leak_check_steps=12)
    assert result.leaks, "an un-noised quantile moved the clip norm and was not flagged"
    assert {f.channel for f in result.leaks} >= {"noise scale", "clip norm"}
    assert all(f.implied_noise_multiplier < 0.1 for f in result.leaks)
    assert result.batch_size_dependence is None
    assert_sigma_matches(result)  # each step on its own is honest


def test_error_feedback_of_unnoised_residuals_is_a_leak():
    result = probe_class(ErrorFeedback, leak_check_steps=6)
    assert any(f.channel == "output" for f in result.leaks)


def test_centered_quantile_clip_fails_on_both_channels():
    result = probe_file("centered_quantile_clip.py", leak_check_steps=12)
    assert result.leaks and any(f.channel == "noise scale" for f in result.leaks)
    dep = result.batch_size_dependence
    assert dep is not None and len(dep.steps) > SMALL.steps // 2
    assert "noise scale depends on the realised batch" in dep.describe()


def test_realised_batch_normalisation_is_batch_dependent():
    result = probe_file("realised_batch_norm.py", leak_check_steps=6)
    dep = result.batch_size_dependence
    assert dep is not None and len(dep.steps) >= SMALL.steps - 1
    step, b, b2, ratio = dep.comparisons[0]
    assert ratio == pytest.approx(max(b, 1) / max(b2, 1), rel=1e-9)  # noise σC/B: exact ratio
    assert result.leaks == ()


def test_cosine_schedule_understates_late_sigma():
    result = probe_file("cosine_schedule.py", leak_check_steps=4)
    ratio = result.sigma_ratio
    assert ratio[-1] < 0.85 and ratio[0] > 1.2
    assert result.understated_steps().size > SMALL.steps // 3
    assert result.understated_steps().max() == SMALL.steps - 1
    assert result.leaks == ()  # the EMA of noised outputs is post-processing


def test_lr_adaptive_understates_early_sigma():
    result = probe_file("lr_adaptive.py", leak_check_steps=4)
    assert result.sigma_ratio[0] == pytest.approx(0.71, abs=0.02)
    assert 0 in result.understated_steps()


def test_per_layer_clipping_is_caught_by_the_every_tensor_canary():
    result = probe_class(PerLayerClip, leak_check_steps=2)
    assert np.allclose(result.sigma_ratio, 0.5, rtol=0.01)
    assert set(result.worst_canary.tolist()) == {CANARY_NAMES.index("add: huge norm in every parameter tensor")}


# ----------------------------------------------------------------------------
# Coupling
# ----------------------------------------------------------------------------
def test_private_torch_generator_is_reseeded_and_coupled():
    result = probe_class(PrivateTorchGenerator, leak_check_steps=4)
    assert result.coupling.startswith("exact") and "self.gen" in result.coupling
    assert_sigma_matches(result)


def test_numpy_global_generator_is_coupled():
    result = probe_class(NumpyGlobal, leak_check_steps=4)
    assert result.coupling == "exact"
    assert_sigma_matches(result)


@pytest.mark.slow
def test_unreachable_randomness_falls_back_to_repeated_draws():
    result = probe_class(ModuleGenerator, leak_check_steps=8)
    assert result.coupling.startswith("defeated:") and not result.coupled.any()
    assert "cannot seed" in result.coupling
    # The leak check ran statistically instead of being skipped.
    assert result.leak_check.startswith("done") and "independent draws" in result.leak_check
    se = result.sigma_hat_rel_se
    assert np.all(se > 0.005)  # estimates, with their uncertainty
    assert np.all(result.sigma_hat_lower < result.sigma_hat) and np.all(result.sigma_hat < result.sigma_hat_upper)
    # A plain Gaussian mechanism: σ inside the family-wise limits at every step, and a decision.
    assert np.all(result.sigma_hat_lower <= SIGMA) and np.all(SIGMA <= result.sigma_hat_upper)
    assert result.agrees().all() and result.undecided == ()
    # Steps that agree enter the measured schedule with their declared σ.
    assert np.allclose(result.measured_schedule(SMALL).per_step()[0], SIGMA)


@pytest.mark.slow
def test_state_mode_long_run_is_not_failed_by_chance():
    """Per-call draws carried in the state (mode "state") over 2,000 steps: noise levels pooled over
    windows and family-wise limits keep a correct mechanism from failing at some step by chance
    (tested alone at 4 standard errors each, 2,000 steps would fail it about 6 % of the time, and
    20,000 steps, the run docs/certify.md records, half the time)."""
    config = RunConfig(dataset_size=32000, batch_size=16, epochs=1, epsilon=3.0, delta=1e-5,
                       noise_multiplier=SIGMA, n_params=N_PARAMS)
    factory = MechanismFactory.load(str(CONFORMANCE / "state_counter_rng.py"), config)
    result = probe_mechanism(factory.new, config, progress=False, leak_check_steps=4)
    assert result.steps == 2000 and "ignore the seed" in result.coupling
    assert result.leak_check.startswith("done") and "shared through the state" in result.leak_check
    assert np.all(result.sigma_hat_lower <= SIGMA) and np.all(SIGMA <= result.sigma_hat_upper)
    assert result.agrees().all() and result.undecided == () and result.leaks == ()
    # Pooled over windows: the limits are tight although each step has only four draws.
    assert np.max(result.sigma_hat_upper / result.sigma_hat_lower) < 1.05


def test_probe_restores_global_random_state_and_threads():
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    threads = torch.get_num_threads()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    probe_class(Gaussian, RunConfig(600, 64, 1, 3.0, 1e-5, SIGMA), leak_check_steps=1)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    assert torch.get_num_threads() == threads


def test_mechanism_editing_its_input_in_place_is_measured_correctly():
    result = probe_class(InPlaceClip, leak_check_steps=2)
    assert any("in place" in n for n in result.notes)
    assert_sigma_matches(result)


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------
def test_nan_on_an_empty_batch_is_a_robustness_note():
    result = probe_class(RealisedMeanNaN, leak_check_steps=2)
    assert result.empty_step == -1 and result.batch_sizes.min() > 0
    (note,) = result.robustness
    assert "a batch of 0 examples" in note and "NaN" in note and "negligible" in note
    assert note in result.notes
    # NaN on a batch the run does produce is still an input error naming the step.
    with pytest.raises(InputError, match=r"step 5 .*batch of \d+ examples.*NaN"):
        probe_class(NaNLate, leak_check_steps=0)


def test_exception_names_the_step_and_the_cause():
    with pytest.raises(InputError, match=r"step 5 .*ZeroDivisionError: late failure"):
        probe_class(RaisesLate, leak_check_steps=0)


def test_wrong_output_shape_is_an_input_error():
    with pytest.raises(InputError, match=r"output 0 has shape \(2048,\), expected \(32, 64\)"):
        probe_class(WrongShape, leak_check_steps=0)


def test_uncopyable_mechanism_is_an_input_error():
    with pytest.raises(InputError, match="deepcopy"):
        probe_class(Uncopyable, leak_check_steps=0)


def test_progress_bar_can_be_switched_off(capsys):
    tiny = RunConfig(600, 64, 1, 3.0, 1e-5, SIGMA)
    probe_mechanism(lambda: Gaussian(**tiny.seed_arguments()), tiny, progress=False, leak_check_steps=0)
    assert capsys.readouterr().err == ""
    probe_mechanism(lambda: Gaussian(**tiny.seed_arguments()), tiny, progress=True, leak_check_steps=0)
    assert "probe" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# The default run within certify's budget
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_default_run_fits_the_time_budget():
    # CPU time of this process (the probe runs on one thread), so that other
    # work on a shared machine does not make the test fail.
    start = time.process_time()
    result = probe_file("dpsgd.py", DEFAULT)
    elapsed = time.process_time() - start
    assert result.steps == 1170
    assert elapsed < 60, f"probe of the default run took {elapsed:.1f} s of CPU time"
    assert_sigma_matches(result)
    assert result.sigma_hat_rel_se.max() < 1e-3
    assert result.leaks == () and result.batch_size_dependence is None
