"""Seed 004: the REST wrappers' example against a HeyGen-like fake, with each HTTP library."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from aicm import AsyncRestUsageWrapper, RestUsageWrapper
from aicm.collector import LocalCollector
from tests.fakes import FakeHeyGen
from tests.tracking_support import (
    SEED_004_HANDLING,
    host_of,
    netloc_of,
    service_config,
    usage_records,
    without_timestamps,
)


@pytest.fixture(scope="module")
def heygen() -> Iterator[FakeHeyGen]:
    """The HeyGen-like fake with seed 004's two sessions."""
    with FakeHeyGen() as fake:
        yield fake


@pytest.fixture
def seed_env(
    collector: LocalCollector, heygen: FakeHeyGen, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Env vars point the SDK at the collector, which serves the seed's config for the fake's
    host (``127.0.0.1:PORT``, the wrapper's api_id and config_id); returns that host."""
    monkeypatch.setenv("AICM_API_KEY", api_key)
    monkeypatch.setenv("AICM_API_BASE", collector.api_base)
    host = host_of(heygen.url)
    collector.set_configs([service_config(host, SEED_004_HANDLING, config_id=host)])
    return host


def check_seed_records(collector: LocalCollector, heygen: FakeHeyGen, host: str) -> None:
    """The two records of the seed's delivery payload, timestamps aside, and the page param."""
    expected: list[dict[str, Any]] = [
        {
            "config_id": host,
            "service_id": f"{netloc_of(heygen.url)}/v2/streaming.list",
            "response_id": "session-1",
            "usage": {"duration": 12},
        },
        {
            "config_id": host,
            "service_id": f"{netloc_of(heygen.url)}/v2/streaming.list",
            "response_id": "session-2",
            "usage": {"duration": 20},
        },
    ]
    assert without_timestamps(usage_records(collector)) == expected
    assert heygen.requests[-1]["query"] == {"page": "1"}


def test_seed_004_with_requests_session(
    collector: LocalCollector, heygen: FakeHeyGen, seed_env: str
) -> None:
    """The seed's sync example with a requests.Session delivers the two session records."""
    session = requests.Session()
    tracker = RestUsageWrapper(session, base_url=heygen.url)
    response = tracker.get("/v2/streaming.list", params={"page": 1})
    assert isinstance(response, requests.Response)
    assert response.json()["sessions"][0]["session_id"] == "session-1"
    assert tracker.flush(5) == 0
    tracker.close()
    session.close()
    check_seed_records(collector, heygen, seed_env)


def test_seed_004_with_httpx_client(
    collector: LocalCollector, heygen: FakeHeyGen, seed_env: str
) -> None:
    """The same with an httpx.Client."""
    with httpx.Client() as client, RestUsageWrapper(client, base_url=heygen.url) as tracker:
        response = tracker.get("/v2/streaming.list", params={"page": 1})
        assert isinstance(response, httpx.Response)
        assert response.json()["data"] == {"total": 2}
    check_seed_records(collector, heygen, seed_env)


@pytest.mark.anyio
async def test_seed_004_async_example_runs_as_written(
    collector: LocalCollector, heygen: FakeHeyGen, seed_env: str
) -> None:
    """The seed's async example, without `async with` on the wrapper, on asyncio and trio."""

    async def main() -> AsyncRestUsageWrapper:
        async with httpx.AsyncClient() as aclient:
            tracker = AsyncRestUsageWrapper(aclient, base_url=heygen.url)
            response = await tracker.get("/v2/streaming.list", params={"page": 1})
            # payloads delivered asynchronously
            assert response.status_code == 200
            return tracker

    tracker = await main()
    assert tracker.detached  # it attached itself to the shared delivery worker
    assert await tracker.flush(5) == 0
    assert await tracker.aclose() == 0
    check_seed_records(collector, heygen, seed_env)
