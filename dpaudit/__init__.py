"""dpaudit: does a DP training mechanism stay inside the (ε, δ) budget it claims?"""

__version__ = "0.1.0"
