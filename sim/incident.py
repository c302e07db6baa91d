"""What a fault run counts beside the transport model's :class:`sim.recorder.Recorder`:
sessions, connect attempts and their fates, replay, loss, duplicates and presence flaps.
Only a run with a fault (``chatlab crash``) has one; :mod:`sim.crash` turns it into tables."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .clients import Client, LogEvent


class IncidentRecorder:
    def __init__(self, n_bins: int, bin_s: float, crash_at_s: float):
        self.n_bins, self.bin_s, self.crash_at = n_bins, bin_s, crash_at_s
        nb = n_bins
        self.b_attempts, self.b_accepted = [0] * nb, [0] * nb
        self.b_rejected, self.b_timed_out, self.b_wasted = [0] * nb, [0] * nb, [0] * nb
        self.b_replay_bytes = [0] * nb
        self.sess_start: list[float] = []
        self.sess_end: list[float] = []
        self.backlog: list[tuple["Client", "LogEvent"]] = []
        self.backlog_start: list[float] = []
        self.backlog_end: list[float] = []
        self.d_via: list[str] = []  # one per Recorder delivery, in the same order
        self.duplicates = 0
        self.recovered = 0
        self.resends = 0
        self.resends_deduplicated = 0
        self.lost_in_memory = 0       # direct: held by a server that crashed
        self.lost_to_dead_server = 0  # direct: forwarded to a server that was already dead
        self.flaps = 0

    def _bin(self, t: float) -> int:
        return min(int(t / self.bin_s), self.n_bins - 1)

    # --- connects ------------------------------------------------------------------------
    def attempt(self, t: float) -> None:
        self.b_attempts[self._bin(t)] += 1

    def accepted(self, t: float) -> None:
        self.b_accepted[self._bin(t)] += 1

    def rejected(self, t: float) -> None:
        self.b_rejected[self._bin(t)] += 1

    def timed_out(self, t: float) -> None:
        self.b_timed_out[self._bin(t)] += 1

    def wasted(self, t: float) -> None:
        self.b_wasted[self._bin(t)] += 1

    # --- sessions -----------------------------------------------------------------------------
    def session_began(self, c: "Client", t: float) -> None:
        self.sess_start.append(t)
        if c.session == 1:  # a first connect (reconnects count their attempts themselves)
            self.attempt(t)
            self.accepted(t)
        if c.affected and t > c.offline_at and t >= self.crash_at:
            self.flaps += 1  # contacts saw offline, now online again
        c.offline_at = math.inf
        if c.affected and c.reconnected_at == math.inf:
            c.reconnected_at = t

    def session_ended(self, t: float) -> None:
        self.sess_end.append(t)

    # --- events ---------------------------------------------------------------------------------
    def delivered(self, c: "Client", ev: "LogEvent", at: float) -> None:
        via = ev.via or c.via
        self.d_via.append(via)
        if ev.via is not None and c.affected:
            self.recovered += 1  # missed because of the fault, delivered by the resume or a reclaim

    def replay(self, t: float, nbytes: int) -> None:
        """A resume carried *nbytes* of missed events (counted on reconnects only)."""
        self.b_replay_bytes[self._bin(t)] += nbytes

    def backlog_in(self, t: float, items: list[tuple["Client", "LogEvent"]]) -> None:
        self.backlog.extend(items)
        self.backlog_start.extend([t] * len(items))

    def backlog_out(self, t: float) -> list[tuple["Client", "LogEvent"]]:
        items, self.backlog = self.backlog, []
        self.backlog_end.extend([t] * len(items))
        return items
