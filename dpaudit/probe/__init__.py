"""Black-box probe: drive a mechanism through a run and measure what it really does.

:func:`probe_mechanism` feeds the mechanism synthetic per-example gradients
(:mod:`~dpaudit.probe.gradients`), measures at every step, on copies of its
state, the realised noise scale and sensitivity with coupled random draws
(:mod:`~dpaudit.probe.measure`), looks for undeclared data-dependent state
(:mod:`~dpaudit.probe.state_leaks`) and returns a
:class:`~dpaudit.probe.result.ProbeResult`.
"""

from dpaudit.probe.driver import probe_mechanism
from dpaudit.probe.gradients import CANARY_NAMES, N_PARAMS, PARAM_SHAPES
from dpaudit.probe.result import BatchSizeDependence, ProbeResult
from dpaudit.probe.state_leaks import LeakFinding

__all__ = [
    "probe_mechanism",
    "ProbeResult",
    "LeakFinding",
    "BatchSizeDependence",
    "PARAM_SHAPES",
    "N_PARAMS",
    "CANARY_NAMES",
]
