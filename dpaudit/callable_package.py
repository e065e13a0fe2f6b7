"""Subpackages that are also functions: ``dpaudit.certify(...)`` next to ``dpaudit.certify.report``.

``dpaudit.certify`` is a subpackage, and Python sets it as an attribute of
``dpaudit`` whenever any of its modules is imported, so a function of that
name in ``dpaudit/__init__.py`` would be replaced at random. Instead the
subpackage's module object is made callable: calling it runs the function of
the same name in :mod:`dpaudit.api`.
"""

from __future__ import annotations

import sys
import types


class CallablePackage(types.ModuleType):
    """A package module whose call is ``dpaudit.api.<last part of its name>``."""

    def __call__(self, *args, **kwargs):
        from dpaudit import api

        return getattr(api, self.__name__.rsplit(".", 1)[-1])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Make the (already imported) module ``module_name`` a :class:`CallablePackage`."""
    sys.modules[module_name].__class__ = CallablePackage
