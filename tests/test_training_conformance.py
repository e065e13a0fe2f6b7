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

from training_support import DPSGD, config_for, digits, mechanism_file, one_thread  # noqa: F401 (fixtures)

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


#: "Reproducible" noise: torch's global generator re-seeded from the step inside every call.
RESEEDS_EVERY_CALL = """
import torch

class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C, self.s, self.B = max_grad_norm, noise_multiplier, batch_size

    def clip_and_noise(self, per_sample_grads, step, epoch):
        torch.manual_seed(1234 + step)
        b = per_sample_grads[0].shape[0]
        flat = torch.cat([g.reshape(b, -1) for g in per_sample_grads], 1)
        w = (self.C / (flat.norm(dim=1) + 1e-6)).clamp(max=1.0)
        sums = [torch.einsum("b,b...->...", w, g) for g in per_sample_grads]
        return [(s + self.s * self.C * torch.randn_like(s)) / self.B for s in sums]

    def get_effective_sigma(self, step, epoch):
        return self.s
"""


@pytest.mark.parametrize("vectorize", ["auto", "loop"])
@pytest.mark.parametrize("name, shared", [("state_counter_rng", True), ("reseeds_every_call", True),
                                          ("dpsgd", False)])
def test_noise_fixed_in_the_code_is_shared_by_every_model_on_both_paths(name, shared, vectorize, digits,
                                                                        tmp_path):
    spec = FILES.get(name, DPSGD)
    if name == "reseeds_every_call":
        spec = mechanism_file(tmp_path, RESEEDS_EVERY_CALL)
    result = audit_training(spec, config_for(digits), digits, runs=4, models_at_once=8, seed=0,
                            vectorize=vectorize)
    # Without the canary (out) the models see the same batches: only their noise can tell them apart.
    assert (np.ptp(result.out_scores) == 0) == shared, result.out_scores
    assert (SAME_NOISE_NOTE in result.notes) == shared
