"""The bridge between the simulation and the reference server, server side: a load
generator of real clients (:func:`run_load`), a counting and delaying TCP proxy
(:class:`CountingProxy`), the server as a separate process (:class:`ServerProcess`)
and the calibration measurements (:mod:`.calibrate`). It never imports ``sim``;
``chatlab/validation.py`` puts the two side by side.
"""

from .proxy import CountingProxy, Counters
from .runner import LoadConfig, LoadResult, result_json, run_load
from .process import ServerFailed, ServerProcess, cpu_seconds

__all__ = ["CountingProxy", "Counters", "LoadConfig", "LoadResult", "ServerFailed", "ServerProcess",
           "cpu_seconds", "result_json", "run_load"]
