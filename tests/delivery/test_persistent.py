"""The persistent queue: durable before track returns, private, leased, shared, group-committed."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from delivery_helpers import API, SERVICE, USAGE, new_ids, stored_ids, wait_until

from aicm import AsyncTracker, QueueStoreError, Tracker, TrackRecord
from aicm._core.settings import key_fingerprint
from aicm._delivery.sqlite_store import SqliteStore
from aicm._delivery.store import Item
from aicm.collector import Faults, LocalCollector
from tests.sqlite_support import add_all, claim, loop_writer, queue_row, sqlite_stores

pytestmark = pytest.mark.anyio


def rows(db_path: str, where: str = "1") -> list[tuple[str, str, str, int]]:
    """(response_id, api_root, key_fp, state) of the queue file's rows."""
    with sqlite3.connect(db_path) as conn:
        found = conn.execute(
            f"SELECT response_id, api_root, key_fp, state FROM records WHERE {where} ORDER BY id"
        )
        return list(found.fetchall())


def test_sync_track_commits_before_returning(
    collector: LocalCollector, connection: dict[str, str], db_path: str, api_key: str
) -> None:
    """When the sync track returns, its row is already in the file, with root and fingerprint."""
    ids = new_ids(3)
    with Tracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=60
    ) as tracker:
        for rid in ids:
            tracker.track(API, SERVICE, USAGE, response_id=rid)
            found = rows(db_path, f"response_id = '{rid}'")
            assert found == [(rid, collector.url, key_fingerprint(api_key), 0)]
        assert tracker.flush(5) == 0
    assert sorted(stored_ids(collector)) == sorted(ids)


async def test_async_track_commits_before_returning(
    collector: LocalCollector, connection: dict[str, str], db_path: str, api_key: str
) -> None:
    """When the async track returns, its row is already in the file."""
    async with AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=60
    ) as tracker:
        for rid in new_ids(3):
            await tracker.track(API, SERVICE, USAGE, response_id=rid)
            assert rows(db_path, f"response_id = '{rid}'") == [
                (rid, collector.url, key_fingerprint(api_key), 0)
            ]
        assert await tracker.flush(5) == 0


def test_file_is_private_and_never_holds_the_key(
    collector: LocalCollector, connection: dict[str, str], tmp_path: Path, api_key: str
) -> None:
    """The queue file (and its WAL) is mode 0600 in a 0700 folder and never holds the key."""
    db_path = str(tmp_path / "private" / "queue.db")
    collector.set_faults(Faults(failure_rate=1.0))  # keep rows (and a WAL) around
    with Tracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=0.01
    ) as tracker:
        for rid in new_ids(5):
            tracker.track(API, SERVICE, USAGE, response_id=rid)
        time.sleep(0.2)
        files = [p for p in Path(db_path).parent.iterdir() if p.name.startswith("queue.db")]
        assert {p.name for p in files} >= {"queue.db", "queue.db-wal"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert api_key.encode() not in path.read_bytes(), path
        tracker.close(0.2)
    assert stat.S_IMODE(Path(db_path).parent.stat().st_mode) == 0o700
    assert api_key.encode() not in Path(db_path).read_bytes()
    assert {r[2] for r in rows(db_path)} == {key_fingerprint(api_key)}


async def test_two_owners_never_claim_the_same_live_row(db_path: str) -> None:
    """Two stores on one file claiming concurrently split the rows; none is claimed twice."""
    async with sqlite_stores() as open_store:
        first = await open_store(db_path)
        second = await open_store(db_path)
        ids = new_ids(200)
        await add_all(first, [queue_row(rid) for rid in ids])
        claimed: dict[str, list[Item]] = {"first": [], "second": []}

        async def drain(name: str, store: SqliteStore) -> None:
            while got := await store.claim(7):
                claimed[name].extend(got)
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, "first", first)
            tg.start_soon(drain, "second", second)
        both = [i.row_id for i in claimed["first"] + claimed["second"]]
        assert len(both) == 200
        assert len(set(both)) == 200
        # A live lease is not the other's to release or to hurry.
        await second.give_back(claimed["first"], 0, "not mine")
        await second.hurry(10**9)
        assert await second.claim(500) == []


async def test_a_crashed_owners_rows_are_claimed_after_the_lease(db_path: str) -> None:
    """Rows leased by an owner that died come back once the lease expires, not before."""
    async with sqlite_stores() as open_store:
        crashed = await open_store(db_path, lease_seconds=0.3)
        await add_all(crashed, [queue_row(rid) for rid in new_ids(4)])
        taken = await claim(crashed, 10)
        assert len(taken) == 4
    # It died holding the lease (its owner id names this process, which lives on).
    async with sqlite_stores() as open_store:
        survivor = await open_store(db_path)
        assert await survivor.claim(10) == []
        due = await survivor.next_retry_due()
        assert due is not None
        assert due > time.time()
        await anyio.sleep(0.35)
        again = await claim(survivor, 10)
        assert [r.id for r in again] == [r.id for r in taken]
        assert all(r.attempts == 2 for r in again)


async def test_rows_of_another_root_or_key_are_not_sent(
    collector: LocalCollector, connection: dict[str, str], db_path: str, api_key: str
) -> None:
    """A tracker sends only its own API root's and key's rows from a shared file."""
    theirs = new_ids(3, "theirs")
    for base, key in ((collector.api_base, "someone-elses-key"), ("http://127.0.0.1:9", api_key)):
        async with sqlite_stores() as open_store:
            other = await open_store(db_path, api_base=base, key=key)
            await add_all(other, [queue_row(rid) for rid in theirs])
    ours = new_ids(3, "ours")
    async with AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=0.01
    ) as tracker:
        await anyio.sleep(0.1)
        for rid in ours:
            await tracker.track(API, SERVICE, USAGE, response_id=rid)
        assert await tracker.flush(5) == 0
    assert sorted(stored_ids(collector)) == sorted(ours)
    assert len(rows(db_path, "state = 0")) == 6  # theirs, still waiting for their owners


async def test_rows_aicm_cannot_have_written_are_dead_lettered_alone(
    collector: LocalCollector, connection: dict[str, str], db_path: str, api_key: str
) -> None:
    """Rows another program damaged (a body stored as bytes, an unknown endpoint, a
    created_at that is no time) are dead-lettered with the reason; the good rows claimed
    with them are delivered, and opening the file does not fail on them either."""
    ids = new_ids(6)
    # Queued for this collector and key (as a tracker would), then damaged in place.
    async with sqlite_stores() as open_store:
        queue = await open_store(db_path, api_base=collector.api_base, key=api_key)
        await add_all(
            queue,
            [
                queue_row(
                    rid,
                    json.dumps(TrackRecord.build(API, SERVICE, USAGE, response_id=rid).wire()),
                )
                for rid in ids
            ],
        )
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE records SET body = ? WHERE response_id = ?", (b"\xff\xfe", ids[0]))
        conn.execute("UPDATE records SET endpoint = '/nowhere' WHERE response_id = ?", (ids[1],))
        conn.execute("UPDATE records SET created_at = 'abc' WHERE response_id = ?", (ids[2],))
    async with AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=0.01
    ) as tracker:
        assert await tracker.flush(5) == 0
        health = tracker.health()
        assert (health.sent, health.dead_lettered, health.queued) == (3, 3, 0), health
    assert sorted(stored_ids(collector)) == sorted(ids[3:])
    dead = rows(db_path, "state = 1")
    assert sorted(r[0] for r in dead) == sorted(ids[:3])
    with sqlite3.connect(db_path) as conn:
        reasons = dict(conn.execute("SELECT response_id, last_error FROM records"))
    assert "its body is bytes, not text" in reasons[ids[0]]
    assert "unknown endpoint '/nowhere'" in reasons[ids[1]]
    assert "its created_at is str, not a time" in reasons[ids[2]]


@pytest.mark.parametrize("delivery_type", ["persistent_queue"])
async def test_max_age_dead_letters_rows_that_keep_failing(
    collector: LocalCollector, connection: dict[str, str], db_path: str, delivery_type: str
) -> None:
    """A row that cannot be delivered within max_age is dead-lettered with the last error."""
    collector.set_faults(Faults(failure_rate=1.0))
    async with AsyncTracker(
        **connection,
        delivery_type=delivery_type,
        db_path=db_path,
        batch_interval=0.01,
        max_age=0.3,
    ) as tracker:
        await tracker.track(API, SERVICE, USAGE, response_id="old-one")
        assert await wait_until(lambda: tracker.health().dead_lettered == 1, timeout=3)
        assert tracker.health().queued == 0
        assert await tracker.flush(1) == 0
    with sqlite3.connect(db_path) as conn:
        state, reason = conn.execute(
            "SELECT state, last_error FROM records WHERE response_id = 'old-one'"
        ).fetchone()
    assert state == 1
    assert "max_age" in reason
    assert "503" in reason


async def test_concurrent_tracks_share_commits(
    collector: LocalCollector, connection: dict[str, str], db_path: str
) -> None:
    """100 concurrent async tracks are all committed, in far fewer transactions (group commit)."""
    ids = new_ids(100)
    async with AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=60
    ) as tracker:
        store = tracker.engine.store
        assert isinstance(store, SqliteStore)
        queue = loop_writer(store)
        before = queue.commits
        async with anyio.create_task_group() as tg:
            for rid in ids:
                tg.start_soon(lambda rid=rid: tracker.track(API, SERVICE, USAGE, response_id=rid))
        commits = queue.commits - before
        assert sorted(r[0] for r in rows(db_path)) == sorted(ids)
        assert 1 <= commits < 20, f"{commits} transactions for 100 records"
        assert await tracker.flush(5) == 0
    assert sorted(stored_ids(collector)) == sorted(ids)


async def test_callers_cancelled_while_their_commit_runs_are_still_counted(
    collector: LocalCollector, connection: dict[str, str], db_path: str
) -> None:
    """Cancelled while waiting for a group commit, a caller's row is committed anyway: the
    tracker's health counts it, and it is delivered."""
    async with AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=60
    ) as tracker:
        async with anyio.create_task_group() as tg:
            for rid in new_ids(50):
                tg.start_soon(lambda rid=rid: tracker.track(API, SERVICE, USAGE, response_id=rid))
            # Every caller has added its row and waits for the commit:
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
        written = len(rows(db_path))
        assert written == 50
        assert tracker.health().queued == written
        # The tracker's own count, which health() and close() fall back on when the file
        # cannot be read, counts the cancelled callers' rows too.
        store = tracker.engine.store
        assert isinstance(store, SqliteStore)
        assert store.backlog == written
        assert await tracker.flush(5) == 0
        assert tracker.health().queued == 0
    assert len(stored_ids(collector)) == written


async def test_a_failed_group_commit_raises_in_every_caller(
    collector: LocalCollector, connection: dict[str, str], db_path: str
) -> None:
    """A group commit SQLite refuses raises QueueStoreError in each of its 30 callers (the one
    committing and those waiting), writes none of their rows, and the next commits work."""
    async with AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=60
    ) as tracker:
        with sqlite3.connect(db_path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON records"
                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        raised: list[BaseException] = []

        async def call(rid: str) -> None:
            try:
                await tracker.track(API, SERVICE, USAGE, response_id=rid)
            except QueueStoreError as exc:
                raised.append(exc)

        async with anyio.create_task_group() as tg:
            for rid in new_ids(30):
                tg.start_soon(call, rid)
        assert len(raised) == 30
        assert all("refused by the test" in str(exc) for exc in raised)
        assert rows(db_path) == []
        assert tracker.health().queued == 0

        with sqlite3.connect(db_path) as conn:
            conn.execute("DROP TRIGGER refuse")
        ids = new_ids(30)
        async with anyio.create_task_group() as tg:
            for rid in ids:
                tg.start_soon(lambda rid=rid: tracker.track(API, SERVICE, USAGE, response_id=rid))
        assert sorted(r[0] for r in rows(db_path)) == sorted(ids)
        assert await tracker.flush(5) == 0
    assert sorted(stored_ids(collector)) == sorted(ids)


async def test_a_lease_shorter_than_a_request_is_warned_about(
    connection: dict[str, str],
    db_path: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lease that a request may outlast (here 15 s against 2 x 10 s) is logged at start,
    naming both settings; the defaults (60 s against 2 x 10 s) are not."""
    caplog.set_level(logging.WARNING, logger="aicm")
    async with AsyncTracker(**connection, delivery_type="persistent_queue", db_path=db_path):
        pass
    assert "lease_seconds" not in caplog.text
    monkeypatch.setenv("AICM_LEASE_SECONDS", "15")
    async with AsyncTracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, timeout=10
    ):
        pass
    assert "lease_seconds (15 s) is not longer than one request may take" in caplog.text
    assert "2 x timeout = 20 s" in caplog.text


def test_sync_threads_share_commits(
    collector: LocalCollector, connection: dict[str, str], db_path: str
) -> None:
    """8 threads tracking at once through the sync facade also share transactions."""
    with Tracker(
        **connection, delivery_type="persistent_queue", db_path=db_path, batch_interval=60
    ) as tracker:
        store = tracker._async.engine.store
        assert isinstance(store, SqliteStore)
        writer = store.writer
        assert writer is not None

        def produce(n: int) -> None:
            for i in range(100):
                tracker.track(API, SERVICE, USAGE, response_id=f"s{n}-{i}")

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(rows(db_path)) == 800
        assert writer.commits < 800
        assert tracker.flush(10) == 0
    assert len(set(stored_ids(collector))) == 800


def test_corrupt_file_is_refused_and_left_alone(connection: dict[str, str], tmp_path: Path) -> None:
    """A queue file that is not SQLite raises QueueStoreError naming it, and is not touched."""
    path = tmp_path / "corrupt.db"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with pytest.raises(QueueStoreError, match=str(path)):
        Tracker(**connection, delivery_type="persistent_queue", db_path=str(path))
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.db"]


async def test_corrupt_file_is_refused_by_the_queue(tmp_path: Path) -> None:
    """Opening a store refuses a corrupt file with QueueStoreError and leaves it as it was."""
    path = tmp_path / "corrupt.db"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with pytest.raises(QueueStoreError, match=str(path)):
        async with sqlite_stores() as open_store:
            await open_store(path)
    assert path.read_bytes() == garbage


async def test_async_tracker_raises_queue_store_error_unwrapped(
    connection: dict[str, str], tmp_path: Path
) -> None:
    """``async with`` on a corrupt queue file raises QueueStoreError itself, not a group."""
    path = tmp_path / "corrupt.db"
    path.write_bytes(os.urandom(8192))
    tracker = AsyncTracker(**connection, delivery_type="persistent_queue", db_path=str(path))
    with pytest.raises(QueueStoreError, match=str(path)):
        async with tracker:
            pass
