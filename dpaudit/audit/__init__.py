"""Empirical privacy audits: lower bounds on ε from membership-inference scores."""
