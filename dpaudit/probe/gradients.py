"""Synthetic per-example gradients and worst-case canaries for the black-box probe.

The probe never trains a model: it feeds the mechanism gradients with the
shapes of a small MLP (64 → 32 → 10, the 8×8 digits model, 2,410 parameters),
in Poisson-sized batches, one batch per step of the run.

The gradients are correlated like real ones: every example's direction mixes a
shared "mean gradient" direction (which turns slowly over the run) with its
own direction, and the norms are log-normal with a median that falls from
2·C to 0.4·C over the run (C = ``max_grad_norm``), so early on most examples
are clipped and late in the run most are not, and an adaptive clip norm has
something to follow. One fixed step (:data:`EMPTY_STEP`) gets an empty batch, unless the
mechanism refuses empty batches (see :mod:`dpaudit.mechanism.robustness`).

Everything is drawn from private generators seeded by ``(seed, step)``, so a
step's batch does not depend on what was drawn before it, and the caller's
global random state is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dpaudit.run_config import RunConfig

#: Parameter shapes of the default synthetic model: an MLP 64 → 32 → 10 for 8×8 digits.
PARAM_SHAPES: tuple[tuple[int, ...], ...] = ((32, 64), (32,), (10, 32), (10,))
#: Number of parameters of the default synthetic model (2,410).
N_PARAMS: int = sum(math.prod(s) for s in PARAM_SHAPES)
#: The step whose batch is empty (B = 0), or the last step when the run is shorter.
EMPTY_STEP: int = 1
#: Dtype of the synthetic gradients. float64 keeps the coupled differences exact to ~1e-15.
GRAD_DTYPE = torch.float64

#: Norm of the "huge" canaries, in units of max_grad_norm.
HUGE_NORM = 1e4
#: Norm of the "tiny" canary, in units of max_grad_norm.
TINY_NORM = 1e-4

# Shape of the synthetic data.
_POOL_SIZE = 1024          # distinct per-example directions the batches are drawn from
_MEAN_ALIGNMENT = 0.4      # cosine between an example's direction and the shared mean direction
_LOG_NORM_SPREAD = 0.6     # std of log(norm)
_MEDIAN_START = 2.0        # median norm / C at the first step
_MEDIAN_END = 0.4          # median norm / C at the last step


@dataclass(frozen=True)
class Canary:
    """One neighbouring change of a batch: add ``added`` (a flat gradient) or remove one example."""

    name: str
    added: torch.Tensor | None = None
    removed_index: int | None = None

    def direction(self, batch: "Batch") -> torch.Tensor:
        """The flat gradient this change adds or removes (its sign does not matter)."""
        if self.added is not None:
            return self.added
        return batch.example(self.removed_index)


@dataclass(frozen=True, eq=False)
class Batch:
    """The per-example gradients of one step, one tensor per parameter.

    ``tensors[j]`` is a view of the first B rows of ``room[j]``, which has one
    spare row where :meth:`SyntheticGradients.neighbour` writes an added canary
    without copying the batch.
    """

    step: int
    norms: torch.Tensor                    # [B] L2 norm of each example over all tensors
    tensors: tuple[torch.Tensor, ...]      # [B, *shape] each, contiguous
    room: tuple[torch.Tensor, ...]         # [B + 1, *shape] each

    @property
    def size(self) -> int:
        return int(self.norms.shape[0])

    def example(self, i: int) -> torch.Tensor:
        """Example ``i``'s gradient, flattened over all tensors."""
        return torch.cat([t[i].reshape(-1) for t in self.tensors])


class SyntheticGradients:
    """Deterministic source of per-step batches and canaries for one probe run."""

    def __init__(
        self,
        config: RunConfig,
        shapes=PARAM_SHAPES,
        *,
        seed: int = 0,
        empty_step: int | None = None,
        dtype: torch.dtype = GRAD_DTYPE,
        min_batch: int = 0,
    ) -> None:
        self.config = config
        self.shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        self.sizes = tuple(math.prod(s) for s in self.shapes)
        self.n = int(sum(self.sizes))
        self.seed = int(seed)
        self.steps = config.steps
        self.dtype = dtype
        # The smallest batch the mechanism accepts: no invented batch (the empty step,
        # removing the only example) goes below it.
        self.min_batch = int(min_batch)
        if empty_step is None:
            empty_step = min(EMPTY_STEP, self.steps - 1) if self.min_batch == 0 else -1
        self.empty_step = int(empty_step)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 17)
        pool = torch.randn(_POOL_SIZE, self.n, generator=gen, dtype=GRAD_DTYPE).to(dtype)
        pool /= torch.linalg.vector_norm(pool, dim=1, keepdim=True)
        basis = torch.randn(2, self.n, generator=gen, dtype=GRAD_DTYPE).to(dtype)
        a = basis[0] / basis[0].norm()
        b = basis[1] - (basis[1] @ a) * a
        self._mean_a, self._mean_b = a, b / b.norm()
        # Per-tensor blocks of the pool, and each pool direction's cosine with the two mean axes.
        self._pool_blocks = tuple(t.contiguous() for t in torch.split(pool, self.sizes, dim=1))
        self._pool_cos = torch.stack([pool @ self._mean_a, pool @ self._mean_b], dim=1)

    # ----- batches ------------------------------------------------------
    def _rng(self, step: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(step), purpose])

    def progress(self, step: int) -> float:
        return min(step, self.steps - 1) / max(self.steps - 1, 1)

    def mean_direction(self, step: int) -> torch.Tensor:
        """Unit direction shared by the examples at ``step`` (turns by 90° over the run)."""
        angle = 0.5 * math.pi * self.progress(step)
        return math.cos(angle) * self._mean_a + math.sin(angle) * self._mean_b

    def median_norm(self, step: int) -> float:
        c = self.config.max_grad_norm
        return c * _MEDIAN_START * (_MEDIAN_END / _MEDIAN_START) ** self.progress(step)

    def batch_size(self, step: int) -> int:
        """Poisson sampling: B ~ Binomial(N, q); 0 at the empty step."""
        if step == self.empty_step:
            return 0
        return int(self._rng(step, 0).binomial(self.config.dataset_size, self.config.sample_rate))

    def batch(self, step: int) -> Batch:
        """Example i is ``r_i · unit(a·μ_t + sqrt(1 − a²)·ξ_i)``, ξ_i from the pool, log r_i normal."""
        b = self.batch_size(step)
        rng = self._rng(step, 1)
        idx = torch.from_numpy(rng.integers(_POOL_SIZE, size=b))
        norms = torch.from_numpy(
            np.exp(math.log(self.median_norm(step)) + _LOG_NORM_SPREAD * rng.standard_normal(b))
        ).to(self.dtype)
        alpha = _MEAN_ALIGNMENT
        beta = math.sqrt(1.0 - alpha ** 2)
        angle = 0.5 * math.pi * self.progress(step)
        cos_mu = self._pool_cos.index_select(0, idx) @ torch.tensor(
            [math.cos(angle), math.sin(angle)], dtype=self.dtype)
        # ‖a·μ + b·ξ‖² for unit μ, ξ, without touching the full vectors.
        length = torch.sqrt(alpha ** 2 + beta ** 2 + 2 * alpha * beta * cos_mu)
        scale = norms / length
        mu = torch.split(self.mean_direction(step), self.sizes)
        room = []
        for block, mu_j, shape in zip(self._pool_blocks, mu, self.shapes):
            r = torch.empty((b + 1, block.shape[1]), dtype=self.dtype)
            x = r[:b]
            torch.index_select(block, 0, idx, out=x)
            x.mul_((beta * scale)[:, None])
            x.addr_(alpha * scale, mu_j)
            room.append(r.view((b + 1,) + shape))
        return Batch(step, norms, tuple(r[:b] for r in room), tuple(room))

    # ----- canaries -----------------------------------------------------
    def _unit(self, v: torch.Tensor) -> torch.Tensor:
        return v / torch.linalg.vector_norm(v)

    def canaries(self, batch: Batch) -> tuple[Canary, ...]:
        """The worst-case neighbours of ``batch`` (see :data:`CANARY_NAMES`).

        The random directions are drawn per step, so over the run the canaries
        probe many directions.
        """
        c = self.config.max_grad_norm
        gen = torch.Generator().manual_seed(int(self._rng(batch.step, 2).integers(2**62)))
        random_dir = self._unit(torch.randn(self.n, generator=gen, dtype=GRAD_DTYPE).to(self.dtype))
        per_tensor = torch.randn(self.n, generator=gen, dtype=GRAD_DTYPE).to(self.dtype)
        start = 0
        for size in self.sizes:
            block = per_tensor[start:start + size]
            block /= torch.linalg.vector_norm(block)
            start += size
        aligned = self.mean_direction(batch.step)  # what the examples share
        huge = HUGE_NORM * c
        out = [
            Canary(CANARY_NAMES[0], added=huge * random_dir),
            Canary(CANARY_NAMES[1], added=huge * per_tensor),
            Canary(CANARY_NAMES[2], added=huge * aligned),
            Canary(CANARY_NAMES[3], added=-huge * aligned),
            Canary(CANARY_NAMES[4], added=TINY_NORM * c * random_dir),
        ]
        if batch.size > self.min_batch:
            largest = int(torch.argmax(batch.norms))
            out.append(Canary(CANARY_NAMES[5], removed_index=largest))
        return tuple(out)

    def neighbour(self, batch: Batch, canary: Canary, *, fresh: bool = False) -> tuple[torch.Tensor, ...]:
        """``batch`` with ``canary`` applied, as per-parameter tensors.

        An added canary is written into the batch's spare row and the returned
        tensors share memory with the batch: they are valid until the next
        call for another canary. ``fresh=True`` returns tensors of their own.
        """
        if canary.added is not None:
            start = 0
            for r, size in zip(batch.room, self.sizes):
                r[batch.size].view(-1).copy_(canary.added[start:start + size])
                start += size
            if fresh:
                return tuple(r.clone() for r in batch.room)
            return batch.room
        i = canary.removed_index
        return tuple(torch.cat([g[:i], g[i + 1:]]) for g in batch.tensors)

    def first(self, batch: Batch, size: int) -> tuple[torch.Tensor, ...]:
        """The first ``size`` examples of ``batch`` (a batch of another size, same kind of data)."""
        return tuple(g[:size] for g in batch.tensors)

    def half(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The first half of ``batch``: a batch of very different size, same kind of data."""
        return self.first(batch, batch.size // 2)

    def small(self, batch: Batch, size: int) -> Batch:
        """A batch of the first ``size`` examples of ``batch`` (with a spare row for a canary)."""
        room = tuple(r[: size + 1].clone() for r in batch.room)
        for r, g in zip(room, batch.tensors):
            r[:size].copy_(g[:size])
        return Batch(batch.step, batch.norms[:size].clone(), tuple(r[:size] for r in room), room)

    def empty(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros((0,) + s, dtype=self.dtype) for s in self.shapes)


#: The neighbouring changes tried at every step (the last needs B ≥ 1).
CANARY_NAMES: tuple[str, ...] = (
    "add: huge norm, random direction",
    "add: huge norm in every parameter tensor",
    "add: huge norm, aligned with the batch",
    "add: huge norm, against the batch",
    "add: tiny norm",
    "remove: the largest-norm example",
)
