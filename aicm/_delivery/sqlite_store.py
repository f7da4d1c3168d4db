"""The persistent store: records wait in a SQLite file, leased while in flight (layer 3).

Every record is committed before ``track`` returns (group commit: concurrent producers
share one transaction). The actor claims rows under a lease, and acks, dead-letters or
releases them as the service answers; rows of a process that ended are free at once.
The file is the truth: other processes (or trackers) may share it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import anyio

from .._core.exceptions import AicmError, QueueStoreError, shown
from .._core.jsonplain import dumps
from .._core.models import Endpoint, WireRecord
from .._core.settings import Settings
from .._io.http import REQUEST_DEADLINE_FACTOR
from .._io.sqlite import SqliteQueue, SyncWriter, count_pending
from .buffer import Doorbell
from .decide import expired
from .store import Actor, DeadLetterRecord, Item

__all__ = ["SqliteQueue", "SqliteStore"]

logger = logging.getLogger("aicm.delivery")

# While rows under someone's lease wait, how often (s) the actor looks whether their
# owner process has ended (then they are free at once, see owners.py).
_DEAD_OWNER_POLL = 5.0

# Endpoint by value, for the rows the actor claims (a dict look-up, not the Enum's).
_ENDPOINTS = {e.value: e for e in Endpoint}


def claimed_items(
    rows: list[tuple[int, str, str, str, float, int]],
) -> tuple[list[Item], list[tuple[int, str]]]:
    """Claimed rows as items, and (row id, why) of those aicm cannot have written."""
    endpoints = _ENDPOINTS
    items: list[Item] = []
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
            append(Item(endpoint, rid, body, created, row_id))
            continue
        problem = _unreadable_row(e, rid, body, created)  # the rare case: say what is wrong
        if problem is None:  # a created_at stored as an integer
            append(Item(endpoints[e], rid, body, float(created), row_id))
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


def _warn_if_lease_is_short(settings: Settings) -> None:
    """Warn when a request may outlast the lease on the rows it carries: another process
    sharing the file may then claim and send them again (the service absorbs the copy by
    its ``response_id``, but it is one more request)."""
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


class SqliteStore:
    """Records in a SQLite queue file, claimed one batch at a time."""

    max_in_flight: ClassVar[int] = 1
    dead_reason: ClassVar[str] = "dead_row"

    def __init__(self, actor: Actor, settings: Settings, *, batch_limit: int) -> None:
        self._actor = actor
        self.settings = settings
        self._limit = batch_limit
        self.path: Path = settings.resolved_db_path
        self._key_fp = settings.key_fingerprint
        self.doorbell = Doorbell()
        self.writer: SyncWriter | None = SyncWriter(
            self.path, api_root=settings.api_root, key_fp=self._key_fp
        )
        self.queue: SqliteQueue | None = None
        # Pending rows as this process knows them (producers on any thread add, the actor
        # removes), and when the oldest of them was written.
        self._count_lock = threading.Lock()
        self.backlog = 0
        self._oldest_pending = 0.0
        self._owners_checked = 0.0  # time.monotonic() of the last look for ended owners
        self._started = False  # the actor has asked for its first batch
        self._claimed = 0  # rows in the batch the actor took last (0: it took none since)
        self._rechecked = False
        self._closed = False

    # -- producers and counting --------------------------------------------------------

    def _count(self, delta: int, *, oldest: float | None = None) -> None:
        """Adjust the backlog (any thread); ``oldest`` re-anchors its age."""
        with self._count_lock:
            before = self.backlog
            self.backlog = max(0, before + delta)
            if oldest is not None:
                self._oldest_pending = oldest
            elif not self.backlog:
                self._oldest_pending = 0.0
            elif not before:
                self._oldest_pending = time.time()

    def _committed(self, n: int, ok: bool) -> None:
        """A group commit of ``n`` rows (counted before it began) has ended."""
        if not ok:
            self._count(-n)
        else:
            self.doorbell.ring(n)

    async def open(self) -> None:
        settings = self.settings
        settings.require_api_key()
        _warn_if_lease_is_short(settings)
        queue = await SqliteQueue.open(self.path, api_root=settings.api_root, key_fp=self._key_fp)
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

    def put(self, record: WireRecord) -> None:
        writer = self.writer
        if writer is None:
            raise AicmError("this tracker's queue file was left behind by a fork")
        # Counted before the commit: the actor may deliver the row before we get back.
        self._count(1)
        try:
            writer.add(record.endpoint.value, record.response_id, dumps(record.wire()))
        except BaseException:
            self._count(-1)
            raise
        self.doorbell.ring()

    async def aput(self, record: WireRecord) -> None:
        if self.queue is None:
            raise AicmError("this tracker has not been started; use `async with`")
        # Counted and rung once per group commit: see the queue's hooks set in open().
        await self.queue.add(record.endpoint.value, record.response_id, dumps(record.wire()))

    # -- the actor's batches -----------------------------------------------------------

    async def next_batch(self) -> list[Item] | None:
        queue = self.queue
        assert queue is not None
        actor = self._actor
        if not self._started:
            self._started = True
            # A backlog found at start is claimed at once. Without one, the first rows
            # wait for a batch window like any later ones: an opening claim would race the
            # first track() commits (they go through a connection of their own) and take
            # them one by one.
            if self.backlog == 0:
                await self._wait(queue)
                return []
        elif self._claimed:
            claimed, self._claimed = self._claimed, 0
            if claimed < self._limit and not actor.closing:
                await self._idle(queue)
                return []
            # A full batch (more may be due now), or closing: claim again at once.
        self.doorbell.reset()
        await self._follow_the_path(queue)
        rows = await queue.claim_tuples(self._limit, lease_seconds=self.settings.lease_seconds)
        if rows:
            items, unreadable = claimed_items(rows)
            if unreadable:
                # Sent, the service would refuse them; given back, they would hold up the
                # rows claimed with them: dead-lettered at once.
                await queue.kill(unreadable)
                self._count(-len(unreadable))
                actor.dead_lettered([(f"in row {i}", why) for i, why in unreadable])
            self._rechecked = False
            self._claimed = len(rows)
            return items
        if actor.closing:
            if self._rechecked:
                return None
            # A claim that began before the last track() committed cannot see its row:
            # claim once more before stopping.
            self._rechecked = True
            return []
        await self._idle(queue)
        return []

    async def _idle(self, queue: SqliteQueue) -> None:
        self._count(0, oldest=await queue.oldest_pending_at())
        self._actor.signal_progress()
        await self._wait(queue)

    async def after_batch(self) -> None:
        # The actor copies the WAL into the file, between its batches: not the producers,
        # whose track() calls would wait for it.
        if self.queue is not None:
            await self.queue.checkpoint()

    async def _wait(self, queue: SqliteQueue) -> None:
        """Sleep until there is something to claim: fresh rows (after a batch window), a
        retry or an expired lease falling due, a flush or a close."""
        actor = self._actor
        waker = actor.waker
        doorbell = self.doorbell
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
        limit = self._limit
        interval = self.settings.batch_interval
        while not actor.urgent():
            remaining = doorbell.first_at + interval - time.monotonic()
            if remaining <= 0 or not doorbell.wait_for(waker, limit):
                return
            try:
                await waker.wait(remaining)
            finally:
                doorbell.cancel_wait()

    async def _follow_the_path(self, queue: SqliteQueue) -> None:
        """Before a claim: see SqliteQueue.follow_the_path (on failure, deliver on from the
        old file meanwhile)."""
        try:
            await queue.follow_the_path()
        except QueueStoreError as exc:
            # Logged once, not per claim: the engine's last error says it already.
            if self._actor.stats.last_error != f"{type(exc).__name__}: {exc}":
                logger.error("%s", exc)
            self._actor.note_error(exc)

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

    # -- settling ----------------------------------------------------------------------

    async def ack(self, items: Sequence[Item]) -> None:
        assert self.queue is not None
        await self.queue.ack([i.row_id for i in items if i.row_id is not None])
        self._count(-len(items))

    async def dead_letter(self, pairs: Sequence[tuple[Item, str]], now: float) -> None:
        assert self.queue is not None
        await self.queue.kill([(i.row_id, why) for i, why in pairs if i.row_id is not None])
        self._count(-len(pairs))

    def expired(self, items: Sequence[Item], now: float) -> tuple[list[Item], list[Item]]:
        return expired(items, now=now, max_age=self.settings.max_age)

    async def give_back(self, items: Sequence[Item], delay: float, error: str) -> None:
        assert self.queue is not None
        rows = [i.row_id for i in items if i.row_id is not None]
        await self.queue.release(rows, delay=delay, error=error)

    # -- flush, close, health ----------------------------------------------------------

    async def mark(self) -> int:
        assert self.queue is not None
        return await self.queue.max_id()

    async def hurry(self, mark: int) -> None:
        assert self.queue is not None
        await self.queue.hurry(mark)

    async def left(self, mark: int, held: int) -> int:
        assert self.queue is not None
        return await self.queue.pending_upto(mark)  # rows in flight stay in the file

    async def left_idle(self) -> int:
        if self.queue is None:
            return self.backlog
        return await self.queue.pending_upto(await self.queue.max_id())

    async def close(self) -> int:
        if self._closed:
            return 0
        self._closed = True
        left = 0
        if self.queue is not None:
            try:
                left = await self.queue.pending_upto(await self.queue.max_id())
            except AicmError as exc:
                self._actor.note_unexpected(exc)
                left = self.backlog
            if left:
                logger.warning("closed with %d record(s) still queued in %s", left, self.path)
            await self.queue.close()
        if self.writer is not None:
            await anyio.to_thread.run_sync(self.writer.close)
        return left

    def forget_after_fork(self) -> list[object]:
        """Drop the parent's handles (returned, for the caller to keep referenced)."""
        handles: list[object] = [h for h in (self.writer, self.queue) if h is not None]
        self.writer = None
        self.queue = None
        self._count_lock = threading.Lock()
        self.backlog = 0
        self._oldest_pending = 0.0
        return handles

    def queued(self, held: int) -> tuple[int, float | None, int]:
        # The file is the truth: other processes (or trackers) on it deliver rows too.
        # Rows stay in the file while in flight; report those apart.
        backlog: int = self.backlog
        since: float | None = self._oldest_pending
        try:
            backlog, since = count_pending(
                self.path, api_root=self.settings.api_root, key_fp=self._key_fp
            )
        except QueueStoreError:
            pass  # unreadable right now: the engine's own count is the next best
        if self.queue is not None:  # delivered while the disk was full: not queued
            backlog -= self.queue.settled_unwritten
        queued = max(0, backlog - held)
        oldest = max(0.0, time.time() - since) if backlog and since else None
        return queued, oldest, 0

    def dead_letters(self) -> list[DeadLetterRecord]:
        return []  # dead rows stay in the file: `aicm queue list --state dead`
