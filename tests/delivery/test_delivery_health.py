"""Health figures: per tracker, and summed over every live tracker in the process."""

from __future__ import annotations

import gc

import pytest
from delivery_helpers import API, SERVICE, USAGE, new_ids

from aicm import AsyncTracker, get_global_delivery_health
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio


async def test_global_health_sums_live_trackers(
    collector: LocalCollector, connection: dict[str, str], db_path: str
) -> None:
    """get_global_delivery_health() adds up live trackers and forgets closed ones."""
    # An earlier test's tracker left unclosed (never started) stays in the sum until the
    # garbage collector breaks its reference cycles; its dead worker is not this test's.
    gc.collect()
    before = get_global_delivery_health()
    async with (
        AsyncTracker(**connection, delivery_type="mem_queue", batch_interval=60) as memory,
        AsyncTracker(
            **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=60
        ) as disk,
    ):
        for rid in new_ids(3):
            await memory.track(API, SERVICE, USAGE, response_id=rid)
        for rid in new_ids(4):
            await disk.track(API, SERVICE, USAGE, response_id=rid)
        assert await memory.flush(5) == 0
        assert await disk.flush(5) == 0
        # Now some waiting in their batch windows: a stable figure to add up.
        for rid in new_ids(2):
            await memory.track(API, SERVICE, USAGE, response_id=rid)
        for rid in new_ids(3):
            await disk.track(API, SERVICE, USAGE, response_id=rid)
        assert memory.health().queued == 2
        assert disk.health().queued == 3
        total = get_global_delivery_health()
        assert total.engines == before.engines + 2
        assert total.sent == before.sent + 7
        assert total.queued == before.queued + 5
        assert total.worker_alive
        assert set(total.delivery_type.split(",")) >= {"mem_queue", "persistent_queue"}
        assert total.oldest_pending_age is not None
        assert total.queue_utilisation == memory.health().queue_utilisation
        collector.set_faults(Faults(fail_first=1))
        assert await memory.flush(5) == 0
        assert "503" in (get_global_delivery_health().last_error or "")
    after = get_global_delivery_health()
    assert after.engines == before.engines


async def test_an_immediate_tracker_counts_no_queue_file_as_its_own(
    connection: dict[str, str], db_path: str
) -> None:
    """An IMMEDIATE tracker queues nothing: rows another tracker left pending in the queue
    file at its db_path (same service, same key) are not reported as its queue."""
    async with AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=60
    ) as disk:
        for rid in new_ids(3):
            await disk.track(API, SERVICE, USAGE, response_id=rid)
        assert disk.health().queued == 3
        async with AsyncTracker(**connection, delivery_type="immediate", db_path=db_path) as now:
            health = now.health()
            assert health.queued == 0
            assert health.oldest_pending_age is None
