"""Training with a mechanism in the loop, many models at once, and the training-level audit (CPU, digits)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from dpaudit.errors import InputError
from dpaudit.run_config import RunConfig
from dpaudit.training import training_audit
from dpaudit.training.canaries import make_canaries, membership, model_seed
from dpaudit.training.models import mlp_digits
from dpaudit.training.report import write_json, write_report
from dpaudit.training.sampling import CanaryCoins, SharedBatches
from dpaudit.training.trainer import Trainer, stacked_models
from dpaudit.training.training_audit import audit_training

from training_support import (  # noqa: F401 (fixtures)
    DPSGD, config_for, digits, mechanism_file, new_mechanisms, one_thread,
)

BROKEN = '''
import torch

class DPMechanism:
    """Clips and averages like DP-SGD but adds no noise, and reports sigma = 1."""

    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size,
                 epochs, target_epsilon, target_delta):
        self.C, self.B = float(max_grad_norm), float(batch_size)

    def clip_and_noise(self, per_sample_grads, step, epoch):
        b = per_sample_grads[0].shape[0]
        flat = torch.cat([g.reshape(b, -1) for g in per_sample_grads], 1)
        scale = (self.C / (flat.norm(dim=1) + 1e-6)).clamp(max=1.0)
        return [torch.tensordot(scale, g, dims=1) / self.B for g in per_sample_grads]

    def get_effective_sigma(self, step, epoch):
        return 1.0
'''

# The same mechanism, also offering the batched protocol (all models of a chunk in one call).
BROKEN_BATCHED = BROKEN + '''
    def clip_and_noise_batched(self, per_sample_grads, mask, step, epoch):
        k, b = mask.shape
        flat = torch.cat([g.reshape(k, b, -1) for g in per_sample_grads], 2)
        scale = (self.C / (flat.norm(dim=2) + 1e-6)).clamp(max=1.0) * mask
        return [torch.einsum("kb,kb...->k...", scale, g) / self.B for g in per_sample_grads]
'''

ZERO = '''
import torch

class DPMechanism:
    def __init__(self, *args, **kwargs):
        pass

    def clip_and_noise(self, per_sample_grads, step, epoch):
        return [torch.zeros(g.shape[1:]) for g in per_sample_grads]

    def get_effective_sigma(self, step, epoch):
        return 1.0
'''


# ----------------------------------------------------------------------------
# The trainer


def test_models_at_once_equal_models_trained_separately(digits):
    config = config_for(digits)
    design = make_canaries("dirac", 3, digits, mlp_digits, seed=1)
    trainer = Trainer(mlp_digits, config, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                      canaries=design.canaries, vectorize="loop")
    seeds = [11, 12, 13]
    memb = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=bool)
    together = trainer.train(new_mechanisms(DPSGD, config, 3), seeds, memb)
    for k, s in enumerate(seeds):
        alone = trainer.train(new_mechanisms(DPSGD, config, 1), [s], memb[k : k + 1])
        for name, p in alone.params.items():
            torch.testing.assert_close(together.params[name][k], p[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(together.scores[k], alone.scores[0], rtol=1e-4, atol=1e-5)
        assert together.test_accuracy[k] == pytest.approx(alone.test_accuracy[0], abs=0.01)


def test_same_seed_gives_bit_identical_parameters_and_keeps_callers_rng(digits):
    config = config_for(digits)
    trainer = Trainer(mlp_digits, config, digits.x_train, digits.y_train, vectorize="loop")
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a = trainer.train(new_mechanisms(DPSGD, config, 2), [1, 2])
    after = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    b = trainer.train(new_mechanisms(DPSGD, config, 2), [1, 2])
    c = trainer.train(new_mechanisms(DPSGD, config, 2), [1, 3])
    for name in a.params:
        assert torch.equal(a.params[name], b.params[name])
        assert torch.equal(a.params[name][0], c.params[name][0])
        assert not torch.equal(a.params[name][1], c.params[name][1])
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]


def test_poisson_batches_have_the_right_size():
    n, q, draws = 1000, 0.05, 2000
    batches = SharedBatches(9, n, q)
    coins = CanaryCoins(9, 4, q)
    sizes, drawn = [], []
    for t in range(draws):
        idx = batches.at(t)
        assert np.all(np.diff(idx) > 0) and (idx.size == 0 or (idx[0] >= 0 and idx[-1] < n))
        sizes.append(idx.size)
        drawn.append(coins.draw())
    assert np.array_equal(batches.at(17), SharedBatches(9, n, q).at(17))  # a function of (seed, step) alone
    sd = math.sqrt(n * q * (1 - q) / draws)
    assert abs(np.mean(sizes) - n * q) < 4 * sd
    assert np.var(sizes) == pytest.approx(n * q * (1 - q), rel=0.15)
    assert abs(np.mean(drawn) - q) < 4 * math.sqrt(q * (1 - q) / (draws * 4))
    assert np.array_equal(SharedBatches(0, 7, 1.0).at(3), np.arange(7))


def test_mechanism_sees_poisson_batches_of_the_right_mean_size(digits):
    config = config_for(digits, batch_size=64, epochs=2)
    seen = []

    class Recording:
        def clip_and_noise(self, per_sample_grads, step, epoch):
            seen.append(per_sample_grads[0].shape[0])
            return [torch.zeros(g.shape[1:]) for g in per_sample_grads]

    Trainer(mlp_digits, config, digits.x_train, digits.y_train, vectorize="loop").train(
        [Recording() for _ in range(4)], [1, 2, 3, 4])
    assert len(seen) == 4 * config.steps
    sd = math.sqrt(len(digits.x_train) * config.sample_rate / len(seen))
    assert abs(np.mean(seen) - 64 * len(digits.x_train) / config.dataset_size) < 4 * sd


def test_zero_update_or_zero_lr_leaves_parameters_unchanged(digits, tmp_path):
    config = config_for(digits)
    _, init = stacked_models(mlp_digits, [4, 5], torch.device("cpu"))
    zero = mechanism_file(tmp_path, ZERO)
    runs = [
        Trainer(mlp_digits, config, digits.x_train, digits.y_train, lr=0.5).train(new_mechanisms(zero, config, 2), [4, 5]),
        Trainer(mlp_digits, config, digits.x_train, digits.y_train, lr=0.0).train(new_mechanisms(DPSGD, config, 2), [4, 5]),
    ]
    for result in runs:
        for name, p in init.items():
            assert torch.equal(result.params[name], p)


def test_batched_mechanism_protocol_matches_the_per_model_path(digits):
    config = config_for(digits)

    class Clip:  # noise-free clipped mean, per model
        def clip_and_noise(self, g, step, epoch):
            b = g[0].shape[0]
            norms = torch.cat([x.reshape(b, -1) for x in g], 1).norm(dim=1)
            scale = (1.0 / (norms + 1e-6)).clamp(max=1.0)
            return [torch.tensordot(scale, x, dims=1) / 64 for x in g]

    class BatchedClip:  # the same for all models at once
        def clip_and_noise_batched(self, g, mask, step, epoch):
            k, b = mask.shape
            norms = torch.cat([x.reshape(k, b, -1) for x in g], 2).norm(dim=2)
            scale = (1.0 / (norms + 1e-6)).clamp(max=1.0) * mask
            return [torch.einsum("kb,kb...->k...", scale, x) / 64 for x in g]

        def get_effective_sigma(self, step, epoch):
            return 1.0

    design = make_canaries("dirac", 2, digits, mlp_digits, seed=2)
    trainer = Trainer(mlp_digits, config, digits.x_train, digits.y_train, canaries=design.canaries)
    memb = np.array([[1, 1], [0, 1]], dtype=bool)
    a = trainer.train([Clip(), Clip()], [1, 2], memb)
    b = trainer.train(BatchedClip(), [1, 2], memb)
    for name in a.params:
        torch.testing.assert_close(a.params[name], b.params[name], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)


def test_bad_mechanism_output_is_an_input_error(digits, tmp_path):
    config = config_for(digits)
    bad = mechanism_file(tmp_path, ZERO.replace("torch.zeros(g.shape[1:])", "torch.zeros(3)"), "bad.py")
    with pytest.raises(InputError, match=r"bad\.py: clip_and_noise\(step=0\) output 0 has shape \(3,\)"):
        Trainer(mlp_digits, config, digits.x_train, digits.y_train).train(new_mechanisms(bad, config, 1), [0])


# ----------------------------------------------------------------------------
# Canaries


def test_canary_designs(digits):
    dirac = make_canaries("dirac", 5, digits, mlp_digits, seed=0)
    assert dirac.threat_model == "white-box" and dirac.canaries.norm == 10.0
    assert len(set(dirac.canaries.coordinates)) == 5 and dirac.canaries.coordinates.max() < 2410
    assert np.array_equal(dirac.canaries.coordinates, make_canaries("dirac", 5, digits, mlp_digits, seed=0).canaries.coordinates)
    wrong = make_canaries("mislabeled", 7, digits, mlp_digits, seed=0)
    assert wrong.threat_model == "black-box" and len(wrong.base) == len(digits.x_train) - 7
    source = np.setdiff1d(np.arange(len(digits.x_train)), wrong.base)
    assert np.all(wrong.canaries.y != digits.y_train[source])
    ood = make_canaries("ood", 3, digits, mlp_digits, seed=0)
    assert ood.canaries.x.shape == (3, 1, 8, 8) and len(ood.base) == len(digits.x_train)
    coins = np.stack([membership(0, i, 50) for i in range(40)])
    assert 0.4 < coins.mean() < 0.6
    assert model_seed(0, 1) != model_seed(0, 2) != model_seed(1, 1)
    with pytest.raises(InputError, match="white-box only"):
        make_canaries("dirac", 1, digits, mlp_digits, seed=0, threat_model="black-box")
    with pytest.raises(InputError, match="unknown canary kind"):
        make_canaries("poison", 1, digits, mlp_digits, seed=0)


# ----------------------------------------------------------------------------
# The audit


def test_multi_run_white_box_audit_of_dp_sgd(digits, tmp_path):
    config = config_for(digits)
    result = audit_training(DPSGD, config, digits, runs=8, models_at_once=8, seed=3)
    assert result.mode == "multi-run" and result.models == 16
    assert result.in_scores.size + result.out_scores.size == 16
    assert set(result.estimates) == {"clopper_pearson", "gdp", "gdp_parametric", "one_run", "one_run_fdp"}
    for e in result.estimates.values():
        assert math.isfinite(e.epsilon_lb) and e.epsilon_lb >= 0
        assert math.isfinite(e.ceiling) or e.name == "gdp_parametric"  # no ceiling: it extrapolates
    assert not result.violation
    # Two white-box statistics (projection, noise scale), two verdict estimators each: alpha / 4.
    assert set(result.statistics) == {"projection", "scale"}
    assert result.statistics["scale"]["clopper_pearson"].confidence == pytest.approx(1 - 0.05 / 4)
    assert result.statistics["projection"]["gdp"].confidence == pytest.approx(1 - 0.05 / 2)
    assert 0.0 < result.claimed_epsilon < 10 and result.accuracy["min"] > 0.3
    d = result.to_dict()
    assert {"claimed_epsilon", "confidence", "violation", "estimators", "config", "test_accuracy", "seconds"} <= set(d)
    assert set(d["estimators"]) == {"clopper_pearson", "gdp", "gdp_parametric", "one_run", "one_run_fdp"}
    json.loads(write_json(result, tmp_path / "audit.json").read_text())
    page, roc, hist = write_report(result, tmp_path / "audit.md")
    assert "Training audit" in page.read_text() and "audit-roc.png" in page.read_text()
    assert roc.stat().st_size > 0 and hist.stat().st_size > 0


def test_white_box_audit_catches_a_mechanism_without_noise(digits, tmp_path):
    # One run, 100 Dirac canaries; per-model mechanism calls.
    broken = mechanism_file(tmp_path, BROKEN, "broken.py")
    config = config_for(digits, batch_size=16, epochs=2)  # claimed eps 0.98
    result = audit_training(broken, config, digits, canaries=100, models_at_once=1, seed=0, lr=0.1)
    assert result.mode == "one-run" and result.models == 1
    assert set(result.estimates) == {"one_run", "gdp_parametric", "one_run_fdp"}
    assert result.in_scores.size + result.out_scores.size == 100
    assert result.violation, result.summary()
    assert result.to_dict()["estimators"]["clopper_pearson"]["epsilon_lb"] is None


def test_multi_run_white_box_audit_catches_it_with_few_runs(digits, tmp_path):
    # 32 runs per side (a design whose ceiling is ~1.9), all 64 models in one batched call per step.
    broken = mechanism_file(tmp_path, BROKEN_BATCHED, "broken_batched.py")
    config = config_for(digits, batch_size=16, epochs=3)  # claimed eps 1.14
    result = audit_training(broken, config, digits, runs=32, models_at_once=64, seed=3, lr=0.1)
    assert result.violation, result.summary()
    assert result.strongest().epsilon_lb > result.claimed_epsilon
    cp = result.statistics["projection"]["clopper_pearson"]
    assert result.claimed_epsilon < cp.epsilon_lb <= cp.ceiling + 1e-3


def test_one_run_black_box_audit(digits):
    result = audit_training(DPSGD, config_for(digits), digits, canaries=20, runs=2, models_at_once=2,
                            canary_kind="mislabeled", seed=0)
    assert result.mode == "one-run" and result.threat_model == "black-box"
    assert result.in_scores.size + result.out_scores.size == 40
    assert all(math.isfinite(e.epsilon_lb) for e in result.estimates.values())
    assert not result.violation and result.test_accuracy.size == 2


def test_interrupted_audit_resumes_to_the_same_result(digits, tmp_path, monkeypatch):
    config = config_for(digits)
    kw = dict(runs=3, models_at_once=2, seed=5)
    whole = audit_training(DPSGD, config, digits, **kw)

    path = tmp_path / "results.jsonl"
    real_train = Trainer.train
    calls = []

    def train_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", train_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        audit_training(DPSGD, config, digits, results_path=path, **kw)
    monkeypatch.setattr(Trainer, "train", real_train)
    assert len(path.read_text().splitlines()) == 1 + 2  # header and the first chunk
    resumed = audit_training(DPSGD, config, digits, results_path=path, **kw)
    assert resumed.models_trained == 4 and resumed == whole
    again = audit_training(DPSGD, config, digits, results_path=path, **kw)
    assert again.models_trained == 0 and again == whole

    with pytest.raises(InputError, match="different training audit"):
        audit_training(DPSGD, config, digits, results_path=path, runs=3, models_at_once=2, seed=6)


def test_missing_dataset_directory_is_an_input_error(tmp_path):
    config = RunConfig(dataset_size=60000, batch_size=256, epochs=1, epsilon=1.0, delta=1e-5, noise_multiplier=1.0)
    with pytest.raises(InputError, match="does not exist"):
        audit_training(DPSGD, config, f"mnist:{tmp_path / 'nowhere'}", runs=2)


def test_audit_needs_runs_or_canaries(digits):
    with pytest.raises(InputError, match="--runs N"):
        audit_training(DPSGD, config_for(digits), digits)


def test_training_config_calibrates_sigma(digits):
    config = training_audit.training_config(digits, batch_size=64, epochs=2, epsilon=2.0, delta=1e-5, accountant="rdp")
    assert config.dataset_size == len(digits.x_train) and config.n_params == 2410
    assert 0.3 < config.noise_multiplier < 5


def test_cli_glue_runs_a_training_audit(tmp_path, capsys):
    import argparse

    from dpaudit.training.audit_cli import add_training_flags, run_training

    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    flags = parser.parse_args(["--dataset", "digits", "--models-at-once", "8", "--canary-kind", "dirac"])
    args = argparse.Namespace(
        **vars(flags), mechanism=DPSGD, dataset_size=None, batch_size=64, epochs=1, epsilon=2.0, delta=1e-5,
        max_grad_norm=1.0, noise_multiplier=1.0, calibration_accountant="prv", confidence=0.95, seed=0,
        results=None, no_results=True, json=str(tmp_path / "a.json"), report=str(tmp_path / "a.md"),
        no_progress=True, runs=4,
    )
    # Four models per side cannot certify any epsilon: the verdict is inconclusive (exit 3).
    assert run_training(args) == 3
    out = capsys.readouterr().out
    assert "claimed eps" in out and "verdict: inconclusive: these runs cannot detect" in out
    d = json.loads((tmp_path / "a.json").read_text())
    assert d["level"] == "training" and d["config"]["models"] == 8 and "mean" in d["test_accuracy"]
    assert (tmp_path / "a-roc.png").exists()
    args.dataset_size = 60000
    with pytest.raises(InputError, match="does not match"):
        run_training(args)
