"""DP-SGD with adaptive clipping to the median norm (Andrew et al. 2021), count noised.

The clip norm C_t starts at max_grad_norm and follows the median of the
per-example gradient norms by the geometric rule of Andrew, Thakkar, McMahan and
Ramaswamy (NeurIPS 2021), as TF Privacy implements it:

    b_i     = 1[‖g_i‖ ≤ C_t] − ½                        (centred: sensitivity ½)
    b̃       = clip((Σ b_i + N(0, σ_b²)) / m + ½, 0, 1)   m = expected batch size
    C_{t+1} = C_t · exp(−0.2 · (b̃ − 0.5))

with σ_b = m / 20. The gradient step clips to C_t, sums, adds N(0, (σ_grad·C_t)²)
and divides by m, where σ_grad = (σ⁻² − (2σ_b)⁻²)^(−½) is larger than σ by exactly
what the count release costs. get_effective_sigma reports the total σ that was
handed in; get_sensitivity reports the clip norm C_t used at the step.

EXPECTED VERDICT: pass

WHY: the clip norm evolves, but only through noised (accounted) releases. One
example moves the pair (clipped sum, centred count) by at most (C_t, ½); with
noise (σ_grad·C_t, σ_b) that is a Gaussian mechanism whose multiplier satisfies
1/σ_grad² + 1/(2σ_b)² = 1/σ², i.e. exactly the Poisson-subsampled Gaussian with
the σ reported. The divisor m is public and C_{t+1} is post-processing of noised
outputs.
"""

import math

import torch

TARGET_QUANTILE = 0.5
CLIP_LEARNING_RATE = 0.2


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
        self.clip_norm = float(max_grad_norm)
        self.count_stddev = self.expected_batch_size / 20.0
        if self.noise_multiplier >= 2.0 * self.count_stddev:
            raise ValueError(
                f"noise_multiplier={self.noise_multiplier} must be < 2 * count stddev "
                f"= batch_size/10 = {2.0 * self.count_stddev}: the noised clip count "
                "would use up the whole privacy budget; use a larger batch_size"
            )
        self.grad_noise_multiplier = (
            self.noise_multiplier ** -2 - (2.0 * self.count_stddev) ** -2
        ) ** -0.5
        self._clip_at_step = {}

    def clip_and_noise(self, per_sample_grads, step, epoch):
        C = self.clip_norm
        self._clip_at_step[step] = C
        norms = per_example_norms(per_sample_grads)
        scale = (C / (norms + 1e-6)).clamp(max=1.0)
        centred_count = ((norms <= C).to(norms.dtype) - 0.5).sum()

        out = []
        for g in per_sample_grads:
            clipped_sum = torch.tensordot(scale, g, dims=1)
            noise = torch.randn(g.shape[1:], dtype=g.dtype, device=g.device)
            out.append((clipped_sum + self.grad_noise_multiplier * C * noise)
                       / self.expected_batch_size)

        noisy_count = centred_count + self.count_stddev * torch.randn((), device=norms.device)
        unclipped_fraction = (float(noisy_count) / self.expected_batch_size + 0.5)
        unclipped_fraction = min(max(unclipped_fraction, 0.0), 1.0)
        self.clip_norm = C * math.exp(-CLIP_LEARNING_RATE * (unclipped_fraction - TARGET_QUANTILE))
        return out

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier

    def get_sensitivity(self, step, epoch):
        # The clip norm in force at `step` (the current one if the step has not run yet).
        return self._clip_at_step.get(step, self.clip_norm)
