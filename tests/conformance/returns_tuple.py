"""DP-SGD that returns a tuple (not a list) and flattens all parameters into one vector first.

EXPECTED VERDICT: pass

WHY: plain DP-SGD with the σ it reports; a tuple of tensors is as good as a list.
"""
import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.max_grad_norm, self.noise_multiplier, self.batch_size = max_grad_norm, noise_multiplier, batch_size

    def clip_and_noise(self, per_sample_grads, step, epoch):
        shapes = [g.shape[1:] for g in per_sample_grads]
        flat = torch.cat([g.flatten(start_dim=1) for g in per_sample_grads], dim=1)
        clipped = flat * (self.max_grad_norm / (flat.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)
        noisy = clipped.sum(0) + torch.randn(flat.shape[1], dtype=flat.dtype) * self.noise_multiplier * self.max_grad_norm
        noisy = noisy / self.batch_size
        return tuple(part.view(shape) for part, shape in zip(noisy.split([s.numel() for s in shapes]), shapes))

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
