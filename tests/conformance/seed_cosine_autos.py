"""Seed mechanism 2: cosine-scheduled AUTO-S with an EMA of the noised averages.

Normalises each per-sample gradient to g/(‖g‖ + 0.01), averages over the
realised batch, adds noise with std σ₀·f(t)/B (B the realised batch size) where
f falls from 1 to 0.65 on a cosine over all steps and σ₀ makes
Σ_t 1/(σ₀ f(t))² = T/σ², and returns an EMA (β = 0.5) of the noised averages.
Reports the constant σ. Seed idiom: reshape by the realised batch, ``.item()``.

EXPECTED VERDICT: fail

WHY: the σ it reports is not the σ it uses: σ₀f(t) falls to about 0.82σ, and
matching Σ1/σ_t² is wrong under Poisson subsampling, where low-σ steps cost
more than high-σ steps save. Dividing by the realised batch size also makes
the noise scale reveal B. The EMA is post-processing.
"""
import math

import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.noise_multiplier = noise_multiplier
        self.total_steps = epochs * (dataset_size // batch_size)
        inv = sum(1.0 / self.f(t) ** 2 for t in range(self.total_steps)) / self.total_steps
        self.sigma0 = noise_multiplier * math.sqrt(inv)
        self.ema = None

    def f(self, step):
        progress = min(step, self.total_steps - 1) / max(self.total_steps - 1, 1)
        return 0.65 + 0.35 * 0.5 * (1 + math.cos(math.pi * progress))

    def clip_and_noise(self, per_sample_grads, step, epoch):
        batch_size = per_sample_grads[0].shape[0]
        flat = torch.cat([g.reshape(batch_size, -1) for g in per_sample_grads], dim=1)
        normalised = flat / (flat.norm(2, dim=1, keepdim=True) + 0.01)
        mean = normalised.sum(0) / batch_size
        noised = mean + torch.randn_like(mean) * self.sigma0 * self.f(step) / batch_size
        self.ema = noised if self.ema is None else 0.5 * self.ema + 0.5 * noised
        out, start = [], 0
        for g in per_sample_grads:
            n = g[0].numel()
            out.append(self.ema[start:start + n].reshape(g.shape[1:]).clone())
            start += n
        return out

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
