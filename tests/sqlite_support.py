"""Helpers for tests of the SQLite queue: rows to write, stores to open on a file, and
writing and claiming rows as the engine does."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from aicm._core.settings import DeliveryType, resolve_settings
from aicm._delivery.buffer import Waker
from aicm._delivery.engine import DeliveryEngine
from aicm._delivery.sqlite_store import SqliteStore
from aicm._delivery.store import Item
from aicm._io.http import AsyncCostManagerClient
from aicm._io.sqlite import AsyncWriter

Row = tuple[str, str, str]  # (endpoint, response_id, body), as AsyncWriter.add takes it

BASE = "http://127.0.0.1:9"
ROOT = BASE + "/api/v1"  # the API root of a store opened on BASE
KEY = "test-key-0123456789abcdef"

OpenStore = Callable[..., Awaitable[SqliteStore]]


def queue_row(rid: str, body: str | None = None) -> Row:
    """A /track row for the queue."""
    return ("/track", rid, f'{{"response_id": "{rid}"}}' if body is None else body)


@contextlib.asynccontextmanager
async def sqlite_stores() -> AsyncIterator[OpenStore]:
    """``open_store(path, *, api_base=BASE, key=KEY, **settings)``: an open SQLite store on
    ``path``, fed by a real (not started) engine; every one is closed at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_store(
            path: Path | str, *, api_base: str = BASE, key: str = KEY, **options: Any
        ) -> SqliteStore:
            settings = resolve_settings(
                api_key=key, api_base=api_base, db_path=str(path), **options
            )
            client = await stack.enter_async_context(AsyncCostManagerClient(settings=settings))
            engine = DeliveryEngine(client, settings, delivery_type=DeliveryType.PERSISTENT_QUEUE)
            engine._waker = Waker()  # the actor's, as its task would make it
            store = engine.store
            assert isinstance(store, SqliteStore)
            await store.open()
            stack.push_async_callback(store.close)
            return store

        yield open_store


def loop_writer(store: SqliteStore) -> AsyncWriter:
    """The store's writer for ``track()`` calls on the loop."""
    assert store.loop_writer is not None
    return store.loop_writer


async def add_all(store: SqliteStore, rows: Sequence[Row]) -> None:
    """Add ``rows`` one after another, as ``track()`` on the loop does: ids follow the order
    of ``rows``."""
    for row in rows:
        await loop_writer(store).add(*row)


class Claimed(NamedTuple):
    """One row ``SqliteStore.claim`` leased, with its attempts (from the file)."""

    id: int
    endpoint: str
    response_id: str
    body: str
    created_at: float
    attempts: int
    item: Item


async def claim(store: SqliteStore, limit: int) -> list[Claimed]:
    """``store.claim(limit)``, each row named."""
    items = await store.claim(limit)
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        attempts = dict(conn.execute("SELECT id, attempts FROM records").fetchall())
    return [
        Claimed(i.row_id, i.endpoint.value, i.response_id, i.body, i.created_at, attempts[n], i)
        for i in items
        if (n := i.row_id) is not None
    ]
