"""The store's transactions without their I/O (after h11 and websockets' sans-I/O cores).

A transaction is written once, as a generator that *yields* the statements it wants run
and receives their results::

    def add_user(name):
        row = yield One("SELECT 1 FROM users WHERE name=?", name)
        if row is None:
            yield Exec("INSERT INTO users(name) VALUES (?)", name)

and a *driver* runs it on a connection: :func:`drive` on a sqlite3 connection (on the
event loop's thread; each statement takes microseconds), :func:`drive_async` on a psycopg
``AsyncConnection`` (each statement a network round trip, awaited). So the rules the
store keeps (cursor never skips, idempotent sends, receipts only move forward, the
outbox) live in one place for both databases.

SQL is the subset SQLite and PostgreSQL share: ``?`` placeholders (turned into ``%s`` for
psycopg), ``INSERT ... ON CONFLICT``, ``RETURNING``, ``"user"`` quoted (a reserved word in
PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")


#: Whether a statement writes, by its text (the same few statements recur).
_WRITES: dict[str, bool] = {}


class Op:
    """One statement a transaction asks for; its result is the subclass's."""

    __slots__ = ("sql", "args")

    def __init__(self, sql: str, *args: Any) -> None:
        self.sql = sql
        self.args = args

    @property
    def writes(self) -> bool:
        """Whether it can change rows (the committer needs to know if a failing job did)."""
        w = _WRITES.get(self.sql)
        if w is None:
            w = _WRITES[self.sql] = self.sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE")
        return w

    def result(self, cur: Any) -> Any:
        """The result a transaction receives, from the DB-API cursor that ran it."""
        return cur.rowcount


class One(Op):
    """The first row (a tuple) or None."""

    __slots__ = ()

    def result(self, cur: Any) -> Any:
        return cur.fetchone()


class All(Op):
    """Every row, as a list of tuples."""

    __slots__ = ()

    def result(self, cur: Any) -> Any:
        return cur.fetchall()


class Exec(Op):
    """The number of rows changed."""

    __slots__ = ()


class Many(Op):
    """The statement once for each tuple of ``args[0]`` (no result)."""

    __slots__ = ()

    def __init__(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        super().__init__(sql, rows)


#: A transaction: yields statements, gets their results, returns its answer.
Tx = Generator[Op, Any, T]
#: What a committer or a reader takes: a function that starts a fresh transaction.
TxFactory = Callable[[], Tx[Any]]


class Ran:
    """What a driver saw of one transaction: whether it issued a write (a failure after one
    means the transaction must be undone, not just reported)."""

    __slots__ = ("wrote",)

    def __init__(self) -> None:
        self.wrote = False


# --- SQLite: synchronous, on the caller's thread -------------------------------------------
def _run_sqlite(conn: Any, op: Op) -> Any:
    if isinstance(op, Many):
        conn.executemany(op.sql, op.args[0])
        return None
    return op.result(conn.execute(op.sql, op.args))


def drive(tx: Tx[T], conn: Any, ran: Ran | None = None) -> T:
    """Run *tx* to the end on the sqlite3 connection *conn*; returns its answer. An error of
    a statement is raised inside the transaction (it may catch it)."""
    try:
        op = next(tx)
        while True:
            if ran is not None and op.writes:
                ran.wrote = True
            try:
                result = _run_sqlite(conn, op)
            except Exception as exc:
                op = tx.throw(exc)
                continue
            op = tx.send(result)
    except StopIteration as stop:
        return stop.value


# --- PostgreSQL: asynchronous, one round trip per statement ----------------------------------
_PG_SQL: dict[str, str] = {}


def pg_sql(sql: str) -> str:
    """The statement with psycopg's placeholders (cached: the same few statements recur)."""
    out = _PG_SQL.get(sql)
    if out is None:
        out = _PG_SQL[sql] = sql.replace("?", "%s")
    return out


async def _run_pg(conn: Any, op: Op) -> Any:
    if isinstance(op, Many):
        async with conn.cursor() as cur:
            await cur.executemany(pg_sql(op.sql), op.args[0])
        return None
    cur = await conn.execute(pg_sql(op.sql), op.args, prepare=True)
    if isinstance(op, One):
        return await cur.fetchone()
    if isinstance(op, All):
        return await cur.fetchall()
    return cur.rowcount


async def drive_async(tx: Tx[T], conn: Any, ran: Ran | None = None) -> T:
    """Run *tx* to the end on the psycopg ``AsyncConnection`` *conn*."""
    try:
        op = next(tx)
        while True:
            if ran is not None and op.writes:
                ran.wrote = True
            try:
                result = await _run_pg(conn, op)
            except Exception as exc:
                op = tx.throw(exc)
                continue
            op = tx.send(result)
    except StopIteration as stop:
        return stop.value
