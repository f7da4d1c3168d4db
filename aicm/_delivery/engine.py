"""The delivery engine: queue records, and an actor that batches, sends, retries, acks (layer 3).

One engine serves one tracker. ``IMMEDIATE`` sends in the caller's task. ``MEM_QUEUE``
keeps records in a bounded :class:`RecordBuffer`; ``PERSISTENT_QUEUE`` commits them to a
SQLite file first. Either way one actor task, started in a task group the owner supplies,
drains the queue: it waits for a full batch or ``batch_interval``, sends, and sorts the
answer into delivered, retry later, auth pause, or dead letter.

The actor never dies of an error: whatever it holds when something unexpected happens
goes back to the queue, and it carries on after a backoff. Every record it takes is
*held* until the service's answer settles it (acked, dead-lettered or given back), so an
interruption (a close deadline, a cancellation, a bug) can neither lose a record nor send
an acked one again.
"""

from __future__ import annotations

import logging
import random
import threading
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
    QueueStoreError,
    RateLimitedError,
    ServerError,
    ServiceRedirectError,
    TransportError,
    shown,
)
from .._core.jsonplain import dumps
from .._core.models import Endpoint, RecordResult, TrackResult, WireRecord
from .._core.policy import RetryPolicy
from .._core.settings import DeliveryType, Settings
from .._io.http import MAX_RECORDS_PER_REQUEST, REQUEST_DEADLINE_FACTOR, AsyncCostManagerClient
from .._io.sqlite import SqliteQueue, SyncWriter, count_pending
from .buffer import Doorbell, RecordBuffer, Waker
from .health import DeliveryHealth, DeliveryStats, age_since, register_engine, unregister_engine
from .loss import report_dropped, report_pending

__all__ = ["DeadLetterRecord", "DeliveryEngine"]

logger = logging.getLogger("aicm.delivery")

_RETRYABLE = (TransportError, ServerError, RateLimitedError)
_IMMEDIATE_MAX_DELAY = 5.0
# Requests a memory queue's actor keeps in flight at once (see DeliveryEngine._run_memory).
_MAX_IN_FLIGHT = 2
# While rows under someone's lease wait in a persistent queue, how often (s) the actor looks
# whether their owner process has ended (then they are free at once, see owners.py).
_DEAD_OWNER_POLL = 5.0

# Endpoint by value, for the rows a persistent actor claims (a dict look-up, not the Enum's).
_ENDPOINTS = {e.value: e for e in Endpoint}

# SQLite handles a forked child inherited: never used nor closed there (they are the
# parent's), and kept referenced so that garbage collection does not close them either.
_FORK_ORPHANS: list[object] = []


@attrs.frozen(kw_only=True)
class DeadLetterRecord:
    """A record the service refused for good, and why (memory queues keep these)."""

    endpoint: str
    response_id: str
    body: str
    reason: str
    dead_at: float


class _Item:
    """A record the actor holds: compared by identity, since two may carry equal data.

    A plain slotted class: the memory actor makes one per record, 1000 per batch.
    """

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


def _reason(result: RecordResult) -> str:
    if result.errors:
        return f"{result.status}: " + "; ".join(result.errors)
    return result.status or "rejected"


def _claimed_items(
    rows: list[tuple[int, str, str, str, float, int]],
) -> tuple[list[_Item], list[tuple[int, str]]]:
    """Claimed rows as items, and (row id, why) of those aicm cannot have written."""
    endpoints = _ENDPOINTS
    items: list[_Item] = []
    unreadable: list[tuple[int, str]] = []
    append = items.append
    for row_id, e, rid, body, created, _ in rows:
        endpoint = endpoints.get(e)
        if (
            endpoint is not None
            and type(body) is str
            and type(rid) is str
            and type(created) is float
        ):
            append(_Item(endpoint, rid, body, created, row_id))
            continue
        problem = _unreadable_row(e, rid, body, created)  # the rare case: say what is wrong
        if problem is None:  # a created_at stored as an integer
            append(_Item(endpoints[e], rid, body, float(created), row_id))
        else:
            unreadable.append((row_id, problem))
    return items, unreadable


def _unreadable_row(endpoint: object, rid: object, body: object, created: object) -> str | None:
    """Why a claimed row is none aicm could have written, or None when it is one."""
    if endpoint not in _ENDPOINTS:
        return f"unknown endpoint {shown(endpoint)}: not a row aicm wrote"
    for name, value in (("response_id", rid), ("body", body)):
        if type(value) is not str:
            return f"its {name} is {type(value).__name__}, not text: not a row aicm wrote"
    if type(created) not in (int, float):
        return f"its created_at is {type(created).__name__}, not a time: not a row aicm wrote"
    return None


def _unknown_outcome(ids: tuple[str, ...]) -> str:
    """What an IMMEDIATE failure's message adds: the service may have the records."""
    shown_ids = ", ".join(ids[:3]) + (f", ... ({len(ids)} in all)" if len(ids) > 3 else "")
    return (
        " The service may have stored them without its answer coming back: tracking them"
        " again with the same response_id (error.response_ids: "
        f"{shown_ids}) is safe, a repeated response_id is counted once"
    )


def _warn_if_lease_is_short(settings: Settings) -> None:
    """Warn when a request may outlast the lease on the rows it carries.

    A row whose lease ends while its request is still under way may be claimed and sent
    again by another process sharing the file (the service absorbs the copy by its
    ``response_id``, but it is one more request, and one more record to dedup).
    """
    longest = REQUEST_DEADLINE_FACTOR * settings.timeout
    if settings.lease_seconds <= longest:
        logger.warning(
            "lease_seconds (%g s) is not longer than one request may take (%g x timeout ="
            " %g s): rows still being sent may be claimed and sent again by another process"
            " sharing the queue file; raise lease_seconds or lower timeout",
            settings.lease_seconds,
            REQUEST_DEADLINE_FACTOR,
            longest,
        )


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
        # One request carries at most MAX_RECORDS_PER_REQUEST records, whatever the setting.
        self._batch_limit = min(settings.max_batch_size, MAX_RECORDS_PER_REQUEST)
        self._rng = random.Random()
        self._user_on_discard = on_discard
        self._dead: deque[DeadLetterRecord] = deque(maxlen=dead_letter_capacity)
        self._alive = False
        self._started = False
        self._closed = False
        self._closing = False
        self._close_finished: anyio.Event | None = None
        self._left_at_close = 0
        self._deadline = float("inf")
        self._flushes = 0
        self._failures = 0
        self._not_before = 0.0  # time.monotonic() before which the actor sends nothing
        self._waker: Waker | None = None
        self._progress = anyio.Event()
        self._done: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        # What the actor has taken and the service has not settled yet, by identity.
        self._held: dict[int, _Item] = {}
        self._sending = 0  # memory queues: sender tasks with a request in flight
        self._slot_freed = anyio.Event()
        self.buffer: RecordBuffer[WireRecord] | None = None
        self._doorbell: Doorbell | None = None
        self._writer: SyncWriter | None = None
        self.queue: SqliteQueue | None = None
        # Persistent queues: pending rows as this process knows them (producers on any
        # thread add, the actor removes), and when the oldest of them was written.
        self._count_lock = threading.Lock()
        self._backlog = 0
        self._oldest_pending = 0.0
        self._owners_checked = 0.0  # time.monotonic() of the last look for ended owners
        if delivery_type is DeliveryType.MEM_QUEUE:
            self.buffer = RecordBuffer(
                settings.queue_size,
                batch_size=min(settings.max_batch_size, MAX_RECORDS_PER_REQUEST),
                on_full=settings.delivery_on_full,
                block_timeout=settings.block_timeout,
                on_discarded=self._discarded,
            )
        elif delivery_type is DeliveryType.PERSISTENT_QUEUE:
            self._doorbell = Doorbell()
            self._writer = SyncWriter(
                self.db_path, api_root=settings.api_root, key_fp=self._key_fp()
            )
            client.limits.share_through(self.db_path)  # other processes learn our limits
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
        self._check_open()
        self._started = True
        if self.delivery_type is DeliveryType.IMMEDIATE:
            self._alive = True
            return
        if self.delivery_type is DeliveryType.PERSISTENT_QUEUE:
            self.settings.require_api_key()
            _warn_if_lease_is_short(self.settings)
            queue = await SqliteQueue.open(
                self.db_path, api_root=self.settings.api_root, key_fp=self._key_fp()
            )
            try:
                await self._free_dead_leases(queue)
                backlog = await queue.pending_upto(await queue.max_id())
                oldest = await queue.oldest_pending_at()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await queue.close()
                raise
            self.queue = queue
            self._count(backlog, oldest=oldest)
            queue.before_commit = self._count
            queue.after_commit = self._committed
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
                elif self.queue is not None and self._doorbell is not None:
                    await self._run_persistent(self.queue, self._doorbell)
            finally:
                self._alive = False
                await self._release_held(0.0, "released at close")
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

    def _count(self, delta: int, *, oldest: float | None = None) -> None:
        """Adjust the persistent backlog (any thread); ``oldest`` re-anchors its age."""
        with self._count_lock:
            before = self._backlog
            self._backlog = max(0, before + delta)
            if oldest is not None:
                self._oldest_pending = oldest
            elif not self._backlog:
                self._oldest_pending = 0.0
            elif not before:
                self._oldest_pending = time.time()

    def _committed(self, n: int, ok: bool) -> None:
        """A group commit of ``n`` rows (counted before it began) has ended."""
        if not ok:
            self._count(-n)
        elif self._doorbell is not None:
            self._doorbell.ring(n)

    # -- producers ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise ClosedError("this tracker is closed; create a new one to track more")

    def put(self, record: WireRecord) -> None:
        """Queue ``record`` from a plain thread (the sync facade); blocks per the on-full policy."""
        if self._closed or self._closing:
            self._check_open()
        buffer = self.buffer
        if buffer is not None:
            if not buffer.try_put(record):
                buffer.put_when_full(record)
        elif self._writer is not None and self._doorbell is not None:
            # Counted before the commit: the actor may deliver the row before we get back.
            self._count(1)
            try:
                self._writer.add(record.endpoint.value, record.response_id, dumps(record.wire()))
            except BaseException:
                self._count(-1)
                raise
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
        elif self.queue is not None:
            # Counted and rung once per group commit: see the queue's hooks set in start().
            await self.queue.add(record.endpoint.value, record.response_id, dumps(record.wire()))
        elif self._writer is not None:
            raise AicmError("this tracker has not been started; use `async with`")
        else:
            raise AicmError("IMMEDIATE delivery sends in the caller; use send_now()")
        if logger.isEnabledFor(logging.DEBUG):
            self._log_enqueue(record)

    def _log_enqueue(self, record: WireRecord) -> None:
        if self.settings.log_bodies:
            logger.debug("enqueued %s %s", record.response_id, dumps(record.wire()))
        else:
            logger.debug("enqueued %s", record.response_id)

    def _discarded(self, record: WireRecord, reason: str, *, said: bool = False) -> None:
        """Count a dropped record and tell the user's ``on_discard`` (whose errors we eat).

        The drop is said on the log or stderr (see loss.py) unless the caller says the
        count itself (``said``).
        """
        self.stats.discard(reason, said=said)
        try:
            logger.warning("dropped record %s (%s)", record.response_id, reason)
        except Exception:
            pass  # a failing log handler must not make a drop raise at the call site
        if self._user_on_discard is not None:
            try:
                self._user_on_discard(record)
            except Exception:
                try:
                    logger.exception("on_discard callback raised; ignored")
                except Exception:
                    pass

    async def send_now(self, records: Sequence[WireRecord]) -> TrackResult:
        """Send ``records`` now (IMMEDIATE): up to ``max_attempts`` on retryable failures."""
        self._check_open()
        results: list[RecordResult] = []
        limits: dict[str, Any] = {}
        groups: dict[Endpoint, list[WireRecord]] = {}
        for record in records:
            groups.setdefault(record.endpoint, []).append(record)
        # Whatever fails, every record of the call is named in the error: those sent may
        # be stored, and a retry of all of them with their ids is safe.
        ids = tuple(r.response_id for r in records)
        for group in groups.values():
            for start in range(0, len(group), MAX_RECORDS_PER_REQUEST):
                chunk = group[start : start + MAX_RECORDS_PER_REQUEST]
                answer = await self._send_with_attempts(chunk, ids)
                results.extend(answer.results)
                limits.update(answer.triggered_limits)
        return TrackResult(results=tuple(results), triggered_limits=limits)

    async def _send_with_attempts(
        self, records: Sequence[WireRecord], call_ids: tuple[str, ...]
    ) -> TrackResult:
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
                    retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
                    if retry_after is not None and retry_after > _IMMEDIATE_MAX_DELAY:
                        # The service asks for a longer pause than a caller should sit
                        # through, and trying again sooner would ignore its Retry-After.
                        self.stats.failed += len(encoded)
                        raise DeliveryError(
                            f"could not deliver {len(encoded)} record(s): the service asks to"
                            f" wait {retry_after:g} s before trying again (Retry-After), longer"
                            f" than IMMEDIATE delivery waits ({_IMMEDIATE_MAX_DELAY:g} s): {exc}."
                            + _unknown_outcome(call_ids),
                            pending=len(encoded),
                            response_ids=call_ids,
                        ) from exc
                    self.stats.retried += len(encoded)
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
            f"could not deliver {len(encoded)} record(s) after {attempts} attempts: {last}."
            + _unknown_outcome(call_ids),
            pending=len(encoded),
            response_ids=call_ids,
        ) from last

    # -- the memory actor ------------------------------------------------------------------

    async def _run_memory(self, buffer: RecordBuffer[WireRecord]) -> None:
        """Take batches and hand each to a sender task, up to ``_MAX_IN_FLIGHT`` at once.

        Two requests in flight keep the service busy while the answer to the other one
        travels back (and waits for the GIL behind the callers' threads): on a loaded
        process that doubles the records delivered per second.
        """
        async with anyio.create_task_group() as senders:
            while True:
                try:
                    if not await self._respect_backoff():
                        return
                    if self._sending >= _MAX_IN_FLIGHT:
                        await self._slot_freed_wait()
                        continue
                    batch = await self._next_memory_batch(buffer)
                    if batch is None:
                        if not self._sending:
                            return
                        # Closing with requests in flight: what they fail to deliver comes
                        # back to the queue, and is tried again while the deadline allows.
                        await self._slot_freed_wait()
                        continue
                    queued_at, records = batch
                    if time.monotonic() < self._not_before:
                        # A request in flight failed meanwhile: wait out its backoff first.
                        buffer.push_front(records, queued_at=queued_at)
                        continue
                    items = self._encode(records, queued_at)
                    if items:
                        self._hold(items)
                        self._sending += 1
                        senders.start_soon(self._send_batch, items)
                except Exception as exc:
                    await self._survive(exc, release=False)

    async def _slot_freed_wait(self) -> None:
        self._slot_freed = event = anyio.Event()
        await event.wait()

    async def _send_batch(self, items: list[_Item]) -> None:
        """One sender task: deliver ``items``; what is left unsettled goes back."""
        try:
            await self._deliver_held(items)
        except Exception as exc:
            await self._survive(exc, release=False)
        finally:
            self._sending -= 1
            self._slot_freed.set()
            self._wake()  # records given back, or a slot free: the taker looks again

    def _encode(self, records: list[WireRecord], queued_at: float = 0.0) -> list[_Item]:
        now = time.time()
        items: list[_Item] = []
        append = items.append
        for record in records:
            try:
                body = dumps(record.wire())
            except Exception as exc:  # validated when built: only a bug gets here
                self._note_unexpected(exc)
                self._discarded(record, "unencodable")
                continue
            append(_Item(record.endpoint, record.response_id, body, now, None, record, queued_at))
        return items

    async def _next_memory_batch(
        self, buffer: RecordBuffer[WireRecord]
    ) -> tuple[float, list[WireRecord]] | None:
        """The next batch and when its oldest record arrived; None when closing and empty."""
        waker = self._waker
        assert waker is not None
        limit = self._batch_limit
        while True:
            n = len(buffer)
            if n >= limit or (n and self._urgent()):
                return buffer.oldest_at, buffer.take(limit)
            if n == 0:
                if self._closing:
                    return None
                self._signal_progress()
                if buffer.wait_for(waker, 1):
                    try:
                        await waker.wait()  # idle: no timer, no CPU
                    finally:
                        buffer.cancel_wait()
                continue
            remaining = buffer.oldest_at + self.settings.batch_interval - time.monotonic()
            if remaining <= 0:
                return buffer.oldest_at, buffer.take(limit)
            if buffer.wait_for(waker, limit):
                try:
                    await waker.wait(remaining)
                finally:
                    buffer.cancel_wait()

    # -- the persistent actor -----------------------------------------------------------

    async def _run_persistent(self, queue: SqliteQueue, doorbell: Doorbell) -> None:
        limit = self._batch_limit
        rechecked = False
        # A backlog found at start is claimed at once. Without one, the first rows wait for
        # a batch window like any later ones: an opening claim would race the first track()
        # commits (they go through a connection of their own) and take them one by one.
        waiting = self._backlog == 0
        while True:
            try:
                if waiting:
                    waiting = False
                    await self._wait_persistent(queue, doorbell)
                    continue
                if not await self._respect_backoff():
                    return
                doorbell.reset()
                await self._follow_the_path(queue)
                rows = await queue.claim_tuples(limit, lease_seconds=self.settings.lease_seconds)
                if rows:
                    items, unreadable = _claimed_items(rows)
                    if unreadable:
                        # Sent, the service would refuse them; given back, they would hold
                        # up the rows claimed with them: dead-lettered at once.
                        await queue.kill(unreadable)
                        self._count(-len(unreadable))
                        self._dead_lettered([(f"in row {i}", why) for i, why in unreadable])
                    self._hold(items)
                    await self._deliver_held(items)
                    rechecked = False
                    # The actor copies the WAL into the file, between its batches: not the
                    # producers, whose track() calls would wait for it.
                    await queue.checkpoint()
                    if len(rows) == limit or self._closing:
                        continue  # more may be due now
                elif self._closing:
                    if rechecked:
                        return
                    # A claim that began before the last track() committed cannot see its
                    # row: claim once more before stopping.
                    rechecked = True
                    continue
                self._count(0, oldest=await queue.oldest_pending_at())
                self._signal_progress()
                await self._wait_persistent(queue, doorbell)
            except Exception as exc:
                await self._survive(exc)

    async def _wait_persistent(self, queue: SqliteQueue, doorbell: Doorbell) -> None:
        """Sleep until there is something to claim: fresh rows (after a batch window), a
        retry or an expired lease falling due, a flush or a close."""
        waker = self._waker
        assert waker is not None
        if doorbell.count == 0:
            # Nothing rung in. Fresh rows of a process that died before claiming them are
            # only found by a claim: wake at least every lease_seconds for those.
            due = await queue.next_retry_due()
            idle = self.settings.lease_seconds
            timeout = idle if due is None else min(max(due - time.time(), 0.0), idle)
            if timeout > 0 and due is not None:
                # Rows wait for a lease or a backoff to end: one a process that has ended
                # held is free now, and those of a process that ends meanwhile soon.
                if await self._free_dead_leases(queue):
                    return
                timeout = min(timeout, _DEAD_OWNER_POLL)
            if timeout <= 0:
                return
            if doorbell.wait_for(waker, 1):
                try:
                    await waker.wait(timeout)
                finally:
                    doorbell.cancel_wait()
            if doorbell.count == 0:
                return
        limit = self._batch_limit
        while not self._urgent():
            remaining = doorbell.first_at + self.settings.batch_interval - time.monotonic()
            if remaining <= 0 or not doorbell.wait_for(waker, limit):
                return
            try:
                await waker.wait(remaining)
            finally:
                doorbell.cancel_wait()

    async def _follow_the_path(self, queue: SqliteQueue) -> None:
        """Before a claim: if the queue file was deleted or replaced, carry on in the file
        at its path (see SqliteQueue.follow_the_path); if that cannot be, deliver on from
        the old one meanwhile."""
        try:
            await queue.follow_the_path()
        except QueueStoreError as exc:
            if self.stats.last_error != f"{type(exc).__name__}: {exc}":  # once, not per claim
                logger.error("%s", exc)
            self._note_error(exc)

    async def _free_dead_leases(self, queue: SqliteQueue) -> int:
        """Take back rows leased by processes of this host that have ended (at most once
        per _DEAD_OWNER_POLL while running); how many were freed."""
        now = time.monotonic()
        if self._owners_checked and now - self._owners_checked < _DEAD_OWNER_POLL:
            return 0
        self._owners_checked = now
        freed = await queue.free_dead_leases()
        if freed:
            logger.info("%d queued record(s) leased by an ended process are due again", freed)
        return freed

    # -- sending and sorting the answer ----------------------------------------------------

    async def _respect_backoff(self) -> bool:
        """Wait out a backoff after a failure; False when a close deadline ends the actor."""
        waker = self._waker
        assert waker is not None
        while True:
            if self._past_deadline():
                return False
            wait = self._not_before - time.monotonic()
            if wait <= 0:
                return True
            if self._closing and self._not_before >= self._deadline:
                return False  # no attempt fits before the deadline: stop now, keep the rest
            await waker.wait(wait)  # a close may come meanwhile and change the answer

    def _hold(self, items: list[_Item]) -> None:
        """The actor has taken ``items``: held until an answer settles each."""
        held = self._held
        for item in items:
            held[id(item)] = item

    async def _deliver_held(self, items: list[_Item]) -> None:
        """Deliver held ``items``; whatever the answers leave unsettled goes back to the queue."""
        try:
            await self._deliver(items)
        finally:
            held = self._held
            left = [i for i in items if id(i) in held]
            if left:
                delay = max(0.0, self._not_before - time.monotonic())
                await self._release(left, delay, "not sent: delivery was interrupted")
        self._signal_progress()

    async def _deliver(self, items: list[_Item]) -> None:
        groups: dict[Endpoint, list[_Item]] = {}
        for item in items:
            groups.setdefault(item.endpoint, []).append(item)
        for endpoint, group in groups.items():
            if not await self._deliver_group(endpoint, group):
                return  # paused (backoff, auth, deadline): the rest is given back

    async def _send(self, endpoint: Endpoint, items: list[_Item]) -> TrackResult:
        if self.settings.log_bodies and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "sending %d record(s) to %s: %s",
                len(items),
                endpoint.value,
                [i.body for i in items],
            )
        else:
            logger.debug("sending %d record(s) to %s", len(items), endpoint.value)
        self.stats.in_flight += len(items)
        try:
            return await self.client.send_encoded(
                endpoint, [i.body for i in items], only_failures=True
            )
        finally:
            self.stats.in_flight -= len(items)

    async def _deliver_group(self, endpoint: Endpoint, items: list[_Item]) -> bool:
        """Send ``items``, splitting around records the service refuses.

        Returns False when delivery must pause (a retryable failure, a refused key, the
        close deadline); what is not settled by then stays held for the caller to give back.
        """
        pending = items
        while pending:
            if self._past_deadline():
                return False
            try:
                result = await self._send(endpoint, pending)
            except (AuthenticationError, MissingApiKeyError, ServiceRedirectError) as exc:
                # The key, or the API base, needs fixing: keep the records, try again slowly.
                self._note_error(exc)
                await self._retry_later(pending, self.settings.auth_retry_interval, str(exc))
                self.stats.auth_paused = True
                logger.error("delivery paused: %s", exc)
                return False
            except _RETRYABLE as exc:
                self._note_error(exc)
                self.stats.retried += len(pending)
                retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
                delay = self._next_delay(retry_after)
                await self._retry_later(pending, delay, str(exc))
                logger.warning(
                    "delivery of %d record(s) failed (%s); retrying in %.2fs",
                    len(pending),
                    exc,
                    delay,
                )
                return False
            except ClientRequestError as exc:
                self._note_error(exc)
                rest = await self._permanent(endpoint, pending, exc)
                if rest is None:
                    return False
                pending = rest
                continue
            self.stats.auth_paused = False
            self._failures = 0
            self._not_before = 0.0
            await self._accepted(pending, result)
            return True
        return True

    def _next_delay(self, retry_after: float | None) -> float:
        self._failures += 1
        return self._policy.delay(self._failures, retry_after=retry_after, rng=self._rng)

    async def _permanent(
        self, endpoint: Endpoint, pending: list[_Item], exc: ClientRequestError
    ) -> list[_Item] | None:
        """Dead-letter what the service named, or split the batch to find it.

        Returns the records still to send, or None when delivery paused meanwhile.
        """
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
        if not await self._deliver_group(endpoint, pending[:mid]):
            return None
        return pending[mid:]

    async def _accepted(self, items: list[_Item], result: TrackResult) -> None:
        dead: list[tuple[_Item, str]] = []
        refused = {r.response_id: r for r in result.results if not r.ok}
        if refused:
            done: list[_Item] = []
            for item in items:
                verdict = refused.get(item.response_id)
                if verdict is not None:
                    dead.append((item, _reason(verdict)))
                else:
                    done.append(item)
        else:  # every record accepted (the answer names failures only): the common case
            done = items
        if self.queue is not None:
            await self.queue.ack([i.row_id for i in done if i.row_id is not None])
            self._count(-len(done))
        self._settle(done)
        self.stats.sent += len(done)
        if dead:
            await self._dead_letter(dead)
        if done:
            logger.info("delivered %d record(s)", len(done))

    async def _dead_letter(self, pairs: list[tuple[_Item, str]]) -> None:
        now = time.time()
        if self.queue is not None:
            await self.queue.kill([(i.row_id, why) for i, why in pairs if i.row_id is not None])
            self._count(-len(pairs))
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
        self._settle([i for i, _ in pairs])
        self._dead_lettered([(i.response_id, why) for i, why in pairs])

    def _dead_lettered(self, records: list[tuple[str, str]]) -> None:
        """Count and log records just dead-lettered: (which record, why) each."""
        self.stats.dead_lettered += len(records)
        self.stats.failed += len(records)
        for which, why in records:
            logger.error("record %s dead-lettered: %s", which, why)
        report_dropped(len(records), "dead_letter" if self.queue is None else "dead_row")

    async def _retry_later(self, items: list[_Item], delay: float, error: str) -> None:
        self._not_before = time.monotonic() + delay
        await self._give_back(items, delay, error)

    async def _give_back(self, items: list[_Item], delay: float, error: str) -> None:
        """Return unsettled records to the queue, due again in ``delay`` s."""
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
            self._settle(keep)
        elif self.buffer is not None:
            self.buffer.push_front(
                [i.record for i in items if i.record is not None],
                queued_at=min(i.queued_at for i in items) or None,
            )
            self._wake()
            self._settle(items)

    def _settle(self, items: Sequence[_Item]) -> None:
        """These records are accounted for: acked, dead-lettered or back in the queue."""
        for item in items:
            self._held.pop(id(item), None)

    async def _release_held(self, delay: float, error: str) -> None:
        """Give back everything still held (see :meth:`_release`)."""
        await self._release(list(self._held.values()), delay, error)

    async def _release(self, items: list[_Item], delay: float, error: str) -> None:
        """Give ``items`` back; never raises (a persistent row whose release fails stays
        leased, and is claimed again when its lease expires)."""
        if not items:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._give_back(items, delay, error)
            except Exception as exc:
                self._note_unexpected(exc)
            finally:
                self._settle(items)

    async def _survive(self, exc: Exception, *, release: bool = True) -> None:
        """An error nobody foresaw: note it, keep the records, back off, carry on."""
        self._note_unexpected(exc)
        delay = self._next_delay(None)
        self._not_before = time.monotonic() + delay
        if release:
            await self._release_held(delay, f"internal error: {type(exc).__name__}: {exc}")

    def _note_error(self, exc: BaseException) -> None:
        self.stats.last_error = f"{type(exc).__name__}: {exc}"

    def _note_unexpected(self, exc: BaseException) -> None:
        self.stats.unexpected_errors += 1
        self._note_error(exc)
        try:
            logger.error("unexpected error in the delivery actor (it carries on)", exc_info=exc)
        except Exception:
            pass  # the log itself failing must not take the actor down

    # -- flush and close ------------------------------------------------------------------

    async def _left(self, max_id: int) -> int:
        if self.queue is not None:
            return await self.queue.pending_upto(max_id)
        return (len(self.buffer) if self.buffer is not None else 0) + len(self._held)

    async def flush(self, timeout: float | None = None) -> int:
        """Deliver what is pending now, within ``timeout`` s; return how many are left.

        For a persistent queue "pending" means every row of this API root and key in the
        file up to now, including rows other processes sharing the file hold.
        """
        if self.delivery_type is DeliveryType.IMMEDIATE:
            return 0
        if not self._alive:
            if self.queue is None:
                return len(self.buffer) if self.buffer is not None else self._backlog
            return await self._left(await self.queue.max_id())
        max_id = 0
        if self.queue is not None:
            max_id = await self.queue.max_id()
            await self.queue.hurry(max_id)
        self._flushes += 1
        try:
            self._wake()  # cut a batch window short; the actor re-checks _urgent() after
            with anyio.move_on_after(timeout):
                while self._alive:
                    # Taken before counting, so a delivery that ends meanwhile is not missed.
                    progress = self._progress
                    if await self._left(max_id) == 0:
                        break
                    await progress.wait()
        finally:
            self._flushes -= 1
        return await self._left(max_id)

    async def aclose(self, timeout: float | None = None) -> int:
        """Deliver what is pending within ``timeout`` s, stop the actor, return what was left.

        Records left in a memory queue are lost: counted as discarded (reason ``closed``)
        and handed to ``on_discard``. A persistent queue keeps them on disk for the next
        start. A second, concurrent close waits for the first and reports the same.
        """
        if self._closed:
            return 0
        if self._close_finished is not None:
            await self._close_finished.wait()
            return self._left_at_close
        self._close_finished = anyio.Event()
        try:
            self._left_at_close = await self._close(
                self.settings.close_timeout if timeout is None else timeout
            )
        finally:
            self._closed = True
            unregister_engine(self)
            self._close_finished.set()
        return self._left_at_close

    async def _close(self, timeout: float) -> int:
        self._closing = True
        self._deadline = time.monotonic() + timeout
        if self.queue is not None and self._alive:
            try:
                await self.queue.hurry(await self.queue.max_id())
            except AicmError as exc:
                self._note_unexpected(exc)
        self._wake()
        if self._done is not None:
            with anyio.move_on_after(max(0.0, self._deadline - time.monotonic())):
                await self._done.wait()
            if not self._done.is_set() and self._scope is not None:
                self._scope.cancel()  # an answer outlived the deadline: stop waiting for it
                with anyio.CancelScope(shield=True):
                    await self._done.wait()
        left = 0
        if self.buffer is not None:
            self.buffer.close()  # first: a record put now raises instead of being lost
            lost = self.buffer.clear()
            left = len(lost)
            if left:
                report_dropped(left, "closed")
                for record in lost:
                    self._discarded(record, "closed", said=True)
        with anyio.CancelScope(shield=True):
            if self.queue is not None:
                try:
                    left = await self.queue.pending_upto(await self.queue.max_id())
                except AicmError as exc:
                    self._note_unexpected(exc)
                    left = self._backlog
                if left:
                    logger.warning(
                        "closed with %d record(s) still queued in %s", left, self.db_path
                    )
                await self.queue.close()
            if self._writer is not None:
                await anyio.to_thread.run_sync(self._writer.close)
        report_pending()  # drops still waiting for their line (a full queue's, say)
        return left

    def after_fork_in_child(self) -> None:
        """In a forked child: this engine is the parent's; forget it without touching it.

        Its SQLite handles and locks belong to the parent (a lock held by one of the
        parent's threads at the fork would stay held here forever), so nothing inherited
        is used or closed. The owner starts a fresh engine when the child tracks.
        """
        _FORK_ORPHANS.extend(h for h in (self._writer, self.queue) if h is not None)
        self._writer = None
        self.queue = None
        if self.buffer is not None:
            self.buffer.forget_after_fork()
        self._count_lock = threading.Lock()
        self.stats.lock = threading.Lock()
        self._backlog = 0
        self._oldest_pending = 0.0
        self._held = {}
        self._alive = False
        self._closing = True
        self._closed = True
        unregister_engine(self)

    # -- health and dead letters -------------------------------------------------------

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Records this engine dead-lettered in memory (persistent ones live in the file)."""
        return list(self._dead)

    def health(self) -> DeliveryHealth:
        """A snapshot of this engine's delivery."""
        s = self.stats
        held = len(self._held)
        if self.buffer is not None:
            queued = len(self.buffer)
            oldest = age_since(self.buffer.oldest_at)
            capacity = self.buffer.maxsize
        else:
            # The file is the truth: other processes (or trackers) on it deliver rows too.
            # Rows stay in the file while in flight; report those apart.
            backlog: int = self._backlog
            since: float | None = self._oldest_pending
            try:
                backlog, since = count_pending(
                    self.db_path, api_root=self.settings.api_root, key_fp=self._key_fp()
                )
            except QueueStoreError:
                pass  # unreadable right now: the engine's own count is the next best
            if self.queue is not None:  # delivered while the disk was full: not queued
                backlog -= self.queue.settled_unwritten
            queued = max(0, backlog - held)
            oldest = max(0.0, time.time() - since) if backlog and since else None
            capacity = 0
        return DeliveryHealth(
            worker_alive=self._alive,
            delivery_type=self.delivery_type.value,
            queued=queued,
            # Queues: every record the actor has taken and the service has not settled,
            # including a batch between being taken and its request going out.
            in_flight=s.in_flight if self.delivery_type is DeliveryType.IMMEDIATE else held,
            sent=s.sent,
            retried=s.retried,
            failed=s.failed,
            dead_lettered=s.dead_lettered,
            discarded=dict(s.discarded),
            oldest_pending_age=oldest,
            last_error=s.last_error,
            queue_utilisation=(queued / capacity) if capacity else 0.0,
            auth_paused=s.auth_paused,
            limits_refused=s.limits_refused,
        )
