"""DP-SGD with a user's mechanism in the loop, many models at once.

One :class:`Trainer` holds the data (on the device) and trains a *chunk* of K
models together: their parameters are stacked along a leading model
dimension and the per-example gradients of all K models come from one
engine call (:mod:`dpaudit.training.per_example`).

Batches (:mod:`dpaudit.training.sampling`): every step, the base batch (the
training examples, each in with probability q = ``config.sample_rate``) is the
same for every model trained with the same ``batch_seed``; each model adds the
canaries it includes with its own coins. Models are ordered by realised batch
size for the step and padded to the largest; the mechanism of model k sees its
own B_k rows, ``[g[k, :B_k] for g in per_sample_grads]``, through
:mod:`dpaudit.training.mechanism_calls` (one ``vmap`` call per batch-size group
for pure-torch mechanisms, else one call per model). Its output (one tensor
per parameter) is the gradient that SGD with momentum applies:
``buf ← μ·buf + u``, ``θ ← θ − lr·buf`` (PyTorch's SGD without dampening or
weight decay).

A mechanism may also handle all K models in one call (:class:`BatchedMechanism`,
``clip_and_noise_batched``).

Determinism
-----------
Everything random about model k follows from its seed s_k and the trainer's
``batch_seed`` (and ``init_seed``): its initialisation (torch's generator
seeded with s_k, or with ``init_seed`` for every model, on the CPU), its
canary coins (a numpy ``PCG64`` stream seeded from s_k), the base
batches (from ``batch_seed`` and the step), and the mechanism's noise: with
one call per model, torch's, numpy's and Python's global generators are seeded
from (s_k, t) before model k's call at step t (and any generator the mechanism
keeps in its attributes once, from s_k), so the noise does not depend on
which other models share the chunk; under ``vmap`` the noise of a group is
drawn after seeding from the group's seeds and the step, so it does depend on
the chunk. Either way the same seeds and chunks give the same parameters on
the same device (on CUDA only with deterministic kernels:
``torch.use_deterministic_algorithms(True)``). On CUDA the noise comes from
CUDA's generator, so CPU and GPU runs agree in distribution, not bit for bit.
The caller's global generator states are restored afterwards.

Randomness the seeds cannot reach (a generator seeded in the mechanism's code
from a constant key, created at every call) gives every model the same noise.
The trainer checks this once a chunk, on the first two models given the same
gradients in its first ten steps, and says so in a note: such a mechanism is
deterministic to an adversary who knows its code, and the audit shows what
that adversary sees.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.utils import _pytree as pytree

from dpaudit import validation
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import epoch_of
from dpaudit.run_config import RunConfig
from dpaudit.seeding import derive_seed
from dpaudit.training.choices import VECTORIZE
from dpaudit.training.mechanism_calls import (
    CallNotes, GlobalGenerators, LoopCalls, VmapCalls, check_output, make_calls, one_line, source_of,
)
from dpaudit.training.per_example import FuncGrads, LayerwiseGrads, per_example_engine
from dpaudit.training.sampling import CanaryCoins, SharedBatches

#: Learning rate used when none is given, for the mechanism's output as an average
#: over the expected batch (plain DP-SGD). With σ = 1, C = 1 and momentum 0.9,
#: measured here on the CPU: the classic CNN on Fashion-MNIST (batch 256) reaches
#: 79 % after 3 epochs at lr 0.25 (after 1 epoch: 76–78 % at lr 0.2–0.3, 74–77 %
#: at 0.5, 70 % at 1.0); the MLP on digits (batch 64) 92–93 % after 5 epochs at
#: lr 0.2–0.25 (88–90 % at 0.5).
DEFAULT_LR = 0.25
DEFAULT_MOMENTUM = 0.9
#: Examples × models per forward pass when evaluating (bounds activation memory): with
#: ``torch.func`` (any model), and with the layer-wise engine, whose forward pass keeps
#: unfolded patches (a few hundred floats a row and model) in buffers reused for training.
EVAL_ROWS = 1 << 16
LAYERWISE_EVAL_ROWS = 1 << 12
#: Steps in which the trainer looks for two models given the same gradients, to see whether the
#: audit's seeds reach the mechanism's randomness (SAME_NOISE_NOTE when they do not).
TWIN_CHECK_STEPS = 10
SAME_NOISE_NOTE = (
    "copies of the mechanism return the same output for the same gradients whatever the audit seeds: it adds "
    "no noise, or draws it from a seed fixed in its code; its models share their noise (they are not "
    "independent runs), and an adversary who knows the code knows the noise"
)


# ----------------------------------------------------------------------------
# Mechanisms


@runtime_checkable
class BatchedMechanism(Protocol):
    """A mechanism that takes the model dimension itself (optional).

    ``per_sample_grads[i]`` has shape ``[K, B_max, *param_shape_i]`` and
    ``mask[k, b]`` says whether row b of model k is a real example (padding
    rows hold arbitrary finite values and must be ignored). Returns one
    tensor of shape ``[K, *param_shape_i]`` per parameter. One instance serves
    a whole chunk of K models and must keep the models independent (its own
    noise for each). ``get_effective_sigma`` is the seed interface's.
    """

    def clip_and_noise_batched(
        self, per_sample_grads: list[torch.Tensor], mask: torch.Tensor, step: int, epoch: int
    ) -> list[torch.Tensor]: ...

    def get_effective_sigma(self, step: int, epoch: int) -> float: ...


def is_batched(mechanism: Any) -> bool:
    """Whether ``mechanism`` (an instance or a class) offers ``clip_and_noise_batched``."""
    return callable(getattr(mechanism, "clip_and_noise_batched", None))


class _BatchedCalls:
    path = "batched"

    def __init__(self, mech: Any, seeds: Sequence[int]) -> None:
        self.mech, self.seed = mech, int(seeds[0])

    def __call__(self, gens, per_sample, sizes, order, step, epoch, shapes):
        width = per_sample[0].shape[1]
        dev = per_sample[0].device
        mask = torch.arange(width, device=dev)[None, :] < torch.as_tensor(sizes, device=dev)[:, None]
        gens.seed(derive_seed(self.seed, 3, step))
        try:
            out = self.mech.clip_and_noise_batched(list(per_sample), mask, step, epoch)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"{source_of(self.mech)}: clip_and_noise_batched(step={step}, epoch={epoch}) raised {one_line(exc)}"
            ) from exc
        return check_output(self.mech, out, shapes, step, dev, lead=(len(sizes),), method="clip_and_noise_batched")


# ----------------------------------------------------------------------------
# Models


def stacked_models(model_fn: Callable[[], nn.Module], seeds: Sequence[int], device: torch.device) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(a parameter-less copy for ``functional_call``, parameters stacked over models).

    Model k is built by ``model_fn()`` with torch's CPU generator seeded with
    ``seeds[k]``, on the CPU (so its initial parameters are the same on every
    device), then moved to ``device``.
    """
    models = []
    state = torch.default_generator.get_state()
    try:
        for s in seeds:
            torch.default_generator.manual_seed(int(s))
            models.append(model_fn())
    finally:
        torch.default_generator.set_state(state)
    if any(True for m in models for _ in m.buffers()):
        raise InputError("training audits support models without buffers only (no batch norm: it mixes examples)")
    params, _ = stack_module_state(models)
    params = {k: v.detach().to(device).clone() for k, v in params.items()}
    base = models[0].to("meta")
    return base, params


def per_sample_grad_fn(base: nn.Module) -> Callable[..., dict[str, torch.Tensor]]:
    """``f(params[K, ...], x[K, B, ...], y[K, B]) -> {name: [K, B, *shape]}`` (``torch.func``; any model)."""
    return FuncGrads(base)


def forward_fn(base: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """``f(params[K, ...], x[n, ...]) -> logits[K, n, classes]``: every model on the same inputs."""

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, params, (x,))

    return vmap(forward, in_dims=(0, None))


# ----------------------------------------------------------------------------
# Canaries as the trainer sees them


@dataclass(frozen=True)
class TrainingCanaries:
    """What the trainer must do with m canaries (built by :mod:`dpaudit.training.canaries`).

    Either *input* canaries (``x``, ``y``: examples appended to the training
    data of the models that include them; scored by the final model's loss)
    or *gradient* canaries (``coordinates``: flat indices into the
    concatenated parameter vector; when sampled, a row that is ``norm`` at
    that coordinate and zero elsewhere is appended to the per-example
    gradients; scored by the sum over steps of the mechanism's output at that
    coordinate). ``scale_coordinates`` (gradient canaries only, optional): the
    coordinates whose root mean square of the change of the update from the
    previous step estimates that step's noise scale (every coordinate but the
    canaries'); the trainer then also returns each model's sum over steps of
    its logarithm.
    """

    x: np.ndarray | None = None
    y: np.ndarray | None = None
    coordinates: np.ndarray | None = None
    norm: float = 1.0
    scale_coordinates: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.x is None) == (self.coordinates is None):
            raise InputError("canaries are either input examples (x, y) or gradient coordinates, not both or neither")
        if self.x is not None and (self.y is None or len(self.x) != len(self.y)):
            raise InputError("input canaries need one label per image")
        validation.positive("canary norm", self.norm)

    @property
    def m(self) -> int:
        return len(self.x) if self.x is not None else len(self.coordinates)

    @property
    def gradient(self) -> bool:
        return self.coordinates is not None


@dataclass(frozen=True)
class TrainResult:
    """The outcome of training one chunk of K models.

    ``scores[k, j]`` is canary j's score in model k (higher = "looks in"):
    for gradient canaries the sum over steps of the mechanism's output at the
    canary's coordinate, for input canaries minus the final model's
    cross-entropy loss on it. ``log_scale[k]``: the sum over steps of the log
    noise scale of model k's updates (NaN unless the canaries give
    ``scale_coordinates``). ``test_accuracy[k]`` is model k's accuracy on the
    test set (NaN without one). ``calls`` is how the mechanism was called
    ("vmap", "loop" or "batched"); ``notes`` say what else happened;
    ``empty_batch_steps[k]`` counts the steps at which model k's mechanism
    raised on an empty batch (:mod:`dpaudit.training.mechanism_calls`).
    """

    params: dict[str, torch.Tensor]
    scores: np.ndarray
    log_scale: np.ndarray
    test_accuracy: np.ndarray
    steps: int
    seconds: float
    calls: str = "loop"
    notes: tuple[str, ...] = ()
    empty_batch_steps: np.ndarray | None = None


# ----------------------------------------------------------------------------
# The trainer


class Trainer:
    """Trains chunks of models on one dataset with DP-SGD and a mechanism in the loop.

    Args:
        model_fn: Builds one model (no buffers), e.g. ``dpaudit.training.models.mlp_digits``.
        config: The run: q = ``config.sample_rate`` and ``config.steps`` steps of
            ``config.steps_per_epoch`` per epoch; the mechanisms are built for it.
        x_train, y_train: Training examples ``[n, *input_shape]`` float32 and labels int64.
        x_test, y_test: Optional test set for the accuracy of each model.
        lr, momentum: SGD with momentum applied to the mechanism's output.
        device: Where the data, parameters and per-example gradients live.
        canaries: Optional :class:`TrainingCanaries`.
        batch_seed: Seeds the base batches shared by every model (:mod:`dpaudit.training.sampling`).
        init_seed: If given, every model starts from the parameters ``model_fn`` builds with this
            seed (a public, fixed initialisation, as the strongest white-box audits use); else model k
            starts from its own seed's.
        vectorize: "auto" (``vmap`` over the models when the mechanism allows it) or "loop".
        engine: Per-example gradients: "auto", "layerwise" or "func" (:mod:`dpaudit.training.per_example`).
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        config: RunConfig,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
        *,
        lr: float = DEFAULT_LR,
        momentum: float = DEFAULT_MOMENTUM,
        device: str | torch.device = "cpu",
        canaries: TrainingCanaries | None = None,
        batch_seed: int = 0,
        init_seed: int | None = None,
        vectorize: str = "auto",
        engine: str = "auto",
    ) -> None:
        self.model_fn = model_fn
        self.config = config
        self.lr = validation.nonnegative("lr", lr)
        self.momentum = validation.nonnegative("momentum", momentum)
        if self.momentum >= 1:
            raise InputError(f"momentum must be in [0, 1), got {momentum}")
        if vectorize not in VECTORIZE:
            raise InputError(f"vectorize must be one of {', '.join(VECTORIZE)}, got {vectorize!r}")
        self.vectorize = vectorize
        self.device = device_of(device)
        if len(x_train) != len(y_train) or len(x_train) == 0:
            raise InputError(f"x_train ({len(x_train)}) and y_train ({len(y_train)}) must be non-empty and of equal length")
        self.n = len(x_train)
        self.canaries = canaries
        base, _ = stacked_models(model_fn, [0], torch.device("cpu"))
        self.engine = per_example_engine(model_fn(), base, self.device, engine)
        xs, ys = [np.asarray(x_train, np.float32)], [np.asarray(y_train, np.int64)]
        if canaries is not None and not canaries.gradient:
            xs.append(np.asarray(canaries.x, np.float32))
            ys.append(np.asarray(canaries.y, np.int64))
        # The pool: training examples, then the input canaries (index n + j); channels-last
        # images for the layer-wise engine.
        pool = torch.from_numpy(np.concatenate(xs))
        self.input_shape = tuple(pool.shape[1:])
        if self.engine.channels_last and pool.dim() == 4:
            pool = pool.permute(0, 2, 3, 1).contiguous()
        self.pool_x = pool.to(self.device)
        self.pool_y = torch.from_numpy(np.concatenate(ys)).to(self.device)
        self.x_test = None
        if x_test is not None:
            test = torch.from_numpy(np.asarray(x_test, np.float32))
            if self.engine.channels_last and test.dim() == 4:
                test = test.permute(0, 2, 3, 1).contiguous()
            self.x_test = test.to(self.device)
        self.y_test = None if y_test is None else torch.from_numpy(np.asarray(y_test, np.int64)).to(self.device)
        self.batches = SharedBatches(batch_seed, self.n, config.sample_rate)
        self.init_seed = init_seed

    # ----- one chunk ---------------------------------------------------
    def train(
        self,
        mechanisms: Sequence[Any] | BatchedMechanism,
        seeds: Sequence[int],
        membership: np.ndarray | None = None,
        *,
        on_step: Callable[[int], None] | None = None,
    ) -> TrainResult:
        """Train ``len(seeds)`` models at once.

        Args:
            mechanisms: One fresh seed-interface mechanism per model, or one
                :class:`BatchedMechanism` for the whole chunk.
            seeds: One seed per model (see the module docstring).
            membership: ``[K, m]`` booleans: which canaries each model's
                dataset includes (required when the trainer has canaries).
            on_step: Called with the step index after every step.
        """
        start = time.perf_counter()
        seeds = [int(s) for s in seeds]
        K = len(seeds)
        if K == 0:
            raise InputError("need at least one model to train")
        batched = not isinstance(mechanisms, (list, tuple))
        if batched and not is_batched(mechanisms):
            raise InputError("pass one mechanism per model, or one with clip_and_noise_batched")
        if not batched and len(mechanisms) != K:
            raise InputError(f"{len(mechanisms)} mechanisms for {K} models; need one per model")
        m = self.canaries.m if self.canaries is not None else 0
        if m:
            membership = np.asarray(membership, dtype=bool) if membership is not None else None
            if membership is None or membership.shape != (K, m):
                raise InputError(f"membership must be a [{K}, {m}] boolean array (models × canaries)")

        inits = seeds if self.init_seed is None else [self.init_seed] * K
        base, params = stacked_models(self.model_fn, inits, self.device)
        names = list(params)
        shapes = [params[n].shape[1:] for n in names]
        buf = {n: torch.zeros_like(p) for n, p in params.items()}
        coins = [CanaryCoins(derive_seed(s, 1), m, self.config.sample_rate) for s in seeds]
        gradient_canaries = self.canaries is not None and self.canaries.gradient
        scores = torch.zeros(K, m, dtype=torch.float64, device=self.device)
        log_scale = torch.zeros(K, dtype=torch.float64, device=self.device)
        scale_coords = None
        if gradient_canaries:
            sizes = [s.numel() for s in shapes]
            coords = torch.as_tensor(self.canaries.coordinates, dtype=torch.long, device=self.device)
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            # (parameter index, flat index inside it) of every canary coordinate.
            canary_param = np.searchsorted(offsets, self.canaries.coordinates, side="right") - 1
            canary_local = self.canaries.coordinates - offsets[canary_param]
            if self.canaries.scale_coordinates is not None and len(self.canaries.scale_coordinates):
                scale_coords = torch.as_tensor(self.canaries.scale_coordinates, dtype=torch.long, device=self.device)

        notes = CallNotes(K)
        calls = _BatchedCalls(mechanisms, seeds) if batched else make_calls(mechanisms, seeds, self.vectorize, notes)
        if notes.refused:
            notes.lines.append(f"mechanism called once per model: vmap refused it ({notes.refused})")
        T = self.config.steps
        identity = np.arange(K)
        previous = None  # the last update at the scale coordinates
        # Whether the seeds reach the mechanism's randomness: checked once, on the outputs of the first two
        # models (seeded differently) given the same gradients, looked for in the first TWIN_CHECK_STEPS
        # steps only (comparing every pair's gradients at every step would cost as much as a layer).
        checked = K == 1
        with GlobalGenerators(self.device) as gens:
            for step in range(T):
                epoch = epoch_of(step, self.config)
                base_idx = self.batches.at(step)
                b = len(base_idx)
                chosen = [np.flatnonzero(c.draw() & membership[k]) if m else np.zeros(0, np.int64)
                          for k, c in enumerate(coins)]
                sizes_k = b + np.array([len(c) for c in chosen], dtype=np.int64)
                order = np.argsort(sizes_k, kind="stable")
                sizes = sizes_k[order]
                width = int(sizes[-1])
                if width:
                    per_sample = self._gradients(params, base_idx, chosen, order, width, names, identity)
                    if gradient_canaries:
                        self._insert_gradient_canaries(per_sample, b, chosen, order, canary_param, canary_local)
                else:
                    per_sample = [torch.zeros((K, 0, *s), device=self.device) for s in shapes]

                try:
                    update = calls(gens, per_sample, sizes, order, step, epoch, shapes)
                except InputError:
                    raise
                except Exception as exc:
                    if not isinstance(calls, VmapCalls):
                        raise
                    # The state is untouched until a vmap step succeeds: redo this step per model.
                    notes.path, notes.refused = "loop", one_line(exc)
                    notes.lines.append(
                        f"mechanism called once per model from step {step}: vmap refused it ({notes.refused})")
                    calls = LoopCalls(calls.instances(), seeds, notes, seed_private=False)
                    update = calls(gens, per_sample, sizes, order, step, epoch, shapes)
                if not checked:
                    twins = _twins(per_sample, sizes)
                    checked = twins is not None or step + 1 >= TWIN_CHECK_STEPS
                    if twins is not None and all(torch.equal(u[twins], u[twins + 1]) for u in update):
                        notes.lines.append(SAME_NOISE_NOTE)
                if not np.array_equal(order, identity):
                    inverse = torch.as_tensor(np.argsort(order), device=self.device)
                    update = [u.index_select(0, inverse) for u in update]
                self._release_held_buffers(calls, notes)

                flat = torch.cat([u.reshape(K, -1) for u in update], dim=1) if gradient_canaries else None
                if gradient_canaries:
                    scores += flat[:, coords].to(torch.float64)
                    if scale_coords is not None:
                        here = flat[:, scale_coords].to(torch.float64)
                        if previous is not None:
                            rms = (here - previous).pow(2).mean(1).sqrt()
                            log_scale += torch.log(rms.clamp_min(1e-300))
                        previous = here
                with torch.no_grad():
                    for n, u in zip(names, update):
                        u = u.to(params[n].dtype)
                        buf[n].mul_(self.momentum).add_(u)
                        params[n].add_(buf[n], alpha=-self.lr)
                if on_step is not None:
                    on_step(step)

        if m and not gradient_canaries:
            scores = self._canary_scores(base, params).to(torch.float64)
        accuracy = self.accuracy(base, params)
        scores_np = scores.cpu().numpy()
        if not np.isfinite(scores_np).all() or not all(bool(torch.isfinite(p).all()) for p in params.values()):
            src = source_of(mechanisms if batched else mechanisms[0])
            raise InputError(f"{src}: training produced non-finite parameters or canary scores (NaN or inf in the mechanism's output?)")
        ls = log_scale.cpu().numpy() if scale_coords is not None else np.full(K, np.nan)
        return TrainResult(params, scores_np, ls, accuracy, T, time.perf_counter() - start,
                           calls=getattr(calls, "path", "loop"), notes=tuple(notes.lines),
                           empty_batch_steps=notes.empty_steps.copy())

    # ----- helpers -----------------------------------------------------
    def _gradients(self, params: dict[str, torch.Tensor], base_idx: np.ndarray, chosen: list[np.ndarray],
                   order: np.ndarray, width: int, names: list[str], identity: np.ndarray) -> list[torch.Tensor]:
        """Per-example gradients ``[K, width, *shape]`` of the models in ``order``: the shared base batch,
        then each model's input canaries (gradient canaries get placeholder rows), then padding."""
        K = len(order)
        b = len(base_idx)
        table = np.zeros((K, width), dtype=np.int64)  # padding rows repeat example 0
        table[:, :b] = base_idx
        if self.canaries is not None and not self.canaries.gradient:
            for j, k in enumerate(order):
                c = chosen[k]
                table[j, b : b + len(c)] = self.n + c
        # Without input canaries every model's rows are the same examples: gather them once.
        shared = self.canaries is None or self.canaries.gradient
        rows = self._to_device(table[:1] if shared else table).view(-1)
        x = self.pool_x.index_select(0, rows).view(-1, width, *self.pool_x.shape[1:])
        y = self.pool_y.index_select(0, rows).view(-1, width).expand(K, width)
        if shared and not isinstance(self.engine, LayerwiseGrads):
            x = x.expand(K, *x.shape[1:])
        if not np.array_equal(order, identity):
            perm = torch.as_tensor(order, device=self.device)
            params = {n: p.index_select(0, perm) for n, p in params.items()}
        g = self.engine(params, x, y)
        return [g[n] for n in names]

    def _release_held_buffers(self, calls: Any, notes: CallNotes) -> None:
        """If a mechanism kept a reference to its input gradients, give the engine new storage for the
        next step rather than overwrite what the mechanism holds."""
        engine = self.engine
        if not isinstance(engine, LayerwiseGrads):
            return
        ours = engine.buf.storages()

        def owned(t: Any) -> bool:
            return isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() in ours

        if isinstance(calls, VmapCalls):
            held = any(owned(t) for t in calls.tensors)
            calls.tensors = [t.clone() if owned(t) else t for t in calls.tensors]
        elif isinstance(calls, LoopCalls):
            held = any(owned(v) for mech in calls.mechs for v in pytree.tree_leaves(getattr(mech, "__dict__", {})))
        else:
            held = False
        if held:
            engine.buf.release()
            if not notes.fresh_buffers:
                notes.fresh_buffers = True
                notes.lines.append("the mechanism keeps references to its input gradients; they are given fresh "
                                   "memory every step (slower)")

    def _insert_gradient_canaries(
        self, per_sample: list[torch.Tensor], b: int, chosen: list[np.ndarray], order: np.ndarray,
        canary_param: np.ndarray, canary_local: np.ndarray,
    ) -> None:
        """Overwrite each model's canary slots with Dirac rows: ``norm`` at the canary's coordinate, 0 elsewhere."""
        model, slot, which = [], [], []
        for j, k in enumerate(order):
            c = chosen[k]
            model.extend([j] * len(c))
            slot.extend(range(b, b + len(c)))
            which.extend(c)
        if not which:
            return
        which = np.asarray(which)
        mi = self._to_device(np.asarray(model, dtype=np.int64))
        si = self._to_device(np.asarray(slot, dtype=np.int64))
        with torch.no_grad():
            for i, g in enumerate(per_sample):
                g[mi, si] = 0
                here = canary_param[which] == i
                if here.any():
                    sel = self._to_device(np.flatnonzero(here))
                    local = self._to_device(canary_local[which][here].astype(np.int64))
                    flat = g.view(g.shape[0], g.shape[1], -1)
                    flat[mi[sel], si[sel], local] = self.canaries.norm

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device; on CUDA through pinned memory without waiting for the GPU."""
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _logits(self, base: nn.Module, params: dict[str, torch.Tensor],
                x: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
        """``(rows, logits[K, len(rows), classes])``: every model on consecutive slices of ``x``.

        The layer-wise engine's forward pass (the first layer unfolds the shared inputs once for
        all K models) is several times faster on a CPU than ``vmap`` over ``functional_call``; its
        logits live in a buffer that the next slice overwrites.
        """
        K = next(iter(params.values())).shape[0]
        if isinstance(self.engine, LayerwiseGrads):
            fwd, rows = self.engine.logits, LAYERWISE_EVAL_ROWS
        else:
            fwd, rows = forward_fn(base), EVAL_ROWS
        step = max(1, rows // K)
        with torch.no_grad():
            for i in range(0, len(x), step):
                yield slice(i, i + step), fwd(params, x[i : i + step])

    def _canary_scores(self, base: nn.Module, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Minus the cross-entropy loss of every model on every input canary: ``[K, m]``."""
        y = self.pool_y[self.n :]
        parts = [-F.cross_entropy(logits.transpose(1, 2), y[rows].expand(logits.shape[0], -1), reduction="none")
                 for rows, logits in self._logits(base, params, self.pool_x[self.n :])]
        return torch.cat(parts, dim=1)

    def accuracy(self, base: nn.Module, params: dict[str, torch.Tensor]) -> np.ndarray:
        """Test accuracy of each model (NaN without a test set)."""
        K = next(iter(params.values())).shape[0]
        if self.x_test is None or len(self.x_test) == 0:
            return np.full(K, np.nan)
        correct = torch.zeros(K, dtype=torch.long, device=self.device)
        for rows, logits in self._logits(base, params, self.x_test):
            correct += (logits.argmax(-1) == self.y_test[rows]).sum(1)
        return correct.cpu().numpy() / len(self.x_test)


def _twins(per_sample: Sequence[torch.Tensor], sizes: np.ndarray) -> int | None:
    """The first position j (in the step's model order) whose model sees exactly the gradients of model
    j + 1 (a non-empty batch), or None."""
    for j in range(len(sizes) - 1):
        b = int(sizes[j])
        if b and b == int(sizes[j + 1]) and all(torch.equal(g[j, :b], g[j + 1, :b]) for g in per_sample):
            return j
    return None


def device_of(device: str | torch.device) -> torch.device:
    """``device`` as a torch device; InputError if it is malformed or CUDA is not available."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch threads (None: unchanged)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
