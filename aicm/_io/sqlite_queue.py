"""The durable SQLite queue: group-committed writes, leased claims, acks, dead letters (layer 2).

One table holds every record. A row is *pending* (state 0) until the service answers 2xx,
when it is deleted, or until it is dead-lettered (state 1). Claiming a row leases it: the
claimant's id goes in ``lease_owner`` and ``next_attempt_at`` moves to the lease's expiry,
so a crashed owner's rows become claimable again by themselves and a live owner's rows are
never taken from it. An ack, a release or a dead-lettering touches a row only while the
caller still holds its lease. Rows name their API root and a fingerprint of the key, never
the key.

The SQL lives here once, as plain functions that each run one transaction on a connection.
Writers on plain threads (the sync facade) call them through :class:`SyncWriter`;
everything else through an :class:`AsyncDB`, which hands each call to the connection's own
thread in one hop: aiosqlite's on asyncio, one ``sqlite3`` connection behind
``anyio.to_thread`` on trio.

Every use of a connection here passes through ``_FORK_GATE``, so that a ``fork()`` never
lands inside a transaction (see :class:`_ForkGate`). Every write transaction also holds
its file's lock in this process (:func:`_file_lock`), so that this process's connections
queue for each other on a lock instead of in SQLite's busy handler, which sleeps.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from .._core.exceptions import QueueStoreError
from .._core.forks import after_fork_in_child
from .._core.jsonplain import loads
from .owners import new_owner, owner_is_gone

__all__ = [
    "count_pending",
    "SCHEMA_VERSION",
    "AsyncDB",
    "ClaimedRow",
    "DeadLetter",
    "QueueRow",
    "QueueStats",
    "SqliteQueue",
    "SyncWriter",
    "connect",
    "open_async_db",
    "prepare_file",
    # administration
    "PurgeOutcome",
    "QueueEntry",
    "QueueSummary",
    "RetryOutcome",
    "check_queue_file",
    "list_queue",
    "purge_rows",
    "retry_dead",
    "summarize_queue",
]

_T = TypeVar("_T")

logger = logging.getLogger("aicm.delivery")

# Version 2 (version 1 files are rebuilt on open, see _upgrade). A fresh row (one never
# tried: attempts = 0) is in no index, and nothing counts ids: a track() commit writes one
# page, the table's, where version 1 wrote four (the table, two indexes, AUTOINCREMENT's
# sequence). The claim finds fresh rows by id instead: every fresh row of an API root and
# key lies above that pair's ``claim_marks.upto``, since claims take fresh rows in id
# order and ids only grow. Rows once tried (waiting out a backoff, or leased, maybe by a
# crashed owner) are in ``records_tried``, by due time.
SCHEMA_VERSION = 2
FORMAT_VERSION = 1  # of the JSON in ``body``

PENDING = 0
DEAD = 1

_RECORDS_TABLE = """(
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
# A row id is never used twice: the claim marks above rely on it, a flush counts pending
# rows up to the highest id it saw, and the administrator retries dead rows by id. Without
# AUTOINCREMENT, SQLite would give a new row the id of a deleted newest one: instead every
# delete first raises ``id_floor.upto`` to the highest id it deletes, and inserts take an
# id above both it and the newest row.
_SCHEMA_STATEMENTS = (
    f"CREATE TABLE IF NOT EXISTS records {_RECORDS_TABLE}",
    "CREATE INDEX IF NOT EXISTS records_tried ON records (api_root, key_fp, next_attempt_at)"
    " WHERE state = 0 AND attempts > 0",
    "CREATE INDEX IF NOT EXISTS records_dead ON records (id) WHERE state = 1",
    "CREATE TABLE IF NOT EXISTS id_floor (upto INTEGER NOT NULL)",
    "INSERT INTO id_floor (upto) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM id_floor)",
    "CREATE TABLE IF NOT EXISTS claim_marks (api_root TEXT NOT NULL, key_fp TEXT NOT NULL,"
    " upto INTEGER NOT NULL, PRIMARY KEY (api_root, key_fp))",
)
_SCHEMA = "".join(f"{statement};\n" for statement in _SCHEMA_STATEMENTS)
_TABLES = frozenset({"records", "id_floor", "claim_marks"})

# (NULL, and so SQLite's own choice of id, if ``id_floor`` lost its row.)
_INSERT = (
    "INSERT INTO records (id, endpoint, response_id, body, format, api_root, key_fp,"
    " created_at, next_attempt_at) VALUES ("
    "(SELECT max(coalesce((SELECT max(id) FROM records), 0), upto) + 1 FROM id_floor),"
    " ?, ?, ?, 1, ?, ?, ?, ?)"
)
# The id below a new row's (see _INSERT), and an INSERT of n rows with their ids: the
# parameters are the root, the key and the time, then (id, endpoint, response_id, body)
# of each row; at most _ROWS_PER_INSERT rows (4 parameters each, within the 999 that old
# SQLite builds allow).
_LAST_ID = (
    "SELECT max(coalesce((SELECT max(id) FROM records), 0),"
    " coalesce((SELECT upto FROM id_floor), 0))"
)
_ROWS_PER_INSERT = 240


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_rows_sql(n: int) -> str:
    values = ", ".join(
        f"(?{k}, ?{k + 1}, ?{k + 2}, ?{k + 3}, 1, ?1, ?2, ?3, ?3)" for k in range(4, 4 * n + 4, 4)
    )
    return (
        "INSERT INTO records (id, endpoint, response_id, body, format, api_root, key_fp,"
        f" created_at, next_attempt_at) VALUES {values}"
    )


# A claim leases due tried rows first (oldest due first), then fresh rows (oldest first),
# in one transaction of a few statements, whatever the number of rows: each row a
# statement returns is one more round trip through the GIL, and the producers wait for
# the write lock meanwhile. The claimed rows are read after the commit; ``next_attempt_at``
# (the lease's expiry, unique to each claim of an owner) tells them apart.
_LEASE_TRIED = (
    "UPDATE records SET lease_owner = ?, next_attempt_at = ?, attempts = attempts + 1"
    " WHERE id IN (SELECT id FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND attempts > 0 AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?)"
)
_MARK = "SELECT upto FROM claim_marks WHERE api_root = ? AND key_fp = ?"
_FRESH_TOP = (
    "SELECT count(*), max(id) FROM (SELECT id FROM records WHERE id > ? AND api_root = ?"
    " AND key_fp = ? AND state = 0 AND attempts = 0 ORDER BY id LIMIT ?)"
)
_LEASE_FRESH = (
    "UPDATE records SET lease_owner = ?, next_attempt_at = ?, attempts = 1"
    " WHERE id > ? AND id <= ? AND api_root = ? AND key_fp = ? AND state = 0 AND attempts = 0"
)
_RAISE_MARK = (
    "INSERT INTO claim_marks (api_root, key_fp, upto) VALUES (?, ?, ?)"
    " ON CONFLICT (api_root, key_fp) DO UPDATE SET upto = max(upto, excluded.upto)"
)
_LEASED_WHERE = (
    " FROM records WHERE api_root = ? AND key_fp = ? AND state = 0 AND attempts > 0"
    " AND next_attempt_at = ? AND lease_owner = ?"
)
_LEASED = "SELECT id, endpoint, response_id, body, created_at, attempts" + _LEASED_WHERE
# The same rows as one JSON text: one step of the statement, not one per row (each step
# is a round trip through the GIL). The time as text: JSON numbers keep 15 digits only.
_LEASED_JSON = (
    "SELECT json_group_array(json_array(id, endpoint, response_id, body,"
    " printf('%!.17g', created_at), attempts))" + _LEASED_WHERE
)
# With no room on the disk for a lease (see SqliteQueue: "disk full"), due rows are read,
# not leased: the same rows a claim would take, in the same order.
_PEEK_TRIED = (
    "SELECT id, endpoint, response_id, body, created_at, attempts FROM records"
    " WHERE api_root = ? AND key_fp = ? AND state = 0 AND attempts > 0"
    " AND (next_attempt_at <= ? OR (lease_owner IS NULL AND id <= ?) OR lease_owner = ?)"
    " ORDER BY next_attempt_at, id LIMIT ?"
)
_PEEK_FRESH = (
    "SELECT id, endpoint, response_id, body, created_at, attempts FROM records WHERE id > ?"
    " AND api_root = ? AND key_fp = ? AND state = 0 AND attempts = 0 ORDER BY id LIMIT ?"
)
_DELETE_IDS = "DELETE FROM records WHERE id IN ({})"
_KILL_ID = (
    "UPDATE records SET state = 1, lease_owner = NULL, last_error = ?, dead_at = ?"
    " WHERE id = ? AND state = 0"
)
# A fresh row below its mark would never be claimed. None of this aicm's writes makes one,
# but a version 1 process still running on an upgraded file (ids of its own choosing)
# might: a queue looks for such rows when it opens, and lowers the mark under them.
_STRAY = (
    "SELECT min(id) FROM records WHERE id <= ? AND api_root = ? AND key_fp = ? AND state = 0"
    " AND attempts = 0"
)
_LOWER_MARK = "UPDATE claim_marks SET upto = ? WHERE api_root = ? AND key_fp = ? AND upto > ?"
# Acks, releases and dead-letterings name their rows in one statement per chunk of ids,
# and only touch rows the caller still holds: a lease that expired and was taken over
# belongs to its new owner.
_RAISE_FLOOR = "UPDATE id_floor SET upto = ? WHERE upto < ?"
_ACK = "DELETE FROM records WHERE lease_owner = ? AND id IN ({})"
_RELEASE = (
    "UPDATE records SET lease_owner = NULL, next_attempt_at = ?, last_error = ?"
    " WHERE lease_owner = ? AND id IN ({})"
)
_KILL = (
    "UPDATE records SET state = 1, lease_owner = NULL, last_error = ?, dead_at = ?"
    " WHERE id = ? AND lease_owner = ? AND state = 0"
)
# Tried rows: in a backoff, or leased (maybe by a crashed owner). Fresh rows are left out:
# their writer rings the actor's doorbell, and they wait for a batch window.
_NEXT_RETRY = (
    "SELECT min(next_attempt_at) FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND attempts > 0"
)
# Pending rows of a root and key with id <= ?3: the tried ones (from their index), and the
# fresh ones (by id, above the mark).
_PENDING_UPTO = (
    "SELECT (SELECT count(*) FROM records WHERE api_root = ?1 AND key_fp = ?2 AND state = 0"
    " AND attempts > 0 AND id <= ?3) + (SELECT count(*) FROM records WHERE id > coalesce("
    "(SELECT upto FROM claim_marks WHERE api_root = ?1 AND key_fp = ?2), 0) AND id <= ?3"
    " AND api_root = ?1 AND key_fp = ?2 AND state = 0 AND attempts = 0)"
)
_OLDEST = (
    "SELECT created_at FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " ORDER BY id LIMIT 1"
)
_MAX_ID = "SELECT coalesce(max(id), 0) FROM records"
# Owners of live leases on rows of a root and key (from the index of tried rows), and the
# release of one owner's leases when that owner is gone (see owners.owner_is_gone).
_LEASE_OWNERS = (
    "SELECT DISTINCT lease_owner FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND attempts > 0 AND next_attempt_at > ? AND lease_owner IS NOT NULL"
)
_FREE_LEASES = (
    "UPDATE records SET lease_owner = NULL, next_attempt_at = ?, last_error = ?"
    " WHERE api_root = ? AND key_fp = ? AND state = 0 AND attempts > 0 AND next_attempt_at > ?"
    " AND lease_owner = ?"
)
_HURRY = (
    "UPDATE records SET next_attempt_at = 0 WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND attempts > 0 AND lease_owner IS NULL AND next_attempt_at > ? AND id <= ?"
)

# Ids per statement: at most 512, padded to a power of two (repeating the last id), so a
# handful of statement shapes serve every batch size from SQLite's statement cache, and
# no statement comes near the 999 parameters old SQLite builds allow.
_IDS_PER_STATEMENT = 512

# The WAL is copied into the file (checkpointed) by the delivery actor, after its batches
# (SqliteQueue.checkpoint), not by whichever commit happens to cross SQLite's default
# 1000 pages: that commit would be some track() call, and pay for a copy and two fsyncs.
# A connection still checkpoints by itself once the WAL reaches this many pages (16 MiB
# at 4 KiB pages), so the WAL stays bounded while no actor runs.
_AUTOCHECKPOINT_PAGES = 4000

# How long a fork() waits for the SQLite operations under way in other threads to end.
_FORK_WAIT_SECONDS = 5.0


class _ForkGate:
    """Keeps ``fork()`` out of SQLite transactions: a fork waits until none is under way.

    SQLite's unix VFS keeps, per process, an in-memory record of the locks its connections
    hold on each file. A fork copies that record but not the fcntl locks themselves, so a
    child forked while this process held a write lock sees it held by a sibling connection
    that does not exist, and its own connection stays "database is locked" for good.

    Every operation on a connection here (a transaction from its first statement to its
    commit or rollback, a read, an open, a close) runs inside the gate: ``with`` on plain
    threads, ``async with`` on an event loop, never nested. An ``os.register_at_fork``
    hook closes the gate, waits (at most ``_FORK_WAIT_SECONDS``) until no operation is
    under way, and reopens it after the fork; the child starts with a fresh gate.

    ``async with`` never blocks its loop: while a fork is due it waits by sleeping, so the
    loop's own transactions can reach their commits. The loop threads inside the gate are
    tallied, so that a fork from one of them does not wait for transactions that cannot
    go on while it forks, and a ``with`` there does not block the loop they need.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # a fork waits here for operations
        self._reopened = threading.Condition(self._lock)  # operations wait here for a fork
        self._forks = 0  # forks under way (normally 0 or 1)
        self._active = 0  # operations under way
        self._loops: dict[int, int] = {}  # thread id -> its async operations under way

    @property
    def active(self) -> int:
        """Operations under way."""
        return self._active

    def __enter__(self) -> None:
        with self._lock:
            if self._forks and threading.get_ident() not in self._loops:
                while self._forks:
                    self._reopened.wait()
            self._active += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._active -= 1
            if self._forks:
                self._idle.notify_all()

    async def __aenter__(self) -> None:
        ident = threading.get_ident()
        while True:
            with self._lock:
                if not self._forks:
                    self._active += 1
                    self._loops[ident] = self._loops.get(ident, 0) + 1
                    return
            await anyio.sleep(0.005)

    async def __aexit__(self, *exc_info: object) -> None:
        ident = threading.get_ident()
        with self._lock:
            self._active -= 1
            left = self._loops.get(ident, 1) - 1
            if left > 0:
                self._loops[ident] = left
            else:
                self._loops.pop(ident, None)
            if self._forks:
                self._idle.notify_all()

    def before_fork(self) -> None:
        ident = threading.get_ident()
        deadline = time.monotonic() + _FORK_WAIT_SECONDS
        with self._lock:
            self._forks += 1
            while self._active > self._loops.get(ident, 0):
                left = deadline - time.monotonic()
                if left <= 0:
                    break  # an operation stuck this long: fork anyway, as without the gate
                self._idle.wait(left)

    def after_fork_in_parent(self) -> None:
        with self._lock:
            self._forks -= 1
            if not self._forks:
                self._reopened.notify_all()

    def after_fork_in_child(self) -> None:
        # Only the forking thread lives on: a fresh lock (another thread may have held the
        # old one), and only this thread's own operations still under way.
        ident = threading.get_ident()
        mine = self._loops.get(ident, 0)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._reopened = threading.Condition(self._lock)
        self._forks = 0
        self._active = mine
        self._loops = {ident: mine} if mine else {}


_FORK_GATE = _ForkGate()


class _FileLocks:
    """One lock per queue file, held by every write transaction of this process on it.

    Two connections of one process on one file (the sync facade's writer and its actor's
    connection, say) would otherwise meet in SQLite's busy handler, which sleeps 1, 2, 5,
    10 ms ... between tries: an eternity next to a 30 us commit. On the lock, the second
    writer starts the moment the first commits. Other processes still wait in SQLite.

    Taken inside the fork gate, never the other way round: a thread waiting for the lock
    then counts as under way, and whoever holds the lock finishes before a fork.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, path: Path) -> threading.Lock:
        key = os.path.realpath(path)
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    def after_fork_in_child(self) -> None:
        # A lock held by a thread the child did not inherit would stay held forever.
        self._guard = threading.Lock()
        self._locks = {}


_FILE_LOCKS = _FileLocks()


def _file_lock(path: Path) -> threading.Lock:
    """This process's write lock on the queue file at ``path``."""
    return _FILE_LOCKS.get(path)


def _after_fork_in_child() -> None:
    _FORK_GATE.after_fork_in_child()
    _FILE_LOCKS.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_FORK_GATE.before_fork, after_in_parent=_FORK_GATE.after_fork_in_parent
    )
after_fork_in_child(_after_fork_in_child)


@attrs.frozen(kw_only=True)
class QueueRow:
    """A record to write: where it goes and its JSON."""

    endpoint: str
    response_id: str
    body: str


@attrs.frozen(kw_only=True)
class ClaimedRow:
    """A leased row, ready to send."""

    id: int
    endpoint: str
    response_id: str
    body: str
    created_at: float
    attempts: int


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A dead-lettered record and why."""

    id: int
    endpoint: str
    response_id: str
    body: str
    api_root: str
    created_at: float
    dead_at: float | None
    attempts: int
    reason: str | None


@attrs.frozen(kw_only=True)
class QueueStats:
    """Counts of a queue file."""

    pending: int
    leased: int
    dead: int
    oldest_pending_at: float | None
    size_bytes: int


# A row to write, as the hot paths pass it: (endpoint, response_id, body).
RowTuple = tuple[str, str, str]


def _as_tuples(rows: Sequence[QueueRow]) -> list[RowTuple]:
    return [(r.endpoint, r.response_id, r.body) for r in rows]


def prepare_file(path: Path) -> None:
    """Create the queue file's folder (0700) and the file itself (0600) if missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
    except OSError as exc:
        raise QueueStoreError(f"cannot create the queue file {path}: {exc}") from exc


# The columns of ``records`` (the same in schema versions 1 and 2).
_QUEUE_COLUMNS = frozenset(
    {
        "id",
        "endpoint",
        "response_id",
        "body",
        "format",
        "api_root",
        "key_fp",
        "state",
        "attempts",
        "created_at",
        "next_attempt_at",
        "lease_owner",
        "last_error",
        "dead_at",
    }
)


def _tables(conn: sqlite3.Connection) -> set[str]:
    """The file's tables, but SQLite's own (``sqlite_sequence``, ``sqlite_stat1``, ...)."""
    return {
        str(r[0])
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if not str(r[0]).startswith("sqlite_")
    }


def _holds_a_queue(conn: sqlite3.Connection, version: int) -> bool:
    """Whether a file whose ``user_version`` is ``version`` is ours: a queue, or to become one.

    At the current version, ``records`` must have a queue's columns and ``id_floor`` must be
    there. Below it, the file must hold no table (a new database), or only a queue's tables
    (a version 1 queue, or a creation cut short). Read-only, so a file found to be another
    program's is left exactly as it was.
    """
    tables = _tables(conn)
    if version < SCHEMA_VERSION:
        if not tables:
            return True
        if "records" not in tables or not tables <= _TABLES:
            return False
    elif not tables >= _TABLES:
        return False
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(records)").fetchall()}
    return columns >= _QUEUE_COLUMNS


def _newer(path: Path, version: int) -> QueueStoreError:
    return QueueStoreError(
        f"{path}: queue schema version {version} is newer than this aicm "
        f"understands ({SCHEMA_VERSION}); upgrade aicm"
    )


def _foreign(path: Path) -> QueueStoreError:
    return QueueStoreError(f"{path} is an SQLite file but not an aicm queue file")


def _setup(conn: sqlite3.Connection, path: Path) -> None:
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        # Look before writing anything: the switch to WAL rewrites the file's header, and
        # another program's database must be refused exactly as it was.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise _newer(path, version)
        if not _holds_a_queue(conn, version):
            raise _foreign(path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise QueueStoreError(f"{path}: cannot switch the queue file to WAL mode")
        _tune(conn)
        if version < SCHEMA_VERSION:
            _upgrade(conn, path)
    except sqlite3.DatabaseError as exc:
        raise QueueStoreError(f"{path} is not a usable queue file: {exc}") from exc


def _tune(conn: sqlite3.Connection) -> None:
    """Per-connection settings of every queue connection."""
    conn.execute("PRAGMA busy_timeout = 30000")
    # WAL + NORMAL: a committed record survives a process crash (kill -9); an OS crash
    # may lose the last commits. That is the trade every embedded queue here makes.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema, or bring a version 1 file to version 2, in one transaction.

    Looks again once it holds the write lock: another process may have done it meanwhile.
    Version 1 declared ``id`` AUTOINCREMENT, which only a rebuild of the table removes; the
    rows keep their ids, and ``id_floor`` starts above every id the file ever used.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise _newer(path, version)
        if version < SCHEMA_VERSION:
            if not _holds_a_queue(conn, version):
                raise _foreign(path)
            used = _rebuild_without_autoincrement(conn)
            for statement in _SCHEMA_STATEMENTS:
                conn.execute(statement)
            for index in ("records_claim", "records_state"):  # version 1's
                conn.execute(f"DROP INDEX IF EXISTS {index}")
            if used:
                conn.execute(_RAISE_FLOOR, (used, used))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _rebuild_without_autoincrement(conn: sqlite3.Connection) -> int:
    """Rebuild a version 1 ``records`` table without AUTOINCREMENT; the highest id it used.

    Nothing to do (0) for a new file or a table already without it.
    """
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'"
    ).fetchone()
    if row is None or "AUTOINCREMENT" not in str(row[0]).upper():
        return 0
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM records").fetchone()
    sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    if sequence is not None and sequence[0] is not None:
        top = max(int(top), int(sequence[0]))
    columns = ", ".join(sorted(_QUEUE_COLUMNS))
    conn.execute(f"CREATE TABLE records_v2 {_RECORDS_TABLE}")
    conn.execute(f"INSERT INTO records_v2 ({columns}) SELECT {columns} FROM records")
    conn.execute("DROP TABLE records")  # and its indexes
    conn.execute("ALTER TABLE records_v2 RENAME TO records")
    return int(top)


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (and if new, create) a queue file with the schema in place.

    The connection is in autocommit mode: each write here says BEGIN and COMMIT itself.
    """
    with _FORK_GATE:
        return _open(path, check_same_thread=check_same_thread)


def _open(path: Path, *, check_same_thread: bool) -> sqlite3.Connection:
    """:func:`connect`, for a caller already inside the fork gate."""
    prepare_file(path)
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


# -- a queue file deleted or replaced under a running process -----------------------------
#
# A connection keeps using the file it opened: once that file is unlinked (deleted, or
# replaced by a rename), rows committed through it go to an inode no later process can
# find. Each holder of a connection notes the file's identity when it opens it, and looks
# again after each group commit (the writers) and before each claim (the actor). When the
# path names another file, or none, the rows still readable through the old connection
# are moved into the file at the path (created if missing), and the holder reopens there.


FileIdentity = tuple[int, int]  # (st_dev, st_ino)


def file_identity(path: Path | str) -> FileIdentity | None:
    """The identity of the file at ``path`` now, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class OpenedFile:
    """What a connection's holder knows of the file it opened: it, and its shared memory.

    SQLite keeps a WAL file and a shared-memory file beside the database. When only the
    database is deleted those stay, still in use by the old connections: a new database
    at the same path must not start with them (their pages are the old file's).
    """

    __slots__ = ("file", "shm")

    def __init__(self, path: Path) -> None:
        self.file = file_identity(path)
        # (Noted again once the connection has used it: SQLite makes it on first use.)
        self.shm = file_identity(f"{path}-shm")

    def moved(self, path: Path) -> bool:
        """Whether ``path`` names another file than the one opened (or none)."""
        if self.file is None or file_identity(path) == self.file:
            if self.shm is None:
                self.shm = file_identity(f"{path}-shm")
            return False
        return True


# Connections to a queue file that was deleted or replaced, kept open for good. Closing
# the last connection to a file in WAL mode deletes, by name, the WAL and shared-memory
# files at its path: by now those are the new file's, in use. Each is also given one
# reference nobody holds, so that it is never freed, and so never closed, at exit either.
_RETIRED: list[object] = []


def _retire(conn: sqlite3.Connection) -> None:
    _RETIRED.append(conn)
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
    except (ImportError, AttributeError):
        pass  # not CPython: the list's reference keeps it open while the process runs


_ROWS_TO_MOVE = (
    "SELECT endpoint, response_id, body, format, api_root, key_fp, state, created_at,"
    " last_error, dead_at FROM records ORDER BY id"
)
_MOVED_ROW = (
    "INSERT INTO records (id, endpoint, response_id, body, format, api_root, key_fp, state,"
    " attempts, created_at, next_attempt_at, last_error, dead_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _move_rows(old: sqlite3.Connection, path: Path, opened: OpenedFile) -> int:
    """Move every row readable through ``old`` into the queue file at ``path`` now.

    Inside the fork gate and holding the file's lock in this process. The old file's
    write lock is taken first, so that processes sharing the old file move its rows one
    at a time (the second finds none left). Pending rows arrive fresh and unleased (one
    in flight is sent again: the service counts a repeated response_id once); dead rows
    stay dead. Returns how many rows were moved. Raises QueueStoreError (rows left where
    they were) when the file at ``path`` cannot be created or is not a queue.
    """
    try:
        old.execute("BEGIN IMMEDIATE")
        rows = old.execute(_ROWS_TO_MOVE).fetchall()
    except sqlite3.Error as exc:
        _rollback(old)
        raise QueueStoreError(
            f"cannot read the rows of the deleted queue file {path}: {exc}"
        ) from exc
    try:
        shm = file_identity(f"{path}-shm")
        if shm is not None and (
            file_identity(path) is None or opened.shm is None or shm == opened.shm
        ):
            # The old file's WAL and shared memory (no file at the path has any other, or
            # they are the ones the old connection noted): the old connections keep them
            # open; the file at the path must start without them.
            for suffix in ("-wal", "-shm"):
                try:
                    os.unlink(f"{path}{suffix}")
                except FileNotFoundError:
                    pass
        new = _open(path, check_same_thread=True)
        try:
            new.execute("BEGIN IMMEDIATE")
            try:
                (last,) = new.execute(_LAST_ID).fetchone()
                now = time.time()
                params = []
                for offset, (e, rid, body, fmt, root, fp, state, created, error, dead) in enumerate(
                    rows, start=int(last) + 1
                ):
                    dead_row = state == DEAD
                    due = created if type(created) in (int, float) else now
                    params.append(
                        (
                            offset,
                            e,
                            rid,
                            body,
                            fmt,
                            root,
                            fp,
                            DEAD if dead_row else PENDING,
                            1 if dead_row else 0,
                            created,
                            due,
                            error,
                            dead,
                        )
                    )
                new.executemany(_MOVED_ROW, params)
                new.commit()
            except BaseException:
                _rollback(new)
                raise
        finally:
            new.close()
        old.execute("DELETE FROM records")
        old.commit()
    except (sqlite3.Error, QueueStoreError) as exc:
        _rollback(old)
        raise QueueStoreError(
            f"the queue file {path} was deleted or replaced while in use, and its rows could"
            f" not be moved into a file there ({exc}); they stay in the deleted file, which"
            " this process alone still reads and delivers from"
        ) from exc
    except BaseException:
        _rollback(old)
        raise
    return len(rows)


def rescue_rows(
    conn: sqlite3.Connection, lock: threading.Lock, path: Path, opened: OpenedFile
) -> int:
    """:func:`_move_rows` as one operation on ``conn`` (an AsyncDB's ``run`` passes the
    connection and the file's lock); 0 when the path still names the opened file."""
    with _FORK_GATE, lock:
        if not opened.moved(path):
            return 0
        moved = _move_rows(conn, path, opened)
    logger.warning(
        "the queue file %s was deleted or replaced while in use: %d row(s) moved into %s",
        path,
        moved,
        path,
    )
    return moved


# -- the transactions ----------------------------------------------------------------------
#
# Each function below is one whole operation on a connection (opened by ``_open``, so in
# autocommit mode), run by the connection's own thread: inside the fork gate, and when it
# writes, holding the file's lock in this process. Each call is one hop for an AsyncDB.


_SQLITE_FULL = 13  # SQLite's result code (sqlite3.SQLITE_FULL from Python 3.11)


def write_error(path: Path, error: BaseException) -> QueueStoreError:
    """The error a ``track()`` whose row could not be committed raises."""
    if disk_full(error):
        return QueueStoreError(
            f"no room to write to the queue file {path} (the disk, or a size limit, is full):"
            " the record was not queued. Records queued before are still delivered; free"
            " some space to queue more"
        )
    return QueueStoreError(f"could not write to {path}: {error}")


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is SQLite finding no room to write."""
    while exc is not None:
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            return code == _SQLITE_FULL if code is not None else "is full" in str(exc)
        exc = exc.__cause__
    return False


def _peek(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    owner: str,
    api_root: str,
    key_fp: str,
    limit: int,
    now: float,
    hurried: int,
    skip: frozenset[int],
) -> list[tuple[Any, ...]]:
    """The rows a claim would lease, read without writing (ids in ``skip`` left out).

    Rows still leased by ``owner`` count as due: the owner holds only those in ``skip``
    (the rest it could not give back, for want of room to write).
    """
    del lock  # a read
    with _FORK_GATE:
        found = conn.execute(_MARK, (api_root, key_fp)).fetchone()
        mark = 0 if found is None else int(found[0])
        rows = [
            r
            for r in conn.execute(
                _PEEK_TRIED, (api_root, key_fp, now, hurried, owner, limit + len(skip))
            ).fetchall()
            if r[0] not in skip
        ][:limit]
        if len(rows) < limit:
            fresh = conn.execute(
                _PEEK_FRESH, (mark, api_root, key_fp, limit - len(rows) + len(skip))
            ).fetchall()
            rows += [r for r in fresh if r[0] not in skip][: limit - len(rows)]
    return sorted(rows)


def _settle_unwritten(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    acked: Sequence[int],
    killed: Sequence[tuple[int, str]],
    now: float,
) -> None:
    """Delete delivered rows and dead-letter refused ones, by id, whoever leases them."""

    def work() -> None:
        if acked:
            top = max(acked)
            conn.execute(_RAISE_FLOOR, (top, top))
            for chunk in _id_chunks(acked):
                conn.execute(_DELETE_IDS.format(_marks(len(chunk))), chunk)
        if killed:
            conn.executemany(_KILL_ID, [(why, now, i) for i, why in killed])

    _in_transaction(conn, lock, work)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.rollback()  # (nothing to do if SQLite rolled the transaction back itself)
    except sqlite3.Error:
        pass


def _in_transaction(conn: sqlite3.Connection, lock: threading.Lock, work: Callable[[], _T]) -> _T:
    """Run ``work()`` in one IMMEDIATE transaction (the write lock from the start)."""
    with _FORK_GATE, lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work()
            conn.commit()
        except BaseException:
            _rollback(conn)
            raise
        return result


def _insert(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    rows: Sequence[RowTuple],
    api_root: str,
    key_fp: str,
    now: float,
) -> None:
    """Commit ``rows``, in a few statements however many there are.

    One statement alone is its own transaction (no BEGIN, no COMMIT). Several rows go in
    multi-row INSERTs, not one per row: each statement hands the GIL to the event loop
    and takes it back, and that round trip, not SQLite, is what a row would cost.
    """
    if len(rows) == 1:
        endpoint, response_id, body = rows[0]
        with _FORK_GATE, lock:
            conn.execute(_INSERT, (endpoint, response_id, body, api_root, key_fp, now, now))
        return

    def work() -> None:
        (last,) = conn.execute(_LAST_ID).fetchone()
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            params: list[Any] = [api_root, key_fp, now]
            for offset, row in enumerate(chunk, start=last + start + 1):
                params.append(offset)
                params.extend(row)
            conn.execute(_insert_rows_sql(len(chunk)), params)

    _in_transaction(conn, lock, work)


# Whether SQLite's JSON functions are there to use (see _LEASED_JSON): SQLite has them
# built in since 3.38, and most earlier builds compile them in.
_json_functions = True


def _claim(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    owner: str,
    api_root: str,
    key_fp: str,
    limit: int,
    now: float,
    lease_until: float,
) -> list[tuple[Any, ...]]:
    """Lease up to ``limit`` rows: (id, endpoint, response_id, body, created_at, attempts).

    ``lease_until`` must differ from every other lease of ``owner`` still held.
    """

    def lease() -> int:
        taken = conn.execute(
            _LEASE_TRIED, (owner, lease_until, api_root, key_fp, now, limit)
        ).rowcount
        wanted = limit - taken
        if wanted > 0:
            found = conn.execute(_MARK, (api_root, key_fp)).fetchone()
            mark = 0 if found is None else int(found[0])
            count, top = conn.execute(_FRESH_TOP, (mark, api_root, key_fp, wanted)).fetchone()
            if count:
                conn.execute(_LEASE_FRESH, (owner, lease_until, mark, top, api_root, key_fp))
            # Every fresh row of this root and key up to the new mark is leased now: up to
            # the last one taken, or, when there were fewer than wanted, up to the newest
            # row of all (the write lock is ours: no row can come in between).
            if count < wanted:
                top = conn.execute(_MAX_ID).fetchone()[0]
            if top > mark:
                conn.execute(_RAISE_MARK, (api_root, key_fp, top))
            taken += count
        return int(taken)

    if not _in_transaction(conn, lock, lease):
        return []
    # The rows are ours for the lease: nobody else changes them meanwhile.
    global _json_functions
    params = (api_root, key_fp, lease_until, owner)
    with _FORK_GATE:
        if _json_functions:
            try:
                (text,) = conn.execute(_LEASED_JSON, params).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such function" in str(exc):
                    _json_functions = False  # an SQLite built without them: rows one by one
                # Else a row JSON cannot carry (a BLOB another program wrote, say): read
                # this claim row by row, and the actor dead-letters that row alone.
            else:
                rows = [
                    (i, endpoint, rid, body, float(created), attempts)
                    for i, endpoint, rid, body, created, attempts in loads(text)
                ]
                rows.sort()
                return rows
        return sorted(conn.execute(_LEASED, params).fetchall())


def _lower_mark_under_strays(
    conn: sqlite3.Connection, lock: threading.Lock, api_root: str, key_fp: str
) -> None:
    """Lower the claim mark of a root and key under any fresh row below it (see _STRAY).

    Looks without the write lock (a whole-table read), then lowers the mark in a short
    transaction; lowering a mark is always safe: a claim then only looks at more rows.
    """
    with _FORK_GATE:
        found = conn.execute(_MARK, (api_root, key_fp)).fetchone()
        if found is None:
            return
        (stray,) = conn.execute(_STRAY, (int(found[0]), api_root, key_fp)).fetchone()
    if stray is not None:
        lowered = int(stray) - 1
        _in_transaction(
            conn,
            lock,
            lambda: conn.execute(_LOWER_MARK, (lowered, api_root, key_fp, lowered)),
        )


def _id_chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    """``ids`` in chunks of at most _IDS_PER_STATEMENT, each padded to a power of two."""
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = list(ids[start : start + _IDS_PER_STATEMENT])
        size = 1 << (len(chunk) - 1).bit_length()
        chunk.extend([chunk[-1]] * (size - len(chunk)))
        yield chunk


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _ack(conn: sqlite3.Connection, lock: threading.Lock, owner: str, ids: Sequence[int]) -> None:
    top = max(ids)

    def work() -> None:
        conn.execute(_RAISE_FLOOR, (top, top))
        for chunk in _id_chunks(ids):
            conn.execute(_ACK.format(_marks(len(chunk))), (owner, *chunk))

    _in_transaction(conn, lock, work)


def _release(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    owner: str,
    ids: Sequence[int],
    due: float,
    error: str,
) -> None:
    def work() -> None:
        for chunk in _id_chunks(ids):
            conn.execute(_RELEASE.format(_marks(len(chunk))), (due, error, owner, *chunk))

    _in_transaction(conn, lock, work)


def _free_leases(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    api_root: str,
    key_fp: str,
    owners: Sequence[str],
    now: float,
) -> int:
    why = "its lease's owner process had ended"

    def work() -> int:
        return sum(
            conn.execute(_FREE_LEASES, (now, why, api_root, key_fp, now, owner)).rowcount
            for owner in owners
        )

    return _in_transaction(conn, lock, work)


def _write_many(
    conn: sqlite3.Connection, lock: threading.Lock, sql: str, params: Sequence[Sequence[Any]]
) -> None:
    _in_transaction(conn, lock, lambda: conn.executemany(sql, params))


def _read(
    conn: sqlite3.Connection, lock: threading.Lock, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    del lock  # a read waits for no writer (WAL)
    with _FORK_GATE:
        return conn.execute(sql, params).fetchall()


def _checkpoint(conn: sqlite3.Connection, lock: threading.Lock) -> None:
    """Copy the WAL into the file, so that the next write may start the WAL afresh.

    First without the file's lock, so this process's writers go on meanwhile; then, if
    they added pages during that, those few pages holding it: a WAL restarts only once all
    of it is copied, and without restarts it would grow while writers never pause.
    """
    with _FORK_GATE:
        _, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if pages > copied >= 0:
            with lock:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


_COUNT_TRIED = (
    "SELECT count(*), min(created_at) FROM records WHERE api_root = ? AND key_fp = ?"
    " AND state = 0 AND attempts > 0"
)
_COUNT_FRESH = (
    "SELECT count(*), min(created_at) FROM records WHERE id > coalesce((SELECT upto FROM"
    " claim_marks WHERE api_root = ?1 AND key_fp = ?2), 0) AND api_root = ?1 AND key_fp = ?2"
    " AND state = 0 AND attempts = 0"
)


def count_pending(path: Path, *, api_root: str, key_fp: str) -> tuple[int, float | None]:
    """Pending rows of one root and key, and the oldest one's creation time (read-only).

    Opens its own short-lived connection, so any thread may ask while others write.
    """
    with _FORK_GATE:
        try:
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot read the queue file {path}: {exc}") from exc
        try:
            count, oldest = conn.execute(_COUNT_TRIED, (api_root, key_fp)).fetchone()
            fresh, fresh_oldest = conn.execute(_COUNT_FRESH, (api_root, key_fp)).fetchone()
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot read the queue file {path}: {exc}") from exc
        finally:
            conn.close()
    times = [float(t) for t in (oldest, fresh_oldest) if t is not None]
    return int(count) + int(fresh), (min(times) if times else None)


class SyncWriter:
    """Durable writes from plain threads, group-committed.

    Every caller's rows are committed before :meth:`write` returns; concurrent callers
    share one transaction (the first to arrive commits for all who queued behind it).
    """

    def __init__(self, path: Path, *, api_root: str, key_fp: str) -> None:
        self.path = path
        self._api_root = api_root
        self._key_fp = key_fp
        self._conn: sqlite3.Connection | None = None
        self._lock = _file_lock(path)
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[RowTuple] = []
        self._open_batch = 0  # the number of the batch now accumulating
        self._done_batch = -1  # the last batch committed (or failed)
        self._failed: dict[int, BaseException] = {}
        self._leader = False
        self._waiting = 0  # callers waiting for a leader's commit
        self._io = threading.Lock()  # the connection: one leader's commit, or close()
        self._opened: OpenedFile | None = None
        self.commits = 0  # transactions committed: fewer than writes when calls overlap

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path, check_same_thread=False)
            self._opened = OpenedFile(self.path)
        return self._conn

    def _follow_the_path(self) -> None:
        """After a commit: if the file was deleted or replaced meanwhile, move the rows
        (those just committed with them) into the file at the path, and write there next."""
        opened, conn = self._opened, self._conn
        if opened is None or conn is None or not opened.moved(self.path):
            return
        rescue_rows(conn, self._lock, self.path, opened)
        _retire(conn)
        self._conn = None
        self._opened = None

    def write(self, rows: Sequence[QueueRow]) -> None:
        """Commit ``rows``; raises :class:`QueueStoreError` if they could not be written."""
        self._write(_as_tuples(rows))

    def add(self, endpoint: str, response_id: str, body: str) -> None:
        """Commit one row (:meth:`write` without building a :class:`QueueRow`)."""
        self._write(((endpoint, response_id, body),))

    def _write(self, rows: Sequence[RowTuple]) -> None:
        cond = self._cond
        with cond:
            self._pending.extend(rows)
            mine = self._open_batch
            if self._leader:
                self._waiting += 1
                try:
                    while self._done_batch < mine and self._leader:
                        cond.wait()
                finally:
                    self._waiting -= 1
            if self._done_batch >= mine:
                failure = self._failed.get(mine)
                if failure is not None:
                    if isinstance(failure, QueueStoreError):
                        raise failure
                    raise write_error(self.path, failure) from failure
                return
            # Nobody is committing and our batch is still open: we commit it for everyone in it.
            self._leader = True
            batch, self._pending = self._pending, []
            number = self._open_batch
            self._open_batch += 1
        error: BaseException | None = None
        try:
            with self._io:
                _insert(
                    self._connection(),
                    self._lock,
                    batch,
                    self._api_root,
                    self._key_fp,
                    time.time(),
                )
                self.commits += 1
                self._follow_the_path()
        except BaseException as exc:
            error = exc
            if not isinstance(exc, (sqlite3.Error, QueueStoreError)):
                raise
        finally:
            with cond:
                if error is not None:
                    self._failed[number] = error
                    for old in [n for n in self._failed if n < number - 1000]:
                        del self._failed[old]
                self._done_batch = number
                self._leader = False
                if self._waiting:
                    cond.notify_all()
        if error is not None:
            if isinstance(error, QueueStoreError):
                raise error
            raise write_error(self.path, error) from error

    def close(self) -> None:
        """Close the connection (a later write reopens it)."""
        with self._io, _FORK_GATE:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class AsyncDB(Protocol):
    """A queue connection for async callers: each operation one call on its own thread."""

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(connection, file_lock, *args)`` on the connection's thread (one of the
        transaction functions of this module)."""
        ...

    async def write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None: ...
    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    async def close(self) -> None: ...
    async def retire(self) -> None:
        """Stop using the connection without closing it (see :func:`_retire`)."""
        ...


class _ThreadDB:
    """One sqlite3 connection, every call in a worker thread, one call at a time."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self.lock = lock
        self._limiter = anyio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await anyio.to_thread.run_sync(
            fn, self._conn, self.lock, *args, limiter=self._limiter
        )

    async def write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        await self.run(_write_many, sql, params)

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self.run(_read, sql, params)

    def _close(self) -> None:
        with _FORK_GATE:
            self._conn.close()

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    async def retire(self) -> None:
        _retire(self._conn)


class _AioDB:
    """aiosqlite, on asyncio."""

    def __init__(self, conn: Any, raw: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self._raw = raw  # the sqlite3 connection inside, used only on aiosqlite's thread
        self.lock = lock
        # One operation at a time: write_many's transaction spans several aiosqlite calls.
        self._busy = anyio.Lock(fast_acquire=True)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        # aiosqlite's thread runs the whole transaction in one call. ``_execute`` is how
        # aiosqlite runs each of its own calls there (it has no public door for a function).
        async with self._busy:
            result: _T = await self._conn._execute(fn, self._raw, self.lock, *args)
            return result

    async def write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        # A transaction over several aiosqlite calls: the fork gate and the file's lock
        # cover all of it, statement to commit.
        async with self._busy, _FORK_GATE:
            await _acquire_without_blocking(self.lock)
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    await self._conn.executemany(sql, params)
                    await self._conn.commit()
                except BaseException:
                    await self._conn.rollback()
                    raise
            finally:
                self.lock.release()

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self.run(_read, sql, params)

    async def close(self) -> None:
        async with self._busy, _FORK_GATE:
            await self._conn.close()

    async def retire(self) -> None:
        async with self._busy:
            _retire(self._raw)
            # aiosqlite's thread then stops without closing the connection.
            self._conn._connection = None
            self._conn.stop()


async def _acquire_without_blocking(lock: threading.Lock) -> None:
    """Take ``lock`` from an event loop: at once if free, else waiting in a worker thread."""
    if lock.acquire(blocking=False):
        return
    with anyio.CancelScope(shield=True):  # once taken, it must reach the caller's release
        await anyio.to_thread.run_sync(lock.acquire)


async def open_async_db(path: Path) -> AsyncDB:
    """Open a queue file for async use: aiosqlite on asyncio, a thread-bound sqlite3 on trio."""
    # Schema setup runs once, synchronously, in one worker thread call (a sqlite3
    # connection may only be closed by the thread that opened it); then the driver takes over.
    await anyio.to_thread.run_sync(_prepare_schema, path)
    return await _connect_async(path)


async def _connect_async(path: Path) -> AsyncDB:
    """:func:`open_async_db`, for a file whose schema is in place."""
    lock = _file_lock(path)
    if _on_asyncio() and _aiosqlite_runs_functions():
        import aiosqlite

        try:
            async with _FORK_GATE:
                conn = await aiosqlite.connect(path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
        db = _AioDB(conn, conn._conn, lock)
        try:
            await db.run(_tune_in_gate)
        except sqlite3.Error as exc:
            await db.close()
            raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
        return db
    # Trio (or an aiosqlite without the door _AioDB.run uses): a thread-bound connection.
    conn2 = await anyio.to_thread.run_sync(lambda: connect(path, check_same_thread=False))
    return _ThreadDB(conn2, lock)


def _aiosqlite_runs_functions() -> bool:
    import aiosqlite

    return callable(getattr(aiosqlite.Connection, "_execute", None))


def _tune_in_gate(conn: sqlite3.Connection, lock: threading.Lock) -> None:
    del lock
    with _FORK_GATE:
        _tune(conn)
        # A first read: SQLite opens the WAL and its shared memory now, so that the holder
        # notes which files are this file's (see OpenedFile).
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


def _prepare_schema(path: Path) -> None:
    # The close inside the gate too: closing the last connection checkpoints the WAL.
    with _FORK_GATE:
        _open(path, check_same_thread=True).close()


def _on_asyncio() -> bool:
    try:
        import asyncio

        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# Group commits under way at once in a SqliteQueue. Two (one running, the next queued
# behind it) measured no faster than one: the callers' Python, not the commit, is the
# bound, and one at a time makes fewer, larger commits.
_COMMITS_IN_FLIGHT = 1


def _ignore_commit(n: int, committed: bool = True) -> None:
    del n, committed


class _Done(Protocol):
    """What a group commit's callers wait on: ``anyio.Event``'s own methods."""

    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    async def wait(self) -> None: ...


class _FutureEvent:
    """``anyio.Event`` for asyncio, on a plain future per waiter.

    Every ``track()`` on a persistent queue waits once for its commit, and anyio's event
    (an asyncio.Event inside) costs 0.7 us more per wait. A waiter gets a future of its
    own, not a shared one: cancelling a task cancels the future it awaits, and that must
    not end the other callers' wait.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._set = True
        for waiter in self._waiters:
            if not waiter.done():  # a cancelled waiter's future is done already
                waiter.set_result(None)
        self._waiters.clear()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            await anyio.lowlevel.checkpoint()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


class _Commit:
    """One group commit: the rows of every caller in it, and its outcome."""

    __slots__ = ("done", "error", "rows")

    def __init__(self, done: _Done) -> None:
        self.rows: list[RowTuple] = []
        self.done = done
        self.error: BaseException | None = None


class SqliteQueue:
    """The async side of a queue file: group-committed enqueue, claim, ack, retry, dead-letter.

    One instance per (file, API root, key fingerprint); ``owner`` identifies this
    process's leases and is renewed after a fork.
    """

    def __init__(self, db: AsyncDB, path: Path, *, api_root: str, key_fp: str) -> None:
        self.db = db  # the actor's: claims, acks, reads, checkpoints
        self._db_opened = OpenedFile(path)
        self._following = False  # moving rows out of a deleted file (see follow_the_path)
        self._following_lock = anyio.Lock()
        self._writes_opened: OpenedFile | None = None
        self.path = path
        self.api_root = api_root
        self.key_fp = key_fp
        self.owner = new_owner()
        self._last_lease_until = 0.0
        # Disk full: rows read instead of leased (held by this process alone, in memory),
        # and what the service settled that the file could not record yet (acked ids;
        # dead-lettered ids and why). Those are left out of claims, and written when the
        # disk has room again. See claim_tuples.
        self._peeked: set[int] = set()
        self._leased_out: set[int] = set()  # leased by claims, not settled yet
        self._unwritten_acks: set[int] = set()
        self._unwritten_kills: dict[int, str] = {}
        self._hurried = 0  # ids up to here are due now, backoff or not (a flush's hurry)
        # Enqueues commit on a connection (and so a thread) of their own, opened on the
        # first one: on the actor's, they would wait behind its claims, reads and
        # checkpoints, which need not hold the write lock for long, or at all.
        self._writes: AsyncDB | None = None
        self._opening_writes = anyio.Lock()
        self._new_done: Callable[[], _Done] = _FutureEvent if _on_asyncio() else anyio.Event
        self._open = _Commit(self._new_done())  # the rows waiting for the next transaction
        self._committers = 0  # callers committing for everyone (see _join)
        self.commits = 0  # enqueue transactions: fewer than calls when calls overlap
        # Told of each group commit (its number of rows): before it starts, and after it
        # ends (True when committed). Once per commit, not per caller: a caller cancelled
        # while it waits still has its row committed with the others, and counted.
        self.before_commit: Callable[[int], None] = _ignore_commit
        self.after_commit: Callable[[int, bool], None] = _ignore_commit

    @classmethod
    async def open(cls, path: Path, *, api_root: str, key_fp: str) -> SqliteQueue:
        """Open or create the queue file at ``path``."""
        try:
            db = await open_async_db(path)
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
        return cls(db, path, api_root=api_root, key_fp=key_fp)

    async def _guard(self, op: str, fn: Callable[..., _T], *args: Any) -> _T:
        if not self._following and self._db_opened.moved(self.path):
            # Every read and write goes to the file at the path: a flush counting rows
            # in the deleted file would find none left.
            try:
                await self.follow_the_path()
            except QueueStoreError:
                pass  # the path cannot take them: carry on with the old file
        with anyio.CancelScope(shield=True):
            try:
                result = await self.db.run(fn, *args)
            except sqlite3.Error as exc:
                raise QueueStoreError(f"{op} on {self.path} failed: {exc}") from exc
        return result

    async def enqueue(self, rows: Sequence[QueueRow]) -> None:
        """Commit ``rows``; concurrent callers share one transaction (group commit)."""
        if not rows:
            return
        batch = self._open
        batch.rows.extend(_as_tuples(rows))
        await self._join(batch)

    async def add(self, endpoint: str, response_id: str, body: str) -> None:
        """Commit one row (:meth:`enqueue` without building a :class:`QueueRow`)."""
        batch = self._open
        batch.rows.append((endpoint, response_id, body))
        if self._committers < _COMMITS_IN_FLIGHT:
            await self._join(batch)
        else:  # _join's path for a caller who is not a committer, inlined: every track()
            await batch.done.wait()
            if batch.error is not None:
                self._raise(batch.error)

    async def _join(self, batch: _Commit) -> None:
        """Wait until ``batch`` (holding the caller's rows) is committed.

        A caller who finds fewer than ``_COMMITS_IN_FLIGHT`` commits under way becomes a
        committer: it commits the rows gathered so far, and goes on committing whatever
        gathers meanwhile (callers arriving during a commit join the next one).
        """
        if self._committers < _COMMITS_IN_FLIGHT:
            self._committers += 1
            try:
                # Shielded: a cancelled committer must still commit the rows it took (and
                # other callers' rows with them); the write takes milliseconds.
                with anyio.CancelScope(shield=True):
                    while True:
                        # Let the tasks that are ready to run add their rows first: one
                        # commit then carries many callers.
                        await anyio.lowlevel.checkpoint()
                        if not self._open.rows:
                            break
                        commit, self._open = self._open, _Commit(self._new_done())
                        n = len(commit.rows)
                        self.before_commit(n)
                        try:
                            writes = self._writes or await self._open_writes()
                            await writes.run(
                                _insert, commit.rows, self.api_root, self.key_fp, time.time()
                            )
                            self.commits += 1
                            opened = self._writes_opened
                            if opened is not None and opened.moved(self.path):
                                await self._follow_the_path_for_writes(writes, opened)
                        except Exception as exc:
                            commit.error = exc
                            self.after_commit(n, False)
                        else:
                            self.after_commit(n, True)
                        commit.done.set()
            finally:
                self._committers -= 1
        if not batch.done.is_set():
            await batch.done.wait()
        if batch.error is not None:
            self._raise(batch.error)

    def _raise(self, error: BaseException) -> NoReturn:
        if isinstance(error, QueueStoreError):
            raise error
        raise write_error(self.path, error) from error

    async def _open_writes(self) -> AsyncDB:
        async with self._opening_writes:
            if self._writes is None:
                self._writes = await _connect_async(self.path)
                self._writes_opened = OpenedFile(self.path)
            return self._writes

    async def _follow_the_path_for_writes(self, writes: AsyncDB, opened: OpenedFile) -> None:
        """The file was deleted or replaced: move the rows (these commits' with them) into
        the file at the path, and write there next; raises QueueStoreError if impossible."""
        try:
            await writes.run(rescue_rows, self.path, opened)
        except sqlite3.Error as exc:
            raise QueueStoreError(f"moving rows into {self.path} failed: {exc}") from exc
        self._writes = None
        self._writes_opened = None
        await writes.retire()

    async def follow_the_path(self) -> None:
        """The actor's connection: if the file was deleted or replaced, move what the old
        one still holds into the file at the path, and go on there. When that cannot be
        done the actor goes on delivering from the old file (raises QueueStoreError)."""
        async with self._following_lock:
            if not self._db_opened.moved(self.path):
                return
            self._following = True
            try:
                await self._guard("move rows", rescue_rows, self.path, self._db_opened)
                new_db = await open_async_db(self.path)
            finally:
                self._following = False
            old, self.db = self.db, new_db
            self._db_opened = OpenedFile(self.path)
            self._last_lease_until = 0.0
            await old.retire()

    async def claim(self, limit: int, *, lease_seconds: float) -> list[ClaimedRow]:
        """Lease up to ``limit`` due rows of this root and key; returned in id order.

        Rows tried before and due again are taken first (oldest due first), then fresh
        rows (oldest first).
        """
        return [
            ClaimedRow(
                id=r[0], endpoint=r[1], response_id=r[2], body=r[3], created_at=r[4], attempts=r[5]
            )
            for r in await self.claim_tuples(limit, lease_seconds=lease_seconds)
        ]

    async def claim_tuples(
        self, limit: int, *, lease_seconds: float
    ) -> list[tuple[int, str, str, str, float, int]]:
        """:meth:`claim`, as tuples (id, endpoint, response_id, body, created_at, attempts)."""
        now = time.time()
        if self._unwritten_acks or self._unwritten_kills:
            await self._write_unwritten()
        if not self._peeked:
            # Each claim's expiry differs from the last one's: it names the claim's rows.
            until = max(now + lease_seconds, self._last_lease_until + 0.001)
            self._last_lease_until = until
            try:
                rows: list[Any] = await self._guard(
                    "claim", _claim, self.owner, self.api_root, self.key_fp, limit, now, until
                )
            except QueueStoreError as exc:
                if not disk_full(exc):
                    raise
            else:
                self._hurried = 0
                self._leased_out.update(r[0] for r in rows)
                return rows
        # No room on the disk for a lease: delivering what is queued must not need any.
        # Due rows are read instead, and held in this process's memory while they are
        # sent; another process sharing the file may send them too (the service counts a
        # repeated response_id once).
        skip = frozenset(
            self._peeked | self._leased_out | self._unwritten_acks | self._unwritten_kills.keys()
        )
        rows = await self._guard(
            "read",
            _peek,
            self.owner,
            self.api_root,
            self.key_fp,
            limit,
            now,
            self._hurried,
            skip,
        )
        self._peeked.update(r[0] for r in rows)
        return rows

    async def _write_unwritten(self) -> None:
        """Record what the service settled while the disk was full, if there is room now."""
        acks = sorted(self._unwritten_acks)
        kills = sorted(self._unwritten_kills.items())
        try:
            await self._guard("ack", _settle_unwritten, acks, kills, time.time())
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise
            return
        self._unwritten_acks.difference_update(acks)
        for i, _ in kills:
            self._unwritten_kills.pop(i, None)

    def _split(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """``ids`` read while the disk was full, and the leased ones (no longer held)."""
        self._leased_out.difference_update(ids)
        peeked = self._peeked
        if not peeked:
            return [], list(ids)
        read = [i for i in ids if i in peeked]
        if not read:
            return [], list(ids)
        peeked.difference_update(read)
        taken = set(read)
        return read, [i for i in ids if i not in taken]

    async def find_strays(self) -> None:
        """Make sure no fresh row is left below its claim mark (see _STRAY): on opening."""
        await self._guard("read", _lower_mark_under_strays, self.api_root, self.key_fp)

    async def free_dead_leases(self) -> int:
        """Make rows leased by processes of this host that no longer run due now.

        Returns how many rows were freed. A lease whose owner cannot be judged (another
        host, another platform) is left to expire by itself.
        """
        now = time.time()
        owners = await self._read(_LEASE_OWNERS, (self.api_root, self.key_fp, now))
        gone = [o for (o,) in owners if o != self.owner and owner_is_gone(str(o))]
        if not gone:
            return 0
        try:
            rows: int = await self._guard(
                "free leases", _free_leases, self.api_root, self.key_fp, gone, now
            )
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise
            return 0  # (the leases run out by themselves)
        return rows

    async def ack(self, ids: Sequence[int]) -> None:
        """Delete delivered rows (those this owner still holds).

        With the disk full the deletion waits in memory (the rows are left out of claims
        meanwhile); a process starting before it is written sends them again.
        """
        if not ids:
            return
        read, leased = self._split(ids)
        try:
            if leased:
                await self._guard("ack", _ack, self.owner, leased)
            if read:
                await self._guard("ack", _settle_unwritten, read, (), time.time())
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise
            self._unwritten_acks.update(ids)

    async def release(self, ids: Sequence[int], *, delay: float, error: str) -> None:
        """Give leased rows back, due again in ``delay`` seconds."""
        if not ids:
            return
        _, leased = self._split(ids)  # rows only read were never taken from the file
        if leased:
            due = time.time() + delay
            try:
                await self._guard("release", _release, self.owner, leased, due, error)
            except QueueStoreError as exc:
                if not disk_full(exc):
                    raise
                # Still leased to this owner in the file: claims made by reading take
                # them again (see _peek); other processes wait for the lease to end.

    async def kill(self, reasons: Sequence[tuple[int, str]]) -> None:
        """Dead-letter rows (those this owner still holds), each with its reason."""
        if not reasons:
            return
        now = time.time()
        read, leased = self._split([i for i, _ in reasons])
        why = dict(reasons)
        try:
            if leased:
                params = [(why[i], now, i, self.owner) for i in leased]
                await self._guard("dead-letter", _write_many, _KILL, params)
            if read:
                await self._guard(
                    "dead-letter", _settle_unwritten, (), [(i, why[i]) for i in read], now
                )
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise
            self._unwritten_kills.update(why)

    async def checkpoint(self) -> None:
        """Copy the WAL into the file (see :func:`_checkpoint`); the actor calls this."""
        try:
            await self._guard("checkpoint", _checkpoint)
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise  # (full: the WAL stays as it is until there is room)

    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._guard("read", _read, sql, params)

    async def next_retry_due(self) -> float | None:
        """When the earliest retried or leased row of this root and key is due (epoch s)."""
        rows = await self._read(_NEXT_RETRY, (self.api_root, self.key_fp))
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    async def oldest_pending_at(self) -> float:
        """When the oldest pending row of this root and key was written (0.0: none)."""
        rows = await self._read(_OLDEST, (self.api_root, self.key_fp))
        # Not a number: a row another program wrote (the actor dead-letters it when it
        # claims it); its age is unknown until then.
        return float(rows[0][0]) if rows and type(rows[0][0]) in (int, float) else 0.0

    async def max_id(self) -> int:
        """The highest row id in the file."""
        rows = await self._read(_MAX_ID, ())
        return int(rows[0][0])

    async def pending_upto(self, max_id: int) -> int:
        """How many pending rows of this root and key have ``id <= max_id``.

        Rows delivered or dead-lettered while the disk was full count as settled.
        """
        rows = await self._read(_PENDING_UPTO, (self.api_root, self.key_fp, max_id))
        settled = self._unwritten_acks | self._unwritten_kills.keys()
        return max(0, int(rows[0][0]) - sum(1 for i in settled if i <= max_id))

    async def hurry(self, max_id: int) -> None:
        """Make rows waiting out a backoff due now (a flush wants them delivered)."""
        params = [(self.api_root, self.key_fp, time.time(), max_id)]
        self._hurried = max(self._hurried, max_id)  # for claims made by reading
        try:
            await self._guard("hurry", _write_many, _HURRY, params)
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise

    @property
    def settled_unwritten(self) -> int:
        """Rows the service settled that a full disk kept from being recorded in the file."""
        return len(self._unwritten_acks) + len(self._unwritten_kills)

    async def close(self) -> None:
        """Close the connections (recording first what a full disk kept unwritten, if it can)."""
        if self._unwritten_acks or self._unwritten_kills:
            try:
                await self._write_unwritten()
            except QueueStoreError:
                pass  # the rows stay pending: a later process sends them again
        writes, self._writes = self._writes, None
        try:
            if writes is not None:
                await writes.close()
        finally:
            await self.db.close()


# -- administration (the ``aicm queue`` command) -----------------------------------------
#
# Plain synchronous functions, each on its own short-lived connection: they may run while
# trackers in other processes use the file. Reads open it read-only; every write is one
# short transaction that never touches a row under a live lease. A file that does not
# exist, is not SQLite, or holds no queue raises QueueStoreError and is left as it was.

_ADMIN_BUSY_MS = 5000
_LIVE_LEASE = "(lease_owner IS NOT NULL AND next_attempt_at > ?)"
_STATE_NAMES = {PENDING: "pending", DEAD: "dead"}


@attrs.frozen(kw_only=True)
class QueueEntry:
    """One row of a queue file, as an administrator sees it (the body is the record JSON)."""

    id: int
    state: str
    endpoint: str
    response_id: str
    api_root: str
    attempts: int
    created_at: float
    next_attempt_at: float
    leased: bool
    last_error: str | None
    dead_at: float | None
    body: str


@attrs.frozen(kw_only=True)
class QueueSummary:
    """Counts of a queue file: by state, under a live lease, oldest pending, bytes on disk."""

    pending: int
    leased: int
    dead: int
    oldest_pending_at: float | None
    oldest_dead_at: float | None
    size_bytes: int
    api_roots: dict[str, int]


@attrs.frozen(kw_only=True)
class RetryOutcome:
    """What ``retry_dead`` did: rows made pending, and the ids asked for that were not dead."""

    retried: int
    not_dead: tuple[int, ...]


@attrs.frozen(kw_only=True)
class PurgeOutcome:
    """What ``purge_rows`` did: rows deleted, and pending rows kept for their live lease."""

    deleted: int
    kept_leased: int


def _size_on_disk(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except OSError:
            pass
    return total


def _admin_connect(path: Path, *, write: bool) -> sqlite3.Connection:
    """Open an existing queue file (never create one) and check it is a queue."""
    if not path.exists():
        raise QueueStoreError(f"no queue file at {path}")
    if not path.is_file():
        raise QueueStoreError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise QueueStoreError(f"{path} is empty: not an aicm queue file")
    mode = "rw" if write else "ro"
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}",
            uri=True,
            timeout=_ADMIN_BUSY_MS / 1000,
            isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
        )
    except sqlite3.Error as exc:
        raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {_ADMIN_BUSY_MS}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        # A version 1 file (no tracker of this aicm has opened it yet) has the same
        # columns: it is read and written as it is, and upgraded by the next tracker.
        is_queue = 1 <= version <= SCHEMA_VERSION and _holds_a_queue(conn, version)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise QueueStoreError(f"{path} is not a usable queue file: {exc}") from exc
    if version > SCHEMA_VERSION:
        conn.close()
        raise _newer(path, version)
    if not is_queue:
        conn.close()
        raise _foreign(path)
    return conn


def _admin(path: Path, op: str, *, write: bool, work: Any) -> Any:
    with _FORK_GATE:
        conn = _admin_connect(path, write=write)
        try:
            if write:
                with _file_lock(path):
                    return work(conn)
            return work(conn)
        except sqlite3.Error as exc:
            raise QueueStoreError(f"{op} on {path} failed: {exc}") from exc
        finally:
            conn.close()


def check_queue_file(path: Path) -> None:
    """Raise :class:`QueueStoreError` unless ``path`` is an existing, readable queue file."""
    _admin(path, "check", write=False, work=lambda conn: None)


def summarize_queue(path: Path) -> QueueSummary:
    """Counts of the queue file at ``path`` (read-only)."""

    def work(conn: sqlite3.Connection) -> QueueSummary:
        now = time.time()
        pending, leased, oldest, dead, oldest_dead = conn.execute(
            "SELECT"
            " coalesce(sum(state = 0), 0),"
            f" coalesce(sum(state = 0 AND {_LIVE_LEASE}), 0),"
            " min(CASE WHEN state = 0 THEN created_at END),"
            " coalesce(sum(state = 1), 0),"
            " min(CASE WHEN state = 1 THEN dead_at END)"
            " FROM records",
            (now,),
        ).fetchone()
        roots = dict(
            conn.execute(
                "SELECT api_root, count(*) FROM records GROUP BY api_root ORDER BY api_root"
            ).fetchall()
        )
        return QueueSummary(
            pending=int(pending),
            leased=int(leased),
            dead=int(dead),
            oldest_pending_at=None if oldest is None else float(oldest),
            oldest_dead_at=None if oldest_dead is None else float(oldest_dead),
            size_bytes=_size_on_disk(path),
            api_roots={str(k): int(v) for k, v in roots.items()},
        )

    result: QueueSummary = _admin(path, "stats", write=False, work=work)
    return result


def list_queue(path: Path, *, state: str | None = None, limit: int = 50) -> list[QueueEntry]:
    """Up to ``limit`` rows, oldest first; ``state`` is ``"pending"``, ``"dead"`` or None (both)."""
    states = {"pending": (PENDING,), "dead": (DEAD,), None: (PENDING, DEAD)}[state]

    def work(conn: sqlite3.Connection) -> list[QueueEntry]:
        now = time.time()
        marks = ", ".join("?" for _ in states)
        rows = conn.execute(
            "SELECT id, state, endpoint, response_id, api_root, attempts, created_at,"
            f" next_attempt_at, {_LIVE_LEASE}, last_error, dead_at, body"
            f" FROM records WHERE state IN ({marks}) ORDER BY id LIMIT ?",
            (now, *states, limit),
        ).fetchall()
        return [
            QueueEntry(
                id=int(r[0]),
                state=_STATE_NAMES.get(int(r[1]), str(r[1])),
                endpoint=str(r[2]),
                response_id=str(r[3]),
                api_root=str(r[4]),
                attempts=int(r[5]),
                created_at=float(r[6]),
                next_attempt_at=float(r[7]),
                leased=bool(r[8]),
                last_error=r[9],
                dead_at=None if r[10] is None else float(r[10]),
                body=str(r[11]),
            )
            for r in rows
        ]

    result: list[QueueEntry] = _admin(path, "list", write=False, work=work)
    return result


def retry_dead(path: Path, ids: Sequence[int] | None = None) -> RetryOutcome:
    """Make dead rows pending again, due now: those in ``ids``, or every one when None."""

    def work(conn: sqlite3.Connection) -> RetryOutcome:
        now = time.time()
        # attempts is kept (> 0): a running actor's next-retry check then sees the row as due.
        revive = (
            "UPDATE records SET state = 0, next_attempt_at = ?, lease_owner = NULL,"
            " dead_at = NULL, attempts = max(attempts, 1) WHERE state = 1"
        )
        conn.execute("BEGIN IMMEDIATE")
        try:
            if ids is None:
                retried = conn.execute(revive, (now,)).rowcount
                missing: list[int] = []
            else:
                wanted = sorted(set(ids))
                dead = (
                    {
                        int(r[0])
                        for r in conn.execute(
                            "SELECT id FROM records WHERE state = 1 AND id IN"
                            f" ({', '.join('?' for _ in wanted)})",
                            wanted,
                        ).fetchall()
                    }
                    if wanted
                    else set()
                )
                retried = 0
                for i in sorted(dead):
                    retried += conn.execute(revive + " AND id = ?", (now, i)).rowcount
                missing = [i for i in wanted if i not in dead]
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return RetryOutcome(retried=retried, not_dead=tuple(missing))

    result: RetryOutcome = _admin(path, "retry", write=True, work=work)
    return result


def _raise_floor_to_newest(conn: sqlite3.Connection) -> None:
    """Before deleting rows: no id in use now may be given to a later row."""
    if "id_floor" in _tables(conn):  # a version 1 file still has AUTOINCREMENT instead
        (top,) = conn.execute(_MAX_ID).fetchone()
        conn.execute(_RAISE_FLOOR, (top, top))


def purge_rows(path: Path, *, state: str) -> PurgeOutcome:
    """Delete rows: ``"dead"``, ``"pending"`` or ``"all"``. Rows under a live lease stay."""
    if state not in ("dead", "pending", "all"):
        raise ValueError(f"state must be 'dead', 'pending' or 'all', got {state!r}")

    def work(conn: sqlite3.Connection) -> PurgeOutcome:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = 0
            kept = 0
            _raise_floor_to_newest(conn)
            if state in ("dead", "all"):
                deleted += conn.execute("DELETE FROM records WHERE state = 1").rowcount
            if state in ("pending", "all"):
                deleted += conn.execute(
                    f"DELETE FROM records WHERE state = 0 AND NOT {_LIVE_LEASE}", (now,)
                ).rowcount
                kept = int(
                    conn.execute(
                        f"SELECT count(*) FROM records WHERE state = 0 AND {_LIVE_LEASE}", (now,)
                    ).fetchone()[0]
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return PurgeOutcome(deleted=deleted, kept_leased=kept)

    result: PurgeOutcome = _admin(path, "purge", write=True, work=work)
    return result
