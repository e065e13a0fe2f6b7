"""Quantile clipping driven by an un-noised count, with noise from OS entropy.

The clip norm follows the median of the per-example norms,
``C ← C·exp(−0.2·(frac_below − 0.5))`` with ``frac_below`` the *exact* fraction
of the batch at or below C. Noise σC_t on the sum, divided by the expected
batch size, from a ``torch.Generator`` seeded with ``os.urandom`` at every call
(so the probe's coupling is defeated). ``get_sensitivity`` reports C_t.

EXPECTED VERDICT: fail

WHY: each step's noise is right for its clip norm, but the clip norm after a
step is an exact function of that step's batch: one example moves it, and so
the noise scale of every later step, and nothing accounts for that release.
The probe must find this from independent draws (its statistical leak check).
"""
import math
import os

import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.sigma = noise_multiplier
        self.B = batch_size
        self.clip = max_grad_norm

    def clip_and_noise(self, per_sample_grads, step, epoch):
        gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
        c = self.clip
        b = per_sample_grads[0].shape[0]
        norms = torch.sqrt(sum(g.reshape(b, -1).pow(2).sum(1) for g in per_sample_grads)) if b else None
        out = []
        for g in per_sample_grads:
            if b:
                s = torch.tensordot(torch.clamp(c / (norms + 1e-6), max=1.0), g, dims=1)
            else:
                s = torch.zeros(g.shape[1:], dtype=g.dtype)
            out.append((s + self.sigma * c * torch.randn(s.shape, generator=gen, dtype=s.dtype)) / self.B)
        if b:
            frac_below = (norms <= c).double().mean().item()
            self.clip = c * math.exp(-0.2 * (frac_below - 0.5))
        return out

    def get_effective_sigma(self, step, epoch):
        return self.sigma

    def get_sensitivity(self, step, epoch):
        return self.clip
