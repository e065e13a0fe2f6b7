"""``dpaudit certify``: account for what a mechanism declares, measure what it does, give a verdict.

Calling the package, ``dpaudit.certify(mechanism, target_epsilon=..., ...)``,
runs :func:`dpaudit.api.certify`.
"""

from dpaudit.callable_package import make_callable
from dpaudit.certify.run import CertifyResult, certify, default_noise_multiplier

__all__ = ["CertifyResult", "certify", "default_noise_multiplier"]

make_callable(__name__)
