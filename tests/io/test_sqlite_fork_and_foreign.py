"""The SQLite queue file: a fork never lands inside a transaction; a foreign file is left alone."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from aicm import QueueStoreError
from aicm._io.sqlite import SCHEMA_VERSION, SyncWriter, check_queue_file, schema
from aicm._io.sqlite.db import open_async_db
from aicm._io.sqlite.schema import SCHEMA, ForkGate, connect
from aicm._io.sqlite.writer import INSERT, insert
from tests.sqlite_support import queue_row, sqlite_stores

ROOT = "http://127.0.0.1:9/api/v1"
KEY_FP = "fp"

# The fork tests fork a process with threads on purpose.
forks = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def response_ids(path: Path) -> list[str]:
    """The response ids in the queue file, in id order."""
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT response_id FROM records ORDER BY id")]


def fork_and_write(path: Path, rid: str) -> int:
    """Fork; the child writes one row on a new connection (1 s busy timeout). Its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            conn = sqlite3.connect(path, timeout=1.0)
            conn.execute(INSERT, ("/track", rid, "{}", ROOT, KEY_FP, 0.0, 0.0))
            conn.commit()
            conn.close()
            code = 0
        finally:
            os._exit(code)
    return wait_for_child(pid)


def fork_and_exit() -> tuple[int, float]:
    """Fork a child that exits at once: its exit code, and the seconds the fork took."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    took = time.monotonic() - started
    return wait_for_child(pid), took


def wait_for_child(pid: int, timeout: float = 20.0) -> int:
    """The child's exit code; a child still running after ``timeout`` s is killed (-9)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.01)


# -- a fork waits for the transactions under way ------------------------------------------


@needs_fork
@forks
def test_a_child_forked_during_a_sync_write_can_write(tmp_path: Path) -> None:
    """Fork while a SyncWriter transaction is open: the child's own connection writes at once."""
    path = tmp_path / "queue.db"
    writer = SyncWriter(path, api_root=ROOT, key_fp=KEY_FP)
    writer.write([queue_row("warm-up")])
    conn = writer._connection()
    base = conn.total_changes
    inside = threading.Event()

    def hold_the_transaction() -> int:
        # Called by SQLite as it runs the batch: once a row is in, the write lock is held.
        if not inside.is_set() and conn.total_changes > base:
            inside.set()
            time.sleep(0.5)
        return 0

    conn.set_progress_handler(hold_the_transaction, 1)
    batch = threading.Thread(target=writer.write, args=([queue_row(f"p{i}") for i in range(3)],))
    batch.start()
    try:
        assert inside.wait(5)
        code = fork_and_write(path, "child")
    finally:
        batch.join()
        conn.set_progress_handler(None, 1)
        writer.close()
    assert code == 0
    assert response_ids(path) == ["warm-up", "p0", "p1", "p2", "child"]


class SlowCommit:
    """A queue connection whose commit, once the statement ran, signals and then lingers."""

    def __init__(self, conn: Any, inside: threading.Event) -> None:
        self._conn = conn
        self._inside = inside

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def commit(self) -> Any:
        self._inside.set()
        time.sleep(0.3)
        return self._conn.commit()


@needs_fork
@forks
@pytest.mark.anyio
async def test_a_child_forked_during_an_async_write_can_write(tmp_path: Path) -> None:
    """Fork (from another thread) between an async write's statement and its commit: the
    child's own connection writes at once."""
    path = tmp_path / "queue.db"
    db = await open_async_db(path)
    inside = threading.Event()
    db._conn = SlowCommit(db._conn, inside)  # type: ignore[assignment]
    codes: list[int] = []

    def fork_once_inside() -> None:
        if inside.wait(5):
            codes.append(fork_and_write(path, "child"))

    forker = threading.Thread(target=fork_once_inside)
    forker.start()
    try:
        # Two rows: one transaction, BEGIN to COMMIT (one row alone is a bare INSERT).
        rows = [("/track", "parent", "{}"), ("/track", "parent-2", "{}")]
        await db.run(insert, rows, ROOT, KEY_FP, 0.0)
    finally:
        await anyio.to_thread.run_sync(forker.join)
        await db.close()
    assert codes == [0]
    assert response_ids(path) == ["parent", "parent-2", "child"]


@needs_fork
@forks
def test_a_stuck_operation_delays_a_fork_only_so_long(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operation that never ends holds a fork back for _FORK_WAIT_SECONDS, then no more."""
    monkeypatch.setattr(schema, "FORK_WAIT_SECONDS", 0.2)
    inside = threading.Event()
    release = threading.Event()

    def stuck() -> None:
        with schema.FORK_GATE:
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=stuck)
    holder.start()
    try:
        assert inside.wait(5)
        code, took = fork_and_exit()
    finally:
        release.set()
        holder.join()
    assert code == 0
    assert 0.15 < took < 3.0


def in_thread(fn: Callable[[], None]) -> tuple[threading.Thread, threading.Event]:
    """Run ``fn`` in a new thread; the event is set when it returns."""
    done = threading.Event()

    def run() -> None:
        fn()
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done


def hold_the_gate(gate: ForkGate) -> tuple[threading.Thread, threading.Event]:
    """Start an operation in another thread that stays inside ``gate`` until released."""
    release = threading.Event()
    entered = threading.Event()

    def operation() -> None:
        with gate:
            entered.set()
            release.wait(5)

    worker, _ = in_thread(operation)
    assert entered.wait(5)
    return worker, release


def test_a_fork_waits_for_the_operation_under_way() -> None:
    """before_fork returns only once the operation in another thread has ended."""
    gate = ForkGate()
    worker, release = hold_the_gate(gate)
    forker, forked = in_thread(gate.before_fork)
    assert not forked.wait(0.2)
    release.set()
    assert forked.wait(5)
    assert gate.active == 0
    gate.after_fork_in_parent()
    worker.join()
    forker.join()


def test_operations_wait_while_a_fork_is_due() -> None:
    """Between before_fork and the fork's end in the parent, a new operation does not start."""
    gate = ForkGate()
    gate.before_fork()
    worker, done = in_thread(lambda: gate.__enter__())
    assert not done.wait(0.2)
    assert gate.active == 0
    gate.after_fork_in_parent()
    assert done.wait(5)
    assert gate.active == 1
    gate.__exit__(None, None, None)
    worker.join()


def test_the_child_starts_with_a_fresh_gate() -> None:
    """After a fork, the child's gate counts no operation of the threads it did not inherit."""
    gate = ForkGate()
    worker, release = hold_the_gate(gate)
    child = ForkGate()
    child.__dict__.update(gate.__dict__)  # what fork() copies
    child.after_fork_in_child()
    assert child.active == 0
    with child:
        assert child.active == 1
    release.set()
    worker.join()
    assert gate.active == 0


# -- a file that is not an aicm queue is refused before anything is written to it --------


def theirs_records(conn: sqlite3.Connection) -> None:
    """Another program's ``records`` table."""
    conn.execute("CREATE TABLE records (name TEXT, price REAL)")
    conn.execute("INSERT INTO records VALUES ('tea', 2.5)")


def theirs_other_tables(conn: sqlite3.Connection) -> None:
    """Another program's tables, none named ``records``."""
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.execute("INSERT INTO people VALUES ('ada')")


def theirs_versioned_records(conn: sqlite3.Connection) -> None:
    """Another program's ``records`` table, at our schema version by chance."""
    theirs_records(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def theirs_versioned_empty(conn: sqlite3.Connection) -> None:
    """A database with no table but our schema version: not a queue."""
    conn.execute("CREATE TABLE t (x)")
    conn.execute("DROP TABLE t")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def queue_and_theirs(conn: sqlite3.Connection) -> None:
    """A queue's ``records`` beside another program's table, at version 0."""
    conn.executescript(SCHEMA)
    theirs_other_tables(conn)


FOREIGN = [
    theirs_records,
    theirs_other_tables,
    theirs_versioned_records,
    theirs_versioned_empty,
    queue_and_theirs,
]


def make_database(path: Path, build: Callable[[sqlite3.Connection], None]) -> bytes:
    """A rollback-journal SQLite file built by ``build``; its bytes."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        build(conn)
    finally:
        conn.close()
    return path.read_bytes()


@pytest.mark.parametrize("build", FOREIGN, ids=lambda f: f.__name__)
def test_a_foreign_database_is_refused_and_left_alone(
    tmp_path: Path, build: Callable[[sqlite3.Connection], None]
) -> None:
    """Another program's SQLite file: QueueStoreError naming it; its bytes stay, no WAL."""
    path = tmp_path / "theirs.db"
    before = make_database(path, build)
    with pytest.raises(QueueStoreError, match=f"{path} is an SQLite file but not an aicm queue"):
        connect(path)
    with pytest.raises(QueueStoreError, match=str(path)):
        SyncWriter(path, api_root=ROOT, key_fp=KEY_FP).write([queue_row("r")])
    with pytest.raises(QueueStoreError, match=str(path)):
        check_queue_file(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.db"]


@pytest.mark.anyio
async def test_a_foreign_database_is_refused_by_the_sqlite_store(tmp_path: Path) -> None:
    """Opening a store refuses another program's SQLite file and leaves it as it was."""
    path = tmp_path / "theirs.db"
    before = make_database(path, theirs_records)
    with pytest.raises(QueueStoreError, match=str(path)):
        async with sqlite_stores() as open_store:
            await open_store(path)
    assert path.read_bytes() == before


def assert_is_a_queue(path: Path) -> None:
    """The file is a WAL-mode queue at the current schema version, and takes a write."""
    writer = SyncWriter(path, api_root=ROOT, key_fp=KEY_FP)
    writer.write([queue_row("r")])
    writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert "r" in response_ids(path)
    check_queue_file(path)


def test_a_new_empty_file_becomes_a_queue(tmp_path: Path) -> None:
    """A 0-byte file (as prepare_file creates it) is initialised as a queue."""
    path = tmp_path / "new.db"
    path.touch()
    assert_is_a_queue(path)


def test_an_empty_database_made_elsewhere_becomes_a_queue(tmp_path: Path) -> None:
    """A non-empty SQLite file with no table and user_version 0 is initialised as a queue."""
    path = tmp_path / "blank.db"

    def blank(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("DROP TABLE t")

    assert make_database(path, blank)
    assert_is_a_queue(path)


def test_a_queue_whose_creation_was_cut_short_is_completed(tmp_path: Path) -> None:
    """The queue's table at user_version 0 (the version never set) is taken as ours."""
    path = tmp_path / "partial.db"

    def partial(conn: sqlite3.Connection) -> None:
        conn.executescript(SCHEMA)

    make_database(path, partial)
    assert_is_a_queue(path)


def test_a_newer_queue_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A queue file of a newer schema version is refused before anything is written to it."""
    path = tmp_path / "newer.db"

    def newer(conn: sqlite3.Connection) -> None:
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    before = make_database(path, newer)
    with pytest.raises(QueueStoreError, match="upgrade aicm"):
        connect(path)
    assert path.read_bytes() == before
