"""The queue file, schema version 2: one page per commit, ids never reused, claims by marks."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from aicm import QueueStoreError
from aicm._core.settings import key_fingerprint
from aicm._delivery.sqlite_store import SqliteStore
from aicm._io.sqlite import SCHEMA_VERSION, SyncWriter, claims, count_pending, purge_rows
from aicm._io.sqlite.schema import RECORDS_TABLE, connect, file_lock
from aicm._io.sqlite.writer import ROWS_PER_INSERT
from tests.sqlite_support import KEY, ROOT, add_all, claim, loop_writer, queue_row, sqlite_stores

OTHER_BASE = "http://127.0.0.1:10"
KEY_FP = key_fingerprint(KEY)


def rids(n: int, prefix: str = "r") -> list[str]:
    """``n`` response ids."""
    return [f"{prefix}{i}" for i in range(n)]


def select(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows of a query on the queue file, from a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A queue file path (not created yet)."""
    return tmp_path / "queue.db"


# -- the schema ----------------------------------------------------------------------------


def test_a_new_file_has_the_version_2_schema(path: Path) -> None:
    """A new queue file: version 2, no AUTOINCREMENT, no index of fresh rows, its two tables."""
    connect(path).close()
    assert select(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 2
    tables = {str(r[0]) for r in select(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"records", "id_floor", "claim_marks"}
    indexes = {
        str(r[0]): str(r[1])
        for r in select(path, "SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        if r[1] is not None
    }
    assert set(indexes) == {"records_tried", "records_dead"}
    assert "WHERE state = 0 AND attempts > 0" in indexes["records_tried"]
    (sql,) = select(path, "SELECT sql FROM sqlite_master WHERE name = 'records'")[0]
    assert "AUTOINCREMENT" not in str(sql).upper()


def wal_frames(path: Path) -> int:
    """Frames in the WAL file (its size, less the header, over a frame's size)."""
    (page_size,) = select(path, "PRAGMA page_size")[0]
    size = os.stat(f"{path}-wal").st_size
    return (size - 32) // (int(page_size) + 24)


def test_one_track_commit_writes_one_page(path: Path) -> None:
    """A single-row commit appends one frame (one page) to the WAL: no index page, no sequence."""
    writer = SyncWriter(path, api_root=ROOT, key_fp=KEY_FP)
    try:
        for rid in rids(5, "warm"):
            writer.add("/track", rid, "{}")
        before = wal_frames(path)
        for rid in rids(20):
            writer.add("/track", rid, "{}")
        assert wal_frames(path) - before == 20
    finally:
        writer.close()


def test_a_version_2_file_without_its_tables_is_refused(path: Path) -> None:
    """A file claiming version 2 whose ``records`` lacks the id floor is not a queue."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"CREATE TABLE records {RECORDS_TABLE}")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(QueueStoreError, match="not an aicm queue file"):
        connect(path)
    assert path.read_bytes() == before


# -- ids are never used twice -----------------------------------------------------------


@pytest.mark.anyio
async def test_an_id_is_never_reused_after_the_newest_rows_are_acked(path: Path) -> None:
    """Delivering every row, the newest included, does not let a new row take an old id."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        await add_all(queue, [queue_row(r) for r in rids(5)])
        claimed = await claim(queue, 10)
        top = max(r.id for r in claimed)
        await queue.ack([r.item for r in claimed])
        assert select(path, "SELECT count(*) FROM records") == [(0,)]
        await loop_writer(queue).add("/track", "after", "{}")
        await add_all(queue, [queue_row(r) for r in rids(3, "batch")])
        new_ids = [int(str(r[0])) for r in select(path, "SELECT id FROM records ORDER BY id")]
        assert min(new_ids) == top + 1
        assert new_ids == list(range(top + 1, top + 5))


def test_an_id_is_never_reused_after_a_purge(path: Path) -> None:
    """`aicm queue purge` deleting the newest rows raises the floor too."""
    writer = SyncWriter(path, api_root=ROOT, key_fp=KEY_FP)
    try:
        for rid in rids(4):
            writer.add("/track", rid, "{}")
        assert purge_rows(path, state="pending").deleted == 4
        writer.add("/track", "after", "{}")
    finally:
        writer.close()
    assert select(path, "SELECT id FROM records") == [(5,)]


def test_a_large_group_commit_gets_distinct_growing_ids(path: Path) -> None:
    """One commit of more rows than one INSERT statement holds: every row, ids in order."""
    writer = SyncWriter(path, api_root=ROOT, key_fp=KEY_FP)
    try:
        writer.add("/track", "first", "{}")
        many = rids(3 * ROWS_PER_INSERT + 7)
        writer.write([queue_row(r) for r in many])
        assert writer.commits == 2
    finally:
        writer.close()
    found = select(path, "SELECT id, response_id, api_root, key_fp FROM records ORDER BY id")
    assert [r[1] for r in found] == ["first", *many]
    assert [r[0] for r in found] == list(range(1, len(many) + 2))
    assert {(r[2], r[3]) for r in found} == {(ROOT, KEY_FP)}


@pytest.mark.anyio
async def test_concurrent_adds_share_commits_and_lose_nothing(path: Path) -> None:
    """200 concurrent adds: all committed, in far fewer commits, each id once."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        names = rids(200)
        async with anyio.create_task_group() as tg:
            for rid in names:
                tg.start_soon(loop_writer(queue).add, "/track", rid, "{}")
        found = select(path, "SELECT id, response_id FROM records")
        assert sorted(str(r[1]) for r in found) == sorted(names)
        assert len({r[0] for r in found}) == 200
        assert 1 <= loop_writer(queue).commits < 50


# -- leases: only the holder acks, releases or dead-letters ------------------------------


@pytest.mark.anyio
async def test_a_stale_owner_cannot_touch_a_row_leased_again(path: Path) -> None:
    """Once a lease expired and another owner took the row, the first owner's ack, release
    and dead-lettering leave it alone; the new owner's ack deletes it."""
    async with sqlite_stores() as open_store:
        first = await open_store(path, lease_seconds=0.05)
        second = await open_store(path)
        await add_all(first, [queue_row("r")])
        (mine,) = await claim(first, 1)
        await anyio.sleep(0.1)
        (theirs,) = await claim(second, 1)
        assert theirs.id == mine.id
        await first.ack([mine.item])
        await first.give_back([mine.item], 0, "late")
        await first.dead_letter([(mine.item, "late")], time.time())
        assert select(path, "SELECT lease_owner, state, last_error FROM records") == [
            (second.owner, 0, None)
        ]
        await second.ack([theirs.item])
        assert select(path, "SELECT count(*) FROM records") == [(0,)]


@pytest.mark.anyio
async def test_an_expired_lease_of_the_same_owner_can_still_be_acked(path: Path) -> None:
    """A lease past its expiry that nobody took over is still the owner's to ack."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path, lease_seconds=0.01)
        await add_all(queue, [queue_row("r")])
        (row,) = await claim(queue, 1)
        await anyio.sleep(0.05)
        await queue.ack([row.item])
        assert select(path, "SELECT count(*) FROM records") == [(0,)]


# -- claims ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_claims_take_due_retries_first_then_fresh_rows_oldest_first(path: Path) -> None:
    """A claim takes rows due again before fresh ones, fresh ones in the order written, and
    never a row whose backoff is still running."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        await add_all(queue, [queue_row(r) for r in rids(3, "old")])
        old = await claim(queue, 3)
        await queue.give_back([old[0].item], 0, "503")
        await queue.give_back([old[1].item], 60, "503")
        await queue.give_back([old[2].item], 0, "503")
        await add_all(queue, [queue_row(r) for r in rids(4, "new")])
        got = await claim(queue, 3)
        assert sorted(r.response_id for r in got) == ["new0", "old0", "old2"]
        assert [r.id for r in got] == sorted(r.id for r in got)
        assert {r.response_id: r.attempts for r in got} == {"old0": 2, "old2": 2, "new0": 1}
        rest = await claim(queue, 10)
        assert [r.response_id for r in rest] == ["new1", "new2", "new3"]
        assert await claim(queue, 10) == []


@pytest.mark.anyio
async def test_claims_keep_each_root_and_key_apart(path: Path) -> None:
    """Rows of two roots (and two keys) interleaved in one file: each queue claims its own,
    every one of them, however the claims and writes interleave."""
    async with sqlite_stores() as open_store:
        queues = {
            "a": await open_store(path),
            "b": await open_store(path, api_base=OTHER_BASE),
            "c": await open_store(path, key="other-key-0123456789abcdef"),
        }
        written: dict[str, list[str]] = {name: [] for name in queues}
        claimed: dict[str, list[str]] = {name: [] for name in queues}
        for round_ in range(6):
            for name, queue in queues.items():
                batch = rids(round_ + 2, f"{name}{round_}-")
                written[name] += batch
                await add_all(queue, [queue_row(r) for r in batch])
            for name, queue in queues.items():
                got = await claim(queue, 3)
                claimed[name] += [r.response_id for r in got]
                await queue.ack([r.item for r in got])
        for name, queue in queues.items():
            while got := await claim(queue, 5):
                claimed[name] += [r.response_id for r in got]
                await queue.ack([r.item for r in got])
            assert claimed[name] == written[name]


@pytest.mark.anyio
async def test_the_mark_moves_past_rows_that_are_not_fresh(path: Path) -> None:
    """A claim that finds fewer fresh rows than it wants moves the mark to the newest row, so
    the next one does not read the rows below it again; rows written later are claimed."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        other = await open_store(path, api_base=OTHER_BASE)
        await add_all(other, [queue_row(r) for r in rids(5, "theirs")])
        await add_all(queue, [queue_row(r) for r in rids(2, "mine")])
        assert len(await claim(queue, 10)) == 2
        assert select(path, "SELECT upto FROM claim_marks WHERE api_root = ?", (ROOT,)) == [(7,)]
        await add_all(queue, [queue_row("later")])
        assert [r.response_id for r in await claim(queue, 10)] == ["later"]
        assert len(await claim(other, 10)) == 5


@pytest.mark.anyio
async def test_claimed_rows_come_back_exactly_as_written(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claimed rows carry the written body and response id and the exact creation time,
    through SQLite's JSON functions and without them alike."""
    body = '{"text": "quote \\" backslash \\\\ tab \\t \\u001e é 𝄞"}'
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        for use_json in (True, False):
            monkeypatch.setattr(claims, "_json_functions", use_json)
            rid = f"id \x1e 'quoted' {use_json}"
            await loop_writer(queue).add("/track-usage", rid, body)
            (row,) = await claim(queue, 5)
            (created,) = select(path, "SELECT created_at FROM records WHERE id = ?", (row.id,))[0]
            assert (row.endpoint, row.response_id, row.body) == ("/track-usage", rid, body)
            assert row.created_at == created
            assert isinstance(row.created_at, float)
            assert row.attempts == 1


# -- counting ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pending_counts_fresh_and_tried_rows_up_to_an_id(path: Path) -> None:
    """A store's ``left`` and count_pending count fresh, leased and retried rows, not dead
    ones nor other roots' rows, nor (``left``) rows above the mark asked about."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        other = await open_store(path, api_base=OTHER_BASE)
        await add_all(queue, [queue_row(r) for r in rids(6)])
        await add_all(other, [queue_row(r) for r in rids(2, "theirs")])
        got = await claim(queue, 3)
        await queue.give_back([got[0].item], 30, "503")
        await queue.dead_letter([(got[1].item, "400")], time.time())
        upto = await queue.mark()
        assert await queue.left(upto, held=0) == 5
        await add_all(queue, [queue_row("later")])
        assert await queue.left(upto, held=0) == 5
        assert await queue.left(await queue.mark(), held=0) == 6
        count, oldest = count_pending(path, api_root=ROOT, key_fp=KEY_FP)
        assert count == 6
        assert oldest is not None
        assert oldest <= time.time()
        assert await queue.next_retry_due() is not None


# -- the WAL and the write lock -----------------------------------------------------------


@pytest.mark.anyio
async def test_a_checkpoint_copies_the_whole_wal(path: Path) -> None:
    """After the actor's checkpoint, with no writer busy, every WAL frame is in the file."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        await add_all(queue, [queue_row(r) for r in rids(50)])
        await queue.after_batch()
        conn = sqlite3.connect(path)
        try:
            _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
        assert frames == copied


def test_one_write_lock_per_file_in_a_process(tmp_path: Path) -> None:
    """Two spellings of one file share the process's write lock; two files do not."""
    path = tmp_path / "q.db"
    path.touch()
    link = tmp_path / "link.db"
    link.symlink_to(path)
    lock = file_lock(path)
    assert file_lock(tmp_path / "." / "q.db") is lock
    assert file_lock(link) is lock
    assert file_lock(tmp_path / "other.db") is not lock


def test_a_writer_waits_for_the_process_lock_then_commits(path: Path) -> None:
    """While another writer of this process holds the file's lock, a write waits for it (on
    the lock, not in SQLite), and commits as soon as it is free."""
    writer = SyncWriter(path, api_root=ROOT, key_fp=KEY_FP)
    writer.add("/track", "warm-up", "{}")
    lock = file_lock(path)
    done = threading.Event()
    lock.acquire()
    try:
        thread = threading.Thread(target=lambda: (writer.add("/track", "r", "{}"), done.set()))
        thread.start()
        assert not done.wait(0.3)
    finally:
        lock.release()
    assert done.wait(5)
    thread.join()
    writer.close()
    assert [r[0] for r in select(path, "SELECT response_id FROM records ORDER BY id")] == [
        "warm-up",
        "r",
    ]


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_child_of_a_fork_gets_fresh_write_locks(tmp_path: Path) -> None:
    """After a fork, the child's locks are new: one the parent held is not held there."""
    held = file_lock(tmp_path / "q.db")
    held.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            fresh = file_lock(tmp_path / "q.db")
            os._exit(0 if fresh is not held and fresh.acquire(blocking=False) else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        held.release()


# -- adds on the event loop: never waiting there -------------------------------------------


async def _add_while_held(queue: SqliteStore, hold: threading.Event, rid: str) -> int:
    """Add ``rid`` while something holds the file; how often the event loop ticked
    meanwhile (it must go on running: the add waits off the loop)."""
    ticks = 0
    added = anyio.Event()

    async def add() -> None:
        await loop_writer(queue).add("/track", rid, "{}")
        added.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(add)
        with anyio.move_on_after(0.3):
            while True:
                await anyio.sleep(0.01)
                ticks += 1
        assert not added.is_set()  # still waiting for the lock
        hold.set()
        with anyio.fail_after(10):
            await added.wait()
    return ticks


@pytest.mark.anyio
async def test_an_add_waits_for_another_process_write_lock_off_the_event_loop(
    path: Path,
) -> None:
    """While another connection (as another process would) holds SQLite's write lock, an
    add waits for it in SQLite, not on the event loop, and commits once it is free."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        await loop_writer(queue).add("/track", "warm-up", "{}")
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Event()
        thread = threading.Thread(target=lambda: (release.wait(10), other.execute("COMMIT")))
        thread.start()
        try:
            ticks = await _add_while_held(queue, release, "r")
        finally:
            release.set()
            thread.join()
            other.close()
        assert ticks >= 10
        assert [r[0] for r in select(path, "SELECT response_id FROM records ORDER BY id")] == [
            "warm-up",
            "r",
        ]


@pytest.mark.anyio
async def test_an_add_waits_for_this_process_file_lock_off_the_event_loop(path: Path) -> None:
    """While another thread of this process holds the file's lock, an add waits for it off
    the event loop, and commits once it is free."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        await loop_writer(queue).add("/track", "warm-up", "{}")
        lock = file_lock(path)
        release = threading.Event()
        held = threading.Event()

        def hold() -> None:
            with lock:
                held.set()
                release.wait(10)

        thread = threading.Thread(target=hold)
        thread.start()
        held.wait(5)
        try:
            ticks = await _add_while_held(queue, release, "r")
        finally:
            release.set()
            thread.join()
        assert ticks >= 10
        assert [r[0] for r in select(path, "SELECT response_id FROM records ORDER BY id")] == [
            "warm-up",
            "r",
        ]
        assert loop_writer(queue).commits == 2


@pytest.mark.anyio
async def test_a_cancelled_add_still_commits_its_row_and_the_queue_goes_on(path: Path) -> None:
    """An add cancelled as it starts committing still commits what it gathered (its own
    row, and any other caller's), then takes its cancellation; later adds commit too."""
    async with sqlite_stores() as open_store:
        queue = await open_store(path)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await loop_writer(queue).add("/track", "cancelled", "{}")
        assert scope.cancelled_caught
        await loop_writer(queue).add("/track", "after", "{}")
        assert [r[0] for r in select(path, "SELECT response_id FROM records ORDER BY id")] == [
            "cancelled",
            "after",
        ]
