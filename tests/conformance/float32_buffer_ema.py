"""DP-SGD returning an EMA of its noised updates, kept in float32 buffers updated in place.

The buffers are ``torch.zeros(shape)`` (float32) and are updated in place with
``lerp_``, which insists on one dtype: given float64 gradients it raises, so
this mechanism only runs on float32 gradients (what real training produces).

EXPECTED VERDICT: pass

WHY: correct DP-SGD noise (σC, expected-batch divisor); the EMA of noised
outputs is post-processing. The probe's float64 gradients are refused, so it
probes with float32 ones and says so.
"""
import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C, self.sigma, self.B = max_grad_norm, noise_multiplier, batch_size
        self.buffers = None

    def clip_and_noise(self, per_sample_grads, step, epoch):
        if self.buffers is None:
            self.buffers = [torch.zeros(g.shape[1:]) for g in per_sample_grads]
        b = per_sample_grads[0].shape[0]
        norms = torch.cat([g.reshape(b, -1) for g in per_sample_grads], 1).norm(dim=1) if b \
            else torch.zeros(0, dtype=per_sample_grads[0].dtype)
        w = (self.C / (norms + 1e-6)).clamp(max=1.0)
        out = []
        for buf, g in zip(self.buffers, per_sample_grads):
            noised = (torch.tensordot(w, g, dims=1) + self.sigma * self.C * torch.randn(g.shape[1:], dtype=g.dtype)) / self.B
            buf.lerp_(noised, 0.5)
            out.append(buf.clone())
        return out

    def get_effective_sigma(self, step, epoch):
        return self.sigma
