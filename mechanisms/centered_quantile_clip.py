"""Centered adaptive clipping (seed mechanism 1): clip around an EMA, clip norm at the median.

Keeps an exponential moving average (β = 0.9) of its own past noised outputs and
subtracts it from every per-example gradient before clipping, so that only the
residuals g_i − m are clipped (centered clipping); the EMA is added back to the
noised mean of the clipped residuals. The clip norm C follows the median of the
residual norms with the geometric update

    C ← clamp(C · exp(0.2 · (frac_above − 0.5)), 0.001, max_grad_norm)

where frac_above is the fraction of the batch whose residual norm exceeds C.
The noise std on the mean is σ·C/B, B the realised batch size, and
get_effective_sigma reports the constant σ.

EXPECTED VERDICT: fail

WHY: two channels nothing accounts for.
  1. frac_above is the exact, un-noised fraction: one example moves it by up
     to 1/B and so moves the clip norm, and with it the noise scale of every
     later step; this data-dependent release costs privacy beyond σ.
  2. Dividing by the realised batch size B (and scaling the noise by σ·C/B)
     makes the output scale reveal B, i.e. whether an example was sampled
     (the Opacus #571 / #819 pattern).
Subtracting the EMA of past noised outputs is legitimate post-processing.
"""

import math

import torch

EMA_DECAY = 0.9
CLIP_LEARNING_RATE = 0.2
MIN_CLIP = 1e-3


def per_example_norms(per_sample_grads):
    """L2 norm of each example's gradient, taken over all parameter tensors together."""
    batch = per_sample_grads[0].shape[0]
    per_param = [torch.linalg.vector_norm(g.reshape(batch, g.shape[1:].numel()), dim=1)
                 for g in per_sample_grads]
    return torch.linalg.vector_norm(torch.stack(per_param, dim=1), dim=1)


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params,
                 dataset_size, batch_size, epochs, target_epsilon, target_delta):
        self.max_grad_norm = float(max_grad_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(max_grad_norm)
        self.center = None  # EMA of past noised outputs, one tensor per parameter

    def clip_and_noise(self, per_sample_grads, step, epoch):
        batch = per_sample_grads[0].shape[0]
        if self.center is None:
            self.center = [torch.zeros(g.shape[1:], dtype=g.dtype, device=g.device)
                           for g in per_sample_grads]
        residuals = [g - m for g, m in zip(per_sample_grads, self.center)]

        C = self.clip_norm
        norms = per_example_norms(residuals)
        scale = (C / (norms + 1e-6)).clamp(max=1.0)
        B = max(batch, 1)

        out = []
        for r, m in zip(residuals, self.center):
            clipped_mean = torch.tensordot(scale, r, dims=1) / B
            noise = torch.randn(r.shape[1:], dtype=r.dtype, device=r.device)
            out.append(m + clipped_mean + (self.noise_multiplier * C / B) * noise)

        if batch > 0:
            frac_above = (norms > C).float().mean().item()
            C = C * math.exp(CLIP_LEARNING_RATE * (frac_above - 0.5))
            self.clip_norm = min(max(C, MIN_CLIP), self.max_grad_norm)
        self.center = [EMA_DECAY * m + (1 - EMA_DECAY) * o.detach()
                       for m, o in zip(self.center, out)]
        return out

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
