"""Server configuration: one frozen, validated object (vary it with ``dataclasses.replace``).

Every default that comes from a real system names it; see ``docs/server.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


def is_origin(text: object) -> bool:
    """``scheme://host[:port]``, as a browser sends it in ``Origin`` (no path, no slash)."""
    return isinstance(text, str) and bool(_ORIGIN.match(text))


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start. Unknown keyword arguments are a TypeError
    (a frozen dataclass refuses them), so a typo in a test or tool fails loudly."""

    host: str = "127.0.0.1"
    #: 0 asks the OS for a free port; :func:`reference_server.app.run_server` returns it.
    port: int = 8080
    #: ``None`` = embedded fakeredis (one FakeServer shared by every client in the process).
    redis_url: str | None = None
    #: Prefix of every Redis key, so several servers or test runs can share one Redis.
    redis_prefix: str = "chatlab"
    data_dir: Path = Path("var")
    #: SQLite file; ``None`` = ``<data_dir>/chat.sqlite3``.
    db_path: Path | None = None
    #: ``postgresql://...``: keep everything in this PostgreSQL database instead of SQLite
    #: (several server processes can share it: a cluster).
    db_url: str | None = None
    #: This process's name in a cluster (several servers behind a load balancer, sharing a
    #: real Redis and PostgreSQL: routing.py). Empty: one server, everything local.
    server_id: str = ""
    #: permessage-deflate on WebSockets. Off by default: it costs CPU on every frame.
    ws_compression: bool = False
    #: SQLite ``synchronous``: FULL syncs every group commit, so an ack survives a power loss;
    #: NORMAL survives a crash of the process but may lose the last commits to a power cut.
    sqlite_synchronous: str = "FULL"
    #: Redis client connections; a burst beyond them waits up to ``redis_pool_timeout_s``
    #: for a free one instead of failing (redis-py's default pool raises at once).
    redis_max_connections: int = 64
    redis_pool_timeout_s: float = 10.0

    # --- auth ---------------------------------------------------------------
    token_ttl_s: float = 24 * 3600.0
    #: scrypt cost (N). 2**14 is the stdlib-documented interactive-login level; tests lower it.
    scrypt_n: int = 2 ** 14

    # --- transports -----------------------------------------------------------
    #: Most events one poll returns; the client asks again for the rest.
    poll_max_events: int = 500
    #: Longest long-poll hold a client may ask for (RFC 6202: ~30 s is safe, 120 s has worked).
    longpoll_max_timeout_s: float = 120.0
    longpoll_default_timeout_s: float = 30.0
    #: The first WebSocket frame (``auth``) must arrive within this time, else close 4001.
    ws_auth_timeout_s: float = 10.0
    #: Bytes queued for one WebSocket before it is closed as a slow consumer (Centrifugo: 1 MB).
    ws_send_queue_bytes: int = 1024 * 1024
    #: WebSocket ping interval; a peer that does not answer is closed (aiohttp heartbeat).
    ws_ping_interval_s: float = 25.0

    # --- admission control (admission.py): refuse writes the system cannot deliver in time
    admission: bool = True
    #: Oldest accepted item not yet fanned out (committed, queued, not in the logs yet).
    admission_max_delivery_lag_ms: float = 250.0
    #: Oldest write still waiting for its group commit.
    admission_max_commit_wait_ms: float = 250.0
    #: How late the event loop runs a timer: on one core, the first sign of more work than CPU.
    admission_max_loop_lag_ms: float = 100.0
    #: Light writers (a recent write rate at most this share of ``rate_per_s``) are held to
    #: bounds four times higher, so the heavy writers are refused first (0: no such rule).
    admission_light_share: float = 0.25

    # --- rate limit: token bucket per user over sends and receipts ---------------
    rate_per_s: float = 20.0
    rate_burst: int = 40

    # --- hostile clients (docs/server.md, "Hostile clients") ---------------------
    #: Reads (history pages, presence lookups) per user: a token bucket; a history page costs
    #: one token per 50 messages asked for (``limit``), so 16 pages of 500 at once are refused.
    read_rate_per_s: float = 20.0
    read_burst: int = 40
    #: Failed logins: per account name (registered or not) and per client address. A throttled
    #: login is refused (429) before the password is checked.
    login_failures_per_account_per_s: float = 0.1
    login_failures_per_account_burst: int = 5
    login_failures_per_ip_per_s: float = 1.0
    login_failures_per_ip_burst: int = 50
    #: A request's line and headers must arrive within this time (from the connection's
    #: start or the head's first byte), and its body within it too; else the connection is
    #: closed (nginx client_header_timeout, Apache RequestReadTimeout; Slowloris).
    http_header_timeout_s: float = 10.0
    #: An idle keep-alive connection is closed after this long (nginx's keepalive_timeout).
    http_keepalive_timeout_s: float = 75.0
    #: Origins (``scheme://host[:port]``) a browser page may open ``/ws`` from besides the
    #: server's own; a request without Origin (not a browser) is always allowed.
    ws_allowed_origins: tuple[str, ...] = ()
    #: How long a process trusts its in-memory copy of a token; a token revoked (logout) on
    #: another server of a cluster stops working here within this time.
    token_cache_s: float = 30.0
    #: How often expired tokens and idle throttle buckets are pruned.
    housekeeping_s: float = 60.0

    # --- presence (Centrifugo: 60 s TTL, 25 s refresh; TTL 2-3x the heartbeat) ---
    presence_ttl_s: float = 60.0
    presence_heartbeat_s: float = 25.0
    presence_sweep_s: float = 5.0

    # --- delivery queue (Redis Streams) ---------------------------------------
    #: Pending entries idle longer than this are reclaimed with XAUTOCLAIM.
    queue_visibility_timeout_s: float = 30.0
    queue_reclaim_every_s: float = 5.0
    #: An entry delivered this many times without an XACK is a poison message: dead-lettered.
    queue_max_deliveries: int = 5
    #: With nothing to deliver, the consumer asks Redis again after this long (it is woken
    #: at once by messages this process queues).
    queue_poll_ms: int = 500
    queue_batch: int = 100

    # --- event log ------------------------------------------------------------
    #: Events kept per user; older ones are trimmed and their cursors expire (HTTP 410).
    event_retention: int = 10_000

    # --- workshop (instructor.py) ----------------------------------------------
    #: Non-empty: ``POST /api/instructor/outage`` with this key takes the server down and up.
    instructor_key: str = ""

    def __post_init__(self) -> None:
        checks = [
            ("port", 0 <= self.port <= 65535, "expected an integer 0-65535"),
            ("token_ttl_s", self.token_ttl_s > 0, "expected > 0"),
            ("scrypt_n", self.scrypt_n >= 2 and self.scrypt_n & (self.scrypt_n - 1) == 0,
             "expected a power of two >= 2"),
            ("poll_max_events", self.poll_max_events >= 1, "expected >= 1"),
            ("longpoll_max_timeout_s", self.longpoll_max_timeout_s > 0, "expected > 0"),
            ("longpoll_default_timeout_s",
             0 <= self.longpoll_default_timeout_s <= self.longpoll_max_timeout_s,
             "expected 0..longpoll_max_timeout_s"),
            ("ws_auth_timeout_s", self.ws_auth_timeout_s > 0, "expected > 0"),
            ("ws_send_queue_bytes", self.ws_send_queue_bytes >= 1024, "expected >= 1024"),
            ("rate_per_s", self.rate_per_s > 0, "expected > 0"),
            ("rate_burst", self.rate_burst >= 1, "expected >= 1"),
            ("read_rate_per_s", self.read_rate_per_s > 0, "expected > 0"),
            ("read_burst", self.read_burst >= 10, "expected >= 10 (a page of 500 costs 10)"),
            ("login_failures_per_account_per_s", self.login_failures_per_account_per_s > 0, "expected > 0"),
            ("login_failures_per_account_burst", self.login_failures_per_account_burst >= 1, "expected >= 1"),
            ("login_failures_per_ip_per_s", self.login_failures_per_ip_per_s > 0, "expected > 0"),
            ("login_failures_per_ip_burst", self.login_failures_per_ip_burst >= 1, "expected >= 1"),
            ("http_header_timeout_s", self.http_header_timeout_s > 0, "expected > 0"),
            ("http_keepalive_timeout_s", self.http_keepalive_timeout_s > 0, "expected > 0"),
            ("ws_allowed_origins", all(is_origin(o) for o in self.ws_allowed_origins),
             "expected origins like https://chat.example.com or http://localhost:8080"),
            ("token_cache_s", self.token_cache_s >= 0, "expected >= 0"),
            ("housekeeping_s", self.housekeeping_s > 0, "expected > 0"),
            ("presence_ttl_s", self.presence_ttl_s > self.presence_heartbeat_s > 0,
             "expected presence_ttl_s > presence_heartbeat_s > 0"),
            ("presence_sweep_s", self.presence_sweep_s > 0, "expected > 0"),
            ("queue_max_deliveries", self.queue_max_deliveries >= 1, "expected >= 1"),
            ("event_retention", self.event_retention >= 1, "expected >= 1"),
            ("sqlite_synchronous", self.sqlite_synchronous in ("FULL", "NORMAL"), "expected FULL or NORMAL"),
            ("db_url", self.db_url is None or self.db_url.startswith(("postgresql://", "postgres://")),
             "expected postgresql://user@host:port/database"),
            ("server_id", self.server_id == "" or (self.server_id.isascii() and self.server_id.isalnum()
                                                   and len(self.server_id) <= 32),
             "expected 1-32 letters and digits"),
            ("server_id", self.server_id == "" or (self.redis_url is not None and self.db_url is not None),
             "a server in a cluster needs a shared Redis (redis_url) and PostgreSQL (db_url)"),
            ("redis_max_connections", self.redis_max_connections >= 2, "expected >= 2"),
            ("redis_pool_timeout_s", self.redis_pool_timeout_s > 0, "expected > 0"),
            ("admission_max_delivery_lag_ms", self.admission_max_delivery_lag_ms > 0, "expected > 0"),
            ("admission_max_commit_wait_ms", self.admission_max_commit_wait_ms > 0, "expected > 0"),
            ("admission_max_loop_lag_ms", self.admission_max_loop_lag_ms > 0, "expected > 0"),
            ("instructor_key", self.instructor_key == "" or re.fullmatch(r"[A-Za-z0-9_\-]{8,128}", self.instructor_key)
             is not None, "expected 8-128 letters, digits, - or _"),
            ("admission_light_share", 0 <= self.admission_light_share <= 1, "expected 0..1 (0: off)"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: {allowed}")

    @property
    def database(self) -> Path:
        """The SQLite file this configuration uses (when ``db_url`` is not set)."""
        return Path(self.db_path) if self.db_path is not None else Path(self.data_dir) / "chat.sqlite3"

    @property
    def store_location(self) -> Path | str:
        """Where the store lives: the PostgreSQL URL, or the SQLite file."""
        return self.db_url if self.db_url is not None else self.database

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
