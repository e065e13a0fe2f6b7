"""DP-SGD with AUTO-S per-example normalisation (Bu et al. 2023, "Automatic clipping").

Instead of clipping, every example's gradient is rescaled to g / (‖g‖ + 0.01),
the norm taken over all parameter tensors together, so each contribution has
norm below 1. The rescaled gradients are summed, N(0, σ²) noise is added to
every coordinate, and the result is divided by the *expected* batch size. The
learning rate absorbs the scale, so max_grad_norm plays no role; the
mechanism therefore declares its sensitivity, 1, through get_sensitivity.

EXPECTED VERDICT: pass

WHY: one example changes the normalised sum by less than 1 (the declared
sensitivity), the noise std is σ·1 on every step, and the divisor is a public
constant: a Poisson-subsampled Gaussian mechanism with the constant multiplier
σ that get_effective_sigma reports.
"""

import torch

STABILITY = 0.01  # the gamma of AUTO-S


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

    def clip_and_noise(self, per_sample_grads, step, epoch):
        scale = 1.0 / (per_example_norms(per_sample_grads) + STABILITY)

        out = []
        for g in per_sample_grads:
            normalised_sum = torch.tensordot(scale, g, dims=1)
            noise = torch.randn(g.shape[1:], dtype=g.dtype, device=g.device)
            out.append((normalised_sum + self.noise_multiplier * noise) / self.expected_batch_size)
        return out

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier

    def get_sensitivity(self, step, epoch):
        # ‖g/(‖g‖ + 0.01)‖ < 1 for every example, whatever max_grad_norm is.
        return 1.0
