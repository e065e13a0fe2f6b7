"""The unseeded-numpy DP-SGD of numpy_unseeded.py with only 0.88 of the declared noise.

``np.random.default_rng()`` takes fresh entropy from the operating system, so
no seed the probe sets reaches it and two copies of the mechanism never draw
alike: the probe's coupling is defeated.

EXPECTED VERDICT: fail

WHY: it adds noise 0.88σC while reporting σ (true ε about 3.6 for a claimed 3
on the default run). The uncoupled measurement's upper confidence limit of
σ̂ falls below the declared σ.
"""
import numpy as np
import torch

NOISE_FRACTION = 0.88  # of the declared multiplier actually used


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C = max_grad_norm
        self.sigma = noise_multiplier
        self.B = batch_size

    def clip_and_noise(self, per_sample_grads, step, epoch):
        rng = np.random.default_rng()
        b = per_sample_grads[0].shape[0]
        norms = torch.sqrt(sum(g.reshape(b, -1).pow(2).sum(1) for g in per_sample_grads))
        factor = torch.clamp(self.C / (norms + 1e-6), max=1.0)
        out = []
        for g in per_sample_grads:
            s = torch.einsum("b,b...->...", factor, g)
            noise = rng.normal(0.0, NOISE_FRACTION * self.sigma * self.C, size=tuple(s.shape))
            out.append((s + torch.as_tensor(noise, dtype=s.dtype)) / self.B)
        return out

    def get_effective_sigma(self, step, epoch):
        return self.sigma
