"""Batching: a full batch goes at once, a partial one after batch_interval, an idle engine rests."""

from __future__ import annotations

import time

import anyio
import pytest
from delivery_helpers import API, SERVICE, USAGE, new_ids, requests, stored_ids, wait_until

from aicm import AsyncTracker, Tracker
from aicm.collector import LocalCollector

pytestmark = pytest.mark.anyio

QUEUED = ["mem_queue", "persistent_queue"]


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_full_batch_goes_at_once(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """max_batch_size records go in one request long before batch_interval."""
    ids = new_ids(10)
    async with AsyncTracker(
        **connection,
        delivery_type=delivery_type,
        db_path=db_path,
        max_batch_size=10,
        batch_interval=30,
    ) as tracker:
        start = time.monotonic()
        for rid in ids:
            await tracker.track(API, SERVICE, USAGE, response_id=rid)
        assert await wait_until(lambda: collector.count("track") == 10, timeout=5)
        assert time.monotonic() - start < 5
        assert requests(collector) == {"202": 1}
        assert sorted(stored_ids(collector)) == sorted(ids)
        assert await tracker.flush(5) == 0


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_partial_batch_goes_after_interval(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """Fewer than max_batch_size records wait batch_interval, then go in one request."""
    async with AsyncTracker(
        **connection,
        delivery_type=delivery_type,
        db_path=db_path,
        max_batch_size=100,
        batch_interval=0.4,
    ) as tracker:
        start = time.monotonic()
        for rid in new_ids(3):
            await tracker.track(API, SERVICE, USAGE, response_id=rid)
        await anyio.sleep(0.2)
        assert collector.count("track") == 0, "sent before batch_interval"
        assert await wait_until(lambda: collector.count("track") == 3, timeout=5)
        elapsed = time.monotonic() - start
        assert 0.35 <= elapsed < 2.0
        assert requests(collector) == {"202": 1}


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_idle_engine_makes_no_requests_and_burns_no_cpu(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """A running tracker with nothing to send neither polls the service nor spins."""
    async with AsyncTracker(
        **connection, delivery_type=delivery_type, db_path=db_path, batch_interval=0.05
    ) as tracker:
        await tracker.track(API, SERVICE, USAGE)
        assert await tracker.flush(5) == 0
        collector.clear()
        cpu = time.process_time()
        await anyio.sleep(1.0)
        used = time.process_time() - cpu
        assert tracker.health().worker_alive
    assert used < 0.1, f"idle engine used {used:.3f} s of CPU in 1 s"
    assert requests(collector) == {}


def test_idle_sync_tracker_burns_no_cpu(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """The sync facade's shared runtime also rests while there is nothing to send."""
    with Tracker(**connection, delivery_type="mem_queue", batch_interval=0.05) as tracker:
        tracker.track(API, SERVICE, USAGE)
        assert tracker.flush(5) == 0
        collector.clear()
        cpu = time.process_time()
        time.sleep(1.0)
        used = time.process_time() - cpu
    assert used < 0.1, f"idle runtime used {used:.3f} s of CPU in 1 s"
    assert requests(collector) == {}
