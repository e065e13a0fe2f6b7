"""Canaries for training audits, the threat model each is scored under, and who includes them.

Three kinds of canary:

* ``dirac`` (white-box, Nasr et al. 2021/2023, Steinke et al. 2023): a
  gradient canary. Whenever it is sampled, a per-example gradient that is
  ``norm`` at one parameter coordinate and zero elsewhere is added to the
  batch the mechanism sees. Score: the sum over all steps of the mechanism's
  output at that coordinate (its projection on the canary direction), which
  an adversary who sees every update can compute. ``norm`` defaults to ten
  times the clip norm: any correct mechanism clips it to its sensitivity, and
  the margin exposes missing or wrong clipping.
* ``mislabeled`` (black-box): a training image with a wrong label (drawn from
  the training set, which then no longer holds it). Score: minus the final
  model's cross-entropy loss on it.
* ``ood`` (black-box): an out-of-distribution image (uniform noise) with a
  random label. Same score.

Gradient canaries are placed on *quiet* coordinates: the coordinates whose
mean absolute per-example gradient, at a reference initialisation on a sample
of training data, is among the lowest tenth (or the lowest m). The other
examples' gradients at such a coordinate are small, so the canary's
contribution stands out against the noise alone. Every other coordinate
measures each update's noise scale, the second white-box score: the root mean
square of the change of the update from the previous step (differencing
removes most of the slowly varying signal, and the EMA that some mechanisms
add to their outputs) summed in logarithm over steps. It moves with anything
that makes the noise depend on the data: a realised batch size in the
divisor, a clip norm that follows un-noised statistics.
The choices depend on the audit seed and the data, never on which models
include the canary, so they do not affect the validity of the bounds.

Membership: in a multi-run audit model k includes its one canary with a fair
coin drawn from its seed; in a one-run audit each of the m canaries is
included in model k's data with an independent fair coin. The estimators'
guarantees assume exactly these coins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from dpaudit import validation
from dpaudit.data.datasets import Dataset
from dpaudit.errors import InputError
from dpaudit.seeding import derive_seed
from dpaudit.training.choices import CANARY_KINDS, THREAT_MODEL_OF, THREAT_MODELS
from dpaudit.training.trainer import TrainingCanaries, per_sample_grad_fn, stacked_models

#: Gradient canaries' norm as a multiple of the clip norm (see the module docstring).
DIRAC_NORM_FACTOR = 10.0
#: Fraction of the coordinates, the quietest, that gradient canaries are drawn from.
QUIET_FRACTION = 0.1
#: Training examples used to find the quiet coordinates.
QUIET_SAMPLE = 256

# Purposes of derived seeds (second argument of derive_seed).
_SEED_DESIGN, _SEED_MEMBERSHIP = 11, 12


def check_kind(canary_kind: str, threat_model: str | None) -> tuple[str, str]:
    """(kind, threat model), checked; the threat model defaults to the kind's."""
    kind = str(canary_kind).strip().lower()
    if kind not in CANARY_KINDS:
        raise InputError(f"unknown canary kind {canary_kind!r}; choose from {', '.join(CANARY_KINDS)}")
    if threat_model is None:
        return kind, THREAT_MODEL_OF[kind]
    tm = str(threat_model).strip().lower()
    if tm not in THREAT_MODELS:
        raise InputError(f"unknown threat model {threat_model!r}; choose from {', '.join(THREAT_MODELS)}")
    if tm != THREAT_MODEL_OF[kind]:
        raise InputError(
            f"{kind} canaries are scored {THREAT_MODEL_OF[kind]} only "
            "(dirac: white-box, every update seen; mislabeled/ood: black-box, final model's loss)"
        )
    return kind, tm


@dataclass(frozen=True)
class CanaryDesign:
    """The canaries of one audit and the training examples every model keeps.

    ``base`` indexes the training examples every model trains on (all of them,
    except mislabeled canaries' source images).
    """

    kind: str
    threat_model: str
    canaries: TrainingCanaries
    base: np.ndarray

    @property
    def m(self) -> int:
        return self.canaries.m

    def describe(self) -> str:
        if self.canaries.gradient:
            return (
                f"{self.m} Dirac gradient canar{'y' if self.m == 1 else 'ies'} of norm "
                f"{self.canaries.norm:g} ({self.threat_model}: sum over steps of the mechanism's output "
                "at the canary coordinate)"
            )
        what = "mislabeled training image" if self.kind == "mislabeled" else "uniform-noise image with a random label"
        return f"{self.m} {what}{'s' if self.m != 1 else ''} ({self.threat_model}: minus the final model's loss)"


def quiet_coordinates(
    model_fn: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, m: int, seed: int,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(m distinct flat parameter coordinates drawn at random among the quietest, every other
    coordinate), both sorted (see the module docstring)."""
    dev = torch.device(device)
    base, params = stacked_models(model_fn, [derive_seed(seed, _SEED_DESIGN, 1)], dev)
    total = sum(p[0].numel() for p in params.values())
    if m > total:
        raise InputError(f"{m} gradient canaries need {m} distinct coordinates; the model has {total} parameters")
    rng = np.random.default_rng(derive_seed(seed, _SEED_DESIGN, 2))
    sample = rng.choice(len(x), size=min(QUIET_SAMPLE, len(x)), replace=False)
    xs = torch.from_numpy(np.asarray(x[sample], np.float32)).to(dev)[None]
    ys = torch.from_numpy(np.asarray(y[sample], np.int64)).to(dev)[None]
    with torch.no_grad():
        g = per_sample_grad_fn(base)(params, xs, ys)
    loudness = torch.cat([v[0].abs().mean(0).reshape(-1) for v in g.values()]).cpu().numpy()
    pool_size = max(m, math.ceil(QUIET_FRACTION * total))
    # Ties (e.g. many exactly-zero coordinates) are broken at random, not by position.
    order = np.lexsort((rng.random(total), loudness))
    chosen = np.sort(rng.choice(order[:pool_size], size=m, replace=False)).astype(np.int64)
    return chosen, np.setdiff1d(np.arange(total), chosen).astype(np.int64)


def make_canaries(
    kind: str,
    m: int,
    dataset: Dataset,
    model_fn: Callable[[], nn.Module],
    *,
    seed: int,
    threat_model: str | None = None,
    norm: float | None = None,
    max_grad_norm: float = 1.0,
    device: torch.device | str = "cpu",
) -> CanaryDesign:
    """The m canaries of an audit with seed ``seed``.

    Args:
        kind: "dirac", "mislabeled" or "ood".
        m: Number of canaries (1 in a multi-run audit).
        dataset: Training data (mislabeled canaries are taken from it).
        model_fn: The model (gradient canaries need its parameter layout).
        seed: The audit seed; the canaries follow from it.
        threat_model: Checked against the kind (see :func:`check_kind`).
        norm: Gradient canaries' norm (default ``DIRAC_NORM_FACTOR × max_grad_norm``).
        max_grad_norm: The run's clip norm C.
    """
    kind, tm = check_kind(kind, threat_model)
    m = validation.positive_int("canaries", m)
    n = len(dataset.x_train)
    rng = np.random.default_rng(derive_seed(seed, _SEED_DESIGN, 3))
    if kind == "dirac":
        c_norm = DIRAC_NORM_FACTOR * max_grad_norm if norm is None else validation.positive("canary norm", norm)
        coords, rest = quiet_coordinates(model_fn, dataset.x_train, dataset.y_train, m, seed, device)
        canaries = TrainingCanaries(coordinates=coords, norm=c_norm, scale_coordinates=rest)
        return CanaryDesign(kind, tm, canaries, np.arange(n))
    if kind == "mislabeled":
        if m >= n:
            raise InputError(f"{m} mislabeled canaries need more than {m} training examples; the dataset has {n}")
        source = np.sort(rng.choice(n, size=m, replace=False))
        shift = rng.integers(1, dataset.classes, size=m)
        labels = (dataset.y_train[source] + shift) % dataset.classes
        base = np.setdiff1d(np.arange(n), source)
        return CanaryDesign(kind, tm, TrainingCanaries(x=dataset.x_train[source].copy(), y=labels.astype(np.int64)), base)
    x = rng.random((m, *dataset.input_shape), dtype=np.float32)
    labels = rng.integers(0, dataset.classes, size=m)
    return CanaryDesign(kind, tm, TrainingCanaries(x=x, y=labels.astype(np.int64)), np.arange(n))


def model_seed(seed: int, model_id: int) -> int:
    """The seed of model ``model_id`` in the audit with seed ``seed`` (init, batches, noise)."""
    return derive_seed(seed, 13, model_id)


def membership(seed: int, model_id: int, m: int) -> np.ndarray:
    """Which of the m canaries model ``model_id`` includes: independent fair coins from its seed."""
    rng = np.random.default_rng(derive_seed(model_seed(seed, model_id), _SEED_MEMBERSHIP))
    return rng.random(m) < 0.5
