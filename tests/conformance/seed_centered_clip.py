"""Seed mechanism 1, first version: centered adaptive clipping, clip norm clamped to [0.005, 50].

Keeps an EMA (β = 0.9) of its own noised outputs and subtracts it from every
per-sample gradient before clipping; the clip norm follows the median of the
residual norms, ``C ← C·exp(0.2·(frac_above − 0.5))`` with ``frac_above`` the
exact fraction of the batch above C (read with ``.item()``); noise std σ·C/B
with B the realised batch size; reports the constant σ. Written in the seed's
idiom (reshape by the realised batch size).

EXPECTED VERDICT: fail

WHY: (1) the un-noised quantile is a data-dependent release: one example moves
the clip norm and with it every later noise scale, and nothing accounts for it;
(2) dividing by the realised batch size makes the noise scale reveal B. The
EMA of noised outputs is post-processing.
"""
import math

import torch


class DPMechanism:
    CLIP_MIN, CLIP_MAX = 0.005, 50.0

    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.noise_multiplier = noise_multiplier
        self.clip = max_grad_norm
        self.ema = None

    def clip_and_noise(self, per_sample_grads, step, epoch):
        batch_size = per_sample_grads[0].shape[0]
        flat = torch.cat([g.reshape(batch_size, -1) for g in per_sample_grads], dim=1)
        if self.ema is None:
            self.ema = torch.zeros(flat.shape[1], dtype=flat.dtype)
        resid = flat - self.ema
        norms = resid.norm(2, dim=1)
        factor = (self.clip / (norms + 1e-6)).clamp(max=1.0)
        summed = (resid * factor.unsqueeze(1)).sum(0)
        noise = torch.randn_like(summed) * self.noise_multiplier * self.clip
        update = self.ema + (summed + noise) / batch_size
        frac_above = (norms > self.clip).float().mean().item()
        self.clip = min(max(self.clip * math.exp(0.2 * (frac_above - 0.5)), self.CLIP_MIN), self.CLIP_MAX)
        self.ema = 0.9 * self.ema + 0.1 * update
        out, start = [], 0
        for g in per_sample_grads:
            n = g[0].numel()
            out.append(update[start:start + n].reshape(g.shape[1:]))
            start += n
        return out

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
