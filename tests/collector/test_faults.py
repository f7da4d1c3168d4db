"""Every fault option over real HTTP: it does exactly what it says, and can change at runtime."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aicm.collector import Faults, LocalCollector

from .helpers import API_KEY, track_record, usage_record

pytestmark = pytest.mark.anyio


async def test_failure_rate_one_fails_every_request_with_status_and_retry_after(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """failure_rate=1.0 fails every SDK request with that status and Retry-After; stores nothing."""
    collector.set_faults(Faults(failure_rate=1.0, failure_status=429, retry_after=2))
    for _ in range(3):
        response = await client.post("/track", json={"tracked": [track_record()]})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "2"
        assert "detail" in response.json()
    configs = await client.get("/configs")
    assert configs.status_code == 429
    assert collector.count("track") == 0
    assert collector.stats()["faults"]["failure"] == 4


async def test_failure_without_retry_after_sends_no_header(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """Injected failures carry Retry-After only when retry_after is set (the default 503)."""
    collector.set_faults(Faults(failure_rate=1.0))
    response = await client.post("/track-usage", json={"usage_records": [usage_record()]})
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    collector.set_faults(Faults(failure_rate=1.0, retry_after=0.25))
    response = await client.post("/track-usage", json={"usage_records": [usage_record()]})
    assert response.headers["retry-after"] == "0.25"


async def test_failure_rate_zero_point_five_fails_some_reproducibly(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """A partial failure_rate fails some requests: the same ones again once the faults are reset."""

    async def pattern() -> list[int]:
        collector.set_faults(Faults(failure_rate=0.5))
        return [(await client.get("/configs")).status_code for _ in range(20)]

    first = await pattern()
    assert set(first) == {200, 503}
    assert await pattern() == first


async def test_fail_first_fails_the_next_n_requests_then_serves(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """fail_first=2 makes exactly the next two requests fail; the third is stored."""
    collector.set_faults(Faults(fail_first=2, failure_status=502))
    record = track_record()
    statuses = [
        (await client.post("/track", json={"tracked": [record]})).status_code for _ in range(3)
    ]
    assert statuses == [502, 502, 202]
    assert collector.count("track") == 1
    assert collector.stats()["faults"]["fail_first"] == 2


async def test_latency_delays_each_request(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """latency adds at least that many seconds to a request; admin endpoints are not delayed."""
    collector.set_faults(Faults(latency=0.3))
    started = time.perf_counter()
    response = await client.post("/track", json={"tracked": [track_record()]})
    assert response.status_code == 202
    assert time.perf_counter() - started >= 0.3
    async with httpx.AsyncClient(base_url=collector.api_base) as admin:
        started = time.perf_counter()
        await admin.get("/_collector/stats")
        assert time.perf_counter() - started < 0.3
    assert collector.stats()["faults"]["latency"] == 1


async def test_drop_makes_the_client_see_a_transport_error_and_stores_nothing(
    client: httpx.AsyncClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """drop_rate=1.0 cuts the connection mid-answer: httpx raises TransportError; nothing stored."""
    collector.set_faults(Faults(drop_rate=1.0))
    caplog.set_level(logging.ERROR, logger="uvicorn.error")
    with pytest.raises(httpx.TransportError):
        await client.post("/track", json={"tracked": [track_record()]})
    with pytest.raises(httpx.TransportError):
        await client.get("/configs")
    assert collector.count("track") == 0
    stats = collector.stats()
    assert stats["faults"]["drop"] == 2
    assert stats["requests"]["track"] == {"dropped": 1}
    assert not [r for r in caplog.records if "without completing" in r.getMessage()]
    collector.set_faults(Faults())
    assert (await client.post("/track", json={"tracked": [track_record()]})).status_code == 202


async def test_drop_after_store_stores_then_drops_and_the_retry_is_deduplicated(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """drop_after_store stores the records though the client saw an error; its retry is a dup."""
    collector.set_faults(Faults(drop_rate=1.0, drop_after_store=True))
    batch = {"tracked": [track_record(), track_record()]}
    with pytest.raises(httpx.TransportError):
        await client.post("/track", json=batch)
    assert collector.count("track") == 2
    collector.set_faults(Faults())
    retry = await client.post("/track", json=batch)
    assert retry.status_code == 202
    assert [r["status"] for r in retry.json()["results"]] == ["queued", "queued"]
    assert collector.count("track") == 2
    assert collector.stats()["records"]["track"]["duplicates"] == 2


async def test_reject_response_ids_with_202_stores_the_others(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """A rejected response_id gets status error with a message; the rest of the batch is stored."""
    keep, reject = track_record(), track_record()
    collector.set_faults(Faults(reject_response_ids=frozenset({reject["response_id"]})))
    response = await client.post("/track", json={"tracked": [keep, reject]})
    assert response.status_code == 202
    ok, refused = response.json()["results"]
    assert ok == {"response_id": keep["response_id"], "status": "queued"}
    assert refused["status"] == "error"
    assert refused["response_id"] == reject["response_id"]
    assert refused["errors"]
    assert all(isinstance(e, str) for e in refused["errors"])
    assert [r["response_id"] for r in collector.records("track")] == [keep["response_id"]]
    assert collector.stats()["faults"]["reject"] == 1


async def test_reject_response_ids_with_422_stores_nothing_of_the_batch(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """With reject_status=422 the batch gets 422 naming the rejected id, and nothing is stored."""
    keep, reject = usage_record(), usage_record()
    collector.set_faults(
        Faults(reject_response_ids=frozenset({reject["response_id"]}), reject_status=422)
    )
    response = await client.post("/track-usage", json={"usage_records": [keep, reject]})
    assert response.status_code == 422
    results = response.json()["results"]
    assert [r["response_id"] for r in results] == [keep["response_id"], reject["response_id"]]
    assert [r["status"] for r in results] == ["queued", "error"]
    assert collector.count("track_usage") == 0
    alone = await client.post("/track-usage", json={"usage_records": [keep]})
    assert alone.status_code == 202
    assert collector.count("track_usage") == 1


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Basic {API_KEY}", "Bearer", f"Bearer {API_KEY}x"],
)
async def test_require_api_key_answers_401_to_a_missing_or_wrong_key(
    collector: LocalCollector, authorization: str | None
) -> None:
    """require_api_key refuses every SDK endpoint with a JSON 401 unless the Bearer key matches."""
    collector.set_faults(Faults(require_api_key=API_KEY))
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=collector.url, headers=headers) as client:
        for response in (
            await client.post("/track", json={"tracked": [track_record()]}),
            await client.post("/track-usage", json={"usage_records": [usage_record()]}),
            await client.get("/configs"),
        ):
            assert response.status_code == 401
            assert "detail" in response.json()
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert collector.count("track") == 0
    assert collector.stats()["faults"]["unauthorized"] == 3


async def test_require_api_key_accepts_the_key_and_compares_in_constant_time(
    client: httpx.AsyncClient,
    collector: LocalCollector,
    admin: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The right key is served, compared with hmac.compare_digest; admin endpoints need no key."""
    calls: list[tuple[Any, Any]] = []
    real: Callable[[Any, Any], bool] = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    collector.set_faults(Faults(require_api_key=API_KEY))
    response = await client.post("/track", json={"tracked": [track_record()]})
    assert response.status_code == 202
    assert calls == [(API_KEY.encode(), API_KEY.encode())]
    assert (await admin.get("/_collector/stats")).status_code == 200


async def test_set_faults_takes_effect_on_the_next_request(
    client: httpx.AsyncClient, collector: LocalCollector
) -> None:
    """set_faults switches faults on and off between two requests of one connection."""
    assert (await client.get("/configs")).status_code == 200
    collector.set_faults(Faults(failure_rate=1.0, failure_status=500))
    assert (await client.get("/configs")).status_code == 500
    collector.set_faults(Faults())
    assert (await client.get("/configs")).status_code == 200
