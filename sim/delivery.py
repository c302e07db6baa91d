"""Delivery designs (``delivery_design``), as strategies of the one model.

* :class:`QueueDelivery` (``queue``, the reference server): a send is appended to the ordered
  queue and persistence (``queue_latency_ms + persist_latency_ms``) before it is acknowledged;
  each recipient's log is durable. The delivery service (``delivery_latency_ms``) pushes the
  event to the connection the session registry names, or wakes its held long poll; a push into
  a dead connection is never confirmed and is reclaimed after ``visibility_timeout_s``. A
  resume reads the log from the client's cursor, so a crashed connection server loses nothing.
* :class:`DirectDelivery` (``direct``): the connection server acknowledges at once and forwards
  the message in memory to the recipient's connection server, found in the session registry
  (``delivery_latency_ms``). What a server holds (a recipient's pending events; messages kept
  for a recipient with no session) dies with it, and so does whatever is forwarded to a server
  the registry still names after it died.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import simpy

from .clients import MSG, Client, LogEvent, Proc
from .cluster import Server
from .incident import IncidentRecorder

if TYPE_CHECKING:
    from .model import ChatModel


class QueueDelivery:
    name = "queue"

    def __init__(self, m: "ChatModel"):
        self.m = m
        self.store_s = m.store_s
        # Only a run with a fault resumes from the log, resends or sees a duplicate: without one,
        # keeping every event, stored id and seen id for it only makes the garbage collector walk
        # them (10-25 % of a WebSocket run's time).
        self.keep_log = m.incident is not None

    @property
    def inc(self) -> IncidentRecorder:
        """The fault run's counters (only a fault makes the paths that count)."""
        inc = self.m.incident
        assert inc is not None
        return inc

    # --- sending ----------------------------------------------------------------------------
    def send(self, i: int) -> Proc:
        """Message *i*: upload, durable append, acknowledgement, then the recipients' logs."""
        m = self.m
        sender = m.clients[int(m.wl.sender[i])]
        sent = m.env.now
        started = float(m.wl.start_time[sender.idx])
        if started > sent:  # the user's app is not running yet: it sends once it starts
            yield m.env.timeout(started - sent)
        if sender.lost:
            sender.outbox.append(i)  # the session is gone: sent after the next reconnect
            return
        server, session = sender.server, sender.session
        epoch = server.epoch
        arrived = yield from sender.upload(MSG, m.send_body)
        if arrived is None:
            sender.outbox.append(i)  # no acknowledgement: the client resends after reconnecting
            return
        yield self.store(server)
        if self.keep_log:  # only a fault resends
            if i in m.stored:
                self.inc.resends_deduplicated += 1  # idempotency key: the resend finds it stored
                if server.epoch == epoch and not sender.lost:
                    sender.acked(MSG, arrived, session)
                return
            m.stored.add(i)
        if server.epoch != epoch or sender.lost or (session and sender.session != session):
            sender.outbox.append(i)  # stored, but the ack died with the session: resent, then deduplicated
        else:
            sender.acked(MSG, arrived, session)
        yield from self.publish(m.recipients(i, sender.idx), MSG, i, m.sizes.message_event, sent, server)

    def store(self, server: Server) -> simpy.Event:
        """What a write (a send or a receipt) that *server* has worked on waits for before it is
        acknowledged: ``store_s``, or with group commit its batch's commit (:class:`sim.cluster.Committer`)."""
        committer = server.committer
        if committer is None:
            return self.m.env.timeout(self.store_s)
        return committer.join()

    def publish(self, targets: Iterable[Client], kind: int, msg: int, size: int, sent: float,
                origin: Server) -> Proc:
        """Append an event to each target's log, then let the delivery service push or wake.

        With group commit the fan-out is a job of a group commit too, as the reference
        server's (``store.submit_fan_out``): the item is read from the queue (``delivery_s``),
        and its events enter the logs when that commit is done, together with every other
        write and fan-out it carried; then they are pushed at once (docs/MODEL.md, "Group
        commit")."""
        m = self.m
        targets = list(targets)
        committer = origin.committer
        fanned = False
        if committer is not None and targets and m.delivery_alive and origin.alive:
            fanned = True
            yield m.env.timeout(m.delivery_s)
            yield committer.join()
        now = m.env.now
        to_push = []
        keep = self.keep_log and kind == MSG
        for c in targets:
            ev = LogEvent(kind, msg, size, now, sent)
            if keep:
                c.history.append(ev)
            if c.log(ev):
                to_push.append((c, ev))
        if to_push:
            if not m.delivery_alive:
                self.inc.backlog_in(now, to_push)
                return
            if not fanned:
                yield m.env.timeout(m.delivery_s)
            lookup = m.cluster.registry.lookup
            for c, ev in to_push:
                if c.pushes:  # (push() written out: one per event per recipient)
                    # an open connection is what the registry names; otherwise ask it
                    server = c.server if c.open else lookup(c.idx, m.env.now)
                    if server is None:
                        self.offline(c, ev)
                    elif not (yield from c.push(ev, server)):
                        self.unconfirmed(c, ev)
                else:
                    c.wake()

    def offline(self, c: Client, ev: LogEvent) -> None:
        """The registry knows no session: the log keeps a message for the resume; a receipt waits."""
        if ev.kind != MSG:
            c.inbox.append(ev)

    def push(self, c: Client, ev: LogEvent) -> Proc:
        """Push to the connection the registry names; reclaim later if it was dead."""
        m = self.m
        server = m.cluster.registry.lookup(c.idx, m.env.now)
        if server is None:
            self.offline(c, ev)
            return
        if not (yield from c.push(ev, server)):
            self.unconfirmed(c, ev)

    def unconfirmed(self, c: Client, ev: LogEvent) -> None:
        m = self.m
        if ev.kind == MSG:
            # pushed into a dead connection: never confirmed, reclaimed after the visibility timeout
            def again(_e: simpy.Event) -> None:
                m.env.process(self.reclaim(c, ev))

            m.env.timeout(m.sc.visibility_timeout_s).callbacks.append(again)

    def reclaim(self, c: Client, ev: LogEvent) -> Proc:
        yield self.m.env.timeout(self.m.delivery_s)
        ev.via = "reclaim"
        yield from self.push(c, ev)

    def later(self, c: Client, ev: LogEvent) -> Proc:
        """The delivery service is back: push or wake in order."""
        yield self.m.env.timeout(self.m.delivery_s)
        if c.pushes:
            yield from self.push(c, ev)
        else:
            c.wake()

    # --- sessions ------------------------------------------------------------------------------
    def opened(self, c: Client) -> None:
        """A first connection opened (its pending events are replayed by the transport)."""

    def resume(self, c: Client) -> None:
        """The server reads the client's log from its cursor: every message it has not seen, in
        order, ahead of the receipts still pending."""
        m = self.m
        missed = [ev for ev in c.history[c.cursor:] if ev.msg not in c.seen]
        for ev in missed:
            ev.via = "replay"
        c.inbox = missed + [ev for ev in c.inbox if ev.kind != MSG]
        if missed:
            self.inc.replay(m.env.now, m.replay_bytes(missed))

    def server_crashed(self, s: Server) -> None:
        """Nothing is lost: every pending event is in the durable log."""

    def dropped(self, events: list[LogEvent]) -> None:
        """A poll's answer died with its server: the log still has the events."""


class DirectDelivery(QueueDelivery):
    name = "direct"

    def __init__(self, m: "ChatModel"):
        super().__init__(m)
        self.store_s = 0.0

    def send(self, i: int) -> Proc:
        """Message *i*: upload, acknowledged from memory at once, then forwarded to each recipient's server."""
        m = self.m
        sender = m.clients[int(m.wl.sender[i])]
        sent = m.env.now
        started = float(m.wl.start_time[sender.idx])
        if started > sent:
            yield m.env.timeout(started - sent)
        if sender.lost:
            sender.outbox.append(i)
            return
        server, session = sender.server, sender.session
        arrived = yield from sender.upload(MSG, m.send_body)
        if arrived is None:
            sender.outbox.append(i)
            return
        sender.acked(MSG, arrived, session)
        if self.keep_log:
            if i in m.stored:
                self.inc.resends_deduplicated += 1
                return
            m.stored.add(i)
        yield from self.publish(m.recipients(i, sender.idx), MSG, i, m.sizes.message_event, sent, server)

    def publish(self, targets: Iterable[Client], kind: int, msg: int, size: int, sent: float,
                origin: Server) -> Proc:
        m = self.m
        now = m.env.now
        epoch = origin.epoch
        events = [(c, LogEvent(kind, msg, size, now, sent)) for c in targets]
        yield m.env.timeout(m.delivery_s)
        if origin.epoch != epoch:  # the sender's server died with them in flight
            if kind == MSG:
                self.inc.lost_in_memory += len(events)
            return
        for c, ev in events:
            yield from self.forward(origin, c, ev)

    def forward(self, origin: Server, c: Client, ev: LogEvent) -> Proc:
        m = self.m
        server = m.cluster.registry.lookup(c.idx, m.env.now)
        if server is None:
            origin.held.setdefault(c.idx, []).append(ev)  # no session: kept until the user is back
            return
        if not server.alive or c.cut:
            if ev.kind == MSG:
                self.inc.lost_to_dead_server += 1  # the registry still names a dead connection
            return
        if c.log(ev):
            if c.pushes:
                if not (yield from c.push(ev, server)) and ev.kind == MSG:
                    self.inc.lost_to_dead_server += 1
            else:
                c.wake()

    def opened(self, c: Client) -> None:
        self._release_held(c, None)

    def resume(self, c: Client) -> None:
        m = self.m
        n = self._release_held(c, "replay")
        if n:
            self.inc.replay(m.env.now, m.replay_bytes(n))

    def _release_held(self, c: Client, via: str | None) -> list[LogEvent]:
        """Live servers that kept messages for *c* forward them to its new connection."""
        m = self.m
        out: list[LogEvent] = []
        for s in m.cluster.servers:
            held = s.held.pop(c.idx, None)
            if held and s.alive:
                for ev in held:
                    ev.via = via
                    m.env.process(self._forward_later(s, c, ev))
                out.extend(held)
        return out

    def _forward_later(self, origin: Server, c: Client, ev: LogEvent) -> Proc:
        yield self.m.env.timeout(self.m.delivery_s)
        yield from self.forward(origin, c, ev)

    def server_crashed(self, s: Server) -> None:
        """What the server held in memory is gone: pending events of its clients, and messages
        it kept for users with no session."""
        m = self.m
        lost = 0
        for r, evs in s.held.items():
            lost += sum(1 for ev in evs if ev.kind == MSG and ev.msg not in m.clients[r].seen)
        s.held = {}
        for c in m.clients:
            if c.server is s and c.inbox:
                lost += sum(1 for ev in c.inbox if ev.kind == MSG and ev.msg not in c.seen)
                c.inbox = []
        self.inc.lost_in_memory += lost

    def dropped(self, events: list[LogEvent]) -> None:
        """A poll's answer died with its server, and with it the only copy of its messages."""
        self.inc.lost_in_memory += sum(1 for ev in events if ev.kind == MSG)


DESIGNS = {"queue": QueueDelivery, "direct": DirectDelivery}
