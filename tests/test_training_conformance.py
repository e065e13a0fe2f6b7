"""The training audit on mechanisms written in other people's styles (tests/conformance/).

Every mechanism of the corpus must go through a (small) training audit to a
result, on whichever path it allows: ``vmap`` over the models, or one call per
model when vmap cannot split its randomness per model. A mechanism whose noise
the audit's seeds cannot reach (a counter-based generator keyed by a constant
in its code) gives every model the same noise on both paths, and is named so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dpaudit.training.trainer import SAME_NOISE_NOTE
from dpaudit.training.training_audit import audit_training

from training_support import DPSGD, config_for, digits, one_thread  # noqa: F401 (fixtures)

CORPUS = Path(__file__).resolve().parent / "conformance"
FILES = {p.stem: str(p) for p in sorted(CORPUS.glob("*.py"))}
#: Randomness that vmap cannot split per model: numpy's or OS entropy, a generator in the state,
#: or one seeded in the code.
LOOP_ONLY = {"numpy_seeded", "numpy_unseeded", "numpy_unseeded_low_noise", "os_entropy_quantile_clip",
             "torch_generator_attr", "state_counter_rng"}


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_corpus_mechanism_gets_a_training_audit_result(name, digits):
    result = audit_training(FILES[name], config_for(digits), digits, runs=4, models_at_once=4, seed=0)
    assert result.models == 8
    assert all(math.isfinite(e.epsilon_lb) for e in result.estimates.values())
    assert result.accuracy["min"] > 0.3  # ten classes: chance is 0.1
    refused = any("vmap refused it" in n for n in result.notes)
    if name in LOOP_ONLY:
        assert refused, result.notes
    assert (SAME_NOISE_NOTE in result.notes) == (name == "state_counter_rng"), result.notes


@pytest.mark.parametrize("vectorize", ["auto", "loop"])
@pytest.mark.parametrize("name, shared", [("state_counter_rng", True), ("dpsgd", False)])
def test_noise_fixed_in_the_code_is_shared_by_every_model_on_both_paths(name, shared, vectorize, digits):
    spec = FILES.get(name, DPSGD)
    result = audit_training(spec, config_for(digits), digits, runs=4, models_at_once=8, seed=0,
                            vectorize=vectorize)
    # Without the canary (out) the models see the same batches: only their noise can tell them apart.
    assert (np.ptp(result.out_scores) == 0) == shared, result.out_scores
    assert (SAME_NOISE_NOTE in result.notes) == shared
