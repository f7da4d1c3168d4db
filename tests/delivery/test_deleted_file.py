"""A queue file deleted or replaced under a running process: no row left where none can find it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from delivery_helpers import API, SERVICE, USAGE, stored_ids

from aicm import AsyncTracker, QueueStoreError, Tracker
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio


def ids_in(db_path: str) -> list[str]:
    """The response ids of the pending rows of the file now at ``db_path``."""
    with sqlite3.connect(db_path) as conn:
        return [r[0] for r in conn.execute("SELECT response_id FROM records WHERE state = 0")]


def delete(db_path: str, how: str) -> None:
    """Delete the queue file: only the database, or with its WAL and shared memory."""
    suffixes = ("",) if how == "db" else ("", "-wal", "-shm")
    for suffix in suffixes:
        if os.path.exists(db_path + suffix):
            os.unlink(db_path + suffix)


@pytest.mark.parametrize("how", ["db", "all"])
def test_sync_tracks_after_the_file_is_deleted_land_in_a_new_file(
    collector: LocalCollector, connection: dict[str, str], db_path: str, how: str
) -> None:
    """rm of the queue file (alone, or with -wal and -shm) under a sync tracker: the rows
    still queued and those tracked after are in a file at the path, and are delivered."""
    collector.set_faults(Faults(failure_rate=1.0))  # the service is down: rows stay queued
    tracker = Tracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=0.01
    )
    try:
        for n in range(5):
            tracker.track(API, SERVICE, USAGE, response_id=f"before-{n}")
        delete(db_path, how)
        for n in range(5):
            tracker.track(API, SERVICE, USAGE, response_id=f"after-{n}")
        # What a process starting now would find: every row.
        assert sorted(ids_in(db_path)) == sorted(
            [f"before-{n}" for n in range(5)] + [f"after-{n}" for n in range(5)]
        )
        collector.set_faults(Faults())
        assert tracker.flush(10) == 0
    finally:
        tracker.close(5)
    assert sorted(set(stored_ids(collector))) == sorted(
        [f"before-{n}" for n in range(5)] + [f"after-{n}" for n in range(5)]
    )
    assert ids_in(db_path) == []


async def test_async_tracks_after_the_file_is_replaced_land_in_the_new_file(
    collector: LocalCollector, connection: dict[str, str], db_path: str, tmp_path: Path
) -> None:
    """The queue file replaced (renamed over) by another queue file under an async tracker:
    the old file's rows and new tracks go into the new file, and are delivered."""
    collector.set_faults(Faults(failure_rate=1.0))
    other = str(tmp_path / "other.db")
    tracker = AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=other, batch_interval=0.01
    )
    async with tracker:
        await tracker.track(API, SERVICE, USAGE, response_id="other-0")
        await tracker.aclose(0.1)
    async with AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=0.01
    ) as tracker:
        for n in range(3):
            await tracker.track(API, SERVICE, USAGE, response_id=f"before-{n}")
        assert ids_in(other) == ["other-0"]
        os.replace(other, db_path)
        for n in range(3):
            await tracker.track(API, SERVICE, USAGE, response_id=f"after-{n}")
        expected = ["other-0", *(f"{w}-{n}" for w in ("before", "after") for n in range(3))]
        assert sorted(ids_in(db_path)) == sorted(expected)
        collector.set_faults(Faults())
        assert await tracker.flush(10) == 0
    assert sorted(set(stored_ids(collector))) == sorted(expected)


def test_a_file_that_cannot_be_a_queue_raises_at_the_call_site(
    collector: LocalCollector, connection: dict[str, str], db_path: str, tmp_path: Path
) -> None:
    """Replaced by a file that is not a queue, the path cannot take the rows: track()
    raises QueueStoreError instead of returning for a row no later process would find."""
    collector.set_faults(Faults(failure_rate=1.0))
    foreign = str(tmp_path / "foreign.db")
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    tracker = Tracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=0.01
    )
    try:
        tracker.track(API, SERVICE, USAGE, response_id="kept")
        os.replace(foreign, db_path)
        with pytest.raises(QueueStoreError, match="deleted or replaced"):
            tracker.track(API, SERVICE, USAGE, response_id="refused")
    finally:
        tracker.close(0.5)
