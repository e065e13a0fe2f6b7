"""Calling seed-interface mechanisms for K models at once: a ``torch.func.vmap`` or one call per model.

Each model of a chunk has its own mechanism instance (mechanisms keep state).
Every step the trainer hands over the per-example gradients of all K models,
padded to the largest realised batch, with the models ordered by realised batch
size. Two ways to call the mechanisms:

* :class:`VmapCalls`: the K instances' attributes are held as one *stacked*
  state (tensors stacked over models, everything else shared), and each group
  of models with the same realised batch size goes through one call of
  ``torch.func.vmap(clip_and_noise, randomness="different")``: one Python call
  per group instead of one per model. Only a mechanism that is pure torch can
  run this way; it is refused (and the step redone per model) when the call
  raises under ``vmap`` (``.item()``, ``float(tensor)``, data-dependent Python
  branches), when it draws from numpy's or Python's generator, keeps a private
  generator or any attribute that is not a tensor or a plain constant, changes
  such an attribute differently in different groups, or when two models given
  the same state and gradients get the same noise from it (randomness that
  ``vmap`` does not control). The noise of model k then depends on which models
  share its group: the results are a deterministic function of the seeds *and*
  the chunking.
* :class:`LoopCalls`: one call per model; before model k's call at step t,
  the global generators are seeded from (model seed, t), so model k's noise does
  not depend on the other models of the chunk.

Empty batches: the seed's own idiom (``g.reshape(batch_size, -1)``) raises on a
batch of 0 examples, which Poisson sampling does produce when q·N is small. If
a mechanism raises on an empty batch, that step is given one example whose
gradient is zero instead (a correct mechanism's output is then exactly its
output for an empty batch: noise only, over the expected batch size), the same
in the in- and out-worlds (it depends only on the realised batch being empty),
and a note says how often this happened.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch.func import vmap
from torch.utils import _pytree as pytree

from dpaudit.errors import InputError
from dpaudit.probe.randomness import GENERATOR_TYPES, Seeder, find_generators
from dpaudit.seeding import derive_seed

#: Attribute values a vectorised mechanism may keep besides tensors (shared by all models).
PLAIN_TYPES = (int, float, bool, str, bytes, complex, type(None), torch.dtype, torch.device, torch.Size)
# Purposes of derived seeds (second argument of derive_seed).
_SEED_LOOP, _SEED_VMAP, _SEED_PRIVATE = 2, 5, 4


def source_of(mech: Any) -> str:
    import inspect

    try:
        return inspect.getfile(type(mech))
    except (TypeError, OSError):
        return type(mech).__name__


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def check_output(mech: Any, out: Any, shapes: Sequence[torch.Size], step: int, device: torch.device,
                 lead: tuple[int, ...] = (), method: str = "clip_and_noise") -> list[torch.Tensor]:
    """The mechanism's output as a list of tensors of the parameters' shapes (with ``lead`` dims), or InputError."""
    if not isinstance(out, (list, tuple)) or len(out) != len(shapes):
        got = f"a {type(out).__name__} of length {len(out)}" if isinstance(out, (list, tuple)) else repr(type(out).__name__)
        raise InputError(
            f"{source_of(mech)}: {method}(step={step}) returned {got}; expected a list of "
            f"{len(shapes)} tensors, one per model parameter"
        )
    for i, (o, s) in enumerate(zip(out, shapes)):
        want = torch.Size(lead) + s
        if not isinstance(o, torch.Tensor) or o.shape != want:
            got = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
            raise InputError(f"{source_of(mech)}: {method}(step={step}) output {i} has shape {got}; expected {tuple(want)}")
        if o.device != device:
            raise InputError(
                f"{source_of(mech)}: {method}(step={step}) output {i} is on {o.device}, the gradients on {device}; "
                "create tensors with device=g.device"
            )
    return list(out)


class GlobalGenerators:
    """Seeds torch's (CPU and the device's), numpy's and Python's global generators; restores them on exit."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = None
        if device.type == "cuda":
            self.cuda = device.index if device.index is not None else torch.cuda.current_device()

    def __enter__(self) -> "GlobalGenerators":
        self._torch = torch.default_generator.get_state()
        self._cuda = torch.cuda.get_rng_state(self.cuda) if self.cuda is not None else None
        self._numpy = np.random.get_state()
        self._python = random.getstate()
        return self

    def seed(self, seed: int) -> None:
        # torch.manual_seed would also do this, but costs ~0.3 ms (it formats a
        # traceback for CUDA's lazy initialisation); this runs K times a step.
        torch.default_generator.manual_seed(seed)
        if self.cuda is not None:
            torch.cuda.default_generators[self.cuda].manual_seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        random.seed(seed)

    def host_states(self) -> tuple[Any, Any]:
        """numpy's and Python's global generator states (to see whether a call drew from them)."""
        return np.random.get_state()[1][:4].tobytes() + bytes([np.random.get_state()[2] & 0xFF]), random.getstate()

    def __exit__(self, *exc: Any) -> None:
        torch.default_generator.set_state(self._torch)
        if self._cuda is not None:
            torch.cuda.set_rng_state(self._cuda, self.cuda)
        np.random.set_state(self._numpy)
        random.setstate(self._python)


@dataclass
class CallNotes:
    """What happened to the mechanism calls of one chunk of K models, for the audit's notes.

    ``empty_steps[k]``: the steps at which model k's mechanism raised on an empty
    batch and was given one zero-gradient example instead.
    """

    K: int
    path: str = "loop"
    refused: str | None = None
    empty_error: str | None = None
    fresh_buffers: bool = False
    lines: list[str] = field(default_factory=list)
    empty_steps: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.empty_steps is None:
            self.empty_steps = np.zeros(self.K, dtype=np.int64)

    def empty(self, models: Sequence[int] | np.ndarray, exc: BaseException) -> None:
        self.empty_steps[np.asarray(models, dtype=np.int64)] += 1
        if self.empty_error is None:
            self.empty_error = one_line(exc)
            self.lines.append(
                f"the mechanism raised on an empty batch (B = 0; {self.empty_error}); such steps are given one "
                "zero-gradient example instead (see docs/auditing.md)"
            )


def _rows(per_sample: Sequence[torch.Tensor], j: slice | int, b: int) -> list[torch.Tensor]:
    return [p[j, :b] for p in per_sample]


def _zero_row(like: Sequence[torch.Tensor], shapes: Sequence[torch.Size], lead: tuple[int, ...] = ()) -> list[torch.Tensor]:
    """One all-zero example per parameter (with leading dims ``lead``), in ``like``'s dtype and device."""
    return [torch.zeros((*lead, 1, *s), dtype=p.dtype, device=p.device) for p, s in zip(like, shapes)]


def same_output_whatever_the_seed(mech: Any, gens: GlobalGenerators, rows: list[torch.Tensor], step: int,
                                  epoch: int) -> bool:
    """Whether two copies of ``mech`` return the same output for ``rows`` after the audit seeds them
    differently (torch's, numpy's and Python's global generators, and any generator in their attributes).

    Then the mechanism adds no noise, or draws it from a seed fixed in its code (a counter-based
    generator keyed by a constant, ``torch.Generator().manual_seed(step)``): every model trained with
    it gets the same noise, and an adversary who knows the code knows the noise.
    """
    outs = []
    for seed in (1, 2):
        twin = copy.deepcopy(mech)
        paths = find_generators(twin)
        if paths:
            Seeder(paths).seed(derive_seed(seed, _SEED_PRIVATE), twin)
        gens.seed(seed)
        outs.append(twin.clip_and_noise([r.clone() for r in rows], step, epoch))
    return all(torch.equal(x, y) for x, y in zip(*outs))


class LoopCalls:
    """One ``clip_and_noise`` call per model and step (see the module docstring)."""

    path = "loop"

    def __init__(self, mechanisms: Sequence[Any], seeds: Sequence[int], notes: CallNotes,
                 seed_private: bool = True) -> None:
        self.mechs = list(mechanisms)
        self.seeds = [int(s) for s in seeds]
        self.notes = notes
        if seed_private:
            for mech, s in zip(self.mechs, self.seeds):
                paths = find_generators(mech)
                if paths:
                    Seeder(paths).seed(derive_seed(s, _SEED_PRIVATE), mech)

    def __call__(self, gens: GlobalGenerators, per_sample: Sequence[torch.Tensor], sizes: np.ndarray,
                 order: np.ndarray, step: int, epoch: int, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
        outs = []
        for j, k in enumerate(order):
            outs.append(self.call_one(gens, int(k), _rows(per_sample, j, int(sizes[j])), step, epoch, shapes))
        return [torch.stack([o[i] for o in outs]) for i in range(len(shapes))]

    def call_one(self, gens: GlobalGenerators, k: int, rows: list[torch.Tensor], step: int, epoch: int,
                 shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
        mech = self.mechs[k]
        gens.seed(derive_seed(self.seeds[k], _SEED_LOOP, step))
        b = rows[0].shape[0]
        try:
            out = mech.clip_and_noise(rows, step, epoch)
        except Exception as exc:
            if b != 0:
                raise InputError(
                    f"{source_of(mech)}: clip_and_noise(B={b}, step={step}, epoch={epoch}) raised {one_line(exc)}"
                ) from exc
            self.notes.empty([k], exc)
            gens.seed(derive_seed(self.seeds[k], _SEED_LOOP, step))
            try:
                out = mech.clip_and_noise(_zero_row(rows, shapes), step, epoch)
            except Exception as exc2:
                raise InputError(
                    f"{source_of(mech)}: clip_and_noise raised on an empty batch ({one_line(exc)}) and on one "
                    f"zero-gradient example instead ({one_line(exc2)}) at step {step}"
                ) from exc2
        return check_output(mech, out, shapes, step, rows[0].device)


class VmapRefused(Exception):
    """The mechanism cannot run under ``vmap``; the message says why."""


def _plain(value: Any) -> bool:
    return isinstance(value, PLAIN_TYPES)


class VmapCalls:
    """All models of a chunk through ``vmap(clip_and_noise, randomness="different")``, one call per batch-size group."""

    path = "vmap"

    def __init__(self, mechanisms: Sequence[Any], seeds: Sequence[int], notes: CallNotes) -> None:
        self.seeds = [int(s) for s in seeds]
        self.notes = notes
        self.cls = type(mechanisms[0])
        self.template = copy.copy(mechanisms[0])
        flat = []
        for mech in mechanisms:
            try:
                state = vars(mech)
            except TypeError:
                raise VmapRefused("its instances have no __dict__ (__slots__)") from None
            flat.append(pytree.tree_flatten(state))
        spec = flat[0][1]
        leaves0 = flat[0][0]
        for leaves, s in flat[1:]:
            if s != spec:
                raise VmapRefused("its fresh instances differ in structure")
        self.spec = spec
        self.is_tensor = [isinstance(v, torch.Tensor) for v in leaves0]
        for v in leaves0:
            if isinstance(v, GENERATOR_TYPES):
                raise VmapRefused(f"it keeps its own random generator ({type(v).__name__})")
            if not isinstance(v, torch.Tensor) and not _plain(v):
                raise VmapRefused(f"it keeps Python state of type {type(v).__name__}")
        self.static = [v for v, t in zip(leaves0, self.is_tensor) if not t]
        for leaves, _ in flat[1:]:
            if [v for v, t in zip(leaves, self.is_tensor) if not t] != self.static:
                raise VmapRefused("its fresh instances hold different constants")
        self.tensors = [
            torch.stack([leaves[i] for leaves, _ in flat]) for i, t in enumerate(self.is_tensor) if t
        ]
        self.K = len(mechanisms)
        self.probed = False

    # -- state <-> instances ---------------------------------------------
    def _leaves(self, tensor_leaves: Sequence[torch.Tensor]) -> list[Any]:
        it_t, it_s = iter(tensor_leaves), iter(self.static)
        return [next(it_t) if t else next(it_s) for t in self.is_tensor]

    def instances(self) -> list[Any]:
        """The K mechanisms as separate instances with the current state (for falling back to the loop)."""
        out = []
        for k in range(self.K):
            obj = copy.copy(self.template)
            state = pytree.tree_unflatten(self._leaves([t[k].clone() for t in self.tensors]), self.spec)
            obj.__dict__.clear()
            obj.__dict__.update(state)
            out.append(obj)
        return out

    # -- one step ----------------------------------------------------------
    def _group_call(self, gens: GlobalGenerators, idx: torch.Tensor, grads: list[torch.Tensor], step: int,
                    epoch: int, shapes: Sequence[torch.Size], seed: int):
        """(outputs [G, *shape], new tensor leaves [G, ...], new spec, new static leaves) of one group."""
        tmpl = self.template
        found: dict[str, Any] = {}

        def f(tensor_leaves, g):
            state = pytree.tree_unflatten(self._leaves(tensor_leaves), self.spec)
            tmpl.__dict__.clear()
            tmpl.__dict__.update(state)
            out = tmpl.clip_and_noise(list(g), step, epoch)
            leaves, spec = pytree.tree_flatten(vars(tmpl))
            found["spec"], found["is_tensor"] = spec, [isinstance(v, torch.Tensor) for v in leaves]
            found["static"] = [v for v in leaves if not isinstance(v, torch.Tensor)]
            if not isinstance(out, (list, tuple)) or not all(isinstance(o, torch.Tensor) for o in out):
                raise VmapRefused("clip_and_noise did not return a list of tensors under vmap")
            return tuple(out), tuple(v for v in leaves if isinstance(v, torch.Tensor))

        state = [t.index_select(0, idx) for t in self.tensors]
        gens.seed(seed)
        before = gens.host_states()
        out, new = vmap(f, randomness="different")(state, grads)
        if gens.host_states() != before:
            raise VmapRefused("it draws from numpy's or Python's global generator, which vmap cannot split per model")
        for v in found["static"]:
            if isinstance(v, GENERATOR_TYPES) or not _plain(v):
                raise VmapRefused(f"it keeps Python state of type {type(v).__name__}")
        out = check_output(self.template, list(out), shapes, step, grads[0].device, lead=(len(idx),))
        return out, list(new), found["spec"], found["is_tensor"], found["static"]

    def _probe(self, gens: GlobalGenerators, rows: list[torch.Tensor], step: int, epoch: int,
               shapes: Sequence[torch.Size]) -> None:
        """Refuse when vmap's per-model randomness is not the mechanism's own: two models with the same
        state and gradients draw the same noise under vmap although its calls are random (numpy, OS
        entropy, module-level generators), or different noise although two copies of it draw the same
        whatever the seeds (a generator seeded in its code: vmap would invent independence)."""
        idx = torch.zeros(2, dtype=torch.long, device=self.tensors[0].device if self.tensors else rows[0].device)
        grads = [r.unsqueeze(0).expand(2, *r.shape) for r in rows]
        saved = [t.clone() for t in self.tensors]
        try:
            out = self._group_call(gens, idx, grads, step, epoch, shapes, derive_seed(self.seeds[0], 9, step))[0]
        finally:
            self.tensors = saved
        alike_under_vmap = all(torch.equal(o[0], o[1]) for o in out)
        alike_alone = same_output_whatever_the_seed(self.instances()[0], gens, rows, step, epoch)
        if alike_under_vmap and not alike_alone:
            raise VmapRefused("its randomness is not torch's global generator, so vmap cannot split it per model")
        if alike_alone and not alike_under_vmap:
            raise VmapRefused("its noise is the same whatever the audit seeds (a seed fixed in its code?), "
                              "which vmap would make different per model")

    def __call__(self, gens: GlobalGenerators, per_sample: Sequence[torch.Tensor], sizes: np.ndarray,
                 order: np.ndarray, step: int, epoch: int, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
        device = per_sample[0].device
        K = len(order)
        if not self.probed:
            b0 = int(sizes[0])
            rows = _rows(per_sample, 0, b0) if b0 else _zero_row(per_sample, shapes)
            self._probe(gens, rows, step, epoch, shapes)
            self.probed = True
        results = []
        start = 0
        while start < K:
            b = int(sizes[start])
            stop = start
            while stop < K and int(sizes[stop]) == b:
                stop += 1
            models = order[start:stop]
            idx = torch.as_tensor(models, dtype=torch.long, device=self.tensors[0].device if self.tensors else device)
            grads = _rows(per_sample, slice(start, stop), b)
            seed = derive_seed(_SEED_VMAP, step, *[self.seeds[k] for k in models])
            if b == 0:
                try:
                    res = self._group_call(gens, idx, grads, step, epoch, shapes, seed)
                except VmapRefused:
                    raise
                except Exception as exc:
                    res = self._group_call(gens, idx, _zero_row(per_sample, shapes, (stop - start,)), step, epoch, shapes, seed)
                    self.notes.empty(models, exc)
            else:
                res = self._group_call(gens, idx, grads, step, epoch, shapes, seed)
            results.append((start, stop, models, res))
            start = stop
        spec, is_tensor, static = results[0][3][2:]
        for *_, res in results[1:]:
            if res[2] != spec or res[3] != is_tensor or res[4] != static:
                raise VmapRefused("its Python attributes change differently for different batch sizes")
        # Commit: the new stacked state (in model order) and the outputs.
        new_tensors = []
        for i in range(sum(is_tensor)):
            parts = [res[1][i] for *_, res in results]
            cat = torch.cat(parts) if len(parts) > 1 else parts[0]
            perm = torch.as_tensor(np.argsort(np.concatenate([r[2] for r in results])), device=cat.device)
            new_tensors.append(cat.index_select(0, perm).contiguous())
        self.tensors, self.spec, self.is_tensor, self.static = new_tensors, spec, is_tensor, static
        return [torch.cat([res[0][i] for *_, res in results]) for i in range(len(shapes))]


def make_calls(mechanisms: Sequence[Any], seeds: Sequence[int], vectorize: str, notes: CallNotes):
    """:class:`VmapCalls` if ``vectorize`` is "auto" and the mechanism allows it, else :class:`LoopCalls`."""
    if vectorize == "auto" and len(mechanisms) > 1:
        try:
            calls = VmapCalls(mechanisms, seeds, notes)
            notes.path = "vmap"
            return calls
        except VmapRefused as exc:
            notes.refused = str(exc)
    notes.path = "loop"
    return LoopCalls(mechanisms, seeds, notes)
