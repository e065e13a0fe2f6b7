"""DP-SGD with a user's mechanism in the loop, many models at once.

One :class:`Trainer` holds the data (on the device) and trains a *chunk* of K
models together: their parameters are stacked along a leading model
dimension (``torch.func.stack_module_state``) and the per-example gradients
of all K models come from one ``vmap`` over models of ``vmap(grad(loss))``
over examples.

Every step, each model draws its own Poisson batch (every example in with
probability q = ``config.sample_rate``, independently of the other models).
The batches have different sizes, so they are padded to the largest one and
each model's real rows are sliced out again before its mechanism sees them.
A seed-interface mechanism is called once per model per step,

    ``clip_and_noise([g[k, :B_k] for g in per_sample_grads], step, epoch)``,

and its output (one tensor per parameter) is the gradient that SGD with
momentum applies: ``buf ← μ·buf + u``, ``θ ← θ − lr·buf`` (PyTorch's SGD
without dampening or weight decay).

A mechanism may also handle all K models in one call (:class:`BatchedMechanism`,
``clip_and_noise_batched``). None of the reference mechanisms does; the
per-model loop is the default and the only path whose results do not depend on
how the models are grouped into chunks.

Determinism
-----------
Everything random about model k follows from its seed s_k: its
initialisation (torch's generator seeded with s_k), its Poisson batches and
its canaries' sampling (a numpy ``PCG64`` stream seeded with s_k, on the host,
so they are the same on every device), and the mechanism's noise: before
model k's call at step t, torch's, numpy's and Python's *global* generators
are seeded with a number derived from (s_k, t). The mechanism draws from them
as the seed interface expects, and its noise does not depend on which other
models share the chunk or in what order they are called. So K models trained
at once equal the same K models trained one by one (up to float rounding in
the batched gradients), and the same seeds give bit-identical parameters on
the same device (on CUDA only with deterministic kernels:
``torch.use_deterministic_algorithms(True)``). On CUDA the noise comes from
CUDA's generator, so CPU and GPU runs agree in distribution, not bit for bit.
The caller's global generator states are restored afterwards.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from dpaudit import validation
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import epoch_of
from dpaudit.run_config import RunConfig
from dpaudit.seeding import derive_seed

#: Learning rate used when none is given, for the mechanism's output as an average
#: over the expected batch (plain DP-SGD). With σ = 1, C = 1 and momentum 0.9,
#: measured here on the CPU: the classic CNN on Fashion-MNIST (batch 256) reaches
#: 79 % after 3 epochs at lr 0.25 (after 1 epoch: 76–78 % at lr 0.2–0.3, 74–77 %
#: at 0.5, 70 % at 1.0); the MLP on digits (batch 64) 92–93 % after 5 epochs at
#: lr 0.2–0.25 (88–90 % at 0.5).
DEFAULT_LR = 0.25
DEFAULT_MOMENTUM = 0.9
#: Examples × models per forward pass when evaluating (bounds activation memory).
EVAL_ROWS = 1 << 18


# ----------------------------------------------------------------------------
# Mechanisms


@runtime_checkable
class BatchedMechanism(Protocol):
    """A mechanism that takes the model dimension itself (optional, faster on a GPU).

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


def _source(mech: Any) -> str:
    import inspect

    try:
        return inspect.getfile(type(mech))
    except (TypeError, OSError):
        return type(mech).__name__


def _check_output(
    mech: Any, out: Any, shapes: Sequence[torch.Size], step: int, device: torch.device, lead: tuple[int, ...] = (),
) -> list[torch.Tensor]:
    method = "clip_and_noise_batched" if lead else "clip_and_noise"
    if not isinstance(out, (list, tuple)) or len(out) != len(shapes):
        got = f"a {type(out).__name__} of length {len(out)}" if isinstance(out, (list, tuple)) else repr(type(out).__name__)
        raise InputError(
            f"{_source(mech)}: {method}(step={step}) returned {got}; expected a list of "
            f"{len(shapes)} tensors, one per model parameter"
        )
    for i, (o, s) in enumerate(zip(out, shapes)):
        want = torch.Size(lead) + s
        if not isinstance(o, torch.Tensor) or o.shape != want:
            got = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
            raise InputError(
                f"{_source(mech)}: {method}(step={step}) output {i} has shape {got}; expected {tuple(want)}"
            )
        if o.device != device:
            raise InputError(
                f"{_source(mech)}: {method}(step={step}) output {i} is on {o.device}, the gradients on {device}; "
                "create tensors with device=g.device"
            )
    return list(out)


# ----------------------------------------------------------------------------
# Global random state


class _GlobalGenerators:
    """Seeds torch's (CPU and the device's), numpy's and Python's global generators; restores them on exit."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.index if device.type == "cuda" else None
        if self.cuda is None and device.type == "cuda":
            self.cuda = torch.cuda.current_device()

    def __enter__(self) -> "_GlobalGenerators":
        self._torch = torch.default_generator.get_state()
        self._cuda = torch.cuda.get_rng_state(self.cuda) if self.cuda is not None else None
        self._numpy = np.random.get_state()
        self._python = random.getstate()
        return self

    def seed(self, seed: int) -> None:
        # torch.manual_seed would also do this, but costs ~0.3 ms (it formats a
        # traceback for CUDA's lazy initialisation); this is called K times a step.
        torch.default_generator.manual_seed(seed)
        if self.cuda is not None:
            torch.cuda.default_generators[self.cuda].manual_seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        random.seed(seed)

    def __exit__(self, *exc: Any) -> None:
        torch.default_generator.set_state(self._torch)
        if self._cuda is not None:
            torch.cuda.set_rng_state(self._cuda, self.cuda)
        np.random.set_state(self._numpy)
        random.setstate(self._python)


# ----------------------------------------------------------------------------
# Poisson sampling


class PoissonSampler:
    """One model's batches: each of ``n`` examples in with probability ``q``, every step.

    Draws B ~ Binomial(n, q) and then B distinct indices uniformly, which is
    the same distribution as n independent coin flips but costs O(B) instead
    of O(n). ``extra`` more independent coins per step (the canaries) are
    drawn after the batch, always all of them, so the stream does not depend
    on which canaries a model includes.
    """

    def __init__(self, seed: int, n: int, q: float, extra: int = 0) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.n = int(n)
        self.q = float(q)
        self.extra = int(extra)

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted base indices, boolean mask over the ``extra`` canaries)."""
        b = int(self.rng.binomial(self.n, self.q))
        idx = np.sort(self.rng.choice(self.n, size=b, replace=False)) if b else np.zeros(0, np.int64)
        coins = self.rng.random(self.extra) < self.q if self.extra else np.zeros(0, bool)
        return idx.astype(np.int64), coins


# ----------------------------------------------------------------------------
# Per-example gradients


def stacked_models(model_fn: Callable[[], nn.Module], seeds: Sequence[int], device: torch.device) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(a parameter-less copy for ``functional_call``, parameters stacked over models).

    Model k is built by ``model_fn()`` with torch's CPU generator seeded with
    ``seeds[k]``, on the CPU (so its initial parameters are the same on every
    device), then moved to ``device``.
    """
    models = []
    with _GlobalGenerators(torch.device("cpu")):
        for s in seeds:
            torch.default_generator.manual_seed(int(s))
            models.append(model_fn())
    buffers = [b for m in models for b in m.buffers()]
    if buffers:
        raise InputError("training audits support models without buffers only (no batch norm: it mixes examples)")
    params, _ = stack_module_state(models)
    params = {k: v.detach().to(device).clone() for k, v in params.items()}
    base = models[0].to("meta")
    return base, params


def per_sample_grad_fn(base: nn.Module) -> Callable[..., dict[str, torch.Tensor]]:
    """``f(params[K, ...], x[K, B, ...], y[K, B]) -> {name: [K, B, *shape]}``: cross-entropy gradients per model and example."""

    def loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(base, params, (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    return vmap(per_example, in_dims=(0, 0, 0))


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
    coordinate).
    """

    x: np.ndarray | None = None
    y: np.ndarray | None = None
    coordinates: np.ndarray | None = None
    norm: float = 1.0

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
    cross-entropy loss on it. ``test_accuracy[k]`` is model k's accuracy on
    the test set (NaN without one).
    """

    params: dict[str, torch.Tensor]
    scores: np.ndarray
    test_accuracy: np.ndarray
    steps: int
    seconds: float


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
    ) -> None:
        self.model_fn = model_fn
        self.config = config
        self.lr = validation.nonnegative("lr", lr)
        self.momentum = validation.nonnegative("momentum", momentum)
        if self.momentum >= 1:
            raise InputError(f"momentum must be in [0, 1), got {momentum}")
        self.device = _device(device)
        if len(x_train) != len(y_train) or len(x_train) == 0:
            raise InputError(f"x_train ({len(x_train)}) and y_train ({len(y_train)}) must be non-empty and of equal length")
        self.n = len(x_train)
        self.canaries = canaries
        xs, ys = [np.asarray(x_train, np.float32)], [np.asarray(y_train, np.int64)]
        if canaries is not None and not canaries.gradient:
            xs.append(np.asarray(canaries.x, np.float32))
            ys.append(np.asarray(canaries.y, np.int64))
        # The pool: training examples, then the input canaries (index n + j).
        self.pool_x = torch.from_numpy(np.concatenate(xs)).to(self.device)
        self.pool_y = torch.from_numpy(np.concatenate(ys)).to(self.device)
        self.x_test = None if x_test is None else torch.from_numpy(np.asarray(x_test, np.float32)).to(self.device)
        self.y_test = None if y_test is None else torch.from_numpy(np.asarray(y_test, np.int64)).to(self.device)

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

        base, params = stacked_models(self.model_fn, seeds, self.device)
        names = list(params)
        shapes = [params[n].shape[1:] for n in names]
        sizes = [s.numel() for s in shapes]
        grads_fn = per_sample_grad_fn(base)
        buf = {n: torch.zeros_like(p) for n, p in params.items()}
        samplers = [PoissonSampler(derive_seed(s, 1), self.n, self.config.sample_rate, m) for s in seeds]
        gradient_canaries = self.canaries is not None and self.canaries.gradient
        scores = torch.zeros(K, m, dtype=torch.float64, device=self.device)
        if gradient_canaries:
            coords = torch.as_tensor(self.canaries.coordinates, dtype=torch.long, device=self.device)
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            # (parameter index, flat index inside it) of every canary coordinate.
            canary_param = np.searchsorted(offsets, self.canaries.coordinates, side="right") - 1
            canary_local = self.canaries.coordinates - offsets[canary_param]

        T = self.config.steps
        with _GlobalGenerators(self.device) as gens:
            for step in range(T):
                epoch = epoch_of(step, self.config)
                batches, sampled = [], []
                for k, sampler in enumerate(samplers):
                    idx, coins = sampler.draw()
                    chosen = np.flatnonzero(coins & membership[k]) if m else np.zeros(0, np.int64)
                    if m and not gradient_canaries:
                        idx = np.concatenate([idx, self.n + chosen])
                        chosen = np.zeros(0, np.int64)
                    batches.append(idx)
                    sampled.append(chosen)  # gradient canaries to insert
                # Model k's rows: its B_k examples, then one slot per gradient canary it
                # sampled (computed as padding, then overwritten), then padding.
                sizes_k = [len(b) + len(c) for b, c in zip(batches, sampled)]
                width = max(sizes_k)
                if width:
                    table = np.zeros((K, width), dtype=np.int64)  # padding rows repeat example 0
                    for k, b in enumerate(batches):
                        table[k, : len(b)] = b
                    rows = self._to_device(table)
                    g = grads_fn(params, self.pool_x[rows], self.pool_y[rows])
                    per_sample = [g[n] for n in names]
                    if gradient_canaries:
                        self._insert_gradient_canaries(per_sample, batches, sampled, canary_param, canary_local)
                else:
                    per_sample = [torch.zeros((K, 0, *s), device=self.device) for s in shapes]

                if batched:
                    mask = torch.arange(width, device=self.device)[None, :] < self._to_device(np.asarray(sizes_k))[:, None]
                    gens.seed(derive_seed(seeds[0], 3, step))
                    update = _call_batched(mechanisms, per_sample, mask, step, epoch, shapes)
                else:
                    outs = []
                    for k, mech in enumerate(mechanisms):
                        rows_k = [p[k, : sizes_k[k]] for p in per_sample]
                        gens.seed(derive_seed(seeds[k], 2, step))
                        outs.append(_call(mech, rows_k, step, epoch, shapes))
                    update = [torch.stack([o[i] for o in outs]) for i in range(len(names))]

                if gradient_canaries:
                    flat = torch.cat([u.reshape(K, -1) for u in update], dim=1)
                    scores += flat[:, coords].to(torch.float64)
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
            src = _source(mechanisms if batched else mechanisms[0])
            raise InputError(f"{src}: training produced non-finite parameters or canary scores (NaN or inf in the mechanism's output?)")
        return TrainResult(params, scores_np, accuracy, T, time.perf_counter() - start)

    # ----- helpers -----------------------------------------------------
    def _insert_gradient_canaries(
        self, per_sample: list[torch.Tensor], batches: list[np.ndarray], sampled: list[np.ndarray],
        canary_param: np.ndarray, canary_local: np.ndarray,
    ) -> None:
        """Overwrite each model's canary slots with Dirac rows: ``norm`` at the canary's coordinate, 0 elsewhere."""
        model, slot, which = [], [], []
        for k, (b, chosen) in enumerate(zip(batches, sampled)):
            model.extend([k] * len(chosen))
            slot.extend(range(len(b), len(b) + len(chosen)))
            which.extend(chosen)
        if not which:
            return
        which = np.asarray(which)
        mi = self._to_device(np.asarray(model, dtype=np.int64))
        si = self._to_device(np.asarray(slot, dtype=np.int64))
        with torch.no_grad():
            for i, g in enumerate(per_sample):
                if not g.is_contiguous():
                    per_sample[i] = g = g.contiguous()
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

    def _rows_per_pass(self, K: int) -> int:
        return max(1, EVAL_ROWS // K)

    def _canary_scores(self, base: nn.Module, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Minus the cross-entropy loss of every model on every input canary: ``[K, m]``."""
        fwd = forward_fn(base)
        x, y = self.pool_x[self.n :], self.pool_y[self.n :]
        K = next(iter(params.values())).shape[0]
        step = self._rows_per_pass(K)
        parts = []
        with torch.no_grad():
            for i in range(0, len(x), step):
                logits = fwd(params, x[i : i + step])  # [K, n, classes]
                target = y[i : i + step].expand(K, -1)
                parts.append(-F.cross_entropy(logits.transpose(1, 2), target, reduction="none"))
        return torch.cat(parts, dim=1)

    def accuracy(self, base: nn.Module, params: dict[str, torch.Tensor]) -> np.ndarray:
        """Test accuracy of each model (NaN without a test set)."""
        K = next(iter(params.values())).shape[0]
        if self.x_test is None or len(self.x_test) == 0:
            return np.full(K, np.nan)
        fwd = forward_fn(base)
        step = self._rows_per_pass(K)
        correct = torch.zeros(K, dtype=torch.long, device=self.device)
        with torch.no_grad():
            for i in range(0, len(self.x_test), step):
                pred = fwd(params, self.x_test[i : i + step]).argmax(-1)
                correct += (pred == self.y_test[i : i + step]).sum(1)
        return correct.cpu().numpy() / len(self.x_test)


def _call(mech: Any, rows: list[torch.Tensor], step: int, epoch: int, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    try:
        out = mech.clip_and_noise(rows, step, epoch)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{_source(mech)}: clip_and_noise(B={rows[0].shape[0]}, step={step}, epoch={epoch}) "
            f"raised {type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from exc
    return _check_output(mech, out, shapes, step, rows[0].device)


def _call_batched(mech: Any, per_sample: list[torch.Tensor], mask: torch.Tensor, step: int, epoch: int,
                  shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    try:
        out = mech.clip_and_noise_batched(per_sample, mask, step, epoch)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{_source(mech)}: clip_and_noise_batched(step={step}, epoch={epoch}) raised "
            f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from exc
    return _check_output(mech, out, shapes, step, mask.device, lead=(mask.shape[0],))


def _device(device: str | torch.device) -> torch.device:
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

