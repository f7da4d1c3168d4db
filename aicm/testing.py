"""Test kit for applications that use aicm: capture records in memory, or run a collector (public).

Capture mode keeps every record in memory and sends nothing. While a capture is active,
every ``Tracker``, ``AsyncTracker``, ``CostManager``, REST wrapper and service client
built without a ``transport=`` of its own talks to an in-process fake of the service
instead of the network, in every delivery type: the records travel through the real
queues and delivery actor and are answered as the service answers them::

    from aicm import Tracker
    from aicm.testing import capture

    with capture() as captured:
        with Tracker(aicm_api_key="test") as tracker:
            tracker.track("openai", "gpt-5-mini", {"input_tokens": 3})
        captured.assert_tracked(api_id="openai", usage={"input_tokens": 3}, count=1)

In pytest, the ``aicm_capture`` fixture does the same and also sets a dummy API key and a
queue file in the test's temporary folder: add ``pytest_plugins = ["aicm.testing"]`` to
your top-level ``conftest.py`` (or import the fixture there).

`local_collector()` runs the real local collector (the ``collector`` extra) on a
loopback port, for tests that want real HTTP and fault injection.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import anyio
import httpx

from ._core.jsonplain import dumps_bytes
from ._core.models import API_VENDORS
from ._core.wire import (
    BadRequest,
    Kind,
    configs_document,
    dedup_key,
    etag_for,
    etag_matches,
    normalise_configs,
    parse_batch,
    plan_batch,
)
from ._io import http as _http

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .collector import Faults, LocalCollector

__all__ = [
    "TEST_API_KEY",
    "CaptureTransport",
    "CapturedRecords",
    "capture",
    "local_collector",
]

#: The API key the pytest fixtures set when ``AICM_API_KEY`` is not set.
TEST_API_KEY = "aicm-test-key"

# The fake service's endpoints, as the wire contract names their kinds of batch.
_KINDS: Mapping[str, Kind] = {"/track": "track", "/track-usage": "track_usage"}


def _vendor_model(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(vendor, model)`` of a current ``/track`` record, else None."""
    key = record.get("service_key")
    if "api_id" in record or not isinstance(key, str) or "::" not in key:
        return None
    vendor, _, model = key.partition("::")
    return vendor, model


def _api_matches(record: Mapping[str, Any], record_api: object, api_id: str) -> bool:
    if record_api == api_id:
        return True
    split = _vendor_model(record)
    return split is not None and split[0] == API_VENDORS.get(api_id, api_id)


def _service_matches(record: Mapping[str, Any], service_key: str) -> bool:
    if record.get("service_key") == service_key:
        return True
    split = _vendor_model(record)
    return split is not None and "::" not in service_key and split[1] == service_key


def _answer(status: int, data: object, headers: Mapping[str, str] | None = None) -> httpx.Response:
    return _json_response(status, dumps_bytes(data), headers)


def _json_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        content=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


class _RecordFields(TypedDict, total=False):
    """What `CapturedRecords.find()` and `assert_tracked()` match
    a record on: each field given (see ``assert_tracked``)."""

    api_id: str | None
    service_key: str | None
    usage: Any
    response_id: str | None
    client_customer_key: str | None
    customer_key: str | None
    context: Mapping[str, Any] | None
    config_id: str | None
    service_id: str | None


class CapturedRecords:
    """What an active capture received, and helpers to assert on it (thread-safe).

    Records are kept as the service would store them: each ``(service, response_id)``
    once, in arrival order, as the SDK sent them. A resend of a stored record is answered
    ``queued`` again and counted in `duplicates`.
    """

    def __init__(self, configs: Sequence[Mapping[str, Any]] = ()) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: list[tuple[str, dict[str, Any]]] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._duplicates = 0
        self._requests = 0
        self._fail_next = 0
        self._fail_status = 503
        self._fail_retry_after: float | None = None
        self._configs: list[dict[str, Any]] = []
        self.set_configs(configs)
        self.transport = CaptureTransport(self)

    def __repr__(self) -> str:
        return f"<CapturedRecords {len(self)} record(s), {self._duplicates} duplicate(s)>"

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    # -- what arrived -------------------------------------------------------------------

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record received (``/track`` and ``/track-usage``), each once, in order."""
        with self._lock:
            return [dict(r) for _, r in self._records]

    @property
    def track_records(self) -> list[dict[str, Any]]:
        """The ``/track`` records (``Tracker().track(api_id, service_key, usage)``)."""
        return self._of("/track")

    @property
    def usage_records(self) -> list[dict[str, Any]]:
        """The ``/track-usage`` records (cost managers, REST wrappers, config trackers)."""
        return self._of("/track-usage")

    def _of(self, endpoint: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for e, r in self._records if e == endpoint]

    @property
    def response_ids(self) -> list[str]:
        """The ``response_id`` of every record, in arrival order."""
        with self._lock:
            return [str(r["response_id"]) for _, r in self._records]

    @property
    def duplicates(self) -> int:
        """Records received again after being stored once (resends the service absorbed)."""
        with self._lock:
            return self._duplicates

    @property
    def requests(self) -> int:
        """Ingest requests received, failed ones included."""
        with self._lock:
            return self._requests

    def clear(self) -> None:
        """Forget every record and count (configs and pending failures stay)."""
        with self._lock:
            self._records.clear()
            self._seen.clear()
            self._duplicates = 0
            self._requests = 0

    # -- what the fake service does -----------------------------------------------------

    def set_configs(self, configs: Sequence[Mapping[str, Any]]) -> None:
        """Serve these service configs from ``GET /configs`` (for cost managers, REST
        wrappers and config trackers): each needs ``config_id`` and ``api_id``."""
        normalised = normalise_configs(list(configs))
        with self._lock:
            self._configs = normalised

    def fail_next(self, n: int, *, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next ``n`` ingest requests with ``status`` (and ``Retry-After``).

        For testing how your code copes: 5xx and 429 are retried by the queues, 401 pauses
        delivery, other 4xx refuse the records.
        """
        if n < 0 or not 400 <= status <= 599:
            raise ValueError("n must be >= 0 and status an HTTP error status (400-599)")
        with self._lock:
            self._fail_next = n
            self._fail_status = status
            self._fail_retry_after = retry_after

    def _take_failure(self) -> httpx.Response | None:
        with self._lock:
            self._requests += 1
            if self._fail_next <= 0:
                return None
            self._fail_next -= 1
            status, retry_after = self._fail_status, self._fail_retry_after
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        if status in (401, 403):
            headers["WWW-Authenticate"] = "Bearer"
        return _answer(status, {"detail": f"injected failure {status}"}, headers)

    def ingest(self, endpoint: str, body: bytes) -> httpx.Response:
        """Answer one ingest request body as the service would (``/track``, ``/track-usage``)."""
        failure = self._take_failure()
        if failure is not None:
            return failure
        kind = _KINDS[endpoint]
        try:
            plan = plan_batch(parse_batch(body, kind), kind)
        except BadRequest as exc:
            return _answer(exc.status_code, {"detail": exc.detail})
        with self._changed:
            for record in plan.to_store:
                identity = (endpoint, *dedup_key(kind, record))
                if identity in self._seen:
                    self._duplicates += 1
                else:
                    self._seen.add(identity)
                    self._records.append((endpoint, record))
            self._changed.notify_all()
        return _json_response(plan.status_code, plan.body())

    def configs_answer(self, api_id: str | None, if_none_match: str | None) -> httpx.Response:
        """The ``GET /configs`` answer, with an ETag (304 when the client has it)."""
        with self._lock:
            body = configs_document(self._configs, api_id)
        etag = etag_for(body)
        if etag_matches(if_none_match, etag):
            return httpx.Response(304, headers={"ETag": etag})
        return _json_response(200, body, {"ETag": etag})

    # -- waiting ------------------------------------------------------------------------

    def wait_for(self, n: int, *, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` records arrived; return them all.

        Raises ``AssertionError`` after ``timeout`` s. From async code whose own event loop
        runs the delivery (``AsyncTracker``), await `wait_for_async()` instead.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._records) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"waited {timeout:g}s for {n} record(s), {len(self._records)} arrived"
                    )
                self._changed.wait(left)
        return self.records

    async def wait_for_async(self, n: int, *, timeout: float = 5.0) -> list[dict[str, Any]]:
        """`wait_for()` for async code (asyncio or trio): never blocks the event loop."""
        deadline = time.monotonic() + timeout
        while len(self) < n:
            if time.monotonic() >= deadline:
                raise AssertionError(f"waited {timeout:g}s for {n} record(s), {len(self)} arrived")
            await anyio.sleep(0.005)
        return self.records

    # -- asserting ----------------------------------------------------------------------

    def find(self, **fields: Unpack[_RecordFields]) -> list[dict[str, Any]]:
        """The records that match every given field (see `assert_tracked()`)."""
        api_id, service_key = fields.get("api_id"), fields.get("service_key")
        usage, response_id = fields.get("usage"), fields.get("response_id")
        config_id, service_id = fields.get("config_id"), fields.get("service_id")
        # A customer or context given as None matches records without one.
        customers = [fields[k] for k in ("client_customer_key", "customer_key") if k in fields]
        with self._lock:
            configs = {c["config_id"]: c["api_id"] for c in self._configs}
            pool = [dict(r) for _, r in self._records]
        found: list[dict[str, Any]] = []
        for record in pool:
            record_usage = record.get("payload", record.get("usage"))
            record_api = record.get("api_id")
            if record_api is None and isinstance(record.get("config_id"), str):
                record_api = configs.get(record["config_id"])
            record_customer = record.get("client_customer_key", record.get("customer_key"))
            if (
                (api_id is None or _api_matches(record, record_api, api_id))
                and (service_key is None or _service_matches(record, service_key))
                and (usage is None or record_usage == usage)
                and (response_id is None or record.get("response_id") == response_id)
                and all(record_customer == customer for customer in customers)
                and ("context" not in fields or record.get("context") == fields["context"])
                and (config_id is None or record.get("config_id") == config_id)
                and (service_id is None or record.get("service_id") == service_id)
            ):
                found.append(record)
        return found

    def assert_tracked(
        self, *, count: int | None = None, **fields: Unpack[_RecordFields]
    ) -> list[dict[str, Any]]:
        """Assert records matching every given field arrived; return them.

        ``usage`` is compared whole with a record's ``payload`` (``/track``) or ``usage``
        (``/track-usage``); ``api_id`` also matches a ``/track-usage`` record whose
        ``config_id`` is one of the served configs of that ``api_id``. Records in the
        current ``/track`` form match as the call made them: ``api_id="openai",
        service_key="gpt-5-mini"`` matches ``service_key`` ``"openai::gpt-5-mini"``, and
        ``client_customer_key`` and ``customer_key`` match either record's customer. With
        ``count`` the number of matches must be exactly that, else at least one. It checks
        what arrived so far: ``flush()`` the tracker (or `wait_for()`) first.
        """
        found = self.find(**fields)
        wanted = {k: v for k, v in fields.items() if v is not None}
        if (count is None and not found) or (count is not None and len(found) != count):
            expected = "at least 1" if count is None else str(count)
            shown = "\n  ".join(json.dumps(r, sort_keys=True) for r in self.records[:10])
            raise AssertionError(
                f"expected {expected} record(s) matching {wanted}, found {len(found)}; "
                f"{len(self)} record(s) captured:\n  {shown or '(none)'}"
            )
        return found


class CaptureTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport that answers the aicm wire contract from a `CapturedRecords`.

    It checks the ``Authorization`` header (a missing or empty bearer key gets 401, as
    from the service), serves ``/track``, ``/track-usage`` and ``/configs`` under any API
    root, and answers 404 to anything else. Closing it does nothing: every client built
    during a capture shares it.
    """

    def __init__(self, captured: CapturedRecords) -> None:
        self.captured = captured

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as the service would."""
        body = await request.aread()
        token = request.headers.get("Authorization", "").partition(" ")[2].strip()
        if not token:
            return _answer(401, {"detail": "missing API key"}, {"WWW-Authenticate": "Bearer"})
        path = request.url.path.rstrip("/")
        if request.method == "POST" and path.endswith("/track-usage"):
            return self.captured.ingest("/track-usage", body)
        if request.method == "POST" and path.endswith("/track"):
            return self.captured.ingest("/track", body)
        if request.method == "GET" and path.endswith("/configs"):
            return self.captured.configs_answer(
                request.url.params.get("api_id"), request.headers.get("If-None-Match")
            )
        return _answer(404, {"detail": f"not found: {request.method} {path}"})

    async def aclose(self) -> None:
        """Nothing to close (shared by every client of the capture)."""


@contextlib.contextmanager
def capture(*, configs: Sequence[Mapping[str, Any]] = ()) -> Iterator[CapturedRecords]:
    """Capture the records of every aicm object built inside the block; nothing is sent.

    ``configs`` are served from ``GET /configs``. Objects built inside keep delivering to
    the capture after the block ends; objects built before or after use the network.
    Captures nest: the inner one wins while it is active. Process-wide: other threads'
    objects built meanwhile are captured too.
    """
    captured = CapturedRecords(configs)
    previous = _http.set_default_transport(captured.transport)
    try:
        yield captured
    finally:
        _http.set_default_transport(previous)


@contextlib.contextmanager
def local_collector(
    *,
    faults: Faults | None = None,
    configs: Sequence[Mapping[str, Any]] | None = None,
    db_path: str | os.PathLike[str] | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> Iterator[LocalCollector]:
    """Run the local collector on a free loopback port for the block (``collector`` extra).

    Give the SDK ``aicm_api_base=collector.api_base`` and any API key (unless ``faults``
    requires one). The records are readable until the block ends. ``data_dir`` keeps its
    usage limits and signing key (None: a temporary directory).
    """
    from .collector import LocalCollector

    with LocalCollector(
        faults=faults, configs=configs, db_path=db_path, seed=seed, data_dir=data_dir
    ) as collector:
        yield collector


try:
    import pytest
except ImportError:  # pragma: no cover - the fixtures need pytest; the rest does not
    pass
else:
    __all__ += ["aicm_capture", "aicm_collector"]

    @pytest.fixture
    def aicm_capture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CapturedRecords]:
        """Capture every aicm record of the test in memory (see `capture()`).

        Also sets ``AICM_API_KEY`` (when unset) to a dummy key, and ``AICM_DB_PATH`` to a
        file in the test's temporary folder, so persistent queues never touch yours.
        """
        if not os.environ.get("AICM_API_KEY"):
            monkeypatch.setenv("AICM_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("AICM_DB_PATH", str(tmp_path / "aicm-queue.db"))
        with capture() as captured:
            yield captured

    @pytest.fixture
    def aicm_collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCollector]:
        """A local collector for the test; ``AICM_API_BASE`` and ``AICM_API_KEY`` point at it."""
        with local_collector() as collector:
            monkeypatch.setenv("AICM_API_BASE", collector.api_base)
            if not os.environ.get("AICM_API_KEY"):
                monkeypatch.setenv("AICM_API_KEY", TEST_API_KEY)
            yield collector
