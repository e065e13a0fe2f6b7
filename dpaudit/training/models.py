"""Models for training audits. No batch-norm: it mixes examples and breaks per-example privacy."""

from __future__ import annotations

from torch import nn

from dpaudit.errors import InputError


def dp_cnn_28() -> nn.Module:
    """The classic DP-SGD CNN for 28×28 grey images (Papernot et al. 2020): tanh, 26,010 parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=3), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, 10),
    )


def small_cnn_cifar() -> nn.Module:
    """A small tanh CNN for 32×32 colour images (CIFAR-10)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.Tanh(), nn.Linear(64, 10),
    )


def mlp_digits() -> nn.Module:
    """An MLP 64→32→10 for scikit-learn's 8×8 digits (2,410 parameters)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


MODELS = {(1, 28, 28): dp_cnn_28, (3, 32, 32): small_cnn_cifar, (1, 8, 8): mlp_digits}


def model_for(input_shape: tuple[int, ...]) -> nn.Module:
    """The default model for a dataset's input shape."""
    try:
        return MODELS[tuple(input_shape)]()
    except KeyError:
        raise InputError(
            f"no model for inputs of shape {tuple(input_shape)}; known: {', '.join(map(str, MODELS))}"
        ) from None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
