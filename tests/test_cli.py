"""The CLI as a user meets it: one flag language, one-line errors before any long work, exit codes,
Ctrl-C, output files, progress off a terminal, start-up that loads only what a command runs, and the
Python API exported from the package.

Most calls are in-process (``main(argv)``); subprocesses only where start-up or a signal is tested.
``epsilon``/``sigma`` errors are in test_cli_accounting.py.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dpaudit
from dpaudit.accountants import get_accountant
from dpaudit.calibration import calibrate_sigma
from dpaudit.cli.main import build_parser, main
from dpaudit.cli.output import table, write_atomic
from dpaudit.progress import Progress, track
from dpaudit.run_config import RunConfig
from dpaudit.schedule import Schedule

from cli_helpers import assert_one_line_error, cli

ROOT = Path(__file__).resolve().parents[1]
DPSGD = str(ROOT / "mechanisms" / "dpsgd.py")
SMALL = ["--dataset-size", "1000", "--batch-size", "250", "--epochs", "1", "--epsilon", "2", "--delta", "1e-5"]


@pytest.fixture
def paths(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    two_rates = tmp_path / "two_rates.csv"
    two_rates.write_text("sigma,sample_rate,steps\n1.0,0.01,10\n1.0,0.02,10\n")
    two_sigmas = tmp_path / "two_sigmas.csv"
    two_sigmas.write_text("sigma,sample_rate,steps\n1.0,0.25,2\n2.0,0.25,2\n")
    uniform = tmp_path / "uniform.csv"
    uniform.write_text("sigma,sample_rate,steps\n1.0,0.25,8\n")
    return {
        "DIR": str(tmp_path), "DIR/": str(tmp_path) + "/", "UNDER_FILE": str(a_file / "x.json"),
        "TXT": str(tmp_path / "report.txt"), "TWO_RATES": str(two_rates), "TWO_SIGMAS": str(two_sigmas),
        "UNIFORM": str(uniform), "MISSING": str(tmp_path / "missing.py"),
    }


def _sub(items, paths):
    return [paths.get(x, x) for x in items]


# ----- every failure: one line, exit 2, before the long work -------------------------------------

GIVEN = ["--noise-multiplier", "1"]  # no calibration: these fail before any computation
CERTIFY_ERRORS = [
    ([*SMALL, "--json", "DIR"], ["--json", "is a directory"]),
    ([*SMALL, "--report", "DIR/"], ["--report", "is a directory"]),
    ([*SMALL, "--report", "TXT"], ["--report", "ending in .md"]),
    ([*SMALL, "--json", "UNDER_FILE"], ["--json", "is a file, not a directory"]),
    ([*SMALL, *GIVEN, "--n-params", "0"], ["n_params", ">= 1", "got 0"]),
    ([*SMALL, *GIVEN, "--runs", "0"], ["runs", ">= 1"]),
    ([*SMALL, *GIVEN, "--confidence", "2"], ["confidence", "(0, 1)"]),
    ([*SMALL, *GIVEN, "--time-budget", "-1"], ["time_budget", "> 0"]),
    ([*SMALL, *GIVEN, "--max-grad-norm", "0"], ["max_grad_norm", "> 0"]),
    ([*SMALL, "--noise-multiplier", "-1"], ["noise_multiplier", "> 0", "-1"]),
    ([*SMALL, "--calibration-accountant", "gdp"], ["--calibration-accountant", "invalid choice", "gdp"]),
    ([*SMALL, "--audit", "bogus"], ["--audit", "invalid choice", "bogus"]),
    ([*SMALL, "--bogus"], ["unrecognized arguments", "--bogus"]),
    (["--sample-rate", "0.01", "--steps", "100", "--epsilon", "2", "--delta", "1e-5"],
     ["--dataset-size", "--batch-size"]),
    (["--dataset-size", "1000", "--batch-size", "250", "--steps", "7", "--epsilon", "2", "--delta", "1e-5"],
     ["--steps 7", "whole number of epochs", "4 steps"]),
    (["--dataset-size", "1000", "--sample-rate", "0.2504", "--steps", "4", "--epsilon", "2", "--delta", "1e-5"],
     ["q*N", "not a whole number", "--batch-size"]),
    (["--dataset-size", "1000", "--batch-size", "250", "--sample-rate", "0.5", "--epochs", "1", "--epsilon", "2",
      "--delta", "1e-5"], ["--sample-rate 0.5", "disagrees"]),
    (["--dataset-size", "1000", "--batch-size", "250", "--epochs", "2", "--steps", "4", "--epsilon", "2",
      "--delta", "1e-5"], ["--epochs 2", "8 steps", "--steps 4"]),
    (["--dataset-size", "1000", "--batch-size", "250", "--epsilon", "2", "--delta", "1e-5"], ["--epochs"]),
    (["--dataset-size", "1000", "--schedule", "TWO_RATES", "--epsilon", "2", "--delta", "1e-5"],
     ["TWO_RATES", "2 sample rates"]),
    (["--dataset-size", "1000", "--schedule", "TWO_SIGMAS", "--epsilon", "2", "--delta", "1e-5"],
     ["TWO_SIGMAS", "2 noise multipliers", "--noise-multiplier"]),
    (["--dataset-size", "1000", "--schedule", "UNIFORM", *GIVEN, "--epsilon", "2", "--delta", "1e-5"],
     ["--schedule replaces"]),
    ([*SMALL[:-4], "--epsilon", "0", "--delta", "1e-5"], ["epsilon", "> 0"]),
    ([*SMALL[:-2], "--delta", "1"], ["delta", "(0, 1)"]),
    ([*SMALL, "--steps", "1.5"], ["--steps", "invalid int", "1.5"]),
]


@pytest.mark.parametrize("argv, words", CERTIFY_ERRORS)
def test_certify_bad_input(capsys, paths, argv, words):
    start = time.perf_counter()
    rc, out, err = cli(capsys, "certify", DPSGD, "--no-progress", *_sub(argv, paths))
    assert_one_line_error(rc, out, err, _sub(words, paths))
    assert time.perf_counter() - start < 20  # before the probe and the audit, not after


def test_certify_missing_mechanism(capsys, paths):
    rc, out, err = cli(capsys, "certify", paths["MISSING"], *SMALL, *GIVEN, "--no-progress")
    assert_one_line_error(rc, out, err, ["missing.py", "does not exist"])


TRAINING = ["--level", "training", "--dataset", "digits", "--epsilon", "2", "--delta", "1e-5", "--no-results"]
AUDIT_ERRORS = [
    ([*SMALL, "--json", "DIR"], ["--json", "is a directory"]),
    ([*SMALL, "--report", "UNDER_FILE"], ["--report", "is a file, not a directory"]),
    ([*SMALL, "--results", "UNDER_FILE"], ["--results", "is a file, not a directory"]),
    ([*SMALL, "--no-results", "--results", "DIR"], ["--no-results", "--results", "exclude"]),
    ([*TRAINING, "--batch-size", "64", "--epochs", "1", "--sample-rate", "0.25"],
     ["--level training", "--batch-size and --epochs", "--sample-rate"]),
    ([*TRAINING, "--batch-size", "64"], ["--level training needs --epochs"]),
    ([*SMALL, "--level", "Bogus"], ["--level", "invalid choice", "bogus"]),
    ([*SMALL, "--scenario", "bogus"], ["--scenario", "invalid choice", "bogus"]),
    ([*SMALL, "--calibration-accountant", "gdp"], ["invalid choice", "gdp"]),
    ([*SMALL, "--runs", "x"], ["--runs", "invalid int"]),
]


@pytest.mark.parametrize("argv, words", AUDIT_ERRORS)
def test_audit_bad_input(capsys, paths, argv, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "audit", DPSGD, "--no-progress", *_sub(argv, paths))
    assert_one_line_error(rc, out, err, _sub(words, paths))


def test_training_level_missing_dataset_is_one_line(capsys, tmp_path):
    rc, out, err = cli(capsys, "audit", DPSGD, "--level", "training", "--dataset", f"mnist:{tmp_path / 'none'}",
                       "--batch-size", "64", "--epochs", "1", "--epsilon", "2", "--delta", "1e-5",
                       "--noise-multiplier", "1", "--no-results", "--no-progress")
    assert_one_line_error(rc, out, err, ["mnist", "does not exist"])


def test_unexpected_exception_is_one_line_unless_debugging(capsys, monkeypatch):
    import dpaudit.api

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(dpaudit.api, "epsilon", broken)
    argv = ["epsilon", "--sigma", "1", "--sample-rate", "0.01", "--steps", "10", "--delta", "1e-5"]
    rc, out, err = cli(capsys, *argv)
    assert_one_line_error(rc, out, err, ["unexpected RuntimeError: boom", "DPAUDIT_DEBUG=1"])
    monkeypatch.setenv("DPAUDIT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(argv)


def test_numpy_warnings_never_reach_the_user_and_others_are_one_line(capsys, monkeypatch):
    import warnings

    import dpaudit.api

    real = dpaudit.api.epsilon

    def noisy(*args, **kwargs):
        np.exp(np.array([1000.0])) * 0  # overflow, then invalid: numpy RuntimeWarnings
        warnings.warn("a library's remark\nwith a second line", UserWarning)
        warnings.warn("a library's remark\nwith a second line", UserWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(dpaudit.api, "epsilon", noisy)
    rc, out, err = cli(capsys, "epsilon", "--sigma", "1", "--sample-rate", "0.01", "--steps", "10",
                       "--delta", "1e-5", "--accountant", "gdp")
    assert rc == 0 and "gdp" in out
    assert err == "dpaudit: warning: a library's remark\n"


# ----- one flag language: every alias means its flag --------------------------------------------

ALIAS_CASES = [
    ("--sigma", "--noise-multiplier", "noise_multiplier", "0.9", ("epsilon", "certify", "audit")),
    ("--sampling-probability", "--sample-rate", "sample_rate", "0.25", ("epsilon", "sigma", "certify", "audit")),
    ("--num-compositions", "--steps", "steps", "8", ("epsilon", "sigma", "certify", "audit")),
    ("--target-epsilon", "--epsilon", "epsilon", "2.5", ("sigma", "certify", "audit")),
    ("--target-delta", "--delta", "delta", "1e-6", ("epsilon", "sigma", "certify", "audit")),
    ("--audit-runs", "--runs", "runs", "300", ("certify", "audit")),
    ("--audit-budget", "--time-budget", "time_budget", "30", ("certify", "audit")),
]


def _required(command: str) -> list[str]:
    mech = [DPSGD] if command in ("certify", "audit") else []
    eps = [] if command == "epsilon" else ["--epsilon", "2"]
    return [command, *mech, *eps, "--delta", "1e-5"]


@pytest.mark.parametrize("alias, flag, dest, value, commands", ALIAS_CASES, ids=[c[0] for c in ALIAS_CASES])
def test_alias_means_the_flag(alias, flag, dest, value, commands):
    parser = build_parser()
    for command in commands:
        canonical = parser.parse_args(_required(command) + [flag, value])
        aliased = parser.parse_args(_required(command) + [alias, value])
        assert vars(aliased) == vars(canonical), (command, alias)
        assert getattr(aliased, dest) == type(getattr(aliased, dest))(value)


def test_aliases_end_to_end_give_the_same_answer(capsys):
    opacus_style = cli(capsys, "sigma", "--target-epsilon", "2", "--target-delta", "1e-5",
                       "--sampling-probability", "0.01", "--num-compositions", "300", "--accountant", "gdp",
                       "--json", "--no-progress")
    ours = cli(capsys, "sigma", "--epsilon", "2", "--delta", "1e-5", "--sample-rate", "0.01", "--steps", "300",
               "--accountant", "gdp", "--json", "--no-progress")
    assert opacus_style == ours and opacus_style[0] == 0
    old = cli(capsys, "epsilon", "--sigma", "1.1", "--sample-rate", "0.01", "--steps", "300", "--delta", "1e-5",
              "--accountant", "gdp", "--json")
    new = cli(capsys, "epsilon", "--noise-multiplier", "1.1", "--sample-rate", "0.01", "--steps", "300",
              "--delta", "1e-5", "--accountant", "gdp", "--json")
    assert json.loads(old[1])["epsilon"] == json.loads(new[1])["epsilon"]


def test_flags_are_not_abbreviated(capsys):
    rc, out, err = cli(capsys, "epsilon", "--noise", "1", "--sample-rate", "0.01", "--steps", "10", "--delta", "1e-5")
    assert_one_line_error(rc, out, err, ["unrecognized arguments", "--noise"])


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dpaudit {dpaudit.__version__}"
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "exit codes" in text and "Entry point" not in text
    for command in ("epsilon", "sigma", "certify", "audit"):
        assert command in text


def test_same_calibration_default_in_certify_and_audit():
    parser = build_parser()
    certify = parser.parse_args(_required("certify"))
    audit = parser.parse_args(_required("audit"))
    assert certify.calibration_accountant == audit.calibration_accountant == "prv"
    assert certify.time_budget == audit.time_budget and certify.runs == audit.runs


# ----- output: JSON on stdout, file modes, tables ---------------------------------------------------

def test_json_without_path_goes_to_stdout_and_text_to_stderr(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "audit", DPSGD, *SMALL, "--calibration-accountant", "rdp", "--runs", "20",
                       "--scenario", "full-batch-zero", "--no-results", "--no-progress", "--json")
    data = json.loads(out)
    assert rc == 3 and data["verdict"] == "inconclusive"  # 20 runs per side cannot refute eps 2
    assert "verdict: inconclusive" in err and "these runs cannot detect a violation of this claim" in err
    assert not (tmp_path / "-").exists()


def test_results_directory_holds_a_file_named_for_the_audit(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["audit", DPSGD, *SMALL, "--calibration-accountant", "rdp", "--runs", "20", "--scenario",
            "full-batch-zero", "--no-progress", "--results", "runs/"]
    assert cli(capsys, *argv)[0] == 3
    files = list((tmp_path / "runs").glob("dpsgd-DPMechanism-*.jsonl"))
    assert len(files) == 1
    rc, out, _ = cli(capsys, *argv)  # the second time it resumes from that file
    assert rc == 3 and f"note: resumed 60 runs from {files[0].relative_to(tmp_path)}" in out


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_are_written_with_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "sub" / "f.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "f.json").stat().st_mode) == mode
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["f.json"]


def test_table_aligns_text_left_numbers_right_and_drops_empty_columns():
    text = table([{"name": "a", "x": 1.5, "note": "", "n": None}, {"name": "bbb", "x": float("nan"), "note": "", "n": 3}],
                 {"x": ".2f"})
    lines = text.splitlines()
    assert lines[0].split() == ["name", "x", "n"]
    assert lines[2].startswith("a    ") and lines[2].split()[1] == "1.50"
    assert lines[3].split() == ["bbb", "-", "3"]
    assert lines[2].index("1.50") + 3 == lines[3].index("-", 3)  # numbers right-aligned


# ----- progress: a bar on a terminal, one line elsewhere ---------------------------------------------

def test_progress_off_a_terminal_is_one_summary_line(capsys):
    with Progress("work", total=3, unit="step") as bar:
        for _ in range(3):
            bar.update()
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 1 and err.startswith("work: 3 steps in ")
    assert list(track(range(2), "loop", unit="run")) == [0, 1]
    assert capsys.readouterr().err.startswith("loop: 2 runs in ")


def test_progress_says_nothing_when_disabled_or_failing(capsys):
    with pytest.raises(ValueError):
        with Progress("work", total=3):
            raise ValueError
    with pytest.raises(ValueError):
        for _ in track(range(3), "loop"):
            raise ValueError
    with Progress("quiet", total=1, enabled=False) as bar:
        bar.update()
    assert capsys.readouterr().err == ""


def test_calibration_progress_counts_its_evaluations(capsys):
    result = calibrate_sigma(2.0, 1e-5, 0.01, 200, "rdp", progress=True)
    err = capsys.readouterr().err
    assert err.startswith(f"calibrating sigma (rdp): {result.evaluations} evaluations in ")


def test_audit_progress_counts_steps_and_says_what_it_resumed(capsys, tmp_path):
    config = RunConfig(dataset_size=1000, batch_size=250, epochs=1, epsilon=2.0, delta=1e-5, noise_multiplier=1.5)
    results = tmp_path / "runs.jsonl"
    from dpaudit.audit.mechanism_audit import audit_mechanism

    audit_mechanism(DPSGD, config, runs=20, scenarios=["full-batch-zero"], results_path=results, progress=True)
    err = capsys.readouterr().err
    # 40 runs with the canary and 20 reference runs, 4 steps each (N = B = 4, 4 epochs).
    assert "audit: 60 runs (240 mechanism steps) in " in err and "\r" not in err
    again = audit_mechanism(DPSGD, config, runs=20, scenarios=["full-batch-zero"], results_path=results,
                            progress=True)
    assert f"resumed 60 runs from {results}" in capsys.readouterr().err
    assert f"resumed 60 runs from {results}" in again.notes


# ----- Ctrl-C and start-up (subprocesses) ----------------------------------------------------------

def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dpaudit", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT)


def _ctrl_c(proc: subprocess.Popen) -> tuple[int, str]:
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


LONG_AUDIT = ["audit", "mechanisms/dpsgd.py", *SMALL, "--noise-multiplier", "1.5", "--scenario", "run-zero",
              "--runs", "100000", "--no-progress"]


def test_ctrl_c_during_start_up_is_one_line_and_exit_130():
    proc = _start([*LONG_AUDIT, "--no-results", "--workers", "1"])
    time.sleep(0.5)  # past the interpreter's own start-up, inside dpaudit's imports
    rc, err = _ctrl_c(proc)
    assert rc == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("dpaudit") and "interrupted" in err


def test_ctrl_c_swallowed_by_library_code_still_ends_the_process():
    # An interrupt landing in a third party's `except BaseException` import fallback.
    code = (
        "import os, signal, time\n"
        "import dpaudit.cli.main as m\n"
        "m._interrupts.GRACE_SECONDS = 0.5\n"
        "with m._interrupts(lambda: 'dpaudit audit'):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n"
        "    except BaseException:\n"
        "        pass\n"
        "    time.sleep(60)\n"
        "print('ran on')\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and proc.stdout == "", proc
    assert proc.stderr == "dpaudit audit: interrupted\n"
    assert time.perf_counter() - t0 < 30


def test_interrupt_watchdog_stands_down_once_main_returns():
    code = (
        "import os, signal, time\n"
        "import dpaudit.cli.main as m\n"
        "m._interrupts.GRACE_SECONDS = 0.5\n"
        "try:\n"
        "    with m._interrupts(lambda: 'dpaudit audit'):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    pass\n"
        "time.sleep(1.5)\n"
        "print('still here')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "still here\n", proc


@pytest.mark.slow
def test_ctrl_c_stops_an_audit_pool_in_one_line(tmp_path):
    results = tmp_path / "runs.jsonl"
    proc = _start([*LONG_AUDIT, "--results", str(results), "--workers", "2"])
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:  # wait until the pool has saved some runs
        if results.exists() and len(results.read_text().splitlines()) > 50:
            break
        time.sleep(0.2)
    rc, err = _ctrl_c(proc)
    assert rc == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "interrupted" in err and f"saved in {results}; rerun the same command to resume" in err


def test_commands_import_only_what_they_run():
    code = (
        "import sys\n"
        "import dpaudit\n"
        "assert 'numpy' not in sys.modules, 'import dpaudit loads numpy'\n"
        "from dpaudit.cli.main import main\n"
        "assert main(['--help']) == 0\n"
        "heavy = [m for m in ('torch', 'scipy', 'pandas', 'dp_accounting', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, f'--help loads {heavy}'\n"
        "assert main(['epsilon', '--sigma', '1', '--sample-rate', '0.01', '--steps', '10', '--delta', '1e-5',\n"
        "             '--accountant', 'rdp']) == 0\n"
        "heavy = [m for m in ('torch', 'opacus', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, f'epsilon --accountant rdp loads {heavy}'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ----- the Python API ------------------------------------------------------------------------------

def test_package_exports_the_api():
    for name in ("epsilon", "noise_multiplier", "certify", "audit", "Schedule", "RunConfig", "InputError"):
        assert name in dpaudit.__all__ and name in dir(dpaudit)
        assert callable(getattr(dpaudit, name))
    importlib.import_module("dpaudit.certify.report")  # the subpackage stays a package

    assert callable(dpaudit.certify) and hasattr(dpaudit.certify, "report")
    with pytest.raises(AttributeError):
        dpaudit.no_such_name


def test_api_epsilon_is_one_row_per_accountant():
    schedule = Schedule.from_epochs(1.0, 60000, 256, 5)
    frame = dpaudit.epsilon(schedule, 1e-5)
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == ["rdp", "pld", "prv", "gdp"]
    assert {"epsilon", "bound", "notes", "seconds"} <= set(frame.columns)
    for name in frame.index:
        assert frame.loc[name, "epsilon"] == get_accountant(name).epsilon(schedule, 1e-5).epsilon
    assert frame.loc["gdp", "bound"] == "approximation" and frame.loc["pld", "bound"] == "upper bound"
    config = RunConfig(dataset_size=60000, batch_size=256, epochs=5, epsilon=3, delta=1e-5, noise_multiplier=1.0)
    same = dpaudit.epsilon(config, 1e-5, accountants="rdp,gdp")
    assert list(same["epsilon"]) == list(frame.loc[["rdp", "gdp"], "epsilon"])
    failed = dpaudit.epsilon(Schedule.uniform(1.0, 0.01, 100), 1e-20, accountants=["prv", "rdp"])
    assert failed.loc["prv", "bound"] == "failed" and math.isnan(failed.loc["prv", "epsilon"])
    assert "1e-20" in failed.loc["prv", "notes"] and math.isfinite(failed.loc["rdp", "epsilon"])
    assert failed.to_dict()["bound"]["rdp"] == "upper bound"


def test_api_noise_multiplier_takes_opacus_keywords():
    q = 256 / 60000
    sigma = dpaudit.noise_multiplier(target_epsilon=3.0, target_delta=1e-5, sample_rate=q, steps=1170,
                                     accountant="rdp")
    assert sigma == calibrate_sigma(3.0, 1e-5, q, 1170, "rdp").sigma
    # Opacus's rule for epochs with a sample rate: steps = int(epochs / sample_rate).
    by_epochs = dpaudit.noise_multiplier(target_epsilon=3.0, target_delta=1e-5, sample_rate=q, epochs=5,
                                         accountant="rdp")
    assert by_epochs == calibrate_sigma(3.0, 1e-5, q, int(5 / q), "rdp").sigma
    by_sizes = dpaudit.noise_multiplier(3.0, 1e-5, dataset_size=60000, batch_size=256, epochs=5, accountant="rdp")
    assert by_sizes == sigma
    loose = dpaudit.noise_multiplier(3.0, 1e-5, q, 1170, accountant="rdp", epsilon_tolerance=0.3)
    eps = get_accountant("rdp").epsilon(Schedule.uniform(loose, q, 1170), 1e-5).epsilon
    assert 2.7 <= eps <= 3.0 and loose >= sigma
    with pytest.raises(dpaudit.InputError, match="steps or epochs"):
        dpaudit.noise_multiplier(3.0, 1e-5, sample_rate=q)


def test_api_audit_and_certify_return_results_with_to_dict(tmp_path):
    result = dpaudit.audit(DPSGD, target_epsilon=2.0, target_delta=1e-5, dataset_size=1000, batch_size=250,
                           epochs=1, calibration_accountant="rdp", runs=20, scenarios=["full-batch-zero"])
    assert result.verdict == "inconclusive" and result.to_dict()["verdict"] == "inconclusive"
    cert = dpaudit.certify(DPSGD, target_epsilon=2.0, target_delta=1e-5, dataset_size=1000, sample_rate=0.1,
                           steps=20, noise_multiplier=3.0, audit=False)
    d = cert.to_dict()
    assert d["config"]["batch_size"] == 100 and d["config"]["epochs"] == 2 and d["verdict"] == cert.verdict
    assert d["config"]["noise_multiplier_source"] == "given"


def _result(rows):
    from dpaudit.audit.mechanism_audit import AuditRow, MechanismAuditResult

    config = RunConfig(dataset_size=1000, batch_size=250, epochs=1, epsilon=2.0, delta=1e-5, noise_multiplier=1.0)
    return MechanismAuditResult(
        mechanism="m.py", config=config, confidence=0.95, seed=0, runs=100, claimed_epsilon=2.0, scenarios=(),
        rows=tuple(AuditRow(sc, "lr", "clopper_pearson", lb, ceiling, claim, True, 0.99, 100, 100, None)
                   for sc, lb, ceiling, claim in rows),
        violation=any(lb > claim for _, lb, _, claim in rows), calibration_accountant="prv",
    )


def test_audit_verdicts_and_the_largest_valid_bound():
    # The bound closest to its claim (0.5 vs 1.0) is not the largest bound (0.9 vs 3.0).
    result = _result([("a", 0.5, 3.0, 1.0), ("b", 0.9, 4.0, 3.0)])
    assert result.verdict == "no violation" and "largest valid eps_lb 0.900" in result.summary()
    blind = _result([("a", 0.5, 0.9, 1.0), ("b", 0.9, 2.5, 3.0)])
    assert blind.verdict == "inconclusive"
    assert blind.summary().startswith("inconclusive: these runs cannot detect a violation of this claim")
    assert _result([("a", 1.5, 3.0, 1.0)]).verdict == "violation"
    assert _result([]).verdict == "inconclusive"


# ----- figures ---------------------------------------------------------------------------------------

def test_roc_band_is_clopper_pearson():
    from dpaudit.report.figures import _cp_interval

    n, a = 50, 0.05
    lo, hi = _cp_interval(np.array([0, 50, 10]), n, 1 - a)
    assert lo[0] == 0 and hi[1] == 1
    assert hi[0] == pytest.approx(1 - (a / 2) ** (1 / n))  # closed forms at k = 0 and k = n
    assert lo[1] == pytest.approx((a / 2) ** (1 / n))
    assert lo[2] < 10 / n < hi[2]
