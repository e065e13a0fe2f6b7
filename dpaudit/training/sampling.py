"""Poisson batches for training audits: one base batch per step for every model, private canary coins.

Every training example is in step t's batch with probability q. The coins of
the *training* examples are drawn once per step for the whole audit
(:class:`SharedBatches`: B_t ~ Binomial(N, q), then B_t distinct examples
uniformly, the same distribution as N coins), so every model of the audit
trains on the same base batches; each model flips its *canaries'* coins
itself (:class:`CanaryCoins`), from its own seed.

Why share the base batches. Each model's batches are still exactly Poisson,
so each model is a faithful run of the mechanism. The models are no longer
independent, but they are independent *given* the base batches, and the
estimators' guarantees then hold for the conditional in/out distributions.
Those are what the Poisson-subsampled accounting bounds: its privacy loss
for the canary is bounded for every fixed choice of the other examples' coins
(the bound for the mixture follows from the bound for each component), so an
audit of a correct mechanism cannot report a violation because the coins are
shared. What sharing buys: the adversary knows the other examples' coins,
which is the strongest white-box adversary (anything that leaks the realised
batch size is measured against a known base size instead of drowned in its
Binomial spread); the K models of a step need no padding to a common size
(only canary rows differ); and groups of models with equal batches can call
the mechanism once under ``vmap``.
"""

from __future__ import annotations

import numpy as np

from dpaudit.seeding import derive_seed

_SEED_BASE = 7


class SharedBatches:
    """Step t's base batch (sorted example indices), a function of (seed, t) alone."""

    def __init__(self, seed: int, n: int, q: float) -> None:
        self.seed, self.n, self.q = int(seed), int(n), float(q)

    def at(self, step: int) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64(derive_seed(self.seed, _SEED_BASE, step)))
        b = int(rng.binomial(self.n, self.q))
        if b == self.n:
            return np.arange(self.n, dtype=np.int64)
        return np.sort(rng.choice(self.n, size=b, replace=False)).astype(np.int64)


class CanaryCoins:
    """One model's canary coins: each of m canaries sampled with probability q, every step, in step order."""

    def __init__(self, seed: int, m: int, q: float) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.m, self.q = int(m), float(q)

    def draw(self) -> np.ndarray:
        """Boolean mask over the m canaries (all m coins are drawn whether or not a canary is a member)."""
        return self.rng.random(self.m) < self.q if self.m else np.zeros(0, bool)
