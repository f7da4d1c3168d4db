"""A full memory queue: ``block`` waits, ``raise`` raises, ``backpressure`` drops the oldest."""

from __future__ import annotations

import time
from typing import Any

import pytest
from delivery_helpers import API, SERVICE, USAGE, new_ids, stored_ids, wait_until, wait_until_sync

from aicm import AsyncTracker, QueueFullError, Tracker
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio

LATENCY = 0.4


def in_flight(collector: LocalCollector) -> bool:
    """True once the first (stalled) request has reached the collector."""
    return bool(collector.stats()["faults"]["latency"] >= 1)


async def fill(tracker: AsyncTracker, collector: LocalCollector, ids: list[str]) -> None:
    """Track ids[0] until it is in flight (stalled), then ids[1:3] to fill a 2-record queue."""
    await tracker.track(API, SERVICE, USAGE, response_id=ids[0])
    assert await wait_until(lambda: in_flight(collector))
    for rid in ids[1:3]:
        await tracker.track(API, SERVICE, USAGE, response_id=rid)
    assert tracker.health().queued == 2


def stalled(connection: dict[str, str], **options: Any) -> AsyncTracker:
    """A memory tracker of two records, sending one record per request."""
    return AsyncTracker(
        **connection,
        delivery_type="mem_queue",
        queue_size=2,
        max_batch_size=1,
        batch_interval=0.01,
        **options,
    )


async def test_block_waits_for_room(collector: LocalCollector, connection: dict[str, str]) -> None:
    """With ``block`` a track into a full queue returns once the actor makes room."""
    collector.set_faults(Faults(latency=LATENCY))
    ids = new_ids(4)
    async with stalled(connection, delivery_on_full="block") as tracker:
        await fill(tracker, collector, ids)
        start = time.monotonic()
        await tracker.track(API, SERVICE, USAGE, response_id=ids[3])
        waited = time.monotonic() - start
        assert waited >= 0.1
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(stored_ids(collector)) == sorted(ids)


async def test_block_timeout_raises(collector: LocalCollector, connection: dict[str, str]) -> None:
    """With ``block`` and ``block_timeout`` a track into a full queue raises after the timeout."""
    collector.set_faults(Faults(latency=LATENCY))
    ids = new_ids(4)
    async with stalled(connection, delivery_on_full="block", block_timeout=0.1) as tracker:
        await fill(tracker, collector, ids)
        start = time.monotonic()
        with pytest.raises(QueueFullError, match="stayed full"):
            await tracker.track(API, SERVICE, USAGE, response_id=ids[3])
        assert 0.09 <= time.monotonic() - start < LATENCY
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(stored_ids(collector)) == sorted(ids[:3])


async def test_raise_raises_at_once(collector: LocalCollector, connection: dict[str, str]) -> None:
    """With ``raise`` a track into a full queue raises QueueFullError at the call site."""
    collector.set_faults(Faults(latency=LATENCY))
    ids = new_ids(4)
    async with stalled(connection, delivery_on_full="raise") as tracker:
        await fill(tracker, collector, ids)
        start = time.monotonic()
        with pytest.raises(QueueFullError, match="full"):
            await tracker.track(API, SERVICE, USAGE, response_id=ids[3])
        assert time.monotonic() - start < 0.1
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(stored_ids(collector)) == sorted(ids[:3])


async def test_backpressure_drops_the_oldest(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """With ``backpressure`` the oldest queued record is dropped, counted and reported."""
    collector.set_faults(Faults(latency=LATENCY))
    dropped: list[Any] = []
    ids = new_ids(4)
    async with stalled(
        connection, delivery_on_full="backpressure", on_discard=dropped.append
    ) as tracker:
        await fill(tracker, collector, ids)
        await tracker.track(API, SERVICE, USAGE, response_id=ids[3])
        assert [r.response_id for r in dropped] == [ids[1]]
        assert tracker.health().discarded == {"backpressure": 1}
        assert tracker.health().queued == 2
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(stored_ids(collector)) == sorted([ids[0], ids[2], ids[3]])


def test_sync_block_timeout_and_raise(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """The sync facade applies the same policies in the calling thread."""
    for policy in ("block", "raise"):
        collector.set_faults(Faults(latency=LATENCY))
        collector.clear()
        ids = new_ids(4)
        with Tracker(
            **connection,
            delivery_type="mem_queue",
            queue_size=2,
            max_batch_size=1,
            batch_interval=0.01,
            delivery_on_full=policy,
            block_timeout=0.1,
        ) as tracker:
            tracker.track(API, SERVICE, USAGE, response_id=ids[0])
            assert wait_until_sync(lambda: in_flight(collector))
            for rid in ids[1:3]:
                tracker.track(API, SERVICE, USAGE, response_id=rid)
            start = time.monotonic()
            with pytest.raises(QueueFullError):
                tracker.track(API, SERVICE, USAGE, response_id=ids[3])
            waited = time.monotonic() - start
            assert (waited >= 0.09) if policy == "block" else (waited < 0.1)
            collector.set_faults(Faults())
            assert tracker.flush(10) == 0
        assert sorted(stored_ids(collector)) == sorted(ids[:3])
