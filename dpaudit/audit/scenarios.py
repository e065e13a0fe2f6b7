"""Worst-case datasets for the gradient-space audit of a mechanism.

A :class:`Scenario` fixes everything about one audit game except the coin
that decides whether the canary is in the dataset: the run the mechanism is
built for (a :class:`~dpaudit.run_config.RunConfig`, including the noise
multiplier it is handed), what the other examples' per-sample gradients look
like, and what the canary's gradient is. The audit never trains a model: it
feeds the mechanism per-sample gradients with the shapes of a small model
(:data:`PARAM_SHAPES`) directly, which is the strongest adversary the
add/remove guarantee has to withstand (Nasr et al. 2021, 2023: gradient
canaries, every iterate observed).

Other examples (``others``), ``dataset_size − 1`` of them, each Poisson-sampled:

* ``"zero"``: every other gradient is zero. The noised sum then carries only
  the canary, but the realised batch size still counts the others, so a
  mechanism that divides by it (or otherwise lets it through) shows it.
* ``"split"``: half the others have norm 2·C and half C/2 (C the clip norm),
  on a coordinate of their own: the median of the norms sits at C, so one
  example moves an un-noised quantile of the norms, and with it an adaptive
  clip norm and every later noise scale.
* ``"none"``: the dataset is the canary alone (batches of 0 or 1 example).

A mechanism that refuses small batches (the seed's ``reshape(batch_size, -1)``
fails on an empty one) gets ``min_others`` zero-gradient examples that are in
every batch of both worlds whenever the others' own sample is smaller (the
same in both worlds, so the pair of datasets stays add/remove neighbours):
the "empty" world becomes one zero-gradient example.

The canary (``canary``):

* ``"dirac"``: all its mass, HUGE·C, on one coordinate of the first parameter
  tensor (the Dirac canary of Nasr et al. 2023): clipped to exactly C by any
  clipping rule, and every other coordinate stays free of data.
* ``"random"``: norm HUGE·C along a fixed random direction spread over every
  parameter tensor (catches clipping applied per tensor or per coordinate,
  which lets a dense gradient through with norm above C).
* ``"inside"``: a Dirac canary of norm C/2, inside the clip ball and below the
  median of ``"split"`` others: it lowers an exact quantile of the norms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from dpaudit.errors import InputError
from dpaudit.run_config import RunConfig

#: Parameter shapes of the audit's model: a 32×32 weight and a bias (1,056 parameters).
PARAM_SHAPES: tuple[tuple[int, ...], ...] = ((32, 32), (32,))
#: Number of parameters of the audit's model.
N_PARAMS: int = sum(math.prod(s) for s in PARAM_SHAPES)
#: Norm of the huge canaries, in units of max_grad_norm.
HUGE = 1e3
#: Norm of the "inside" canary, in units of max_grad_norm.
INSIDE = 0.5
#: Norms of the "split" others above and below the clip norm, in units of max_grad_norm.
SPLIT_ABOVE, SPLIT_BELOW = 2.0, 0.5

OTHERS = ("zero", "split", "none")
CANARIES = ("dirac", "random", "inside")

#: Names of the scenarios built on the user's own run.
RUN_ZERO, RUN_EMPTY = "run-zero", "run-empty"


@dataclass(frozen=True)
class Scenario:
    """One adversarial dataset pair (with and without the canary) and the run it is used in.

    Attributes:
        name: Short name, used in tables, the results file and ``--scenario``.
        run: The run the mechanism is constructed for; ``run.noise_multiplier``
            is what the mechanism is handed.
        others: ``"zero"``, ``"split"`` or ``"none"`` (see the module docstring).
        canary: ``"dirac"``, ``"random"`` or ``"inside"``.
        purpose: Which flaw this scenario is chosen to expose, one sentence.
        param_shapes: Shapes of the per-parameter tensors the mechanism sees.
        min_others: Fewest other examples in any batch (zero-gradient ones fill
            up a smaller sample, in both worlds alike); 0 unless the mechanism
            refuses smaller batches.
    """

    name: str
    run: RunConfig
    others: str
    canary: str
    purpose: str
    param_shapes: tuple[tuple[int, ...], ...] = field(default=PARAM_SHAPES)
    min_others: int = 0

    def __post_init__(self) -> None:
        if self.others not in OTHERS:
            raise InputError(f"scenario {self.name}: others must be one of {', '.join(OTHERS)}, got {self.others!r}")
        if self.canary not in CANARIES:
            raise InputError(f"scenario {self.name}: canary must be one of {', '.join(CANARIES)}, got {self.canary!r}")

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes)

    @property
    def n_others(self) -> int:
        """Number of examples besides the canary (each Poisson-sampled at rate q)."""
        return 0 if self.others == "none" else self.run.dataset_size - 1

    @property
    def n_above(self) -> int:
        """How many ``"split"`` others sit above the clip norm (the rest sit below)."""
        return self.n_others // 2 if self.others == "split" else 0

    @property
    def sample_rate(self) -> float:
        return self.run.sample_rate

    @property
    def steps(self) -> int:
        return self.run.steps

    @property
    def canary_norm(self) -> float:
        """Norm of the canary's gradient (before any clipping)."""
        scale = INSIDE if self.canary == "inside" else HUGE
        return scale * self.run.max_grad_norm

    def describe(self) -> str:
        """One line: the run, the others and the canary."""
        r = self.run
        others = {
            "zero": f"{self.n_others} zero-gradient others",
            "split": (
                f"{self.n_others} others split at the clip norm ({self.n_above} at {SPLIT_ABOVE:g}C, "
                f"{self.n_others - self.n_above} at {SPLIT_BELOW:g}C)"
            ),
            "none": "no other examples",
        }[self.others]
        if self.min_others:
            others += f" (at least {self.min_others} zero-gradient example(s) in every batch)"
        canary = {
            "dirac": f"Dirac canary of norm {HUGE:g}C",
            "random": f"random-direction canary of norm {HUGE:g}C",
            "inside": f"Dirac canary of norm {INSIDE:g}C (inside the clip ball)",
        }[self.canary]
        batch = "full batch, q = 1" if r.sample_rate >= 1 else f"Poisson q = {r.sample_rate:.4g}"
        return (
            f"N = {r.dataset_size}, B = {r.batch_size} ({batch}), {r.epochs} epoch(s) = {r.steps} steps, "
            f"sigma = {r.noise_multiplier:.4g}; {others}; {canary}"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["param_shapes"] = [list(s) for s in self.param_shapes]
        d["description"] = self.describe()
        return d


@dataclass(frozen=True)
class _Template:
    name: str
    dataset_size: int
    epochs: int
    others: str
    canary: str
    purpose: str


#: The small full-batch scenarios the audit always adds. With q = 1 the
#: realised batch size is N − 1 or N, known in advance, so anything that
#: depends on it is a deterministic function of membership; a few steps and a
#: few examples keep each run to a few milliseconds.
WORST_CASES: tuple[_Template, ...] = (
    _Template(
        "full-batch-zero", 4, 4, "zero", "dirac",
        "realised batch size (3 vs 4) revealed by the noise scale or the output scale",
    ),
    _Template(
        "full-batch-split", 5, 8, "split", "inside",
        "an un-noised quantile of the norms (an adaptive clip norm) moved by one example "
        "and revealed by later noise scales",
    ),
    _Template(
        "full-batch-empty", 1, 4, "none", "random",
        "empty batches (0 vs 1 example) treated differently; clipping per tensor or per coordinate",
    ),
)


def run_scenarios(config: RunConfig) -> dict[str, Scenario]:
    """The two scenarios on the user's own run: zero-gradient others, and the canary alone."""
    run = RunConfig(**{**config.to_dict(), "n_params": N_PARAMS})
    return {
        RUN_ZERO: Scenario(
            RUN_ZERO, run, "zero", "dirac",
            "the run as configured: every step, Poisson-sampled, the canary at full sensitivity",
        ),
        RUN_EMPTY: Scenario(
            RUN_EMPTY, run, "none", "dirac",
            "the run as configured with the canary alone in the dataset (cheap: batches of 0 or 1)",
        ),
    }


def worst_case_scenarios(
    config: RunConfig, sigma_for: Callable[[float, int], float]
) -> dict[str, Scenario]:
    """The full-batch worst cases of :data:`WORST_CASES` for ``config``'s (ε, δ) and clip norm.

    ``sigma_for(sample_rate, steps)`` gives the noise multiplier calibrated for
    ``config.epsilon, config.delta`` on that run, which is what each scenario's
    mechanism is constructed with.
    """
    out = {}
    for t in WORST_CASES:
        steps = t.epochs  # N = B: one step per epoch
        run = RunConfig(
            dataset_size=t.dataset_size,
            batch_size=t.dataset_size,
            epochs=t.epochs,
            epsilon=config.epsilon,
            delta=config.delta,
            noise_multiplier=sigma_for(1.0, steps),
            max_grad_norm=config.max_grad_norm,
            n_params=N_PARAMS,
        )
        out[t.name] = Scenario(t.name, run, t.others, t.canary, t.purpose)
    return out


#: Dataset sizes a worst case is retried with when the mechanism rejects its tiny run
#: (a mechanism may need a minimum batch, e.g. noised adaptive clipping needs σ < B/10).
LARGER_SIZES = (32, 256)


def resized(scenario: Scenario, dataset_size: int) -> Scenario:
    """The same full-batch worst case with N = B = ``dataset_size`` (same steps, same σ)."""
    r = scenario.run
    run = RunConfig(**{**r.to_dict(), "dataset_size": dataset_size, "batch_size": dataset_size})
    return replace(scenario, run=run)


def adapted(
    scenarios: dict[str, Scenario], param_shapes: tuple[tuple[int, ...], ...], min_others: int
) -> dict[str, Scenario]:
    """``scenarios`` with the gradient layout and the smallest batch the mechanism accepts."""
    return {n: replace(s, param_shapes=param_shapes, min_others=min_others) for n, s in scenarios.items()}


SCENARIO_NAMES = (RUN_ZERO, RUN_EMPTY) + tuple(t.name for t in WORST_CASES)
