"""Names and defaults shared by the library and the CLI.

Plain constants with no imports, so that the CLI can build its flags (their
``choices=`` and the defaults its help prints) before numpy, torch or any
accountant library is loaded.
"""

#: The accountants dpaudit computes ε with, in the order tables list them.
ACCOUNTANT_NAMES = ("rdp", "pld", "prv", "gdp")
#: Accountants that may calibrate a noise multiplier for certify and audit (upper bounds only).
CALIBRATION_ACCOUNTANTS = ("prv", "pld", "rdp")
#: The seed harness calibrates σ with PRV; certify and audit do the same unless told otherwise.
DEFAULT_CALIBRATION_ACCOUNTANT = "prv"
#: Canary-audit runs per side, and the wall-clock budget its default plan aims at (seconds).
DEFAULT_RUNS = 1000
DEFAULT_TIME_BUDGET = 60.0
#: Family-wise confidence of an audit's verdict.
DEFAULT_CONFIDENCE = 0.95
#: Where audits keep their runs (to resume them) unless told otherwise.
DEFAULT_RESULTS_DIR = "dpaudit-results"
#: What ``dpaudit audit --level`` can audit.
AUDIT_LEVELS = ("mechanism", "training")
