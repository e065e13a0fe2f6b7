"""The gradient-space audit of a mechanism (dpaudit.audit.mechanism_audit and the CLI).

Runs are kept small (100–200 per side, runs of 4–8 steps) except the power
check, which uses the 1000 runs per side the target is stated for.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dpaudit.audit import mechanism_audit as ma
from dpaudit.audit.gradient_game import Features, canary_direction, play
from dpaudit.audit.mechanism_audit import audit_mechanism, calibrated_sigma
from dpaudit.audit.scenarios import RUN_EMPTY, RUN_ZERO, SCENARIO_NAMES, run_scenarios, worst_case_scenarios
from dpaudit.audit.statistics import run_statistics
from dpaudit.cli.main import main
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.run_config import RunConfig

MECHANISMS = Path(__file__).resolve().parent.parent / "mechanisms"
DELTA = 1e-5


def small_run(epsilon: float) -> RunConfig:
    """N = 1000, B = 250 (q = 0.25), one epoch = 4 steps; σ from RDP (fast to calibrate)."""
    sigma = calibrated_sigma(epsilon, DELTA, 0.25, 4, "rdp")
    return RunConfig(dataset_size=1000, batch_size=250, epochs=1, epsilon=epsilon, delta=DELTA, noise_multiplier=sigma)


def spec(name: str) -> str:
    return str(MECHANISMS / name)


def audit(name_or_spec: str, config: RunConfig, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    kw.setdefault("calibration_accountant", "rdp")
    s = name_or_spec if name_or_spec.endswith(".py") and "/" in name_or_spec else spec(name_or_spec)
    return audit_mechanism(s, config, **kw)


def comparable(result) -> dict:
    """The result without timings, paths and what was resumed from where."""
    d = result.to_dict()
    d.pop("seconds")
    d["config"].pop("results_path")
    d["notes"] = [n for n in d["notes"] if not n.startswith(("runs took", "resumed "))]
    for s in d["scenarios"]:
        s.pop("seconds")
    return d


# ----------------------------------------------------------------------------
# Building blocks


def test_lr_statistic_full_batch_is_weighted_sum():
    f = Features(np.array([2.0, -1.0, 0.5]), np.array([1.0, 2.0, 0.5]), np.array([2.0, 4.0, 1.0]))
    z = np.array([2.0, -0.5, 1.0])
    mu = 1 / np.array([2.0, 4.0, 1.0])
    stats = run_statistics(f, 1.0)
    assert stats["lr"] == pytest.approx(float(np.sum(mu * z - mu**2 / 2)))
    assert stats["log_scale"] == pytest.approx(math.log(1.0) + math.log(2.0) + math.log(0.5))
    sub = run_statistics(f, 0.1)["lr"]
    assert sub == pytest.approx(float(np.sum(np.log(0.9 + 0.1 * np.exp(mu * z - mu**2 / 2)))))


def test_game_is_deterministic_and_sees_the_declared_gaussian():
    """dpsgd at q = 1: z_t = 1/σ + N(0, 1) with the canary, N(0, 1) without."""
    config = RunConfig(dataset_size=4, batch_size=4, epochs=4, epsilon=3, delta=DELTA, noise_multiplier=2.0)
    scenario = worst_case_scenarios(config, lambda q, t: 0.5)["full-batch-zero"]
    factory = MechanismFactory.load(spec("dpsgd.py"), scenario.run)
    u = canary_direction(scenario, 0)
    a = play(factory, scenario, True, 123, u)
    b = play(factory, scenario, True, 123, u)
    np.testing.assert_array_equal(a.projection, b.projection)
    np.testing.assert_array_equal(a.scale, b.scale)
    z_in = np.concatenate([play(factory, scenario, True, s, u).z for s in range(30)])
    z_out = np.concatenate([play(factory, scenario, False, s, u).z for s in range(30)])
    assert abs(z_in.mean() - 2.0) < 0.4 and abs(z_out.mean()) < 0.4  # 1/σ = 2
    assert 0.7 < z_out.std() < 1.3
    np.testing.assert_allclose(a.sigma, 0.5)


def test_scenarios_describe_themselves():
    config = small_run(2.0)
    scen = {**run_scenarios(config), **worst_case_scenarios(config, lambda q, t: 3.0)}
    assert set(scen) == set(SCENARIO_NAMES)
    assert "3 zero-gradient others" in scen["full-batch-zero"].describe()
    assert "q = 1" in scen["full-batch-split"].describe()
    assert scen["full-batch-split"].n_above == 2
    assert scen[RUN_ZERO].run.sample_rate == 0.25


# ----------------------------------------------------------------------------
# Power and verdicts


@pytest.mark.slow
def test_power_full_batch_dpsgd():
    """Plain DP-SGD, q = 1, eps = 3, 1000 runs per side: GDP >= 2.0 and CP >= 0.55, no violation."""
    sigma = calibrated_sigma(3.0, DELTA, 1.0, 3, "prv")
    config = RunConfig(dataset_size=10, batch_size=10, epochs=3, epsilon=3.0, delta=DELTA, noise_multiplier=sigma)
    r = audit("dpsgd.py", config, runs=1000, scenarios=[RUN_ZERO], calibration_accountant="prv")
    lr = {row.estimator: row for row in r.rows if row.statistic == "lr"}
    assert lr["gdp"].epsilon_lb >= 2.0
    assert lr["clopper_pearson"].epsilon_lb >= 0.55
    assert not r.violation
    assert r.claimed_epsilon == pytest.approx(3.0, abs=0.05)
    assert all(row.epsilon_lb <= row.claimed_epsilon for row in r.rows if row.valid_for_verdict)


@pytest.mark.parametrize("name", ["centered_quantile_clip.py", "realised_batch_norm.py"])
def test_data_dependent_releases_violate(name):
    r = audit(name, small_run(2.0), runs=150)
    assert r.violation
    worst = {row.scenario for row in r.violations}
    assert worst & {"full-batch-zero", "full-batch-split"}
    assert all(row.valid_for_verdict and row.epsilon_lb > row.claimed_epsilon for row in r.violations)
    text = r.summary()
    assert text.startswith("VIOLATION") and "full-batch-" in text and "q = 1" in text
    d = r.to_dict()
    assert d["violation"] is True and d["violations"][0]["scenario"].startswith("full-batch-")


def test_unnoised_quantile_alone_is_caught(tmp_path):
    """Exact-median clipping with an expected-batch divisor: only the quantile channel leaks."""
    path = tmp_path / "quantile_only.py"
    path.write_text(textwrap.dedent('''
        import math
        import torch

        class DPMechanism:
            def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size,
                         epochs, target_epsilon, target_delta):
                self.cmax, self.sigma = float(max_grad_norm), float(noise_multiplier)
                self.clip, self.b = float(max_grad_norm), float(batch_size)

            def clip_and_noise(self, g, step, epoch):
                n = g[0].shape[0]
                norms = torch.linalg.vector_norm(torch.cat([x.reshape(n, x[0].numel()) for x in g], 1), dim=1)
                C = self.clip
                scale = (C / (norms + 1e-6)).clamp(max=1.0)
                out = [(torch.tensordot(scale, x, dims=1) + self.sigma * C * torch.randn(x.shape[1:])) / self.b
                       for x in g]
                if n:
                    frac = (norms > C).float().mean().item()
                    self.clip = min(max(C * math.exp(0.2 * (frac - 0.5)), 1e-3), self.cmax)
                return out

            def get_effective_sigma(self, step, epoch):
                return self.sigma
    '''))
    r = audit(str(path), small_run(2.0), runs=150, scenarios=["full-batch-split"])
    assert r.violation
    assert {row.statistic for row in r.violations} & {"noise", "best"}


@pytest.mark.parametrize("name", ["dpsgd.py", "autos.py", "adaptive_clip_noised.py", "decreasing_sigma.py"])
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_correct_mechanisms_never_violate(name, seed):
    scenarios = None
    if name == "adaptive_clip_noised.py":  # needs B > 10 sigma: its worst cases run at N = B = 256 (slow)
        scenarios = [RUN_ZERO, "full-batch-zero"]
    r = audit(name, small_run(2.0), runs=150, seed=seed, scenarios=scenarios)
    assert not r.violation, r.summary()
    # The design could have shown a violation: some valid ceiling is above the claim.
    assert any(row.ceiling > row.claimed_epsilon for row in r.rows if row.valid_for_verdict)
    if name == "adaptive_clip_noised.py":
        assert r.outcome("full-batch-zero").scenario.run.batch_size > 4
        assert any("rejects N = B = 4" in n for n in r.notes)


def test_confidence_is_split_over_pairs():
    r = audit("dpsgd.py", small_run(2.0), runs=40, scenarios=[RUN_ZERO, "full-batch-zero"])
    alpha = 1 - r.confidence
    verdict = {(row.scenario, row.statistic): row.confidence for row in r.rows if row.estimator == "clopper_pearson"}
    shape = {(row.scenario, row.statistic): row.confidence for row in r.rows if row.estimator == "gdp"}
    spent_verdict = sum(2 * (1 - c) for c in verdict.values())
    assert spent_verdict == pytest.approx(alpha)
    assert sum(1 - c for c in shape.values()) == pytest.approx(alpha)
    assert verdict[(RUN_ZERO, "lr")] == pytest.approx(1 - alpha / 4)


# ----------------------------------------------------------------------------
# Resuming and the results file


def test_resume_gives_the_same_result(tmp_path, monkeypatch):
    config = small_run(2.0)
    kw = dict(runs=40, scenarios=["full-batch-zero", RUN_EMPTY], seed=3)
    fresh = audit("realised_batch_norm.py", config, **kw)

    path = tmp_path / "runs.jsonl"
    partial = audit("realised_batch_norm.py", config, results_path=path, max_runs=30, **kw)
    assert any("max_runs" in n for n in partial.notes)
    # Simulate a crash in the middle of a write: half a line at the end.
    with open(path, "ab") as fh:
        fh.write(b'{"s": "full-batch-zero", "k": "main", "i": 9')
    resumed = audit("realised_batch_norm.py", config, results_path=path, **kw)
    assert comparable(resumed) == comparable(fresh)

    # A file truncated to half its lines resumes too, and a pool of workers gives the same numbers.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))
    monkeypatch.setattr(ma, "POOL_MIN_CALLS", 0)
    pooled = audit("realised_batch_norm.py", config, results_path=path, workers=2, **kw)
    assert comparable(pooled) == comparable(fresh)
    assert len(path.read_text().splitlines()) == 1 + sum(2 * 40 + 20 for _ in kw["scenarios"])


def test_default_plan_respects_the_time_budget():
    """A tiny budget: the user's run is cut, and runs stop at 1.5x the budget; bounds still come out."""
    r = audit("dpsgd.py", small_run(2.0), runs=300, time_budget=0.5)
    text = " ".join(r.notes)
    assert "stopped at" in text and "time limit" in text
    assert r.seconds < 60
    assert not r.violation


def test_results_file_of_another_audit_is_refused(tmp_path):
    config = small_run(2.0)
    path = tmp_path / "runs.jsonl"
    audit("dpsgd.py", config, runs=20, scenarios=["full-batch-empty"], results_path=path)
    with pytest.raises(InputError, match="different audit.*another --results file or delete"):
        audit("dpsgd.py", config, runs=20, scenarios=["full-batch-empty"], results_path=path, seed=1)
    with pytest.raises(InputError, match="different audit"):
        audit("autos.py", config, runs=20, scenarios=["full-batch-empty"], results_path=path)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    with pytest.raises(InputError, match="not a dpaudit mechanism-audit results file"):
        audit("dpsgd.py", config, runs=20, scenarios=["full-batch-empty"], results_path=junk)


def test_input_errors():
    config = small_run(2.0)
    with pytest.raises(InputError, match="unknown scenario"):
        audit("dpsgd.py", config, runs=20, scenarios=["nope"])
    with pytest.raises(InputError, match="runs must be >= 10"):
        audit("dpsgd.py", config, runs=5)
    with pytest.raises(InputError, match="confidence"):
        audit("dpsgd.py", config, runs=20, confidence=1.5)


def test_mechanism_that_crashes_is_named(tmp_path):
    path = tmp_path / "crash.py"
    path.write_text(textwrap.dedent('''
        class DPMechanism:
            def __init__(self, **kw):
                pass
            def clip_and_noise(self, g, step, epoch):
                if step == 3:
                    raise ZeroDivisionError("late failure")
                return [x.sum(0) for x in g]
            def get_effective_sigma(self, step, epoch):
                return 1.0
    '''))
    with pytest.raises(InputError, match=r"crash.py: scenario full-batch-empty, step 3 \(batch of \d\).*ZeroDivisionError"):
        audit(str(path), small_run(2.0), runs=20, scenarios=["full-batch-empty"])


def test_empty_batch_refusal_on_a_run_that_produces_empty_batches_is_an_error(tmp_path):
    """N·q = 4: an empty batch has probability e^-4 per step, so refusing it is not a robustness note."""
    path = tmp_path / "no_empty.py"
    path.write_text(textwrap.dedent('''
        class DPMechanism:
            def __init__(self, **kw):
                pass
            def clip_and_noise(self, g, step, epoch):
                if g[0].shape[0] == 0:
                    raise ValueError("empty batch")
                return [x.sum(0) for x in g]
            def get_effective_sigma(self, step, epoch):
                return 1.0
    '''))
    config = RunConfig(dataset_size=400, batch_size=4, epochs=1, epsilon=2.0, delta=DELTA, noise_multiplier=1.0)
    with pytest.raises(InputError, match=r"no_empty.py: .*ValueError: empty batch on a batch of 0 examples; "
                                         r"your run .* produces one with probability"):
        audit(str(path), config, runs=20, scenarios=[RUN_ZERO])


# ----------------------------------------------------------------------------
# CLI and report


def cli(*args: str) -> list[str]:
    return [
        "audit", *args, "--dataset-size", "1000", "--batch-size", "250", "--epochs", "1",
        "--epsilon", "2", "--delta", "1e-5", "--calibration-accountant", "rdp", "--no-progress",
    ]


def test_cli_pass_json_and_default_results_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.json"
    code = main(cli(spec("dpsgd.py"), "--runs", "150", "--scenario", "full-batch-zero", "--json", str(out)))
    assert code == 0
    printed = capsys.readouterr().out
    assert "claimed epsilon" in printed and "full-batch-zero" in printed and "verdict: no violation" in printed
    assert max(len(line) for line in printed.splitlines()) <= 100
    d = json.loads(out.read_text())
    assert d["violation"] is False and d["verdict"] == "no violation"
    assert set(d["estimators"]) == {"clopper_pearson", "gdp", "gdp_parametric", "one_run", "one_run_fdp"}
    assert all("epsilon_lb" in v for v in d["estimators"].values())
    assert {"claimed_epsilon", "confidence", "config", "scenarios"} <= set(d)
    assert d["config"]["dataset_size"] == 1000 and d["config"]["runs_per_side"] == 150
    assert list((tmp_path / "dpaudit-results").glob("dpsgd-DPMechanism-*.jsonl"))


def test_cli_violation_exit_code_and_report(tmp_path, capsys):
    md = tmp_path / "rep" / "audit.md"
    code = main(cli(
        spec("realised_batch_norm.py"), "--runs", "100", "--scenario", "full-batch-zero",
        "--no-results", "--report", str(md), "--json", str(tmp_path / "v.json"),
    ))
    assert code == 1
    assert "verdict: violation" in capsys.readouterr().out
    assert json.loads((tmp_path / "v.json").read_text())["violation"] is True
    text = md.read_text()
    assert "full-batch-zero" in text and "audit-roc.png" in text and "audit-scores.png" in text
    import matplotlib.image

    for png in ("audit-roc.png", "audit-scores.png"):
        data = (md.parent / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(md.parent / png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


@pytest.mark.parametrize(
    "args, message",
    [
        (["--level", "training"], "needs --dataset"),
        (["--level", "bogus"], "invalid choice: 'bogus'"),
        (["--runs", "5"], "runs must be >= 10"),
        (["--scenario", "bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_cli_input_errors_exit_2(args, message, capsys):
    assert main(cli(spec("dpsgd.py"), "--no-results", *args)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_missing_mechanism_exit_2(tmp_path, capsys):
    assert main(cli(str(tmp_path / "missing.py"), "--no-results")) == 2
    assert "does not exist" in capsys.readouterr().err
