"""Seed mechanism 3: LR-adaptive noise with AUTO-S normalisation.

Normalises each per-sample gradient to g/(‖g‖ + 0.01), averages over the
realised batch and adds noise σ₀·f(t)/B with
f(t) = min(1/sqrt(max(lr_ratio(t), 0.05)), 4), lr_ratio(t) = (1 + cos(πt/(T−1)))/2,
σ₀ calibrated so that Σ_t 1/(σ₀ f(t))² = T/σ². Reports the constant σ. Seed
idiom: a per-parameter loop over reshaped gradients, ``.item()``.

EXPECTED VERDICT: fail

WHY: σ₀ ≈ 0.7σ in the first half of the run while σ is reported (the same
Σ1/σ_t² mistake under Poisson subsampling), and the realised-batch divisor
makes the noise scale reveal B.
"""
import math

import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.noise_multiplier = noise_multiplier
        self.T = epochs * (dataset_size // batch_size)
        inv = sum(1.0 / self.factor(t) ** 2 for t in range(self.T)) / self.T
        self.sigma0 = noise_multiplier * math.sqrt(inv)

    def factor(self, step):
        lr_ratio = (1 + math.cos(math.pi * step / max(self.T - 1, 1))) / 2
        return min(1.0 / math.sqrt(max(lr_ratio, 0.05)), 4.0)

    def clip_and_noise(self, per_sample_grads, step, epoch):
        batch_size = per_sample_grads[0].shape[0]
        norms = torch.zeros(batch_size, dtype=per_sample_grads[0].dtype)
        for g in per_sample_grads:
            norms += g.reshape(batch_size, -1).pow(2).sum(1)
        scale = 1.0 / (norms.sqrt() + 0.01)
        std = self.sigma0 * self.factor(step) / batch_size
        out = []
        for g in per_sample_grads:
            mean = (g.reshape(batch_size, -1) * scale[:, None]).sum(0) / batch_size
            out.append((mean + std * torch.randn(mean.shape[0], dtype=mean.dtype)).reshape(g.shape[1:]))
        return out

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
