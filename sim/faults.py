"""The fault of a ``chatlab crash`` run, as a scenario event of the one model.

At ``crash_at_s``, for ``downtime_s`` (``inf``: for good):

* ``servers``: the first ``crashed_servers`` connection servers crash (``crash_mode``: ``reset``,
  the kernel resets their connections; ``silent``, the host stops answering). Their CPU queue,
  their connections and what they held in memory are gone; their registry entries lapse
  ``registry_ttl_s`` after their last refresh.
* ``delivery``: the delivery service stops; pushes and long-poll wake-ups wait in a backlog
  drained in order at restart (the durable log keeps growing).
* ``partition``: the last ``partition_fraction`` of clients lose every packet to every server.
  Their servers live, notice the missed heartbeats and close the sessions.

Each affected client notices by its transport's rule (:meth:`sim.clients.Client.detect_time`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .clients import Proc

if TYPE_CHECKING:
    from .model import ChatModel


def run_fault(m: "ChatModel") -> Proc:
    env, sc, cluster = m.env, m.sc, m.cluster
    inc = m.incident
    assert inc is not None
    yield env.timeout(sc.crash_at_s)
    now = env.now
    if sc.fault == "servers":
        silent = sc.crash_mode == "silent"
        crashed = cluster.servers[:sc.crashed_servers]
        for s in crashed:
            m.delivery.server_crashed(s)
            s.crash(silent)
            cluster.registry.server_died(s, now)
        for c in m.clients:
            if c.server in crashed and not c.lost:
                if c.state is m.CONNECTED:
                    c.lose(now, silent)
                else:
                    c.lost = True  # not connected yet: its first attempt finds the server dead
    elif sc.fault == "delivery":
        m.delivery_alive = False
    else:
        k = max(1, int(round(sc.partition_fraction * sc.clients)))
        # a live server closes a session after missing its heartbeats; TTL 0 = the registry knows at once
        closes = now + sc.ws_heartbeat_s + sc.request_timeout_s
        for c in m.clients[sc.clients - k:]:
            c.cut = True
            cluster.registry.close(c.idx, now if sc.registry_ttl_s == 0 else closes)
            if not c.lost and c.state is m.CONNECTED:
                c.lose(now, silent=True, closed_at=closes)
    if not math.isfinite(sc.downtime_s):
        return
    yield env.timeout(sc.downtime_s)
    now = env.now
    if sc.fault == "servers":
        for s in cluster.servers[:sc.crashed_servers]:
            s.restart()
    elif sc.fault == "delivery":
        m.delivery_alive = True
        for c, ev in inc.backlog_out(now):
            env.process(m.delivery.later(c, ev))
    else:
        for c in m.clients:
            c.cut = False
