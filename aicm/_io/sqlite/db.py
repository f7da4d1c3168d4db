"""Async access to a queue connection: each operation is one call on a worker thread."""

from __future__ import annotations

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

__all__ = ["AsyncDB", "open_async_db"]

_T = TypeVar("_T")


class AsyncDB:
    """One ``sqlite3`` connection for async callers, on asyncio and trio alike.

    Each operation is one whole function (a transaction, a read) run in a worker thread,
    one at a time: one thread hop per operation, however many statements it runs.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self.lock = lock  # the file's write lock in this process
        self._limiter = anyio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(connection, file_lock, *args)`` on a worker thread (one of the operations
        of :mod:`.claims` or :mod:`.writer`)."""
        return await anyio.to_thread.run_sync(
            fn, self._conn, self.lock, *args, limiter=self._limiter
        )

    def _close(self) -> None:
        with FORK_GATE:
            self._conn.close()

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)

    def retire(self) -> None:
        """Stop using the connection without closing it (see :func:`.moves.retire`)."""
        retire(self._conn)


async def open_async_db(path: Path) -> AsyncDB:
    """Open (and if new, create) the queue file at ``path`` for async use."""
    try:
        conn = await anyio.to_thread.run_sync(lambda: connect(path, check_same_thread=False))
    except sqlite3.Error as exc:
        raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
    return AsyncDB(conn, file_lock(path))
