"""Schedule: constructors, run-length compression, validation messages and CSV reading.

Expected values are worked out by hand in the tests (E·⌊N/B⌋, run lengths,
sums of counts), never by the code under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpaudit.errors import InputError
from dpaudit.schedule import Neighbouring, Schedule, steps_for_epochs
from dpaudit.schedule_csv import read_schedule_csv

ADD_REMOVE = "add/remove one example, Poisson sampling"


# ----- constructors ---------------------------------------------------------


def test_uniform_is_one_run():
    s = Schedule.uniform(1.3, 0.01, 250)
    assert s.sigmas == (1.3,)
    assert s.sample_rates == (0.01,)
    assert s.counts == (250,)
    assert s.total_steps == 250
    assert not s.is_full_batch
    assert Schedule.uniform(2.0, 1.0, 3).is_full_batch


def test_neighbouring_relation_is_add_remove_poisson():
    s = Schedule.uniform(1.0, 0.5, 1)
    assert s.neighbouring is Neighbouring.ADD_REMOVE_POISSON
    assert str(s.neighbouring) == ADD_REMOVE
    assert ADD_REMOVE in s.describe()


@pytest.mark.parametrize(
    "n, b, e, steps",
    [
        (60000, 256, 5, 1170),  # 5 * 234; Opacus' formulas give 1171 and 1175
        (60000, 256, 1, 234),
        (1000, 300, 3, 9),  # 3 * floor(3.33)
        (1000, 1000, 7, 7),
        (10, 1, 2, 20),
    ],
)
def test_from_epochs_steps_is_epochs_times_floor(n, b, e, steps):
    assert steps_for_epochs(n, b, e) == steps
    s = Schedule.from_epochs(0.9, n, b, e)
    assert s.counts == (steps,)
    assert s.sample_rates == (b / n,)
    assert s.sigmas == (0.9,)


def test_from_epochs_batch_larger_than_dataset():
    with pytest.raises(InputError, match=r"batch_size.*<=.*100.*256"):
        Schedule.from_epochs(1.0, 100, 256, 1)


def test_from_steps_run_length_compresses_consecutive_equal_steps():
    s = Schedule.from_steps([1.0, 1.0, 1.0, 2.0, 2.0, 1.0, 0.5], 0.01)
    assert s.sigmas == (1.0, 2.0, 1.0, 0.5)
    assert s.counts == (3, 2, 1, 1)
    assert s.sample_rates == (0.01,) * 4
    assert s.total_steps == 7


def test_from_steps_a_change_in_q_alone_starts_a_run():
    s = Schedule.from_steps([1.0, 1.0, 1.0], [0.1, 0.2, 0.2])
    assert s.sigmas == (1.0, 1.0)
    assert s.sample_rates == (0.1, 0.2)
    assert s.counts == (1, 2)


def test_from_runs_merges_adjacent_equal_runs_and_keeps_counts():
    s = Schedule.from_runs([1.0, 1.0, 2.0, 1.0], [0.1, 0.1, 0.1, 0.1], [2, 3, 4, 5])
    assert s.sigmas == (1.0, 2.0, 1.0)
    assert s.counts == (5, 4, 5)


def test_from_runs_default_counts_are_one_each():
    assert Schedule.from_runs([1.0, 2.0], 0.3).counts == (1, 1)


def test_merged_sums_counts_of_equal_pairs_anywhere():
    s = Schedule.from_runs([1.0, 2.0, 1.0, 3.0, 2.0], [0.1, 0.1, 0.1, 0.1, 0.2], [2, 4, 5, 1, 7])
    m = s.merged()
    got = {(sig, q): n for sig, q, n in zip(m.sigmas, m.sample_rates, m.counts)}
    assert got == {(1.0, 0.1): 7, (2.0, 0.1): 4, (3.0, 0.1): 1, (2.0, 0.2): 7}
    assert m.total_steps == s.total_steps == 19
    assert m.neighbouring == s.neighbouring


def test_scaled_multiplies_every_sigma():
    s = Schedule.from_runs([1.0, 2.0], [0.1, 0.2], [3, 4]).scaled(1.5)
    assert s.sigmas == (1.5, 3.0)
    assert s.sample_rates == (0.1, 0.2)
    assert s.counts == (3, 4)


def test_per_step_expands_runs():
    sig, q = Schedule.from_runs([1.0, 2.0], [0.1, 0.2], [2, 3]).per_step()
    np.testing.assert_array_equal(sig, [1.0, 1.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(q, [0.1, 0.1, 0.2, 0.2, 0.2])


def test_schedule_is_frozen():
    s = Schedule.uniform(1.0, 0.1, 1)
    with pytest.raises(AttributeError):
        s.sigmas = (2.0,)  # type: ignore[misc]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from([0.01, 1.0])),
        min_size=1,
        max_size=60,
    )
)
def test_from_steps_round_trips_and_compresses(steps):
    sig = [s for s, _ in steps]
    q = [r for _, r in steps]
    s = Schedule.from_steps(sig, q)
    # Reference run-length encoding, written independently with itertools.groupby.
    runs = [(k, len(list(g))) for k, g in itertools.groupby(steps)]
    assert list(zip(s.sigmas, s.sample_rates)) == [k for k, _ in runs]
    assert list(s.counts) == [n for _, n in runs]
    back_sig, back_q = s.per_step()
    assert back_sig.tolist() == sig and back_q.tolist() == q
    m = s.merged()
    assert m.total_steps == len(steps)
    assert len(set(zip(m.sigmas, m.sample_rates))) == len(m.sigmas) == len(set(steps))
    for key in set(steps):
        i = list(zip(m.sigmas, m.sample_rates)).index(key)
        assert m.counts[i] == steps.count(key)


# ----- validation messages --------------------------------------------------


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: Schedule.uniform(0.0, 0.1, 10), ["sigma", "> 0", "0"]),
        (lambda: Schedule.uniform(-1.0, 0.1, 10), ["sigma", "> 0", "-1"]),
        (lambda: Schedule.uniform(math.nan, 0.1, 10), ["sigma", "NaN"]),
        (lambda: Schedule.uniform(math.inf, 0.1, 10), ["sigma", "finite", "inf"]),
        (lambda: Schedule.uniform(1.0, 0.0, 10), ["sample_rate", "(0, 1]", "0"]),
        (lambda: Schedule.uniform(1.0, 1.5, 10), ["sample_rate", "(0, 1]", "1.5"]),
        (lambda: Schedule.uniform(1.0, -0.2, 10), ["sample_rate", "(0, 1]", "-0.2"]),
        (lambda: Schedule.uniform(1.0, math.nan, 10), ["sample_rate", "NaN"]),
        (lambda: Schedule.uniform(1.0, 0.1, 0), ["steps", ">= 1", "0"]),
        (lambda: Schedule.uniform(1.0, 0.1, -4), ["steps", ">= 1", "-4"]),
        (lambda: Schedule.uniform(1.0, 0.1, 2.5), ["steps", "integer", "2.5"]),
        (lambda: Schedule.from_steps([1.0, 0.0, 2.0], 0.1), ["sigma[1]", "> 0", "0"]),
        (lambda: Schedule.from_steps([1.0, math.nan], 0.1), ["sigma[1]", "nan"]),
        (lambda: Schedule.from_steps([1.0, 1.0], [0.1, 1.01]), ["sample_rate[1]", "(0, 1]", "1.01"]),
        (lambda: Schedule.from_runs([1.0, 2.0], 0.1, [3, 0]), ["steps[1]", ">= 1", "0"]),
        (lambda: Schedule.from_runs([1.0, 2.0], 0.1, [3]), ["steps", "one entry per run"]),
        (lambda: Schedule.from_steps([], 0.1), ["sigma", "non-empty"]),
        (lambda: Schedule((1.0,), (0.1, 0.2), (1,)), ["equal lengths"]),
        (lambda: Schedule.uniform(1.0, 0.1, 3).scaled(0.0), ["scale", "> 0"]),
    ],
)
def test_validation_names_value_and_range(make, words):
    with pytest.raises(InputError) as info:
        make()
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)
    assert "\n" not in msg


def test_from_runs_wrong_length_rates_is_input_error():
    with pytest.raises(InputError, match=r"sample_rate.*\(2\).*3"):
        Schedule.from_runs([1.0, 2.0], [0.1, 0.2, 0.3])


# ----- CSV ------------------------------------------------------------------


def write(tmp_path, text, name="schedule.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_one_row_per_step(tmp_path):
    rows = "".join(["1.0,0.01\n"] * 3 + ["2.0,0.01\n"] * 2 + ["1.0,0.02\n"])
    s = read_schedule_csv(write(tmp_path, "sigma,sample_rate\n" + rows))
    assert s.sigmas == (1.0, 2.0, 1.0)
    assert s.sample_rates == (0.01, 0.01, 0.02)
    assert s.counts == (3, 2, 1)


def test_csv_rows_with_steps_column(tmp_path):
    s = read_schedule_csv(write(tmp_path, "sigma,sample_rate,steps\n1.0,0.01,100\n 0.8 , 0.02 , 50\n"))
    assert s.sigmas == (1.0, 0.8)
    assert s.sample_rates == (0.01, 0.02)
    assert s.counts == (100, 50)
    assert s.total_steps == 150


def test_csv_header_case_and_column_order_do_not_matter(tmp_path):
    s = read_schedule_csv(write(tmp_path, "Steps,Sample_Rate,SIGMA\n7,0.5,1.25\n"))
    assert (s.sigmas, s.sample_rates, s.counts) == ((1.25,), (0.5,), (7,))


def test_csv_per_step_and_run_forms_agree(tmp_path):
    per_step = write(tmp_path, "sigma,sample_rate\n" + "1.5,0.1\n" * 4 + "0.7,0.1\n" * 2, "a.csv")
    runs = write(tmp_path, "sigma,sample_rate,steps\n1.5,0.1,4\n0.7,0.1,2\n", "b.csv")
    assert read_schedule_csv(per_step) == read_schedule_csv(runs)


@pytest.mark.parametrize(
    "text, words",
    [
        ("sigma,rate\n1.0,0.1\n", ["missing column", "sample_rate"]),
        ("sample_rate\n0.1\n", ["missing column", "sigma"]),
        ("sigma,sample_rate\n1.0,abc\n", ["non-numeric", "abc"]),
        ("sigma,sample_rate,steps\n1.0,0.1,ten\n", ["non-numeric", "ten"]),
        ("sigma,sample_rate,steps\n1.0,0.01,10\n-1,0.01,5\n", ["sigma[1]", "> 0", "-1"]),
        ("sigma,sample_rate\n1.0,0.1\n1.0,1.5\n", ["sample_rate[1]", "(0, 1]", "1.5"]),
        ("sigma,sample_rate,steps\n1.0,0.1,0\n", ["steps[0]", ">= 1"]),
        ("sigma,sample_rate,steps\n1.0,0.1,2.5\n", ["steps[0]", "integer", "2.5"]),
        ("sigma,sample_rate\n1.0,\n", ["sample_rate[0]", "nan"]),
        ("sigma,sample_rate\n", ["no rows"]),
        ("", ["not a readable CSV"]),
    ],
)
def test_csv_errors_name_file_and_problem(tmp_path, text, words):
    p = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        read_schedule_csv(p)
    msg = str(info.value)
    assert str(p) in msg
    for w in words:
        assert w in msg, (w, msg)
    assert "\n" not in msg


def test_csv_missing_file_names_the_file(tmp_path):
    p = tmp_path / "nope.csv"
    with pytest.raises(InputError, match="nope.csv"):
        read_schedule_csv(p)


def test_csv_binary_file_is_input_error(tmp_path):
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00\x81\x00sigma\x00")
    with pytest.raises(InputError, match="bin.csv"):
        read_schedule_csv(p)
