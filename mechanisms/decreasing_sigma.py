"""DP-SGD with a linearly decreasing noise schedule, honestly reported.

Plain DP-SGD (global per-example clip to C = max_grad_norm, sum, Gaussian noise,
divide by the expected batch size), but the noise multiplier falls linearly
over the run, from 1.25·σ at the first step to σ at the last:

    σ_t = σ · (1.25 − 0.25 · t / (T − 1)),   T = epochs · (dataset_size // batch_size)

(more noise early, when the model moves most, less near the end). Steps past
T − 1 keep σ. get_effective_sigma reports σ_t, the multiplier actually used.

EXPECTED VERDICT: pass

WHY: every σ_t ≥ σ, the σ calibrated for the target (ε, δ), and each step is a
Poisson-subsampled Gaussian with sensitivity C and the σ_t it declares, so the
accounted ε of the declared schedule is at most the target and the declaration
is true.
"""

import torch


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
        self.expected_batch_size = float(batch_size)
        self.total_steps = int(epochs) * (int(dataset_size) // int(batch_size))

    def sigma_at(self, step):
        progress = min(step, self.total_steps - 1) / max(self.total_steps - 1, 1)
        return self.noise_multiplier * (1.25 - 0.25 * progress)

    def clip_and_noise(self, per_sample_grads, step, epoch):
        C = self.max_grad_norm
        sigma = self.sigma_at(step)
        norms = per_example_norms(per_sample_grads)
        scale = (C / (norms + 1e-6)).clamp(max=1.0)

        out = []
        for g in per_sample_grads:
            clipped_sum = torch.tensordot(scale, g, dims=1)
            noise = torch.normal(0.0, sigma * C, size=g.shape[1:], dtype=g.dtype, device=g.device)
            out.append((clipped_sum + noise) / self.expected_batch_size)
        return out

    def get_effective_sigma(self, step, epoch):
        return self.sigma_at(step)
