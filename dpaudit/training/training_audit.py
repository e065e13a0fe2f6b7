"""The training-level audit: train the mechanism with canaries, many models at once, and bound ε.

Two designs (see :mod:`dpaudit.training.canaries` for the canaries):

* **multi-run** (``runs=N``): 2N models, each of which includes the one canary
  with a fair coin (so about N per side). Each model gives one score; the
  in- and out-scores go to :func:`dpaudit.audit.estimators.estimate_all`
  (Clopper–Pearson and Gaussian-DP, Jagielski et al. 2020 / Nasr et al. 2023,
  plus the one-run estimators reading each model as one canary).
* **one-run** (``canaries=M``, Steinke, Nasr and Jagielski 2023): M canaries,
  each included with its own fair coin, in one model (or ``runs``
  independent such models, whose canaries are pooled: every coin touches one
  model only, so the pooled game is still the one-run game). Scores go to
  :func:`~dpaudit.audit.estimators.one_run` and
  :func:`~dpaudit.audit.estimators.one_run_fdp` (Mahloujifar et al. 2025).

The claim is the PLD ε (add/remove, Poisson) of the schedule the mechanism
*declares* (``get_effective_sigma`` at every step of the run), at the run's
δ. The verdict is "violated" iff an estimator that needs no assumption
(``valid_for_verdict``) certifies more than that. In multi-run mode two
estimators can back the verdict, so each is computed at confidence 1 − α/2 and
the verdict holds at 1 − α = ``confidence``.

Models are trained in chunks of ``models_at_once`` (:class:`~dpaudit.training.trainer.Trainer`).
After every chunk the models' records are added to the results file (if
any), so an interrupted audit resumes where it stopped; every model's numbers
follow from (seed, model id) alone, so the resumed audit gives the same
result as an uninterrupted one.
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
import torch
from torch import nn

from dpaudit import validation
from dpaudit.audit.estimators import (
    ESTIMATOR_NAMES, EstimateResult, estimate_all, gaussian_dp_parametric, one_run, one_run_fdp,
)
from dpaudit.audit.mechanism_audit import CLAIM_ACCOUNTANT, _quiet_absl, claimed_epsilon, declared_schedule
from dpaudit.calibration import calibrate_sigma
from dpaudit.data.datasets import Dataset, load_dataset
from dpaudit.errors import InputError
from dpaudit.mechanism.loader import MechanismFactory
from dpaudit.progress import Progress, note as progress_note
from dpaudit.run_config import RunConfig
from dpaudit.training import models as model_zoo
from dpaudit.training.canaries import CanaryDesign, make_canaries, membership, model_seed
from dpaudit.training.results_store import TrainingResultsFile
from dpaudit.training.trainer import DEFAULT_LR, DEFAULT_MOMENTUM, Trainer, is_batched

#: Models trained together when not told (fits a CPU; on an H100 use 128–256).
DEFAULT_MODELS_AT_ONCE = 32
#: The accountant the claim is computed with (the tight one).
#: Version of the audit's numbers (part of the results-file fingerprint).
AUDIT_VERSION = 1
MULTI_RUN, ONE_RUN = "multi-run", "one-run"


@dataclass(frozen=True)
class TrainingAuditResult:
    """The outcome of :func:`audit_training`.

    ``violation`` is True iff an estimator with ``valid_for_verdict`` has
    ``epsilon_lb`` above ``claimed_epsilon``; the verdict's confidence is
    ``confidence``. ``in_scores``/``out_scores`` are the canary scores the
    estimators saw; ``test_accuracy`` has one entry per model.
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
    estimates: dict[str, EstimateResult]
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
    device: str = field(compare=False)
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
    def accuracy(self) -> dict[str, float]:
        acc = self.test_accuracy[np.isfinite(self.test_accuracy)]
        if acc.size == 0:
            return {"mean": math.nan, "min": math.nan, "max": math.nan}
        return {"mean": float(acc.mean()), "min": float(acc.min()), "max": float(acc.max())}

    @property
    def model_epochs_per_second(self) -> float:
        return self.models_per_second * self.config.epochs

    def strongest(self) -> EstimateResult | None:
        """The verdict-valid estimate with the largest ε lower bound."""
        valid = [e for e in self.estimates.values() if e.valid_for_verdict]
        return max(valid, key=lambda e: e.epsilon_lb) if valid else None

    def summary(self) -> str:
        best = self.strongest()
        if best is None:
            return "no estimator valid for a verdict"
        head = "VIOLATION" if self.violation else f"no violation found at confidence {self.confidence:g}"
        rel = ">" if self.violation else "<="
        return (
            f"{head}: {best.name} eps_lb {best.epsilon_lb:.3f} {rel} claimed {self.claimed_epsilon:.3f} "
            f"({self.mode}, {self.canary_description}; ceiling of this design {best.ceiling:.3f})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form (same keys as the gradient-space audit, plus accuracy and timing)."""
        estimators: dict[str, Any] = {}
        for name in ESTIMATOR_NAMES:
            e = self.estimates.get(name)
            if e is None:
                estimators[name] = {
                    "epsilon_lb": None, "ceiling": None, "valid_for_verdict": False, "assumption": None,
                    "confidence": None, "note": f"not computed in {self.mode} mode",
                }
                continue
            estimators[name] = {
                "epsilon_lb": e.epsilon_lb, "ceiling": e.ceiling, "claimed_epsilon": self.claimed_epsilon,
                "valid_for_verdict": e.valid_for_verdict, "assumption": e.assumption, "label": e.label,
                "confidence": e.confidence,
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
                "in_observations": int(self.in_scores.size),
                "out_observations": int(self.out_scores.size),
                "device": self.device,
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
    mode: str, seed: int, lr: float, momentum: float, model_fn: Callable[[], nn.Module],
    models_at_once: int,
) -> str:
    """What every model's numbers depend on. Not the number of runs (an audit can be extended),
    nor the device or chunk size (unless the mechanism is batched, whose noise depends on the chunk)."""
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
        "model": _model_name(model_fn),
        "chunk": int(models_at_once) if is_batched(factory.cls) else None,
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


def _verdict_estimators_in(estimates: dict[str, EstimateResult]) -> int:
    return max(1, sum(e.valid_for_verdict for e in estimates.values()))


def _estimate(mode: str, ins: np.ndarray, outs: np.ndarray, delta: float, confidence: float) -> dict[str, EstimateResult]:
    alpha = 1 - confidence
    if mode == ONE_RUN:
        # Only one_run backs the verdict (one_run_fdp refutes a stronger, Gaussian claim;
        # gdp_parametric assumes Gaussian canary scores, as Agrawal et al. 2026 do).
        return {
            "one_run": one_run(ins, outs, delta=delta, confidence=confidence),
            "gdp_parametric": gaussian_dp_parametric(ins, outs, delta=delta, confidence=confidence),
            "one_run_fdp": one_run_fdp(ins, outs, delta=delta, confidence=confidence),
        }
    # Split α between the estimators that may back the verdict.
    probe = estimate_all([0.0, 1.0, 2.0], [0.5, 1.5, 2.5], delta=delta, confidence=confidence)
    share = 1 - alpha / _verdict_estimators_in(probe)
    return estimate_all(ins, outs, delta=delta, confidence=share)


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
    models_at_once: int = DEFAULT_MODELS_AT_ONCE,
    device: str | torch.device = "cpu",
    seed: int = 0,
    confidence: float = 0.95,
    results_path: str | Path | None = None,
    progress: bool = False,
    model_fn: Callable[[], nn.Module] | None = None,
    lr: float = DEFAULT_LR,
    momentum: float = DEFAULT_MOMENTUM,
    canary_norm: float | None = None,
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
        models_at_once: K, models trained together (one chunk).
        device: "cpu", "cuda", "cuda:1", ...
        seed: Everything random follows from it.
        confidence: 1 − α for the verdict.
        results_path: JSONL file to append each chunk to and resume from; an
            existing directory gets a file named after the mechanism and the
            audit's fingerprint (:func:`default_results_path`).
        progress: Show a progress bar (models, models/s, ETA).
        model_fn: The model (default: ``dpaudit.training.models.model_for`` of the input shape).
        lr, momentum: SGD with momentum on the mechanism's output.
        canary_norm: Gradient canaries' norm (default 10 × max_grad_norm).
    """
    start = time.perf_counter()
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(str(dataset))
    model_fn = model_fn or _default_model_fn(ds)
    if config.n_params == 0:
        config = dataclasses.replace(config, n_params=model_zoo.n_params(model_fn()))
    factory = _load_factory(spec, config)
    confidence = validation.open_unit("confidence", confidence)
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
        max_grad_norm=config.max_grad_norm, device=device,
    )
    claim = claimed_epsilon(declared_schedule(factory, config), config.delta)
    trainer = Trainer(
        model_fn, config, ds.x_train[design.base], ds.y_train[design.base], ds.x_test, ds.y_test,
        lr=lr, momentum=momentum, device=device, canaries=design.canaries,
    )

    fingerprint = audit_fingerprint(
        factory, config, ds, design, mode=mode, seed=seed, lr=lr, momentum=momentum,
        model_fn=model_fn, models_at_once=models_at_once,
    )
    store = None
    records: dict[int, dict[str, Any]] = {}
    if results_path is not None:
        if Path(results_path).is_dir():
            results_path = default_results_path(factory, fingerprint, results_path)
        store = TrainingResultsFile(results_path, fingerprint, {
            "mechanism": factory.spec, "dataset": ds.name, "mode": mode, "canary_kind": design.kind,
            "seed": seed, "config": config.to_dict(),
        })
        records = store.open()
        if records:
            progress_note(f"resumed {len(records)} models from {store.path}", progress)
    todo = [i for i in range(total) if i not in records]

    batched = is_batched(factory.cls)
    steps = config.steps
    bar = Progress("training audit", total=total, initial=total - len(todo), unit="model", enabled=progress,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} models [{elapsed}<{remaining}, {rate_fmt}]")
    trained, train_seconds = 0, 0.0
    try:
        for lo in range(0, len(todo), models_at_once):
            ids = todo[lo : lo + models_at_once]
            seeds = [model_seed(seed, i) for i in ids]
            memb = np.stack([membership(seed, i, m) for i in ids])
            mechs = factory.new() if batched else [factory.new() for _ in ids]
            done_before = bar.n

            def on_step(step: int, k: int = len(ids), base: float = done_before) -> None:
                if step % 10 == 9 or step == steps - 1:
                    bar.moveto(base + k * (step + 1) / steps)

            result = trainer.train(mechs, seeds, memb, on_step=on_step if progress else None)
            chunk = [
                {
                    "model": int(i), "seed": int(s),
                    "membership": [int(b) for b in memb[j]],
                    "scores": [float(v) for v in result.scores[j]],
                    "accuracy": float(result.test_accuracy[j]),
                    "seconds": result.seconds / len(ids),
                }
                for j, (i, s) in enumerate(zip(ids, seeds))
            ]
            if store is not None:
                store.append(chunk)
            records.update((r["model"], r) for r in chunk)
            trained += len(ids)
            train_seconds += result.seconds
            bar.moveto(done_before + len(ids))
    except BaseException:
        bar.abandon()
        raise
    bar.close()

    ins, outs, accuracy = [], [], []
    for i in range(total):
        rec = records[i]
        scores = np.asarray(rec["scores"], dtype=float)
        mem = np.asarray(rec["membership"], dtype=bool)
        ins.append(scores[mem])
        outs.append(scores[~mem])
        accuracy.append(rec["accuracy"])
    in_scores, out_scores = np.concatenate(ins), np.concatenate(outs)
    if in_scores.size == 0 or out_scores.size == 0:
        side = "out" if in_scores.size else "in"
        raise InputError(
            f"all {total} models drew the canary {side}; use more runs (each model includes it with probability 1/2)"
        )
    estimates = _estimate(mode, in_scores, out_scores, config.delta, confidence)
    violation = any(e.valid_for_verdict and e.epsilon_lb > claim for e in estimates.values())
    return TrainingAuditResult(
        mechanism=factory.spec, config=config, dataset=ds.name, mode=mode, canary_kind=design.kind,
        threat_model=design.threat_model, canary_description=design.describe(),
        runs=per_side if mode == MULTI_RUN else total, canaries=m, claimed_epsilon=float(claim),
        confidence=confidence, estimates=estimates, violation=bool(violation),
        in_scores=in_scores, out_scores=out_scores, test_accuracy=np.asarray(accuracy, dtype=float),
        models=total, models_at_once=models_at_once, seed=seed, lr=float(lr), momentum=float(momentum),
        canary_norm=design.canaries.norm if design.canaries.gradient else None,
        device=str(trainer.device), results_path=None if results_path is None else str(results_path),
        models_trained=trained, seconds=time.perf_counter() - start,
        models_per_second=trained / train_seconds if train_seconds > 0 else math.nan,
    )
