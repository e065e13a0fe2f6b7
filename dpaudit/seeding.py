"""Deterministic seeds derived from integers, shared by the probe, the audits and the trainer."""

_MASK64 = (1 << 64) - 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 mixing; fast and order-sensitive).

    Seeds are derived per (run seed, step, purpose, ...) rather than drawn from
    one stream, so an interrupted audit that resumes draws exactly the same
    numbers as one that ran through.
    """
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        x = z ^ (z >> 31)
    return x >> 1
