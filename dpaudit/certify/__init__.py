"""``dpaudit certify``: account for what a mechanism declares, measure what it does, give a verdict."""

from dpaudit.certify.run import CertifyResult, certify, default_noise_multiplier, default_sigma_source

__all__ = ["CertifyResult", "certify", "default_noise_multiplier", "default_sigma_source"]
