"""The bounded in-memory queue between producers on any thread and one delivery actor (layer 3).

Not an anyio memory object stream: that may only be used from its own event loop, and a
sync ``track`` on another thread cannot pay a portal round trip. It appends under a lock
and wakes the actor only on the transitions the actor waits for (first record, full batch).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

from .._core.exceptions import QueueFullError
from .._core.settings import OnFull

__all__ = ["Doorbell", "RecordBuffer", "Waker"]

T = TypeVar("T")
_monotonic = time.monotonic


class Waker:
    """Wakes one task on one event loop from any thread, without losing a wake.

    Level-triggered: a `wake()` while nobody waits makes the next `wait()` return at once,
    so the actor never sleeps through a flush or close that came while it was busy.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._pending = False
        token = anyio.lowlevel.current_token().native_token
        self._thread = threading.get_ident()
        schedule = getattr(token, "call_soon_threadsafe", None)  # asyncio's loop
        if schedule is None:
            schedule = token.run_sync_soon  # type: ignore[attr-defined]  # trio's TrioToken
        self._schedule: Callable[[Callable[[], None]], object] = schedule

    async def wait(self, timeout: float | None = None) -> None:
        """Sleep until woken or ``timeout`` s pass; return at once if a wake is pending."""
        if not self._pending:
            self._event = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._event.wait()
        self._pending = False

    def wake(self) -> None:
        """Wake the waiting task (or the next one to wait); safe from any thread."""
        if threading.get_ident() == self._thread:
            self._wake_here()
        else:
            try:
                self._schedule(self._wake_here)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

    def _wake_here(self) -> None:
        self._pending = True
        self._event.set()


class _WakesAtCount:
    """Producers on any thread add to a count; the one consumer may sleep until it reaches
    a mark, and the producer that reaches it wakes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Set by the consumer before it sleeps; a producer that sees it wakes the consumer.
        self._waker: Waker | None = None
        self._waiting_for = 0  # the count the sleeping consumer waits for

    def _size(self) -> int:
        raise NotImplementedError

    def wait_for(self, waker: Waker, count: int) -> bool:
        """Ask producers to wake ``waker`` once ``count`` have come; False if they already
        have, else call `cancel_wait()` after the wait."""
        with self._lock:
            if self._size() >= count:
                return False
            self._waiting_for = count
            self._waker = waker
            return True

    def cancel_wait(self) -> None:
        """Stop asking producers to wake the consumer."""
        with self._lock:
            self._waker = None


class RecordBuffer(_WakesAtCount, Generic[T]):
    """A bounded FIFO: producers on any thread, one consumer (the actor) on one loop.

    Each record keeps the ``time.monotonic()`` of its arrival: the batch window and the
    health's oldest age are measured from the oldest record actually waiting.
    """

    def __init__(
        self,
        maxsize: int,
        *,
        batch_size: int,
        on_full: OnFull = OnFull.BLOCK,
        block_timeout: float | None = None,
        on_discarded: Callable[[T, str], None] | None = None,
    ) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.batch_size = batch_size
        self.on_full = on_full
        self.block_timeout = block_timeout
        # Records and their arrival times side by side: a (time, record) tuple per record
        # would be one more object for the garbage collector to scan, on every track().
        self._items: deque[T] = deque()
        self._times: deque[float] = deque()
        self._not_full = threading.Condition(self._lock)
        self._sync_waiters = 0
        self._on_discarded = on_discarded
        self._room: anyio.Event | None = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def oldest_at(self) -> float:
        """``time.monotonic()`` when the oldest queued record arrived (0 when empty)."""
        try:
            return self._times[0]
        except IndexError:
            return 0.0

    # -- producers -------------------------------------------------------------------

    def try_put(self, item: T) -> bool:
        """Append unless full; apply ``backpressure`` (drop oldest). False when full."""
        dropped: T | None = None
        with self._lock:
            if self.closed:
                raise QueueFullError("the delivery queue is closed")
            items = self._items
            if len(items) >= self.maxsize:
                if self.on_full is not OnFull.BACKPRESSURE:
                    return False
                dropped = items.popleft()
                self._times.popleft()
            items.append(item)
            self._times.append(_monotonic())
            waker = self._waker
            if waker is not None and len(items) >= self._waiting_for:
                self._waker = None
                waker.wake()
        if dropped is not None and self._on_discarded is not None:
            self._on_discarded(dropped, "backpressure")
        return True

    def put(self, item: T) -> None:
        """Append from a thread that may block (the sync facade), per the on-full policy."""
        if not self.try_put(item):
            self.put_when_full(item)

    def put_when_full(self, item: T) -> None:
        """`put()` once `try_put()` found the queue full: raise or block per policy."""
        if self.on_full is OnFull.RAISE:
            raise QueueFullError(f"the delivery queue is full ({self.maxsize} records)")
        deadline = None if self.block_timeout is None else time.monotonic() + self.block_timeout
        while True:
            with self._not_full:
                self._sync_waiters += 1
                try:
                    while len(self._items) >= self.maxsize and not self.closed:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise QueueFullError(
                                f"the delivery queue stayed full for {self.block_timeout} s"
                            )
                        self._not_full.wait(remaining)
                finally:
                    self._sync_waiters -= 1
            # Room now (or closed: try_put raises). Another producer may take the room
            # first: then wait again, within the same deadline.
            if self.try_put(item):
                return

    async def aput(self, item: T) -> None:
        """Append from a task on the consumer's own loop, per the on-full policy."""
        if self.try_put(item):
            return
        if self.on_full is OnFull.RAISE:
            raise QueueFullError(f"the delivery queue is full ({self.maxsize} records)")
        try:
            with anyio.fail_after(self.block_timeout):
                while not self.try_put(item):
                    if self._room is None:
                        self._room = anyio.Event()
                    await self._room.wait()
        except TimeoutError:
            raise QueueFullError(
                f"the delivery queue stayed full for {self.block_timeout} s"
            ) from None

    # -- the consumer ----------------------------------------------------------------

    def take(self, limit: int) -> list[T]:
        """Remove and return up to ``limit`` records, oldest first."""
        with self._lock:
            items = self._items
            times = self._times
            n = min(limit, len(items))
            if n == len(items):
                batch = list(items)
                items.clear()
                times.clear()
            else:
                # Popped in C (producers keep adding while a full batch waits to be
                # taken, so a take usually leaves some behind).
                nothing = itertools.repeat((), n)
                batch = list(itertools.starmap(items.popleft, nothing))
                deque(itertools.starmap(times.popleft, itertools.repeat((), n)), maxlen=0)
            if n and self._sync_waiters:
                self._not_full.notify_all()
        room = self._room
        if n and room is not None:
            self._room = None
            room.set()
        return batch

    def push_front(self, items: list[T], *, queued_at: float | None = None) -> None:
        """Return records the consumer could not deliver to the head of the queue, with
        ``queued_at`` when they first arrived (``time.monotonic()``); they may briefly
        take the queue past ``maxsize`` (they were in it)."""
        at = time.monotonic() if queued_at is None else queued_at
        with self._lock:
            self._items.extendleft(reversed(items))
            self._times.extendleft(at for _ in items)

    def _size(self) -> int:
        return len(self._items)

    def close(self) -> None:
        """Refuse new records and release blocked producers."""
        with self._lock:
            self.closed = True
            self._not_full.notify_all()
        if self._room is not None:
            self._room.set()

    def clear(self) -> list[T]:
        """Remove and return everything."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._times.clear()
            return items

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's records and locks without touching them
        (a lock a parent thread held at the fork stays held forever here)."""
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._sync_waiters = 0
        self._items = deque()
        self._times = deque()
        self._waker = None
        self._room = None
        self.closed = True


class Doorbell(_WakesAtCount):
    """Counts records written elsewhere (the SQLite file) and wakes the actor, from any thread."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0  # records rung in since the last reset()
        self.first_at = 0.0  # time.monotonic() of the first of them

    def ring(self, n: int = 1) -> None:
        """Note ``n`` new records; wake the actor if it waits for this many."""
        with self._lock:
            if not self.count:
                self.first_at = time.monotonic()
            self.count += n
            waker = self._waker
            if waker is not None and self.count >= self._waiting_for:
                self._waker = None
                waker.wake()

    def _size(self) -> int:
        return self.count

    def reset(self) -> None:
        """Start counting afresh (the actor is about to claim what was rung in)."""
        with self._lock:
            self.count = 0
