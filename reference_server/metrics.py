"""A few Prometheus metrics in the text exposition format (version 0.0.4), without a
dependency: counters and gauges with labels, and one histogram.

Bytes are body bytes (JSON as :func:`chatcore.encode` produces it), not headers or
frame overhead: the simulation adds those from its own model.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable


Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Metric:
    """A counter or gauge family: ``inc``/``set`` per label set."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] = value

    def get(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, v in sorted(self.values.items()):
            lines.append(f"{self.name}{_fmt_labels(labels)} {_num(v)}")
        return lines


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus expects."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, c in zip(self.buckets, self.counts):
            running += c
            lines.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {_num(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Metrics:
    """The server's metrics. ``transport`` labels are chatcore.TRANSPORTS plus ``api``
    (register, login, send, receipts, history, presence over HTTP)."""

    def __init__(self) -> None:
        self.requests = Metric("chatlab_requests_total", "counter",
                               "HTTP requests, or WebSocket frames received, per transport")
        self.bytes_in = Metric("chatlab_received_bytes_total", "counter",
                               "Body bytes received per transport")
        self.bytes_out = Metric("chatlab_sent_bytes_total", "counter", "Body bytes sent per transport")
        self.events_out = Metric("chatlab_events_sent_total", "counter", "Events sent to clients per transport")
        self.open_connections = Metric("chatlab_open_connections", "gauge", "Open WebSocket connections")
        self.held_longpolls = Metric("chatlab_held_long_polls", "gauge", "Long polls waiting for an event")
        self.queue_lag = Metric("chatlab_queue_lag", "gauge",
                                "Delivery queue entries not yet acknowledged (XLEN of the stream)")
        self.dead_letters = Metric("chatlab_dead_letters_total", "counter", "Poison queue entries dead-lettered")
        self.slow_consumers = Metric("chatlab_slow_consumer_closes_total", "counter",
                                     "WebSockets closed with 4008 because their send queue was full")
        self.rejected = Metric("chatlab_rejected_requests_total", "counter", "Refused requests per status")
        self.delivery_latency = Histogram(
            "chatlab_delivery_latency_seconds",
            "Per queued item: from its queue append to its fan-out being committed and pushed",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
        self.group_recreated = Metric("chatlab_queue_group_recreated_total", "counter",
                                      "Times the delivery queue's consumer group was created again "
                                      "(Redis lost it)")
        self.overloaded = Metric("chatlab_admission_refused_total", "counter",
                                 "Writes refused 429 overloaded, by the signal past its bound")
        self.batch_jobs = Metric("chatlab_commit_jobs_total", "counter", "Writes committed by the group committer")
        self.batches = Metric("chatlab_commit_batches_total", "counter", "Group commits (transactions)")
        self._ws_frames_in = self._ws_bytes_in = self._ws_bytes_out = self._ws_events_out = 0
        #: Live events the hub pushed to WebSockets and their bytes (set by a collector).
        self.pushed_events = self.pushed_bytes = 0
        #: Called before rendering, to copy counters kept elsewhere (hub, committer) in.
        self.collectors: list[Callable[["Metrics"], None]] = []
        self.open_connections.set(0, transport="websocket")
        self.held_longpolls.set(0)
        self.queue_lag.set(0)

    # --- WebSocket frames: plain integer counters on the hot path, folded into the
    # labelled families when rendered -------------------------------------------------
    def ws_received(self, nbytes: int) -> None:
        """One text frame of *nbytes* received on a WebSocket."""
        self._ws_frames_in += 1
        self._ws_bytes_in += nbytes

    def ws_sent(self, nbytes: int, events: int) -> None:
        """*nbytes* of frames and *events* events sent on WebSockets (outside the hub's pushes)."""
        self._ws_bytes_out += nbytes
        self._ws_events_out += events

    def traffic(self, transport: str, bytes_in: int, bytes_out: int, events: int = 0) -> None:
        """Count one request (or frame) of *transport* and its body bytes."""
        self.requests.inc(transport=transport)
        if bytes_in:
            self.bytes_in.inc(bytes_in, transport=transport)
        if bytes_out:
            self.bytes_out.inc(bytes_out, transport=transport)
        if events:
            self.events_out.inc(events, transport=transport)

    def render(self) -> str:
        for collect in self.collectors:
            collect(self)
        ws = {"transport": "websocket"}
        self.requests.set(self._ws_frames_in, **ws)
        self.bytes_in.set(self._ws_bytes_in, **ws)
        self.bytes_out.set(self._ws_bytes_out + self.pushed_bytes, **ws)
        self.events_out.set(self._ws_events_out + self.pushed_events, **ws)
        families: list[Metric | Histogram] = [
            self.requests, self.bytes_in, self.bytes_out, self.events_out, self.open_connections,
            self.held_longpolls, self.queue_lag, self.dead_letters, self.slow_consumers, self.rejected,
            self.group_recreated, self.overloaded, self.batch_jobs, self.batches, self.delivery_latency]
        return "\n".join(line for f in families for line in f.render()) + "\n"
