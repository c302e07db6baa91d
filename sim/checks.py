"""Parameter pairs that make a run measure something other than what its user asks for.

A scenario can be valid field by field and still lie: a measurement window that opens while
clients are still connecting reports a fraction of the steady load as if it were the steady
load. :func:`window_warnings` names each such trap in one line; the CLI prints them on stderr
and adds them to its JSON (``"warnings"``), and the run goes on (a user may mean to measure
the ramp).
"""

from __future__ import annotations

from .params import Scenario


def window_warnings(sc: Scenario, *, crash: bool = False) -> list[str]:
    """One line per trap in *sc* (``crash``: also the fault's timing)."""
    out: list[str] = []
    w0, w1 = sc.warmup_s, sc.duration_s
    if w0 < sc.connect_ramp_s:
        out.append(f"warmup_s={w0:g} < connect_ramp_s={sc.connect_ramp_s:g}: the measurement window opens while "
                   "clients are still connecting, so rates and connection counts are below the steady state")
    if "long_polling" in sc.transports and w0 < sc.long_poll_timeout_s:
        out.append(f"warmup_s={w0:g} < long_poll_timeout_s={sc.long_poll_timeout_s:g}: the window opens before "
                   "the first held long polls time out, so empty responses are undercounted")
    if "short_polling" in sc.transports and w1 - w0 < sc.poll_interval_s:
        out.append(f"duration_s - warmup_s = {w1 - w0:g} s < poll_interval_s={sc.poll_interval_s:g}: the window "
                   "is shorter than one poll interval, so each client's polls are counted 0 or 1 times")
    if "websocket" in sc.transports and w1 - w0 < sc.ws_heartbeat_s:
        out.append(f"duration_s - warmup_s = {w1 - w0:g} s < ws_heartbeat_s={sc.ws_heartbeat_s:g}: the window "
                   "is shorter than one heartbeat, so the ping rate depends on where it falls")
    if crash:
        if not w0 <= sc.crash_at_s <= w1:
            out.append(f"crash_at_s={sc.crash_at_s:g} is outside the measurement window [{w0:g}, {w1:g}]: "
                       + ("the fault starts after the window (and the last send), so the window measures no fault"
                          if sc.crash_at_s > w1 else
                          "the fault starts during the warm-up, while the window's rates are not yet steady"))
        if sc.crash_at_s < sc.connect_ramp_s:
            out.append(f"crash_at_s={sc.crash_at_s:g} < connect_ramp_s={sc.connect_ramp_s:g}: the fault strikes "
                       "while clients are still making their first connects")
    return out
