"""The queue file: its schema, opening one (create, check, tune: WAL, NORMAL sync), and
the process-wide guards of its connections: `FORK_GATE`, and a write lock per file.

A file holding another program's tables, or a newer schema version, is refused and left
exactly as it was.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from ..._core.exceptions import QueueStoreError
from ..._core.forks import after_fork_in_child

_T = TypeVar("_T")

# How long a fork() waits for the SQLite operations under way in other threads to end.
FORK_WAIT_SECONDS = 5.0


class ForkGate:
    """Keeps ``fork()`` out of SQLite transactions: a fork waits until none is under way.

    SQLite's unix VFS keeps, per process, a record of the locks its connections hold. A
    fork copies the record but not the fcntl locks, so a child forked inside a write
    transaction sees the lock held by a connection that does not exist, and stays
    "database is locked" for good. Every operation on a connection (a transaction, a read,
    an open, a close) runs inside the gate, never nested; an ``os.register_at_fork`` hook
    waits (at most ``FORK_WAIT_SECONDS``) until none is under way. The child starts with a
    fresh gate.
    """

    def __init__(self) -> None:
        self.after_fork_in_child()

    def after_fork_in_child(self) -> None:
        # Only the forking thread lives on in a child, and it was inside no operation: a
        # fresh lock (another thread may have held the old one) and nothing under way.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # a fork waits here for operations
        self._reopened = threading.Condition(self._lock)  # operations wait here for a fork
        self._forks = 0  # forks under way (normally 0 or 1)
        self._active = 0  # operations under way
        self._forker: int | None = None  # the thread forking, while it forks

    @property
    def active(self) -> int:
        """Operations under way."""
        return self._active

    def __enter__(self) -> None:
        with self._lock:
            if self._forks and threading.get_ident() != self._forker:
                while self._forks:
                    self._reopened.wait()
            self._active += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._active -= 1
            if self._forks:
                self._idle.notify_all()

    def before_fork(self) -> None:
        deadline = time.monotonic() + FORK_WAIT_SECONDS
        with self._lock:
            self._forks += 1
            self._forker = threading.get_ident()
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    break  # an operation stuck this long: fork anyway, as without the gate
                self._idle.wait(left)

    def after_fork_in_parent(self) -> None:
        with self._lock:
            self._forks -= 1
            if not self._forks:
                self._forker = None
                self._reopened.notify_all()


FORK_GATE = ForkGate()


# One lock per queue file (by real path), held by every write transaction of this process
# on it: two connections of one process would otherwise meet in SQLite's busy handler,
# which sleeps 1, 2, 5, 10 ms ... between tries (a commit takes 30 us). Other processes
# still wait in SQLite. Taken inside the fork gate, never the other way round, so that
# whoever holds it finishes before a fork.
_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def file_lock(path: Path) -> threading.Lock:
    """This process's write lock on the queue file at ``path``."""
    key = os.path.realpath(path)
    with _file_locks_guard:
        return _file_locks.setdefault(key, threading.Lock())


def _after_fork_in_child() -> None:
    global _file_locks_guard
    FORK_GATE.after_fork_in_child()
    # A lock held by a thread the child did not inherit would stay held forever.
    _file_locks_guard = threading.Lock()
    _file_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=FORK_GATE.before_fork, after_in_parent=FORK_GATE.after_fork_in_parent
    )
after_fork_in_child(_after_fork_in_child)


# A fresh row (never tried: attempts = 0) is in no index, and nothing counts ids, so a
# track() commit writes one page. Claims take fresh rows in id order, and ids only grow:
# every fresh row of an API root and key lies above that pair's ``claim_marks.upto``.
# Rows once tried (in a backoff, or leased, maybe by a crashed owner) are in
# ``records_tried``, by due time.
SCHEMA_VERSION = 2

PENDING = 0
DEAD = 1

RECORDS_TABLE = """(
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    response_id TEXT NOT NULL,
    body TEXT NOT NULL,
    format INTEGER NOT NULL DEFAULT 1,
    api_root TEXT NOT NULL,
    key_fp TEXT NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    last_error TEXT,
    dead_at REAL
)"""
# A row id is never used twice: the claim marks rely on it, a flush counts pending rows up
# to the highest id it saw, and the administrator retries dead rows by id. Without
# AUTOINCREMENT SQLite would reuse a deleted newest row's id: instead every delete first
# raises ``id_floor.upto`` to the highest id it deletes, and inserts go above it.
SCHEMA_STATEMENTS = (
    f"CREATE TABLE IF NOT EXISTS records {RECORDS_TABLE}",
    "CREATE INDEX IF NOT EXISTS records_tried ON records (api_root, key_fp, next_attempt_at)"
    " WHERE state = 0 AND attempts > 0",
    "CREATE INDEX IF NOT EXISTS records_dead ON records (id) WHERE state = 1",
    "CREATE TABLE IF NOT EXISTS id_floor (upto INTEGER NOT NULL)",
    "INSERT INTO id_floor (upto) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM id_floor)",
    "CREATE TABLE IF NOT EXISTS claim_marks (api_root TEXT NOT NULL, key_fp TEXT NOT NULL,"
    " upto INTEGER NOT NULL, PRIMARY KEY (api_root, key_fp))",
)
SCHEMA = "".join(f"{statement};\n" for statement in SCHEMA_STATEMENTS)
# The id below a new row's: above the newest row and the floor.
LAST_ID = (
    "SELECT max(coalesce((SELECT max(id) FROM records), 0),"
    " coalesce((SELECT upto FROM id_floor), 0))"
)
RAISE_FLOOR = "UPDATE id_floor SET upto = ? WHERE upto < ?"
MAX_ID = "SELECT coalesce(max(id), 0) FROM records"
_TABLES = frozenset({"records", "id_floor", "claim_marks"})
_QUEUE_COLUMNS = frozenset(line.split()[0] for line in RECORDS_TABLE.strip("()\n").split(",\n"))

# The delivery actor checkpoints the WAL between its batches, so that no track() commit
# pays for a copy and two fsyncs on crossing SQLite's default 1000 pages. Connections
# still checkpoint by themselves at this many pages (16 MiB), so the WAL stays bounded
# while no actor runs.
_AUTOCHECKPOINT_PAGES = 4000
_SQLITE_FULL = 13  # SQLite's result code (sqlite3.SQLITE_FULL from Python 3.11)
# How long a queue connection waits for another's write lock (SQLite's busy handler),
# and the setting of one that never waits (writer.impatient).
BUSY_WAIT = "PRAGMA busy_timeout = 30000"
BUSY_NO_WAIT = "PRAGMA busy_timeout = 0"


def check_queue(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; raises QueueStoreError unless the file is a queue, or is
    to become one (no table, or only a queue's tables from a creation cut short).

    Read-only, so a file found to be another program's is left exactly as it was.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise QueueStoreError(
            f"{path}: queue schema version {version} is newer than this aicm "
            f"understands ({SCHEMA_VERSION}); upgrade aicm"
        )
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    found = {str(r[0]) for r in rows if not str(r[0]).startswith("sqlite_")}
    if version < SCHEMA_VERSION:
        if not found:
            return version
        ours = "records" in found and found <= _TABLES
    else:
        ours = found >= _TABLES
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(records)").fetchall()}
    if not ours or not columns >= _QUEUE_COLUMNS:
        raise foreign(path)
    return version


def foreign(path: Path) -> QueueStoreError:
    return QueueStoreError(f"{path} is an SQLite file but not an aicm queue file")


def _setup(conn: sqlite3.Connection, path: Path) -> None:
    try:
        conn.execute(BUSY_WAIT)
        # Look before writing anything: the switch to WAL rewrites the file's header, and
        # another program's database must be refused exactly as it was.
        version = check_queue(conn, path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise QueueStoreError(f"{path}: cannot switch the queue file to WAL mode")
        # WAL + NORMAL: a committed record survives a process crash (kill -9); an OS crash
        # may lose the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")
        if version < SCHEMA_VERSION:
            immediate(conn, lambda: _create(conn, path))
    except sqlite3.DatabaseError as exc:
        raise QueueStoreError(f"{path} is not a usable queue file: {exc}") from exc


def _create(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema (or finish a creation cut short), looking again under the write
    lock: another process may have done it meanwhile."""
    if check_queue(conn, path) < SCHEMA_VERSION:
        for statement in SCHEMA_STATEMENTS:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (and if new, create) a queue file with the schema in place, in autocommit mode
    (each write says BEGIN and COMMIT itself)."""
    with FORK_GATE:
        return open_in_gate(path, check_same_thread=check_same_thread)


def open_in_gate(path: Path, *, check_same_thread: bool) -> sqlite3.Connection:
    """`connect()`, for a caller already inside the fork gate."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    except OSError as exc:
        raise QueueStoreError(f"cannot create the queue file {path}: {exc}") from exc
    try:
        conn = sqlite3.connect(
            path, timeout=30.0, check_same_thread=check_same_thread, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
    try:
        _setup(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def open_existing(
    path: Path, *, timeout: float, write: bool = False, autocommit: bool = False
) -> sqlite3.Connection:
    """A connection to an existing SQLite file, read-only unless ``write`` (never creates
    one). Raises `sqlite3.Error` when it cannot be opened."""
    uri = f"{path.resolve().as_uri()}?mode={'rw' if write else 'ro'}"
    return sqlite3.connect(
        uri, uri=True, timeout=timeout, isolation_level=None if autocommit else "DEFERRED"
    )


def raise_write_error(path: Path, error: BaseException) -> NoReturn:
    """Raise what a ``track()`` whose row could not be committed raises."""
    if isinstance(error, QueueStoreError):
        raise error
    if disk_full(error):
        raise QueueStoreError(
            f"no room to write to the queue file {path} (the disk, or a size limit, is full):"
            " the record was not queued. Records queued before are still delivered; free"
            " some space to queue more"
        ) from error
    raise QueueStoreError(f"could not write to {path}: {error}") from error


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is SQLite finding no room to write."""
    while exc is not None:
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            return code == _SQLITE_FULL if code is not None else "is full" in str(exc)
        exc = exc.__cause__
    return False


def rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.rollback()  # (nothing to do if SQLite rolled the transaction back itself)
    except sqlite3.Error:
        pass


def immediate(conn: sqlite3.Connection, work: Callable[[], _T]) -> _T:
    """``work()`` in one IMMEDIATE transaction (SQLite's write lock from the start)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.commit()
    except BaseException:
        rollback(conn)
        raise
    return result


def in_transaction(conn: sqlite3.Connection, lock: threading.Lock, work: Callable[[], _T]) -> _T:
    """`immediate()` inside the fork gate, holding the file's lock in this process."""
    with FORK_GATE, lock:
        return immediate(conn, work)
