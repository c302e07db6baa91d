"""sim: a SimPy discrete-event model of a chat system's transports.

Pure: functions take a :class:`Scenario` and return data; nothing here opens a
socket or a file. Typical use::

    from sim import Scenario, compare
    cmp = compare(Scenario().with_overrides({"clients": 500}))
    cmp.summary          # one row per transport
    cmp.messages         # one row per (message, recipient)
"""

from . import analytic
from .checks import window_warnings
from .params import PARAMETER_NAMES, ParameterError, Scenario, parse_assignment
from .replications import confidence_table, replicate_scenarios
from .results import RunResult
from .runner import Comparison, compare, run

__all__ = [
    "analytic",
    "Comparison",
    "PARAMETER_NAMES",
    "ParameterError",
    "RunResult",
    "Scenario",
    "compare",
    "confidence_table",
    "replicate_scenarios",
    "parse_assignment",
    "run",
    "window_warnings",
]
