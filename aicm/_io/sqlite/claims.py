"""Claims and leases: the transactions the delivery actor runs on a queue connection.

A row is *pending* (state 0) until the service answers 2xx, when it is deleted, or until
it is dead-lettered (state 1). Claiming a row leases it: the claimant's id goes in
``lease_owner`` and ``next_attempt_at`` moves to the lease's expiry, so a crashed owner's
rows become claimable again by themselves. An ack, a release or a dead-lettering touches a
row only while the caller still holds its lease.

Each function taking ``(conn, lock, ...)`` is one whole operation (one hop for an
`AsyncDB`): inside the fork gate and, when it writes, holding the file's lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..._core.exceptions import QueueStoreError
from ..._core.jsonplain import loads
from .schema import FORK_GATE, MAX_ID, RAISE_FLOOR, in_transaction, open_existing

Row = tuple[Any, ...]  # (id, endpoint, response_id, body, created_at, attempts)
_ROW = "SELECT id, endpoint, response_id, body, created_at, attempts FROM records"


class Scope(NamedTuple):
    """Whose rows: an API root and key fingerprint, and the lease owner acting on them."""

    api_root: str
    key_fp: str
    owner: str


# A claim leases due tried rows first (oldest due first), then fresh rows (oldest first),
# in a few statements whatever the number of rows (each row a statement returns is a
# round trip through the GIL, while producers wait for the write lock). The rows are read
# after the commit, found by ``next_attempt_at``: the lease's expiry, unique per claim.
_LEASE_TRIED = (
    "UPDATE records SET lease_owner = ?, next_attempt_at = ?, attempts = attempts + 1"
    " WHERE id IN (SELECT id FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND attempts > 0 AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?)"
)
_MARK = "SELECT upto FROM claim_marks WHERE api_root = ? AND key_fp = ?"
_FRESH_TOP = (
    "SELECT count(*), max(id) FROM (SELECT id FROM records WHERE id > ? AND api_root = ?"
    " AND key_fp = ? AND state = 0 AND attempts = 0 ORDER BY id LIMIT ?)"
)
_LEASE_FRESH = (
    "UPDATE records SET lease_owner = ?, next_attempt_at = ?, attempts = 1"
    " WHERE id > ? AND id <= ? AND api_root = ? AND key_fp = ? AND state = 0 AND attempts = 0"
)
_RAISE_MARK = (
    "INSERT INTO claim_marks (api_root, key_fp, upto) VALUES (?, ?, ?)"
    " ON CONFLICT (api_root, key_fp) DO UPDATE SET upto = max(upto, excluded.upto)"
)
_LEASED_WHERE = (
    " WHERE api_root = ? AND key_fp = ? AND state = 0 AND attempts > 0"
    " AND next_attempt_at = ? AND lease_owner = ?"
)
_LEASED = _ROW + _LEASED_WHERE
# The same rows as one JSON text: one step of the statement, not one per row. The time as
# text: JSON numbers keep 15 digits only.
_LEASED_JSON = (
    "SELECT json_group_array(json_array(id, endpoint, response_id, body,"
    " printf('%!.17g', created_at), attempts)) FROM records" + _LEASED_WHERE
)
# With no room on the disk for a lease, due rows are read, not leased: the same rows a
# claim would take, in the same order.
_PEEK_TRIED = (
    _ROW + " WHERE api_root = ? AND key_fp = ? AND state = 0 AND attempts > 0"
    " AND (next_attempt_at <= ? OR (lease_owner IS NULL AND id <= ?) OR lease_owner = ?)"
    " ORDER BY next_attempt_at, id LIMIT ?"
)
_PEEK_FRESH = (
    _ROW + " WHERE id > ? AND api_root = ? AND key_fp = ? AND state = 0 AND attempts = 0"
    " ORDER BY id LIMIT ?"
)
# Acks, dead-letterings and releases touch only rows the caller (?1) still holds: a lease
# that expired and was taken over is its new owner's. With no caller (NULL), acks and
# dead-letterings touch any: the service settled them while the disk was full, and
# their lease was never written.
_HELD = "(?1 IS NULL OR lease_owner = ?1)"
_ACK = f"DELETE FROM records WHERE {_HELD} AND id IN ({{}})"
_KILL = (
    "UPDATE records SET state = 1, lease_owner = NULL, last_error = ?2, dead_at = ?3"
    f" WHERE {_HELD} AND id = ?4 AND state = 0"
)
_RELEASE = (
    "UPDATE records SET lease_owner = NULL, next_attempt_at = ?, last_error = ?"
    " WHERE lease_owner = ? AND id IN ({})"
)
# Tried rows: in a backoff, or leased (maybe by a crashed owner). Fresh rows are left out:
# their writer rings the actor's doorbell.
NEXT_RETRY = (
    "SELECT min(next_attempt_at) FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND attempts > 0"
)
# Pending rows of a root and key with id <= ?3: the tried ones (from their index), and the
# fresh ones (by id, above the mark).
PENDING_UPTO = (
    "SELECT (SELECT count(*) FROM records WHERE api_root = ?1 AND key_fp = ?2 AND state = 0"
    " AND attempts > 0 AND id <= ?3) + (SELECT count(*) FROM records WHERE id > coalesce("
    "(SELECT upto FROM claim_marks WHERE api_root = ?1 AND key_fp = ?2), 0) AND id <= ?3"
    " AND api_root = ?1 AND key_fp = ?2 AND state = 0 AND attempts = 0)"
)
OLDEST = (
    "SELECT created_at FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " ORDER BY id LIMIT 1"
)
# Owners of live leases on rows of a root and key, and the release of one owner's leases
# when that owner is gone (see owners.owner_is_gone).
LEASE_OWNERS = (
    "SELECT DISTINCT lease_owner FROM records WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND attempts > 0 AND next_attempt_at > ? AND lease_owner IS NOT NULL"
)
_FREE_LEASES = (
    "UPDATE records SET lease_owner = NULL, next_attempt_at = ?, last_error = ?"
    " WHERE api_root = ? AND key_fp = ? AND state = 0 AND attempts > 0 AND next_attempt_at > ?"
    " AND lease_owner = ?"
)
HURRY = (
    "UPDATE records SET next_attempt_at = 0 WHERE api_root = ? AND key_fp = ? AND state = 0"
    " AND attempts > 0 AND lease_owner IS NULL AND next_attempt_at > ? AND id <= ?"
)
_COUNT_TRIED = (
    "SELECT count(*), min(created_at) FROM records WHERE api_root = ? AND key_fp = ?"
    " AND state = 0 AND attempts > 0"
)
_COUNT_FRESH = (
    "SELECT count(*), min(created_at) FROM records WHERE id > coalesce((SELECT upto FROM"
    " claim_marks WHERE api_root = ?1 AND key_fp = ?2), 0) AND api_root = ?1 AND key_fp = ?2"
    " AND state = 0 AND attempts = 0"
)

# Ids per statement, padded to a power of two (repeating the last id): a handful of
# statement shapes serve every batch size from the statement cache, within the 999
# parameters old SQLite builds allow.
_IDS_PER_STATEMENT = 512


def _mark(conn: sqlite3.Connection, scope: Scope) -> int:
    """Every fresh row of ``scope``'s root and key lies above this id."""
    found = conn.execute(_MARK, (scope.api_root, scope.key_fp)).fetchone()
    return 0 if found is None else int(found[0])


def peek(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    scope: Scope,
    limit: int,
    due: tuple[float, int],
    skip: frozenset[int],
) -> list[Row]:
    """The rows a claim would lease, read without writing (ids in ``skip`` left out).

    ``due`` is (now, hurried): tried rows due by now, or unleased with an id up to
    ``hurried``, are due; so are those the scope's owner leases (it holds only ``skip``;
    the rest it could not give back, for want of room).
    """
    del lock  # a read
    root, fp, owner = scope
    now, hurried = due
    with FORK_GATE:
        mark = _mark(conn, scope)
        rows = [
            r
            for r in conn.execute(
                _PEEK_TRIED, (root, fp, now, hurried, owner, limit + len(skip))
            ).fetchall()
            if r[0] not in skip
        ][:limit]
        if len(rows) < limit:
            fresh = conn.execute(_PEEK_FRESH, (mark, root, fp, limit - len(rows) + len(skip)))
            rows += [r for r in fresh.fetchall() if r[0] not in skip][: limit - len(rows)]
    return sorted(rows)


# Whether SQLite's JSON functions are there (built in since 3.38, in most earlier builds).
_json_functions = True


def claim(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    scope: Scope,
    limit: int,
    now: float,
    until: float,
) -> list[Row]:
    """Lease up to ``limit`` rows of ``scope`` until ``until``; in id order.

    ``until`` must differ from every other lease of the owner still held.
    """
    root, fp, owner = scope

    def lease() -> int:
        taken = conn.execute(_LEASE_TRIED, (owner, until, root, fp, now, limit)).rowcount
        wanted = limit - taken
        if wanted > 0:
            mark = _mark(conn, scope)
            count, top = conn.execute(_FRESH_TOP, (mark, root, fp, wanted)).fetchone()
            if count:
                conn.execute(_LEASE_FRESH, (owner, until, mark, top, root, fp))
            # Every fresh row of this root and key up to the new mark is leased now: up to
            # the last one taken, or, when there were fewer than wanted, up to the newest
            # row of all (the write lock is ours: no row can come in between).
            if count < wanted:
                top = conn.execute(MAX_ID).fetchone()[0]
            if top > mark:
                conn.execute(_RAISE_MARK, (root, fp, top))
            taken += count
        return int(taken)

    if not in_transaction(conn, lock, lease):
        return []
    # The rows are ours for the lease: nobody else changes them meanwhile.
    global _json_functions
    params = (root, fp, until, owner)
    with FORK_GATE:
        if _json_functions:
            try:
                (text,) = conn.execute(_LEASED_JSON, params).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such function" in str(exc):
                    _json_functions = False  # an SQLite built without them: rows one by one
                # Else a row JSON cannot carry (a BLOB another program wrote, say): read
                # this claim row by row, and the actor dead-letters that row alone.
            else:
                rows = [
                    (i, endpoint, rid, body, float(created), attempts)
                    for i, endpoint, rid, body, created, attempts in loads(text)
                ]
                rows.sort()
                return rows
        return sorted(conn.execute(_LEASED, params).fetchall())


def _by_ids(conn: sqlite3.Connection, sql: str, head: tuple[Any, ...], ids: Sequence[int]) -> None:
    """``sql`` (its ``IN ({})`` filled) with ``head`` then each chunk of ``ids``."""
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = list(ids[start : start + _IDS_PER_STATEMENT])
        chunk += [chunk[-1]] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))
        conn.execute(sql.format(", ".join("?" * len(chunk))), (*head, *chunk))


def settle(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    owner: str | None,
    acked: Sequence[int],
    killed: Sequence[tuple[int, str]],
    now: float,
) -> None:
    """Delete delivered rows and dead-letter refused ones (id, why): those ``owner`` still
    leases, or, with None, whoever leases them."""

    def work() -> None:
        if acked:
            top = max(acked)
            conn.execute(RAISE_FLOOR, (top, top))  # first: ids are never used again
            _by_ids(conn, _ACK, (owner,), acked)
        if killed:
            conn.executemany(_KILL, [(owner, why, now, i) for i, why in killed])

    in_transaction(conn, lock, work)


def release(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    owner: str,
    ids: Sequence[int],
    due: float,
    error: str,
) -> None:
    """Give rows ``owner`` still leases back, due again at ``due`` (epoch seconds)."""
    in_transaction(conn, lock, lambda: _by_ids(conn, _RELEASE, (due, error, owner), ids))


def free_leases(
    conn: sqlite3.Connection, lock: threading.Lock, scope: Scope, owners: Sequence[str], now: float
) -> int:
    """Make the live leases of ``owners`` (processes that ended) on ``scope``'s rows due now."""
    why = "its lease's owner process had ended"
    params = (now, why, scope.api_root, scope.key_fp, now)

    def work() -> int:
        return sum(conn.execute(_FREE_LEASES, (*params, owner)).rowcount for owner in owners)

    return in_transaction(conn, lock, work)


def write_many(
    conn: sqlite3.Connection, lock: threading.Lock, sql: str, params: Sequence[Sequence[Any]]
) -> None:
    """``executemany`` in one transaction."""
    in_transaction(conn, lock, lambda: conn.executemany(sql, params))


def read(
    conn: sqlite3.Connection, lock: threading.Lock, sql: str, params: Sequence[Any]
) -> list[Row]:
    """The rows of one query."""
    del lock  # a read waits for no writer (WAL)
    with FORK_GATE:
        return conn.execute(sql, params).fetchall()


def checkpoint(conn: sqlite3.Connection, lock: threading.Lock) -> None:
    """Copy the WAL into the file, so that the next write may start the WAL afresh: first
    without the file's lock (this process's writers go on), then the few pages they added
    meanwhile holding it (a WAL restarts only once all of it is copied)."""
    with FORK_GATE:
        _, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if pages > copied >= 0:
            with lock:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def count_pending(path: Path, *, api_root: str, key_fp: str) -> tuple[int, float | None]:
    """Pending rows of one root and key, and the oldest one's creation time: read on a
    short-lived connection of its own, so any thread may ask."""
    with FORK_GATE:
        try:
            conn = open_existing(path, timeout=5.0)
            try:
                count, oldest = conn.execute(_COUNT_TRIED, (api_root, key_fp)).fetchone()
                fresh, fresh_oldest = conn.execute(_COUNT_FRESH, (api_root, key_fp)).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot read the queue file {path}: {exc}") from exc
    times = [float(t) for t in (oldest, fresh_oldest) if t is not None]
    return int(count) + int(fresh), (min(times) if times else None)
