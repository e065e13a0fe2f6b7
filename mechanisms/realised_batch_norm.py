"""DP-SGD that averages over the realised batch size instead of the expected one.

Per-example global L2 clip to C = max_grad_norm, sum, add N(0, (σC)²), and divide
by B, the number of examples Poisson sampling actually drew this step (so the
noise std on the mean is σC/B). This is what a naive `.mean()` over the batch
does; get_effective_sigma reports σ.

EXPECTED VERDICT: fail

WHY: B is data: adding one example to the dataset changes B by one whenever it
is sampled. Dividing by B rescales both the signal and the noise, so the scale
of every output reveals B (its noise std is σC/B), a membership channel the
subsampled-Gaussian accounting of σ does not cover. The leak is largest when
batches are small (Opacus issues #571 and #819).
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

    def clip_and_noise(self, per_sample_grads, step, epoch):
        C = self.max_grad_norm
        batch = per_sample_grads[0].shape[0]
        norms = per_example_norms(per_sample_grads)
        scale = (C / (norms + 1e-6)).clamp(max=1.0)
        B = max(batch, 1)  # an empty batch would divide by zero

        out = []
        for g in per_sample_grads:
            clipped_sum = torch.tensordot(scale, g, dims=1)
            noise = torch.randn(g.shape[1:], dtype=g.dtype, device=g.device)
            out.append((clipped_sum + self.noise_multiplier * C * noise) / B)
        return out

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
