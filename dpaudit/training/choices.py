"""The training audit's enumerated options, torch-free, so that the CLI can offer them as ``choices=``
before torch is imported."""

#: Canary kinds and the threat model each is scored under.
CANARY_KINDS = ("dirac", "mislabeled", "ood")
THREAT_MODELS = ("white-box", "black-box")
THREAT_MODEL_OF = {"dirac": "white-box", "mislabeled": "black-box", "ood": "black-box"}
#: Where chunks of models train (dpaudit.training.backends).
BACKENDS = ("local", "ray")
#: How the mechanisms are called: "auto" (vmap when the mechanism allows it) or "loop".
VECTORIZE = ("auto", "loop")
#: How to install the optional Ray backend.
RAY_INSTALL_HINT = 'pip install -e ".[ray]"'
