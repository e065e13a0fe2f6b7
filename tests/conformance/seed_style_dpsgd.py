"""Plain DP-SGD in the seed's own idiom.

Per-example norms from ``torch.cat([g.reshape(batch_size, -1) ...])`` with
``batch_size`` the *realised* batch (so an empty batch raises in reshape), clip
to C, sum, add N(0, σ²C²) noise and divide by the *expected* batch size.

EXPECTED VERDICT: pass

WHY: exactly the Poisson-subsampled Gaussian mechanism with the σ it reports.
It cannot take an empty batch, which the run produces with probability about
e^-qN per step: a robustness note, not a refusal.
"""
import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.max_grad_norm = max_grad_norm
        self.noise_multiplier = noise_multiplier
        self.batch_size = batch_size

    def clip_and_noise(self, per_sample_grads, step, epoch):
        batch_size = per_sample_grads[0].shape[0]
        flat = torch.cat([g.reshape(batch_size, -1) for g in per_sample_grads], dim=1)
        factor = (self.max_grad_norm / flat.norm(2, dim=1).clamp(min=1e-8)).clamp(max=1.0)
        out = []
        for g in per_sample_grads:
            s = (g * factor.reshape([batch_size] + [1] * (g.dim() - 1))).sum(0)
            out.append((s + torch.randn_like(s) * self.noise_multiplier * self.max_grad_norm) / self.batch_size)
        return out

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
