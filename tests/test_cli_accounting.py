"""``dpaudit epsilon`` and ``dpaudit sigma``: output, agreement with the library, and errors.

Called in-process through ``main(argv)``; one subprocess call proves that
``python -m dpaudit`` works. Every bad input must give exit code 2 and exactly
one line on stderr that names the problem.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from dpaudit.accountants import get_accountant
from dpaudit.calibration import calibrate_sigma
from dpaudit.schedule import Schedule

from cli_helpers import assert_one_line_error, cli

NAMES = ["rdp", "pld", "prv", "gdp"]
EPOCHS = ["--dataset-size", "60000", "--batch-size", "256", "--epochs", "5"]
RUN = ["--sample-rate", "0.01", "--steps", "100"]


@pytest.fixture(autouse=True)
def _quiet_dp_accounting():
    logging.getLogger("absl").setLevel(logging.ERROR)
    yield


@pytest.fixture(scope="module")
def mnist_library():
    """The library's ε for q = 256/60000, σ = 1, 5 epochs at δ = 1e-5, by accountant."""
    schedule = Schedule.from_epochs(1.0, 60000, 256, 5)
    return {n: get_accountant(n).epsilon(schedule, 1e-5).epsilon for n in NAMES}


# ----- epsilon ---------------------------------------------------------------


def test_epsilon_table_lists_all_four(capsys, mnist_library):
    rc, out, err = cli(capsys, "epsilon", "--sigma", "1", *EPOCHS, "--delta", "1e-5")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert "1170 steps" in lines[0] and "add/remove" in lines[0]
    assert "delta: 1e-05" in out
    header = lines.index(next(line for line in lines if line.startswith("accountant")))
    rows = {line.split()[0]: line.split() for line in lines[header + 2 : header + 2 + len(NAMES)]}
    assert set(rows) == set(NAMES)
    for name in NAMES:
        assert rows[name][1] == f"{mnist_library[name]:.4f}"
    assert rows["gdp"][2] == "approximation"
    assert rows["prv"][2:4] == ["upper", "bound"]
    notes = out[out.index("notes:"):]
    assert "prv: lower" in notes and "CLT approximation" in notes
    assert max(len(line) for line in lines) <= 100


def test_epsilon_json_equals_library(capsys, mnist_library):
    rc, out, err = cli(capsys, "epsilon", "--sigma", "1", *EPOCHS, "--delta", "1e-5", "--json")
    assert rc == 0 and err == ""
    data = json.loads(out)
    assert {"delta", "epsilon"} <= set(data)
    assert data["delta"] == 1e-5
    assert set(data["epsilon"]) == set(NAMES)
    for name in NAMES:
        assert data["epsilon"][name] == mnist_library[name]
    assert data["neighbouring"] == "add/remove one example, Poisson sampling"


def test_epsilon_run_flags_equal_epoch_flags(capsys, mnist_library):
    q = repr(256 / 60000)
    rc, out, _ = cli(capsys, "epsilon", "--sigma", "1", "--sample-rate", q, "--steps", "1170",
                     "--delta", "1e-5", "--accountant", "rdp,gdp", "--json")
    assert rc == 0
    eps = json.loads(out)["epsilon"]
    assert set(eps) == {"rdp", "gdp"}
    assert eps == {n: mnist_library[n] for n in ("rdp", "gdp")}


def test_epsilon_schedule_file(capsys, tmp_path):
    p = tmp_path / "run.csv"
    p.write_text("sigma,sample_rate,steps\n1.2,0.02,50\n0.9,0.01,300\n2.0,1.0,2\n")
    rc, out, err = cli(capsys, "epsilon", "--schedule", str(p), "--delta", "1e-5",
                       "--accountant", "rdp,prv,gdp", "--json")
    assert rc == 0 and err == ""
    expected = Schedule.from_runs([1.2, 0.9, 2.0], [0.02, 0.01, 1.0], [50, 300, 2])
    eps = json.loads(out)["epsilon"]
    for name in ("rdp", "prv", "gdp"):
        assert eps[name] == get_accountant(name).epsilon(expected, 1e-5).epsilon
    assert "352 steps in 3 runs" in json.loads(out)["schedule"]


def test_epsilon_partial_failure_is_reported_not_fatal(capsys):
    # δ = 1e-20: PRV cannot resolve it and PLD's ε is infinite; RDP and GDP answer.
    rc, out, err = cli(capsys, "epsilon", "--sigma", "1", *RUN, "--delta", "1e-20", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["epsilon"]["prv"] is None and "error" in data["details"]["prv"]
    assert data["epsilon"]["pld"] is None and "error" in data["details"]["pld"]
    assert math.isfinite(data["epsilon"]["rdp"]) and math.isfinite(data["epsilon"]["gdp"])


def test_epsilon_all_accountants_failing_is_exit_2(capsys):
    rc, out, err = cli(capsys, "epsilon", "--sigma", "1", *RUN, "--delta", "1e-20", "--accountant", "prv")
    assert_one_line_error(rc, out, err, ["prv", "1e-20"])


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "dpaudit", "epsilon", "--sigma", "5", "--sample-rate", "1",
         "--steps", "100", "--delta", "1e-5", "--accountant", "gdp", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # q = 1, σ/√T = 0.5: the analytic Gaussian mechanism's ε (reference figure).
    assert json.loads(proc.stdout)["epsilon"]["gdp"] == pytest.approx(9.99726, abs=1e-5)


# ----- sigma -----------------------------------------------------------------


def test_sigma_json(capsys):
    rc, out, err = cli(capsys, "sigma", "--epsilon", "3", "--delta", "1e-5", *EPOCHS,
                       "--accountant", "rdp", "--json", "--no-progress")
    assert rc == 0 and err == ""
    data = json.loads(out)
    assert {"sigma", "epsilon", "accountant"} <= set(data)
    assert data["accountant"] == "rdp"
    lib = calibrate_sigma(3.0, 1e-5, 256 / 60000, 1170, accountant="rdp")
    assert data["sigma"] == lib.sigma and data["epsilon"] == lib.epsilon
    assert 0.7023 <= data["sigma"] <= 0.7025
    fresh = get_accountant("rdp").epsilon(Schedule.from_epochs(data["sigma"], 60000, 256, 5), 1e-5)
    assert 3.0 * (1 - 1e-3) <= fresh.epsilon <= 3.0


def test_sigma_text(capsys):
    rc, out, _ = cli(capsys, "sigma", "--epsilon", "2", "--delta", "1e-6", *RUN,
                     "--accountant", "gdp", "--no-progress")
    assert rc == 0
    assert "sigma:" in out and "<= target 2" in out
    assert "warning" in out and "under-state" in out  # GDP is an approximation


def test_sigma_is_printed_rounded_up(capsys):
    """The PRV σ for the default run is 0.6513683…: rounding to nearest would print 0.651368, below it."""
    rc, out, _ = cli(capsys, "sigma", "--epsilon", "3", "--delta", "1e-5", *EPOCHS, "--no-progress")
    assert rc == 0
    shown = re.search(r"^sigma: ([0-9.]+)", out, re.M).group(1)
    full = calibrate_sigma(3.0, 1e-5, 256 / 60000, 1170, accountant="prv").sigma
    assert len(shown.split(".")[1]) <= 6 and float(shown) >= full and float(shown) - full < 1e-6
    assert f"sigma={shown}," in out  # the run line shows the same rounded-up σ
    eps = get_accountant("prv").epsilon(Schedule.from_epochs(float(shown), 60000, 256, 5), 1e-5).epsilon
    assert eps <= 3.0


def test_sigma_gdp_json_is_marked_approximate(capsys):
    rc, out, _ = cli(capsys, "sigma", "--epsilon", "3", "--delta", "1e-5", *EPOCHS, "--accountant", "gdp",
                     "--json", "--no-progress")
    data = json.loads(out)
    assert rc == 0 and data["approximate"] is True and "under-state" in data["warning"]
    # The warning is earned: PLD (a certified upper bound) puts this sigma above the target.
    assert get_accountant("pld").epsilon(Schedule.from_epochs(data["sigma"], 60000, 256, 5), 1e-5).epsilon > 3.0
    rc, out, _ = cli(capsys, "sigma", "--epsilon", "3", "--delta", "1e-5", *EPOCHS, "--accountant", "pld",
                     "--json", "--no-progress")
    assert "approximate" not in json.loads(out)


def test_sigma_schedule_file(capsys, tmp_path):
    p = tmp_path / "shape.csv"
    p.write_text("sigma,sample_rate,steps\n1.5,0.02,40\n1.0,0.02,60\n0.6,0.02,100\n")
    rc, out, err = cli(capsys, "sigma", "--epsilon", "2", "--delta", "1e-5", "--schedule", str(p),
                       "--accountant", "rdp", "--json", "--no-progress")
    assert rc == 0 and err == ""
    data = json.loads(out)
    assert "scale" in data["meaning"]
    shape = Schedule.from_runs([1.5, 1.0, 0.6], 0.02, [40, 60, 100])
    fresh = get_accountant("rdp").epsilon(shape.scaled(data["sigma"]), 1e-5).epsilon
    assert 2.0 * (1 - 1e-3) <= fresh <= 2.0
    np.testing.assert_allclose(fresh, data["epsilon"], rtol=1e-12)


# ----- every bad input: exit 2 and one line naming the problem ----------------


@pytest.fixture
def files(tmp_path):
    bad_row = tmp_path / "bad_row.csv"
    bad_row.write_text("sigma,sample_rate,steps\n1.0,0.01,10\n-1,0.01,5\n")
    non_numeric = tmp_path / "non_numeric.csv"
    non_numeric.write_text("sigma,sample_rate\n1.0,abc\n")
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("sigma,rate\n1.0,0.1\n")
    good = tmp_path / "good.csv"
    good.write_text("sigma,sample_rate\n1.0,0.01\n")
    return {
        "BAD_ROW": str(bad_row), "NON_NUMERIC": str(non_numeric), "NO_COLUMN": str(no_column),
        "GOOD": str(good), "MISSING": str(tmp_path / "missing.csv"), "DIR": str(tmp_path),
        "UNDER_FILE": str(good / "x.json"),
    }


EPSILON_ERRORS = [
    (["--sigma", "0", *RUN, "--delta", "1e-5"], ["sigma", "> 0", "got 0"]),
    (["--sigma", "-1", *RUN, "--delta", "1e-5"], ["sigma", "> 0", "got -1"]),
    (["--sigma", "nan", *RUN, "--delta", "1e-5"], ["sigma", "NaN"]),
    (["--sigma", "inf", *RUN, "--delta", "1e-5"], ["sigma", "finite", "inf"]),
    (["--sigma", "abc", *RUN, "--delta", "1e-5"], ["--sigma", "invalid float", "abc"]),
    (["--sigma", "1", "--sample-rate", "0", "--steps", "10", "--delta", "1e-5"], ["sample_rate", "(0, 1]", "got 0"]),
    (["--sigma", "1", "--sample-rate", "1.5", "--steps", "10", "--delta", "1e-5"], ["sample_rate", "(0, 1]", "1.5"]),
    (["--sigma", "1", "--sample-rate", "-0.1", "--steps", "10", "--delta", "1e-5"], ["sample_rate", "(0, 1]", "-0.1"]),
    (["--sigma", "1", "--sample-rate", "nan", "--steps", "10", "--delta", "1e-5"], ["sample_rate", "NaN"]),
    (["--sigma", "1", *RUN, "--delta", "0"], ["delta", "(0, 1)", "got 0"]),
    (["--sigma", "1", *RUN, "--delta", "1"], ["delta", "(0, 1)", "got 1"]),
    (["--sigma", "1", *RUN, "--delta", "2"], ["delta", "(0, 1)", "got 2"]),
    (["--sigma", "1", *RUN, "--delta", "nan"], ["delta", "NaN"]),
    (["--sigma", "1", "--sample-rate", "0.01", "--steps", "0", "--delta", "1e-5"], ["steps", ">= 1", "got 0"]),
    (["--sigma", "1", "--sample-rate", "0.01", "--steps", "-3", "--delta", "1e-5"], ["steps", ">= 1", "-3"]),
    (["--sigma", "1", "--sample-rate", "0.01", "--steps", "1.5", "--delta", "1e-5"], ["--steps", "invalid int", "1.5"]),
    (["--sigma", "1", "--dataset-size", "100", "--batch-size", "10", "--epochs", "0", "--delta", "1e-5"], ["epochs", ">= 1"]),
    (["--sigma", "1", "--dataset-size", "100", "--batch-size", "1000", "--epochs", "1", "--delta", "1e-5"], ["batch_size", "100", "1000"]),
    (["--schedule", "MISSING", "--delta", "1e-5"], ["schedule file", "MISSING", "no such file"]),
    (["--schedule", "DIR", "--delta", "1e-5"], ["schedule file", "DIR"]),
    (["--schedule", "BAD_ROW", "--delta", "1e-5"], ["BAD_ROW", "sigma[1]", "> 0", "-1"]),
    (["--schedule", "NON_NUMERIC", "--delta", "1e-5"], ["NON_NUMERIC", "non-numeric", "abc"]),
    (["--schedule", "NO_COLUMN", "--delta", "1e-5"], ["NO_COLUMN", "missing column", "sample_rate"]),
    (["--sigma", "1", *RUN, "--delta", "1e-5", "--accountant", "foo"], ["unknown accountant", "foo", "rdp, pld, prv, gdp"]),
    (["--sigma", "1", *RUN, "--delta", "1e-5", "--json", "DIR"], ["--json", "DIR", "is a directory"]),
    (["--sigma", "1", *RUN, "--delta", "1e-5", "--json", "UNDER_FILE"], ["--json", "is a file, not a directory"]),
    (["--sigma", "1", *RUN, "--delta", "1e-5", "--accountant", ","], ["--accountant", "at least one"]),
    (["--schedule", "GOOD", "--sigma", "1", "--delta", "1e-5"], ["--schedule", "replaces", "--noise-multiplier"]),
    (["--schedule", "GOOD", *RUN, "--delta", "1e-5"], ["--schedule", "replaces"]),
    (["--sigma", "1", *RUN, "--epochs", "3", "--delta", "1e-5"], ["not both"]),
    (["--sigma", "1", *RUN], ["--delta", "required"]),
    ([*RUN, "--delta", "1e-5"], ["--noise-multiplier", "required"]),
    (["--sigma", "1", "--sample-rate", "0.01", "--delta", "1e-5"], ["--sample-rate", "--steps", "together"]),
    (["--sigma", "1", "--dataset-size", "100", "--batch-size", "10", "--delta", "1e-5"], ["missing --epochs"]),
    (["--sigma", "1", "--delta", "1e-5"], ["--sample-rate", "--dataset-size", "--schedule"]),
    (["--sigma", "1", *RUN, "--delta", "1e-5", "--bogus"], ["unrecognized arguments", "--bogus"]),
]


def _substitute(items, files):
    return [files.get(x, x) for x in items]


@pytest.mark.parametrize("argv, words", EPSILON_ERRORS)
def test_epsilon_bad_input(capsys, files, argv, words):
    rc, out, err = cli(capsys, "epsilon", *_substitute(argv, files))
    assert_one_line_error(rc, out, err, _substitute(words, files))


SIGMA_ERRORS = [
    (["--epsilon", "0", *RUN, "--delta", "1e-5"], ["epsilon", "> 0", "got 0"]),
    (["--epsilon", "-1", *RUN, "--delta", "1e-5"], ["epsilon", "> 0", "-1"]),
    (["--epsilon", "nan", *RUN, "--delta", "1e-5"], ["epsilon", "NaN"]),
    (["--epsilon", "3", *RUN, "--delta", "0"], ["delta", "(0, 1)"]),
    (["--epsilon", "3", *RUN, "--delta", "1"], ["delta", "(0, 1)"]),
    (["--epsilon", "3", *RUN, "--delta", "2"], ["delta", "(0, 1)"]),
    (["--epsilon", "3", "--sample-rate", "2", "--steps", "10", "--delta", "1e-5"], ["sample_rate", "(0, 1]"]),
    (["--epsilon", "3", "--sample-rate", "0.01", "--steps", "0", "--delta", "1e-5"], ["steps", ">= 1"]),
    (["--epsilon", "1e-4", "--sample-rate", "1", "--steps", "1000000", "--delta", "1e-5", "--accountant", "rdp"],
     ["no noise multiplier", "0.0001"]),
    (["--epsilon", "1e9", *RUN, "--delta", "1e-5", "--accountant", "rdp"], ["1e+09", "too large"]),
    (["--epsilon", "3", *RUN, "--delta", "1e-5", "--accountant", "foo"], ["--accountant", "invalid choice", "foo"]),
    (["--epsilon", "3", *RUN, "--delta", "1e-5", "--accountant", "rdp,pld"], ["invalid choice", "rdp,pld"]),
    (["--epsilon", "3", "--schedule", "MISSING", "--delta", "1e-5"], ["MISSING", "no such file"]),
    (["--epsilon", "3", "--schedule", "BAD_ROW", "--delta", "1e-5"], ["BAD_ROW", "sigma[1]"]),
    (["--epsilon", "3", "--schedule", "GOOD", *RUN, "--delta", "1e-5"], ["--schedule", "replaces"]),
    (["--epsilon", "3", "--delta", "1e-5"], ["describe the run"]),
    ([*RUN, "--delta", "1e-5"], ["--epsilon", "required"]),
    (["--epsilon", "3", *RUN, "--delta", "1e-5", "--sigma", "1"], ["unrecognized arguments", "--sigma"]),
]


@pytest.mark.parametrize("argv, words", SIGMA_ERRORS)
def test_sigma_bad_input(capsys, files, argv, words):
    rc, out, err = cli(capsys, "sigma", "--no-progress", *_substitute(argv, files))
    assert_one_line_error(rc, out, err, _substitute(words, files))


def test_sigma_failure_with_progress_bar_ends_in_one_error_line(capsys):
    """Without --no-progress the bar is drawn with carriage returns; the error is still one line."""
    rc, out, err = cli(capsys, "sigma", "--epsilon", "1e-4", "--sample-rate", "1", "--steps", "1000000",
                       "--delta", "1e-5", "--accountant", "gdp")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.endswith("\n")
    assert err.rsplit("\r", 1)[-1].startswith("dpaudit sigma: error: no noise multiplier")


@pytest.mark.parametrize("argv, words", [([], ["required", "COMMAND"]), (["foo"], ["invalid choice", "foo"])])
def test_top_level_bad_input(capsys, argv, words):
    rc, out, err = cli(capsys, *argv)
    assert_one_line_error(rc, out, err, words)
