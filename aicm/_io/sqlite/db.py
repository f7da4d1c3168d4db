"""Queue connections: async access (each operation one call on the connection's thread),
and a queue file deleted or replaced under a running process (its rows follow the path).

A connection keeps using the file it opened: once that file is deleted or replaced, rows
committed through it go to an inode no later process can find. So each holder notes the
file's identity when it opens it, and looks again after each group commit (the writers)
and before each claim (the actor); when the path names another file, or none, the rows
still readable through the old connection move into the file at the path (created if
missing), and the holder reopens there.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..._core.exceptions import QueueStoreError
from .schema import FORK_GATE, LAST_ID, connect, file_lock, immediate, open_in_gate, rollback

_T = TypeVar("_T")

logger = logging.getLogger("aicm.delivery")

FileIdentity = tuple[int, int]  # (st_dev, st_ino)


def file_identity(path: Path | str) -> FileIdentity | None:
    """The identity of the file at ``path`` now, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class OpenedFile:
    """The identity of the file a connection opened, and of its shared-memory file: when
    only the database is deleted, its WAL and shared memory stay, still in use by the old
    connections, and a new database at the path must not start with them."""

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


# Connections to a deleted or replaced queue file, kept open for good: closing the last
# connection to a WAL file deletes, by name, the WAL and shared memory at its path, by
# now the new file's. One reference nobody holds keeps each from being closed at exit.
_RETIRED: list[object] = []


def retire(conn: sqlite3.Connection) -> None:
    """Stop using ``conn`` without ever closing it (see above)."""
    _RETIRED.append(conn)
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
    except (ImportError, AttributeError):
        pass  # not CPython: the list's reference keeps it open while the process runs


# As _MOVED_ROW takes them, but the id: ``state = 1`` is both the state and the attempts
# (a dead row stays dead, tried once; a pending one arrives fresh). A created_at that is
# not a time (another program wrote the row) makes it due now.
_ROWS_TO_MOVE = (
    "SELECT endpoint, response_id, body, format, api_root, key_fp, state = 1, state = 1,"
    " created_at, CASE WHEN typeof(created_at) IN ('integer', 'real') THEN created_at"
    " ELSE ? END, last_error, dead_at FROM records ORDER BY id"
)
_MOVED_ROW = (
    "INSERT INTO records (id, endpoint, response_id, body, format, api_root, key_fp, state,"
    " attempts, created_at, next_attempt_at, last_error, dead_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _move_rows(old: sqlite3.Connection, path: Path, opened: OpenedFile) -> int:
    """Move every row readable through ``old`` into the queue file at ``path``; how many.

    The old file's write lock is taken first: processes sharing it move its rows one at
    a time (the second finds none left). Pending rows arrive fresh and unleased (one in
    flight is sent again: the service counts a repeated response_id once); dead rows stay
    dead. Raises QueueStoreError (rows left where they were) when the file at ``path``
    cannot be created or is not a queue.
    """
    try:
        old.execute("BEGIN IMMEDIATE")
        rows = old.execute(_ROWS_TO_MOVE, (time.time(),)).fetchall()
    except sqlite3.Error as exc:
        rollback(old)
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
        new = open_in_gate(path, check_same_thread=True)
        try:
            immediate(new, lambda: new.executemany(_MOVED_ROW, _numbered(new, rows)))
        finally:
            new.close()
        old.execute("DELETE FROM records")
        old.commit()
    except BaseException as exc:
        rollback(old)
        if not isinstance(exc, (sqlite3.Error, QueueStoreError)):
            raise
        raise QueueStoreError(
            f"the queue file {path} was deleted or replaced while in use, and its rows could"
            f" not be moved into a file there ({exc}); they stay in the deleted file, which"
            " this process alone still reads and delivers from"
        ) from exc
    return len(rows)


def _numbered(conn: sqlite3.Connection, rows: list[Any]) -> list[tuple[Any, ...]]:
    """``rows`` with the ids they take in ``conn``'s file, in order."""
    (last,) = conn.execute(LAST_ID).fetchone()
    return [(i, *row) for i, row in enumerate(rows, start=int(last) + 1)]


def rescue_rows(
    conn: sqlite3.Connection, lock: threading.Lock, path: Path, opened: OpenedFile
) -> int:
    """`_move_rows()` as one operation on ``conn`` (as `AsyncDB.run` calls it); 0 when the
    path still names the opened file."""
    with FORK_GATE, lock:
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


def on_asyncio() -> bool:
    """Whether the running event loop is asyncio's."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _settle(future: asyncio.Future[Any], failed: bool, value: Any) -> None:
    if future.done():  # cancelled: the caller is gone; the operation ran all the same
        return
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)


_Job = tuple[asyncio.Future[Any], Callable[[], Any]]


class AsyncDB:
    """One ``sqlite3`` connection for async callers, one operation at a time.

    Each operation is one whole function (a transaction, a read) run off the event loop:
    one thread hop however many statements it runs. On trio, anyio's worker threads run
    them. On asyncio the connection has a thread of its own, fed by a queue, answering
    with ``call_soon_threadsafe`` (``run_in_executor`` measured twice as slow per
    operation, anyio's worker threads slower still).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.lock = file_lock(path)  # the file's write lock in this process
        self.opened = OpenedFile(path)
        self._limiter = anyio.CapacityLimiter(1)
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._stopped = False
        if on_asyncio():
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=self._serve, args=(self._jobs,), name="aicm-queue", daemon=True
            ).start()

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
        while (job := jobs.get()) is not None:
            future, call = job
            value: Any
            try:
                value, failed = call(), False
            except BaseException as exc:
                value, failed = exc, True
            try:
                future.get_loop().call_soon_threadsafe(_settle, future, failed, value)
            except RuntimeError:
                pass  # its loop is closed: nobody waits for the answer any more

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(connection, file_lock, *args)`` on the connection's thread (one of the
        operations of `.claims` or `.writer`)."""
        if self._jobs is None:
            return await anyio.to_thread.run_sync(
                fn, self._conn, self.lock, *args, limiter=self._limiter
            )
        if self._stopped:  # (no thread would ever answer)
            raise sqlite3.ProgrammingError("the queue connection is closed")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, functools.partial(fn, self._conn, self.lock, *args)))
        return await future

    def run_now(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(connection, file_lock, *args)`` on the calling thread: only for one that
        gives up rather than wait (``insert(..., wait=False)``), never while `run()` runs."""
        return fn(self._conn, self.lock, *args)

    def _close(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        del lock
        with FORK_GATE:
            conn.close()

    async def close(self) -> None:
        try:
            await self.run(self._close)
        finally:
            self._stop()

    def retire(self) -> None:
        """Stop using the connection without closing it (see `retire()`)."""
        retire(self._conn)
        self._stop()

    def _stop(self) -> None:
        """End the connection's thread once the jobs before this call are done."""
        if self._jobs is not None:
            self._stopped = True
            self._jobs.put(None)


async def open_async_db(path: Path) -> AsyncDB:
    """Open (and if new, create) the queue file at ``path`` for async use."""
    try:
        conn = await anyio.to_thread.run_sync(lambda: connect(path, check_same_thread=False))
    except sqlite3.Error as exc:
        raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
    return AsyncDB(conn, path)
