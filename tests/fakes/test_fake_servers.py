"""The fake servers answer like the real APIs: the HeyGen-like REST fake and the server helper."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aicm._core.extractor import UniversalExtractor
from aicm._core.models import ServiceConfig

from . import DEFAULT_SESSIONS, BackgroundServer, FakeHeyGen

SEED_004 = {
    "tracked_methods": ["GET /v2/streaming.list"],
    "list_path": "sessions",
    "response_fields": [
        {"key": "session_id", "path": "session_id"},
        {"key": "duration", "path": "duration"},
    ],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "service_id",
        "timestamp": "timestamp",
        "response_id": "response_data.session_id",
        "usage": "response_data.duration",
    },
}


def test_background_server_serves_and_stops() -> None:
    """BackgroundServer serves an app on a free loopback port until stopped."""

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    server = BackgroundServer(Starlette(routes=[Route("/", hello)]))
    with server:
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.get(server.url).text == "hi"
        url = server.url
    with pytest.raises(RuntimeError):
        _ = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_heygen_fake_answers_the_seed_004_sessions() -> None:
    """GET /v2/streaming.list answers the seed's two sessions and records the request."""
    with FakeHeyGen() as fake:
        response = httpx.get(f"{fake.url}/v2/streaming.list", params={"page": 1})
        assert response.status_code == 200
        body = response.json()
        assert body["sessions"] == list(DEFAULT_SESSIONS)
        assert "data" in body
        assert fake.requests == [
            {"method": "GET", "path": "/v2/streaming.list", "query": {"page": "1"}, "json": None}
        ]
    extractor = UniversalExtractor(
        [
            ServiceConfig(
                config_id="api.heygen.com", api_id="api.heygen.com", handling_config=SEED_004
            )
        ]
    )
    payloads = extractor.extract(
        "GET /v2/streaming.list",
        response=body,
        service_id="api.heygen.com/v2/streaming.list",
        timestamp="2024-01-01T00:00:00Z",
    )
    assert [(p["response_id"], p["usage"]) for p in payloads] == [
        ("session-1", {"duration": 12}),
        ("session-2", {"duration": 20}),
    ]


def test_heygen_fake_is_configurable() -> None:
    """Sessions and whole routes can be changed; unknown routes are 404."""
    with FakeHeyGen(sessions=[{"session_id": "s", "duration": 1}]) as fake:
        assert httpx.get(f"{fake.url}/v2/streaming.list").json()["sessions"] == [
            {"session_id": "s", "duration": 1}
        ]
        fake.routes["POST /v1/video/generate"] = (201, {"data": {"video_id": "v-1"}})
        created = httpx.post(f"{fake.url}/v1/video/generate", json={"script": "hi"})
        assert (created.status_code, created.json()) == (201, {"data": {"video_id": "v-1"}})
        assert fake.requests[-1]["json"] == {"script": "hi"}
        fake.routes["GET /v2/streaming.list"] = (500, {"message": "down"})
        assert httpx.get(f"{fake.url}/v2/streaming.list").status_code == 500
        assert httpx.get(f"{fake.url}/nowhere").status_code == 404
