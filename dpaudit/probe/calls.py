"""Calling a user's mechanism safely: on copies, seeded, with its output checked.

Every failure (an exception from ``clip_and_noise``, an output that is not one
finite tensor of the right shape per parameter, a mechanism that cannot be
deep-copied) becomes one :class:`~dpaudit.errors.InputError` line naming the
mechanism's file, the step, the input and the cause.
"""

from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dpaudit.errors import InputError
from dpaudit.mechanism.robustness import MechanismRaised
from dpaudit.probe.randomness import Seeder


def source_of(mech: Any) -> str:
    """The file a mechanism's class was defined in (for messages)."""
    cls = type(mech)
    try:
        return str(Path(inspect.getfile(cls)))
    except (TypeError, OSError):
        return getattr(cls, "__module__", None) or cls.__name__


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _plural(n: int) -> str:
    return f"{n} example" if n == 1 else f"{n} examples"


class Caller:
    """Runs ``clip_and_noise`` and returns its output as one flat float64 vector.

    ``clone_inputs`` is switched on when the mechanism is found to modify the
    per-sample gradients it is given in place; each call then gets its own copy.
    """

    def __init__(self, source: str, shapes: Sequence[tuple[int, ...]], seeder: Seeder) -> None:
        self.source = source
        self.shapes = tuple(tuple(s) for s in shapes)
        sizes = [math.prod(s) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.seeder = seeder
        self.clone_inputs = False
        self.calls = 0

    # ----- copies -------------------------------------------------------
    def copy(self, mech: Any, step: int) -> Any:
        try:
            return copy.deepcopy(mech)
        except Exception as exc:
            raise InputError(
                f"{self.source}: step {step}: copy.deepcopy of the mechanism raised {_describe(exc)}; "
                "the probe measures every step on copies of the mechanism's state"
            ) from exc

    # ----- calls --------------------------------------------------------
    def call(
        self, mech: Any, tensors: Sequence[torch.Tensor], step: int, epoch: int, seed: int, what: str
    ) -> np.ndarray:
        """``mech.clip_and_noise`` on ``tensors`` after seeding with ``seed``; flat float64 output."""
        b = int(tensors[0].shape[0])
        where = f"step {step} (epoch {epoch}), {what}, batch of {_plural(b)}"
        grads = [t.clone() for t in tensors] if self.clone_inputs else list(tensors)
        self.seeder.seed(seed, mech)
        self.calls += 1
        try:
            out = mech.clip_and_noise(grads, step, epoch)
        except Exception as exc:
            raise MechanismRaised(f"{self.source}: {where}: clip_and_noise raised {_describe(exc)}") from exc
        return self.flatten(out, where)

    def on_copy(
        self, base: Any, tensors: Sequence[torch.Tensor], step: int, epoch: int, seed: int, what: str
    ) -> np.ndarray:
        return self.call(self.copy(base, step), tensors, step, epoch, seed, what)

    def flatten(self, out: Any, where: str) -> np.ndarray:
        if not isinstance(out, (list, tuple)):
            raise InputError(
                f"{self.source}: {where}: clip_and_noise returned {type(out).__name__}, "
                f"expected a list of {len(self.shapes)} tensors (one per parameter)"
            )
        if len(out) != len(self.shapes):
            raise InputError(
                f"{self.source}: {where}: clip_and_noise returned {len(out)} tensors, "
                f"expected {len(self.shapes)} (one per parameter, shapes {list(self.shapes)})"
            )
        parts = []
        for i, (o, shape) in enumerate(zip(out, self.shapes)):
            if not isinstance(o, torch.Tensor):
                raise InputError(
                    f"{self.source}: {where}: output {i} is a {type(o).__name__}, expected a torch.Tensor"
                )
            if tuple(o.shape) != shape:
                raise InputError(
                    f"{self.source}: {where}: output {i} has shape {tuple(o.shape)}, expected {shape}"
                )
            parts.append(o.detach().reshape(-1))
        flat = torch.cat(parts).to("cpu", torch.float64).numpy()
        if not np.isfinite(flat).all():
            bad = np.flatnonzero(~np.isfinite(flat))[0]
            i = int(np.searchsorted(self.offsets, bad, side="right") - 1)
            kind = "NaN" if np.isnan(flat[bad]) else "inf"
            raise InputError(
                f"{self.source}: {where}: clip_and_noise returned {kind} in output {i} "
                f"(shape {self.shapes[i]})"
            )
        return flat

    # ----- per-tensor algebra on flat vectors ---------------------------
    def per_tensor_dot(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """⟨a_j, b_j⟩ for each parameter tensor j (the last axis is the flat parameter axis)."""
        return np.add.reduceat(a * b, self.offsets[:-1], axis=-1)

    def per_tensor_sq(self, a: np.ndarray) -> np.ndarray:
        return self.per_tensor_dot(a, a)


def checksum(tensors: Sequence[torch.Tensor]) -> tuple[float, ...]:
    """Cheap fingerprint of a batch, to notice a mechanism that edits its input in place."""
    out = []
    for t in tensors:
        sample = t.reshape(-1)[::61]
        out.append(float(sample.sum()))
        out.append(float(sample @ sample))
    return tuple(out)
