"""The store's promises, without the network: a cursor never skips (Synapse #1449), and
passwords are stored as scrypt hashes."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from chatcore import Cursor
from reference_server.auth import hash_password, verify_password
from reference_server.payloads import SendRequest
from reference_server.store import Page, Store


async def test_cursor_never_skips_under_concurrent_writes(new_database) -> None:
    store = await Store.open(await new_database())
    try:
        for u in ("alice", "bob"):
            await store.create_user(u, "x", 0)
        n = 60

        async def write(i: int) -> None:
            s = await store.add_message("alice", SendRequest(f"m{i}", uuid.uuid4().hex, to="bob"), i)
            assert s.item is not None
            await store.fan_out([s.item])

        seen: list[int] = []

        async def read() -> None:
            cursor: Cursor | None = None
            while len(seen) < n:
                page = await store.read_events("bob", cursor, 7)
                assert isinstance(page, Page)
                seqs = [Cursor.parse(e["cursor"]).seq for e in page.events]
                start = cursor.seq if cursor else 0
                assert seqs == list(range(start + 1, start + 1 + len(seqs))), "a gap: the cursor skipped"
                seen.extend(seqs)
                cursor = page.cursor
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(read(), *(write(i) for i in range(n))), 20)
        assert seen == list(range(1, n + 1))
        assert (await store.current_cursor("bob")).seq == n
    finally:
        await store.close()


async def test_epoch_survives_reopen(new_database) -> None:
    where = await new_database()
    a = await Store.open(where)
    epoch = a.epoch
    await a.close()
    b = await Store.open(where)
    assert b.epoch == epoch
    await b.close()
    c = await Store.open(await new_database())
    assert c.epoch != epoch, "a new database is a new epoch: old cursors expire"
    await c.close()


def test_password_hash() -> None:
    h = hash_password("s3cret", n=16)
    assert h.startswith("scrypt$16$8$1$") and "s3cret" not in h
    assert verify_password("s3cret", h)
    assert not verify_password("s3cret!", h)
    assert not verify_password("s3cret", "garbage")
    assert hash_password("s3cret", n=16) != h, "salted"
