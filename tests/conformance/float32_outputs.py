"""DP-SGD that works in float32 whatever it is given, and returns float32 tensors.

EXPECTED VERDICT: pass

WHY: a correct Gaussian mechanism; computing in float32 only adds rounding
far below the noise, and the probe compares outputs in float64.
"""
import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C = float(max_grad_norm)
        self.sigma = float(noise_multiplier)
        self.B = float(batch_size)

    def clip_and_noise(self, per_sample_grads, step, epoch):
        grads = [g.float() for g in per_sample_grads]
        b = grads[0].shape[0]
        norms = torch.cat([g.reshape(b, -1) for g in grads], 1).norm(dim=1) if b else torch.zeros(0)
        w = (self.C / (norms + 1e-6)).clamp(max=1.0)
        return [((w.reshape(-1, *([1] * (g.dim() - 1))) * g).sum(0)
                 + self.sigma * self.C * torch.randn(g.shape[1:])) / self.B for g in grads]

    def get_effective_sigma(self, step, epoch):
        return self.sigma
