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


def in_flight(collector: LocalCollector, requests: int) -> bool:
    """True once ``requests`` (stalled) requests have reached the collector."""
    return bool(collector.stats()["faults"]["latency"] >= requests)


async def fill(tracker: AsyncTracker, collector: LocalCollector, ids: list[str]) -> None:
    """Track ids[0] and ids[1] until both are in flight (stalled: the actor keeps two
    requests in flight, and records in them are out of the queue), then ids[2:4] to fill
    a 2-record queue."""
    for n, rid in enumerate(ids[:2], start=1):
        await tracker.track(API, SERVICE, USAGE, response_id=rid)
        assert await wait_until(lambda n=n: in_flight(collector, n))
    for rid in ids[2:4]:
        await tracker.track(API, SERVICE, USAGE, response_id=rid)
    health = tracker.health()
    assert (health.queued, health.in_flight) == (2, 2)


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
    ids = new_ids(5)
    async with stalled(connection, delivery_on_full="block") as tracker:
        await fill(tracker, collector, ids)
        start = time.monotonic()
        await tracker.track(API, SERVICE, USAGE, response_id=ids[4])
        waited = time.monotonic() - start
        assert waited >= 0.1
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(stored_ids(collector)) == sorted(ids)


async def test_block_timeout_raises(collector: LocalCollector, connection: dict[str, str]) -> None:
    """With ``block`` and ``block_timeout`` a track into a full queue raises after the timeout."""
    collector.set_faults(Faults(latency=LATENCY))
    ids = new_ids(5)
    async with stalled(connection, delivery_on_full="block", block_timeout=0.1) as tracker:
        await fill(tracker, collector, ids)
        start = time.monotonic()
        with pytest.raises(QueueFullError, match="stayed full"):
            await tracker.track(API, SERVICE, USAGE, response_id=ids[4])
        assert 0.09 <= time.monotonic() - start < LATENCY
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(stored_ids(collector)) == sorted(ids[:4])


async def test_raise_raises_at_once(collector: LocalCollector, connection: dict[str, str]) -> None:
    """With ``raise`` a track into a full queue raises QueueFullError at the call site."""
    collector.set_faults(Faults(latency=LATENCY))
    ids = new_ids(5)
    async with stalled(connection, delivery_on_full="raise") as tracker:
        await fill(tracker, collector, ids)
        start = time.monotonic()
        with pytest.raises(QueueFullError, match="full"):
            await tracker.track(API, SERVICE, USAGE, response_id=ids[4])
        assert time.monotonic() - start < 0.1
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(stored_ids(collector)) == sorted(ids[:4])


async def test_backpressure_drops_the_oldest(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """With ``backpressure`` the oldest queued record is dropped, counted and reported."""
    collector.set_faults(Faults(latency=LATENCY))
    dropped: list[Any] = []
    ids = new_ids(5)
    async with stalled(
        connection, delivery_on_full="backpressure", on_discard=dropped.append
    ) as tracker:
        await fill(tracker, collector, ids)
        await tracker.track(API, SERVICE, USAGE, response_id=ids[4])
        assert [r.response_id for r in dropped] == [ids[2]]
        assert tracker.health().discarded == {"backpressure": 1}
        assert tracker.health().queued == 2
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(stored_ids(collector)) == sorted([ids[0], ids[1], ids[3], ids[4]])


def test_sync_block_timeout_and_raise(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """The sync facade applies the same policies in the calling thread."""
    for policy in ("block", "raise"):
        collector.set_faults(Faults(latency=LATENCY))
        collector.clear()
        ids = new_ids(5)
        with Tracker(
            **connection,
            delivery_type="mem_queue",
            queue_size=2,
            max_batch_size=1,
            batch_interval=0.01,
            delivery_on_full=policy,
            block_timeout=0.1,
        ) as tracker:
            for n, rid in enumerate(ids[:2], start=1):
                tracker.track(API, SERVICE, USAGE, response_id=rid)
                assert wait_until_sync(lambda n=n: in_flight(collector, n))
            for rid in ids[2:4]:
                tracker.track(API, SERVICE, USAGE, response_id=rid)
            start = time.monotonic()
            with pytest.raises(QueueFullError):
                tracker.track(API, SERVICE, USAGE, response_id=ids[4])
            waited = time.monotonic() - start
            assert (waited >= 0.09) if policy == "block" else (waited < 0.1)
            collector.set_faults(Faults())
            assert tracker.flush(10) == 0
        assert sorted(stored_ids(collector)) == sorted(ids[:4])
