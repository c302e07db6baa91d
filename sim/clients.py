"""What every transport's client shares: its event log at the server, receiving events
(de-duplicated by message id, behind a cursor), sending receipts, and its session's life:
losing it, noticing, backing off, reconnecting through the load balancer, resuming and
resending (:mod:`sim.reconnect` makes the connect attempts).

How a client polls, holds or keeps a connection, and how it notices a dead server, is its
transport's: one class per transport in :mod:`sim.transports`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Generator, Iterable

import simpy

from chatcore.states import ConnectionState as CS
from chatcore.backoff import Backoff
from chatcore.states import EventKind

from . import reconnect
from .cluster import Server, last_refresh

if TYPE_CHECKING:
    from .model import ChatModel

Proc = Generator[simpy.Event, object, None]
Step = Generator[simpy.Event, object, bool]  # a process step that says whether it got through
Upload = Generator[simpy.Event, object, "float | None"]

MSG, DELIVERED, READ = int(EventKind.MESSAGE), int(EventKind.DELIVERED), int(EventKind.READ)
_STATUS = {DELIVERED: "delivered", READ: "read"}


class LogEvent:
    """One event in a user's log: a message or a receipt. ``via``: None, or ``replay`` (carried
    by a resume) or ``reclaim`` (pushed again after the visibility timeout)."""

    __slots__ = ("kind", "msg", "size", "available", "sent", "via")

    def __init__(self, kind: int, msg: int, size: int, available: float, sent: float):
        self.kind, self.msg, self.size, self.available, self.sent = kind, msg, size, available, sent
        self.via: str | None = None


class Client:
    """One user's client. The transport subclasses implement :meth:`run` (start, then one
    session after another), :meth:`upload`, :meth:`acked` and :meth:`detect_time`."""

    __slots__ = ("m", "idx", "inbox", "server", "epoch", "session", "state", "lost", "notice_at", "cut",
                 "history", "cursor", "seen", "outbox", "backoff", "affected", "connected_at", "offline_at",
                 "reconnected_at")
    #: how a message reaches this transport's client in steady state (the crash table's ``via``)
    via = "poll"
    #: the delivery service pushes events to this transport's connection (else it wakes or waits)
    pushes = False
    #: a pushing transport's server holds its connection now
    open = False

    def __init__(self, model: "ChatModel", idx: int):
        self.m = model
        self.idx = idx
        self.inbox: list[LogEvent] = []  # events for this client that its connection has not carried yet
        self.server: Server = model.cluster.home(idx)
        self.epoch = 0          # the server's epoch when this session began
        self.session = 0
        self.state = CS.DISCONNECTED
        self.lost = False       # the session is gone (server crashed or packets cut); the client may not know yet
        self.notice_at = math.inf
        self.cut = False        # partitioned from every server
        self.history: list[LogEvent] = []  # queue design: the durable log's messages for this user
        self.cursor = 0         # history[:cursor] all received
        self.seen: set[int] = set()  # message ids received (kept in a run with a fault)
        self.outbox: list[int] = []  # messages sent but not acknowledged: resent after reconnecting
        self.backoff: Backoff | None = None  # made by the model when the run has a fault
        self.affected = False
        self.connected_at = 0.0
        self.offline_at = math.inf  # when contacts see this user offline (presence)
        self.reconnected_at = math.inf

    # --- state table ---------------------------------------------------------------------
    def move(self, to: CS) -> None:
        """Change connection state; a move the state table does not allow is an error."""
        self.state = self.m.check_move(self.state, to)

    # --- server side: the client's event log ----------------------------------------------
    def log(self, ev: LogEvent) -> bool:
        """Append *ev* to this user's pending events. True if the delivery service should push it."""
        self.inbox.append(ev)
        return False

    def push(self, ev: LogEvent, server: Server) -> Step:  # pragma: no cover - only push transports
        raise NotImplementedError

    def wake(self) -> None:
        """The delivery service answers a held request, if the transport holds one."""

    # --- client side ----------------------------------------------------------------------
    def received(self, events: Iterable[LogEvent], at: float) -> None:
        """The client has *events* at time *at* (possibly in the future of now); it drops a
        message it already has (by id) and sends receipts for the rest."""
        m = self.m
        msgs = None
        seen = self.seen
        inc = m.incident
        for ev in events:
            if ev.kind == MSG:
                if inc is not None:  # only a fault duplicates (and no run without one pays for the set)
                    if ev.msg in seen:
                        inc.duplicates += 1
                        continue
                    seen.add(ev.msg)
                m.rec.delivery(ev.msg, self.idx, ev.available, at)
                if inc is not None:
                    inc.delivered(self, ev, at)
                if msgs is None:
                    msgs = [ev.msg]
                else:
                    msgs.append(ev.msg)
            else:
                m.rec.receipt(ev.msg, _STATUS[ev.kind], ev.sent, at)
        if msgs is not None:
            h = self.history
            if h:
                while self.cursor < len(h) and h[self.cursor].msg in seen:
                    self.cursor += 1
            if m.sc.receipts:
                m.env.process(m.receipts_flow(self, msgs, at))

    # --- transport-specific: subclasses implement -----------------------------------------
    def upload(self, kind: int, body: int) -> Upload:
        """Carry a send (kind=MSG) or a receipt to the server and through its CPU; return the
        time it reached the server, or None if it was lost with the session."""
        raise NotImplementedError  # pragma: no cover - abstract

    def acked(self, kind: int, arrived: float, session: int) -> None:
        """The server answers the upload (after the durable append, in the queue design)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def run(self) -> Proc:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect_time(self, t: float, silent: bool) -> float:
        """When this client notices that its session, lost at *t*, is gone (docs/CRASH.md)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def finish(self, end: float) -> None:
        pass

    # --- a session's life -------------------------------------------------------------------
    def begin(self, server: Server, at: float | None = None) -> None:
        """A session opens on *server* now (or at *at*): the registry and presence learn of it."""
        m = self.m
        now = m.env.now if at is None else at
        self.server, self.epoch = server, server.epoch
        self.session += 1
        self.lost, self.notice_at = False, math.inf
        self.connected_at = now
        m.cluster.registry.register(self.idx, server, now)
        if m.incident is not None:
            m.incident.session_began(self, now)

    def lose(self, t: float, silent: bool, closed_at: float = math.inf) -> None:
        """The fault takes this client's session at *t*. Contacts see it offline when its presence
        lapses (or when a live server closes the session at *closed_at*); the client notices at its
        transport's detection time."""
        sc = self.m.sc
        self.lost = True
        self.affected = True
        refreshed = last_refresh(self.connected_at, t, sc.presence_heartbeat_s)
        self.offline_at = min(refreshed + sc.presence_ttl_s, closed_at)
        self.notice_at = self.detect_time(t, silent)
        self.on_lost(t)
        self.m.env.timeout(max(0.0, self.notice_at - t)).callbacks.append(self._notice)

    def _notice(self, _e: simpy.Event) -> None:
        self.on_notice()

    def on_lost(self, t: float) -> None:
        """The server side of the session is gone at *t* (connections, held requests)."""

    def on_notice(self) -> None:
        """Wake the client's process if it waits for something the lost session would bring."""

    def wait_notice(self) -> Proc:
        """Wait until the client notices the loss (computed now if the fault did not mark it)."""
        env = self.m.env
        if not math.isfinite(self.notice_at):
            self.notice_at = self.detect_time(env.now, self.server.silent or self.cut)
        if self.notice_at > env.now:
            yield env.timeout(self.notice_at - env.now)

    def reconnect(self) -> Proc:
        """Noticed: back off, try live servers until one accepts, then resume and resend."""
        m = self.m
        env = m.env
        assert self.backoff is not None, "reconnecting needs a run with a fault"
        self.move(CS.BACKING_OFF)
        self.end_session(env.now)
        if m.incident is not None:
            m.incident.session_ended(env.now)
        retries = self.connect_retries()
        server = None
        if retries and not (self.server.silent or self.cut):
            # the request the reset broke is retried at once, before any backoff (a timeout is not)
            self.move(CS.CONNECTING)
            server = yield from reconnect.attempt(m, self)
        while server is None:
            if self.state is CS.CONNECTING:
                self.move(CS.BACKING_OFF)
            yield env.timeout(self.backoff.next_delay())
            at = self.next_attempt_at(env.now)
            if at > env.now:
                yield env.timeout(at - env.now)
            self.move(CS.CONNECTING)
            server = yield from reconnect.attempt(m, self, retries)
        self.backoff.reset()
        self.move(CS.CONNECTED)
        self.begin(server)
        self.resume()

    def end_session(self, t: float) -> None:
        """The client gives up the session's connections at *t*."""

    def next_attempt_at(self, t: float) -> float:
        """When the attempt after a backoff that ends at *t* goes out (at once, unless the
        transport keeps a schedule)."""
        return t

    def connect_retries(self) -> int:
        """How often the client's library retries a broken connection at once (``reconnect.attempt``)."""
        return 0

    def resume(self) -> None:
        """After a reconnect: the delivery design's resume, then resend the outbox."""
        m = self.m
        m.delivery.resume(self)
        if self.outbox:
            pending, self.outbox = self.outbox, []
            for i in pending:
                if m.incident is not None:
                    m.incident.resends += 1
                m.env.process(m.message_flow(i))
