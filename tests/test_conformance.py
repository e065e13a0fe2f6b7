"""Mechanisms written in other people's styles get their verdict from certify and the audit.

Every file in tests/conformance/ states ``EXPECTED VERDICT:`` and why. The
mechanisms whose randomness the probe cannot couple (fresh numpy entropy, OS
entropy) and the one that carries its own generator in its state are judged
over several probe seeds. Their "fresh entropy" is made reproducible by the
``reproducible_entropy`` fixture (tests/conftest.py): every call still gets
new, uncoupled draws, exactly as the probe sees real entropy, but a failing
seed can be rerun.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dpaudit.audit.mechanism_audit import audit_mechanism, calibrated_sigma
from dpaudit.audit.scenarios import RUN_ZERO
from dpaudit.certify import certify, default_noise_multiplier
from dpaudit.cli.main import main
from dpaudit.probe import N_PARAMS
from dpaudit.run_config import RunConfig

CORPUS = Path(__file__).resolve().parent / "conformance"
FILES = {p.stem: p for p in sorted(CORPUS.glob("*.py"))}
# 50 steps at q = 0.02: an empty batch has probability e^-32 per step, negligible.
N, B, E, EPS, DELTA = 1600, 32, 1, 3.0, 1e-5

#: Mechanisms whose draws the probe cannot couple, or that carry them in their state.
RANDOM = {"numpy_unseeded", "numpy_unseeded_low_noise", "os_entropy_quantile_clip", "state_counter_rng"}
#: Mechanisms written in the seed's idiom (reshape by the realised batch): certify and audit both.
SEED_STYLE = ("seed_style_dpsgd", "seed_centered_clip", "seed_centered_clip_capped", "seed_cosine_autos",
              "seed_lr_adaptive")

#: What the user must be told, per mechanism (phrases of the reasons).
REASONS = {
    "seed_centered_clip": ["undeclared data-dependent release", "realised batch"],
    "seed_centered_clip_capped": ["undeclared data-dependent release", "realised batch"],
    "seed_cosine_autos": ["noise is below what the mechanism declares", "realised batch"],
    "seed_lr_adaptive": ["noise is below what the mechanism declares", "realised batch"],
    "realised_batch_divisor": ["realised batch"],
    "numpy_unseeded_low_noise": ["noise is below what the mechanism declares"],
    "os_entropy_quantile_clip": ["undeclared data-dependent release"],
}


def expected_verdict(path: Path) -> str:
    match = re.search(r"EXPECTED VERDICT:\s*(pass|fail)", path.read_text())
    assert match, f"{path.name} must state its EXPECTED VERDICT"
    assert "WHY:" in path.read_text(), f"{path.name} must say why"
    return match.group(1)


def _robust_note(result) -> bool:
    return any("a batch of 0 examples" in n and "negligible" in n for n in result.probe.robustness)


#: Properties of the measurement itself, beyond the verdict.
CHECKS = {
    "seed_style_dpsgd": _robust_note,
    "refuses_empty_batch": lambda r: _robust_note(r) and "needs at least one example" in r.probe.robustness[0],
    "float32_buffer_ema": lambda r: r.probe.input_format.startswith("float32"),
    "numpy_seeded": lambda r: "self.rng" in r.probe.coupling,
    "torch_generator_attr": lambda r: "self.generator" in r.probe.coupling,
    "inplace_clip": lambda r: any("in place" in n for n in r.probe.notes),
    "numpy_unseeded": lambda r: r.probe.coupling.startswith("defeated") and "independent draws" in r.probe.leak_check,
    "os_entropy_quantile_clip": lambda r: r.probe.coupling.startswith("defeated") and bool(r.probe.leaks),
    "state_counter_rng": lambda r: "state" in r.probe.coupling,
}


@pytest.fixture(scope="module")
def config() -> RunConfig:
    return RunConfig(N, B, E, EPS, DELTA, default_noise_multiplier(N, B, E, EPS, DELTA), 1.0, N_PARAMS)


# Uncoupled draws cost thousands of calls (about 10 s each): marked slow, still run in CI.
CASES = [
    pytest.param(name, seed, id=f"{name}-seed{seed}", marks=[pytest.mark.slow] if name in RANDOM else [])
    for name in FILES for seed in ((0, 1) if name in RANDOM else (0,))
]


@pytest.mark.parametrize("name, seed", CASES)
def test_certify_verdict(name, seed, config, reproducible_entropy):
    if name in RANDOM:
        reproducible_entropy(seed)
    path = FILES[name]
    result = certify(str(path), config, seed=seed, progress=False)
    assert result.verdict == expected_verdict(path), result.reasons
    text = " ".join(result.reasons)
    for phrase in REASONS.get(name, []):
        assert phrase in text, (phrase, result.reasons)
    if result.verdict == "pass":
        assert result.reasons == () and result.probe.undecided == ()
    assert CHECKS.get(name, lambda r: True)(result), result.probe.to_dict()


def test_corpus_is_large_and_states_every_verdict():
    assert len(FILES) >= 12
    verdicts = {name: expected_verdict(path) for name, path in FILES.items()}
    assert set(verdicts.values()) == {"pass", "fail"}
    for path in FILES.values():
        assert "dpaudit" not in path.read_text().split('"""', 2)[-1], f"{path.name} must not import dpaudit"


def test_hook_run_certify_cli_gives_the_seed_style_a_verdict(capsys):
    """The seed's idiom on a 10-step run through the CLI: a verdict (exit 0), not an input error."""
    code = main(["certify", str(FILES["seed_style_dpsgd"]), "--dataset-size", "2560", "--batch-size", "256",
                 "--epochs", "1", "--epsilon", "3", "--delta", "1e-5", "--audit", "none", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "verdict: pass" in out
    assert "robustness: the mechanism fails on a batch of 0 examples" in out


# ----------------------------------------------------------------------------
# The gradient-space audit on the seed's style


def audit_run() -> RunConfig:
    """N = 1000, B = 250 (q = 0.25), one epoch = 4 steps, σ from RDP (fast to calibrate)."""
    sigma = calibrated_sigma(2.0, DELTA, 0.25, 4, "rdp")
    return RunConfig(dataset_size=1000, batch_size=250, epochs=1, epsilon=2.0, delta=DELTA, noise_multiplier=sigma)


@pytest.mark.parametrize("name", SEED_STYLE)
def test_audit_seed_style(name):
    path = FILES[name]
    flawed = expected_verdict(path) == "fail"
    # Every flaw of the seed's four shows in the full-batch worst cases (all divide by the realised batch).
    scenarios = ["full-batch-zero"] if flawed else None
    r = audit_mechanism(str(path), audit_run(), runs=150, scenarios=scenarios, progress=False, workers=1,
                        calibration_accountant="rdp")
    assert r.violation is flawed, r.summary()
    note = [n for n in r.notes if n.startswith("robustness:")]
    assert len(note) == 1 and "a batch of 0 examples" in note[0] and "zero-gradient" in note[0]
    if not flawed:
        empty = r.outcome("full-batch-empty")
        assert empty.scenario.min_others == 1 and empty.n_in > 0 and empty.n_out > 0


def test_audit_cli_nan_exits_2(tmp_path, capsys):
    path = tmp_path / "nan_mech.py"
    path.write_text(FILES["seed_style_dpsgd"].read_text().replace(
        "        return out\n", "        return [o * float('nan') for o in out] if step == 2 else out\n"))
    code = main(["audit", str(path), "--dataset-size", "1000", "--batch-size", "250", "--epochs", "1",
                 "--epsilon", "2", "--delta", "1e-5", "--calibration-accountant", "rdp", "--runs", "20",
                 "--scenario", RUN_ZERO, "--no-results", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "nan_mech.py" in err[0] and "step 2" in err[0] and "NaN" in err[0]
