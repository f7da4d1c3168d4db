"""AsyncRestUsageWrapper with a real httpx.AsyncClient against the HeyGen-like fake, on asyncio
and trio; and the pure identity rules of the REST wrappers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aicm import AsyncRestUsageWrapper, HandlingConfigError
from aicm._api.rest import rest_call
from aicm.collector import Faults, LocalCollector
from tests.fakes import BackgroundServer, FakeHeyGen
from tests.tracking_support import (
    SEED_004_HANDLING,
    host_of,
    netloc_of,
    service_config,
    usage_records,
    without_timestamps,
)

SESSION_HANDLING: dict[str, Any] = {
    "tracked_methods": ["GET /v2/sessions/{id}"],
    "response_fields": ["session_id", "duration"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "service_id",
        "response_id": "response_data.session_id",
        "usage": "response_data.duration",
    },
}


# -- identity rules (pure) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "api_id", "service_id"),
    [
        (
            "https://api.heygen.com/v2/streaming.list?page=1",
            "api.heygen.com",
            "api.heygen.com/v2/streaming.list",
        ),
        ("https://API.HeyGen.com:443/v2/x#frag", "api.heygen.com", "api.heygen.com/v2/x"),
        ("http://api.heygen.com:80/", "api.heygen.com", "api.heygen.com/"),
        ("http://127.0.0.1:8080/v2/x", "127.0.0.1", "127.0.0.1:8080/v2/x"),
        ("http://api.example.com:443/v2/x", "api.example.com", "api.example.com:443/v2/x"),
        ("http://[::1]:8080/v2/x", "[::1]", "[::1]:8080/v2/x"),
        ("https://user:secret@api.example.com", "api.example.com", "api.example.com/"),
    ],
)
def test_rest_call_identity(url: str, api_id: str, service_id: str) -> None:
    """api_id is the hostname (never a port); service_id is host[:port] + path, no query."""
    call = rest_call("get", url, "https://base")
    assert (call.api_id, call.service_id) == (api_id, service_id)
    assert call.method_key == "GET " + service_id[service_id.index("/") :]


def test_relative_urls_join_the_base_url() -> None:
    """Paths are appended to base_url (its own path kept); absolute URLs are kept as they are."""
    wrapper = AsyncRestUsageWrapper(
        httpx.AsyncClient(), base_url="https://api.example.com/v1/", configs=[]
    )
    assert wrapper.base_url == "https://api.example.com/v1"
    assert wrapper.url_for("/sessions") == "https://api.example.com/v1/sessions"
    assert wrapper.url_for("sessions?page=2") == "https://api.example.com/v1/sessions?page=2"
    assert wrapper.url_for("/go?to=https://other.example") == (
        "https://api.example.com/v1/go?to=https://other.example"
    )
    assert wrapper.url_for("https://other.example/x") == "https://other.example/x"
    # What httpx and requests take besides text: URL objects and bytes.
    assert wrapper.url_for(httpx.URL("/sessions")) == "https://api.example.com/v1/sessions"
    assert wrapper.url_for(httpx.URL("https://o.example/x")) == "https://o.example/x"
    assert wrapper.url_for(b"sessions") == "https://api.example.com/v1/sessions"
    # No URL this can read: None, and the client gets it as given.
    assert wrapper.url_for(b"\xff") is None
    assert wrapper.url_for("http://[::1/x") is None


def test_constructor_checks_its_arguments() -> None:
    """A sync client, a relative base_url or a malformed offline config are refused at once."""
    with pytest.raises(TypeError, match="RestUsageWrapper"):
        AsyncRestUsageWrapper(requests.Session(), base_url="https://x.example")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="absolute URL"):
        AsyncRestUsageWrapper(httpx.AsyncClient(), base_url="/v2", configs=[])
    bad = service_config("x.example", {"tracked_methods": ["GET v2/list"]}, "bad-rest")
    with pytest.raises(HandlingConfigError) as info:
        AsyncRestUsageWrapper(httpx.AsyncClient(), base_url="https://x.example", configs=[bad])
    assert (info.value.config_id, info.value.field) == ("bad-rest", "tracked_methods[0]")


# -- against the fake -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def heygen() -> Iterator[FakeHeyGen]:
    """The HeyGen-like fake, with a few extra routes."""
    routes = {
        "GET /v2/sessions/abc": (200, {"session_id": "abc", "duration": 7}),
        "GET /v2/sessions/xyz": (200, {"session_id": "xyz", "duration": 9}),
        "GET /v2/sessions/gone": (404, {"session_id": "gone", "duration": 1}),
        "POST /v2/jobs": (402, {"job_id": "j1", "seconds": 3}),
    }
    with FakeHeyGen(routes=routes) as fake:
        yield fake


@pytest.fixture(scope="module")
def text_api() -> Iterator[str]:
    """A second API on another port whose streaming.list answers plain text, not JSON."""

    async def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("session-1 12\nsession-2 20\n")

    with BackgroundServer(Starlette(routes=[Route("/v2/streaming.list", plain)])) as server:
        yield server.url


@pytest.fixture
def host(collector: LocalCollector, heygen: FakeHeyGen) -> str:
    """The fake's host; the collector serves seed 004's config and a template config for it."""
    host = host_of(heygen.url)
    collector.set_configs(
        [
            service_config(host, SEED_004_HANDLING, config_id=host),
            service_config(host, SESSION_HANDLING, config_id="sessions"),
        ]
    )
    return host


@pytest.fixture
async def aclient() -> AsyncIterator[httpx.AsyncClient]:
    """A real httpx.AsyncClient."""
    async with httpx.AsyncClient() as client:
        yield client


def session_ids(collector: LocalCollector) -> list[str]:
    """The response_ids the collector stored, in order."""
    return [r["response_id"] for r in usage_records(collector)]


@pytest.mark.anyio
async def test_async_with_delivers_the_sessions(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    aclient: httpx.AsyncClient,
) -> None:
    """Inside `async with`: delivery runs in the caller's task group; two session records."""
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        response = await tracker.get("/v2/streaming.list", params={"page": 1})
        assert not tracker.detached
    assert response.json() == heygen.streaming_list_body()
    assert without_timestamps(usage_records(collector)) == [
        {
            "config_id": host,
            "service_id": f"{netloc_of(heygen.url)}/v2/streaming.list",
            "response_id": sid,
            "usage": d,
        }
        for sid, d in (("session-1", {"duration": 12}), ("session-2", {"duration": 20}))
    ]


@pytest.mark.anyio
async def test_configs_held_under_the_hostname_track_a_base_with_a_port(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    aclient: httpx.AsyncClient,
) -> None:
    """Configs under ``127.0.0.1`` track ``http://127.0.0.1:PORT``; service_id keeps the port."""
    assert heygen.url.startswith("http://127.0.0.1:")
    collector.set_configs([service_config("127.0.0.1", SEED_004_HANDLING, config_id="127.0.0.1")])
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        await tracker.get("/v2/streaming.list")
    assert collector.stats()["requests"]["configs"] != {}
    port = heygen.url.rsplit(":", 1)[1]
    assert [(r["config_id"], r["service_id"]) for r in usage_records(collector)] == [
        ("127.0.0.1", f"127.0.0.1:{port}/v2/streaming.list")
    ] * 2


@pytest.mark.anyio
async def test_the_response_is_the_librarys_own_untouched(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    aclient: httpx.AsyncClient,
) -> None:
    """The wrapper returns httpx's Response, body readable, equal to a direct call's."""
    direct = await aclient.get(f"{heygen.url}/v2/streaming.list")
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        response = await tracker.get("v2/streaming.list")
    assert type(response) is httpx.Response
    assert response.is_closed
    assert response.text == direct.text
    assert response.headers["content-type"] == "application/json"
    assert str(response.request.url) == f"{heygen.url}/v2/streaming.list"


@pytest.mark.anyio
async def test_url_objects_and_bytes_are_sent_and_tracked(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    aclient: httpx.AsyncClient,
) -> None:
    """An httpx.URL (relative or absolute) or bytes goes where httpx would send it, tracked;
    a URL the wrapper cannot read reaches the client as given, which raises its own error."""
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        relative = await tracker.get(httpx.URL("/v2/streaming.list"))
        absolute = await tracker.get(httpx.URL(f"{heygen.url}/v2/streaming.list"))
        raw = await tracker.request("GET", b"v2/streaming.list")
        with pytest.raises(httpx.InvalidURL):
            await tracker.get("http://[::1/x")
    for response in (relative, absolute, raw):
        assert str(response.request.url) == f"{heygen.url}/v2/streaming.list"
    assert sorted(session_ids(collector)) == ["session-1", "session-2"]
    assert tracker.health().discarded == {"tracking_error": 1}


@pytest.mark.anyio
async def test_repeated_calls_are_counted_once(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    aclient: httpx.AsyncClient,
) -> None:
    """The same sessions seen three times: six records sent, two counted (response_id dedup)."""
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        for _ in range(3):
            await tracker.get("/v2/streaming.list")
    assert sorted(session_ids(collector)) == ["session-1", "session-2"]
    assert collector.stats()["records"]["track_usage"]["duplicates"] == 4


@pytest.mark.anyio
async def test_path_templates_non_2xx_and_non_json(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    text_api: str,
    aclient: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`GET /v2/sessions/{id}` matches one id; 404 and text/plain answers are not tracked."""
    text_host = host_of(text_api)
    collector.set_configs(
        [
            service_config(host, SESSION_HANDLING, config_id="sessions"),
            service_config(text_host, SEED_004_HANDLING, config_id=text_host),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="aicm"):
        async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
            assert (await tracker.get("/v2/sessions/abc")).status_code == 200
            assert (await tracker.get("/v2/sessions/xyz?full=1")).status_code == 200
            assert (await tracker.get("/v2/sessions/gone")).status_code == 404
            assert (await tracker.get("/v2/sessions/abc/events")).status_code == 404
            text = await tracker.get(f"{text_api}/v2/streaming.list")
    assert text.text.startswith("session-1")
    assert [(r["service_id"], r["response_id"], r["usage"]) for r in usage_records(collector)] == [
        (f"{netloc_of(heygen.url)}/v2/sessions/abc", "abc", {"duration": 7}),
        (f"{netloc_of(heygen.url)}/v2/sessions/xyz", "xyz", {"duration": 9}),
    ]
    assert caplog.records == []


@pytest.mark.anyio
async def test_only_success_false_tracks_error_answers(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    aclient: httpx.AsyncClient,
) -> None:
    """A config with `only_success: false` also records non-2xx JSON answers."""
    handling = {
        "tracked_methods": ["POST /v2/jobs"],
        "response_fields": ["job_id", "seconds"],
        "payload_mapping": {
            "response_id": "response_data.job_id",
            "usage": "response_data.seconds",
        },
        "only_success": False,
    }
    collector.set_configs([service_config(host, handling)])
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        response = await tracker.post("/v2/jobs", json={"script": "hi"})
    assert response.status_code == 402
    assert heygen.requests[-1]["json"] == {"script": "hi"}
    assert [(r["response_id"], r["usage"]) for r in usage_records(collector)] == [
        ("j1", {"seconds": 3})
    ]


@pytest.mark.anyio
async def test_each_host_asks_for_its_configs_once(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    text_api: str,
    aclient: httpx.AsyncClient,
) -> None:
    """Base host configs load at start; another host's once, even for ten concurrent calls."""
    other_host = text_api.replace("127.0.0.1", "localhost")  # same server, another hostname
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        assert collector.stats()["requests"]["configs"] == {"200": 1}
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(tracker.get, f"{other_host}/v2/streaming.list")
        await tracker.get("/v2/streaming.list")
    assert collector.stats()["requests"]["configs"] == {"200": 2}
    assert len(usage_records(collector)) == 2


@pytest.mark.anyio
async def test_customer_key_context_and_scope(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    aclient: httpx.AsyncClient,
) -> None:
    """The wrapper's key and context tag records; a scope overrides the key, merges context."""
    async with AsyncRestUsageWrapper(
        aclient,
        base_url=heygen.url,
        client_customer_key="acme",
        context={"app": "demo"},
        **connection,
    ) as tracker:
        await tracker.get("/v2/sessions/abc")
        with tracker.scope(client_customer_key="globex", context={"run": 7}):
            await tracker.get("/v2/sessions/xyz")
    assert [(r["client_customer_key"], r["context"]) for r in usage_records(collector)] == [
        ("acme", {"app": "demo"}),
        ("globex", {"app": "demo", "run": 7}),
    ]


@pytest.mark.anyio
async def test_credentials_in_request_options_are_never_extracted(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    aclient: httpx.AsyncClient,
) -> None:
    """A config naming `headers` gets nothing from them; other request options are read."""
    handling = {
        "tracked_methods": ["GET /v2/sessions/{id}"],
        "request_fields": ["headers", "params"],
        "response_fields": ["session_id"],
        "payload_mapping": {
            "response_id": "response_data.session_id",
            "sent_headers": "request_data.headers",
            "page": "request_data.params.page",
        },
    }
    collector.set_configs([service_config(host, handling)])
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        await tracker.get(
            "/v2/sessions/abc", params={"page": 3}, headers={"X-Api-Key": "provider-secret"}
        )
    [record] = usage_records(collector)
    assert record == {"response_id": "abc", "page": 3}


@pytest.mark.anyio
async def test_offline_configs(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    aclient: httpx.AsyncClient,
) -> None:
    """configs= a list: no GET /configs; the sessions are recorded."""
    configs = [service_config(host_of(heygen.url), SEED_004_HANDLING, config_id="offline")]
    async with AsyncRestUsageWrapper(
        aclient, base_url=heygen.url, configs=configs, **connection
    ) as tracker:
        await tracker.get("/v2/streaming.list")
    assert [r["config_id"] for r in usage_records(collector)] == ["offline", "offline"]
    assert collector.stats()["requests"]["configs"] == {}


@pytest.mark.anyio
async def test_a_failing_service_never_reaches_the_call(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    aclient: httpx.AsyncClient,
) -> None:
    """Configs unavailable, then delivery failing: every call still returns its response."""
    collector.set_faults(Faults(failure_rate=1.0))
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        first = await tracker.get("/v2/streaming.list")
        assert tracker.health().queued == 0
    collector.set_faults(Faults())
    async with AsyncRestUsageWrapper(aclient, base_url=heygen.url, **connection) as tracker:
        collector.set_faults(Faults(failure_rate=1.0))
        second = await tracker.get("/v2/streaming.list")
        assert await tracker.aclose(timeout=0.1) == 2
    assert first.json() == second.json() == heygen.streaming_list_body()
    assert usage_records(collector) == []


@pytest.mark.anyio
async def test_detached_immediate_delivery_and_close(
    collector: LocalCollector,
    connection: dict[str, str],
    heygen: FakeHeyGen,
    host: str,
    aclient: httpx.AsyncClient,
) -> None:
    """Detached IMMEDIATE: records sent before the call returns; after aclose, untracked."""
    tracker = AsyncRestUsageWrapper(
        aclient, base_url=heygen.url, delivery_type="immediate", **connection
    )
    await tracker.get("/v2/streaming.list")
    assert tracker.detached
    assert session_ids(collector) == ["session-1", "session-2"]
    assert await tracker.aclose() == 0
    assert (await tracker.get("/v2/sessions/abc")).json()["duration"] == 7
    assert len(usage_records(collector)) == 2
