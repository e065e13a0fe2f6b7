"""DP-SGD written as explicit Python loops over parameters and examples, with ``.item()``.

EXPECTED VERDICT: pass

WHY: global per-example clipping to C (the norm is accumulated over every
parameter tensor), noise σC, divided by the expected batch size: the
Poisson-subsampled Gaussian mechanism it reports. Handles an empty batch.
"""
import math

import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.max_grad_norm = max_grad_norm
        self.noise_multiplier = noise_multiplier
        self.batch_size = batch_size

    def clip_and_noise(self, per_sample_grads, step, epoch):
        n = per_sample_grads[0].shape[0]
        factors = []
        for i in range(n):
            total = 0.0
            for g in per_sample_grads:
                total += (g[i] ** 2).sum().item()
            factors.append(min(1.0, self.max_grad_norm / (math.sqrt(total) + 1e-6)))
        result = []
        for g in per_sample_grads:
            acc = torch.zeros(g.shape[1:], dtype=g.dtype)
            for i in range(n):
                acc += factors[i] * g[i]
            acc += torch.normal(0.0, self.noise_multiplier * self.max_grad_norm, size=acc.shape, dtype=acc.dtype)
            result.append(acc / self.batch_size)
        return result

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
