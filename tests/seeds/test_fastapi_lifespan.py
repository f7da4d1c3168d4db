"""The FastAPI lifespan forms of docs/tracker.md: AsyncTracker, and Tracker.create_async.

Each ``build_*`` function holds the docs' example verbatim (indented), so the docs and the
test cannot drift apart. They run under TestClient (which runs the lifespan) on asyncio
and trio, and under httpx's ASGITransport with the lifespan entered by hand.
"""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aicm.collector import LocalCollector
from tests.seeds.tracker_seed_support import check_usage_record, point_sdk_at


def build_async_tracker_app() -> FastAPI:
    """The docs' first example: an AsyncTracker whose actor lives in the lifespan."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException

    from aicm import AsyncTracker, UsageValidationError

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncTracker("cfg", "svc") as tracker:  # flushed and closed on shutdown
            app.state.tracker = tracker
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/track")
    async def track_usage(payload: dict[str, Any]) -> dict[str, str]:
        try:
            result = await app.state.tracker.track(payload)
        except UsageValidationError as exc:
            raise HTTPException(status_code=422, detail=exc.errors) from exc
        return {"status": result.status, "response_id": result.response_id}

    return app


def build_sync_tracker_app() -> FastAPI:
    """The docs' second example: a Tracker built with create_async, closed with aclose."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from aicm import Tracker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.tracker = await Tracker.create_async("cfg", "svc")
        try:
            yield
        finally:
            await app.state.tracker.aclose()  # waits in a thread, not on the loop

    app = FastAPI(lifespan=lifespan)

    @app.post("/track")
    async def track_usage(payload: dict[str, Any]) -> dict[str, str]:
        result = await app.state.tracker.track_async(payload)
        return {"status": result.status, "response_id": result.response_id}

    return app


@pytest.fixture
def seed_env(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch, api_key: str
) -> LocalCollector:
    """The collector, with the environment pointing the SDK at it."""
    return point_sdk_at(collector, monkeypatch, api_key)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("delivery_type", ["immediate", "mem_queue"])
def test_async_tracker_lifespan(
    seed_env: LocalCollector, monkeypatch: pytest.MonkeyPatch, backend: str, delivery_type: str
) -> None:
    """The AsyncTracker lifespan tracks per request, answers 422 for bad usage, flushes at exit."""
    monkeypatch.setenv("AICM_DELIVERY_TYPE", delivery_type)
    app = build_async_tracker_app()
    with TestClient(app, backend=backend) as client:
        ok = client.post("/track", json={"tokens": 10, "model": "gpt-4o-mini"})
        bad = client.post("/track", json={"tokens": "oops"})
    expected = "queued" if delivery_type == "immediate" else "enqueued"
    assert (ok.status_code, ok.json()["status"]) == (200, expected)
    assert (bad.status_code, bad.json()) == (
        422,
        {"detail": {"tokens": "expected Optional[int], got str 'oops'"}},
    )
    assert app.state.tracker.closed
    (record,) = seed_env.records("track_usage")
    check_usage_record(
        record, {"tokens": 10, "model": "gpt-4o-mini"}, response_id=ok.json()["response_id"]
    )


@pytest.mark.anyio
async def test_async_tracker_lifespan_with_asgi_transport(seed_env: LocalCollector) -> None:
    """The same app driven by httpx.ASGITransport on the test's own loop (asyncio and trio)."""
    app = build_async_tracker_app()
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        answers = [(await client.post("/track", json={"tokens": n})).json() for n in (1, 2)]
    assert [a["status"] for a in answers] == ["queued", "queued"]
    records = seed_env.records("track_usage")
    assert [r["response_id"] for r in records] == [a["response_id"] for a in answers]
    check_usage_record(records[1], {"tokens": 2}, response_id=answers[1]["response_id"])


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sync_tracker_lifespan(seed_env: LocalCollector, backend: str) -> None:
    """The Tracker lifespan: create_async at startup, track_async per request, aclose at exit."""
    app = build_sync_tracker_app()
    with TestClient(app, backend=backend) as client:
        answer = client.post("/track", json={"duration": 12.3})
    assert (answer.status_code, answer.json()["status"]) == (200, "queued")
    assert app.state.tracker.closed
    (record,) = seed_env.records("track_usage")
    check_usage_record(record, {"duration": 12.3}, response_id=answer.json()["response_id"])
