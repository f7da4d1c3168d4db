"""RestUsageWrapper (sync) with a real requests.Session and httpx.Client against the fake."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from aicm import DeliveryType, RestUsageWrapper
from aicm.collector import Faults, LocalCollector
from tests.fakes import FakeHeyGen
from tests.tracking_support import (
    SEED_004_HANDLING,
    host_of,
    netloc_of,
    service_config,
    usage_records,
)

SESSION_HANDLING: dict[str, Any] = {
    "tracked_methods": ["GET /v2/sessions/{id}"],
    "response_fields": ["session_id", "duration"],
    "payload_mapping": {
        "service_id": "service_id",
        "response_id": "response_data.session_id",
        "usage": "response_data.duration",
    },
}


@pytest.fixture(scope="module")
def heygen() -> Iterator[FakeHeyGen]:
    """The HeyGen-like fake, with session routes."""
    routes = {
        "GET /v2/sessions/abc": (200, {"session_id": "abc", "duration": 7}),
        "GET /v2/sessions/gone": (410, {"session_id": "gone", "duration": 1}),
    }
    with FakeHeyGen(routes=routes) as fake:
        yield fake


@pytest.fixture
def host(collector: LocalCollector, heygen: FakeHeyGen) -> str:
    """The fake's host; the collector serves seed 004's and the session template config."""
    host = host_of(heygen.url)
    collector.set_configs(
        [
            service_config(host, SEED_004_HANDLING, config_id=host),
            service_config(host, SESSION_HANDLING, config_id="sessions"),
        ]
    )
    return host


@pytest.fixture(params=["requests", "httpx"])
def session(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A real requests.Session, then a real httpx.Client."""
    client: Any = requests.Session() if request.param == "requests" else httpx.Client()
    with client:
        yield client


def test_sessions_dedup_and_templates(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    session: Any,
) -> None:
    """Seed 004's list twice is counted once; a template path and a 410 answer behave."""
    with RestUsageWrapper(session, base_url=heygen.url, **connection) as tracker:
        assert tracker.base_url == heygen.url
        for _ in range(2):
            response = tracker.get("/v2/streaming.list", params={"page": 1})
            assert response.json()["sessions"][1] == {"session_id": "session-2", "duration": 20}
        assert tracker.get("/v2/sessions/abc").json()["duration"] == 7
        assert tracker.get("/v2/sessions/gone").status_code == 410
    records = usage_records(collector)
    assert [(r["service_id"], r["response_id"], r["usage"]) for r in records] == [
        (f"{netloc_of(heygen.url)}/v2/streaming.list", "session-1", {"duration": 12}),
        (f"{netloc_of(heygen.url)}/v2/streaming.list", "session-2", {"duration": 20}),
        (f"{netloc_of(heygen.url)}/v2/sessions/abc", "abc", {"duration": 7}),
    ]
    assert collector.stats()["records"]["track_usage"]["duplicates"] == 2


def test_url_objects_and_bytes_are_sent_and_tracked(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    session: Any,
) -> None:
    """requests and httpx take URL objects and bytes besides text: so does the wrapper."""
    with RestUsageWrapper(session, base_url=heygen.url, **connection) as tracker:
        relative = tracker.get(httpx.URL("/v2/streaming.list"))
        raw = tracker.request("GET", b"v2/streaming.list")
    for response in (relative, raw):
        assert str(response.url) == f"{heygen.url}/v2/streaming.list"
    assert sorted(r["response_id"] for r in usage_records(collector)) == [
        "session-1",
        "session-2",
    ]


def test_the_response_is_the_librarys_own(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    session: Any,
) -> None:
    """The answer is the library's own object, body readable, equal to a direct call's."""
    direct = session.get(f"{heygen.url}/v2/streaming.list")
    with RestUsageWrapper(session, base_url=heygen.url + "/", **connection) as tracker:
        response = tracker.request("get", "v2/streaming.list")
    assert type(response) is type(direct)
    assert response.status_code == 200
    assert response.text == direct.text
    assert response.json() == heygen.streaming_list_body()
    assert len(usage_records(collector)) == 2


def test_streamed_requests_response_is_not_consumed(
    collector: LocalCollector, connection: dict[str, str], heygen: FakeHeyGen, host: str
) -> None:
    """`stream=True`: the body is left for the caller to read; the call is not tracked."""
    with (
        requests.Session() as session,
        RestUsageWrapper(session, base_url=heygen.url, **connection) as tracker,
    ):
        response = tracker.get("/v2/streaming.list", stream=True)
        assert response._content_consumed is False
        body = b"".join(response.iter_content(chunk_size=8))
        assert body.startswith(b'{"code":100')
    assert usage_records(collector) == []


def test_immediate_delivery_with_scope(
    collector: LocalCollector, connection: dict[str, str], heygen: FakeHeyGen, host: str
) -> None:
    """IMMEDIATE: records are at the collector when the call returns, tagged by the scope."""
    with (
        httpx.Client() as client,
        RestUsageWrapper(
            client,
            base_url=heygen.url,
            delivery_type=DeliveryType.IMMEDIATE,
            context={"app": "demo"},
            **connection,
        ) as tracker,
    ):
        with tracker.scope(client_customer_key="acme"):
            tracker.get("/v2/sessions/abc")
        [record] = usage_records(collector)
    assert (record["client_customer_key"], record["context"]) == ("acme", {"app": "demo"})


def test_persistent_queue_delivery(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    tmp_path: Path,
) -> None:
    """PERSISTENT_QUEUE: records are in the SQLite file before the call returns, then sent."""
    with (
        requests.Session() as session,
        RestUsageWrapper(
            session,
            base_url=heygen.url,
            delivery_type="persistent_queue",
            db_path=str(tmp_path / "queue.db"),
            **connection,
        ) as tracker,
    ):
        tracker.get("/v2/streaming.list")
        assert tracker.flush(5) == 0
    assert [r["response_id"] for r in usage_records(collector)] == ["session-1", "session-2"]


def test_failures_never_reach_the_call(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Configs unavailable at start, then delivery failing, then closed: calls all answer."""
    collector.set_faults(Faults(failure_rate=1.0))
    with requests.Session() as session:
        with caplog.at_level(logging.ERROR, logger="aicm"):
            tracker = RestUsageWrapper(session, base_url=heygen.url, **connection)
        assert any("could not load configs" in r.getMessage() for r in caplog.records)
        assert tracker.get("/v2/sessions/abc").status_code == 200
        tracker.close()
        collector.set_faults(Faults())
        tracker = RestUsageWrapper(session, base_url=heygen.url, batch_interval=0.01, **connection)
        collector.set_faults(Faults(failure_rate=1.0))
        assert tracker.get("/v2/sessions/abc").status_code == 200
        assert tracker.close(timeout=0.2) == 1
        assert tracker.get("/v2/sessions/abc").json()["session_id"] == "abc"
    assert usage_records(collector) == []


def test_wrong_client_type_is_refused(connection: dict[str, str]) -> None:
    """An httpx.AsyncClient, or something without `request`, is refused with a clear message."""
    with pytest.raises(TypeError, match="AsyncRestUsageWrapper"):
        RestUsageWrapper(httpx.AsyncClient(), base_url="https://x.example", configs=[])
    with pytest.raises(TypeError, match=r"requests\.Session"):
        RestUsageWrapper(object(), base_url="https://x.example", configs=[])
