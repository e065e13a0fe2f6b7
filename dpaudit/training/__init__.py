"""Training models with a DP mechanism in the loop (the unit of work of a training audit)."""
