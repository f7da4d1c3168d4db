"""Async access to a queue connection: each operation is one call on the connection's thread."""

from __future__ import annotations

import asyncio
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..._core.exceptions import QueueStoreError
from .gate import FORK_GATE, file_lock
from .moves import retire
from .schema import connect

__all__ = ["AsyncDB", "on_asyncio", "open_async_db"]

_T = TypeVar("_T")


class _ConnectionThread:
    """A thread of one connection's own, serving asyncio callers.

    One hop each way per operation: a job on a queue, and the result handed back with
    ``call_soon_threadsafe``. ``loop.run_in_executor`` on a one-worker executor measured
    about twice as slow per operation (it chains a concurrent future to an asyncio one),
    and anyio's worker threads slower still.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._stopped = False
        threading.Thread(target=self._serve, name="aicm-queue", daemon=True).start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
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

    async def run(self, call: Callable[[], _T]) -> _T:
        if self._stopped:  # (no thread would ever answer)
            raise sqlite3.ProgrammingError("the queue connection is closed")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, call))
        return await future

    def stop(self) -> None:
        """End the thread once the jobs before this call are done."""
        self._stopped = True
        self._jobs.put(None)


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


class AsyncDB:
    """One ``sqlite3`` connection for async callers, one operation at a time.

    Each operation is one whole function (a transaction, a read) run off the event loop:
    one thread hop however many statements it runs. On asyncio the connection has a
    thread of its own; on trio, anyio's worker threads, one call at a time.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self.lock = lock  # the file's write lock in this process
        self._thread: _ConnectionThread | None = None
        self._limiter = anyio.CapacityLimiter(1)
        if on_asyncio():
            self._thread = _ConnectionThread()

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(connection, file_lock, *args)`` on the connection's thread (one of the
        operations of `.claims` or `.writer`)."""
        if self._thread is not None:
            return await self._thread.run(functools.partial(fn, self._conn, self.lock, *args))
        return await anyio.to_thread.run_sync(
            fn, self._conn, self.lock, *args, limiter=self._limiter
        )

    def run_now(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(connection, file_lock, *args)`` on the calling thread: only for an
        operation that gives up rather than wait (``writer.insert(..., wait=False)``), and never
        while `run()` has one under way."""
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
        """Stop using the connection without closing it (see `.moves.retire()`)."""
        retire(self._conn)
        self._stop()

    def _stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()


async def open_async_db(path: Path) -> AsyncDB:
    """Open (and if new, create) the queue file at ``path`` for async use."""
    try:
        conn = await anyio.to_thread.run_sync(lambda: connect(path, check_same_thread=False))
    except sqlite3.Error as exc:
        raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
    return AsyncDB(conn, file_lock(path))
