"""The planned training run a mechanism is judged against (plain frozen data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dpaudit import validation
from dpaudit.errors import InputError
from dpaudit.schedule import steps_for_epochs


@dataclass(frozen=True)
class RunConfig:
    """A DP-SGD run as the seed harness describes it.

    ``noise_multiplier`` is the uniform σ calibrated for (epsilon, delta) with
    Poisson sampling at q = batch_size / dataset_size over
    ``steps_for_epochs(dataset_size, batch_size, epochs)`` steps; it is what the
    mechanism is constructed with. ``max_grad_norm`` is the clip norm C (the
    declared L2 sensitivity of one example's contribution to the noised sum).
    """

    dataset_size: int
    batch_size: int
    epochs: int
    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float = 1.0
    n_params: int = 0

    def __post_init__(self) -> None:
        validation.positive_int("dataset_size", self.dataset_size)
        validation.positive_int("batch_size", self.batch_size)
        validation.positive_int("epochs", self.epochs)
        validation.positive("epsilon", self.epsilon)
        validation.open_unit("delta", self.delta)
        validation.positive("noise_multiplier", self.noise_multiplier)
        validation.positive("max_grad_norm", self.max_grad_norm)
        steps_for_epochs(self.dataset_size, self.batch_size, self.epochs)

    @property
    def sample_rate(self) -> float:
        return self.batch_size / self.dataset_size

    @property
    def steps(self) -> int:
        return steps_for_epochs(self.dataset_size, self.batch_size, self.epochs)

    @property
    def steps_per_epoch(self) -> int:
        return self.dataset_size // self.batch_size

    def seed_arguments(self) -> dict:
        """The eight keyword arguments of the seed interface's ``DPMechanism.__init__``."""
        return dict(
            max_grad_norm=self.max_grad_norm,
            noise_multiplier=self.noise_multiplier,
            n_params=self.n_params,
            dataset_size=self.dataset_size,
            batch_size=self.batch_size,
            epochs=self.epochs,
            target_epsilon=self.epsilon,
            target_delta=self.delta,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def run_sizes(
    *,
    dataset_size: int | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    sample_rate: float | None = None,
    steps: int | None = None,
) -> tuple[int, int, int]:
    """(N, B, E) of a run given by any two of N, B, q = B/N and by E or T = E·⌊N/B⌋.

    The seed interface builds a mechanism with N, B and E, so a run given as q
    and T is turned into them: B = q·N (or N = B/q) must come out whole, and
    T a whole number of epochs. Every inconsistency is an :class:`InputError`
    naming the flags.
    """
    n, b = dataset_size, batch_size
    if sample_rate is not None:
        q = validation.probability("sample rate", sample_rate)
        if n is not None and b is None:
            b = _whole(q * validation.positive_int("dataset size", n), f"q*N = {q:g}*{n}", "--batch-size")
        elif b is not None and n is None:
            n = _whole(validation.positive_int("batch size", b) / q, f"B/q = {b}/{q:g}", "--dataset-size")
        elif n is not None and b is not None and abs(b / n - q) > 1e-9 * q:
            raise InputError(f"--sample-rate {q:g} disagrees with --batch-size/--dataset-size = {b}/{n} = {b / n:.6g}")
    if n is None or b is None:
        raise InputError("the mechanism is built with a dataset size and a batch size: give --dataset-size and "
                         "--batch-size (or one of them with --sample-rate)")
    per_epoch = steps_for_epochs(n, b, 1)
    if steps is not None:
        t = validation.positive_int("steps", steps)
        if t % per_epoch:
            raise InputError(f"--steps {t} is not a whole number of epochs of floor(N/B) = {per_epoch} steps "
                             "(the mechanism is built with a number of epochs)")
        if epochs is not None and epochs * per_epoch != t:
            raise InputError(f"--epochs {epochs} gives {epochs * per_epoch} steps, not --steps {t}")
        epochs = t // per_epoch
    if epochs is None:
        raise InputError("give --epochs (or --steps)")
    steps_for_epochs(n, b, epochs)
    return int(n), int(b), int(epochs)


def _whole(value: float, what: str, flag: str) -> int:
    whole = round(value)
    if whole < 1 or abs(value - whole) > 1e-6 * max(1.0, abs(value)):
        raise InputError(f"{what} = {value:.6g} is not a whole number; give {flag}")
    return int(whole)
