"""Where a queue's records wait: the ``Store`` protocol, and the memory store (layer 3).

A store takes records from producers (any thread, or the engine's loop), hands the actor
its next batch, and settles what the actor reports: acked, dead-lettered, or given back to
be tried again. `MemoryStore` keeps them in a bounded `RecordBuffer`; ``SqliteStore``
(sqlite_store.py) in a SQLite file.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

import attrs

from .._core.jsonplain import dumps
from .._core.models import Endpoint, WireRecord
from .._core.settings import Settings
from .buffer import RecordBuffer, Waker
from .health import DeliveryStats, age_since
from .loss import report_dropped

__all__ = ["Actor", "DeadLetterRecord", "Item", "MemoryStore", "Store"]

logger = logging.getLogger("aicm.delivery")


@attrs.frozen(kw_only=True)
class DeadLetterRecord:
    """A record the service refused for good, and why (memory queues keep these)."""

    endpoint: str
    response_id: str
    body: str
    reason: str
    dead_at: float


class Item:
    """A record the actor holds: compared by identity, since two may carry equal data.
    (A plain slotted class: the memory actor makes one per record, 1000 per batch.)"""

    __slots__ = ("body", "created_at", "endpoint", "queued_at", "record", "response_id", "row_id")

    def __init__(
        self,
        endpoint: Endpoint,
        response_id: str,
        body: str,
        created_at: float,
        row_id: int | None = None,
        record: WireRecord | None = None,
        queued_at: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        self.response_id = response_id
        self.body = body
        self.created_at = created_at  # time.time() when written (persistent) or taken
        self.row_id = row_id  # persistent queues: the row
        self.record = record  # memory queues: the record, to give back
        self.queued_at = queued_at  # memory queues: time.monotonic() it arrived


class Actor(Protocol):
    """What a store sees of the engine whose actor it feeds."""

    settings: Settings
    stats: DeliveryStats
    closing: bool  # a close began
    not_before: float  # time.monotonic() before which the actor sends nothing

    @property
    def waker(self) -> Waker: ...
    def urgent(self) -> bool: ...
    def wake(self) -> None: ...
    def signal_progress(self) -> None: ...
    def note_error(self, exc: BaseException) -> None: ...
    def note_unexpected(self, exc: BaseException) -> None: ...
    def discarded(self, record: WireRecord, reason: str, *, said: bool = False) -> None: ...
    def dead_lettered(self, records: list[tuple[str, str]]) -> None: ...


class Store(Protocol):
    """A queue of records between producers and the delivery actor."""

    #: sender tasks the actor may keep in flight at once
    max_in_flight: ClassVar[int]
    #: the loss line's reason for a record this store dead-letters (see loss.py)
    dead_reason: ClassVar[str]

    async def open(self) -> None:
        """Ready the store for the actor (before it starts)."""

    def put(self, record: WireRecord) -> None:
        """Queue ``record`` from a plain thread; may block per the on-full policy."""

    async def aput(self, record: WireRecord) -> None:
        """Queue ``record`` from a task on the engine's loop."""

    async def next_batch(self) -> list[Item] | None:
        """Wait for the next batch; [] to look again (after a backoff check), None to stop."""

    async def after_batch(self) -> None:
        """A batch the actor took is settled."""

    async def ack(self, items: Sequence[Item]) -> None:
        """``items`` were delivered."""

    async def dead_letter(self, pairs: Sequence[tuple[Item, str]], now: float) -> None:
        """``items`` were refused for good, each for its reason, at ``now`` (time.time())."""

    def expired(self, items: Sequence[Item], now: float) -> tuple[list[Item], list[Item]]:
        """``items`` split into those too old to try again, and the rest."""

    async def give_back(self, items: Sequence[Item], delay: float, error: str) -> None:
        """Return ``items`` to the queue, due again in ``delay`` s."""

    async def mark(self) -> int:
        """A mark of the queue's tail now (what a flush waits for)."""

    async def hurry(self, mark: int) -> None:
        """Make everything up to ``mark`` due now."""

    async def left(self, mark: int, held: int) -> int:
        """Records up to ``mark`` not yet settled; ``held`` are those the actor holds."""

    async def left_idle(self) -> int:
        """Records pending while no actor runs."""

    async def close(self) -> int:
        """Stop taking records and release the store; how many were left undelivered."""

    def forget_after_fork(self) -> list[object]:
        """In a forked child: drop what the parent's store holds without touching it; the
        handles dropped are returned, for the caller to keep referenced (never closed)."""

    def queued(self, held: int) -> tuple[int, float | None, int]:
        """Records waiting (not ``held``), the oldest one's age (s), and the capacity (0: none)."""

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Dead letters kept in memory."""


class MemoryStore:
    """A bounded in-memory queue; records dead-lettered are kept in memory too."""

    max_in_flight: ClassVar[int] = 2
    dead_reason: ClassVar[str] = "dead_letter"

    def __init__(
        self,
        actor: Actor,
        settings: Settings,
        *,
        batch_limit: int,
        on_discarded: Callable[[WireRecord, str], None],
        dead_letter_capacity: int,
    ) -> None:
        self._actor = actor
        self._batch_interval = settings.batch_interval
        self._limit = batch_limit
        self.buffer: RecordBuffer[WireRecord] = RecordBuffer(
            settings.queue_size,
            batch_size=batch_limit,
            on_full=settings.delivery_on_full,
            block_timeout=settings.block_timeout,
            on_discarded=on_discarded,
        )
        self._dead: deque[DeadLetterRecord] = deque(maxlen=dead_letter_capacity)

    async def open(self) -> None:
        pass

    def put(self, record: WireRecord) -> None:
        buffer = self.buffer
        if not buffer.try_put(record):
            buffer.put_when_full(record)

    async def aput(self, record: WireRecord) -> None:
        await self.buffer.aput(record)

    async def next_batch(self) -> list[Item] | None:
        batch = await self._wait_for_batch()
        if batch is None:
            return None
        queued_at, records = batch
        if time.monotonic() < self._actor.not_before:
            # A request in flight failed meanwhile: wait out its backoff first.
            self.buffer.push_front(records, queued_at=queued_at)
            return []
        return self._encode(records, queued_at)

    async def _wait_for_batch(self) -> tuple[float, list[WireRecord]] | None:
        """The next batch and when its oldest record arrived; None when closing and empty."""
        actor = self._actor
        buffer = self.buffer
        waker = actor.waker
        limit = self._limit
        # Right after a batch, records likely keep coming: wait one batch window for a
        # full batch rather than be woken by the first record (a cross-thread wake for
        # the sync facade). A record arriving meanwhile still goes within its window.
        window = True
        while True:
            n = len(buffer)
            if n >= limit or (n and actor.urgent()):
                return buffer.oldest_at, buffer.take(limit)
            if n == 0:
                if actor.closing:
                    return None
                actor.signal_progress()
                if buffer.wait_for(waker, limit if window else 1):
                    try:
                        # idle after a quiet window: no timer, no CPU
                        await waker.wait(self._batch_interval if window else None)
                    finally:
                        buffer.cancel_wait()
                window = False
                continue
            remaining = buffer.oldest_at + self._batch_interval - time.monotonic()
            if remaining <= 0:
                return buffer.oldest_at, buffer.take(limit)
            if buffer.wait_for(waker, limit):
                try:
                    await waker.wait(remaining)
                finally:
                    buffer.cancel_wait()

    def _encode(self, records: list[WireRecord], queued_at: float) -> list[Item]:
        now = time.time()
        items: list[Item] = []
        append = items.append
        for record in records:
            try:
                body = dumps(record.wire())
            except Exception as exc:  # validated when built: only a bug gets here
                self._actor.note_unexpected(exc)
                self._actor.discarded(record, "unencodable")
                continue
            append(Item(record.endpoint, record.response_id, body, now, None, record, queued_at))
        return items

    async def after_batch(self) -> None:
        return None

    async def ack(self, items: Sequence[Item]) -> None:
        return None

    async def dead_letter(self, pairs: Sequence[tuple[Item, str]], now: float) -> None:
        for item, why in pairs:
            self._dead.append(
                DeadLetterRecord(
                    endpoint=item.endpoint.value,
                    response_id=item.response_id,
                    body=item.body,
                    reason=why,
                    dead_at=now,
                )
            )

    def expired(self, items: Sequence[Item], now: float) -> tuple[list[Item], list[Item]]:
        return [], list(items)  # a memory queue keeps no max_age: it does not outlive us

    async def give_back(self, items: Sequence[Item], delay: float, error: str) -> None:
        self.buffer.push_front(
            [i.record for i in items if i.record is not None],
            queued_at=min(i.queued_at for i in items) or None,
        )
        self._actor.wake()

    async def mark(self) -> int:
        return 0

    async def hurry(self, mark: int) -> None:
        return None

    async def left(self, mark: int, held: int) -> int:
        return len(self.buffer) + held

    async def left_idle(self) -> int:
        return len(self.buffer)

    async def close(self) -> int:
        self.buffer.close()  # first: a record put now raises instead of being lost
        lost = self.buffer.clear()
        if lost:
            report_dropped(len(lost), "closed")
            for record in lost:
                self._actor.discarded(record, "closed", said=True)
        return len(lost)

    def forget_after_fork(self) -> list[object]:
        self.buffer.forget_after_fork()
        return []

    def queued(self, held: int) -> tuple[int, float | None, int]:
        return len(self.buffer), age_since(self.buffer.oldest_at), self.buffer.maxsize

    def dead_letters(self) -> list[DeadLetterRecord]:
        return list(self._dead)
