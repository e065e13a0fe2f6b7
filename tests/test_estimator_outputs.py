"""The estimators inside the audits: every output labels what an estimate assumes, and the
white-box one-run training audit reaches the issue-11 target at ε = 4 (on a smaller run than
``audits/one-run-whitebox.sh``, which docs/auditing.md reports over ten seeds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dpaudit.audit.estimators import VERDICT_LABEL
from dpaudit.audit.mechanism_audit import audit_mechanism, calibrated_sigma
from dpaudit.audit.report import write_report as write_mechanism_report
from dpaudit.audit.scenarios import RUN_ZERO
from dpaudit.data.datasets import load_digits
from dpaudit.run_config import RunConfig
from dpaudit.training.report import write_report as write_training_report
from dpaudit.training.training_audit import audit_training, training_config

DPSGD = str(Path(__file__).resolve().parent.parent / "mechanisms" / "dpsgd.py")
DELTA = 1e-5
NEVER = "never decides a verdict"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_mechanism_audit_labels_every_estimate(tmp_path):
    sigma = calibrated_sigma(3.0, DELTA, 1.0, 2, "rdp")
    config = RunConfig(dataset_size=8, batch_size=8, epochs=2, epsilon=3.0, delta=DELTA, noise_multiplier=sigma)
    r = audit_mechanism(DPSGD, config, runs=60, scenarios=[RUN_ZERO], progress=False, workers=1,
                        calibration_accountant="rdp")
    assert {row.estimator for row in r.rows} == {
        "clopper_pearson", "one_run", "gdp", "gdp_parametric", "one_run_fdp",
    }
    table = r.table()
    for _, row in table.iterrows():
        assert row["valid"] == "yes" if row["estimator"] in ("clopper_pearson", "one_run") else NEVER in row["valid"]
    d = json.loads(json.dumps(r.to_dict()))
    for name, e in d["estimators"].items():
        assert e["label"] == (VERDICT_LABEL if e["valid_for_verdict"] else e["assumption"])
    assert all(NEVER in row["label"] for row in d["rows"] if not row["valid_for_verdict"])
    page = write_mechanism_report(r, tmp_path / "audit.md")[0].read_text()
    assert "Gaussian scores of equal variance" in page and "assumes GDP" not in page


@pytest.mark.slow
def test_white_box_one_run_training_audit_reaches_two_at_eps_4(tmp_path):
    # 300 Dirac canaries in one digits model, full batch, 50 steps (the docs' run has 1000
    # canaries and 300 steps); about 6 s. Measured over seeds 0-7: parametric 2.46-3.96
    # (2.46 at this seed); the assumption-free one-run bound 0.7-1.25, below the claim 3.99.
    # (The parametric estimate may exceed the claim in 5 % of seeds: it is not asserted below it.)
    digits = load_digits()
    config = training_config(digits, batch_size=len(digits.x_train), epochs=50, epsilon=4.0, delta=DELTA)
    result = audit_training(DPSGD, config, digits, canaries=300, seed=0)
    e = result.estimates
    assert set(e) == {"one_run", "gdp_parametric", "one_run_fdp"}
    assert e["gdp_parametric"].epsilon_lb >= 2.0
    assert 0.3 <= e["one_run"].epsilon_lb <= result.claimed_epsilon
    assert not result.violation  # only one_run decides, and it is below the claim
    d = json.loads(json.dumps(result.to_dict(), default=str))
    assert NEVER in d["estimators"]["gdp_parametric"]["label"]
    assert d["estimators"]["one_run"]["label"] == VERDICT_LABEL
    page = write_training_report(result, tmp_path / "audit.md")[0].read_text()
    assert "Gaussian scores of equal variance" in page
