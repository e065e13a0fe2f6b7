"""DP-SGD drawing its noise from a seeded numpy Generator kept as an attribute.

EXPECTED VERDICT: pass

WHY: a correct Gaussian mechanism. The probe finds ``self.rng`` and reseeds it
before every call, so its draws are coupled as torch's would be.
"""
import numpy as np
import torch


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C = float(max_grad_norm)
        self.sigma = float(noise_multiplier)
        self.B = batch_size
        self.rng = np.random.default_rng(12345)

    def clip_and_noise(self, per_sample_grads, step, epoch):
        b = per_sample_grads[0].shape[0]
        sq = sum((g.reshape(b, -1) ** 2).sum(1) for g in per_sample_grads) if b else torch.zeros(0)
        scale = np.minimum(1.0, self.C / (np.sqrt(sq.numpy()) + 1e-12))
        out = []
        for g in per_sample_grads:
            summed = np.tensordot(scale, g.numpy(), axes=1) if b else np.zeros(g.shape[1:])
            noised = (summed + self.rng.normal(0.0, self.sigma * self.C, size=g.shape[1:])) / self.B
            out.append(torch.from_numpy(np.asarray(noised)).to(g.dtype))
        return out

    def get_effective_sigma(self, step, epoch):
        return self.sigma
