"""The two stores behind the delivery engine, driven directly: batches, settling, closing.

Each store is fed by a real (not started) :class:`DeliveryEngine`, the actor it serves;
the test plays the actor's part of taking batches and reporting answers.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from aicm._core.exceptions import AicmError, QueueFullError
from aicm._core.models import TrackRecord, WireRecord
from aicm._core.settings import DeliveryType, resolve_settings
from aicm._delivery.buffer import Waker
from aicm._delivery.engine import DeliveryEngine
from aicm._delivery.sqlite_store import SqliteStore
from aicm._delivery.store import Item, MemoryStore
from aicm._io.http import AsyncCostManagerClient

pytestmark = pytest.mark.anyio

KEY = "test-key-0123456789abcdef"


def record(rid: str) -> WireRecord:
    return TrackRecord.build("openai", "openai::gpt-4o", {"input_tokens": 1}, response_id=rid)


def ids(items: list[Item] | None) -> list[str]:
    assert items is not None
    return [i.response_id for i in items]


async def make_engine(
    delivery_type: DeliveryType, tmp_path: Path, **options: object
) -> AsyncIterator[DeliveryEngine]:
    settings = resolve_settings(
        api_key=KEY,
        api_base="http://127.0.0.1:9",
        db_path=str(tmp_path / "queue.db"),
        batch_interval=0.05,
        **options,
    )
    async with AsyncCostManagerClient(settings=settings) as client:
        engine = DeliveryEngine(client, settings, delivery_type=delivery_type, on_discard=None)
        # The actor's waker, as its task would make it: the test takes the actor's part.
        engine._waker = Waker()
        yield engine


@pytest.fixture
async def memory(tmp_path: Path, anyio_backend: str) -> AsyncIterator[DeliveryEngine]:
    """An engine with a memory store of 5 records, batches of 3."""
    async for engine in make_engine(
        DeliveryType.MEM_QUEUE, tmp_path, queue_size=5, max_batch_size=3
    ):
        yield engine


@pytest.fixture
async def disk(tmp_path: Path, anyio_backend: str) -> AsyncIterator[DeliveryEngine]:
    """An engine with an open SQLite store, batches of 3."""
    async for engine in make_engine(DeliveryType.PERSISTENT_QUEUE, tmp_path, max_batch_size=3):
        assert engine.store is not None
        await engine.store.open()
        try:
            yield engine
        finally:
            with anyio.CancelScope(shield=True):
                await engine.store.close()


def memory_store(engine: DeliveryEngine) -> MemoryStore:
    assert isinstance(engine.store, MemoryStore)
    return engine.store


def sqlite_store(engine: DeliveryEngine) -> SqliteStore:
    assert isinstance(engine.store, SqliteStore)
    return engine.store


# -- the memory store -------------------------------------------------------------------


async def test_memory_batches_are_full_ones_or_wait_the_batch_interval(
    memory: DeliveryEngine,
) -> None:
    """A full batch is taken at once; a partial one after the batch interval."""
    store = memory_store(memory)
    for rid in "abcd":
        store.put(record(rid))
    assert ids(await store.next_batch()) == ["a", "b", "c"]
    started = time.monotonic()
    with anyio.fail_after(5):
        assert ids(await store.next_batch()) == ["d"]
    assert time.monotonic() - started >= 0.04


async def test_memory_closing_takes_what_is_left_then_stops(memory: DeliveryEngine) -> None:
    """Closing: a partial batch goes at once, and an empty closing store says stop (None)."""
    store = memory_store(memory)
    await store.aput(record("a"))
    memory.closing = True
    with anyio.fail_after(1):
        assert ids(await store.next_batch()) == ["a"]
        assert await store.next_batch() is None


async def test_memory_holds_a_batch_back_during_a_backoff(memory: DeliveryEngine) -> None:
    """A batch taken while another request's backoff runs goes back, in order, untouched."""
    store = memory_store(memory)
    memory.closing = True  # no batch window: take at once
    for rid in "ab":
        store.put(record(rid))
    memory.not_before = time.monotonic() + 60
    assert await store.next_batch() == []
    assert len(store.buffer) == 2
    memory.not_before = 0.0
    assert ids(await store.next_batch()) == ["a", "b"]


async def test_memory_give_back_dead_letter_and_counts(memory: DeliveryEngine) -> None:
    """Given back, records return to the head; dead-lettered, they are kept with the reason;
    ``left`` counts the queued and the held; memory has no max_age."""
    store = memory_store(memory)
    memory.closing = True
    for rid in "abc":
        store.put(record(rid))
    batch = await store.next_batch()
    assert batch is not None
    store.put(record("d"))
    await store.give_back(batch[:2], 0.0, "HTTP 503")
    await store.dead_letter([(batch[2], "error: bad")], now=123.0)
    assert await store.left(await store.mark(), held=0) == 3
    assert await store.left(0, held=2) == 5
    assert [(d.response_id, d.reason, d.dead_at) for d in store.dead_letters()] == [
        ("c", "error: bad", 123.0)
    ]
    assert store.expired(batch, now=time.time() + 10**9) == ([], batch)
    assert ids(await store.next_batch()) == ["a", "b", "d"]


async def test_memory_close_counts_what_it_drops(memory: DeliveryEngine) -> None:
    """Closing a memory store drops what is left: counted as discarded (closed), and no
    record is accepted after."""
    store = memory_store(memory)
    for rid in "ab":
        store.put(record(rid))
    queued, age, capacity = store.queued(held=0)
    assert (queued, capacity) == (2, 5)
    assert age is not None
    assert age >= 0
    assert await store.close() == 2
    assert memory.stats.discarded["closed"] == 2
    with pytest.raises(QueueFullError):
        store.put(record("c"))


# -- the SQLite store -------------------------------------------------------------------


async def test_sqlite_claims_what_producers_committed(disk: DeliveryEngine) -> None:
    """Rows put from a thread and from the loop are counted, then claimed in batches with
    their row ids; a full batch makes the next claim come at once."""
    store = sqlite_store(disk)
    await anyio.to_thread.run_sync(store.put, record("a"))
    for rid in "bcd":
        await store.aput(record(rid))
    assert store.backlog == 4
    disk.closing = True  # no batch window
    first = await store.next_batch()
    assert ids(first) == ["a", "b", "c"]
    assert first is not None
    assert all(i.row_id is not None for i in first)
    assert ids(await store.next_batch()) == ["d"]


async def test_sqlite_ack_release_and_dead_letter(disk: DeliveryEngine, tmp_path: Path) -> None:
    """Acked rows leave the file, released ones wait their delay, dead ones stay dead with
    their reason; ``left`` counts what is not settled."""
    store = sqlite_store(disk)
    for rid in "abc":
        await store.aput(record(rid))
    disk.closing = True
    batch = await store.next_batch()
    assert batch is not None
    assert len(batch) == 3
    mark = await store.mark()
    await store.ack(batch[:1])
    await store.dead_letter([(batch[1], "error: bad")], now=time.time())
    await store.give_back(batch[2:], 60.0, "HTTP 503")
    assert store.backlog == 1
    assert await store.left(mark, held=0) == 1
    with sqlite3.connect(tmp_path / "queue.db") as conn:
        found = conn.execute("SELECT response_id, state, last_error FROM records ORDER BY id")
        states = list(found)
    assert states == [("b", 1, "error: bad"), ("c", 0, "HTTP 503")]
    # Released for 60 s: not claimed again before then (the store says look again).
    assert await store.next_batch() == []
    await store.hurry(mark)
    assert ids(await store.next_batch()) == ["c"]


async def test_sqlite_expires_rows_past_max_age(tmp_path: Path, anyio_backend: str) -> None:
    """With max_age set, rows written longer ago than that expire; others are kept."""
    async for engine in make_engine(DeliveryType.PERSISTENT_QUEUE, tmp_path, max_age=100):
        store = sqlite_store(engine)
        now = time.time()
        old = Item(record("old").endpoint, "old", "{}", now - 500, row_id=1)
        young = Item(record("young").endpoint, "young", "{}", now - 5, row_id=2)
        assert store.expired([old, young], now) == ([old], [young])


async def test_sqlite_dead_letters_rows_aicm_cannot_have_written(
    disk: DeliveryEngine, tmp_path: Path
) -> None:
    """A row with an unknown endpoint is dead-lettered when claimed (counted and said),
    and the rows claimed with it are delivered as usual."""
    store = sqlite_store(disk)
    for rid in "ab":
        await store.aput(record(rid))
    with sqlite3.connect(tmp_path / "queue.db") as conn:
        conn.execute("UPDATE records SET endpoint = '/elsewhere' WHERE response_id = 'a'")
    disk.closing = True
    assert ids(await store.next_batch()) == ["b"]
    assert disk.stats.dead_lettered == 1
    assert disk.stats.failed == 1
    with sqlite3.connect(tmp_path / "queue.db") as conn:
        found = conn.execute("SELECT state, last_error FROM records WHERE response_id = 'a'")
        state, why = found.fetchone()
    assert state == 1
    assert "unknown endpoint '/elsewhere'" in why


async def test_sqlite_closing_rechecks_once_then_stops(disk: DeliveryEngine) -> None:
    """Closing with nothing to claim: one more claim (a commit may have raced the last),
    then stop."""
    store = sqlite_store(disk)
    disk.closing = True
    disk.wake()  # as a close does: the store's first wait for rows ends
    with anyio.fail_after(5):
        assert await store.next_batch() == []  # the first wait for rows (none at start)
        assert await store.next_batch() == []  # a claim found none: one more
        assert await store.next_batch() is None


async def test_sqlite_health_and_close(disk: DeliveryEngine) -> None:
    """Health counts the file's pending rows minus those held; close reports what stays
    on disk for the next start."""
    store = sqlite_store(disk)
    for rid in "abc":
        await store.aput(record(rid))
    queued, age, capacity = store.queued(held=1)
    assert (queued, capacity) == (2, 0)
    assert age is not None
    assert age >= 0
    assert await store.close() == 3
    assert store.dead_letters() == []


async def test_sqlite_aput_before_open_says_so(tmp_path: Path, anyio_backend: str) -> None:
    """A record queued on the loop before the store is open is refused with a clear error."""
    async for engine in make_engine(DeliveryType.PERSISTENT_QUEUE, tmp_path):
        store = sqlite_store(engine)
        with pytest.raises(AicmError, match="not been started"):
            await store.aput(record("a"))
        assert writer_closed(store)


def writer_closed(store: SqliteStore) -> bool:
    assert store.writer is not None
    store.writer.close()
    return True
