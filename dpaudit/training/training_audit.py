"""The training-level audit: train the mechanism with canaries, many models at once, and bound ε.

Two designs (see :mod:`dpaudit.training.canaries` for the canaries):

* **multi-run** (``runs=N``): 2N models, each of which includes the one canary
  with a fair coin (so about N per side). Each model gives one score per
  statistic; the in- and out-scores go to the estimators of
  :mod:`dpaudit.audit.estimators` (Clopper–Pearson and Gaussian-DP, Jagielski
  et al. 2020 / Nasr et al. 2023, plus the one-run estimators reading each
  model as one canary). White-box (Dirac) canaries give two statistics:
  ``projection``, the sum over steps of the update at the canary's coordinate,
  and ``scale``, minus the sum over steps of the log noise scale of the update
  (:mod:`dpaudit.training.canaries`); black-box canaries give ``loss``, minus
  the final model's loss on the canary.
* **one-run** (``canaries=M``, Steinke, Nasr and Jagielski 2023): M canaries,
  each included with its own fair coin, in one model (or ``runs``
  independent such models, whose canaries are pooled: every coin touches one
  model only, so the pooled game is still the one-run game). Scores go to
  :func:`~dpaudit.audit.estimators.one_run` and
  :func:`~dpaudit.audit.estimators.one_run_fdp` (Mahloujifar et al. 2025).

The claim is the PLD ε (add/remove, Poisson) of the schedule the mechanism
*declares* (``get_effective_sigma`` at every step of the run), at the run's
δ. The verdict is "violated" iff an estimator that needs no assumption
(``valid_for_verdict``) certifies more than that. The confidence is split by
a union bound: each of S statistics gets α/S, within which the two estimators
that can back the verdict (Clopper–Pearson, one-run) get half each, so the
verdict holds at 1 − α = ``confidence``; Gaussian-DP and one-run f-DP (which
assume a Gaussian trade-off curve and never decide the verdict) use the
statistic's whole α/S.

Models are trained in chunks of K = ``models_at_once`` (models ``[cK, (c+1)K)``,
:mod:`dpaudit.training.backends`), here or as Ray tasks. After every chunk the
models' records are added to the results file (if any), so an interrupted
audit resumes where it stopped; every model's numbers follow from (seed,
model id, chunk), so the resumed audit gives the same result as an
uninterrupted one. When the mechanism runs under ``vmap`` (or is batched) a
model's noise depends on its chunk, so the results file keeps K and a resumed
audit uses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from dpaudit import validation
from dpaudit.audit.estimators import (
    ESTIMATOR_NAMES, EstimateResult, clopper_pearson, gaussian_dp, gaussian_dp_parametric, one_run, one_run_fdp,
)
from dpaudit.audit.mechanism_audit import CLAIM_ACCOUNTANT, _quiet_absl, claimed_epsilon, declared_schedule
from dpaudit.calibration import calibrate_sigma
from dpaudit.data.datasets import Dataset, load_dataset
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.progress import Progress, note as progress_note
from dpaudit.run_config import RunConfig
from dpaudit.seeding import derive_seed
from dpaudit.training import models as model_zoo
from dpaudit.training.backends import ChunkJob, chunks_of, make_backend
from dpaudit.training.canaries import CanaryDesign, make_canaries
from dpaudit.training.choices import BACKENDS, VECTORIZE
from dpaudit.training.results_store import TrainingResultsFile
from dpaudit.training.trainer import DEFAULT_LR, DEFAULT_MOMENTUM, device_of, is_batched, torch_threads

#: Per-example gradient entries (models × expected batch × parameters) of one chunk on a CPU when K
#: is not given: K = 8 for the 26,010-parameter CNN at batch 256, within a few percent of the fastest K
#: of bench/training.py on the 2-core machine (16, at twice the memory; docs/benchmarks.md). Small models get more models at once (their steps are
#: dominated by fixed costs), never more than CPU_MAX_MODELS.
CPU_GRADIENT_ENTRIES = 8 * 256 * 26010
CPU_MAX_MODELS = 256
#: On a CPU, models whose per-example gradients of one expected batch (batch × parameters) are smaller
#: than this train with one torch thread when not told otherwise: their operations are too small for a
#: parallel region to pay off, and on a shared machine idle-spinning threads made them 4-6x slower
#: (measured on the 2-core machine at load 5-7: the digits MLP at batch 16, 2 threads against 1).
CPU_ONE_THREAD_BELOW = 1 << 20
#: Most models trained together on a GPU when not told (the H100 anchors: no gain past 128).
GPU_MODELS_AT_ONCE = 128
#: Share of free GPU memory (of host memory on a CPU) that one chunk may plan to use.
MEMORY_SHARE = 0.4
#: Version of the audit's numbers (part of the results-file fingerprint).
AUDIT_VERSION = 2
MULTI_RUN, ONE_RUN = "multi-run", "one-run"
VERDICT_ESTIMATORS = ("clopper_pearson", "one_run")
#: Score statistics: white-box projection and noise scale, black-box loss.
PROJECTION, SCALE, LOSS = "projection", "scale", "loss"
_SEED_BATCHES, _SEED_INIT = 21, 22


@dataclass(frozen=True)
class TrainingAuditResult:
    """The outcome of :func:`audit_training`.

    ``statistics[s][e]`` is estimator e's bound on statistic s's scores;
    ``estimates[e]`` is, for each estimator, its largest bound over the
    statistics (the JSON's ``estimators``), and ``statistic_of[e]`` says which.
    ``violation`` is True iff an estimator with ``valid_for_verdict`` has
    ``epsilon_lb`` above ``claimed_epsilon``; the verdict's confidence is
    ``confidence``. ``in_scores``/``out_scores`` are the scores of the
    statistic behind the strongest verdict-valid bound; ``test_accuracy`` has
    one entry per model. ``calls`` is how the mechanism was called ("vmap",
    "loop", "batched", or "vmap, loop" if both happened); ``notes`` say what
    else the user should know.
    """

    mechanism: str
    config: RunConfig
    dataset: str
    mode: str
    canary_kind: str
    threat_model: str
    canary_description: str
    runs: int
    canaries: int
    claimed_epsilon: float
    confidence: float
    statistics: dict[str, dict[str, EstimateResult]]
    violation: bool
    in_scores: np.ndarray = field(repr=False)
    out_scores: np.ndarray = field(repr=False)
    test_accuracy: np.ndarray = field(repr=False)
    models: int
    models_at_once: int
    seed: int
    lr: float
    momentum: float
    canary_norm: float | None
    calls: str
    notes: tuple[str, ...]
    device: str = field(compare=False)
    backend: str = field(default="local", compare=False)
    results_path: str | None = field(default=None, compare=False)
    models_trained: int = field(default=0, compare=False)
    seconds: float = field(default=0.0, compare=False)
    models_per_second: float = field(default=math.nan, compare=False)

    def __eq__(self, other: object) -> bool:  # arrays: compare by value
        if not isinstance(other, TrainingAuditResult):
            return NotImplemented
        for f in dataclasses.fields(self):
            if not f.compare:
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray):
                if not np.array_equal(a, b, equal_nan=True):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    @property
    def estimates(self) -> dict[str, EstimateResult]:
        return {e: self.statistics[s][e] for e, s in self.statistic_of.items()}

    @property
    def statistic_of(self) -> dict[str, str]:
        best: dict[str, str] = {}
        for s, row in self.statistics.items():
            for e, est in row.items():
                if e not in best or est.epsilon_lb > self.statistics[best[e]][e].epsilon_lb:
                    best[e] = s
        return best

    @property
    def accuracy(self) -> dict[str, float]:
        acc = self.test_accuracy[np.isfinite(self.test_accuracy)]
        if acc.size == 0:
            return {"mean": math.nan, "min": math.nan, "max": math.nan}
        return {"mean": float(acc.mean()), "min": float(acc.min()), "max": float(acc.max())}

    @property
    def model_epochs_per_second(self) -> float:
        return self.models_per_second * self.config.epochs

    def strongest_with_statistic(self) -> tuple[str, EstimateResult] | None:
        """(statistic, estimate): the verdict-valid estimate with the largest ε lower bound."""
        valid = [(s, e) for s, row in self.statistics.items() for e in row.values() if e.valid_for_verdict]
        return max(valid, key=lambda se: se[1].epsilon_lb) if valid else None

    def strongest(self) -> EstimateResult | None:
        """The verdict-valid estimate with the largest ε lower bound."""
        found = self.strongest_with_statistic()
        return None if found is None else found[1]

    def summary(self) -> str:
        found = self.strongest_with_statistic()
        if found is None:
            return "no estimator valid for a verdict"
        stat, best = found
        head = "VIOLATION" if self.violation else f"no violation found at confidence {self.confidence:g}"
        rel = ">" if self.violation else "<="
        return (
            f"{head}: {best.name} eps_lb {best.epsilon_lb:.3f} {rel} claimed {self.claimed_epsilon:.3f} "
            f"({self.mode}, {stat} statistic, {self.canary_description}; ceiling of this design {best.ceiling:.3f})"
        )

    def table(self) -> pd.DataFrame:
        """One row per (statistic, estimator)."""
        return pd.DataFrame([
            {"statistic": s, "estimator": e.name, "eps_lb": e.epsilon_lb, "ceiling": e.ceiling,
             "claimed_eps": self.claimed_epsilon, "confidence": e.confidence,
             "valid": "yes" if e.valid_for_verdict else "no", "label": e.label}
            for s, row in self.statistics.items() for e in row.values()
        ])

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form (same keys as the gradient-space audit, plus accuracy and timing)."""

        def entry(s: str, e: EstimateResult) -> dict[str, Any]:
            return {
                "epsilon_lb": e.epsilon_lb, "ceiling": e.ceiling, "claimed_epsilon": self.claimed_epsilon,
                "valid_for_verdict": e.valid_for_verdict, "assumption": e.assumption, "label": e.label,
                "confidence": e.confidence, "statistic": s,
            }

        estimators: dict[str, Any] = {}
        best = self.statistic_of
        for name in ESTIMATOR_NAMES:
            if name in best:
                estimators[name] = entry(best[name], self.statistics[best[name]][name])
            else:
                estimators[name] = {
                    "epsilon_lb": None, "ceiling": None, "valid_for_verdict": False, "assumption": None,
                    "confidence": None, "statistic": None, "note": f"not computed in {self.mode} mode",
                }
        return {
            "level": "training",
            "mechanism": self.mechanism,
            "claimed_epsilon": self.claimed_epsilon,
            "delta": self.config.delta,
            "confidence": self.confidence,
            "violation": self.violation,
            "summary": self.summary(),
            "estimators": estimators,
            "statistics": {s: {e.name: entry(s, e) for e in row.values()} for s, row in self.statistics.items()},
            "notes": list(self.notes),
            "test_accuracy": {**self.accuracy, "models": int(self.test_accuracy.size)},
            "seconds": self.seconds,
            "models_per_second": self.models_per_second,
            "model_epochs_per_second": self.model_epochs_per_second,
            "config": {
                **self.config.to_dict(),
                "dataset": self.dataset,
                "mode": self.mode,
                "runs": self.runs,
                "canaries": self.canaries,
                "canary_kind": self.canary_kind,
                "threat_model": self.threat_model,
                "canary": self.canary_description,
                "canary_norm": self.canary_norm,
                "models": self.models,
                "models_at_once": self.models_at_once,
                "mechanism_calls": self.calls,
                "in_observations": int(self.in_scores.size),
                "out_observations": int(self.out_scores.size),
                "device": self.device,
                "backend": self.backend,
                "seed": self.seed,
                "lr": self.lr,
                "momentum": self.momentum,
                "claim_accountant": CLAIM_ACCOUNTANT,
                "results_path": self.results_path,
            },
        }


# ----------------------------------------------------------------------------
# Building blocks


def training_config(
    dataset: Dataset,
    *,
    batch_size: int,
    epochs: int,
    epsilon: float,
    delta: float,
    max_grad_norm: float = 1.0,
    noise_multiplier: float | None = None,
    accountant: str = "prv",
    model_fn: Callable[[], nn.Module] | None = None,
) -> RunConfig:
    """The run a training audit trains: N = the dataset's training size, σ calibrated for (ε, δ) unless given."""
    n = len(dataset.x_train)
    model = (model_fn or _default_model_fn(dataset))()
    sigma = noise_multiplier
    if sigma is None:
        steps = RunConfig(n, batch_size, epochs, epsilon, delta, 1.0).steps
        with _quiet_absl():
            sigma = calibrate_sigma(epsilon, delta, batch_size / n, steps, accountant).sigma
    return RunConfig(
        dataset_size=n, batch_size=batch_size, epochs=epochs, epsilon=epsilon, delta=delta,
        noise_multiplier=sigma, max_grad_norm=max_grad_norm, n_params=model_zoo.n_params(model),
    )


def _default_model_fn(dataset: Dataset) -> Callable[[], nn.Module]:
    model_zoo.model_for(dataset.input_shape)  # InputError for an unknown shape
    return model_zoo.MODELS[tuple(dataset.input_shape)]


def default_models_at_once(device: str | torch.device, config: RunConfig, input_shape: tuple[int, ...],
                           total: int) -> int:
    """K for ``device`` when the user does not give one (a rule, not a timing, so a resumed audit gets the same K).

    CPU: the largest power of two whose per-example gradients (K × expected batch ×
    parameters) stay within :data:`CPU_GRADIENT_ENTRIES`, at most :data:`CPU_MAX_MODELS`.
    CUDA: the largest power of two up to
    :data:`GPU_MODELS_AT_ONCE` whose planned memory (per-example gradients and
    activations, a conservative multiple of the parameters per example) fits in
    :data:`MEMORY_SHARE` of the free memory. Never more than ``total`` models.
    """
    dev = device_of(device)
    b_max = config.batch_size + 4 * math.sqrt(config.batch_size) + 8
    per_model = b_max * 4 * 4 * (config.n_params + 4 * int(np.prod(input_shape)))
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        k = 1
        while 2 * k <= GPU_MODELS_AT_ONCE and 2 * k * per_model <= MEMORY_SHARE * free:
            k *= 2
    else:
        k = 1
        while 2 * k <= CPU_MAX_MODELS and 2 * k * config.batch_size * config.n_params <= CPU_GRADIENT_ENTRIES:
            k *= 2
    return max(1, min(k, total))


def default_threads(device: torch.device, config: RunConfig) -> int | None:
    """Torch threads for training on ``device`` when not told (None: torch's own default)."""
    if device.type != "cpu":
        return None
    return 1 if config.batch_size * config.n_params < CPU_ONE_THREAD_BELOW else None


def _model_name(model_fn: Callable[[], nn.Module]) -> str:
    return getattr(model_fn, "__qualname__", None) or type(model_fn).__name__


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _mechanism_identity(factory: MechanismFactory) -> dict[str, str]:
    try:
        source = hashlib.sha256(factory.path.read_bytes()).hexdigest()
    except OSError:
        source = "unreadable"
    return {"class": factory.cls.__name__, "sha256": source}


def audit_fingerprint(
    factory: MechanismFactory, config: RunConfig, dataset: Dataset, design: CanaryDesign, *,
    mode: str, seed: int, lr: float, momentum: float, model_fn: Callable[[], nn.Module], vectorize: str,
) -> str:
    """What every model's numbers depend on. Not the number of runs (an audit can be extended), the device,
    the backend, nor the chunk size (kept in the results file's header, see :func:`audit_training`)."""
    payload = {
        "version": AUDIT_VERSION,
        "mechanism": _mechanism_identity(factory),
        "config": config.to_dict(),
        "dataset": {"name": dataset.name, "train": _digest(dataset.x_train, dataset.y_train)},
        "mode": mode,
        "canaries": {
            "kind": design.kind, "threat_model": design.threat_model, "m": design.m,
            "norm": design.canaries.norm if design.canaries.gradient else None,
        },
        "seed": int(seed), "lr": float(lr), "momentum": float(momentum),
        "model": _model_name(model_fn), "vectorize": vectorize,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def default_results_path(factory: MechanismFactory, fingerprint: str, directory: str | Path = "dpaudit-results") -> Path:
    """``directory/<file stem>-<class>-training-<fingerprint>.jsonl``: rerunning the same audit resumes it."""
    return Path(directory) / f"{factory.path.stem}-{factory.cls.__name__}-training-{fingerprint[:12]}.jsonl"


def _load_factory(spec: MechanismFactory | str | Path, config: RunConfig) -> MechanismFactory:
    if isinstance(spec, MechanismFactory):
        factory = spec if spec.config == config else MechanismFactory(spec.spec, spec.cls, config)
        factory.new()
        return factory
    if isinstance(spec, (str, Path)):
        return MechanismFactory.load(str(spec), config)
    raise InputError(f"mechanism must be a spec PATH.py[:Class] or a MechanismFactory, got {type(spec).__name__}")


def _statistics(mode: str, records: list[dict[str, Any]], gradient: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(in-scores, out-scores) of every statistic the design has."""
    ins, outs = [], []
    for rec in records:
        scores = np.asarray(rec["scores"], dtype=float)
        mem = np.asarray(rec["membership"], dtype=bool)
        ins.append(scores[mem])
        outs.append(scores[~mem])
    stats = {PROJECTION if gradient else LOSS: (np.concatenate(ins), np.concatenate(outs))}
    if mode == MULTI_RUN and gradient and all(rec.get("log_scale") is not None for rec in records):
        scale = np.array([-rec["log_scale"] for rec in records], dtype=float)
        mem = np.array([bool(rec["membership"][0]) for rec in records])
        stats[SCALE] = (scale[mem], scale[~mem])
    return stats


def _estimate(mode: str, stats: dict[str, tuple[np.ndarray, np.ndarray]], delta: float,
              confidence: float) -> dict[str, dict[str, EstimateResult]]:
    """Every estimator on every statistic, α split as the module docstring says."""
    pair_alpha = (1 - confidence) / len(stats)
    out: dict[str, dict[str, EstimateResult]] = {}
    for name, (ins, outs) in stats.items():
        if mode == ONE_RUN:
            # Only one_run backs the verdict (one_run_fdp refutes a stronger, Gaussian claim;
            # gdp_parametric assumes Gaussian canary scores, as Agrawal et al. 2026 do).
            out[name] = {
                "one_run": one_run(ins, outs, delta=delta, confidence=1 - pair_alpha),
                "gdp_parametric": gaussian_dp_parametric(ins, outs, delta=delta, confidence=1 - pair_alpha),
                "one_run_fdp": one_run_fdp(ins, outs, delta=delta, confidence=1 - pair_alpha),
            }
            continue
        verdict = 1 - pair_alpha / len(VERDICT_ESTIMATORS)
        out[name] = {
            "clopper_pearson": clopper_pearson(ins, outs, delta=delta, confidence=verdict),
            "gdp": gaussian_dp(ins, outs, delta=delta, confidence=1 - pair_alpha),
            "gdp_parametric": gaussian_dp_parametric(ins, outs, delta=delta, confidence=1 - pair_alpha),
            "one_run": one_run(ins, outs, delta=delta, confidence=verdict),
            "one_run_fdp": one_run_fdp(ins, outs, delta=delta, confidence=1 - pair_alpha),
        }
        for e in out[name].values():
            if e.valid_for_verdict != (e.name in VERDICT_ESTIMATORS):  # pragma: no cover - API drift guard
                raise RuntimeError(f"estimator {e.name} changed its validity; update VERDICT_ESTIMATORS")
    return out


def _notes(records: list[dict[str, Any]], steps: int) -> tuple[str, tuple[str, ...]]:
    """(how the mechanism was called, the notes of every chunk, once each)."""
    calls = sorted({r.get("calls", "loop") for r in records})
    seen: list[str] = []
    for r in records:
        for line in r.get("notes", ()):
            if line not in seen:
                seen.append(line)
    empty = sum(int(r.get("empty_batch_steps", 0)) for r in records)
    if empty:
        seen.append(f"{empty} of {len(records) * steps} model-steps had an empty batch on which the mechanism raised")
    return ", ".join(calls), tuple(seen)


# ----------------------------------------------------------------------------
# The audit


def audit_training(
    spec: MechanismFactory | str | Path,
    config: RunConfig,
    dataset: Dataset | str,
    *,
    runs: int | None = None,
    canaries: int | None = None,
    canary_kind: str = "dirac",
    threat_model: str | None = None,
    models_at_once: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    confidence: float = 0.95,
    results_path: str | Path | None = None,
    progress: bool = False,
    model_fn: Callable[[], nn.Module] | None = None,
    lr: float = DEFAULT_LR,
    momentum: float = DEFAULT_MOMENTUM,
    canary_norm: float | None = None,
    vectorize: str = "auto",
    backend: str = "local",
    ray_address: str | None = None,
    cpus_per_task: int = 1,
    threads: int | None = None,
) -> TrainingAuditResult:
    """Train the mechanism with canaries and bound ε empirically (see the module docstring).

    Args:
        spec: The mechanism, ``PATH.py[:Class]`` or a loaded factory.
        config: The run (q = batch_size/dataset_size, steps, σ handed to the
            mechanism, δ); :func:`training_config` builds one for a dataset.
        dataset: A :class:`Dataset` or a spec for :func:`dpaudit.data.load_dataset`.
        runs: Multi-run mode: models per side (2·runs models, each with the
            canary by a fair coin). With ``canaries``: the number of
            independent one-run models (default 1).
        canaries: One-run mode: canaries per model.
        canary_kind: "dirac" (white-box), "mislabeled" or "ood" (black-box).
        threat_model: "white-box" or "black-box"; defaults to the kind's.
        models_at_once: K, models trained together (one chunk); None: the
            results file's K when resuming, else :func:`default_models_at_once`.
        device: "cpu", "cuda", "cuda:1", ... (where the chunks train, on every worker).
        seed: Everything random follows from it.
        confidence: 1 − α for the verdict.
        results_path: JSONL file to append each chunk to and resume from; an
            existing directory gets a file named after the mechanism and the
            audit's fingerprint (:func:`default_results_path`).
        progress: Show a progress bar (models, models/s, ETA).
        model_fn: The model (default: ``dpaudit.training.models.model_for`` of the input shape).
        lr, momentum: SGD with momentum on the mechanism's output.
        canary_norm: Gradient canaries' norm (default 10 × max_grad_norm).
        vectorize: "auto" (call the mechanism under ``vmap`` when it allows) or "loop".
        backend: "local" or "ray" (:mod:`dpaudit.training.backends`).
        ray_address: Address of a running Ray cluster (None: start or join a local one).
        cpus_per_task: CPUs (and torch threads) per Ray task on a CPU device.
        threads: Torch threads for local training on a CPU (None: :func:`default_threads`).
    """
    start = time.perf_counter()
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose {' or '.join(BACKENDS)}")
    if vectorize not in VECTORIZE:
        raise InputError(f"vectorize must be one of {', '.join(VECTORIZE)}, got {vectorize!r}")
    dev = device_of(device)  # before any work: no CUDA is a one-line error
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(str(dataset))
    model_fn = model_fn or _default_model_fn(ds)
    if config.n_params == 0:
        config = dataclasses.replace(config, n_params=model_zoo.n_params(model_fn()))
    factory = _load_factory(spec, config)
    confidence = validation.open_unit("confidence", confidence)
    if models_at_once is not None:
        models_at_once = validation.positive_int("models_at_once", models_at_once)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    if canaries is None:
        if runs is None:
            raise InputError("give --runs N (multi-run audit: N models per side) or --canaries M (one-run audit)")
        mode, m, per_side = MULTI_RUN, 1, validation.positive_int("runs", runs)
        total = 2 * per_side
    else:
        mode, m = ONE_RUN, validation.positive_int("canaries", canaries)
        per_side = 0
        total = 1 if runs is None else validation.positive_int("runs", runs)
    design = make_canaries(
        canary_kind, m, ds, model_fn, seed=seed, threat_model=threat_model, norm=canary_norm,
        max_grad_norm=config.max_grad_norm, device=dev,
    )
    claim = claimed_epsilon(declared_schedule(factory, config), config.delta)
    fingerprint = audit_fingerprint(
        factory, config, ds, design, mode=mode, seed=seed, lr=lr, momentum=momentum, model_fn=model_fn,
        vectorize=vectorize,
    )
    K = models_at_once or default_models_at_once(dev, config, ds.input_shape, total)
    store = None
    records: dict[int, dict[str, Any]] = {}
    if results_path is not None:
        if Path(results_path).is_dir():
            results_path = default_results_path(factory, fingerprint, results_path)
        store = TrainingResultsFile(results_path, fingerprint, {
            "mechanism": factory.spec, "dataset": ds.name, "mode": mode, "canary_kind": design.kind,
            "seed": seed, "config": config.to_dict(), "models_at_once": K,
        })
        records = store.open()
        if records:
            progress_note(f"resumed {len(records)} models from {store.path}", progress)
        stored_k = store.stored.get("models_at_once")
        if records and isinstance(stored_k, int) and stored_k != K:
            if models_at_once is not None and (vectorize == "auto" or is_batched(factory.cls)):
                raise InputError(
                    f"{results_path}: its models were trained {stored_k} at a time, and this mechanism's noise "
                    f"depends on how models are grouped; resume with --models-at-once {stored_k} (or omit it), "
                    "or use another results file"
                )
            if models_at_once is None:
                K = stored_k
    job = ChunkJob(
        mechanism_file=factory.path.name, mechanism_source=factory.path.read_bytes(),
        mechanism_class=factory.cls.__name__, config=config, design=design, model_fn=model_fn, seed=seed,
        batch_seed=derive_seed(seed, _SEED_BATCHES), init_seed=derive_seed(seed, _SEED_INIT), lr=float(lr), momentum=float(momentum), device=str(dev),
        vectorize=vectorize, models_at_once=K, total=total,
    )
    pending = [c for c in range(chunks_of(total, K)) if any(i not in records for i in job.chunk_ids(c))]
    runner = make_backend(backend, factory, ds, address=ray_address, device=str(dev), cpus_per_task=cpus_per_task)

    done_models = sum(1 for i in range(total) if i in records)
    bar = Progress(f"training audit ({runner.name})", total=total, initial=done_models, unit="model",
                   enabled=progress, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} models [{elapsed}<{remaining}, {rate_fmt}]")
    partial: dict[int, float] = {}

    def show(chunk: int, fraction_models: float) -> None:
        partial[chunk] = fraction_models
        bar.moveto(done_models + sum(partial.values()))

    trained, train_seconds = 0, 0.0
    if threads is not None:
        threads = validation.positive_int("threads", threads)
    try:
        with torch_threads(threads if threads is not None else default_threads(dev, config)):
            for chunk, chunk_records in runner.run(job, pending, progress=show if progress else None):
                if store is not None:
                    store.append(chunk_records)
                records.update((r["model"], r) for r in chunk_records)
                trained += len(chunk_records)
                train_seconds += sum(r["seconds"] for r in chunk_records)
                partial.pop(chunk, None)
                done_models += len(chunk_records)
                bar.moveto(done_models + sum(partial.values()))
    except BaseException:
        bar.abandon()
        raise
    bar.close()

    ordered = [records[i] for i in range(total)]
    stats = _statistics(mode, ordered, design.canaries.gradient)
    for name, (ins, outs) in stats.items():
        if ins.size == 0 or outs.size == 0:
            side = "out" if ins.size else "in"
            raise InputError(
                f"all {total} models drew the canary {side}; use more runs (each model includes it with probability 1/2)"
            )
    statistics = _estimate(mode, stats, config.delta, confidence)
    violation = any(e.valid_for_verdict and e.epsilon_lb > claim for row in statistics.values() for e in row.values())
    valid = [(s, e) for s, row in statistics.items() for e in row.values() if e.valid_for_verdict]
    best_stat = max(valid, key=lambda se: se[1].epsilon_lb)[0]
    calls, notes = _notes(ordered, config.steps)
    return TrainingAuditResult(
        mechanism=factory.spec, config=config, dataset=ds.name, mode=mode, canary_kind=design.kind,
        threat_model=design.threat_model, canary_description=design.describe(),
        runs=per_side if mode == MULTI_RUN else total, canaries=m, claimed_epsilon=float(claim),
        confidence=confidence, statistics=statistics, violation=bool(violation),
        in_scores=stats[best_stat][0], out_scores=stats[best_stat][1],
        test_accuracy=np.asarray([r["accuracy"] for r in ordered], dtype=float),
        models=total, models_at_once=K, seed=seed, lr=float(lr), momentum=float(momentum),
        canary_norm=design.canaries.norm if design.canaries.gradient else None, calls=calls, notes=notes,
        device=str(dev), backend=runner.name, results_path=None if results_path is None else str(results_path),
        models_trained=trained, seconds=time.perf_counter() - start,
        models_per_second=trained / train_seconds if train_seconds > 0 else math.nan,
    )
