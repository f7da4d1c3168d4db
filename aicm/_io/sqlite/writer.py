"""Writing rows: one transaction per group of callers, from threads (`SyncWriter`)
or from an event loop (`AsyncWriter`)."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from ..._core.exceptions import QueueStoreError
from .db import AsyncDB, OpenedFile, on_asyncio, open_async_db, rescue_rows, retire
from .schema import (
    BUSY_NO_WAIT,
    BUSY_WAIT,
    FORK_GATE,
    LAST_ID,
    connect,
    file_lock,
    immediate,
    raise_write_error,
)

# A row to write, as the hot paths pass it: (endpoint, response_id, body).
RowTuple = tuple[str, str, str]

_INTO = (
    "INSERT INTO records (id, endpoint, response_id, body, format, api_root, key_fp,"
    " created_at, next_attempt_at) VALUES "
)
# One row: its parameters are (endpoint, response_id, body, api_root, key_fp, created_at,
# next_attempt_at). Its id is above the newest row's and the id floor (NULL, and so
# SQLite's own choice of id, if ``id_floor`` lost its row).
INSERT = _INTO + (
    "((SELECT max(coalesce((SELECT max(id) FROM records), 0), upto) + 1 FROM id_floor),"
    " ?, ?, ?, 1, ?, ?, ?, ?)"
)
# An INSERT of n rows with their ids: the parameters are the root, the key and the time,
# then (id, endpoint, response_id, body) of each row; at most ROWS_PER_INSERT rows (4
# parameters each, within the 999 that old SQLite builds allow).
ROWS_PER_INSERT = 240

_T = TypeVar("_T")
_D = TypeVar("_D")

_SQLITE_BUSY = 5  # SQLite's primary result code (extended codes add bits above 0xFF)


@functools.lru_cache(maxsize=ROWS_PER_INSERT)
def _insert_rows_sql(n: int) -> str:
    return _INTO + ", ".join(
        f"(?{k}, ?{k + 1}, ?{k + 2}, ?{k + 3}, 1, ?1, ?2, ?3, ?3)" for k in range(4, 4 * n + 4, 4)
    )


def insert(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    rows: Sequence[RowTuple],
    api_root: str,
    key_fp: str,
    now: float,
    wait: bool = True,
) -> bool:
    """Commit ``rows``, in a few statements however many there are; True once done.

    One row is one statement, its own transaction. Several go in multi-row INSERTs: each
    statement is a round trip through the GIL, and that, not SQLite, is what a row costs.

    With ``wait`` false (for an event loop, on an `impatient()` connection), nothing is
    written and the answer is False when writing would wait for a lock: the file's, held
    by another thread, or SQLite's, held by another process.
    """
    with FORK_GATE:
        if not lock.acquire(blocking=wait):
            return False
        try:
            if len(rows) == 1:
                conn.execute(INSERT, (*rows[0], api_root, key_fp, now, now))
            else:
                immediate(conn, lambda: _insert_many(conn, rows, api_root, key_fp, now))
        except sqlite3.OperationalError as exc:
            if not wait and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_BUSY:
                return False  # (the statement or transaction left nothing behind)
            raise
        finally:
            lock.release()
    return True


def patiently(
    conn: sqlite3.Connection, lock: threading.Lock, fn: Callable[..., _T], *args: Any
) -> _T:
    """``fn(conn, lock, *args)`` on an `impatient()` connection, waiting for locks
    meanwhile as every queue connection does."""
    conn.execute(BUSY_WAIT)  # (a setting of the connection: the file is not touched)
    try:
        return fn(conn, lock, *args)
    finally:
        conn.execute(BUSY_NO_WAIT)


def impatient(conn: sqlite3.Connection, lock: threading.Lock) -> None:
    """Make ``conn`` give up at once on a lock held elsewhere (for ``insert(wait=False)``)."""
    del lock
    conn.execute(BUSY_NO_WAIT)


def _insert_many(
    conn: sqlite3.Connection, rows: Sequence[RowTuple], api_root: str, key_fp: str, now: float
) -> None:
    (last,) = conn.execute(LAST_ID).fetchone()
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        params: list[Any] = [api_root, key_fp, now]
        for offset, row in enumerate(chunk, start=last + start + 1):
            params.append(offset)
            params.extend(row)
        conn.execute(_insert_rows_sql(len(chunk)), params)


class _Commit(Generic[_D]):
    """One group commit: the rows of every caller in it, whether it is done, its error."""

    __slots__ = ("done", "error", "rows")

    def __init__(self, done: _D) -> None:
        self.rows: list[RowTuple] = []
        self.done = done
        self.error: BaseException | None = None


class _Writer:
    """What both writers keep: the file, whose rows they write, and their commits."""

    def __init__(self, path: Path, *, api_root: str, key_fp: str) -> None:
        self.path = path
        self._api_root = api_root
        self._key_fp = key_fp
        self.commits = 0  # transactions committed: fewer than rows when callers overlap


class SyncWriter(_Writer):
    """Durable writes from plain threads, committed before `add()` returns; concurrent
    callers share one transaction (the first commits for all who queued behind it)."""

    def __init__(self, path: Path, *, api_root: str, key_fp: str) -> None:
        super().__init__(path, api_root=api_root, key_fp=key_fp)
        self._conn: sqlite3.Connection | None = None
        self._lock = file_lock(path)
        self._cond = threading.Condition(threading.Lock())
        self._batch = _Commit(False)  # the rows waiting for the next transaction
        self._leader = False  # a caller is committing for everyone
        self._waiting = 0  # callers waiting for a leader's commit
        self._io = threading.Lock()  # the connection: one leader's commit, or close()
        self._opened: OpenedFile | None = None

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
        retire(conn)
        self._conn = None
        self._opened = None

    def add(self, endpoint: str, response_id: str, body: str) -> None:
        """Commit one row (see `write()`)."""
        self.write(((endpoint, response_id, body),))

    def write(self, rows: Sequence[RowTuple]) -> None:
        """Commit ``rows``; raises [`QueueStoreError`][aicm.QueueStoreError] if they could
        not be written."""
        cond = self._cond
        with cond:
            batch = self._batch
            batch.rows.extend(rows)
            if self._leader:
                self._waiting += 1
                try:
                    while self._leader and not batch.done:
                        cond.wait()
                finally:
                    self._waiting -= 1
            if not batch.done:  # nobody is committing it: we commit it for everyone in it
                self._leader = True
                self._batch = _Commit(False)
        if not batch.done:
            try:
                with self._io:
                    conn = self._connection()
                    insert(conn, self._lock, batch.rows, self._api_root, self._key_fp, time.time())
                    self.commits += 1
                    self._follow_the_path()
            except BaseException as exc:
                batch.error = exc
                if not isinstance(exc, (sqlite3.Error, QueueStoreError)):
                    raise
            finally:
                with cond:
                    batch.done = True
                    self._leader = False
                    if self._waiting:
                        cond.notify_all()
        if batch.error is not None:
            raise_write_error(self.path, batch.error)

    def close(self) -> None:
        """Close the connection (a later write reopens it)."""
        with self._io, FORK_GATE:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# Group commits of at most this many rows are made on the event loop itself when they
# need not wait for a lock (see insert()); larger ones on the connection's thread.
_ROWS_COMMITTED_ON_LOOP = 4


class _FutureEvent:
    """``anyio.Event`` for asyncio, on a plain future per waiter.

    Every ``track()`` on a persistent queue waits once for its commit, and anyio's event
    costs 0.7 us more per wait. A future per waiter: cancelling a task cancels the future
    it awaits, and that must not end the other callers' wait.
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


class AsyncWriter(_Writer):
    """Durable writes from tasks of one event loop, group-committed.

    Its connection is its own, opened on the first `add()` (on the actor's, adds would
    wait behind claims and checkpoints). ``counted(n)`` hears of each commit of ``n``
    rows before it starts, ``committed(n, ok)`` after: once per commit, not per caller (a
    caller cancelled while it waits still has its row committed with the others).
    """

    def __init__(
        self,
        path: Path,
        *,
        api_root: str,
        key_fp: str,
        counted: Callable[[int], None],
        committed: Callable[[int, bool], None],
    ) -> None:
        super().__init__(path, api_root=api_root, key_fp=key_fp)
        self._counted = counted
        self._committed = committed
        self._db: AsyncDB | None = None
        self._opening = anyio.Lock()
        self._asyncio = on_asyncio()
        self._new_done: Callable[[], _FutureEvent | anyio.Event] = (
            _FutureEvent if self._asyncio else anyio.Event
        )
        self._open = _Commit(self._new_done())  # the rows waiting for the next transaction
        # A caller committing for everyone (see add). One at a time: two (one running,
        # the next queued) measured no faster, and make more, smaller commits.
        self._committing = False

    async def add(self, endpoint: str, response_id: str, body: str) -> None:
        """Commit one row; raises [`QueueStoreError`][aicm.QueueStoreError] if it could not
        be written. A caller who finds no commit under way commits for everyone: the rows
        gathered so far, then whatever gathers meanwhile."""
        commit = self._open
        commit.rows.append((endpoint, response_id, body))
        if not self._committing:
            self._committing = True
            interrupted: BaseException | None = None
            try:
                # Let the tasks that are ready add their rows first: one commit then
                # carries many callers. A committer cancelled here still commits the rows
                # it gathered (other callers' with them), then takes its cancellation.
                try:
                    if self._asyncio:  # (anyio's checkpoint there, without its look-ups)
                        await asyncio.sleep(0)
                    else:
                        await anyio.lowlevel.checkpoint()
                except BaseException as exc:
                    interrupted = exc
                while self._open.rows:
                    await self._commit_open()
            finally:
                self._committing = False
            if interrupted is not None:
                raise interrupted
        if not commit.done.is_set():
            await commit.done.wait()
        if commit.error is not None:
            raise_write_error(self.path, commit.error)

    async def _commit_open(self) -> None:
        """Commit the rows gathered so far, for all their callers."""
        commit, self._open = self._open, _Commit(self._new_done())
        rows, n = commit.rows, len(commit.rows)
        self._counted(n)
        try:
            now = time.time()
            db = self._db
            # A few rows are committed right here when nothing holds the file: that takes
            # about as long as the hop to the connection's thread and back. Awaits are
            # shielded: the rows taken must be committed, the caller cancelled or not.
            if (
                db is None
                or n > _ROWS_COMMITTED_ON_LOOP
                or not db.run_now(insert, rows, self._api_root, self._key_fp, now, False)
            ):
                with anyio.CancelScope(shield=True):
                    db = db or await self._connect()
                    await db.run(patiently, insert, rows, self._api_root, self._key_fp, now)
            self.commits += 1
            if db is not None and db.opened.moved(self.path):
                # Deleted or replaced: move the rows (these with them) into the file at
                # the path, and write there next.
                with anyio.CancelScope(shield=True):
                    try:
                        await db.run(patiently, rescue_rows, self.path, db.opened)
                    except sqlite3.Error as exc:
                        why = f"moving rows into {self.path} failed: {exc}"
                        raise QueueStoreError(why) from exc
                self._db = None
                db.retire()
        except Exception as exc:
            commit.error = exc
            self._committed(n, False)
        else:
            self._committed(n, True)
        commit.done.set()

    async def _connect(self) -> AsyncDB:
        async with self._opening:
            if self._db is None:
                db = await open_async_db(self.path)
                await db.run(impatient)  # (see insert())
                self._db = db
            return self._db

    async def close(self) -> None:
        """Close the connection (a later add reopens it)."""
        db, self._db = self._db, None
        if db is not None:
            await db.close()
