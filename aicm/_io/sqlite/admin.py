"""Administration of queue files (the ``aicm queue`` command).

Each function runs on a short-lived connection of its own, so it may run while trackers
use the file: reads open it read-only; a write is one short transaction that leaves rows
under a live lease alone. A file that does not exist, is not SQLite, or holds no queue
raises QueueStoreError and is left as it was.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs

from ..._core.exceptions import QueueStoreError
from .schema import (
    DEAD,
    FORK_GATE,
    MAX_ID,
    PENDING,
    RAISE_FLOOR,
    SCHEMA_VERSION,
    check_queue,
    file_lock,
    foreign,
    in_transaction,
    open_existing,
)

_T = TypeVar("_T")

_BUSY_SECONDS = 5.0  # how long a command waits for a tracker's write lock
_LIVE_LEASE = "(lease_owner IS NOT NULL AND next_attempt_at > ?)"
_STATE_NAMES = {PENDING: "pending", DEAD: "dead"}


def _state_name(state: int) -> str:
    return _STATE_NAMES.get(state, str(state))


@attrs.frozen
class QueueEntry:
    """One row of a queue file, as an administrator sees it (the body is the record JSON);
    built from list_queue's columns, in their order."""

    id: int = attrs.field(converter=int)
    state: str = attrs.field(converter=_state_name)
    endpoint: str = attrs.field(converter=str)
    response_id: str = attrs.field(converter=str)
    api_root: str = attrs.field(converter=str)
    attempts: int = attrs.field(converter=int)
    created_at: float = attrs.field(converter=float)
    next_attempt_at: float = attrs.field(converter=float)
    leased: bool = attrs.field(converter=bool)
    last_error: str | None
    dead_at: float | None = attrs.field(converter=attrs.converters.optional(float))
    body: str = attrs.field(converter=str)


@attrs.frozen(kw_only=True)
class QueueSummary:
    """Counts of a queue file: by state, under a live lease, oldest pending, bytes on disk."""

    pending: int
    leased: int
    dead: int
    oldest_pending_at: float | None
    oldest_dead_at: float | None
    size_bytes: int
    api_roots: dict[str, int]


@attrs.frozen(kw_only=True)
class RetryOutcome:
    """What ``retry_dead`` did: rows made pending, and the ids asked for that were not dead."""

    retried: int
    not_dead: tuple[int, ...]


@attrs.frozen(kw_only=True)
class PurgeOutcome:
    """What ``purge_rows`` did: rows deleted, and pending rows kept for their live lease."""

    deleted: int
    kept_leased: int


def _size_on_disk(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except OSError:
            pass
    return total


def _connect(path: Path, *, write: bool) -> sqlite3.Connection:
    """Open an existing queue file (never create one) and check it is a queue."""
    if not path.exists():
        raise QueueStoreError(f"no queue file at {path}")
    if not path.is_file():
        raise QueueStoreError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise QueueStoreError(f"{path} is empty: not an aicm queue file")
    try:
        conn = open_existing(path, timeout=_BUSY_SECONDS, write=write, autocommit=True)
    except sqlite3.Error as exc:
        raise QueueStoreError(f"cannot open the queue file {path}: {exc}") from exc
    try:
        if check_queue(conn, path) != SCHEMA_VERSION:
            raise foreign(path)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.DatabaseError):
            raise QueueStoreError(f"{path} is not a usable queue file: {exc}") from exc
        raise
    return conn


def _admin(path: Path, op: str, *, write: bool, work: Callable[[sqlite3.Connection], _T]) -> _T:
    """``work(conn)`` on a connection of its own; with ``write``, in one IMMEDIATE
    transaction holding this process's lock on the file."""
    with FORK_GATE:
        conn = _connect(path, write=write)
    try:
        if write:
            return in_transaction(conn, file_lock(path), lambda: work(conn))
        with FORK_GATE:
            return work(conn)
    except sqlite3.Error as exc:
        raise QueueStoreError(f"{op} on {path} failed: {exc}") from exc
    finally:
        with FORK_GATE:
            conn.close()


def check_queue_file(path: Path) -> None:
    """Raise [`QueueStoreError`][aicm.QueueStoreError] unless ``path`` is an existing, readable
    queue file."""
    _admin(path, "check", write=False, work=lambda conn: None)


def summarize_queue(path: Path) -> QueueSummary:
    """Counts of the queue file at ``path`` (read-only)."""

    def work(conn: sqlite3.Connection) -> QueueSummary:
        now = time.time()
        pending, leased, oldest, dead, oldest_dead = conn.execute(
            "SELECT"
            " coalesce(sum(state = 0), 0),"
            f" coalesce(sum(state = 0 AND {_LIVE_LEASE}), 0),"
            " min(CASE WHEN state = 0 THEN created_at END),"
            " coalesce(sum(state = 1), 0),"
            " min(CASE WHEN state = 1 THEN dead_at END)"
            " FROM records",
            (now,),
        ).fetchone()
        roots = dict(
            conn.execute(
                "SELECT api_root, count(*) FROM records GROUP BY api_root ORDER BY api_root"
            ).fetchall()
        )
        return QueueSummary(
            pending=int(pending),
            leased=int(leased),
            dead=int(dead),
            oldest_pending_at=None if oldest is None else float(oldest),
            oldest_dead_at=None if oldest_dead is None else float(oldest_dead),
            size_bytes=_size_on_disk(path),
            api_roots={str(k): int(v) for k, v in roots.items()},
        )

    return _admin(path, "stats", write=False, work=work)


def list_queue(path: Path, *, state: str | None = None, limit: int = 50) -> list[QueueEntry]:
    """Up to ``limit`` rows, oldest first; ``state`` is ``"pending"``, ``"dead"`` or None (both)."""
    states = {"pending": (PENDING,), "dead": (DEAD,), None: (PENDING, DEAD)}[state]

    def work(conn: sqlite3.Connection) -> list[QueueEntry]:
        now = time.time()
        marks = ", ".join("?" for _ in states)
        rows = conn.execute(
            "SELECT id, state, endpoint, response_id, api_root, attempts, created_at,"
            f" next_attempt_at, {_LIVE_LEASE}, last_error, dead_at, body"
            f" FROM records WHERE state IN ({marks}) ORDER BY id LIMIT ?",
            (now, *states, limit),
        ).fetchall()
        return [QueueEntry(*r) for r in rows]

    return _admin(path, "list", write=False, work=work)


def retry_dead(path: Path, ids: Sequence[int] | None = None) -> RetryOutcome:
    """Make dead rows pending again, due now: those in ``ids``, or every one when None."""

    def work(conn: sqlite3.Connection) -> RetryOutcome:
        now = time.time()
        # attempts is kept (> 0): a running actor's next-retry check then sees the row as due.
        revive = (
            "UPDATE records SET state = 0, next_attempt_at = ?, lease_owner = NULL,"
            " dead_at = NULL, attempts = max(attempts, 1) WHERE state = 1"
        )
        if ids is None:
            return RetryOutcome(retried=conn.execute(revive, (now,)).rowcount, not_dead=())
        wanted = sorted(set(ids))
        among = f" AND id IN ({', '.join('?' * len(wanted))})"
        found = conn.execute("SELECT id FROM records WHERE state = 1" + among, wanted)
        dead = {int(r[0]) for r in found.fetchall()}
        retried = conn.execute(revive + among, (now, *wanted)).rowcount
        return RetryOutcome(retried=retried, not_dead=tuple(i for i in wanted if i not in dead))

    return _admin(path, "retry", write=True, work=work)


def purge_rows(path: Path, *, state: str) -> PurgeOutcome:
    """Delete rows: ``"dead"``, ``"pending"`` or ``"all"``. Rows under a live lease stay."""
    if state not in ("dead", "pending", "all"):
        raise ValueError(f"state must be 'dead', 'pending' or 'all', got {state!r}")

    def work(conn: sqlite3.Connection) -> PurgeOutcome:
        now = time.time()
        deleted = 0
        kept = 0
        (top,) = conn.execute(MAX_ID).fetchone()  # no id in use now may be given again
        conn.execute(RAISE_FLOOR, (top, top))
        if state in ("dead", "all"):
            deleted += conn.execute("DELETE FROM records WHERE state = 1").rowcount
        if state in ("pending", "all"):
            deleted += conn.execute(
                f"DELETE FROM records WHERE state = 0 AND NOT {_LIVE_LEASE}", (now,)
            ).rowcount
            kept = int(
                conn.execute(
                    f"SELECT count(*) FROM records WHERE state = 0 AND {_LIVE_LEASE}", (now,)
                ).fetchone()[0]
            )
        return PurgeOutcome(deleted=deleted, kept_leased=kept)

    return _admin(path, "purge", write=True, work=work)


@attrs.frozen(kw_only=True)
class RetargetOutcome:
    """What ``retarget_rows`` did: rows pointed at the new service, and rows left where they
    were for their live lease (a tracker is sending them now)."""

    moved: int
    kept_leased: int


def retarget_rows(
    path: Path, *, api_root: str, key_fp: str | None = None, from_root: str | None = None
) -> RetargetOutcome:
    """Point rows queued for another service at ``api_root``: those of ``from_root``, or of
    every other root (and, given ``key_fp``, every other key); with ``key_fp`` they also
    carry that key's fingerprint. Rows under a live lease stay as they are.

    A moved pending row is due now, and counts as tried (``attempts`` at least 1): the new
    root's claims find it by its due time, where a fresh row could lie under that root's
    claim mark. A dead row stays dead (``retry`` revives it for the new root).
    """
    differs = "api_root != :root" if key_fp is None else "(api_root != :root OR key_fp != :fp)"
    chosen = differs if from_root is None else f"api_root = :source AND {differs}"
    live = _LIVE_LEASE.replace("?", ":now")

    def work(conn: sqlite3.Connection) -> RetargetOutcome:
        params = {"root": api_root, "fp": key_fp, "now": time.time(), "source": from_root}
        moved = conn.execute(
            "UPDATE records SET api_root = :root, key_fp = coalesce(:fp, key_fp),"
            " lease_owner = NULL, attempts = max(attempts, 1),"
            " next_attempt_at = CASE WHEN state = 0 THEN :now ELSE next_attempt_at END"
            f" WHERE {chosen} AND NOT (state = 0 AND {live})",
            params,
        ).rowcount
        (kept,) = conn.execute(
            f"SELECT count(*) FROM records WHERE {chosen} AND state = 0 AND {live}", params
        ).fetchone()
        return RetargetOutcome(moved=moved, kept_leased=int(kept))

    return _admin(path, "retarget", write=True, work=work)
