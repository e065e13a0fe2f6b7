"""One run of the gradient-space membership game, reduced to a few numbers per step.

A run takes a fresh instance of the mechanism and walks it through every step
of the scenario's run. At each step the other examples are Poisson-sampled
(a Binomial count, since they are interchangeable) and the canary is included
with probability q if the run is an "in" run and never otherwise, exactly as
the real training loop would sample it. The mechanism's released output is
reduced to three numbers, so runs of thousands of steps stay small:

* ``projection``: the output's inner product with the canary's unit direction;
* ``scale``: an estimate of the output's per-coordinate noise standard
  deviation from the coordinates that carry no data (the output with the
  canary direction and the others' coordinate projected out), which reveals
  anything that leaks through the magnitude of the noise (a realised batch
  size in the divisor, a clip norm that followed the data);
* ``sigma``: the noise multiplier the mechanism declares for the step.

Randomness: the sampling uses a private numpy generator; the mechanism's own
draws come from torch's, numpy's and Python's global generators (and any
generator it keeps in its attributes), all seeded from the run's seed, so a
run is a deterministic function of (scenario, world, seed).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dpaudit.audit.scenarios import PARAM_SHAPES, SPLIT_ABOVE, SPLIT_BELOW, Scenario
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory, declared_sigma, epoch_of
from dpaudit.mechanism.robustness import MechanismRaised, first_accepted_format, smallest_accepted_batch
from dpaudit.run_config import RunConfig
from dpaudit.probe.randomness import Seeder, derive_seed, find_generators

#: dtype of the per-sample gradients handed to the mechanism (what real training produces).
GRAD_DTYPE = torch.float32
#: Flat index of the coordinate the "split" others use (the Dirac canary uses index 0).
OTHERS_COORDINATE = 1


def name_key(name: str) -> int:
    """A stable 63-bit integer from a string (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") >> 1


def canary_direction(scenario: Scenario, seed: int) -> np.ndarray:
    """The canary's unit direction, flattened over all parameter tensors (float64).

    Fixed for the whole audit (the canary is data, the same in every run):
    coordinate 0 for the Dirac canaries; for ``"random"`` a Gaussian direction
    drawn from (seed, scenario name) with the others' coordinate zeroed, so the
    two signals stay orthogonal.
    """
    d = scenario.n_params
    u = np.zeros(d)
    if scenario.canary == "random":
        rng = np.random.default_rng(derive_seed(seed, name_key(scenario.name), 3))
        u = rng.standard_normal(d)
        u[OTHERS_COORDINATE] = 0.0
    else:
        u[0] = 1.0
    return u / np.linalg.norm(u)


@dataclass(frozen=True)
class Features:
    """Per-step reductions of one run's released outputs (arrays of length T)."""

    projection: np.ndarray
    scale: np.ndarray
    sigma: np.ndarray

    @property
    def z(self) -> np.ndarray:
        """Projections in units of the estimated noise standard deviation."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.projection / self.scale


class _Batches:
    """Builds the per-sample gradient tensors of one step, one tensor per parameter."""

    def __init__(self, scenario: Scenario, direction: np.ndarray) -> None:
        self.shapes = scenario.param_shapes
        sizes = [int(np.prod(s)) for s in self.shapes]
        bounds = np.cumsum([0] + sizes)
        canary = direction * scenario.canary_norm
        self.canary_parts = [
            torch.as_tensor(canary[a:b], dtype=GRAD_DTYPE).reshape(shape)
            for a, b, shape in zip(bounds[:-1], bounds[1:], self.shapes)
        ]
        c = scenario.run.max_grad_norm
        self.above = SPLIT_ABOVE * c
        self.below = SPLIT_BELOW * c

    def make(self, n_zero: int, n_above: int, n_below: int, canary: bool) -> list[torch.Tensor]:
        b = n_zero + n_above + n_below + int(canary)
        out = [torch.zeros((b, *shape), dtype=GRAD_DTYPE) for shape in self.shapes]
        if n_above or n_below:
            first = out[0].view(b, -1)
            first[n_zero : n_zero + n_above, OTHERS_COORDINATE] = self.above
            first[n_zero + n_above : n_zero + n_above + n_below, OTHERS_COORDINATE] = self.below
        if canary:
            for t, part in zip(out, self.canary_parts):
                t[b - 1] = part
        return out


def _flatten_output(out: Any, shapes: tuple[tuple[int, ...], ...], where) -> np.ndarray:
    """The released tensors as one float64 vector; ``where()`` names the call in errors."""
    if not isinstance(out, (list, tuple)) or len(out) != len(shapes):
        raise InputError(
            f"{where()}: clip_and_noise must return a list of {len(shapes)} tensors "
            f"(one per parameter), got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, (list, tuple)) else "")
        )
    parts = []
    for i, (o, shape) in enumerate(zip(out, shapes)):
        if not isinstance(o, torch.Tensor):
            o = torch.as_tensor(o)
        if o.shape != shape:
            raise InputError(
                f"{where()}: clip_and_noise returned shape {tuple(o.shape)} for parameter {i}, "
                f"expected {tuple(shape)}"
            )
        parts.append(o.detach().reshape(-1))
    flat = torch.cat(parts).to(dtype=torch.float64, device="cpu").numpy()
    if not np.isfinite(flat).all():
        bad = int(np.flatnonzero(~np.isfinite(flat))[0])
        kind = "NaN" if np.isnan(flat[bad]) else "inf"
        raise InputError(f"{where()}: clip_and_noise returned {kind} (flat index {bad} of the output)")
    return flat


def accepted_input(factory: MechanismFactory, config: RunConfig) -> tuple[tuple, int, list[str]]:
    """The gradient layout and smallest batch the mechanism accepts, and notes on what it refused.

    Tries the audit's layout (:data:`PARAM_SHAPES`, float32) on a batch of
    examples of norm C, then the other layouts of
    :func:`~dpaudit.mechanism.robustness.input_formats`; then the smallest
    batch (0, 1, …) it accepts. A refused small batch the user's run
    practically never produces is a note; one it does produce is an error.

    Raises:
        InputError: no layout works, or the refused batch is not negligible.
    """

    def call(mech, shapes, size: int, step: int) -> None:
        norm = config.max_grad_norm / math.sqrt(sum(math.prod(x) for x in shapes))
        grads = [torch.full((size, *x), norm, dtype=GRAD_DTYPE) for x in shapes]

        def where() -> str:
            return f"{factory.path}: step {step} (batch of {size})"

        try:
            out = mech.clip_and_noise(grads, step, epoch_of(step, config))
        except Exception as exc:  # the mechanism's own failure: name it
            raise MechanismRaised(f"{where()}: clip_and_noise raised {type(exc).__name__}: {exc}") from exc
        _flatten_output(out, tuple(shapes), where)

    def attempt(shapes, size: int) -> None:
        call(factory.new(), shapes, size, 0)
        if config.steps > 1:  # also after a first step, as a run would meet it
            mech = factory.new()
            call(mech, shapes, 4, 0)
            call(mech, shapes, size, 1)

    shapes, _, _, note = first_accepted_format(PARAM_SHAPES, (GRAD_DTYPE,), lambda x, _: attempt(x, 4))
    notes = [note] if note else []
    size, refused = smallest_accepted_batch(lambda k: attempt(shapes, k), config, str(factory.path))
    if refused is not None:
        notes.append(refused.note(f"every batch of every audit world gets at least {size} zero-gradient "
                                  "example(s) when the others' sample is smaller, in both worlds alike"))
    return tuple(shapes), size, notes


def play(
    factory: MechanismFactory, scenario: Scenario, world_in: bool, seed: int, direction: np.ndarray
) -> Features:
    """One run of the game: a fresh mechanism through every step of ``scenario.run``.

    Args:
        factory: Builds the mechanism for ``scenario.run``.
        scenario: The datasets and the run.
        world_in: Whether the canary is in the dataset (then sampled at rate q each step).
        seed: The run's seed (sampling and the mechanism's noise).
        direction: :func:`canary_direction` of the scenario.
    """
    run = scenario.run
    q = run.sample_rate
    steps = run.steps
    rng = np.random.default_rng(derive_seed(seed, 11))
    mech = factory.new()
    Seeder(find_generators(mech)).seed(derive_seed(seed, 12), mech)
    batches = _Batches(scenario, direction)
    n_above = scenario.n_above
    n_below = scenario.n_others - n_above if scenario.others == "split" else 0
    n_zero = scenario.n_others if scenario.others == "zero" else 0
    full = q >= 1.0

    projection = np.empty(steps)
    scale = np.empty(steps)
    sigma = np.empty(steps)
    dof = scenario.n_params - 2  # canary direction and the others' coordinate projected out
    for t in range(steps):
        epoch = epoch_of(t, run)
        # Draw everything every step, so that the others' batches do not depend on the world.
        k_zero = n_zero if full else int(rng.binomial(n_zero, q))
        k_above = n_above if full else int(rng.binomial(n_above, q))
        k_below = n_below if full else int(rng.binomial(n_below, q))
        # Fill up a sample smaller than the mechanism accepts, in both worlds alike.
        k_zero += max(scenario.min_others - (k_zero + k_above + k_below), 0)
        coin = full or bool(rng.random() < q)
        include = world_in and coin
        grads = batches.make(k_zero, k_above, k_below, include)

        def where(t=t, b=grads[0].shape[0]) -> str:
            return f"{factory.path}: scenario {scenario.name}, step {t} (batch of {b})"

        try:
            out = mech.clip_and_noise(grads, t, epoch)
        except Exception as exc:  # the mechanism's own failure: name it
            raise InputError(f"{where()}: clip_and_noise raised {type(exc).__name__}: {exc}") from exc
        y = _flatten_output(out, scenario.param_shapes, where)
        p = float(y @ direction)
        other = float(y[OTHERS_COORDINATE])
        resid = float(y @ y) - p * p - other * other
        projection[t] = p
        scale[t] = math.sqrt(max(resid, 0.0) / dof) if math.isfinite(resid) else math.nan
        sigma[t] = declared_sigma(mech, t, epoch)
    return Features(projection, scale, sigma)
