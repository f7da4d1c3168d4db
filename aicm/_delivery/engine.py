"""The delivery engine: queue records, and an actor that batches, sends, retries, acks (layer 3).

One engine serves one tracker. ``IMMEDIATE`` sends in the caller's task (immediate.py).
A queue keeps records in a `Store` (`MemoryStore` or `SqliteStore`); one actor task,
started in the owner's task group, takes its batches, sends each, and carries out what
`decide()` makes of the answer.

The actor never dies of an error: what it holds goes back to the store and it carries on
after a backoff. Every record it takes is *held* until an answer settles it (acked,
dead-lettered or given back), so an interruption (a close deadline, a cancellation, a
bug) can neither lose a record nor send an acked one again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from operator import attrgetter

import anyio
import anyio.abc

from .._core.exceptions import AicmError, ClosedError
from .._core.jsonplain import dumps
from .._core.models import Endpoint, TrackResult, WireRecord
from .._core.policy import Answer, RetryPolicy
from .._core.settings import DeliveryType, Settings
from .._io.http import MAX_RECORDS_PER_REQUEST, AsyncCostManagerClient
from .buffer import RecordBuffer, Waker
from .decide import Delivered, Pause, Refused, Retry, decide, gate
from .health import DeliveryHealth, DeliveryStats, register_engine, unregister_engine
from .immediate import Immediate
from .loss import report_dropped, report_pending
from .store import DeadLetterRecord, Item, MemoryStore, Store

__all__ = ["DeadLetterRecord", "DeliveryEngine"]

logger = logging.getLogger("aicm.delivery")

# Per-record work on the delivery path stays in C (map, set operations): with a sync
# facade the actor runs on the runtime's thread, and every microsecond it holds the GIL
# there also costs the callers' threads a handoff.
_endpoint_of = attrgetter("endpoint")
_body_of = attrgetter("body")

# SQLite handles a forked child inherited: never used nor closed there (they are the
# parent's), and kept referenced so that garbage collection does not close them either.
_FORK_ORPHANS: list[object] = []


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
        self._immediate = Immediate(
            client, self.stats, self._policy, settings.max_attempts, self.note_error, self._rng
        )
        self._on_discard = on_discard
        self._alive = self._started = self._closed = False
        self.closing = False  # a close began
        self._close_finished: anyio.Event | None = None
        self._left_at_close = 0
        self._deadline = float("inf")
        self._flushes = 0
        self._failures = 0
        self.not_before = 0.0  # time.monotonic() before which the actor sends nothing
        self._waker: Waker | None = None
        self._progress = anyio.Event()
        self._done: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        # What the actor has taken and the service has not settled yet (items hash by identity).
        self._held: set[Item] = set()
        self._sending = 0  # sender tasks with a request in flight
        self._slot_freed = anyio.Event()
        self.store: Store | None = None  # None for IMMEDIATE
        #: the memory queue (MEM_QUEUE): producers' fast path appends to it directly
        self.buffer: RecordBuffer[WireRecord] | None = None
        limit = min(settings.max_batch_size, MAX_RECORDS_PER_REQUEST)
        if delivery_type is DeliveryType.MEM_QUEUE:
            memory = MemoryStore(
                self,
                settings,
                batch_limit=limit,
                on_discarded=self.discarded,
                dead_letter_capacity=dead_letter_capacity,
            )
            self.store, self.buffer = memory, memory.buffer
        elif delivery_type is DeliveryType.PERSISTENT_QUEUE:
            from .sqlite_store import SqliteStore  # the SQLite queue only when it is used

            self.store = SqliteStore(self, settings, batch_limit=limit)
            # Other processes sharing the file learn our usage limits through it.
            client.limits.share_through(settings.resolved_db_path)
        register_engine(self)

    def __repr__(self) -> str:
        return f"DeliveryEngine({self.delivery_type.value}, api_root={self.settings.api_root!r})"

    # -- what the store sees (store.Actor) ---------------------------------------------

    @property
    def waker(self) -> Waker:
        """The actor's waker (set while it runs)."""
        assert self._waker is not None
        return self._waker

    def urgent(self) -> bool:
        """A flush or a close waits: send what there is without waiting for a full batch."""
        return self.closing or self._flushes > 0

    def wake(self) -> None:
        """Wake the actor (any thread)."""
        if self._waker is not None:
            self._waker.wake()

    def signal_progress(self) -> None:
        """Tell flushes waiting that something was settled (or that the actor is idle)."""
        event, self._progress = self._progress, anyio.Event()
        event.set()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Open the queue and start the actor in ``task_group`` (nothing to do for IMMEDIATE)."""
        if self._started:
            return
        self._check_open()
        self._started = True
        if self.store is None:
            self._alive = True
            return
        await self.store.open()
        await task_group.start(self._run, self.store)

    async def _run(self, store: Store, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._waker = Waker()
        self._done = anyio.Event()
        with anyio.CancelScope() as scope:
            self._scope = scope
            self._alive = True
            task_status.started()
            try:
                await self._take_batches(store)
            finally:
                self._alive = False
                await self._release(list(self._held), 0.0, "released at close")
                self.signal_progress()
                self._done.set()

    @property
    def running(self) -> bool:
        """True while the actor is alive (always True for IMMEDIATE once started)."""
        return self._alive

    # -- producers ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or self.closing:
            raise ClosedError("this tracker is closed; create a new one to track more")

    def _queue(self) -> Store:
        self._check_open()
        if self.store is None:
            raise AicmError("IMMEDIATE delivery sends in the caller; use send_now()")
        return self.store

    def try_put(self, record: WireRecord) -> bool:
        """Queue ``record`` in the memory queue if it has room now, from any thread, never
        waiting: False when full (``backpressure`` drops the oldest instead). Raises
        `ClosedError` once a close began, as `put()` does."""
        self._check_open()
        assert self.buffer is not None
        return self.buffer.try_put(record)

    def put(self, record: WireRecord) -> None:
        """Queue ``record`` from a plain thread (the sync facade); blocks per the on-full policy."""
        self._queue().put(record)
        if logger.isEnabledFor(logging.DEBUG):
            self._log_enqueue(record)

    async def aput(self, record: WireRecord) -> None:
        """Queue ``record`` from a task on the engine's own event loop."""
        await self._queue().aput(record)
        if logger.isEnabledFor(logging.DEBUG):
            self._log_enqueue(record)

    def _log_enqueue(self, record: WireRecord) -> None:
        body = f" {dumps(record.wire())}" if self.settings.log_bodies else ""
        logger.debug("enqueued %s%s", record.response_id, body)

    def discarded(self, record: WireRecord, reason: str, *, said: bool = False) -> None:
        """Count a dropped record, said on the log or stderr (loss.py) unless the caller
        says the count itself (``said``), and hand it to the user's ``on_discard``.

        Neither a failing log handler nor ``on_discard`` raising may make a drop raise at
        the call site or stop the actor.
        """
        self.stats.discard(reason, said=said)
        try:
            logger.warning("dropped record %s (%s)", record.response_id, reason)
        except Exception:
            pass
        if self._on_discard is not None:
            try:
                self._on_discard(record)
            except Exception:
                try:
                    logger.exception("on_discard callback raised; ignored")
                except Exception:
                    pass

    # -- IMMEDIATE ---------------------------------------------------------------------

    async def send_now(self, records: Sequence[WireRecord]) -> TrackResult:
        """Send ``records`` now (IMMEDIATE): up to ``max_attempts`` on retryable failures."""
        self._check_open()
        return await self._immediate.send(records)

    def send_now_blocking(self, records: Sequence[WireRecord]) -> TrackResult:
        """`send_now()` from a plain thread (only where ``client.can_block``)."""
        self._check_open()
        return self._immediate.send_blocking(records)

    # -- the actor ---------------------------------------------------------------------

    async def _take_batches(self, store: Store) -> None:
        """Take the store's batches and hand each to a sender task, up to the store's
        ``max_in_flight`` at once.

        Two requests in flight (a memory queue) keep the service busy while the answer to
        the other travels back (and waits for the GIL behind the callers' threads): on a
        loaded process that doubles the records delivered per second.
        """
        async with anyio.create_task_group() as senders:
            while True:
                try:
                    if not await self._respect_backoff():
                        return
                    if self._sending >= store.max_in_flight:
                        await self._slot_freed_wait()
                        continue
                    items = await store.next_batch()
                    if items is None:
                        if not self._sending:
                            return
                        # Closing with requests in flight: what they fail to deliver comes
                        # back to the queue, and is tried again while the deadline allows.
                        await self._slot_freed_wait()
                        continue
                    if items:
                        self._held.update(items)
                        self._sending += 1
                        senders.start_soon(self._send_batch, store, items)
                except Exception as exc:
                    await self._survive(exc)

    async def _slot_freed_wait(self) -> None:
        self._slot_freed = event = anyio.Event()
        await event.wait()

    async def _send_batch(self, store: Store, items: list[Item]) -> None:
        """One sender task: deliver ``items``; what is left unsettled goes back."""
        try:
            await self._deliver_held(store, items)
            await store.after_batch()
        except Exception as exc:
            await self._survive(exc)
        finally:
            self._sending -= 1
            self._slot_freed.set()
            if store.max_in_flight > 1:
                # The taker may sleep on the waker meanwhile (a batch window, a backoff
                # this answer ended): it looks again. With one sender it waits for the slot
                # instead, and a wake left pending would cut its next idle wait short.
                self.wake()

    async def _respect_backoff(self) -> bool:
        """Wait out a backoff after a failure; False when a close deadline ends the actor."""
        while True:
            deadline = self._deadline if self.closing else float("inf")
            verdict = gate(time.monotonic(), not_before=self.not_before, deadline=deadline)
            if verdict.stop:
                return False  # no attempt fits before the deadline: stop now, keep the rest
            if verdict.wait <= 0:
                return True
            await self.waker.wait(verdict.wait)  # a close may come meanwhile

    async def _deliver_held(self, store: Store, items: list[Item]) -> None:
        """Deliver held ``items``; whatever the answers leave unsettled goes back."""
        try:
            endpoints = set(map(_endpoint_of, items))
            groups: dict[Endpoint, list[Item]] = (
                {endpoints.pop(): items} if len(endpoints) == 1 else _by_endpoint(items)
            )
            for endpoint, group in groups.items():
                if not await self._deliver_group(store, endpoint, group):
                    break  # paused (backoff, auth, deadline): the rest is given back
        finally:
            held = self._held
            left = [] if held.isdisjoint(items) else [i for i in items if i in held]
            delay = max(0.0, self.not_before - time.monotonic())
            await self._release(left, delay, "not sent: delivery was interrupted")
        self.signal_progress()

    async def _deliver_group(self, store: Store, endpoint: Endpoint, items: Sequence[Item]) -> bool:
        """Send ``items``, splitting around records the service refuses.

        False when delivery must pause (a retryable failure, a refused key, the close
        deadline); what is not settled by then stays held for the caller to give back.
        """
        pending = items
        while pending:
            if self.closing and time.monotonic() >= self._deadline:
                return False
            answer = await self._post(endpoint, pending)
            if answer.error is not None:
                self.note_error(answer.error)
            decision = decide(
                answer,
                pending,
                now=time.monotonic(),
                failures=self._failures,
                policy=self._policy,
                auth_retry_interval=self.settings.auth_retry_interval,
                rng=self._rng,
            )
            if isinstance(decision, Delivered):
                self.stats.auth_paused = False
                self._failures = 0
                self.not_before = 0.0
                await store.ack(decision.done)
                self._settle(decision.done)
                self.stats.sent += len(decision.done)
                if decision.dead:
                    await self._dead_letter(store, decision.dead)
                if decision.done:
                    logger.info("delivered %d record(s)", len(decision.done))
                return True
            if isinstance(decision, Retry):
                self.stats.retried += len(pending)
                self._failures = decision.failures
                delay = await self._retry_later(store, pending, decision.at, decision.reason)
                logger.warning(
                    "delivery of %d record(s) failed (%s); retrying in %.2fs",
                    len(pending),
                    decision.reason,
                    delay,
                )
                return False
            if isinstance(decision, Pause):
                # The key, or the API base, needs fixing: keep the records, try again slowly.
                await self._retry_later(store, pending, decision.at, decision.reason)
                self.stats.auth_paused = True
                logger.error("delivery paused: %s", decision.reason)
                return False
            if isinstance(decision, Refused):
                await self._dead_letter(store, decision.dead)
                pending = decision.again
            else:  # Split: the service named no record; halve until the bad ones stand alone
                if not await self._deliver_group(store, endpoint, decision.first):
                    return False
                pending = decision.rest
        return True

    async def _post(self, endpoint: Endpoint, items: Sequence[Item]) -> Answer:
        bodies = list(map(_body_of, items))
        if logger.isEnabledFor(logging.DEBUG):
            shown = f": {bodies}" if self.settings.log_bodies else ""
            logger.debug("sending %d record(s) to %s%s", len(items), endpoint.value, shown)
        self.stats.in_flight += len(items)
        try:
            return await self.client.post_encoded(endpoint, bodies, only_failures=True)
        finally:
            self.stats.in_flight -= len(items)

    # -- settling what the actor holds -------------------------------------------------

    async def _dead_letter(self, store: Store, pairs: Sequence[tuple[Item, str]]) -> None:
        await store.dead_letter(pairs, time.time())
        self._settle([i for i, _ in pairs])
        self.dead_lettered([(i.response_id, why) for i, why in pairs])

    def dead_lettered(self, records: list[tuple[str, str]]) -> None:
        """Count and log records just dead-lettered: (which record, why) each."""
        self.stats.dead_lettered += len(records)
        self.stats.failed += len(records)
        for which, why in records:
            logger.error("record %s dead-lettered: %s", which, why)
        assert self.store is not None
        report_dropped(len(records), self.store.dead_reason)

    async def _retry_later(
        self, store: Store, items: Sequence[Item], at: float, error: str
    ) -> float:
        """Give ``items`` back, due at ``at`` (``time.monotonic()``); the delay (s)."""
        self.not_before = at
        delay = max(0.0, at - time.monotonic())
        await self._give_back(store, items, delay, error)
        return delay

    async def _give_back(
        self, store: Store, items: Sequence[Item], delay: float, error: str
    ) -> None:
        """Return unsettled records to the store, due again in ``delay`` s (those past
        ``max_age`` are dead-lettered instead)."""
        if not items:
            return
        old, keep = store.expired(items, time.time())
        if old:
            why = f"older than max_age; last error: {error}"
            await self._dead_letter(store, [(i, why) for i in old])
        if keep:
            await store.give_back(keep, delay, error)
            self._settle(keep)

    def _settle(self, items: Sequence[Item]) -> None:
        """These records are accounted for: acked, dead-lettered or back in the queue."""
        self._held.difference_update(items)

    async def _release(self, items: list[Item], delay: float, error: str) -> None:
        """Give ``items`` back; never raises (a persistent row whose release fails stays
        leased, and is claimed again when its lease expires)."""
        if not items or self.store is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._give_back(self.store, items, delay, error)
            except Exception as exc:
                self.note_unexpected(exc)
            finally:
                self._settle(items)

    async def _survive(self, exc: Exception) -> None:
        """An error nobody foresaw: note it, keep the records, back off, carry on."""
        self.note_unexpected(exc)
        self._failures += 1
        now = time.monotonic()
        self.not_before = self._policy.next_attempt_at(self._failures, now=now, rng=self._rng)

    def note_error(self, exc: BaseException) -> None:
        """Remember ``exc`` as the last error health reports."""
        self.stats.last_error = f"{type(exc).__name__}: {exc}"

    def note_unexpected(self, exc: BaseException) -> None:
        """Note and log an error nobody foresaw (the actor carries on)."""
        self.note_error(exc)
        try:
            logger.error("unexpected error in the delivery actor (it carries on)", exc_info=exc)
        except Exception:
            pass  # the log itself failing must not take the actor down

    # -- flush and close ------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> int:
        """Deliver what is pending now, within ``timeout`` s; return how many are left.

        For a persistent queue "pending" means every row of this API root and key in the
        file up to now, including rows other processes sharing the file hold.
        """
        store = self.store
        if store is None:
            return 0
        if not self._alive:
            return await store.left_idle()
        mark = await store.mark()
        await store.hurry(mark)
        self._flushes += 1
        try:
            self.wake()  # cut a batch window short; the actor re-checks urgent() after
            with anyio.move_on_after(timeout):
                while self._alive:
                    # Taken before counting, so a delivery that ends meanwhile is not missed.
                    progress = self._progress
                    if await store.left(mark, len(self._held)) == 0:
                        break
                    await progress.wait()
        finally:
            self._flushes -= 1
        return await store.left(mark, len(self._held))

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
        self.closing = True
        self._deadline = time.monotonic() + timeout
        store = self.store
        if store is not None and self._alive:
            try:
                await store.hurry(await store.mark())
            except AicmError as exc:
                self.note_unexpected(exc)
        self.wake()
        if self._done is not None:
            with anyio.move_on_after(max(0.0, self._deadline - time.monotonic())):
                await self._done.wait()
            if not self._done.is_set() and self._scope is not None:
                self._scope.cancel()  # an answer outlived the deadline: stop waiting for it
                with anyio.CancelScope(shield=True):
                    await self._done.wait()
        left = 0
        if store is not None:
            with anyio.CancelScope(shield=True):
                left = await store.close()
        report_pending()  # drops still waiting for their line (a full queue's, say)
        return left

    def after_fork_in_child(self) -> None:
        """In a forked child: this engine is the parent's; forget it without touching it.

        Its SQLite handles and locks belong to the parent (a lock held by one of the
        parent's threads at the fork would stay held here forever), so nothing inherited
        is used or closed. The owner starts a fresh engine when the child tracks.
        """
        if self.store is not None:
            _FORK_ORPHANS.extend(self.store.forget_after_fork())
        self.stats.lock = threading.Lock()
        self._held = set()
        self._alive = False
        self.closing = self._closed = True
        unregister_engine(self)

    # -- health and dead letters -------------------------------------------------------

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Records this engine dead-lettered in memory (persistent ones live in the file)."""
        return [] if self.store is None else self.store.dead_letters()

    def health(self) -> DeliveryHealth:
        """A snapshot of this engine's delivery."""
        if self.store is None:  # IMMEDIATE: what is in flight is in callers' requests
            queued, oldest, capacity = 0, None, 0
            in_flight = self.stats.in_flight
        else:
            # In flight: every record the actor holds, including a batch whose request
            # has not gone out yet.
            in_flight = len(self._held)
            queued, oldest, capacity = self.store.queued(in_flight)
        stats = self.stats
        return DeliveryHealth(
            worker_alive=self._alive,
            delivery_type=self.delivery_type.value,
            queued=queued,
            in_flight=in_flight,
            sent=stats.sent,
            retried=stats.retried,
            failed=stats.failed,
            dead_lettered=stats.dead_lettered,
            discarded=dict(stats.discarded),
            oldest_pending_age=oldest,
            last_error=stats.last_error,
            queue_utilisation=(queued / capacity) if capacity else 0.0,
            auth_paused=stats.auth_paused,
            limits_refused=stats.limits_refused,
        )


def _by_endpoint(items: Sequence[Item]) -> dict[Endpoint, list[Item]]:
    groups: dict[Endpoint, list[Item]] = {}
    for item in items:
        groups.setdefault(item.endpoint, []).append(item)
    return groups
