"""DP-SGD that clips the per-sample gradients it is handed in place (``mul_``, ``add_``).

EXPECTED VERDICT: pass

WHY: editing its input changes nothing about the released output: the
mechanism is plain DP-SGD with the σ it reports. The probe notices the edits
and hands every call its own copy.
"""
import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C = max_grad_norm
        self.sigma = noise_multiplier
        self.B = batch_size

    def clip_and_noise(self, per_sample_grads, step, epoch):
        n = per_sample_grads[0].shape[0]
        sq = torch.zeros(n, dtype=per_sample_grads[0].dtype)
        for g in per_sample_grads:
            sq.add_(g.reshape(n, -1).pow(2).sum(1))
        factor = sq.sqrt_().add_(1e-6).reciprocal_().mul_(self.C).clamp_(max=1.0)
        out = []
        for g in per_sample_grads:
            g.mul_(factor.view(-1, *([1] * (g.dim() - 1))))
            s = g.sum(0)
            s.add_(torch.randn_like(s), alpha=self.sigma * self.C).div_(self.B)
            out.append(s)
        return out

    def get_effective_sigma(self, step, epoch):
        return self.sigma
