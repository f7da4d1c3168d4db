"""Every answer the service can give, and what the engine does with the records in it."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator

import anyio
import pytest
from delivery_helpers import (
    API,
    SERVICE,
    USAGE,
    duplicates,
    new_ids,
    requests,
    stored_ids,
    wait_until,
)

from aicm import AsyncTracker, Tracker
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio

QUEUED = ["mem_queue", "persistent_queue"]


def tracker_for(
    connection: dict[str, str], delivery_type: str, db_path: str, **options: object
) -> AsyncTracker:
    """A queued tracker at the collector with a short batch window."""
    options.setdefault("batch_interval", 0.02)
    return AsyncTracker(**connection, delivery_type=delivery_type, db_path=db_path, **options)  # type: ignore[arg-type]


async def track_all(tracker: AsyncTracker, ids: list[str]) -> None:
    """Track one record per id."""
    for rid in ids:
        await tracker.track(API, SERVICE, USAGE, response_id=rid)


def dead_rows(db_path: str) -> dict[str, str]:
    """response_id -> reason of the dead-lettered rows in a queue file."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT response_id, last_error FROM records WHERE state = 1")
        return dict(rows.fetchall())


def pending_rows(db_path: str) -> int:
    """Pending (not yet delivered) rows in a queue file."""
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM records WHERE state = 0").fetchone()[0])


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_delivered(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """Records go to the service once each; health counts them sent."""
    ids = new_ids(5)
    async with tracker_for(connection, delivery_type, db_path) as tracker:
        await track_all(tracker, ids)
        assert await tracker.flush(5) == 0
        health = tracker.health()
    assert sorted(stored_ids(collector)) == sorted(ids)
    assert health.sent == 5
    assert health.queued == 0
    assert health.failed == 0
    assert duplicates(collector) == 0


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_retryable_5xx_then_success(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """503s are retried with backoff until the service accepts the batch."""
    collector.set_faults(Faults(fail_first=2, failure_status=503))
    ids = new_ids(4)
    async with tracker_for(connection, delivery_type, db_path) as tracker:
        await track_all(tracker, ids)
        assert await tracker.flush(5) == 0
        health = tracker.health()
    assert sorted(stored_ids(collector)) == sorted(ids)
    assert requests(collector) == {"503": 2, "202": 1}
    assert health.retried == 8
    assert health.sent == 4
    assert "503" in (health.last_error or "")


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_429_retry_after_is_honoured(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """After a 429 with Retry-After the next attempt waits at least that long."""
    collector.set_faults(Faults(fail_first=1, failure_status=429, retry_after=0.6))
    ids = new_ids(3)
    async with tracker_for(connection, delivery_type, db_path) as tracker:
        await track_all(tracker, ids)
        assert await wait_until(lambda: requests(collector).get("429") == 1)
        refused_at = time.time()
        assert await wait_until(lambda: collector.count("track") == 3)
        assert await tracker.flush(5) == 0
    arrived = min(r["received_at"] for r in collector.records("track"))
    assert arrived - refused_at >= 0.6 - 0.02  # the poll above may see the 429 a little late


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_outage_longer_than_every_backoff_step(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """A long outage is waited out at the backoff cap: nothing lost, nothing sent twice."""
    collector.set_faults(Faults(failure_rate=1.0))
    ids = new_ids(60)
    async with tracker_for(connection, delivery_type, db_path, max_batch_size=7) as tracker:
        for i, rid in enumerate(ids):
            await tracker.track(API, SERVICE, USAGE, response_id=rid)
            if i % 10 == 9:
                await anyio.sleep(0.1)
        await anyio.sleep(0.6)  # 1.2 s of outage against a 0.1 s backoff cap
        failures = requests(collector).get("503", 0)
        assert failures >= 6
        assert tracker.health().worker_alive
        collector.set_faults(Faults())
        assert await tracker.flush(5) == 0
        health = tracker.health()
    assert sorted(stored_ids(collector)) == sorted(ids)
    assert duplicates(collector) == 0
    assert health.sent == 60
    assert health.dead_lettered == 0


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_401_pauses_delivery_and_keeps_records(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """A refused key pauses delivery (visible in health); once fixed, the records arrive."""
    collector.set_faults(Faults(require_api_key="another-key-entirely"))
    ids = new_ids(3)
    async with tracker_for(connection, delivery_type, db_path) as tracker:
        await track_all(tracker, ids)
        assert await wait_until(lambda: tracker.health().auth_paused)
        health = tracker.health()
        assert "401" in (health.last_error or "")
        assert "AuthenticationError" in (health.last_error or "")
        assert health.queued == 3
        assert health.dead_lettered == 0
        assert health.failed == 0
        assert collector.count("track") == 0
        collector.set_faults(Faults())
        assert await wait_until(lambda: collector.count("track") == 3, timeout=5)
        assert await wait_until(lambda: not tracker.health().auth_paused)
        assert await tracker.flush(5) == 0
    assert sorted(stored_ids(collector)) == sorted(ids)


@pytest.mark.parametrize("delivery_type", QUEUED)
@pytest.mark.parametrize("reject_status", [422, 202])
async def test_named_rejections_are_dead_lettered_alone(
    collector: LocalCollector,
    connection: dict[str, str],
    db_path: str,
    delivery_type: str,
    reject_status: int,
) -> None:
    """Records the service names as bad are dead-lettered with the reason; the rest arrive."""
    ids = new_ids(6)
    bad = {ids[1], ids[4]}
    collector.set_faults(Faults(reject_response_ids=bad, reject_status=reject_status))
    async with tracker_for(connection, delivery_type, db_path, batch_interval=5) as tracker:
        await track_all(tracker, ids)
        assert await tracker.flush(5) == 0
        health = tracker.health()
        letters = tracker.dead_letters()
    assert sorted(stored_ids(collector)) == sorted(set(ids) - bad)
    assert health.dead_lettered == 2
    assert health.sent == 4
    if delivery_type == "mem_queue":
        assert {d.response_id for d in letters} == bad
        assert all("rejected" in d.reason for d in letters)
    else:
        reasons = dead_rows(db_path)
        assert set(reasons) == bad
        assert all("rejected" in why for why in reasons.values())
        assert pending_rows(db_path) == 0


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_unnamed_4xx_bisects_to_isolate(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """A 400 naming no record halves the batch until the refused record stands alone."""
    # Requests 1-3 answer 400: [a b c d] -> [a b] -> [a] (dead); then [b], [c d] go through.
    collector.set_faults(Faults(fail_first=3, failure_status=400))
    ids = new_ids(4)
    async with tracker_for(connection, delivery_type, db_path, batch_interval=5) as tracker:
        await track_all(tracker, ids)
        assert await tracker.flush(5) == 0
        health = tracker.health()
    assert sorted(stored_ids(collector)) == sorted(ids[1:])
    assert requests(collector) == {"400": 3, "202": 2}
    assert health.dead_lettered == 1
    assert health.sent == 3


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_one_unnamed_4xx_loses_nothing(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """A single 400 for a whole batch splits it; both halves then go through."""
    collector.set_faults(Faults(fail_first=1, failure_status=400))
    ids = new_ids(8)
    async with tracker_for(connection, delivery_type, db_path, batch_interval=5) as tracker:
        await track_all(tracker, ids)
        assert await tracker.flush(5) == 0
        health = tracker.health()
    assert sorted(stored_ids(collector)) == sorted(ids)
    assert requests(collector) == {"400": 1, "202": 2}
    assert health.dead_lettered == 0


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_dropped_connections_after_store(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """Answers lost after the service stored the batch: resent, stored once, none lost."""
    collector.set_faults(Faults(drop_rate=0.5, drop_after_store=True))
    ids = new_ids(40)
    async with tracker_for(connection, delivery_type, db_path, max_batch_size=5) as tracker:
        await track_all(tracker, ids)
        assert await tracker.flush(10) == 0
    stored = stored_ids(collector)
    assert sorted(stored) == sorted(ids)
    assert len(stored) == len(set(stored))
    assert requests(collector).get("dropped", 0) > 0
    assert duplicates(collector) > 0  # resent after a drop; the service's dedup absorbed them


class _RaiseOnce(logging.Filter):
    """A user's log filter that fails on chosen messages: an error the actor did not expect."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.left = list(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        for prefix in self.left:
            if str(record.msg).startswith(prefix):
                self.left.remove(prefix)
                raise RuntimeError(f"log filter exploded on {prefix!r}")
        return True


@pytest.fixture
def exploding_log() -> Iterator[_RaiseOnce]:
    """Makes the engine's own logging raise, once per chosen message, inside the actor."""
    explode = _RaiseOnce("delivered", "unexpected error", "delivery of")
    logger = logging.getLogger("aicm.delivery")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addFilter(explode)
    try:
        yield explode
    finally:
        logger.removeFilter(explode)
        logger.setLevel(level)


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_unexpected_errors_never_kill_the_worker(
    collector: LocalCollector,
    connection: dict[str, str],
    db_path: str,
    delivery_type: str,
    exploding_log: _RaiseOnce,
) -> None:
    """Exceptions raised deep inside the actor neither kill it nor duplicate records."""
    collector.set_faults(Faults(fail_first=1))
    first, second = new_ids(5), new_ids(5)
    async with tracker_for(connection, delivery_type, db_path) as tracker:
        await track_all(tracker, first)
        assert await tracker.flush(5) == 0
        assert not exploding_log.left, "the faults were not provoked"
        assert tracker.health().worker_alive
        await track_all(tracker, second)
        assert await tracker.flush(5) == 0
        health = tracker.health()
    assert sorted(stored_ids(collector)) == sorted(first + second)
    assert duplicates(collector) == 0, "records already acked were sent again"
    assert health.sent == 10
    assert "log filter exploded" in (health.last_error or "")


def test_raising_on_discard_never_reaches_the_caller(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """An on_discard callback that raises is logged and ignored; tracking goes on."""
    calls: list[str] = []

    def on_discard(record: object) -> None:
        calls.append(getattr(record, "response_id", ""))
        raise ValueError("user callback bug")

    collector.set_faults(Faults(latency=0.3))
    ids = new_ids(6)
    with Tracker(
        **connection,
        delivery_type="mem_queue",
        delivery_on_full="backpressure",
        queue_size=2,
        batch_interval=5,
        on_discard=on_discard,
    ) as tracker:
        for rid in ids:
            tracker.track(API, SERVICE, USAGE, response_id=rid)
        assert calls == ids[:4]
        assert tracker.health().discarded == {"backpressure": 4}
        assert tracker.health().worker_alive
        assert tracker.flush(5) == 0
    assert sorted(stored_ids(collector)) == sorted(ids[4:])


async def test_immediate_unknown_outcome_names_the_records(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """IMMEDIATE with no answer in time: DeliveryError.response_ids names what was sent (one
    for track, all for track_batch), and tracking them again is counted once."""
    from aicm import DeliveryError

    collector.set_faults(Faults(latency=0.6))  # stored, but the answer comes too late
    async with AsyncTracker(**connection, delivery_type="immediate", timeout=0.15) as tracker:
        with pytest.raises(DeliveryError) as raised:
            await tracker.track(API, SERVICE, USAGE, response_id="unsure-1")
        assert raised.value.response_ids == ("unsure-1",)
        assert "same response_id" in str(raised.value)
        assert "is safe" in str(raised.value)
        batch = [
            {"api_id": API, "service_key": SERVICE, "usage": USAGE, "response_id": f"unsure-b{n}"}
            for n in range(3)
        ]
        with pytest.raises(DeliveryError) as raised_batch:
            await tracker.track_batch(batch)
        assert raised_batch.value.response_ids == ("unsure-b0", "unsure-b1", "unsure-b2")
        await anyio.sleep(0.8)  # the late requests end on the service's side
        collector.set_faults(Faults())
        assert (await tracker.track(API, SERVICE, USAGE, response_id="unsure-1")).ok
        for result in await tracker.track_batch(batch):
            assert result.ok
    assert sorted(set(stored_ids(collector))) == ["unsure-1", "unsure-b0", "unsure-b1", "unsure-b2"]
