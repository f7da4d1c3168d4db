"""The durable SQLite queue: group-committed writes, leased claims, acks, dead letters (layer 2).

One table holds every record. A row is *pending* (state 0) until the service answers 2xx,
when it is deleted, or until it is dead-lettered (state 1). Claiming a row leases it: the
claimant's id goes in ``lease_owner`` and ``next_attempt_at`` moves to the lease's expiry,
so a crashed owner's rows become claimable again by themselves and a live owner's rows are
never taken from it. Rows name their API root and a fingerprint of the key, never the key.

The SQL lives here once. Writers on plain threads (the sync facade) use
:class:`SyncWriter`; everything else goes through an :class:`AsyncDB`, which is aiosqlite
on asyncio and one ``sqlite3`` connection behind ``anyio.to_thread`` on trio.
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


def _setup(conn: sqlite3.Connection, path: Path) -> None:
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise QueueStoreError(f"{path}: cannot switch the queue file to WAL mode")
        # WAL + NORMAL: a committed record survives a process crash (kill -9); an OS crash
        # may lose the last commits. That is the trade every embedded queue here makes.
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise QueueStoreError(
                f"{path}: queue schema version {version} is newer than this aicm "
                f"understands ({SCHEMA_VERSION}); upgrade aicm"
            )
        if version < SCHEMA_VERSION:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    except sqlite3.DatabaseError as exc:
        raise QueueStoreError(f"{path} is not a usable queue file: {exc}") from exc


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (and if new, create) a queue file with the schema in place."""
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
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
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
        if self._conn is None:
            self._conn = connect(self.path, check_same_thread=False)
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
            with self._io:
                conn = self._connection()
                conn.executemany(
                    _INSERT, _insert_params(batch, self._api_root, self._key_fp, time.time())
                )
                conn.commit()
                self.commits += 1
        except BaseException as exc:
            error = exc
            if self._conn is not None:
                try:
                    self._conn.rollback()
                except sqlite3.Error:
                    pass
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
        with self._io:
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
        try:
            self._conn.executemany(sql, params)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise

    def _write_returning(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            rows = self._conn.execute(sql, params).fetchall()
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        return rows

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    async def write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        await self._run(self._write_many, sql, params)

    async def write_returning(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await self._run(self._write_returning, sql, params)
        return rows

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await self._run(self._read, sql, params)
        return rows

    async def close(self) -> None:
        await self._run(self._conn.close)


class _AioDB:
    """aiosqlite, on asyncio."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        # aiosqlite orders single calls, not transactions: one operation at a time.
        self._lock = anyio.Lock()

    async def write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        async with self._lock:
            try:
                await self._conn.executemany(sql, params)
                await self._conn.commit()
            except BaseException:
                await self._conn.rollback()
                raise

    async def write_returning(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock:
            try:
                async with self._conn.execute(sql, params) as cursor:
                    rows = list(await cursor.fetchall())
                await self._conn.commit()
            except BaseException:
                await self._conn.rollback()
                raise
            return rows

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._lock, self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()


async def open_async_db(path: Path) -> AsyncDB:
    """Open a queue file for async use: aiosqlite on asyncio, a thread-bound sqlite3 on trio."""
    # Schema setup runs once, synchronously, in one worker thread call (a sqlite3
    # connection may only be closed by the thread that opened it); then the driver takes over.
    await anyio.to_thread.run_sync(_prepare_schema, path)
    if _on_asyncio():
        import aiosqlite

        try:
            conn = await aiosqlite.connect(path, timeout=30.0)
            await conn.execute("PRAGMA busy_timeout = 30000")
            await conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
        return _AioDB(conn)
    conn2 = await anyio.to_thread.run_sync(lambda: connect(path, check_same_thread=False))
    return _ThreadDB(conn2)


def _prepare_schema(path: Path) -> None:
    connect(path).close()


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
