"""DP-SGD with a hand-written counter-based generator kept in its state (per-call independent draws).

Every call derives its noise from ``(key, counter)`` with a splitmix64 hash and
a Box-Muller transform written out by hand, then increments the counter: no
torch, numpy or Python generator is involved, so seeding cannot reach it, but
a copy of the mechanism continues the same stream (the probe's ``state``
coupling mode).

EXPECTED VERDICT: pass

WHY: correct DP-SGD (noise σC, expected-batch divisor); each call's draws are
independent. The probe measures the shift exactly (copies draw alike) and the
noise level from consecutive calls, pooled over steps.
"""
import math

import torch

_MASK = (1 << 64) - 1


def _splitmix(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class CounterNormal:
    def __init__(self, key):
        self.key, self.counter = key, 0

    def normal(self, shape, dtype):
        self.counter += 1
        n = math.prod(shape)
        seed = torch.tensor(_splitmix(self.key ^ _splitmix(self.counter)) >> 2, dtype=torch.int64)
        i = torch.arange(n + (n % 2), dtype=torch.int64)
        # a cheap counter hash in int64 arithmetic, then Box-Muller
        h = (i * 0x5851F42D4C957F2D + seed) & 0x7FFFFFFFFFFFFFFF
        h = h ^ (h >> 29)
        h = (h * 0x2545F4914F6CDD1D) & 0x7FFFFFFFFFFFFFFF
        h = h ^ (h >> 32)
        u = ((h & 0xFFFFFFFFFFFF).to(torch.float64) + 0.5) / float(1 << 48)
        u1, u2 = u[0::2], u[1::2]
        r = torch.sqrt(-2.0 * torch.log(u1))
        z = torch.cat([r * torch.cos(2 * math.pi * u2), r * torch.sin(2 * math.pi * u2)])[:n]
        return z.reshape(shape).to(dtype)


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C, self.sigma, self.B = max_grad_norm, noise_multiplier, batch_size
        self.rng = CounterNormal(key=0xC0FFEE)

    def clip_and_noise(self, per_sample_grads, step, epoch):
        b = per_sample_grads[0].shape[0]
        norms = torch.stack([g.reshape(b, -1).norm(dim=1) for g in per_sample_grads], 1).norm(dim=1) \
            if b else torch.zeros(0, dtype=per_sample_grads[0].dtype)
        w = (self.C / (norms + 1e-6)).clamp(max=1.0)
        return [(torch.tensordot(w, g, dims=1) + self.sigma * self.C * self.rng.normal(g.shape[1:], g.dtype)) / self.B
                for g in per_sample_grads]

    def get_effective_sigma(self, step, epoch):
        return self.sigma
