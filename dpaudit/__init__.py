"""dpaudit: does a DP training mechanism stay inside the (ε, δ) budget it claims?

The public API, loaded on first use so that ``import dpaudit`` (and the CLI's
``--help``) stays fast:

- ``dpaudit.epsilon(run, delta, accountants=...)``: ε by every accountant, a pandas DataFrame;
- ``dpaudit.noise_multiplier(target_epsilon, target_delta, sample_rate=..., steps=...)``: σ for a budget;
- ``dpaudit.certify(mechanism, target_epsilon=..., target_delta=..., dataset_size=..., ...)``: verdict;
- ``dpaudit.audit(mechanism, target_epsilon=..., ...)``: gradient-space canary audit;
- ``Schedule``, ``RunConfig`` (run descriptions) and the errors the API raises.

``dpaudit.certify`` and ``dpaudit.audit`` are also the subpackages that hold
those commands; calling them runs the command (see :mod:`dpaudit.api`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "epsilon": "dpaudit.api",
    "noise_multiplier": "dpaudit.api",
    "Schedule": "dpaudit.schedule",
    "RunConfig": "dpaudit.run_config",
    "InputError": "dpaudit.errors",
    "AccountingError": "dpaudit.errors",
    "CalibrationError": "dpaudit.errors",
}
#: Subpackages that are also API calls: ``dpaudit.certify(...)``, ``dpaudit.audit(...)``.
_CALLABLE_PACKAGES = ("certify", "audit")

__all__ = ["__version__", *_EXPORTS, *_CALLABLE_PACKAGES]


def __getattr__(name: str):
    if name in _CALLABLE_PACKAGES:
        return importlib.import_module(f"dpaudit.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dpaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
