"""AsyncCostManagerClient against the local collector over loopback HTTP, on asyncio and trio."""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aicm._core.exceptions import (
    AicmError,
    APIStatusError,
    AuthenticationError,
    ClientRequestError,
    RateLimitedError,
    RecordError,
    ServerError,
    TransportError,
)
from aicm._core.models import (
    ConfigsResponse,
    Endpoint,
    RecordResult,
    ServiceConfig,
    TrackRecord,
    UsageRecord,
)
from aicm._io.http import MAX_RECORDS_PER_REQUEST, AsyncCostManagerClient
from aicm._version import __version__
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio

USER_AGENT = f"aicm-sdk/{__version__}"
CONFIGS = [
    {
        "config_id": "cfg-openai",
        "api_id": "openai",
        "handling_config": {"tracked_methods": ["chat.completions.create"]},
        "manual_usage_schema": None,
    },
    {
        "config_id": "cfg-heygen",
        "api_id": "heygen",
        "handling_config": {},
        "manual_usage_schema": {"duration": "float"},
    },
]
_ids = itertools.count()


def track_record(**fields: Any) -> dict[str, Any]:
    """A /track record as a mapping, with a response_id no other test uses."""
    record: dict[str, Any] = {
        "api_id": "openai",
        "service_key": "openai::gpt-4o",
        "response_id": f"io-async-{next(_ids)}",
        "payload": {"input_tokens": 10, "output_tokens": 5},
    }
    record.update(fields)
    return record


def usage_record(**fields: Any) -> dict[str, Any]:
    """A /track-usage record as the REST wrapper makes them."""
    record: dict[str, Any] = {
        "config_id": "cfg-heygen",
        "service_id": "heygen/v2/streaming.list",
        "timestamp": "2024-01-01T00:00:00Z",
        "response_id": f"io-async-usage-{next(_ids)}",
        "usage": {"duration": 12.5},
    }
    record.update(fields)
    return record


@pytest.fixture
async def client(connection: dict[str, str]) -> AsyncIterator[AsyncCostManagerClient]:
    """An async client pointed at the collector, closed after the test."""
    async with AsyncCostManagerClient(**connection) as c:
        yield c


def no_requests(collector: LocalCollector) -> bool:
    """Whether the collector has answered no SDK request at all."""
    return all(not counts for counts in collector.stats()["requests"].values())


# -- delivery ----------------------------------------------------------------------------------


async def test_track_delivers_and_returns_per_record_results(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """track() stores every record and answers one 'queued' result per record, in order."""
    records = [track_record(payload={"input_tokens": i}) for i in range(3)]
    records[1]["client_customer_key"] = "cust-1"
    records[2]["context"] = {"session": "s-9"}
    records[0]["timestamp"] = "2024-05-01T10:00:00+02:00"

    result = await client.track(records)

    assert [r.response_id for r in result.results] == [r["response_id"] for r in records]
    assert [r.status for r in result.results] == ["queued"] * 3
    assert all(r.ok for r in result.results)
    assert result.triggered_limits == {}
    stored = collector.records("track")
    assert [s["payload"] for s in stored] == [{"input_tokens": i} for i in range(3)]
    assert stored[0]["timestamp"] == "2024-05-01T08:00:00Z"
    assert stored[1]["customer_key"] == "cust-1"
    assert stored[2]["context"] == {"session": "s-9"}
    assert collector.stats()["requests"]["track"] == {"202": 1}


async def test_track_takes_built_records_too(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """TrackRecord instances and mappings can be mixed in one call."""
    built = TrackRecord.build("openai", "openai::gpt-4o", {"n": 1}, response_id="io-built-1")
    result = await client.track([built, track_record(response_id="io-built-2")])
    assert [r.response_id for r in result.results] == ["io-built-1", "io-built-2"]
    assert collector.count("track") == 2


async def test_track_usage_delivers_and_returns_per_record_results(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """track_usage() posts /track-usage records, stored as sent, one result each."""
    records = [usage_record(), usage_record(usage={"duration": 1.0})]
    built = UsageRecord.build(usage_record(response_id="io-usage-built"))
    result = await client.track_usage([*records, built])
    assert [r.response_id for r in result.results] == [
        records[0]["response_id"],
        records[1]["response_id"],
        "io-usage-built",
    ]
    assert all(r.status == "queued" for r in result.results)
    stored = collector.records("track_usage")
    assert [s["usage"] for s in stored] == [
        {"duration": 12.5},
        {"duration": 1.0},
        {"duration": 12.5},
    ]
    assert stored[0]["service_id"] == "heygen/v2/streaming.list"
    assert collector.stats()["requests"]["track_usage"] == {"202": 1}


async def test_invalid_record_is_refused_before_any_request(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """A bad record raises a RecordError at the call and nothing is sent."""
    with pytest.raises(RecordError) as info:
        await client.track([track_record(), track_record(bogus=1)])
    assert info.value.field == "record"
    with pytest.raises(RecordError):
        await client.track([track_record(api_id="")])
    assert no_requests(collector)


async def test_headers_carry_bearer_key_and_user_agent(
    connection: dict[str, str], collector: LocalCollector, api_key: str
) -> None:
    """Every request carries Authorization: Bearer <key> and User-Agent: aicm-sdk/<version>."""
    collector.set_faults(Faults(require_api_key=api_key))
    async with AsyncCostManagerClient(**connection) as client:
        await client.track([track_record()])
        await client.track_usage([usage_record()])
        await client.get_configs()
    stats = collector.stats()
    assert stats["requests"]["track"] == {"202": 1}
    assert stats["requests"]["configs"] == {"200": 1}
    assert stats["faults"]["unauthorized"] == 0
    assert stats["auth_header_seen"] is True
    assert stats["requests_without_auth"] == 0
    assert stats["user_agents"] == [USER_AGENT]
    assert collector.records("track")[0]["user_agent"] == USER_AGENT
    assert collector.records("track_usage")[0]["user_agent"] == USER_AGENT


async def test_settings_come_from_ini_and_environment(
    collector: LocalCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key: str
) -> None:
    """A client with no arguments finds api_base in the INI and the key in AICM_API_KEY."""
    ini = tmp_path / "aicm.ini"
    ini.write_text(f"[aicm]\napi_base = {collector.api_base}\ntimeout = 4\n", encoding="utf-8")
    monkeypatch.setenv("AICM_API_KEY", api_key)
    collector.set_faults(Faults(require_api_key=api_key))
    async with AsyncCostManagerClient(aicm_ini_path=str(ini)) as client:
        assert client.api_root == collector.url
        assert client.settings.timeout == 4.0
        await client.track([track_record()])
    assert collector.count("track") == 1


async def test_explicit_options_beat_environment(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch, api_key: str
) -> None:
    """aicm_api_key / aicm_api_base arguments win over AICM_API_KEY / AICM_API_BASE."""
    monkeypatch.setenv("AICM_API_KEY", "wrong-key")
    monkeypatch.setenv("AICM_API_BASE", "https://nowhere.invalid")
    collector.set_faults(Faults(require_api_key=api_key))
    async with AsyncCostManagerClient(
        aicm_api_key=api_key, aicm_api_base=collector.api_base, timeout=3
    ) as client:
        await client.track([track_record()])
    assert collector.count("track") == 1


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 408, 425])
async def test_transient_statuses_raise_server_error(
    status: int, client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """5xx, 408 and 425 raise ServerError carrying the status; nothing is stored."""
    collector.set_faults(Faults(failure_rate=1.0, failure_status=status))
    with pytest.raises(ServerError) as info:
        await client.track([track_record()])
    assert info.value.status_code == status
    assert info.value.retry_after is None
    assert "injected failure" in info.value.body
    assert str(info.value).startswith(f"HTTP {status}: ")
    with pytest.raises(ServerError):
        await client.track_usage([usage_record()])
    assert collector.count("track") == 0


async def test_server_error_carries_retry_after(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """A 503 with Retry-After reports the delay asked for."""
    collector.set_faults(Faults(failure_rate=1.0, failure_status=503, retry_after=2))
    with pytest.raises(ServerError) as info:
        await client.get_configs()
    assert info.value.retry_after == 2.0


@pytest.mark.parametrize("retry_after", [3, 0.25, 0])
async def test_429_raises_rate_limited_with_retry_after(
    retry_after: float, client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """429 raises RateLimitedError whose retry_after equals the header the collector sent."""
    collector.set_faults(Faults(failure_rate=1.0, failure_status=429, retry_after=retry_after))
    with pytest.raises(RateLimitedError) as info:
        await client.track([track_record()])
    assert info.value.status_code == 429
    assert info.value.retry_after == retry_after
    assert isinstance(info.value, APIStatusError)


async def test_429_without_retry_after(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """429 without the header still raises RateLimitedError, retry_after None."""
    collector.set_faults(Faults(failure_rate=1.0, failure_status=429))
    with pytest.raises(RateLimitedError) as info:
        await client.track([track_record()])
    assert info.value.retry_after is None


async def test_refused_key_raises_authentication_error(
    collector: LocalCollector,
) -> None:
    """A key the service refuses raises AuthenticationError (401); nothing is stored."""
    collector.set_faults(Faults(require_api_key="the-right-key"))
    async with AsyncCostManagerClient(
        aicm_api_key="a-wrong-key", aicm_api_base=collector.api_base
    ) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.track([track_record()])
        assert info.value.status_code == 401
        with pytest.raises(AuthenticationError):
            await client.get_configs()
    assert collector.count("track") == 0
    assert collector.stats()["faults"]["unauthorized"] == 2


async def test_403_raises_authentication_error(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """403 is an AuthenticationError too."""
    collector.set_faults(Faults(failure_rate=1.0, failure_status=403))
    with pytest.raises(AuthenticationError) as info:
        await client.track_usage([usage_record()])
    assert info.value.status_code == 403


async def test_dropped_connection_raises_transport_error(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """A connection cut mid-answer raises TransportError, the httpx error chained."""
    collector.set_faults(Faults(drop_rate=1.0))
    with pytest.raises(TransportError) as info:
        await client.track([track_record()])
    assert isinstance(info.value.__cause__, httpx.TransportError)
    assert isinstance(info.value, ConnectionError)
    assert collector.url + "/track" in str(info.value)
    assert collector.count("track") == 0
    with pytest.raises(TransportError):
        await client.get_configs()
    assert collector.stats()["faults"]["drop"] == 2


async def test_drop_after_store_still_raises_but_the_records_arrived(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """A lost answer is a TransportError even if the service stored the records (at-least-once)."""
    collector.set_faults(Faults(drop_rate=1.0, drop_after_store=True))
    record = track_record()
    with pytest.raises(TransportError):
        await client.track([record])
    assert [r["response_id"] for r in collector.records("track")] == [record["response_id"]]


async def test_nothing_listening_raises_transport_error() -> None:
    """A refused connection raises TransportError naming the URL."""
    async with AsyncCostManagerClient(
        aicm_api_key="k", aicm_api_base="http://127.0.0.1:9", timeout=2
    ) as client:
        with pytest.raises(TransportError, match=r"http://127\.0\.0\.1:9/api/v1/track"):
            await client.track([track_record()])


async def test_rejected_record_raises_client_request_error_with_results(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """422 for a rejected record raises ClientRequestError whose .results name that record."""
    good, bad = track_record(), track_record()
    collector.set_faults(
        Faults(reject_response_ids=frozenset({bad["response_id"]}), reject_status=422)
    )
    with pytest.raises(ClientRequestError) as info:
        await client.track([good, bad])
    error = info.value
    assert error.status_code == 422
    results = {r.response_id: r for r in error.results}
    assert set(results) == {good["response_id"], bad["response_id"]}
    assert isinstance(results[bad["response_id"]], RecordResult)
    assert results[bad["response_id"]].status == "error"
    assert any("rejected" in e for e in results[bad["response_id"]].errors)
    assert results[good["response_id"]].ok
    assert collector.count("track") == 0


async def test_other_4xx_raises_client_request_error(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """A 4xx outside the retryable and auth ones raises ClientRequestError, without results."""
    collector.set_faults(Faults(failure_rate=1.0, failure_status=404))
    with pytest.raises(ClientRequestError) as info:
        await client.track([track_record()])
    assert (info.value.status_code, info.value.results) == (404, ())


async def test_rejected_record_with_2xx_is_a_result_not_an_error(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """With a 2xx reject status the call succeeds and the rejected record's result says error."""
    good, bad = track_record(), track_record()
    collector.set_faults(Faults(reject_response_ids=frozenset({bad["response_id"]})))
    result = await client.track([good, bad])
    assert [r.ok for r in result.results] == [True, False]
    assert collector.count("track") == 1


async def test_latency_beyond_timeout_raises_transport_error(
    connection: dict[str, str], collector: LocalCollector
) -> None:
    """An answer slower than the timeout raises TransportError; the service may still store it."""
    collector.set_faults(Faults(latency=0.4))
    async with AsyncCostManagerClient(**connection, timeout=0.1) as client:
        with pytest.raises(TransportError) as info:
            await client.track([track_record()])
    assert isinstance(info.value.__cause__, httpx.TimeoutException)
    # The slow request finishes on the server side: it is stored though the client gave up.
    await anyio.to_thread.run_sync(collector.wait_for_count, "track", 1)
    assert collector.count("track") == 1


# -- configs -----------------------------------------------------------------------------------


async def test_get_configs_revalidates_with_etag(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """The second get_configs sends If-None-Match, gets 304 and returns the cached configs."""
    collector.set_configs(CONFIGS)
    first = await client.get_configs()
    assert isinstance(first, ConfigsResponse)
    assert [c.config_id for c in first.service_configs] == ["cfg-openai", "cfg-heygen"]
    assert first.service_configs[1] == ServiceConfig(
        config_id="cfg-heygen",
        api_id="heygen",
        handling_config={},
        manual_usage_schema={"duration": "float"},
    )
    second = await client.get_configs()
    assert second == first
    assert collector.stats()["requests"]["configs"] == {"200": 1, "304": 1}

    collector.set_configs(CONFIGS[:1])
    third = await client.get_configs()
    assert [c.config_id for c in third.service_configs] == ["cfg-openai"]
    assert collector.stats()["requests"]["configs"] == {"200": 2, "304": 1}


async def test_get_configs_per_api_id_is_cached_separately(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """get_configs(api_id) filters on the service and keeps its own ETag."""
    collector.set_configs(CONFIGS)
    everything = await client.get_configs()
    only = await client.get_configs("heygen")
    assert [c.api_id for c in only.service_configs] == ["heygen"]
    assert len(everything.service_configs) == 2
    assert collector.stats()["requests"]["configs"] == {"200": 2}
    assert await client.get_configs("heygen") == only
    assert await client.get_configs() == everything
    assert collector.stats()["requests"]["configs"] == {"200": 2, "304": 2}


# -- idempotency and batching -----------------------------------------------------------------


async def test_repeated_response_id_is_stored_once(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """Sending the same response_id again (a retry) stores the event once."""
    record = track_record()
    first = await client.track([record])
    again = await client.track([record, dict(record, payload={"input_tokens": 999})])
    assert first.results[0].status == "queued"
    assert [r.status for r in again.results] == ["queued", "queued"]
    stored = collector.records("track")
    assert len(stored) == 1
    assert stored[0]["payload"] == record["payload"]
    assert collector.stats()["records"]["track"]["duplicates"] == 2


async def test_more_than_1000_records_are_split_into_requests(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """2001 records go as three requests of at most 1000; results come back in order."""
    records = [track_record(payload={"i": i}) for i in range(2 * MAX_RECORDS_PER_REQUEST + 1)]
    result = await client.track(records)
    assert [r.response_id for r in result.results] == [r["response_id"] for r in records]
    assert collector.stats()["requests"]["track"] == {"202": 3}
    assert collector.count("track") == len(records)


async def test_exactly_1000_records_go_in_one_request(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """The limit is inclusive: 1000 records make one request; none make no request."""
    await client.track([track_record() for _ in range(MAX_RECORDS_PER_REQUEST)])
    assert collector.stats()["requests"]["track"] == {"202": 1}
    empty = await client.track([])
    assert empty.results == ()
    assert collector.stats()["requests"]["track"] == {"202": 1}


async def test_post_encoded_refuses_more_than_1000(client: AsyncCostManagerClient) -> None:
    """The low-level send refuses an over-long batch rather than sending it."""
    with pytest.raises(ValueError, match="1000"):
        await client.post_encoded(Endpoint.TRACK, ["{}"] * (MAX_RECORDS_PER_REQUEST + 1))


# -- the transport option ------------------------------------------------------------------------


async def test_injected_mock_transport_is_used(collector: LocalCollector, api_key: str) -> None:
    """transport= carries every request (here httpx.MockTransport): the collector sees none."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        results = [
            {"response_id": r["response_id"], "status": "completed"} for r in body["tracked"]
        ]
        return httpx.Response(202, json={"results": results, "triggered_limits": {"x": 1}})

    async with AsyncCostManagerClient(
        aicm_api_key=api_key,
        aicm_api_base="https://service.example",
        transport=httpx.MockTransport(handler),
    ) as client:
        record = track_record()
        result = await client.track([record])
    assert result.results == (RecordResult(response_id=record["response_id"], status="completed"),)
    assert result.triggered_limits == {"x": 1}
    (request,) = seen
    assert str(request.url) == "https://service.example/api/v1/track"
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {api_key}"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["content-type"] == "application/json"
    sent = json.loads(request.content)["tracked"][0]
    assert sent["response_id"] == record["response_id"]
    assert sent["payload"] == record["payload"]
    assert no_requests(collector)


async def test_mock_transport_errors_are_wrapped(api_key: str) -> None:
    """An httpx error raised inside the transport surfaces as TransportError, chained."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    async with AsyncCostManagerClient(
        aicm_api_key=api_key,
        aicm_api_base="https://service.example",
        transport=httpx.MockTransport(handler),
    ) as client:
        with pytest.raises(TransportError) as info:
            await client.get_configs()
    assert isinstance(info.value.__cause__, httpx.ConnectError)


# -- plain http warning ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_base", "warns"),
    [
        ("http://example.com", True),
        ("http://10.1.2.3:8080", True),
        ("http://localhost:8000", False),
        ("http://127.0.0.1:8000", False),
        ("http://127.9.9.9", False),
        ("http://[::1]:8000", False),
        ("https://example.com", False),
    ],
)
async def test_plain_http_to_a_remote_host_warns(
    api_base: str, warns: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Building a client on http:// to a non-loopback host logs a warning (no request needed)."""
    with caplog.at_level(logging.WARNING, logger="aicm"):
        client = AsyncCostManagerClient(aicm_api_key="sk-plain-http-key", aicm_api_base=api_base)
        await client.aclose()
    warnings = [
        r for r in caplog.records if r.name.startswith("aicm") and "plain http" in r.message
    ]
    assert len(warnings) == (1 if warns else 0)
    assert "sk-plain-http-key" not in caplog.text


# -- secrecy -----------------------------------------------------------------------------------

SECRET = "sk-live-secret-7e1f00d"


def all_text(error: BaseException) -> str:
    """Everything an error shows: str, repr, body, args, and the same for its causes."""
    parts: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        parts += [str(seen), repr(seen), str(getattr(seen, "body", "")), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


async def test_api_key_never_appears_in_errors_or_reprs(collector: LocalCollector) -> None:
    """No exception message, body, cause or repr contains the API key."""
    errors: list[AicmError] = []
    scenarios = [
        Faults(failure_rate=1.0, failure_status=503, retry_after=1),
        Faults(failure_rate=1.0, failure_status=429, retry_after=1),
        Faults(failure_rate=1.0, failure_status=400),
        Faults(require_api_key="another-key"),
        Faults(drop_rate=1.0),
    ]
    async with AsyncCostManagerClient(
        aicm_api_key=SECRET, aicm_api_base=collector.api_base
    ) as client:
        for faults in scenarios:
            collector.set_faults(faults)
            for call in (client.track([track_record()]), client.get_configs()):
                with pytest.raises(AicmError) as info:
                    await call
                errors.append(info.value)
        for text in (repr(client), repr(client.settings), str(client.settings)):
            assert SECRET not in text
    async with AsyncCostManagerClient(
        aicm_api_key=SECRET, aicm_api_base="http://127.0.0.1:9"
    ) as client:
        with pytest.raises(TransportError) as refused:
            await client.track([track_record()])
        errors.append(refused.value)
    assert len(errors) == 2 * len(scenarios) + 1
    for error in errors:
        assert SECRET not in all_text(error)


async def test_repr_names_the_api_root(
    client: AsyncCostManagerClient, collector: LocalCollector
) -> None:
    """repr(client) says where it sends."""
    assert repr(client) == f"AsyncCostManagerClient(api_root={collector.url!r})"


async def test_closed_client_raises_an_aicm_error(connection: dict[str, str]) -> None:
    """Using a client after aclose() raises an AicmError (ClosedError), not httpx's RuntimeError."""
    client = AsyncCostManagerClient(**connection)
    await client.aclose()
    with pytest.raises(AicmError):
        await client.track([track_record()])


# -- the blocking twin (IMMEDIATE sends from a plain thread) --------------------------------


def test_blocking_post_errors_match_the_async_ones(collector: LocalCollector) -> None:
    """post_encoded_blocking answers each failure with the error post_encoded gives: the
    same class, URL and httpx error name (the OS's wording may differ), that error chained."""
    encoded = [json.dumps(track_record())]
    cases = {
        "refused": {"aicm_api_key": "k" * 20, "aicm_api_base": "http://127.0.0.1:9"},
        "dropped": {"aicm_api_key": "k" * 20, "aicm_api_base": collector.api_base},
    }
    collector.set_faults(Faults(drop_rate=1.0))
    for name, connection in cases.items():

        async def main(connection: dict[str, str] = connection) -> tuple[Any, Any]:
            async with AsyncCostManagerClient(timeout=2, **connection) as client:
                assert client.can_block
                on_loop = await client.post_encoded(Endpoint.TRACK, encoded)
                blocking = await anyio.to_thread.run_sync(
                    client.post_encoded_blocking, Endpoint.TRACK, encoded
                )
                assert client._blocking is not None, "the blocking twin was not used"
                return on_loop.error, blocking.error

        on_loop, blocking = anyio.run(main)
        assert isinstance(blocking, TransportError), name
        head = re.compile(r".* failed: \w+: ")
        assert (type(blocking), head.match(str(blocking))[0]) == (  # type: ignore[index]
            type(on_loop),
            head.match(str(on_loop))[0],  # type: ignore[index]
        ), name
        assert isinstance(blocking.__cause__, httpx.TransportError), name


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_in_the_environment_keeps_sends_on_the_loop(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """The blocking twin does not go through proxies, so with one configured it is not made:
    IMMEDIATE sends go through the async client, which honours the proxy as httpx does."""
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    client = AsyncCostManagerClient(aicm_api_key="k" * 20, aicm_api_base="https://service.test")
    assert not client.can_block
    monkeypatch.delenv(variable)
    assert AsyncCostManagerClient(aicm_api_key="k" * 20).can_block


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (PEM files: cert, key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_blocking_post_over_tls_verifies_the_certificate(tmp_path: Path) -> None:
    """The blocking twin speaks TLS with the client's SSL context: a service whose
    certificate that context trusts gets the records; with the default trust store the
    same service is refused, as the async client refuses it."""
    import http.server
    import ssl
    import threading

    cert, key = _self_signed(tmp_path)
    received: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            answer = b'{"results": [{"response_id": "r1", "status": "queued"}]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert, key)
    server.socket = serving.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"https://127.0.0.1:{server.server_address[1]}"
    encoded = [json.dumps(track_record(response_id="r1"))]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))

        async def main(verify: ssl.SSLContext | bool) -> tuple[Any, Any]:
            async with AsyncCostManagerClient(
                aicm_api_key="k" * 20, aicm_api_base=base, timeout=5, verify=verify
            ) as client:
                blocking = await anyio.to_thread.run_sync(
                    client.post_encoded_blocking, Endpoint.TRACK, encoded
                )
                assert client._blocking is not None
                on_loop = await client.post_encoded(Endpoint.TRACK, encoded)
                return blocking, on_loop

        blocking, on_loop = anyio.run(main, trusting)
        assert blocking.error is None
        assert on_loop.error is None
        assert [r.response_id for r in blocking.unwrap().results] == ["r1"]
        assert len(received) == 2
        blocking, on_loop = anyio.run(main, True)
        assert isinstance(blocking.error, TransportError)
        assert "ConnectError" in str(blocking.error)
        assert "CERTIFICATE" in str(blocking.error)
        assert type(on_loop.error) is type(blocking.error)
        assert len(received) == 2
    finally:
        server.shutdown()
        server.server_close()
