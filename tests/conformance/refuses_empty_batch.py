"""DP-SGD that refuses an empty batch with a clear exception.

EXPECTED VERDICT: pass

WHY: correct DP-SGD. An empty batch has probability about e^-qN per step of a
Poisson run (e^-256 at q = 256/60000), so refusing it is a robustness note in
the output, not an input error, and the probe measures without empty batches.
"""
import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C, self.sigma, self.B = max_grad_norm, noise_multiplier, batch_size

    def clip_and_noise(self, per_sample_grads, step, epoch):
        if per_sample_grads[0].shape[0] == 0:
            raise ValueError("empty batch: this mechanism needs at least one example per step")
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in per_sample_grads]).norm(dim=0)
        w = torch.clamp(self.C / (norms + 1e-6), max=1.0)
        return [(torch.einsum("i,i...->...", w, g) + self.sigma * self.C * torch.randn_like(g[0])) / self.B
                for g in per_sample_grads]

    def get_effective_sigma(self, step, epoch):
        return self.sigma
