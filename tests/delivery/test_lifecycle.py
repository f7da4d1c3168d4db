"""flush and close with real deadlines, the atexit flush, fork, and many producer threads."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from delivery_helpers import API, SERVICE, USAGE, duplicates, new_ids, stored_ids

from aicm import AsyncTracker, Tracker
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio

QUEUED = ["mem_queue", "persistent_queue"]
HERE = Path(__file__).parent


async def track_all(tracker: AsyncTracker, ids: list[str]) -> None:
    """Track one record per id."""
    for rid in ids:
        await tracker.track(API, SERVICE, USAGE, response_id=rid)


@pytest.mark.parametrize("delivery_type", QUEUED)
async def test_flush_delivers_everything(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """flush sends what is queued now, batch window or not, and reports 0 left."""
    ids = new_ids(25)
    async with AsyncTracker(
        **connection, delivery_type=delivery_type, db_path=db_path, batch_interval=60
    ) as tracker:
        await track_all(tracker, ids)
        start = time.monotonic()
        assert await tracker.flush(5) == 0
        assert time.monotonic() - start < 2
        assert sorted(stored_ids(collector)) == sorted(ids)
        assert tracker.health().queued == 0


@pytest.mark.parametrize("delivery_type", QUEUED)
@pytest.mark.parametrize("outage", ["failing", "hung"])
async def test_flush_and_close_keep_their_deadline_when_the_service_is_down(
    collector: LocalCollector,
    connection: dict[str, str],
    db_path: str,
    hung_base: str,
    delivery_type: str,
    outage: str,
) -> None:
    """With the service failing or hanging, flush and close return on time, counting the rest."""
    options: dict[str, Any] = dict(connection)
    if outage == "hung":
        options["aicm_api_base"] = hung_base
    else:
        collector.set_faults(Faults(failure_rate=1.0))
    lost: list[Any] = []
    tracker = AsyncTracker(
        **options,
        delivery_type=delivery_type,
        db_path=db_path,
        batch_interval=0.01,
        on_discard=lost.append,
    )
    async with tracker:
        await track_all(tracker, new_ids(5))
        start = time.monotonic()
        assert await tracker.flush(0.4) == 5
        assert 0.35 <= time.monotonic() - start < 0.9
        start = time.monotonic()
        assert await tracker.aclose(0.4) == 5
        assert time.monotonic() - start < 0.9
        health = tracker.health()
    assert not health.worker_alive
    if delivery_type == "mem_queue":
        assert health.discarded == {"closed": 5}
        assert len(lost) == 5
    else:
        assert health.discarded == {}
        assert lost == []
    assert collector.count("track") == 0


async def test_persistent_rows_left_at_close_are_delivered_by_the_next_tracker(
    collector: LocalCollector, connection: dict[str, str], db_path: str
) -> None:
    """What a persistent queue could not send before close stays on disk for the next start."""
    collector.set_faults(Faults(failure_rate=1.0))
    ids = new_ids(7)
    options: dict[str, Any] = dict(
        connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=0.01
    )
    async with AsyncTracker(**options) as tracker:
        await track_all(tracker, ids)
        assert await tracker.aclose(0.3) == 7
    # Checked in the file before the next start: a tracker claims a backlog found at start
    # at once, so its health() may already count these rows as sent.
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM records WHERE state = 0").fetchone() == (7,)
    conn.close()
    collector.set_faults(Faults())
    async with AsyncTracker(**options) as tracker:
        assert await tracker.flush(5) == 0
        assert tracker.health().sent == 7
    assert sorted(stored_ids(collector)) == sorted(ids)
    assert duplicates(collector) == 0


def test_sync_close_reports_lost_memory_records(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """The sync facade's close has the same deadline and the same count."""
    collector.set_faults(Faults(failure_rate=1.0))
    tracker = Tracker(**connection, delivery_type="mem_queue", batch_interval=0.01)
    for rid in new_ids(3):
        tracker.track(API, SERVICE, USAGE, response_id=rid)
    start = time.monotonic()
    assert tracker.close(0.3) == 3
    assert time.monotonic() - start < 0.8
    assert tracker.health().discarded == {"closed": 3}


def test_atexit_flushes_a_sync_memory_queue(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """A process that tracks and exits without close still delivers (the atexit hook)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    env.update(AICM_API_KEY=connection["aicm_api_key"], AICM_API_BASE=collector.api_base)
    prefix = new_ids(1, "exit")[0]
    done = subprocess.run(
        [sys.executable, str(HERE / "atexit_producer.py"), "50", prefix],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tracked"
    assert sorted(stored_ids(collector)) == sorted(f"{prefix}-{i}" for i in range(50))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_starts_fresh(collector: LocalCollector, connection: dict[str, str]) -> None:
    """A forked child neither re-sends the parent's queued records nor loses its own."""
    parent_ids, child_ids = new_ids(10, "parent"), new_ids(5, "child")
    tracker = Tracker(**connection, delivery_type="mem_queue", batch_interval=60)
    for rid in parent_ids:
        tracker.track(API, SERVICE, USAGE, response_id=rid)
    assert tracker.health().queued == 10  # still in the parent's memory at the fork
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            for rid in child_ids:
                tracker.track(API, SERVICE, USAGE, response_id=rid)
            code = 0 if tracker.close(5) == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(stored_ids(collector)) == sorted(child_ids)
    tracker.track(API, SERVICE, USAGE, response_id=parent_ids[0] + "-after")
    assert tracker.close(5) == 0
    assert sorted(stored_ids(collector)) == sorted(
        [*child_ids, *parent_ids, parent_ids[0] + "-after"]
    )
    assert duplicates(collector) == 0


def test_eight_threads_track_concurrently(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """8 threads x 2,000 sync track calls: exactly 16,000 distinct records arrive."""
    errors: list[BaseException] = []
    with Tracker(**connection, delivery_type="mem_queue", batch_interval=0.05) as tracker:

        def produce(n: int) -> None:
            try:
                for i in range(2000):
                    tracker.track(API, SERVICE, {"input_tokens": i}, response_id=f"t{n}-{i}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert tracker.flush(30) == 0
        health = tracker.health()
    ids = stored_ids(collector)
    assert len(ids) == 16_000
    assert len(set(ids)) == 16_000
    assert duplicates(collector) == 0
    assert health.sent == 16_000
    assert health.discarded == {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("delivery", ["mem_queue", "persistent_queue"])
def test_a_fork_that_skips_pythons_hooks(
    collector: LocalCollector, connection: dict[str, str], tmp_path: Path, delivery: str
) -> None:
    """After a libc fork() (no at-fork hooks ran) the child delivers its own records with
    ids of its own, and neither process loses or merges a record."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    env.update(AICM_API_KEY=connection["aicm_api_key"], AICM_API_BASE=collector.api_base)
    done = subprocess.run(
        [sys.executable, str(HERE / "hookless_fork_producer.py"), delivery, str(tmp_path / "q")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["child", "0", "parent", "0"]
    ids = stored_ids(collector)
    assert len(set(ids)) == 50  # 10 before the fork, 20 in each process after it
    assert duplicates(collector) == 0
