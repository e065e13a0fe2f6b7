"""DP-SGD with its own ``torch.Generator`` attribute, seeded once in the constructor.

EXPECTED VERDICT: pass

WHY: a correct Gaussian mechanism; the probe finds ``self.generator`` and
reseeds it before every call.
"""
import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.max_grad_norm = max_grad_norm
        self.noise_multiplier = noise_multiplier
        self.expected_batch_size = batch_size
        self.generator = torch.Generator()
        self.generator.manual_seed(2024)

    def clip_and_noise(self, per_sample_grads, step, epoch):
        n = per_sample_grads[0].shape[0]
        if n == 0:
            summed = [torch.zeros_like(g[0]) if g.shape[0] else torch.zeros(g.shape[1:], dtype=g.dtype)
                      for g in per_sample_grads]
        else:
            norms = torch.stack([g.flatten(1).norm(dim=1) for g in per_sample_grads], 1).norm(dim=1)
            coef = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            summed = [(coef.view(-1, *([1] * (g.dim() - 1))) * g).sum(0) for g in per_sample_grads]
        std = self.noise_multiplier * self.max_grad_norm
        return [(s + std * torch.randn(s.shape, generator=self.generator, dtype=s.dtype)) / self.expected_batch_size
                for s in summed]

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
