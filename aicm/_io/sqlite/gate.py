"""Process-wide guards of queue connections: the fork gate and one write lock per file.

Every use of a queue connection passes through `FORK_GATE`, so that a ``fork()``
never lands inside a transaction (see `ForkGate`). Every write transaction also
holds its file's lock in this process (`file_lock()`), so that this process's
connections queue for each other on a lock instead of in SQLite's busy handler, which
sleeps.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..._core.forks import after_fork_in_child

__all__ = ["FORK_GATE", "ForkGate", "file_lock"]

# How long a fork() waits for the SQLite operations under way in other threads to end.
FORK_WAIT_SECONDS = 5.0


class ForkGate:
    """Keeps ``fork()`` out of SQLite transactions: a fork waits until none is under way.

    SQLite's unix VFS keeps, per process, an in-memory record of the locks its connections
    hold on each file. A fork copies that record but not the fcntl locks themselves, so a
    child forked while this process held a write lock sees it held by a sibling connection
    that does not exist, and its own connection stays "database is locked" for good.

    Every operation on a connection (a transaction from its first statement to its commit
    or rollback, a read, an open, a close) runs inside the gate, on the thread that runs
    the operation (for async callers mostly a worker thread; an event loop enters it only
    for a small commit that takes no lock it would wait for), never nested. An
    ``os.register_at_fork`` hook closes the gate, waits (at most ``FORK_WAIT_SECONDS``)
    until no operation is under way, and reopens it after the fork;
    the child starts with a fresh gate.
    """

    def __init__(self) -> None:
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

    def after_fork_in_child(self) -> None:
        # Only the forking thread lives on, and it was inside no operation: a fresh lock
        # (another thread may have held the old one) and nothing under way.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._reopened = threading.Condition(self._lock)
        self._forks = 0
        self._active = 0
        self._forker = None


FORK_GATE = ForkGate()


# One lock per queue file (by real path), held by every write transaction of this process
# on it. Two connections of one process on one file (the sync facade's writer and its
# actor's, say) would otherwise meet in SQLite's busy handler, which sleeps 1, 2, 5, 10 ms
# ... between tries: an eternity next to a 30 us commit. On the lock, the second writer
# starts the moment the first commits. Other processes still wait in SQLite. Taken inside
# the fork gate, never the other way round: a thread waiting for the lock then counts as
# under way, and whoever holds the lock finishes before a fork.
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
