"""Noise calibration: never over the target, close to it, and the σ the field's tools find.

Every returned σ is checked with a *fresh* accountant instance (not the
calibration's cached result); expected σ come from the reference figures (Opacus's
``get_noise_multiplier``, dp-accounting's ``calibrate_dp_mechanism``, measured in November 2026) and,
at q = 1, from the analytic Gaussian mechanism solved here with scipy.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import log_ndtr

from dpaudit.accountants.gdp import GdpAccountant
from dpaudit.accountants.pld import PldAccountant
from dpaudit.accountants.prv import PrvAccountant
from dpaudit.accountants.rdp import RdpAccountant
from dpaudit.calibration import calibrate_scale, calibrate_sigma
from dpaudit.errors import CalibrationError, InputError
from dpaudit.schedule import Schedule

FRESH = {"rdp": RdpAccountant, "pld": PldAccountant, "prv": PrvAccountant, "gdp": GdpAccountant}
Q = 256 / 60000
STEPS = 1170  # 5 epochs of 60000 / 256
RTOL = 1e-3  # calibrate_* default
SCALE = float(os.environ.get("DPAUDIT_PROPERTY_SCALE", "1"))

# σ for ε = 3, δ = 1e-5, q = 256/60000, 1170 steps (reference figure): Opacus get_noise_multiplier
# (RDP 0.7023, PRV 0.6514, GDP 0.5565) and dp-accounting calibrate_dp_mechanism (PLD 0.6508).
ANCHOR_SIGMA = {"rdp": 0.7024, "prv": 0.6514, "pld": 0.6508, "gdp": 0.5565}


@pytest.fixture(autouse=True)
def _quiet_dp_accounting():
    logging.getLogger("absl").setLevel(logging.ERROR)
    yield


def fresh_epsilon(name: str, schedule: Schedule, delta: float) -> float:
    return FRESH[name]().epsilon(schedule, delta).epsilon


@pytest.mark.parametrize("name", ["rdp", "pld", "prv", "gdp"])
def test_uniform_sigma_for_epsilon_3(name):
    r = calibrate_sigma(3.0, 1e-5, Q, STEPS, accountant=name)
    assert r.accountant == name and r.target_epsilon == 3.0 and r.delta == 1e-5
    assert r.schedule == Schedule.uniform(r.sigma, Q, STEPS)
    assert r.sigma == pytest.approx(ANCHOR_SIGMA[name], rel=1e-3)
    if name == "rdp":
        assert 0.7023 <= r.sigma <= 0.7025
    eps = fresh_epsilon(name, Schedule.uniform(r.sigma, Q, STEPS), 1e-5)
    assert eps == pytest.approx(r.epsilon, rel=1e-12)
    assert 3.0 * (1 - RTOL) <= eps <= 3.0
    # Smallest such σ, to the tolerance: 1 % less noise is over budget.
    assert fresh_epsilon(name, Schedule.uniform(r.sigma * 0.99, Q, STEPS), 1e-5) > 3.0


def analytic_sigma_eff(target: float, delta: float) -> float:
    """The s with exact Gaussian ε(δ) = target (Balle & Wang 2018), by brentq, here."""

    def delta_of(eps: float, s: float) -> float:
        a = log_ndtr(-eps * s + 1 / (2 * s))
        b = eps + log_ndtr(-eps * s - 1 / (2 * s))
        return math.exp(a) * -math.expm1(b - a)

    return brentq(lambda s: delta_of(target, s) - delta, 1e-3, 1e3, xtol=1e-14, rtol=1e-14)


@pytest.mark.parametrize("target, delta, steps", [(1.0, 1e-5, 100), (8.0, 1e-6, 1), (3.0, 1e-3, 50)])
def test_full_batch_gdp_calibration_matches_the_analytic_gaussian(target, delta, steps):
    exact_sigma = math.sqrt(steps) * analytic_sigma_eff(target, delta)
    r = calibrate_sigma(target, delta, 1.0, steps, accountant="gdp")
    # Never less noise than the exact answer (to round-off), at most rtol more.
    assert exact_sigma * (1 - 1e-9) <= r.sigma <= exact_sigma * (1 + 2 * RTOL)


def linear_shape(levels: int = 8, per_level: int = 25, q: float = 0.02) -> Schedule:
    """σ decreasing linearly from 1.6 to 0.9 over levels·per_level steps (a staircase)."""
    return Schedule.from_steps(np.repeat(np.linspace(1.6, 0.9, levels), per_level), q)


@pytest.mark.parametrize("name", ["rdp", "pld"])
def test_shape_calibration_round_trip(name):
    shape = linear_shape()
    assert shape.total_steps == 200 and len(shape.sigmas) == 8
    r = calibrate_scale(shape, 2.0, 1e-5, accountant=name)
    assert r.schedule == shape.scaled(r.scale)
    ratios = np.asarray(r.schedule.sigmas) / np.asarray(shape.sigmas)
    np.testing.assert_allclose(ratios, r.scale, rtol=1e-12)
    assert r.schedule.counts == shape.counts and r.schedule.sample_rates == shape.sample_rates
    eps = fresh_epsilon(name, shape.scaled(r.scale), 1e-5)
    assert 2.0 * (1 - RTOL) <= eps <= 2.0
    assert fresh_epsilon(name, shape.scaled(r.scale * 0.99), 1e-5) > 2.0


@pytest.mark.parametrize("name", ["rdp", "gdp"])
def test_calibration_never_overshoots(name):
    @settings(max_examples=max(1, int(10 * SCALE)), deadline=None, derandomize=True)
    @given(
        target=st.floats(0.5, 10.0),
        log10_delta=st.floats(-7.0, -3.0),
        q=st.floats(1e-3, 0.1),
        steps=st.integers(10, 2000),
    )
    def check(target, log10_delta, q, steps):
        delta = 10.0**log10_delta
        r = calibrate_sigma(target, delta, q, steps, accountant=name)
        eps = fresh_epsilon(name, Schedule.uniform(r.sigma, q, steps), delta)
        assert eps <= target
        assert eps >= target * (1 - RTOL)

    check()


@pytest.mark.parametrize("name", ["rdp", "gdp", "pld", "prv"])
def test_target_too_small_is_calibration_error(name):
    # q = 1, 10^6 steps: even σ = 10^4 leaves μ = 0.1, ε(1e-5) ≈ 0.4 > 1e-4.
    with pytest.raises(CalibrationError) as info:
        calibrate_sigma(1e-4, 1e-5, 1.0, 1_000_000, accountant=name)
    assert isinstance(info.value, InputError)
    msg = str(info.value)
    assert "no noise multiplier" in msg and "0.0001" in msg


def test_target_too_large_is_calibration_error():
    # (GDP has no such limit: its CLT ε grows like e^{1/σ²} and reaches any target.)
    with pytest.raises(CalibrationError, match=r"too large") as info:
        calibrate_sigma(1e9, 1e-5, 0.01, 100, accountant="rdp")
    assert "sigma = 0.001" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(target_epsilon=0.0), "epsilon"),
        (dict(target_epsilon=-1.0), "epsilon"),
        (dict(target_epsilon=math.nan), "epsilon"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
        (dict(sample_rate=1.5), "sample_rate"),
        (dict(steps=0), "steps"),
        (dict(accountant="foo"), "unknown accountant"),
    ],
)
def test_bad_calibration_inputs(kwargs, word):
    args = dict(target_epsilon=3.0, delta=1e-5, sample_rate=0.01, steps=100, accountant="gdp")
    args.update(kwargs)
    with pytest.raises(InputError, match=word):
        calibrate_sigma(**args)
