"""The async side of a queue file: group-committed adds, claims, acks, retries, dead letters.

Rows name their API root and a fingerprint of the key, never the key.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from ..._core.exceptions import QueueStoreError
from ..owners import new_owner, owner_is_gone
from . import claims
from .claims import Scope
from .db import AsyncDB, on_asyncio, open_async_db, rescue_rows
from .schema import MAX_ID, disk_full, raise_write_error
from .writer import RowTuple, impatient, insert, patiently

_T = TypeVar("_T")

# Group commits of at most this many rows are made on the event loop itself when they
# need not wait for a lock (see writer.insert); larger ones on the connection's thread.
_ROWS_COMMITTED_ON_LOOP = 4


class _FutureEvent:
    """``anyio.Event`` for asyncio, on a plain future per waiter.

    Every ``track()`` on a persistent queue waits once for its commit, and anyio's event
    costs 0.7 us more per wait. Each waiter has a future of its own: cancelling a task
    cancels the future it awaits, and that must not end the other callers' wait.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._set = True
        for waiter in self._waiters:
            if not waiter.done():  # a cancelled waiter's future is done already
                waiter.set_result(None)
        self._waiters.clear()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            await anyio.lowlevel.checkpoint()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


class _Commit:
    """One group commit: the rows of every caller in it, and its outcome."""

    __slots__ = ("done", "error", "rows")

    def __init__(self, done: _FutureEvent | anyio.Event) -> None:
        self.rows: list[RowTuple] = []
        self.done = done
        self.error: BaseException | None = None


class SqliteQueue:
    """The async side of a queue file: group-committed adds, claims, acks, retries, dead
    letters.

    One instance per (file, API root, key fingerprint); ``owner`` identifies its leases.
    """

    def __init__(self, db: AsyncDB, path: Path, *, api_root: str, key_fp: str) -> None:
        self.db = db  # the actor's: claims, acks, reads, checkpoints
        self._following = False  # moving rows out of a deleted file (see follow_the_path)
        self._following_lock = anyio.Lock()
        self.path = path
        self.api_root = api_root
        self.key_fp = key_fp
        self.owner = new_owner()
        self.scope = Scope(api_root, key_fp, self.owner)
        self._last_lease_until = 0.0
        # Disk full: rows read instead of leased (held by this process alone, in memory),
        # and what the service settled that the file could not record yet (acked ids;
        # dead-lettered ids and why). Those are left out of claims, and written when the
        # disk has room again. See claim_tuples.
        self._peeked: set[int] = set()
        self._leased_out: set[int] = set()  # leased by claims, not settled yet
        self._unwritten_acks: set[int] = set()
        self._unwritten_kills: dict[int, str] = {}
        self._hurried = 0  # ids up to here are due now, backoff or not (a flush's hurry)
        # Adds commit on a connection (and so a thread) of their own, opened on the first
        # one: on the actor's, they would wait behind its claims, reads and checkpoints.
        self._writes: AsyncDB | None = None
        self._opening_writes = anyio.Lock()
        self._asyncio = on_asyncio()
        self._new_done: Callable[[], _FutureEvent | anyio.Event] = (
            _FutureEvent if self._asyncio else anyio.Event
        )
        self._open = _Commit(self._new_done())  # the rows waiting for the next transaction
        # A caller committing for everyone (see add). One at a time: two (one running,
        # the next queued) measured no faster, and make more, smaller commits.
        self._committing = False
        self.commits = 0  # add transactions: fewer than calls when calls overlap
        # Told of each group commit (its number of rows): before it starts, and after it
        # ends (True when committed). Once per commit, not per caller: a caller cancelled
        # while it waits still has its row committed with the others, and counted.
        self.before_commit: Callable[[int], None] = lambda n: None
        self.after_commit: Callable[[int, bool], None] = lambda n, committed: None

    @classmethod
    async def open(cls, path: Path, *, api_root: str, key_fp: str) -> SqliteQueue:
        """Open or create the queue file at ``path``."""
        return cls(await open_async_db(path), path, api_root=api_root, key_fp=key_fp)

    async def _guard(self, op: str, fn: Callable[..., _T], *args: Any) -> _T:
        if not self._following and self.db.opened.moved(self.path):
            # Every read and write goes to the file at the path: a flush counting rows
            # in the deleted file would find none left.
            try:
                await self.follow_the_path()
            except QueueStoreError:
                pass  # the path cannot take them: carry on with the old file
        with anyio.CancelScope(shield=True):
            try:
                result = await self.db.run(fn, *args)
            except sqlite3.Error as exc:
                raise QueueStoreError(f"{op} on {self.path} failed: {exc}") from exc
        return result

    async def _write(self, op: str, fn: Callable[..., object], *args: Any) -> bool:
        """`_guard()` for a write that may wait for room: False when the disk is full."""
        try:
            await self._guard(op, fn, *args)
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise
            return False
        return True

    async def add(self, endpoint: str, response_id: str, body: str) -> None:
        """Commit one row; concurrent callers share one transaction (group commit).

        A caller who finds no commit under way becomes the committer: it commits the rows
        gathered so far, and goes on committing whatever gathers meanwhile.
        """
        batch = self._open
        batch.rows.append((endpoint, response_id, body))
        if not self._committing:
            self._committing = True
            interrupted: BaseException | None = None
            try:
                # Let the tasks that are ready to run add their rows first: one commit
                # then carries many callers. A committer cancelled here still commits the
                # rows it gathered (other callers' with them), then takes its cancellation.
                try:
                    if self._asyncio:  # (anyio's checkpoint there, without its look-ups)
                        await asyncio.sleep(0)
                    else:
                        await anyio.lowlevel.checkpoint()
                except BaseException as exc:
                    interrupted = exc
                while self._open.rows:
                    await self._commit_open()
            finally:
                self._committing = False
            if interrupted is not None:
                raise interrupted
        if not batch.done.is_set():
            await batch.done.wait()
        if batch.error is not None:
            raise_write_error(self.path, batch.error)

    async def _commit_open(self) -> None:
        """Commit the rows gathered so far, for all their callers."""
        commit, self._open = self._open, _Commit(self._new_done())
        rows, n = commit.rows, len(commit.rows)
        self.before_commit(n)
        try:
            now = time.time()
            writes = self._writes
            # A few rows are committed right here when nothing holds the file: that takes
            # about as long as the hop to the connection's thread and back. Awaits are
            # shielded: the rows taken must be committed, the caller cancelled or not.
            if (
                writes is None
                or n > _ROWS_COMMITTED_ON_LOOP
                or not writes.run_now(insert, rows, self.api_root, self.key_fp, now, False)
            ):
                with anyio.CancelScope(shield=True):
                    writes = writes or await self._open_writes()
                    await writes.run(patiently, insert, rows, self.api_root, self.key_fp, now)
            self.commits += 1
            if writes is not None and writes.opened.moved(self.path):
                with anyio.CancelScope(shield=True):
                    await self._follow_the_path_for_writes(writes)
        except Exception as exc:
            commit.error = exc
            self.after_commit(n, False)
        else:
            self.after_commit(n, True)
        commit.done.set()

    async def _open_writes(self) -> AsyncDB:
        async with self._opening_writes:
            if self._writes is None:
                writes = await open_async_db(self.path)
                await writes.run(impatient)  # (see writer.insert)
                self._writes = writes
            return self._writes

    async def _follow_the_path_for_writes(self, writes: AsyncDB) -> None:
        """The file was deleted or replaced: move the rows (these commits' with them) into
        the file at the path, and write there next; raises QueueStoreError if impossible."""
        try:
            await writes.run(patiently, rescue_rows, self.path, writes.opened)
        except sqlite3.Error as exc:
            raise QueueStoreError(f"moving rows into {self.path} failed: {exc}") from exc
        self._writes = None
        writes.retire()

    async def follow_the_path(self) -> None:
        """The actor's connection: if the file was deleted or replaced, move what the old
        one still holds into the file at the path, and go on there. When that cannot be
        done the actor goes on delivering from the old file (raises QueueStoreError)."""
        async with self._following_lock:
            if not self.db.opened.moved(self.path):
                return
            self._following = True
            try:
                await self._guard("move rows", rescue_rows, self.path, self.db.opened)
                new_db = await open_async_db(self.path)
            finally:
                self._following = False
            old, self.db = self.db, new_db
            self._last_lease_until = 0.0
            old.retire()

    async def claim_tuples(
        self, limit: int, *, lease_seconds: float
    ) -> list[tuple[int, str, str, str, float, int]]:
        """Lease up to ``limit`` due rows of this root and key, in id order, as tuples
        (id, endpoint, response_id, body, created_at, attempts).

        Rows tried before and due again are taken first (oldest due first), then fresh
        rows (oldest first).
        """
        now = time.time()
        if self._unwritten_acks or self._unwritten_kills:
            await self._write_unwritten()
        if not self._peeked:
            # Each claim's expiry differs from the last one's: it names the claim's rows.
            until = max(now + lease_seconds, self._last_lease_until + 0.001)
            self._last_lease_until = until
            try:
                rows: list[Any] = await self._guard(
                    "claim", claims.claim, self.scope, limit, now, until
                )
            except QueueStoreError as exc:
                if not disk_full(exc):
                    raise
            else:
                self._hurried = 0
                self._leased_out.update(r[0] for r in rows)
                return rows
        # No room on the disk for a lease: delivering what is queued must not need any.
        # Due rows are read instead, and held in this process's memory while they are
        # sent; another process sharing the file may send them too (the service counts a
        # repeated response_id once).
        skip = frozenset(
            self._peeked | self._leased_out | self._unwritten_acks | self._unwritten_kills.keys()
        )
        due = (now, self._hurried)
        rows = await self._guard("read", claims.peek, self.scope, limit, due, skip)
        self._peeked.update(r[0] for r in rows)
        return rows

    async def _write_unwritten(self) -> None:
        """Record what the service settled while the disk was full, if there is room now."""
        acks = sorted(self._unwritten_acks)
        kills = sorted(self._unwritten_kills.items())
        if await self._write("ack", claims.settle_unwritten, acks, kills, time.time()):
            self._unwritten_acks.difference_update(acks)
            for i, _ in kills:
                self._unwritten_kills.pop(i, None)

    def _split(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """``ids`` read while the disk was full, and the leased ones (no longer held)."""
        self._leased_out.difference_update(ids)
        peeked = self._peeked
        read = [i for i in ids if i in peeked] if peeked else []
        if not read:
            return [], list(ids)
        peeked.difference_update(read)
        taken = set(read)
        return read, [i for i in ids if i not in taken]

    async def free_dead_leases(self) -> int:
        """Make rows leased by processes of this host that no longer run due now; how many.

        A lease whose owner cannot be judged (another host, another platform) is left to
        expire by itself.
        """
        now = time.time()
        owners = await self._read(claims.LEASE_OWNERS, (self.api_root, self.key_fp, now))
        gone = [o for (o,) in owners if o != self.owner and owner_is_gone(str(o))]
        if not gone:
            return 0
        try:
            return await self._guard("free leases", claims.free_leases, self.scope, gone, now)
        except QueueStoreError as exc:
            if not disk_full(exc):
                raise
            return 0  # (the leases run out by themselves)

    async def ack(self, ids: Sequence[int]) -> None:
        """Delete delivered rows (those this owner still holds).

        With the disk full the deletion waits in memory (the rows are left out of claims
        meanwhile); a process starting before it is written sends them again.
        """
        if not ids:
            return
        read, leased = self._split(ids)
        done = not leased or await self._write("ack", claims.ack, self.owner, leased)
        if done and read:
            done = await self._write("ack", claims.settle_unwritten, read, (), time.time())
        if not done:
            self._unwritten_acks.update(ids)

    async def release(self, ids: Sequence[int], *, delay: float, error: str) -> None:
        """Give leased rows back, due again in ``delay`` seconds.

        With the disk full they stay leased to this owner in the file: claims made by
        reading take them again (see claims.peek); other processes wait for the lease.
        """
        _, leased = self._split(ids)  # rows only read were never taken from the file
        if leased:
            due = time.time() + delay
            await self._write("release", claims.release, self.owner, leased, due, error)

    async def kill(self, reasons: Sequence[tuple[int, str]]) -> None:
        """Dead-letter rows (those this owner still holds), each with its reason."""
        if not reasons:
            return
        now = time.time()
        read, leased = self._split([i for i, _ in reasons])
        why = dict(reasons)
        kills = [(why[i], now, i, self.owner) for i in leased]
        done = not leased or await self._write("dead-letter", claims.write_many, claims.KILL, kills)
        if done and read:
            unwritten = [(i, why[i]) for i in read]
            done = await self._write("dead-letter", claims.settle_unwritten, (), unwritten, now)
        if not done:
            self._unwritten_kills.update(why)

    async def checkpoint(self) -> None:
        """Copy the WAL into the file (see `.claims.checkpoint()`); the actor calls this.
        With the disk full the WAL stays as it is until there is room."""
        await self._write("checkpoint", claims.checkpoint)

    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._guard("read", claims.read, sql, params)

    async def next_retry_due(self) -> float | None:
        """When the earliest retried or leased row of this root and key is due (epoch s)."""
        rows = await self._read(claims.NEXT_RETRY, (self.api_root, self.key_fp))
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    async def oldest_pending_at(self) -> float:
        """When the oldest pending row of this root and key was written (0.0: none)."""
        rows = await self._read(claims.OLDEST, (self.api_root, self.key_fp))
        # Not a number: a row another program wrote (the actor dead-letters it when it
        # claims it); its age is unknown until then.
        return float(rows[0][0]) if rows and type(rows[0][0]) in (int, float) else 0.0

    async def max_id(self) -> int:
        """The highest row id in the file."""
        rows = await self._read(MAX_ID, ())
        return int(rows[0][0])

    async def pending_upto(self, max_id: int) -> int:
        """How many pending rows of this root and key have ``id <= max_id``; rows delivered
        or dead-lettered while the disk was full count as settled."""
        rows = await self._read(claims.PENDING_UPTO, (self.api_root, self.key_fp, max_id))
        settled = self._unwritten_acks | self._unwritten_kills.keys()
        return max(0, int(rows[0][0]) - sum(1 for i in settled if i <= max_id))

    async def hurry(self, max_id: int) -> None:
        """Make rows waiting out a backoff due now (a flush wants them delivered)."""
        params = [(self.api_root, self.key_fp, time.time(), max_id)]
        self._hurried = max(self._hurried, max_id)  # for claims made by reading
        await self._write("hurry", claims.write_many, claims.HURRY, params)

    @property
    def settled_unwritten(self) -> int:
        """Rows the service settled that a full disk kept from being recorded in the file."""
        return len(self._unwritten_acks) + len(self._unwritten_kills)

    async def close(self) -> None:
        """Close the connections (recording first what a full disk kept unwritten, if it can)."""
        if self._unwritten_acks or self._unwritten_kills:
            try:
                await self._write_unwritten()
            except QueueStoreError:
                pass  # the rows stay pending: a later process sends them again
        writes, self._writes = self._writes, None
        try:
            if writes is not None:
                await writes.close()
        finally:
            await self.db.close()
