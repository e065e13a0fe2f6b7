"""Shared fixtures."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest


@pytest.fixture
def reproducible_entropy(monkeypatch):
    """``seed -> None``: fresh entropy for every call, from a counter, so that a rerun repeats it.

    Replaces ``numpy.random.default_rng()`` (without a seed) and ``os.urandom``:
    every call still gets new draws that no seed the probe sets reaches (its
    coupling stays defeated, as with real entropy), but a failing test can be
    rerun.
    """

    def use(seed: int) -> None:
        real = np.random.default_rng
        counter = itertools.count()
        monkeypatch.setattr(np.random, "default_rng",
                            lambda s=None: real([seed, next(counter)] if s is None else s))
        source = real([seed, 2**32])
        monkeypatch.setattr(os, "urandom", lambda n: source.bytes(n))

    return use
