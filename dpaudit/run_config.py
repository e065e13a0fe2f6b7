"""The planned training run a mechanism is judged against (plain frozen data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dpaudit import validation
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
