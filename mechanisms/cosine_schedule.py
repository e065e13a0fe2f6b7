"""Cosine-scheduled AUTO-S with an EMA of the updates (seed mechanism 2).

Each per-example gradient is normalised to g / (‖g‖ + 0.01) (AUTO-S, norm below
1, so the mechanism declares sensitivity 1), the normalised gradients are
averaged over the expected batch size B, and Gaussian noise with std
σ₀·f(t)/B is added, where the noise factor falls from 1 to 0.65 on a half cosine
over the T = epochs · (dataset_size // batch_size) steps:

    f(t) = 0.65 + 0.35 · (1 + cos(π t / (T − 1))) / 2

σ₀ is chosen so that the schedule "spends the same budget" as the uniform σ it
was given: Σ_t 1/(σ₀ f(t))² = T/σ², i.e. σ₀ = σ · sqrt(mean_t 1/f(t)²) ≈ 1.25σ.
The returned update is an EMA (β = 0.5) of the noised averages.
get_effective_sigma reports the constant σ.

EXPECTED VERDICT: fail

WHY: the declared σ is not the σ used. The real multiplier σ_t = σ₀·f(t) falls
to about 0.82σ at the end of the run. Matching Σ 1/σ_t² keeps the privacy of
full-batch Gaussian composition, but under Poisson subsampling the privacy loss
of a step grows much faster than 1/σ² as σ falls, so the low-σ steps cost more
than the high-σ steps save and the true ε exceeds the target (about 4.3 instead
of 3 at the seed's settings). The EMA is legitimate post-processing.
"""

import math

import torch

STABILITY = 0.01  # the gamma of AUTO-S
EMA_DECAY = 0.5
FINAL_FACTOR = 0.65


def per_example_norms(per_sample_grads):
    """L2 norm of each example's gradient, taken over all parameter tensors together."""
    batch = per_sample_grads[0].shape[0]
    per_param = [torch.linalg.vector_norm(g.reshape(batch, g.shape[1:].numel()), dim=1)
                 for g in per_sample_grads]
    return torch.linalg.vector_norm(torch.stack(per_param, dim=1), dim=1)


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params,
                 dataset_size, batch_size, epochs, target_epsilon, target_delta):
        self.noise_multiplier = float(noise_multiplier)
        self.expected_batch_size = float(batch_size)
        self.total_steps = int(epochs) * (int(dataset_size) // int(batch_size))
        # Same total "privacy spend" as the uniform schedule: sum_t 1/sigma_t^2 = T/sigma^2.
        inv_sq = [1.0 / self.noise_factor(t) ** 2 for t in range(self.total_steps)]
        self.sigma0 = self.noise_multiplier * math.sqrt(sum(inv_sq) / self.total_steps)
        self.ema = None

    def noise_factor(self, step):
        progress = min(step, self.total_steps - 1) / max(self.total_steps - 1, 1)
        return FINAL_FACTOR + (1 - FINAL_FACTOR) * 0.5 * (1 + math.cos(math.pi * progress))

    def clip_and_noise(self, per_sample_grads, step, epoch):
        scale = 1.0 / (per_example_norms(per_sample_grads) + STABILITY)
        noise_std = self.sigma0 * self.noise_factor(step) / self.expected_batch_size

        noised = []
        for g in per_sample_grads:
            mean = torch.tensordot(scale, g, dims=1) / self.expected_batch_size
            noise = torch.randn(g.shape[1:], dtype=g.dtype, device=g.device)
            noised.append(mean + noise_std * noise)

        if self.ema is None:
            self.ema = noised
        else:
            self.ema = [EMA_DECAY * m + (1 - EMA_DECAY) * x for m, x in zip(self.ema, noised)]
        return [m.clone() for m in self.ema]

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier

    def get_sensitivity(self, step, epoch):
        # AUTO-S: ‖g/(‖g‖ + 0.01)‖ < 1 for every example.
        return 1.0
