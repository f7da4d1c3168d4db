"""The persistent store: records wait in a SQLite file, leased while in flight (layer 3).

Every record is committed before ``track`` returns (group commit: concurrent producers
share one transaction). The actor claims rows under a lease, and acks, dead-letters or
releases them as the service answers; rows of a process that ended are free at once.
The file is the truth: other processes (or trackers) may share it. Rows name their API
root and a fingerprint of the key, never the key.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio

from .._core.exceptions import AicmError, QueueStoreError, shown
from .._core.jsonplain import dumps
from .._core.models import Endpoint, WireRecord
from .._core.settings import Settings
from .._io.http import REQUEST_DEADLINE_FACTOR
from .._io.owners import new_owner, owner_is_gone
from .._io.sqlite import AsyncWriter, SyncWriter, claims, count_pending
from .._io.sqlite.claims import Scope
from .._io.sqlite.db import AsyncDB, open_async_db, rescue_rows
from .._io.sqlite.schema import MAX_ID, disk_full
from .buffer import Doorbell
from .decide import expired
from .store import Actor, DeadLetterRecord, Item

__all__ = ["SqliteStore"]

logger = logging.getLogger("aicm.delivery")

_T = TypeVar("_T")

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
        if endpoint and type(body) is str and type(rid) is str and type(created) is float:
            append(Item(endpoint, rid, body, created, row_id))
        elif problem := _unreadable_row(e, rid, body, created):
            unreadable.append((row_id, problem))
        else:  # a created_at stored as an integer
            append(Item(endpoints[e], rid, body, float(created), row_id))
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
    """Records in a SQLite queue file, claimed one batch at a time under this process's
    lease (``owner``): one per (file, API root, key fingerprint)."""

    max_in_flight: ClassVar[int] = 1
    dead_reason: ClassVar[str] = "dead_row"

    def __init__(self, actor: Actor, settings: Settings, *, batch_limit: int) -> None:
        self._actor = actor
        self.settings = settings
        self._limit = batch_limit
        self.path: Path = settings.resolved_db_path
        self._root = settings.api_root
        self._key_fp = settings.key_fingerprint
        self.owner = new_owner()
        self._scope = Scope(self._root, self._key_fp, self.owner)
        self.doorbell = Doorbell()
        self.writer: SyncWriter | None = SyncWriter(
            self.path, api_root=self._root, key_fp=self._key_fp
        )
        self.loop_writer: AsyncWriter | None = None  # track() on the loop; made by open()
        self.db: AsyncDB | None = None  # the actor's: claims, settling, reads, checkpoints
        self._following: anyio.Lock | None = None  # moving rows out of a deleted file
        # Pending rows as this process knows them (producers on any thread add, the actor
        # removes), and when the oldest of them was written.
        self._count_lock = threading.Lock()
        self.backlog = 0
        self._oldest_pending = 0.0
        self._owners_checked = 0.0  # time.monotonic() of the last look for ended owners
        self._last_lease_until = 0.0
        # Disk full: rows read instead of leased (held by this process alone, in memory),
        # and what the service settled that the file could not record yet (acked ids;
        # dead-lettered ids and why). Those are left out of claims, and written when the
        # disk has room again. See claim().
        self._peeked: set[int] = set()
        self._leased_out: set[int] = set()  # leased by claims, not settled yet
        self._unwritten_acks: set[int] = set()
        self._unwritten_kills: dict[int, str] = {}
        self._hurried = 0  # ids up to here are due now, backoff or not (a flush's hurry)
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
        self._following = anyio.Lock()
        db = self.db = await open_async_db(self.path)
        try:
            await self._free_dead_leases()
            backlog = await self.left(await self.mark())
            oldest = await self._oldest_pending_at()
        except BaseException:
            self.db = None
            with anyio.CancelScope(shield=True):
                await db.close()
            raise
        self._count(backlog, oldest=oldest)
        # Counted and rung once per group commit, not per caller.
        self.loop_writer = AsyncWriter(
            self.path,
            api_root=self._root,
            key_fp=self._key_fp,
            counted=self._count,
            committed=self._committed,
        )

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
        if self.loop_writer is None:
            raise AicmError("this tracker has not been started; use `async with`")
        await self.loop_writer.add(record.endpoint.value, record.response_id, dumps(record.wire()))

    # -- the actor's connection --------------------------------------------------------

    async def _run(self, op: str, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn`` (an operation of `.claims`) on the actor's connection, shielded;
        QueueStoreError when SQLite fails."""
        if not self._following_now() and self._moved():
            # Every read and write goes to the file at the path: a flush counting rows
            # in the deleted file would find none left.
            try:
                await self._follow_the_path()
            except QueueStoreError:
                pass  # the path cannot take them: carry on with the old file
        assert self.db is not None
        with anyio.CancelScope(shield=True):
            try:
                result = await self.db.run(fn, *args)
            except sqlite3.Error as exc:
                raise QueueStoreError(f"{op} on {self.path} failed: {exc}") from exc
        return result

    async def _write(self, op: str, fn: Callable[..., object], *args: Any) -> bool:
        """`_run()` for a write that may wait for room: False when the disk is full."""
        try:
            await self._run(op, fn, *args)
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise
            return False
        return True

    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._run("read", claims.read, sql, params)

    def _moved(self) -> bool:
        return self.db is not None and self.db.opened.moved(self.path)

    def _following_now(self) -> bool:
        return self._following is not None and self._following.locked()

    async def _follow_the_path(self) -> None:
        """If the file was deleted or replaced, move what the old one still holds into the
        file at the path, and go on there. When that cannot be done the actor goes on
        delivering from the old file (raises QueueStoreError)."""
        assert self._following is not None
        async with self._following:
            if not self._moved():
                return
            assert self.db is not None
            await self._run("move rows", rescue_rows, self.path, self.db.opened)
            old, self.db = self.db, await open_async_db(self.path)
            self._last_lease_until = 0.0
            old.retire()

    # -- the actor's batches -----------------------------------------------------------

    async def next_batch(self) -> list[Item] | None:
        actor = self._actor
        if not self._started:
            self._started = True
            # A backlog found at start is claimed at once. Without one, the first rows
            # wait for a batch window like any later ones: an opening claim would race the
            # first track() commits (they go through a connection of their own) and take
            # them one by one.
            if self.backlog == 0:
                await self._wait()
                return []
        elif self._claimed:
            claimed, self._claimed = self._claimed, 0
            if claimed < self._limit and not actor.closing:
                await self._idle()
                return []
            # A full batch (more may be due now), or closing: claim again at once.
        self.doorbell.reset()
        try:
            await self._follow_the_path()
        except QueueStoreError as exc:
            # Logged once, not per claim: the engine's last error says it already.
            if actor.stats.last_error != f"{type(exc).__name__}: {exc}":
                logger.error("%s", exc)
            actor.note_error(exc)
        items = await self.claim(self._limit)
        if self._claimed:
            self._rechecked = False
            return items
        if actor.closing:
            if self._rechecked:
                return None
            # A claim that began before the last track() committed cannot see its row:
            # claim once more before stopping.
            self._rechecked = True
            return []
        await self._idle()
        return []

    async def claim(self, limit: int) -> list[Item]:
        """Lease up to ``limit`` due rows of this root and key for ``lease_seconds``, in id
        order: rows tried before and due again first (oldest due first), then fresh rows
        (oldest first). Rows aicm cannot have written are dead-lettered instead."""
        now = time.time()
        if self._unwritten_acks or self._unwritten_kills:
            await self._write_unwritten()
        rows: list[Any] = []
        leased = False
        if not self._peeked:
            # Each claim's expiry differs from the last one's: it names the claim's rows.
            until = max(now + self.settings.lease_seconds, self._last_lease_until + 0.001)
            self._last_lease_until = until
            try:
                rows = await self._run("claim", claims.claim, self._scope, limit, now, until)
            except QueueStoreError as exc:
                if not disk_full(exc):
                    raise
            else:
                leased = True
                self._hurried = 0
                self._leased_out.update(r[0] for r in rows)
        if not leased:
            # No room on the disk for a lease: delivering what is queued must not need
            # any. Due rows are read instead, and held in this process's memory while they
            # are sent; another process sharing the file may send them too (the service
            # counts a repeated response_id once).
            skip = frozenset(
                self._peeked
                | self._leased_out
                | self._unwritten_acks
                | self._unwritten_kills.keys()
            )
            due = (now, self._hurried)
            rows = await self._run("read", claims.peek, self._scope, limit, due, skip)
            self._peeked.update(r[0] for r in rows)
        self._claimed = len(rows)
        items, unreadable = claimed_items(rows)
        if unreadable:
            # Sent, the service would refuse them; given back, they would hold up the rows
            # claimed with them: dead-lettered at once.
            await self._settle([], dict(unreadable))
            self._count(-len(unreadable))
            self._actor.dead_lettered([(f"in row {i}", why) for i, why in unreadable])
        return items

    async def _idle(self) -> None:
        self._count(0, oldest=await self._oldest_pending_at())
        self._actor.signal_progress()
        await self._wait()

    async def after_batch(self) -> None:
        # The actor copies the WAL into the file, between its batches: not the producers,
        # whose track() calls would wait for it. With the disk full the WAL stays as it is.
        if self.db is not None:
            await self._write("checkpoint", claims.checkpoint)

    async def _wait(self) -> None:
        """Sleep until there is something to claim: fresh rows (after a batch window), a
        retry or an expired lease falling due, a flush or a close."""
        actor = self._actor
        waker = actor.waker
        doorbell = self.doorbell
        if doorbell.count == 0:
            # Nothing rung in. Fresh rows of a process that died before claiming them are
            # only found by a claim: wake at least every lease_seconds for those.
            due = await self.next_retry_due()
            idle = self.settings.lease_seconds
            timeout = idle if due is None else min(max(due - time.time(), 0.0), idle)
            if timeout > 0 and due is not None:
                # Rows wait for a lease or a backoff to end: one a process that has ended
                # held is free now, and those of a process that ends meanwhile soon.
                if await self._free_dead_leases():
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

    async def _free_dead_leases(self) -> int:
        """Make rows leased by processes of this host that have ended due now (at most once
        per _DEAD_OWNER_POLL); how many. A lease whose owner cannot be judged (another
        host, another platform) is left to expire by itself."""
        now = time.monotonic()
        if self._owners_checked and now - self._owners_checked < _DEAD_OWNER_POLL:
            return 0
        self._owners_checked = now
        owners = await self._read(claims.LEASE_OWNERS, (self._root, self._key_fp, time.time()))
        gone = [o for (o,) in owners if o != self.owner and owner_is_gone(str(o))]
        if not gone:
            return 0
        try:
            freed = await self._run(
                "free leases", claims.free_leases, self._scope, gone, time.time()
            )
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise
            return 0  # (the leases run out by themselves)
        if freed:
            logger.info("%d queued record(s) leased by an ended process are due again", freed)
        return freed

    # -- settling ----------------------------------------------------------------------

    def _unhold(self, ids: Sequence[int]) -> set[int]:
        """Settled ``ids`` are no longer held; those read while the disk was full (not
        leased in the file) are returned."""
        self._leased_out.difference_update(ids)
        read = self._peeked.intersection(ids) if self._peeked else set()
        self._peeked.difference_update(read)
        return read

    async def _write_unwritten(self) -> None:
        """Record what the service settled while the disk was full, if there is room now."""
        acks = sorted(self._unwritten_acks)
        kills = sorted(self._unwritten_kills.items())
        if await self._write("ack", claims.settle, None, acks, kills, time.time()):
            self._unwritten_acks.difference_update(acks)
            for i, _ in kills:
                self._unwritten_kills.pop(i, None)

    async def _settle(self, acked: list[int], killed: dict[int, str]) -> None:
        """Delete delivered rows and dead-letter refused ones, of those this owner holds.

        With the disk full this waits in memory (the rows are left out of claims
        meanwhile); a process starting before it is written sends them again.
        """
        op = "ack" if acked else "dead-letter"
        read = self._unhold([*acked, *killed])
        now = time.time()
        done = True
        # Leased rows (this owner's in the file), then rows read, whose lease is unwritten.
        for owner, was_read in ((self.owner, False), (None, True)):
            ack = [i for i in acked if (i in read) is was_read]
            kill = [(i, why) for i, why in killed.items() if (i in read) is was_read]
            if done and (ack or kill):
                done = await self._write(op, claims.settle, owner, ack, kill, now)
        if not done:
            self._unwritten_acks.update(acked)
            self._unwritten_kills.update(killed)

    async def ack(self, items: Sequence[Item]) -> None:
        await self._settle([i.row_id for i in items if i.row_id is not None], {})
        self._count(-len(items))

    async def dead_letter(self, pairs: Sequence[tuple[Item, str]], now: float) -> None:
        await self._settle([], {i.row_id: why for i, why in pairs if i.row_id is not None})
        self._count(-len(pairs))

    def expired(self, items: Sequence[Item], now: float) -> tuple[list[Item], list[Item]]:
        return expired(items, now=now, max_age=self.settings.max_age)

    async def give_back(self, items: Sequence[Item], delay: float, error: str) -> None:
        """Give leased rows back, due again in ``delay`` s. With the disk full they stay
        leased to this owner in the file: claims made by reading take them again (see
        claims.peek); other processes wait for the lease."""
        ids = [i.row_id for i in items if i.row_id is not None]
        read = self._unhold(ids)  # (rows only read were never taken from the file)
        if leased := [i for i in ids if i not in read]:
            due = time.time() + delay
            await self._write("release", claims.release, self.owner, leased, due, error)

    # -- flush, close, health ----------------------------------------------------------

    async def next_retry_due(self) -> float | None:
        """When the earliest retried or leased row of this root and key is due (epoch s)."""
        rows = await self._read(claims.NEXT_RETRY, (self._root, self._key_fp))
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    async def _oldest_pending_at(self) -> float:
        """When the oldest pending row of this root and key was written (0.0: none)."""
        rows = await self._read(claims.OLDEST, (self._root, self._key_fp))
        # Not a number: a row another program wrote (the actor dead-letters it when it
        # claims it); its age is unknown until then.
        return float(rows[0][0]) if rows and type(rows[0][0]) in (int, float) else 0.0

    async def mark(self) -> int:
        return int((await self._read(MAX_ID, ()))[0][0])  # the highest row id in the file

    async def hurry(self, mark: int) -> None:
        params = [(self._root, self._key_fp, time.time(), mark)]
        self._hurried = max(self._hurried, mark)  # for claims made by reading
        await self._write("hurry", claims.write_many, claims.HURRY, params)

    async def left(self, mark: int, held: int = 0) -> int:
        """Pending rows of this root and key with ``id <= mark`` (those in flight stay in
        the file); rows delivered or dead-lettered while the disk was full are settled."""
        rows = await self._read(claims.PENDING_UPTO, (self._root, self._key_fp, mark))
        settled = self._unwritten_acks | self._unwritten_kills.keys()
        return max(0, int(rows[0][0]) - sum(1 for i in settled if i <= mark))

    async def left_idle(self) -> int:
        if self.db is None:
            return self.backlog
        return await self.left(await self.mark())

    async def close(self) -> int:
        if self._closed:
            return 0
        self._closed = True
        left = 0
        if self.db is not None:
            try:
                left = await self.left(await self.mark())
            except AicmError as exc:
                self._actor.note_unexpected(exc)
                left = self.backlog
            if left:
                logger.warning("closed with %d record(s) still queued in %s", left, self.path)
            if self._unwritten_acks or self._unwritten_kills:
                try:
                    await self._write_unwritten()
                except QueueStoreError:
                    pass  # the rows stay pending: a later process sends them again
            try:
                if self.loop_writer is not None:
                    await self.loop_writer.close()
            finally:
                await self.db.close()
        if self.writer is not None:
            await anyio.to_thread.run_sync(self.writer.close)
        return left

    def forget_after_fork(self) -> list[object]:
        """Drop the parent's handles (returned, for the caller to keep referenced)."""
        handles = [self.writer, self.loop_writer, self.db]
        self.writer = self.loop_writer = self.db = None
        self._count_lock = threading.Lock()
        self.backlog = 0
        self._oldest_pending = 0.0
        return [h for h in handles if h is not None]

    def queued(self, held: int) -> tuple[int, float | None, int]:
        # The file is the truth: other processes (or trackers) on it deliver rows too.
        # Rows stay in the file while in flight; report those apart.
        backlog: int = self.backlog
        since: float | None = self._oldest_pending
        try:
            backlog, since = count_pending(self.path, api_root=self._root, key_fp=self._key_fp)
        except QueueStoreError:
            pass  # unreadable right now: the engine's own count is the next best
        # Delivered while the disk was full: not queued.
        backlog -= len(self._unwritten_acks) + len(self._unwritten_kills)
        queued = max(0, backlog - held)
        oldest = max(0.0, time.time() - since) if backlog and since else None
        return queued, oldest, 0

    def dead_letters(self) -> list[DeadLetterRecord]:
        return []  # dead rows stay in the file: `aicm queue list --state dead`
