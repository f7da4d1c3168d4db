"""The things measured: aicm's trackers and the baselines, built the same way in every scenario.

Baselines (benchmark environment only, never runtime dependencies of aicm):

- ``aicostmanager`` (the service's own SDK): its ``Tracker`` with immediate and
  persistent-queue delivery, pointed at the local collector through an INI file in the
  scratch space. Its records differ from the wire contract (no ``api_id``, an epoch
  ``timestamp``, ``customer_key``), so the collector answers 202 with a per-record
  ``error`` and stores none of them: the HTTP round trip, batching and queueing are
  exercised in full, only the store is skipped (which favours the baseline).
- ``posthog``'s ``capture`` and ``segment-analytics-python``'s ``track``: background-queued
  events, sent to the loopback sink (:mod:`benchmarks._sink`).
- floors: a dict record put on a ``queue.SimpleQueue``; SQLite inserts (one commit per
  record, and batched 1000 per commit) in WAL mode with ``synchronous=NORMAL`` like aicm.
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from ._common import API_ID, KEY, SERVICE_KEY, USAGE, have, wait_until

EVENT = "llm_usage"
DISTINCT_ID = "customer-1"


def aicm_options(base: str, **options: Any) -> dict[str, Any]:
    """The options every aicm object gets: the key, the collector (or a dead port)."""
    return {"aicm_api_key": KEY, "aicm_api_base": base, **options}


def aicm_track_call(tracker: Any) -> Callable[[], object]:
    """One free-form ``track`` call, as a zero-argument callable."""
    return functools.partial(tracker.track, API_ID, SERVICE_KEY, USAGE)


# -- aicostmanager ---------------------------------------------------------------------------


def aicostmanager_tracker(delivery: str, base: str, scratch: Path) -> Any:
    """The service SDK's ``Tracker`` pointed at ``base`` (its INI, log and queue in ``scratch``)."""
    import aicostmanager

    ini = scratch / "AICM.INI"
    ini.write_text(
        "[tracker]\n"
        f"AICM_API_BASE = {base}\n"
        "AICM_API_URL = /api/v1\n"
        f"AICM_LOG_FILE = {scratch / 'aicostmanager.log'}\n"
        "AICM_LOG_LEVEL = ERROR\n"
        f"AICM_DB_PATH = {scratch / 'aicostmanager-queue.db'}\n"
    )
    return aicostmanager.Tracker(aicm_api_key=KEY, ini_path=str(ini), delivery_type=delivery)


def aicostmanager_call(tracker: Any) -> Callable[[], object]:
    """One ``track`` call of the service SDK."""
    return functools.partial(tracker.track, f"{API_ID}::{SERVICE_KEY}", USAGE)


def aicostmanager_sent(tracker: Any) -> int:
    """How many records the service SDK's queue has delivered so far."""
    return int(tracker.delivery.stats()["total_sent"])


def aicostmanager_drain(tracker: Any, target_sent: int, timeout: float) -> bool:
    """Wait until the service SDK's queue has delivered ``target_sent`` records in all."""
    return wait_until(lambda: aicostmanager_sent(tracker) >= target_sent, timeout, 0.02)


# -- posthog and segment ------------------------------------------------------------------------


def posthog_client(sink: str, *, max_queue_size: int = 10_000, timeout: float = 5) -> Any:
    """A posthog client sending to the loopback sink (or a dead port)."""
    from posthog import Posthog

    return Posthog(
        "phc_benchmark",
        host=sink,
        max_queue_size=max_queue_size,
        flush_at=100,
        flush_interval=0.5,
        max_retries=1,
        timeout=timeout,
        disable_geoip=True,
        enable_exception_autocapture=False,
    )


def posthog_call(client: Any) -> Callable[[], object]:
    """One ``capture`` call."""
    return functools.partial(client.capture, EVENT, distinct_id=DISTINCT_ID, properties=USAGE)


def segment_client(sink: str, *, max_queue_size: int = 10_000, timeout: float = 5) -> Any:
    """A segment client sending to the loopback sink (or a dead port)."""
    from segment.analytics import Client

    return Client(
        write_key="benchmark",
        host=sink,
        max_queue_size=max_queue_size,
        upload_size=100,
        upload_interval=0.5,
        max_retries=1,
        timeout=timeout,
    )


def segment_call(client: Any) -> Callable[[], object]:
    """One ``track`` call."""
    return functools.partial(client.track, user_id=DISTINCT_ID, event=EVENT, properties=USAGE)


def baselines_missing() -> list[str]:
    """The baseline packages not installed (their subjects are skipped, and said so)."""
    modules = {
        "aicostmanager": "aicostmanager",
        "posthog": "posthog",
        "segment-analytics-python": "segment.analytics",
    }
    return [dist for dist, module in modules.items() if not have(module)]


# -- floors ------------------------------------------------------------------------------------


def floor_record() -> dict[str, Any]:
    """The least a queued SDK must do per event: a dict record with a copy of the usage."""
    return {
        "api_id": API_ID,
        "service_key": SERVICE_KEY,
        "timestamp": time.time(),
        "payload": dict(USAGE),
    }


class SimpleQueueFloor:
    """Build a dict record and ``put`` it on a ``queue.SimpleQueue`` (nobody consumes)."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def call(self) -> None:
        """One event."""
        self.queue.put(
            {
                "api_id": API_ID,
                "service_key": SERVICE_KEY,
                "timestamp": time.time(),
                "payload": dict(USAGE),
            }
        )

    def drain(self) -> None:
        """Empty the queue (untimed, between rounds)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()


_FLOOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    response_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""
_FLOOR_INSERT = "INSERT INTO records (response_id, body, created_at) VALUES (?, ?, ?)"


class SqliteFloor:
    """Serialise a record and insert it into SQLite (WAL, synchronous=NORMAL, no index)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute(_FLOOR_SCHEMA)

    @staticmethod
    def _row() -> tuple[str, str, float]:
        rid = uuid.uuid4().hex
        body = json.dumps({**floor_record(), "response_id": rid}, separators=(",", ":"))
        return rid, body, time.time()

    def insert_one(self) -> None:
        """One record, one transaction: the floor of a sequential durable ``track``."""
        conn = self.conn
        conn.execute("BEGIN")
        conn.execute(_FLOOR_INSERT, self._row())
        conn.execute("COMMIT")

    def insert_batch(self, n: int) -> None:
        """``n`` records in one transaction: the floor of group commit."""
        rows = [self._row() for _ in range(n)]
        conn = self.conn
        conn.execute("BEGIN")
        conn.executemany(_FLOOR_INSERT, rows)
        conn.execute("COMMIT")

    def clear(self) -> None:
        """Delete every row (untimed, between rounds)."""
        self.conn.execute("DELETE FROM records")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


_FLOOR_HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def _one_record_body() -> str:
    """A ``/track`` body of one new record."""
    record = {
        "api_id": API_ID,
        "service_key": SERVICE_KEY,
        "response_id": uuid.uuid4().hex,
        "timestamp": "2024-05-01T12:00:00.000000Z",
        "payload": USAGE,
    }
    return json.dumps({"tracked": [record]})


class HttpFloor:
    """POST one pre-built record to the collector's ``/track`` with a blocking httpx client."""

    def __init__(self, collector: str) -> None:
        self.client = httpx.Client(base_url=collector + "/api/v1", headers=_FLOOR_HEADERS)

    def call(self) -> None:
        """One record, one request, answer read."""
        self.client.post("/track", content=_one_record_body()).raise_for_status()

    def close(self) -> None:
        """Close the client."""
        self.client.close()


class AsyncHttpFloor:
    """The same POST with an ``httpx.AsyncClient``: the floor of an IMMEDIATE async track."""

    def __init__(self, collector: str) -> None:
        self.client = httpx.AsyncClient(base_url=collector + "/api/v1", headers=_FLOOR_HEADERS)

    async def call(self) -> None:
        """One record, one request, answer read."""
        response = await self.client.post("/track", content=_one_record_body())
        response.raise_for_status()

    async def aclose(self) -> None:
        """Close the client (on the loop that used it)."""
        await self.client.aclose()


def batch_bodies(prefix: str, records: int, per_body: int = 1000) -> list[bytes]:
    """Pre-serialised ``/track`` bodies of ``per_body`` new records each."""
    bodies = []
    n = 0
    while n < records:
        chunk = []
        for _ in range(min(per_body, records - n)):
            chunk.append(
                {
                    "api_id": API_ID,
                    "service_key": SERVICE_KEY,
                    "response_id": f"{prefix}-{n}",
                    "timestamp": "2024-05-01T12:00:00.000000Z",
                    "payload": USAGE,
                }
            )
            n += 1
        bodies.append(json.dumps({"tracked": chunk}).encode())
    return bodies


def post_bodies(collector: str, bodies: list[bytes]) -> None:
    """Send the bodies one after another over one keep-alive connection."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=collector + "/api/v1", headers=headers) as client:
        for body in bodies:
            client.post("/track", content=body).raise_for_status()


# -- async helpers -----------------------------------------------------------------------------


async def time_awaits(fn: Callable[[], Awaitable[object]], n: int) -> list[int]:
    """Await ``fn()`` ``n`` times on the current loop; the nanoseconds of each."""
    pc = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = pc()
        await fn()
        out[i] = pc() - t0
    return out


@contextlib.contextmanager
def portal() -> Iterator[Any]:
    """An asyncio event loop in a thread, for async subjects driven from this thread."""
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal(backend="asyncio") as p:
        yield p


def aicostmanager_abandon(tracker: Any) -> None:
    """Stop the service SDK's worker without its final drain (for a queue aimed at a dead port).

    Its ``close()`` would try to send every queued row, with retries, before returning; a
    backlog aimed at a dead port would never finish. The worker is a daemon thread: told to
    stop and given nothing more to send, it ends after the batch in hand.
    """
    delivery = tracker.delivery
    delivery.get_batch = lambda *args, **kwargs: []
    delivery._stop.set()
