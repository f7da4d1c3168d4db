"""The durable SQLite queue: group-committed writes, leased claims, acks, dead letters (layer 2).

One table holds every record. A row is *pending* (state 0) until the service answers 2xx,
when it is deleted, or until it is dead-lettered (state 1). Claiming a row leases it: the
claimant's id goes in ``lease_owner`` and ``next_attempt_at`` moves to the lease's expiry,
so a crashed owner's rows become claimable again by themselves and a live owner's rows are
never taken from it. Rows name their API root and a fingerprint of the key, never the key.

The SQL lives here once. Writers on plain threads (the sync facade) use
:class:`SyncWriter`; everything else goes through an :class:`AsyncDB`, which is aiosqlite
on asyncio and one ``sqlite3`` connection behind ``anyio.to_thread`` on trio.

Every use of a connection here passes through ``_FORK_GATE``, so that a ``fork()`` never
lands inside a transaction (see :class:`_ForkGate`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from .._core.exceptions import QueueStoreError

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

SCHEMA_VERSION = 1
FORMAT_VERSION = 1  # of the JSON in ``body``

PENDING = 0
DEAD = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
);
CREATE INDEX IF NOT EXISTS records_claim
    ON records (api_root, key_fp, state, next_attempt_at, id);
CREATE INDEX IF NOT EXISTS records_state ON records (state, id);
"""

_INSERT = (
    "INSERT INTO records (endpoint, response_id, body, format, api_root, key_fp,"
    " created_at, next_attempt_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?)"
)
_CLAIM = """
UPDATE records SET lease_owner = ?, next_attempt_at = ?, attempts = attempts + 1
WHERE id IN (
    SELECT id FROM records
    WHERE api_root = ? AND key_fp = ? AND state = 0 AND next_attempt_at <= ?
    ORDER BY next_attempt_at, id LIMIT ?)
RETURNING id, endpoint, response_id, body, created_at, attempts
"""
_ACK = "DELETE FROM records WHERE id = ?"
_RELEASE = (
    "UPDATE records SET lease_owner = NULL, next_attempt_at = ?, last_error = ?"
    " WHERE id = ? AND lease_owner = ?"
)
_KILL = (
    "UPDATE records SET state = 1, lease_owner = NULL, last_error = ?, dead_at = ?"
    " WHERE id = ? AND state = 0"
)
# Rows that have been tried (a backoff) or are leased (maybe by a crashed owner). Fresh rows
# are left out: their writer rings the actor's doorbell, and they wait for a batch window.
_NEXT_RETRY = (
    "SELECT min(next_attempt_at) FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND (attempts > 0 OR lease_owner IS NOT NULL)"
)
_PENDING_UPTO = (
    "SELECT count(*) FROM records WHERE api_root = ? AND key_fp = ? AND state = 0 AND id <= ?"
)
_OLDEST = (
    "SELECT created_at FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " ORDER BY id LIMIT 1"
)
_MAX_ID = "SELECT coalesce(max(id), 0) FROM records"
_HURRY = (
    "UPDATE records SET next_attempt_at = 0 WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND lease_owner IS NULL AND next_attempt_at > ? AND id <= ?"
)


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
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_FORK_GATE.before_fork,
        after_in_parent=_FORK_GATE.after_fork_in_parent,
        after_in_child=_FORK_GATE.after_fork_in_child,
    )


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


def prepare_file(path: Path) -> None:
    """Create the queue file's folder (0700) and the file itself (0600) if missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
    except OSError as exc:
        raise QueueStoreError(f"cannot create the queue file {path}: {exc}") from exc


# The columns of ``records`` (schema version 1), and the tables a queue file may hold.
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


def _holds_a_queue(conn: sqlite3.Connection, version: int) -> bool:
    """Whether a file whose ``user_version`` is ``version`` is ours: a queue, or to become one.

    At the current version, ``records`` must have a queue's columns. Below it, the file must
    hold no table (a new database), or only a queue's ``records`` (a creation cut short).
    Read-only, so a file found to be another program's is left exactly as it was. SQLite's
    own tables (``sqlite_sequence``, ``sqlite_stat1``, ...) do not count.
    """
    tables = {
        str(r[0])
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if not str(r[0]).startswith("sqlite_")
    }
    if version < SCHEMA_VERSION:
        if not tables:
            return True
        if tables != {"records"}:
            return False
    elif "records" not in tables:
        return False
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(records)").fetchall()}
    return columns >= _QUEUE_COLUMNS


def _setup(conn: sqlite3.Connection, path: Path) -> None:
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        # Look before writing anything: the switch to WAL rewrites the file's header, and
        # another program's database must be refused exactly as it was.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise QueueStoreError(
                f"{path}: queue schema version {version} is newer than this aicm "
                f"understands ({SCHEMA_VERSION}); upgrade aicm"
            )
        if not _holds_a_queue(conn, version):
            raise QueueStoreError(f"{path} is an SQLite file but not an aicm queue file")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise QueueStoreError(f"{path}: cannot switch the queue file to WAL mode")
        # WAL + NORMAL: a committed record survives a process crash (kill -9); an OS crash
        # may lose the last commits. That is the trade every embedded queue here makes.
        conn.execute("PRAGMA synchronous = NORMAL")
        if version < SCHEMA_VERSION:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    except sqlite3.DatabaseError as exc:
        raise QueueStoreError(f"{path} is not a usable queue file: {exc}") from exc


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (and if new, create) a queue file with the schema in place."""
    with _FORK_GATE:
        return _open(path, check_same_thread=check_same_thread)


def _open(path: Path, *, check_same_thread: bool) -> sqlite3.Connection:
    """:func:`connect`, for a caller already inside the fork gate."""
    prepare_file(path)
    try:
        conn = sqlite3.connect(path, timeout=30.0, check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
    try:
        _setup(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _insert_params(
    rows: Iterable[QueueRow], api_root: str, key_fp: str, now: float
) -> list[tuple[Any, ...]]:
    return [(r.endpoint, r.response_id, r.body, api_root, key_fp, now, now) for r in rows]


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
            count, oldest = conn.execute(
                "SELECT count(*), min(created_at) FROM records"
                " WHERE api_root = ? AND key_fp = ? AND state = 0",
                (api_root, key_fp),
            ).fetchone()
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot read the queue file {path}: {exc}") from exc
        finally:
            conn.close()
    return int(count), (None if oldest is None else float(oldest))


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
        self._cond = threading.Condition()
        self._pending: list[QueueRow] = []
        self._open_batch = 0  # the number of the batch now accumulating
        self._done_batch = -1  # the last batch committed (or failed)
        self._failed: dict[int, BaseException] = {}
        self._leader = False
        self._io = threading.Lock()  # the connection: one leader's commit, or close()
        self.commits = 0  # transactions committed: fewer than writes when calls overlap

    def _connection(self) -> sqlite3.Connection:
        # Called inside the fork gate.
        if self._conn is None:
            self._conn = _open(self.path, check_same_thread=False)
        return self._conn

    def write(self, rows: Sequence[QueueRow]) -> None:
        """Commit ``rows``; raises :class:`QueueStoreError` if they could not be written."""
        cond = self._cond
        with cond:
            self._pending.extend(rows)
            mine = self._open_batch
            while self._done_batch < mine and self._leader:
                cond.wait()
            if self._done_batch >= mine:
                failure = self._failed.get(mine)
                if failure is not None:
                    raise QueueStoreError(f"could not write to {self.path}: {failure}") from failure
                return
            # Nobody is committing and our batch is still open: we commit it for everyone in it.
            self._leader = True
            batch, self._pending = self._pending, []
            number = self._open_batch
            self._open_batch += 1
        error: BaseException | None = None
        try:
            with self._io, _FORK_GATE:
                try:
                    conn = self._connection()
                    conn.executemany(
                        _INSERT, _insert_params(batch, self._api_root, self._key_fp, time.time())
                    )
                    conn.commit()
                    self.commits += 1
                except BaseException:
                    if self._conn is not None:
                        try:
                            self._conn.rollback()
                        except sqlite3.Error:
                            pass
                    raise
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
                cond.notify_all()
        if error is not None:
            if isinstance(error, QueueStoreError):
                raise error
            raise QueueStoreError(f"could not write to {self.path}: {error}") from error

    def close(self) -> None:
        """Close the connection (a later write reopens it)."""
        with self._io, _FORK_GATE:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class AsyncDB(Protocol):
    """The few operations the queue needs, as one async surface over either driver."""

    async def write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None: ...
    async def write_returning(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...
    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    async def close(self) -> None: ...


class _ThreadDB:
    """One sqlite3 connection, every call in a worker thread, one call at a time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._limiter = anyio.CapacityLimiter(1)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        with _FORK_GATE:
            try:
                self._conn.executemany(sql, params)
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise

    def _write_returning(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with _FORK_GATE:
            try:
                rows = self._conn.execute(sql, params).fetchall()
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
        return rows

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with _FORK_GATE:
            return self._conn.execute(sql, params).fetchall()

    def _close(self) -> None:
        with _FORK_GATE:
            self._conn.close()

    async def write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        await self._run(self._write_many, sql, params)

    async def write_returning(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await self._run(self._write_returning, sql, params)
        return rows

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await self._run(self._read, sql, params)
        return rows

    async def close(self) -> None:
        await self._run(self._close)


class _AioDB:
    """aiosqlite, on asyncio."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        # aiosqlite orders single calls, not transactions: one operation at a time.
        self._lock = anyio.Lock()

    # A transaction spans awaits (statement, then commit): the fork gate covers all of it.

    async def write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        async with self._lock, _FORK_GATE:
            try:
                await self._conn.executemany(sql, params)
                await self._conn.commit()
            except BaseException:
                await self._conn.rollback()
                raise

    async def write_returning(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock, _FORK_GATE:
            try:
                async with self._conn.execute(sql, params) as cursor:
                    rows = list(await cursor.fetchall())
                await self._conn.commit()
            except BaseException:
                await self._conn.rollback()
                raise
            return rows

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._lock, _FORK_GATE, self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def close(self) -> None:
        async with self._lock, _FORK_GATE:
            await self._conn.close()


async def open_async_db(path: Path) -> AsyncDB:
    """Open a queue file for async use: aiosqlite on asyncio, a thread-bound sqlite3 on trio."""
    # Schema setup runs once, synchronously, in one worker thread call (a sqlite3
    # connection may only be closed by the thread that opened it); then the driver takes over.
    await anyio.to_thread.run_sync(_prepare_schema, path)
    if _on_asyncio():
        import aiosqlite

        try:
            async with _FORK_GATE:
                conn = await aiosqlite.connect(path, timeout=30.0)
                await conn.execute("PRAGMA busy_timeout = 30000")
                await conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
        return _AioDB(conn)
    conn2 = await anyio.to_thread.run_sync(lambda: connect(path, check_same_thread=False))
    return _ThreadDB(conn2)


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


class _Commit:
    """One group commit: the rows of every caller in it, and its outcome."""

    def __init__(self) -> None:
        self.rows: list[QueueRow] = []
        self.done = anyio.Event()
        self.error: BaseException | None = None


class SqliteQueue:
    """The async side of a queue file: group-committed enqueue, claim, ack, retry, dead-letter.

    One instance per (file, API root, key fingerprint); ``owner`` identifies this
    process's leases and is renewed after a fork.
    """

    def __init__(self, db: AsyncDB, path: Path, *, api_root: str, key_fp: str) -> None:
        self.db = db
        self.path = path
        self.api_root = api_root
        self.key_fp = key_fp
        self.owner = uuid.uuid4().hex
        self._open = _Commit()  # the rows waiting for the next transaction
        self._committing = False
        self.commits = 0  # enqueue transactions: fewer than calls when calls overlap

    @classmethod
    async def open(cls, path: Path, *, api_root: str, key_fp: str) -> SqliteQueue:
        """Open or create the queue file at ``path``."""
        try:
            db = await open_async_db(path)
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
        return cls(db, path, api_root=api_root, key_fp=key_fp)

    async def _guard(self, op: str, coro: Any) -> Any:
        try:
            with anyio.CancelScope(shield=True):
                return await coro
        except sqlite3.Error as exc:
            raise QueueStoreError(f"{op} on {self.path} failed: {exc}") from exc

    async def enqueue(self, rows: Sequence[QueueRow]) -> None:
        """Commit ``rows``; concurrent callers share one transaction (group commit).

        The first caller commits; callers arriving meanwhile join the next commit, which
        the same caller makes as soon as its own is done.
        """
        batch = self._open
        batch.rows.extend(rows)
        if not self._committing:
            self._committing = True
            try:
                # Let the tasks that are ready to run add their rows first: one commit then
                # carries many callers (shielded: a cancelled leader must still commit).
                with anyio.CancelScope(shield=True):
                    await anyio.lowlevel.checkpoint()
                while self._open.rows:
                    commit, self._open = self._open, _Commit()
                    try:
                        # Shielded: a cancelled caller must not leave other callers' rows
                        # half-written; the write takes milliseconds.
                        with anyio.CancelScope(shield=True):
                            await self.db.write_many(
                                _INSERT,
                                _insert_params(
                                    commit.rows, self.api_root, self.key_fp, time.time()
                                ),
                            )
                        self.commits += 1
                    except Exception as exc:
                        commit.error = exc
                    commit.done.set()
            finally:
                self._committing = False
        await batch.done.wait()
        error = batch.error
        if error is not None:
            if isinstance(error, QueueStoreError):
                raise error
            raise QueueStoreError(f"could not write to {self.path}: {error}") from error

    async def claim(self, limit: int, *, lease_seconds: float) -> list[ClaimedRow]:
        """Lease up to ``limit`` due rows of this root and key, oldest due first."""
        now = time.time()
        rows = await self._guard(
            "claim",
            self.db.write_returning(
                _CLAIM, (self.owner, now + lease_seconds, self.api_root, self.key_fp, now, limit)
            ),
        )
        claimed = [
            ClaimedRow(
                id=r[0], endpoint=r[1], response_id=r[2], body=r[3], created_at=r[4], attempts=r[5]
            )
            for r in rows
        ]
        claimed.sort(key=lambda r: r.id)
        return claimed

    async def ack(self, ids: Sequence[int]) -> None:
        """Delete delivered rows."""
        if ids:
            await self._guard("ack", self.db.write_many(_ACK, [(i,) for i in ids]))

    async def release(self, ids: Sequence[int], *, delay: float, error: str) -> None:
        """Give leased rows back, due again in ``delay`` seconds."""
        if ids:
            due = time.time() + delay
            await self._guard(
                "release",
                self.db.write_many(_RELEASE, [(due, error, i, self.owner) for i in ids]),
            )

    async def kill(self, reasons: Sequence[tuple[int, str]]) -> None:
        """Dead-letter rows, each with its reason."""
        if reasons:
            now = time.time()
            await self._guard(
                "dead-letter", self.db.write_many(_KILL, [(why, now, i) for i, why in reasons])
            )

    async def next_retry_due(self) -> float | None:
        """When the earliest retried or leased row of this root and key is due (epoch s)."""
        rows = await self._guard("read", self.db.read(_NEXT_RETRY, (self.api_root, self.key_fp)))
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    async def oldest_pending_at(self) -> float:
        """When the oldest pending row of this root and key was written (0.0: none)."""
        rows = await self._guard("read", self.db.read(_OLDEST, (self.api_root, self.key_fp)))
        return float(rows[0][0]) if rows else 0.0

    async def max_id(self) -> int:
        """The highest row id in the file."""
        rows = await self._guard("read", self.db.read(_MAX_ID))
        return int(rows[0][0])

    async def pending_upto(self, max_id: int) -> int:
        """How many pending rows of this root and key have ``id <= max_id``."""
        rows = await self._guard(
            "read", self.db.read(_PENDING_UPTO, (self.api_root, self.key_fp, max_id))
        )
        return int(rows[0][0])

    async def hurry(self, max_id: int) -> None:
        """Make rows waiting out a backoff due now (a flush wants them delivered)."""
        await self._guard(
            "hurry",
            self.db.write_many(_HURRY, [(self.api_root, self.key_fp, time.time(), max_id)]),
        )

    async def close(self) -> None:
        """Close the connection."""
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
        is_queue = version == SCHEMA_VERSION and _holds_a_queue(conn, version)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise QueueStoreError(f"{path} is not a usable queue file: {exc}") from exc
    if version > SCHEMA_VERSION:
        conn.close()
        raise QueueStoreError(
            f"{path}: queue schema version {version} is newer than this aicm "
            f"understands ({SCHEMA_VERSION}); upgrade aicm"
        )
    if version != SCHEMA_VERSION or not is_queue:
        conn.close()
        raise QueueStoreError(f"{path} is an SQLite file but not an aicm queue file")
    return conn


def _admin(path: Path, op: str, *, write: bool, work: Any) -> Any:
    with _FORK_GATE:
        conn = _admin_connect(path, write=write)
        try:
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
