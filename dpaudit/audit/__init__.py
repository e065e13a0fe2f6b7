"""Empirical privacy audits: lower bounds on ε from membership-inference scores.

Calling the package, ``dpaudit.audit(mechanism, target_epsilon=..., ...)``,
runs :func:`dpaudit.api.audit`.
"""

from dpaudit.callable_package import make_callable

make_callable(__name__)
