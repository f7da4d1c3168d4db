"""The collector's SQLite store (layer 6): every received record, deduplicated on arrival.

One table per kind of record; each request's records go in one transaction. A repeated
event is recognised in memory: the store keeps every stored (service, response_id) pair
per kind, read back from the file when it opens one, and inserts only records it has not
seen. (A unique index did the same in SQLite, but random response ids made every batch
dirty hundreds of its pages, and the cost of a batch grew with the table.) So one store,
one process, owns its file. The API key and the Authorization header are never stored.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import attrs

from aicm._core.exceptions import ConfigError
from aicm._core.jsonplain import dumps, loads
from aicm._core.wire import KINDS, Kind, dedup_key

__all__ = ["GroupWriter", "PendingWrite", "RecordStore", "kind_from_name"]

#: 1: unique indexes on (service, response_id). 2: none, the store dedups in memory.
#: 3: ``track.api_id`` may be NULL: the current /track record has none.
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS track (
    seq INTEGER PRIMARY KEY,
    api_id TEXT,                        -- NULL: the current record (customer_key, no api_id)
    service_key TEXT NOT NULL,
    response_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,            -- as sent: ISO-8601, or epoch seconds
    payload TEXT NOT NULL,              -- JSON
    client_customer_key TEXT,           -- client_customer_key, or customer_key (current)
    context TEXT,                       -- JSON; NULL when absent
    received_at REAL NOT NULL,          -- Unix time
    user_agent TEXT
);

CREATE TABLE IF NOT EXISTS track_usage (
    seq INTEGER PRIMARY KEY,
    service TEXT NOT NULL,              -- dedup scope: service_id, else config_id, else ''
    response_id TEXT NOT NULL,
    config_id TEXT,
    service_id TEXT,
    timestamp TEXT,
    usage TEXT,                         -- JSON; NULL when absent
    client_customer_key TEXT,
    context TEXT,                       -- JSON; NULL when absent
    base_url TEXT,
    extra TEXT,                         -- JSON object of any other fields; NULL when none
    received_at REAL NOT NULL,
    user_agent TEXT
);

-- The management API's customers, webhooks and custom services, as last written.
-- (A table an older aicm of this version never reads, so the version stays.)
CREATE TABLE IF NOT EXISTS api_object (
    seq INTEGER PRIMARY KEY,            -- creation order, kept by updates
    kind TEXT NOT NULL,                 -- customers, webhooks or custom_services
    key TEXT NOT NULL,                  -- its uuid
    value TEXT NOT NULL,                -- JSON object
    UNIQUE (kind, key)
);
"""
# From version 1: the dedup keys live in memory now (the data is kept).
_MIGRATE_FROM_V1 = """
DROP INDEX IF EXISTS track_event;
DROP INDEX IF EXISTS track_usage_event;
"""

# From version 2: track.api_id loses NOT NULL (SQLite rebuilds the table to drop it).
_MIGRATE_TRACK_NULLABLE_API_ID = """
ALTER TABLE track RENAME TO track_v2;
CREATE TABLE track (
    seq INTEGER PRIMARY KEY,
    api_id TEXT,
    service_key TEXT NOT NULL,
    response_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    payload TEXT NOT NULL,
    client_customer_key TEXT,
    context TEXT,
    received_at REAL NOT NULL,
    user_agent TEXT
);
INSERT INTO track SELECT * FROM track_v2;
DROP TABLE track_v2;
"""

_INSERT_TRACK = (
    "INSERT INTO track (api_id, service_key, response_id, timestamp, payload,"
    " client_customer_key, context, received_at, user_agent) VALUES (?,?,?,?,?,?,?,?,?)"
)
_INSERT_USAGE = (
    "INSERT INTO track_usage (service, response_id, config_id, service_id,"
    " timestamp, usage, client_customer_key, context, base_url, extra, received_at,"
    " user_agent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
# Where a row of each kind holds its dedup key, (service, response_id).
_KEY_COLUMNS: Mapping[Kind, tuple[int, int]] = {"track": (1, 2), "track_usage": (0, 1)}
_KEY_SQL: Mapping[Kind, str] = {
    "track": "SELECT service_key, response_id FROM track",
    "track_usage": "SELECT service, response_id FROM track_usage",
}
_USAGE_COLUMNS = frozenset(
    {
        "response_id",
        "config_id",
        "service_id",
        "timestamp",
        "usage",
        "client_customer_key",
        "context",
        "base_url",
    }
)


def kind_from_name(name: str) -> Kind:
    """``"track"`` or ``"track_usage"`` (``"track-usage"`` is accepted); ``ValueError`` else."""
    kind = name.replace("-", "_")
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {name!r}: expected 'track' or 'track_usage'")
    return kind


def _json_or_null(record: Mapping[str, Any], name: str) -> str | None:
    return dumps(record[name]) if name in record else None


def _track_rows(
    records: Iterable[Mapping[str, Any]], received_at: float, user_agent: str | None
) -> list[tuple[Any, ...]]:
    encode = dumps
    return [
        (
            r.get("api_id"),
            r["service_key"],
            r["response_id"],
            r["timestamp"],
            encode(r["payload"]),
            r.get("client_customer_key") if "api_id" in r else r.get("customer_key"),
            None if (context := r.get("context")) is None else encode(context),
            received_at,
            user_agent,
        )
        for r in records
    ]


def _usage_rows(
    records: Iterable[Mapping[str, Any]], received_at: float, user_agent: str | None
) -> list[tuple[Any, ...]]:
    rows = []
    for r in records:
        extra = {k: v for k, v in r.items() if k not in _USAGE_COLUMNS}
        service, response_id = dedup_key("track_usage", r)
        rows.append(
            (
                service,
                response_id,
                r.get("config_id"),
                r.get("service_id"),
                r.get("timestamp"),
                _json_or_null(r, "usage"),
                r.get("client_customer_key"),
                _json_or_null(r, "context"),
                r.get("base_url"),
                dumps(extra) if extra else None,
                received_at,
                user_agent,
            )
        )
    return rows


@attrs.frozen
class PendingWrite:
    """One request's checked records, waiting to be written."""

    kind: Kind
    records: Sequence[Mapping[str, Any]]
    received_at: float
    user_agent: str | None


# The columns each kind is read back with, its table, and the row as a record.
_READ: dict[Kind, tuple[str, str, Callable[[Any], dict[str, Any]]]] = {
    "track": (
        "api_id, service_key, response_id, timestamp, payload, client_customer_key, context,"
        " received_at, user_agent",
        "track",
        lambda row: _track_dict(row),
    ),
    "track_usage": (
        "response_id, config_id, service_id, timestamp, usage, client_customer_key, context,"
        " base_url, extra, received_at, user_agent",
        "track_usage",
        lambda row: _usage_dict(row),
    ),
}


class RecordStore:
    """Received records in one SQLite file, safe to use from several threads.

    With no ``path`` the store makes a temporary file of its own and removes it on
    ``close()``; a given path is kept, with whatever it already held, and its records'
    dedup keys are read into memory (about 130 bytes a record). The store must be the
    only writer of its file: another process's records would not be in its keys.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if path is None:
            fd, made = tempfile.mkstemp(prefix="aicm-collector-", suffix=".sqlite3")
            os.close(fd)
            self.path = made
            self._owned = True
        else:
            self.path = os.fspath(path)
            self._owned = False
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        # Per kind, the response ids stored under each service: one set per service
        # shares the service string (measured: 127 bytes a key, against 142 for
        # "service\x00id" strings and 246 for (service, id) tuples).
        self._seen: dict[Kind, dict[str, set[str]]] = {kind: {} for kind in KINDS}
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn = conn
            # Measured on 1000-record inserts: 8 KiB pages (for a new file) cost a fifth
            # less CPU than 4 KiB ones at hardly any cost to one-record commits (bigger
            # pages make those dearer); a 64 MiB cache and a checkpoint every ~80 MiB of
            # WAL halve the time again.
            conn.execute("PRAGMA page_size=8192")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:  # refused before anything is written to it
                raise ConfigError(
                    f"collector schema version {version} is newer than this aicm"
                    f" understands ({SCHEMA_VERSION}); upgrade aicm",
                    path=self.path,
                )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            # Idempotent, so run on every open: creates a new file, migrates a version 1.
            migrate = _MIGRATE_FROM_V1
            if _track_api_id_required(conn):
                migrate += _MIGRATE_TRACK_NULLABLE_API_ID
            conn.executescript(
                f"BEGIN; {_SCHEMA} {migrate} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
            for kind in KINDS:
                seen = self._seen[kind]
                for service, response_id in conn.execute(_KEY_SQL[kind]):
                    ids = seen.get(service)
                    if ids is None:
                        ids = seen[service] = set()
                    ids.add(response_id)
        except BaseException:
            self.close()
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the collector's store is closed")
        return self._conn

    def _claim(self, kind: Kind, rows: Iterable[Sequence[Any]], new: list[Sequence[Any]]) -> None:
        """Mark the keys of ``rows`` seen; append to ``new`` each row whose key was not."""
        seen = self._seen[kind]
        at_service, at_id = _KEY_COLUMNS[kind]
        for row in rows:
            service = row[at_service]
            response_id = row[at_id]
            ids = seen.get(service)
            if ids is None:
                ids = seen[service] = set()
            elif response_id in ids:
                continue
            ids.add(response_id)
            new.append(row)

    def _unclaim(self, kind: Kind, rows: Iterable[Sequence[Any]]) -> None:
        """Forget the keys of ``rows``: their transaction did not commit."""
        seen = self._seen[kind]
        at_service, at_id = _KEY_COLUMNS[kind]
        for row in rows:
            service = row[at_service]
            ids = seen.get(service)
            if ids is not None:
                ids.discard(row[at_id])
                if not ids:
                    del seen[service]

    def add_many(self, writes: Sequence[PendingWrite]) -> list[int]:
        """Store several requests' records in one transaction; how many were new, for each.

        A record whose key is stored already, or comes earlier in ``writes``, is not
        stored again. If the transaction fails, none of its keys count as seen.
        """
        batches = [
            (
                w.kind,
                _INSERT_TRACK if w.kind == "track" else _INSERT_USAGE,
                (_track_rows if w.kind == "track" else _usage_rows)(
                    w.records, w.received_at, w.user_agent
                ),
            )
            for w in writes
        ]
        with self._lock:
            conn = self._connection()
            claimed: list[list[Sequence[Any]]] = []  # per write, its rows with new keys
            try:
                for kind, _, rows in batches:
                    new: list[Sequence[Any]] = []
                    claimed.append(new)  # before claiming, so a failure forgets every key
                    self._claim(kind, rows, new)
                if any(claimed):  # a write of repeats only needs no transaction
                    conn.execute("BEGIN")
                    for (_, sql, _), new in zip(batches, claimed, strict=True):
                        if new:
                            conn.executemany(sql, new)
                    conn.execute("COMMIT")
            except BaseException:
                # Not strict: a failure while claiming leaves the later writes unclaimed.
                for (kind, _, _), new in zip(batches, claimed, strict=False):
                    self._unclaim(kind, new)
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return [len(new) for new in claimed]

    def records(self, kind: Kind) -> list[dict[str, Any]]:
        """The stored records of ``kind`` in arrival order, JSON fields decoded.

        Each is the record as sent plus ``received_at`` (Unix time) and ``user_agent``.
        """
        return self._select(kind, "", ())

    def records_since(self, kind: Kind, received_after: float) -> list[dict[str, Any]]:
        """The stored records of ``kind`` that arrived after ``received_after`` (Unix time)."""
        return self._select(kind, " WHERE received_at > ?", (received_after,))

    def _select(self, kind: Kind, where: str, args: tuple[float, ...]) -> list[dict[str, Any]]:
        columns, table, to_dict = _READ[kind]
        with self._lock:
            rows = (
                self._connection()
                .execute(f"SELECT {columns} FROM {table}{where} ORDER BY seq", args)
                .fetchall()
            )
        return [to_dict(row) for row in rows]

    def count(self, kind: Kind) -> int:
        """How many records of ``kind`` are stored."""
        table = "track" if kind == "track" else "track_usage"
        with self._lock:
            (n,) = self._connection().execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(n)

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """The management API's objects of ``kind``, oldest first."""
        with self._lock:
            rows = (
                self._connection()
                .execute("SELECT value FROM api_object WHERE kind = ? ORDER BY seq", (kind,))
                .fetchall()
            )
        return [loads(value) for (value,) in rows]

    def put_object(self, kind: str, key: str, value: Mapping[str, Any]) -> None:
        """Store object ``key`` of ``kind`` (replacing what it was, in its place)."""
        with self._lock:
            self._connection().execute(
                "INSERT INTO api_object (kind, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
                (kind, key, dumps(value)),
            )

    def delete_object(self, kind: str, key: str) -> bool:
        """Remove object ``key`` of ``kind``; False when there was none."""
        with self._lock:
            cursor = self._connection().execute(
                "DELETE FROM api_object WHERE kind = ? AND key = ?", (kind, key)
            )
        return cursor.rowcount > 0

    def clear(self) -> None:
        """Forget every stored record and management API object."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                conn.execute("DELETE FROM track")
                conn.execute("DELETE FROM track_usage")
                conn.execute("DELETE FROM api_object")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            for seen in self._seen.values():
                seen.clear()

    def close(self) -> None:
        """Close the file; remove it if the store made it. Safe to call twice."""
        with self._lock:
            conn, self._conn = self._conn, None
            for seen in self._seen.values():
                seen.clear()
            if conn is not None:
                conn.close()
            if self._owned:
                self._owned = False
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self.path + suffix)


def _track_api_id_required(conn: sqlite3.Connection) -> bool:
    """Whether the file's ``track`` table is older than version 3 (``api_id NOT NULL``)."""
    for row in conn.execute("PRAGMA table_info(track)"):
        if row[1] == "api_id":
            return bool(row[3])
    return False


def _track_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A stored ``/track`` record in the form it was sent: current (no api_id) or older."""
    (api_id, service_key, response_id, timestamp, payload, customer, context, at, agent) = row
    record: dict[str, Any] = {} if api_id is None else {"api_id": api_id}
    record["service_key"] = service_key
    record["response_id"] = response_id
    record["timestamp"] = timestamp
    record["payload"] = loads(payload)
    if customer is not None:
        record["client_customer_key" if api_id is not None else "customer_key"] = customer
    if context is not None:
        record["context"] = loads(context)
    record["received_at"] = at
    record["user_agent"] = agent
    return record


def _usage_dict(row: Sequence[Any]) -> dict[str, Any]:
    (response_id, config_id, service_id, timestamp, usage, customer, context, base_url) = row[:8]
    extra, at, agent = row[8:]
    record: dict[str, Any] = {}
    for name, value in (("config_id", config_id), ("service_id", service_id)):
        if value is not None:
            record[name] = value
    if timestamp is not None:
        record["timestamp"] = timestamp
    record["response_id"] = response_id
    if usage is not None:
        record["usage"] = loads(usage)
    if customer is not None:
        record["client_customer_key"] = customer
    if context is not None:
        record["context"] = loads(context)
    if base_url is not None:
        record["base_url"] = base_url
    if extra is not None:
        record.update(loads(extra))
    record["received_at"] = at
    record["user_agent"] = agent
    return record


class _Waiter:
    __slots__ = ("done", "error", "stored", "write")

    def __init__(self, write: PendingWrite) -> None:
        self.write = write
        self.done = anyio.Event()
        self.stored = 0
        self.error: BaseException | None = None


class GroupWriter:
    """Group commit: the writes of requests handled together share one transaction.

    The first request to write becomes the leader: it yields once, so the requests
    already runnable can add theirs, then writes them all and wakes the others. A
    commit per single-record request would cost more than the rest of the request.
    (Writing from a worker thread was measured too: no faster on two cores, more CPU.)
    """

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._waiting: list[_Waiter] = []
        self._leading = False

    async def add(
        self,
        kind: Kind,
        records: Sequence[Mapping[str, Any]],
        *,
        received_at: float,
        user_agent: str | None,
    ) -> int:
        """Store checked records (with whatever else is waiting); how many were new."""
        if not records:
            return 0
        waiter = _Waiter(PendingWrite(kind, records, received_at, user_agent))
        self._waiting.append(waiter)
        if self._leading:
            await waiter.done.wait()
        else:
            self._leading = True
            try:
                with anyio.CancelScope(shield=True):  # the group must be written, come what may
                    await anyio.lowlevel.checkpoint()
                # No await from here on: nobody can join the group while it is written.
                group, self._waiting = self._waiting, []
                self._write(group)
            finally:
                self._leading = False
        if waiter.error is not None:
            raise waiter.error
        return waiter.stored

    def _write(self, group: list[_Waiter]) -> None:
        try:
            counts = self._store.add_many([w.write for w in group])
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
            else:  # one request's bad write must not fail the others: write them one by one
                for w in group:
                    self._write([w])
                return
        else:
            for w, n in zip(group, counts, strict=True):
                w.stored = n
        for w in group:
            w.done.set()
