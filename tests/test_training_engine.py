"""The training audit's machinery: per-example gradient engines, vmap vs per-model mechanism calls,
empty batches, buffer reuse, the CUDA path, and the training CLI's environment checks."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from dpaudit.cli.main import main as cli_main
from dpaudit.data.datasets import Dataset
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.run_config import RunConfig
from dpaudit.training.audit_cli import check_environment
from dpaudit.training.mechanism_calls import CallNotes, GlobalGenerators, LoopCalls, VmapCalls, VmapRefused
from dpaudit.training.models import dp_cnn_28, mlp_digits, small_cnn_cifar
from dpaudit.training.per_example import FuncGrads, LayerwiseGrads, per_example_engine
from dpaudit.training.trainer import Trainer, TrainingCanaries, stacked_models
from dpaudit.training.training_audit import audit_training, default_models_at_once

from training_support import (  # noqa: F401 (fixtures)
    DPSGD, MECHANISMS, config_for, digits, mechanism_file, new_mechanisms, one_thread,
)
COSINE = str(MECHANISMS / "cosine_schedule.py")
QUANTILE = str(MECHANISMS / "centered_quantile_clip.py")

# The seed's own idiom: raises on an empty batch (reshape(0, -1) is ambiguous), divides by the expected batch.
SEED_STYLE = '''
import torch

class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C, self.sigma, self.B = max_grad_norm, noise_multiplier, batch_size

    def clip_and_noise(self, per_sample_grads, step, epoch):
        batch_size = per_sample_grads[0].shape[0]
        flat = torch.cat([g.reshape(batch_size, -1) for g in per_sample_grads], dim=1)
        scale = (self.C / (flat.norm(dim=1) + 1e-6)).clamp(max=1.0)
        return [(torch.tensordot(scale, g, dims=1) + self.sigma * self.C * torch.randn(g.shape[1:])) / self.B
                for g in per_sample_grads]

    def get_effective_sigma(self, step, epoch):
        return self.sigma
'''

NUMPY_NOISE = '''
import numpy as np
import torch

class DPMechanism:
    def __init__(self, *args, **kwargs):
        self.B = 64

    def clip_and_noise(self, per_sample_grads, step, epoch):
        return [g.sum(0) / self.B + torch.from_numpy(np.random.normal(size=tuple(g.shape[1:])).astype(np.float32))
                for g in per_sample_grads]

    def get_effective_sigma(self, step, epoch):
        return 1.0
'''

OS_ENTROPY = NUMPY_NOISE.replace("np.random.normal(", "np.random.default_rng().normal(")

KEEPS_INPUT = '''
import torch

class DPMechanism:
    def __init__(self, *args, **kwargs):
        self.previous = None

    def clip_and_noise(self, per_sample_grads, step, epoch):
        self.previous = per_sample_grads
        return [g.sum(0) / 64 for g in per_sample_grads]

    def get_effective_sigma(self, step, epoch):
        return 1.0
'''


def relu_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(54, 7, bias=False),
                         nn.Tanh(), nn.Linear(7, 10))


# ----------------------------------------------------------------------------
# Per-example gradients


@pytest.mark.parametrize("model_fn, shape", [
    (mlp_digits, (1, 8, 8)), (dp_cnn_28, (1, 28, 28)), (small_cnn_cifar, (3, 32, 32)), (relu_model, (1, 14, 14)),
])
def test_layerwise_engine_equals_a_naive_loop_and_torch_func(model_fn, shape):
    seeds = [3, 4]
    base, params = stacked_models(model_fn, seeds, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, *shape, generator=gen)
    y = torch.randint(0, 10, (2, 3), generator=gen)
    engine = per_example_engine(model_fn(), base, torch.device("cpu"))
    assert isinstance(engine, LayerwiseGrads)
    got = {n: g.clone() for n, g in engine(params, x.permute(0, 1, 3, 4, 2).contiguous(), y).items()}
    func = FuncGrads(base)(params, x, y)
    for k, s in enumerate(seeds):
        torch.manual_seed(s)
        model = model_fn()
        for b in range(3):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x[k, b : b + 1]), y[k, b : b + 1]).backward()
            for name, p in model.named_parameters():
                torch.testing.assert_close(got[name][k, b], p.grad, rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(func[name][k, b], p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model_fn, shape", [
    (mlp_digits, (1, 8, 8)), (dp_cnn_28, (1, 28, 28)), (small_cnn_cifar, (3, 32, 32)),
])
def test_inputs_shared_by_the_models_give_the_same_gradients(model_fn, shape):
    base, params = stacked_models(model_fn, [1, 2, 3], torch.device("cpu"))
    x = torch.rand(1, 4, *shape[1:], shape[0])
    y = torch.randint(0, 10, (1, 4)).expand(3, 4)
    engine = per_example_engine(model_fn(), base, torch.device("cpu"))
    shared = {n: g.clone() for n, g in engine(params, x, y).items()}
    separate = engine(params, x.expand(3, *x.shape[1:]).contiguous(), y)
    for name in shared:
        torch.testing.assert_close(shared[name], separate[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model_fn, shape", [
    (mlp_digits, (1, 8, 8)), (dp_cnn_28, (1, 28, 28)), (small_cnn_cifar, (3, 32, 32)), (relu_model, (1, 14, 14)),
])
def test_layerwise_logits_equal_each_models_own_forward_pass(model_fn, shape):
    seeds = [5, 6, 7]
    base, params = stacked_models(model_fn, seeds, torch.device("cpu"))
    x = torch.rand(9, *shape, generator=torch.Generator().manual_seed(1))
    engine = per_example_engine(model_fn(), base, torch.device("cpu"))
    got = engine.logits(params, x.permute(0, 2, 3, 1).contiguous()).clone()
    for k, s in enumerate(seeds):
        torch.manual_seed(s)
        with torch.no_grad():
            torch.testing.assert_close(got[k], model_fn()(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_fn, shape, n_params", [(mlp_digits, (1, 8, 8), 2410),
                                                        (small_cnn_cifar, (3, 32, 32), 106_922)])
def test_accuracy_and_input_canary_scores_agree_between_engines(model_fn, shape, n_params):
    gen = np.random.default_rng(0)
    x = gen.random((60, *shape), dtype=np.float32)
    y = gen.integers(0, 10, 60)
    config = RunConfig(dataset_size=40, batch_size=10, epochs=1, epsilon=3.0, delta=1e-5, noise_multiplier=1.0,
                       max_grad_norm=1.0, n_params=n_params)
    canaries = TrainingCanaries(x=x[40:45], y=y[40:45])
    got = {}
    for engine in ("layerwise", "func"):
        trainer = Trainer(model_fn, config, x[:40], y[:40], x[45:], y[45:], canaries=canaries, engine=engine)
        base, params = stacked_models(model_fn, [1, 2, 3], torch.device("cpu"))
        got[engine] = trainer.accuracy(base, params), trainer._canary_scores(base, params).numpy()
    np.testing.assert_array_equal(got["layerwise"][0], got["func"][0])
    assert np.isfinite(got["func"][1]).all() and got["func"][1].shape == (3, 5)
    np.testing.assert_allclose(got["layerwise"][1], got["func"][1], rtol=1e-4, atol=1e-5)


def test_unsupported_layers_use_torch_func():
    model_fn = lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.GELU(), nn.Linear(10, 10))
    base, _ = stacked_models(model_fn, [0], torch.device("cpu"))
    assert isinstance(per_example_engine(model_fn(), base, torch.device("cpu")), FuncGrads)
    with pytest.raises(ValueError, match="does not support"):
        per_example_engine(model_fn(), base, torch.device("cpu"), prefer="layerwise")


# ----------------------------------------------------------------------------
# vmap and per-model mechanism calls


def _outputs(calls, per_sample, sizes, steps, shapes):
    with GlobalGenerators(torch.device("cpu")) as gens:
        return [calls(gens, per_sample, sizes, np.arange(len(sizes)), t, 0, shapes) for t in range(steps)]


@pytest.mark.parametrize("spec", [DPSGD, COSINE])
def test_vmap_and_loop_give_the_same_output_distribution(digits, spec):
    # The same per-example gradients for 200 models: outputs at a few coordinates over 3 steps
    # (cosine_schedule keeps an EMA of its outputs) must have the same distribution on both paths.
    config = config_for(digits)
    K, B = 200, 5
    base, params = stacked_models(mlp_digits, [1], torch.device("cpu"))
    x = torch.from_numpy(digits.x_train[:B]).unsqueeze(0)
    y = torch.from_numpy(digits.y_train[:B]).unsqueeze(0)
    g = FuncGrads(base)(params, x, y)
    per_sample = [v.expand(K, *v.shape[1:]).contiguous() for v in g.values()]
    shapes = [v.shape[2:] for v in per_sample]
    sizes = np.full(K, B)
    loop = _outputs(LoopCalls(new_mechanisms(spec, config, K), range(K), CallNotes(K)), per_sample, sizes, 3, shapes)
    vm = _outputs(VmapCalls(new_mechanisms(spec, config, K), range(K), CallNotes(K)), per_sample, sizes, 3, shapes)
    for t in range(3):
        a = torch.cat([o.reshape(K, -1) for o in loop[t]], 1)[:, :50].numpy()
        b = torch.cat([o.reshape(K, -1) for o in vm[t]], 1)[:, :50].numpy()
        assert np.unique(b[:, 0]).size == K  # every model got its own noise
        np.testing.assert_allclose(a.mean(0), b.mean(0), atol=6 * a.std(0).max() / np.sqrt(K))
        # Both standardised by the per-model path's mean and spread at each coordinate: one distribution.
        m, s = a.mean(0), a.std(0)
        assert scipy.stats.ks_2samp(((a - m) / s).ravel(), ((b - m) / s).ravel()).pvalue > 1e-3
        assert 0.8 < b.std(0).mean() / s.mean() < 1.25


def test_vmap_path_is_deterministic_per_chunk_and_equals_loop_without_noise(digits, tmp_path):
    config = config_for(digits)
    noiseless = mechanism_file(tmp_path, SEED_STYLE.replace("self.sigma * self.C * torch.randn(g.shape[1:])", "0"))
    trainer = Trainer(mlp_digits, config, digits.x_train, digits.y_train)
    loop = Trainer(mlp_digits, config, digits.x_train, digits.y_train, vectorize="loop")
    a = trainer.train(new_mechanisms(DPSGD, config, 3), [1, 2, 3])
    b = trainer.train(new_mechanisms(DPSGD, config, 3), [1, 2, 3])
    c = trainer.train(new_mechanisms(noiseless, config, 3), [1, 2, 3])
    d = loop.train(new_mechanisms(noiseless, config, 3), [1, 2, 3])
    assert a.calls == "vmap" and d.calls == "loop"
    for name in a.params:
        assert torch.equal(a.params[name], b.params[name])
        torch.testing.assert_close(c.params[name], d.params[name], rtol=1e-4, atol=1e-5)


def test_vmap_refusal_falls_back_to_the_loop_and_says_so_once(digits, tmp_path):
    # centered_quantile_clip calls .item(): refused at its first step, which is then redone per model,
    # so the run equals a per-model run exactly.
    config = config_for(digits)
    auto = Trainer(mlp_digits, config, digits.x_train, digits.y_train).train(new_mechanisms(QUANTILE, config, 2), [5, 6])
    loop = Trainer(mlp_digits, config, digits.x_train, digits.y_train, vectorize="loop").train(
        new_mechanisms(QUANTILE, config, 2), [5, 6])
    assert auto.calls == "loop" and len(auto.notes) == 1 and "vmap refused" in auto.notes[0]
    assert ".item()" in auto.notes[0] or "item" in auto.notes[0]
    for name in auto.params:
        assert torch.equal(auto.params[name], loop.params[name])


@pytest.mark.parametrize("source, why", [(NUMPY_NOISE, "numpy"), (OS_ENTROPY, "randomness is not torch")])
def test_vmap_refuses_randomness_it_cannot_split(digits, tmp_path, source, why):
    config = config_for(digits)
    spec = mechanism_file(tmp_path, source)
    result = Trainer(mlp_digits, config, digits.x_train, digits.y_train).train(new_mechanisms(spec, config, 2), [1, 2])
    assert result.calls == "loop" and why in result.notes[0]


@pytest.mark.parametrize("attribute, why", [
    ("set()", "Python state of type set"), ("np.random.default_rng(0)", "its own random generator"),
])
def test_python_state_is_refused_before_training(digits, tmp_path, attribute, why):
    config = config_for(digits)
    source = NUMPY_NOISE.replace("self.B = 64", f"self.B = 64\n        self.extra = {attribute}")
    mechs = new_mechanisms(mechanism_file(tmp_path, source), config, 2)
    with pytest.raises(VmapRefused, match=why):
        VmapCalls(mechs, [1, 2], CallNotes(2))


def test_state_set_from_a_tensor_is_refused_at_run_time(digits):
    # adaptive_clip_noised sets its clip norm with float(noisy_count): vmap raises, the loop takes over.
    config = config_for(digits)
    spec = str(MECHANISMS / "adaptive_clip_noised.py")
    result = Trainer(mlp_digits, config, digits.x_train, digits.y_train).train(new_mechanisms(spec, config, 2), [1, 2])
    assert result.calls == "loop" and "vmap refused" in result.notes[0]


# ----------------------------------------------------------------------------
# Empty batches and buffers


@pytest.mark.parametrize("vectorize", ["auto", "loop"])
def test_seed_style_mechanism_trains_through_empty_batches(tmp_path, vectorize):
    # N = 20, expected batch 1: about a third of the steps have an empty batch.
    rng = np.random.default_rng(0)
    ds = Dataset("tiny", rng.random((20, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 20),
                 rng.random((5, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 5), classes=10)
    config = RunConfig(dataset_size=20, batch_size=1, epochs=1, epsilon=1.0, delta=1e-5, noise_multiplier=1.0)
    spec = mechanism_file(tmp_path, SEED_STYLE)
    with pytest.raises(Exception):  # the mechanism itself fails on B = 0
        MechanismFactory.load(spec, config).new().clip_and_noise([torch.zeros(0, 3)], 0, 0)
    result = Trainer(mlp_digits, config, ds.x_train, ds.y_train, vectorize=vectorize).train(
        new_mechanisms(spec, config, 2), [1, 2])
    assert result.empty_batch_steps.sum() > 0
    assert any("empty batch" in n for n in result.notes)
    assert all(torch.isfinite(p).all() for p in result.params.values())


def test_a_mechanism_that_keeps_its_inputs_sees_them_unchanged(digits, tmp_path):
    config = config_for(digits)
    spec = mechanism_file(tmp_path, KEEPS_INPUT)
    mechs = new_mechanisms(spec, config, 1)
    seen = []
    original = mechs[0].clip_and_noise

    def spy(g, step, epoch):
        if mechs[0].previous is not None:
            seen.append((mechs[0].previous[0].clone(), mechs[0].previous[0]))
        return original(g, step, epoch)

    mechs[0].clip_and_noise = spy
    result = Trainer(mlp_digits, config, digits.x_train, digits.y_train, vectorize="loop").train(mechs, [1])
    assert any("fresh memory" in n for n in result.notes)
    assert seen and all(torch.equal(copy, kept) for copy, kept in seen)


# ----------------------------------------------------------------------------
# Devices and the CLI's environment checks


def test_training_subset_is_fixed_and_checked(digits):
    a, b = digits.subset(128), digits.subset(128)
    assert a.name == "digits[128]" and len(a.x_train) == 128 and np.array_equal(a.x_train, b.x_train)
    assert a.x_test is digits.x_test and digits.subset(len(digits.x_train)) is digits
    with pytest.raises(InputError, match=r"training subset size must be an integer in \[1, 1438\]"):
        digits.subset(0)


def test_models_at_once_is_chosen_per_device(digits):
    fmnist = RunConfig(dataset_size=60000, batch_size=256, epochs=1, epsilon=3, delta=1e-5, noise_multiplier=1,
                       n_params=26010)
    assert default_models_at_once("cpu", fmnist, (1, 28, 28), 1000) == 8  # the bench's best K
    assert default_models_at_once("cpu", config_for(digits), (1, 8, 8), 1000) == 256  # a tiny MLP
    assert default_models_at_once("cpu", fmnist, (1, 28, 28), 3) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_runs_and_agrees_with_the_cpu_without_noise(digits, tmp_path):
    config = config_for(digits)
    noiseless = mechanism_file(tmp_path, SEED_STYLE.replace("self.sigma * self.C * torch.randn(g.shape[1:])", "0"))
    cpu = Trainer(mlp_digits, config, digits.x_train, digits.y_train, digits.x_test, digits.y_test)
    gpu = Trainer(mlp_digits, config, digits.x_train, digits.y_train, digits.x_test, digits.y_test, device="cuda")
    a = cpu.train(new_mechanisms(noiseless, config, 4), [1, 2, 3, 4])
    b = gpu.train(new_mechanisms(noiseless, config, 4), [1, 2, 3, 4])
    for name in a.params:
        torch.testing.assert_close(b.params[name].cpu(), a.params[name], rtol=1e-3, atol=1e-4)
    noisy = audit_training(DPSGD, config, digits, runs=4, device="cuda", seed=1)
    assert noisy.device.startswith("cuda") and noisy.calls == "vmap" and noisy.accuracy["min"] > 0.3


def _training_args(**kw):
    return argparse.Namespace(**{"device": "cpu", "backend": "local", "ray_address": None, **kw})


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_one_line_error_before_any_work(capsys):
    code = cli_main(["audit", DPSGD, "--level", "training", "--dataset", "mnist:/does/not/exist", "--runs", "2",
                     "--batch-size", "64", "--epochs", "1", "--epsilon", "1", "--delta", "1e-5", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "CUDA is not available" in err  # not the missing dataset


def test_ray_backend_without_ray_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(InputError, match=r'needs Ray, which is not installed: pip install -e "\.\[ray\]"'):
        check_environment(_training_args(backend="ray"))
    code = cli_main(["audit", DPSGD, "--level", "training", "--dataset", "digits", "--runs", "2",
                     "--batch-size", "64", "--epochs", "1", "--epsilon", "1", "--delta", "1e-5", "--backend", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "needs Ray" in err


def test_enumerated_training_flags_use_choices(capsys):
    code = cli_main(["audit", DPSGD, "--level", "training", "--dataset", "digits", "--runs", "2", "--batch-size", "64",
                     "--epochs", "1", "--epsilon", "1", "--delta", "1e-5", "--threat-model", "grey-box"])
    assert code == 2 and "invalid choice: 'grey-box'" in capsys.readouterr().err
