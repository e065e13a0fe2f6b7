"""Learning-rate-adaptive noise with AUTO-S (seed mechanism 3).

Each per-example gradient is normalised to g / (‖g‖ + 0.01) (AUTO-S, norm below
1, so the mechanism declares sensitivity 1) and the normalised gradients are
averaged over the expected batch size B. Because the learning rate follows a
cosine decay, lr_ratio(t) = (1 + cos(π t / (T − 1))) / 2, later steps move the
model less and "can afford" more noise; the noise std is σ₀·f(t)/B with

    f(t) = min(1 / sqrt(max(lr_ratio(t), 0.05)), 4)

rising from 1 to 4 over the T = epochs · (dataset_size // batch_size) steps.
σ₀ is chosen so that Σ_t 1/(σ₀ f(t))² = T/σ², i.e. σ₀ = σ · sqrt(mean_t 1/f(t)²)
≈ 0.71σ. get_effective_sigma reports the constant σ.

EXPECTED VERDICT: fail

WHY: the declared σ is not the σ used. For the first half of the run the real
multiplier σ_t = σ₀·f(t) is well below σ (≈0.71σ at the start). Matching
Σ 1/σ_t² is right for full-batch Gaussian composition, but under Poisson
subsampling low-σ steps cost far more than high-σ steps save, so the true ε
is about twice the target (≈6.5 instead of 3 at the seed's settings).
"""

import math

import torch

STABILITY = 0.01  # the gamma of AUTO-S
MIN_LR_RATIO = 0.05
MAX_FACTOR = 4.0


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

    def lr_ratio(self, step):
        progress = min(step, self.total_steps - 1) / max(self.total_steps - 1, 1)
        return 0.5 * (1 + math.cos(math.pi * progress))

    def noise_factor(self, step):
        return min(1.0 / math.sqrt(max(self.lr_ratio(step), MIN_LR_RATIO)), MAX_FACTOR)

    def clip_and_noise(self, per_sample_grads, step, epoch):
        scale = 1.0 / (per_example_norms(per_sample_grads) + STABILITY)
        noise_std = self.sigma0 * self.noise_factor(step) / self.expected_batch_size

        out = []
        for g in per_sample_grads:
            mean = torch.tensordot(scale, g, dims=1) / self.expected_batch_size
            noise = torch.randn(g.shape[1:], dtype=g.dtype, device=g.device)
            out.append(mean + noise_std * noise)
        return out

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier

    def get_sensitivity(self, step, epoch):
        # AUTO-S: ‖g/(‖g‖ + 0.01)‖ < 1 for every example.
        return 1.0
