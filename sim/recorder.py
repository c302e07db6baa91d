"""What the model counts while it runs: plain counters and flat lists, turned
into tidy tables by :mod:`sim.results` once the run is over.

Rates count only what happens inside the measurement window
``[warmup_s, duration_s]``; the per-bin counters keep the whole run so the
warm-up shows in time plots.
"""

from __future__ import annotations

import math

from chatcore.tables import ALL_COUNTERS, CPU_BUSY, CPU_N, CPU_WAIT, DOWN, OVH_DOWN, OVH_UP, PAY_DOWN, PAY_UP, UP

__all__ = ["Recorder", "UP", "DOWN", "OVH_UP", "PAY_UP", "OVH_DOWN", "PAY_DOWN", "CPU_N", "CPU_BUSY", "CPU_WAIT"]


class Recorder:
    def __init__(self, warmup_s: float, duration_s: float, end_s: float, bin_s: float,
                 keep_cpu_samples: bool = False):
        self.w0, self.w1, self.end = warmup_s, duration_s, end_s
        self.bin_s = bin_s
        nb = int(math.ceil(end_s / bin_s)) + 1
        self.n_bins = nb
        self.classes: dict[str, list[float]] = {}
        self.b_up = [0] * nb
        self.b_ovh_up = [0] * nb
        self.b_pay_up = [0] * nb
        self.b_ovh_down = [0] * nb
        self.b_pay_down = [0] * nb
        self.cpu_bins: list[list[float]] = []  # per server: CPU seconds started in each bin (new_cpu_bins)
        self.b_deliveries = [0] * nb
        self.poll_responses = 0
        self.empty_responses = 0
        # open connections and held requests, as intervals [start, end)
        self.conn_start: list[float] = []
        self.conn_end: list[float] = []
        self.held_start: list[float] = []
        self.held_end: list[float] = []
        # one row per (message, recipient) delivery
        self.d_msg: list[int] = []
        self.d_recipient: list[int] = []
        self.d_available: list[float] = []
        self.d_received: list[float] = []
        # one row per receipt that reached the message's sender
        self.r_msg: list[int] = []
        self.r_status: list[str] = []
        self.r_sent: list[float] = []
        self.r_received: list[float] = []
        self.keep_cpu_samples = keep_cpu_samples
        self.cpu_samples: list[tuple[str, float, float, float]] = []  # op, arrival, start, end

    def _cls(self, name: str) -> list[float]:
        c = self.classes.get(name)
        if c is None:
            c = self.classes[name] = [0] * ALL_COUNTERS
        return c

    def up(self, name: str, now: float, overhead: int, payload: int) -> None:
        """A client->server request or frame that reached the server at *now*."""
        b = int(now / self.bin_s)
        self.b_up[b] += 1
        self.b_ovh_up[b] += overhead
        self.b_pay_up[b] += payload
        if self.w0 <= now <= self.w1:
            c = self._cls(name)
            c[UP] += 1
            c[OVH_UP] += overhead
            c[PAY_UP] += payload

    def down(self, name: str, now: float, overhead: int, payload: int) -> None:
        """A server->client response or frame that left the server at *now*."""
        b = int(now / self.bin_s)
        self.b_ovh_down[b] += overhead
        self.b_pay_down[b] += payload
        if self.w0 <= now <= self.w1:
            c = self._cls(name)
            c[DOWN] += 1
            c[OVH_DOWN] += overhead
            c[PAY_DOWN] += payload

    def new_cpu_bins(self) -> list[float]:
        """A server's own per-bin CPU seconds (the crash tables show each server's)."""
        bins = [0.0] * self.n_bins
        self.cpu_bins.append(bins)
        return bins

    @property
    def b_cpu(self) -> list[float]:
        """CPU seconds started in each bin, all servers together."""
        if len(self.cpu_bins) == 1:
            return self.cpu_bins[0]
        return [sum(col) for col in zip(*self.cpu_bins)] if self.cpu_bins else [0.0] * self.n_bins

    def poll(self, name: str, arrive: float, start: float, service: float, now: float, req_hdr: int,
             resp_hdr: int, body: int, n_events: int, cpu_bins: list[float]) -> None:
        """One whole poll at once (the model's hottest path): the request that reached the
        server at *arrive*, its CPU from *start*, and the response that left at *now*.
        Same bookkeeping as up() + cpu() + down() + poll_response() + held()."""
        w = self.bin_s
        b = int(arrive / w)
        self.b_up[b] += 1
        self.b_ovh_up[b] += req_hdr
        cpu_bins[int(start / w)] += service
        b = int(now / w)
        self.b_ovh_down[b] += resp_hdr
        self.b_pay_down[b] += body
        self.held_start.append(arrive)
        self.held_end.append(now)
        if self.keep_cpu_samples:
            self.cpu_samples.append((name, arrive, start, start + service))
        w0, w1 = self.w0, self.w1
        if w0 <= arrive <= w1 or w0 <= now <= w1 or w0 <= start <= w1:
            c = self._cls(name)
            if w0 <= arrive <= w1:
                c[UP] += 1
                c[OVH_UP] += req_hdr
            if w0 <= start <= w1:
                c[CPU_N] += 1
                c[CPU_BUSY] += service
                c[CPU_WAIT] += start - arrive
            if w0 <= now <= w1:
                c[DOWN] += 1
                c[OVH_DOWN] += resp_hdr
                c[PAY_DOWN] += body
                self.poll_responses += 1
                if n_events == 0:
                    self.empty_responses += 1

    def poll_response(self, now: float, n_events: int) -> None:
        if self.w0 <= now <= self.w1:
            self.poll_responses += 1
            if n_events == 0:
                self.empty_responses += 1

    def cpu(self, op: str, arrival: float, start: float, service: float, cpu_bins: list[float]) -> None:
        """One CPU use of *service* seconds on the server whose bins are *cpu_bins*."""
        cpu_bins[int(start / self.bin_s)] += service
        if self.w0 <= start <= self.w1:
            c = self._cls(op)
            c[CPU_N] += 1
            c[CPU_BUSY] += service
            c[CPU_WAIT] += start - arrival
        if self.keep_cpu_samples:
            self.cpu_samples.append((op, arrival, start, start + service))

    def connection(self, start: float, end: float) -> None:
        self.conn_start.append(start)
        self.conn_end.append(end)

    def held(self, start: float, end: float) -> None:
        self.held_start.append(start)
        self.held_end.append(end)

    def delivery(self, msg: int, recipient: int, available: float, received: float) -> None:
        self.d_msg.append(msg)
        self.d_recipient.append(recipient)
        self.d_available.append(available)
        self.d_received.append(received)
        b = int(received / self.bin_s)
        if b < self.n_bins:
            self.b_deliveries[b] += 1

    def receipt(self, msg: int, status: str, sent: float, received: float) -> None:
        self.r_msg.append(msg)
        self.r_status.append(status)
        self.r_sent.append(sent)
        self.r_received.append(received)
