"""The delivery engine: queue records, and an actor that batches, sends, retries, acks (layer 3).

One engine serves one tracker. ``IMMEDIATE`` sends in the caller's task. ``MEM_QUEUE``
keeps records in a bounded :class:`RecordBuffer`; ``PERSISTENT_QUEUE`` commits them to a
SQLite file first. Either way one actor task, started in a task group the owner supplies,
drains the queue: it waits for a full batch or ``batch_interval``, sends, and sorts the
answer into delivered, retry later, auth pause, or dead letter. It never dies of an error.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs

from .._core.exceptions import (
    AicmError,
    APIStatusError,
    AuthenticationError,
    ClientRequestError,
    ClosedError,
    DeliveryError,
    MissingApiKeyError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from .._core.jsonplain import dumps
from .._core.models import Endpoint, RecordResult, TrackResult, WireRecord
from .._core.policy import RetryPolicy
from .._core.settings import DeliveryType, Settings
from .._io.http import MAX_RECORDS_PER_REQUEST, AsyncCostManagerClient
from .._io.sqlite_queue import QueueRow, SqliteQueue, SyncWriter
from .buffer import Doorbell, RecordBuffer, Waker
from .health import DeliveryHealth, DeliveryStats, age_since, register_engine, unregister_engine

__all__ = ["DeadLetterRecord", "DeliveryEngine"]

logger = logging.getLogger("aicm.delivery")

_RETRYABLE = (TransportError, ServerError, RateLimitedError)
_IMMEDIATE_MAX_DELAY = 5.0


@attrs.frozen(kw_only=True)
class DeadLetterRecord:
    """A record the service refused for good, and why (memory queues keep these)."""

    endpoint: str
    response_id: str
    body: str
    reason: str
    dead_at: float


@attrs.frozen(kw_only=True)
class _Item:
    endpoint: Endpoint
    response_id: str
    body: str
    created_at: float
    row_id: int | None = None
    record: WireRecord | None = None


def _encode(record: WireRecord) -> _Item:
    return _Item(
        endpoint=record.endpoint,
        response_id=record.response_id,
        body=dumps(record.wire()),
        created_at=time.time(),
        record=record,
    )


def _reason(result: RecordResult) -> str:
    if result.errors:
        return f"{result.status}: " + "; ".join(result.errors)
    return result.status or "rejected"


class DeliveryEngine:
    """Queues and delivers one tracker's records (see the module docstring)."""

    def __init__(
        self,
        client: AsyncCostManagerClient,
        settings: Settings,
        *,
        delivery_type: DeliveryType,
        on_discard: Callable[[WireRecord], object] | None = None,
        dead_letter_capacity: int = 10_000,
    ) -> None:
        self.client = client
        self.settings = settings
        self.delivery_type = delivery_type
        self.stats = DeliveryStats()
        self._policy = RetryPolicy(base=settings.backoff_base, cap=settings.backoff_cap)
        self._rng = random.Random()
        self._user_on_discard = on_discard
        self._dead: deque[DeadLetterRecord] = deque(maxlen=dead_letter_capacity)
        self._alive = False
        self._started = False
        self._closed = False
        self._closing = False
        self._deadline = float("inf")
        self._flushes = 0
        self._failures = 0
        self._not_before = 0.0
        self._in_hand = 0
        self._waker: Waker | None = None
        self._progress = anyio.Event()
        self._done: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self.buffer: RecordBuffer[WireRecord] | None = None
        self._doorbell: Doorbell | None = None
        self._writer: SyncWriter | None = None
        self.queue: SqliteQueue | None = None
        self._backlog = 0
        self._oldest_claimed = 0.0
        self._held: list[_Item] = []
        if delivery_type is DeliveryType.MEM_QUEUE:
            self.buffer = RecordBuffer(
                settings.queue_size,
                batch_size=settings.max_batch_size,
                on_full=settings.delivery_on_full,
                block_timeout=settings.block_timeout,
                on_discarded=self._discarded,
            )
        elif delivery_type is DeliveryType.PERSISTENT_QUEUE:
            self._doorbell = Doorbell()
            self._writer = SyncWriter(
                self.db_path, api_root=settings.api_root, key_fp=self._key_fp()
            )
        register_engine(self)

    # -- identity ----------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        """The SQLite queue file (persistent queues)."""
        return self.settings.resolved_db_path

    def _key_fp(self) -> str:
        return self.settings.key_fingerprint

    def __repr__(self) -> str:
        return f"DeliveryEngine({self.delivery_type.value}, api_root={self.settings.api_root!r})"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Open the queue and start the actor in ``task_group`` (nothing to do for IMMEDIATE)."""
        if self._started:
            return
        self._started = True
        if self.delivery_type is DeliveryType.IMMEDIATE:
            self._alive = True
            return
        if self.delivery_type is DeliveryType.PERSISTENT_QUEUE:
            self.settings.require_api_key()
            self.queue = await SqliteQueue.open(
                self.db_path, api_root=self.settings.api_root, key_fp=self._key_fp()
            )
            self._backlog = await self.queue.pending_upto(await self.queue.max_id())
        await task_group.start(self._run)

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._waker = Waker()
        self._done = anyio.Event()
        with anyio.CancelScope() as scope:
            self._scope = scope
            self._alive = True
            task_status.started()
            try:
                if self.buffer is not None:
                    await self._run_memory(self.buffer)
                else:
                    await self._run_persistent()
            finally:
                self._alive = False
                await self._give_back_held()
                self._signal_progress()
                self._done.set()

    @property
    def running(self) -> bool:
        """True while the actor is alive (always True for IMMEDIATE once started)."""
        return self._alive

    def _wake(self) -> None:
        if self._waker is not None:
            self._waker.wake()

    def _signal_progress(self) -> None:
        event, self._progress = self._progress, anyio.Event()
        event.set()

    def _urgent(self) -> bool:
        return self._closing or self._flushes > 0

    def _past_deadline(self) -> bool:
        return self._closing and time.monotonic() >= self._deadline

    # -- producers ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise ClosedError("this tracker is closed; create a new one to track more")

    def put(self, record: WireRecord) -> None:
        """Queue ``record`` from a plain thread (the sync facade); blocks per the on-full policy."""
        self._check_open()
        if self.buffer is not None:
            self.buffer.put(record)
        elif self._writer is not None and self._doorbell is not None:
            self._writer.write([QueueRow(**self._row_fields(record))])
            self._backlog += 1
            self._doorbell.ring()
        else:
            raise AicmError("IMMEDIATE delivery sends in the caller; use send_now()")
        if logger.isEnabledFor(logging.DEBUG):
            self._log_enqueue(record)

    async def aput(self, record: WireRecord) -> None:
        """Queue ``record`` from a task on the engine's own event loop."""
        self._check_open()
        if self.buffer is not None:
            await self.buffer.aput(record)
        elif self.queue is not None and self._doorbell is not None:
            await self.queue.enqueue([QueueRow(**self._row_fields(record))])
            self._backlog += 1
            self._doorbell.ring()
        elif self._writer is not None:
            raise AicmError("this tracker has not been started; use `async with`")
        else:
            raise AicmError("IMMEDIATE delivery sends in the caller; use send_now()")
        if logger.isEnabledFor(logging.DEBUG):
            self._log_enqueue(record)

    @staticmethod
    def _row_fields(record: WireRecord) -> dict[str, str]:
        return {
            "endpoint": record.endpoint.value,
            "response_id": record.response_id,
            "body": dumps(record.wire()),
        }

    def _log_enqueue(self, record: WireRecord) -> None:
        if self.settings.log_bodies:
            logger.debug("enqueued %s %s", record.response_id, dumps(record.wire()))
        else:
            logger.debug("enqueued %s", record.response_id)

    def _discarded(self, record: WireRecord, reason: str) -> None:
        self.stats.discard(reason)
        logger.warning("dropped record %s (%s)", record.response_id, reason)
        if self._user_on_discard is not None:
            try:
                self._user_on_discard(record)
            except Exception:
                logger.exception("on_discard callback raised; ignored")

    async def send_now(self, records: Sequence[WireRecord]) -> TrackResult:
        """Send ``records`` now (IMMEDIATE): up to ``max_attempts`` on retryable failures."""
        self._check_open()
        results: list[RecordResult] = []
        limits: dict[str, Any] = {}
        for start in range(0, len(records), MAX_RECORDS_PER_REQUEST):
            chunk = records[start : start + MAX_RECORDS_PER_REQUEST]
            answer = await self._send_with_attempts(chunk)
            results.extend(answer.results)
            limits.update(answer.triggered_limits)
        return TrackResult(results=tuple(results), triggered_limits=limits)

    async def _send_with_attempts(self, records: Sequence[WireRecord]) -> TrackResult:
        endpoint = records[0].endpoint
        encoded = [dumps(r.wire()) for r in records]
        attempts = self.settings.max_attempts
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            self.stats.in_flight += len(encoded)
            try:
                result = await self.client.send_encoded(endpoint, encoded)
            except _RETRYABLE as exc:
                last = exc
                self._note_error(exc)
                if attempt < attempts:
                    self.stats.retried += len(encoded)
                    retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
                    delay = self._policy.delay(attempt, retry_after=retry_after, rng=self._rng)
                    logger.info("attempt %d failed (%s); retrying in %.2fs", attempt, exc, delay)
                    await anyio.sleep(min(delay, _IMMEDIATE_MAX_DELAY))
                continue
            except AicmError as exc:
                self._note_error(exc)
                self.stats.failed += len(encoded)
                raise
            finally:
                self.stats.in_flight -= len(encoded)
            ok = sum(1 for r in result.results if r.ok) if result.results else len(encoded)
            self.stats.sent += ok
            self.stats.failed += len(encoded) - ok
            return result
        self.stats.failed += len(encoded)
        raise DeliveryError(
            f"could not deliver {len(encoded)} record(s) after {attempts} attempts: {last}",
            pending=len(encoded),
        ) from last

    # -- the memory actor ------------------------------------------------------------------

    async def _run_memory(self, buffer: RecordBuffer[WireRecord]) -> None:
        while True:
            if not await self._respect_backoff():
                return
            batch = await self._next_memory_batch(buffer)
            if batch is None:
                return
            items: list[_Item] = []
            for record in batch:
                try:
                    items.append(_encode(record))
                except Exception as exc:  # validated at build; this is a bug guard
                    self._note_unexpected(exc)
            self._held = items
            self._in_hand = len(items)
            try:
                await self._deliver(items)
            finally:
                self._held = []
                self._in_hand = 0
            self._signal_progress()

    async def _next_memory_batch(self, buffer: RecordBuffer[WireRecord]) -> list[WireRecord] | None:
        waker = self._waker
        assert waker is not None
        limit = self.settings.max_batch_size
        while True:
            n = len(buffer)
            if n >= limit or (n and self._urgent()):
                return buffer.take(limit)
            if n == 0:
                if self._closing:
                    return None
                self._signal_progress()
                event = buffer.wait_for(waker, 1)
                if event is not None:
                    await event.wait()  # idle: no timer, no CPU
                    buffer.cancel_wait()
                continue
            remaining = buffer.oldest_at + self.settings.batch_interval - time.monotonic()
            if remaining <= 0:
                return buffer.take(limit)
            event = buffer.wait_for(waker, limit)
            if event is not None:
                with anyio.move_on_after(remaining):
                    await event.wait()
                buffer.cancel_wait()

    # -- the persistent actor -----------------------------------------------------------

    async def _run_persistent(self) -> None:
        queue = self.queue
        doorbell = self._doorbell
        assert queue is not None
        assert doorbell is not None
        limit = self.settings.max_batch_size
        while True:
            if not await self._respect_backoff():
                return
            doorbell.reset()
            try:
                rows = await queue.claim(limit, lease_seconds=self.settings.lease_seconds)
            except AicmError as exc:
                self._note_unexpected(exc)
                await self._sleep_unless_closing(self._policy.delay(self._failures + 1))
                continue
            if rows:
                items = [
                    _Item(
                        endpoint=Endpoint(r.endpoint),
                        response_id=r.response_id,
                        body=r.body,
                        created_at=r.created_at,
                        row_id=r.id,
                    )
                    for r in rows
                ]
                self._oldest_claimed = rows[0].created_at
                self._held = items
                self._in_hand = len(items)
                try:
                    await self._deliver(items)
                finally:
                    self._held = []
                    self._in_hand = 0
                self._signal_progress()
                if len(rows) == limit:
                    continue
            if self._closing:
                return
            self._signal_progress()
            await self._wait_persistent(queue, doorbell)

    async def _wait_persistent(self, queue: SqliteQueue, doorbell: Doorbell) -> None:
        waker = self._waker
        assert waker is not None
        if doorbell.count == 0:
            due = await queue.next_due()
            idle = self.settings.lease_seconds
            timeout = idle if due is None else min(max(due - time.time(), 0.0), idle)
            if timeout <= 0:
                return
            event = doorbell.wait_for(waker, 1)
            if event is not None:
                with anyio.move_on_after(timeout):
                    await event.wait()
                doorbell.cancel_wait()
            if doorbell.count == 0:
                return
        remaining = doorbell.first_at + self.settings.batch_interval - time.monotonic()
        limit = self.settings.max_batch_size
        if self._urgent() or remaining <= 0 or doorbell.count >= limit:
            return
        event = doorbell.wait_for(waker, limit)
        if event is not None:
            with anyio.move_on_after(remaining):
                await event.wait()
            doorbell.cancel_wait()

    # -- sending and sorting the answer ----------------------------------------------------

    async def _respect_backoff(self) -> bool:
        """Sleep out a backoff after a failure; False when a close deadline ends the actor."""
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await self._sleep_unless_closing(wait)
        return not self._past_deadline()

    async def _sleep_unless_closing(self, seconds: float) -> None:
        if self._closing:
            seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
        await anyio.sleep(seconds)

    async def _deliver(self, items: list[_Item]) -> None:
        groups: dict[Endpoint, list[_Item]] = {}
        for item in items:
            groups.setdefault(item.endpoint, []).append(item)
        for endpoint, group in groups.items():
            try:
                await self._deliver_group(endpoint, group)
            except Exception as exc:
                # The actor must never die: whatever went wrong, keep the records for later.
                self._note_unexpected(exc)
                await self._retry_later(group, self._next_delay(None), f"internal error: {exc}")

    async def _deliver_group(self, endpoint: Endpoint, items: list[_Item]) -> None:
        pending = items
        while pending:
            if self._past_deadline():
                return  # left in hand: _run's cleanup gives them back
            self.stats.in_flight = len(pending)
            if self.settings.log_bodies and logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "sending %d record(s) to %s: %s",
                    len(pending),
                    endpoint.value,
                    [i.body for i in pending],
                )
            else:
                logger.debug("sending %d record(s) to %s", len(pending), endpoint.value)
            try:
                result = await self.client.send_encoded(endpoint, [i.body for i in pending])
            except (AuthenticationError, MissingApiKeyError) as exc:
                self._note_error(exc)
                self.stats.auth_paused = True
                logger.error("delivery paused: %s; records are kept", exc)
                await self._retry_later(pending, self.settings.auth_retry_interval, str(exc))
                return
            except _RETRYABLE as exc:
                self._note_error(exc)
                self.stats.retried += len(pending)
                retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
                delay = self._next_delay(retry_after)
                logger.warning(
                    "delivery of %d record(s) failed (%s); retrying in %.2fs",
                    len(pending),
                    exc,
                    delay,
                )
                await self._retry_later(pending, delay, str(exc))
                return
            except ClientRequestError as exc:
                self._note_error(exc)
                pending = await self._permanent(endpoint, pending, exc)
                continue
            finally:
                self.stats.in_flight = 0
            self.stats.auth_paused = False
            self._failures = 0
            self._not_before = 0.0
            await self._accepted(pending, result)
            return

    def _next_delay(self, retry_after: float | None) -> float:
        self._failures += 1
        return self._policy.delay(self._failures, retry_after=retry_after, rng=self._rng)

    async def _permanent(
        self, endpoint: Endpoint, pending: list[_Item], exc: ClientRequestError
    ) -> list[_Item]:
        """Dead-letter what the service named; retry the rest alone. Returns what to retry."""
        named: dict[str, RecordResult] = {}
        for r in exc.results:
            if isinstance(r, RecordResult) and not r.ok:
                named[r.response_id] = r
        bad = [i for i in pending if i.response_id in named]
        if bad:
            await self._dead_letter([(i, _reason(named[i.response_id])) for i in bad])
            return [i for i in pending if i.response_id not in named]
        why = f"HTTP {exc.status_code}: {exc.body[:500]}"
        if len(pending) == 1:
            await self._dead_letter([(pending[0], why)])
            return []
        # The service named no record: halve the batch until the bad ones stand alone.
        mid = len(pending) // 2
        await self._deliver_group(endpoint, pending[:mid])
        return pending[mid:]

    async def _accepted(self, items: list[_Item], result: TrackResult) -> None:
        verdicts = {r.response_id: r for r in result.results}
        dead: list[tuple[_Item, str]] = []
        done: list[_Item] = []
        for item in items:
            verdict = verdicts.get(item.response_id)
            if verdict is not None and not verdict.ok:
                dead.append((item, _reason(verdict)))
            else:
                done.append(item)
        if self.queue is not None:
            await self.queue.ack([i.row_id for i in done if i.row_id is not None])
            self._backlog = max(0, self._backlog - len(done))
        self.stats.sent += len(done)
        logger.info("delivered %d record(s)", len(done))
        if dead:
            await self._dead_letter(dead)

    async def _dead_letter(self, pairs: list[tuple[_Item, str]]) -> None:
        now = time.time()
        if self.queue is not None:
            await self.queue.kill([(i.row_id, why) for i, why in pairs if i.row_id is not None])
            self._backlog = max(0, self._backlog - len(pairs))
        else:
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
        self.stats.dead_lettered += len(pairs)
        self.stats.failed += len(pairs)
        for item, why in pairs:
            logger.error("record %s dead-lettered: %s", item.response_id, why)

    async def _retry_later(self, items: list[_Item], delay: float, error: str) -> None:
        self._not_before = time.monotonic() + delay
        await self._give_back(items, delay, error)

    async def _give_back(self, items: list[_Item], delay: float, error: str) -> None:
        if not items:
            return
        if self.queue is not None:
            max_age = self.settings.max_age
            keep = items
            if max_age is not None:
                cutoff = time.time() - max_age
                old = [i for i in items if i.created_at < cutoff]
                if old:
                    await self._dead_letter(
                        [(i, f"older than max_age; last error: {error}") for i in old]
                    )
                    keep = [i for i in items if i.created_at >= cutoff]
            await self.queue.release(
                [i.row_id for i in keep if i.row_id is not None], delay=delay, error=error
            )
        elif self.buffer is not None:
            self.buffer.push_front([i.record for i in items if i.record is not None])

    async def _give_back_held(self) -> None:
        held, self._held = self._held, []
        if held:
            with anyio.CancelScope(shield=True):
                try:
                    await self._give_back(held, 0.0, "released at close")
                except Exception as exc:
                    self._note_unexpected(exc)

    def _note_error(self, exc: BaseException) -> None:
        self.stats.last_error = f"{type(exc).__name__}: {exc}"

    def _note_unexpected(self, exc: BaseException) -> None:
        self.stats.unexpected_errors += 1
        self._note_error(exc)
        logger.error("unexpected error in the delivery actor (it carries on)", exc_info=exc)

    # -- flush and close ------------------------------------------------------------------

    async def _left(self, max_id: int) -> int:
        if self.queue is not None:
            return await self.queue.pending_upto(max_id)
        return (len(self.buffer) if self.buffer is not None else 0) + self._in_hand

    async def flush(self, timeout: float | None = None) -> int:
        """Deliver what is pending now, within ``timeout`` s; return how many are left."""
        if self.delivery_type is DeliveryType.IMMEDIATE or not self._alive:
            return await self._left(0) if self.queue is None else self._backlog
        max_id = 0
        if self.queue is not None:
            max_id = await self.queue.max_id()
            await self.queue.hurry(max_id)
        self._flushes += 1
        try:
            with anyio.move_on_after(timeout):
                while True:
                    left = await self._left(max_id)
                    if left == 0 or not self._alive:
                        break
                    progress = self._progress
                    self._wake()
                    await progress.wait()
        finally:
            self._flushes -= 1
        return await self._left(max_id)

    async def aclose(self, timeout: float | None = None) -> int:
        """Deliver what is pending within ``timeout`` s, stop the actor, return what was left.

        Records left in a memory queue are lost (counted as discarded, reason ``closed``);
        a persistent queue keeps them on disk for the next start.
        """
        if self._closed:
            return 0
        timeout = self.settings.close_timeout if timeout is None else timeout
        self._closing = True
        self._deadline = time.monotonic() + timeout
        if self.queue is not None and self._alive:
            try:
                await self.queue.hurry(await self.queue.max_id())
            except AicmError as exc:
                self._note_unexpected(exc)
        self._wake()
        if self._done is not None:
            with anyio.move_on_after(timeout):
                await self._done.wait()
            if not self._done.is_set() and self._scope is not None:
                self._scope.cancel()
                with anyio.CancelScope(shield=True):
                    await self._done.wait()
        left = 0
        if self.buffer is not None:
            lost = self.buffer.clear()
            self.buffer.close()
            left = len(lost)
            if left:
                self.stats.discard("closed", left)
                logger.error("closed with %d undelivered record(s) in memory: lost", left)
        elif self.queue is not None:
            left = self._backlog
            if left:
                logger.warning("closed with %d record(s) still queued in %s", left, self.db_path)
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self.queue is not None:
                await self.queue.close()
            if self._writer is not None:
                await anyio.to_thread.run_sync(self._writer.close)
        unregister_engine(self)
        return left

    def after_fork_in_child(self) -> None:
        """Forget the parent's state: its memory records and its SQLite handles are not ours."""
        if self.buffer is not None:
            self.buffer.clear()
        if self._writer is not None:
            self._writer = SyncWriter(
                self.db_path, api_root=self.settings.api_root, key_fp=self._key_fp()
            )
        self._alive = False
        self._closed = True

    # -- health and dead letters -------------------------------------------------------

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Records this engine dead-lettered in memory (persistent ones live in the file)."""
        return list(self._dead)

    def health(self) -> DeliveryHealth:
        """A snapshot of this engine's delivery."""
        s = self.stats
        if self.buffer is not None:
            queued = len(self.buffer)
            oldest = age_since(self.buffer.oldest_at)
            capacity = self.buffer.maxsize
        else:
            queued = self._backlog
            oldest = (
                (time.time() - self._oldest_claimed)
                if self._backlog and self._oldest_claimed
                else None
            )
            capacity = 0
        return DeliveryHealth(
            worker_alive=self._alive,
            delivery_type=self.delivery_type.value,
            queued=queued,
            in_flight=s.in_flight,
            sent=s.sent,
            retried=s.retried,
            failed=s.failed,
            dead_lettered=s.dead_lettered,
            discarded=dict(s.discarded),
            oldest_pending_age=oldest,
            last_error=s.last_error,
            queue_utilisation=(queued / capacity) if capacity else 0.0,
            auth_paused=s.auth_paused,
        )
