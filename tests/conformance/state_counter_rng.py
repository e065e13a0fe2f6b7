"""DP-SGD whose noise comes from a call counter in its state (counter-based, as JAX's ``fold_in``).

Every call hashes ``(key, counter)`` (splitmix64, written out by hand) into
the seed of a fresh ``torch.Generator``, draws the noise for all parameters as
one vector, and increments the counter. No generator lives in the mechanism's
attributes and the global ones are never used, so the probe's seeding cannot
reach the draws; but a copy of the mechanism continues the same stream: the
probe's ``state`` coupling mode (per-call independent draws).

EXPECTED VERDICT: pass

WHY: correct DP-SGD (noise σC, expected-batch divisor), each call's draws
independent of the others. The probe measures the shift exactly (copies draw
alike) and the noise level from consecutive calls, pooled over windows of
steps with family-wise limits, so that a correct mechanism is not failed by
chance at one of tens of thousands of steps.
"""
import torch

_MASK = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class DPMechanism:
    def __init__(self, max_grad_norm, noise_multiplier, n_params, dataset_size, batch_size, epochs,
                 target_epsilon, target_delta):
        self.C, self.sigma, self.B = max_grad_norm, noise_multiplier, batch_size
        self.key, self.counter = 0xC0FFEE, 0

    def _noise(self, n, dtype):
        self.counter += 1
        gen = torch.Generator().manual_seed(splitmix64(self.key ^ splitmix64(self.counter)) >> 1)
        return torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)

    def clip_and_noise(self, per_sample_grads, step, epoch):
        b = per_sample_grads[0].shape[0]
        sizes = [g[0].numel() if b else g.shape[1:].numel() for g in per_sample_grads]
        flat = torch.cat([g.reshape(b, n) for g, n in zip(per_sample_grads, sizes)], dim=1)
        w = (self.C / (flat.norm(dim=1) + 1e-6)).clamp(max=1.0)
        noised = (w @ flat + self.sigma * self.C * self._noise(sum(sizes), flat.dtype)) / self.B
        return [part.reshape(g.shape[1:]) for part, g in zip(noised.split(sizes), per_sample_grads)]

    def get_effective_sigma(self, step, epoch):
        return self.sigma
