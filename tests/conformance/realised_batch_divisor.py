"""DP-SGD in the seed's idiom that divides by the realised batch size.

``batch_size = per_sample_grads[0].shape[0]`` is used for the reshape *and*
for the final division, so the noise std is σC/B with B the realised batch.

EXPECTED VERDICT: fail

WHY: the output's noise scale is σC/B: it reveals the realised batch size,
i.e. whether an example was sampled (Opacus #571 / #819).
"""
import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.max_grad_norm = max_grad_norm
        self.noise_multiplier = noise_multiplier

    def clip_and_noise(self, per_sample_grads, step, epoch):
        batch_size = per_sample_grads[0].shape[0]
        flat = torch.cat([g.reshape(batch_size, -1) for g in per_sample_grads], dim=1)
        factor = (self.max_grad_norm / flat.norm(2, dim=1).clamp(min=1e-8)).clamp(max=1.0)
        total = (flat * factor[:, None]).sum(0)
        noised = (total + torch.randn_like(total) * self.noise_multiplier * self.max_grad_norm) / batch_size
        parts = torch.split(noised, [g[0].numel() for g in per_sample_grads])
        return [part.reshape(g.shape[1:]) for part, g in zip(parts, per_sample_grads)]

    def get_effective_sigma(self, step, epoch):
        return self.noise_multiplier
