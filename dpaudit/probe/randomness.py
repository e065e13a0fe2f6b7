"""Control of a mechanism's random draws, so that two calls can share them.

The probe *couples* calls: it seeds the random state before each call, so two
copies of the mechanism given the same seed draw the same noise and the noise
cancels in their difference. :func:`seed_all` seeds torch's, numpy's and
Python's global generators, and also any private generator the mechanism
keeps in its attributes (a ``torch.Generator``, ``numpy.random.Generator``,
``RandomState`` or ``random.Random``; found by :func:`find_generators`), each
with its own derived seed so two generators never produce the same stream.

Randomness the probe cannot reach (a generator at module level, fresh entropy
from the OS, a hand-written generator) defeats the coupling; the coupling
check in :mod:`dpaudit.probe.measure` notices and the probe falls back to
repeated independent draws.
"""

from __future__ import annotations

import random
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from dpaudit.seeding import derive_seed

GENERATOR_TYPES = (torch.Generator, np.random.Generator, np.random.RandomState, random.Random)

_MAX_NODES = 4000
_MAX_DEPTH = 4
_LEAF_TYPES = (torch.Tensor, np.ndarray, np.generic, str, bytes, int, float, complex, bool, type(None))


Path = tuple[tuple[str, Any], ...]


def find_generators(obj: Any) -> tuple[Path, ...]:
    """Attribute paths (``(("attr", "gen"),)`` …) to the random generators inside ``obj``.

    Walks attributes, dict values and list/tuple items breadth first, at most
    four levels deep and over at most a few thousand objects; tensors, arrays
    and scalars are not entered.
    """
    found: list[Path] = []
    seen: set[int] = set()
    frontier: list[tuple[Any, Path]] = [(obj, ())]
    nodes = 0
    while frontier and nodes < _MAX_NODES:
        nxt: list[tuple[Any, Path]] = []
        for value, path in frontier:
            nodes += 1
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, GENERATOR_TYPES):
                if path:
                    found.append(path)
                continue
            if isinstance(value, _LEAF_TYPES) or len(path) >= _MAX_DEPTH:
                continue
            if isinstance(value, dict):
                children = [(("item", k), v) for k, v in value.items() if isinstance(k, (str, int))]
            elif isinstance(value, (list, tuple)):
                children = [(("item", i), v) for i, v in enumerate(value)]
            elif isinstance(value, (types.ModuleType, type, types.FunctionType, types.MethodType)):
                continue
            elif hasattr(value, "__dict__"):
                try:
                    children = [(("attr", k), v) for k, v in vars(value).items()]
                except TypeError:
                    continue
            else:
                continue
            nxt.extend((v, path + (step,)) for step, v in children)
        frontier = nxt
    return tuple(found)


def resolve(obj: Any, path: Path) -> Any:
    for kind, key in path:
        obj = getattr(obj, key) if kind == "attr" else obj[key]
    return obj


def describe_path(path: Path) -> str:
    text = "self"
    for kind, key in path:
        text += f".{key}" if kind == "attr" else f"[{key!r}]"
    return text


def _reseed(gen: Any, seed: int) -> None:
    if isinstance(gen, torch.Generator):
        gen.manual_seed(seed)
    elif isinstance(gen, np.random.Generator):
        gen.bit_generator.state = type(gen.bit_generator)(seed).state
    elif isinstance(gen, np.random.RandomState):
        gen.seed(seed & 0xFFFFFFFF)
    elif isinstance(gen, random.Random):
        gen.seed(seed)


@dataclass(frozen=True)
class Seeder:
    """Seeds the global generators and the mechanism's own ones before a call."""

    private_paths: tuple[Path, ...] = ()

    def seed(self, seed: int, mech: Any = None) -> None:
        torch.default_generator.manual_seed(seed & 0x7FFFFFFFFFFFFFFF)
        np.random.seed(derive_seed(seed, 1) & 0xFFFFFFFF)
        random.seed(derive_seed(seed, 2))
        if mech is None:
            return
        for i, path in enumerate(self.private_paths):
            try:
                gen = resolve(mech, path)
            except (AttributeError, KeyError, IndexError, TypeError):
                continue
            if isinstance(gen, GENERATOR_TYPES):
                _reseed(gen, derive_seed(seed, 100 + i))

    def describe(self) -> str:
        return ", ".join(describe_path(p) for p in self.private_paths)


class GlobalRandomState:
    """Context manager that saves and restores torch's, numpy's and Python's global RNG state."""

    def __enter__(self) -> "GlobalRandomState":
        self._torch = torch.get_rng_state()
        self._numpy = np.random.get_state()
        self._python = random.getstate()
        return self

    def __exit__(self, *exc) -> None:
        torch.set_rng_state(self._torch)
        np.random.set_state(self._numpy)
        random.setstate(self._python)
