"""CostManagerClient, the sync twin, against the local collector over loopback HTTP."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aicm._core.exceptions import (
    AicmError,
    AuthenticationError,
    ClientRequestError,
    MissingApiKeyError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from aicm._core.models import ConfigsResponse, RecordResult, TrackRecord
from aicm._io.http import MAX_RECORDS_PER_REQUEST
from aicm._sync.client import CostManagerClient
from aicm._version import __version__
from aicm.collector import Faults, LocalCollector

USER_AGENT = f"aicm-sdk/{__version__}"
SECRET = "sk-live-secret-sync-42aa"
CONFIGS = [
    {"config_id": "cfg-openai", "api_id": "openai", "handling_config": {}},
    {"config_id": "cfg-heygen", "api_id": "heygen", "manual_usage_schema": {"duration": "float"}},
]
_ids = itertools.count()


def track_record(**fields: Any) -> dict[str, Any]:
    """A /track record as a mapping, with a response_id no other test uses."""
    record: dict[str, Any] = {
        "api_id": "openai",
        "service_key": "openai::gpt-4o",
        "response_id": f"sync-client-{next(_ids)}",
        "payload": {"input_tokens": 3},
    }
    record.update(fields)
    return record


def usage_record(**fields: Any) -> dict[str, Any]:
    """A /track-usage record as the REST wrapper makes them."""
    record: dict[str, Any] = {
        "config_id": "cfg-heygen",
        "service_id": "heygen/v2/streaming.list",
        "response_id": f"sync-client-usage-{next(_ids)}",
        "usage": {"duration": 2.0},
    }
    record.update(fields)
    return record


@pytest.fixture
def client(connection: dict[str, str]) -> Iterator[CostManagerClient]:
    """A sync client pointed at the collector, closed after the test."""
    with CostManagerClient(**connection) as c:
        yield c


# -- delivery ----------------------------------------------------------------------------------


def test_track_delivers_and_returns_per_record_results(
    client: CostManagerClient, collector: LocalCollector
) -> None:
    """track() stores the records and returns one 'queued' result each, in order."""
    records = [track_record(payload={"n": i}) for i in range(4)]
    result = client.track(records)
    assert [r.response_id for r in result.results] == [r["response_id"] for r in records]
    assert all(r.status == "queued" for r in result.results)
    assert [s["payload"] for s in collector.records("track")] == [{"n": i} for i in range(4)]


def test_track_takes_a_generator_and_built_records(
    client: CostManagerClient, collector: LocalCollector
) -> None:
    """Any iterable of TrackRecords or mappings is accepted."""
    built = TrackRecord.build("openai", "openai::gpt-4o", {"n": 1}, response_id="sync-built")
    result = client.track(r for r in [built, track_record()])
    assert result.results[0].response_id == "sync-built"
    assert collector.count("track") == 2


def test_track_usage_delivers(client: CostManagerClient, collector: LocalCollector) -> None:
    """track_usage() posts /track-usage records and returns their results."""
    records = [usage_record(), usage_record()]
    result = client.track_usage(records)
    assert [r.response_id for r in result.results] == [r["response_id"] for r in records]
    assert [s["usage"] for s in collector.records("track_usage")] == [{"duration": 2.0}] * 2


def test_headers_carry_bearer_key_and_user_agent(
    connection: dict[str, str], collector: LocalCollector, api_key: str
) -> None:
    """Requests carry Authorization: Bearer <key> (the collector checks it) and our User-Agent."""
    collector.set_faults(Faults(require_api_key=api_key))
    with CostManagerClient(**connection) as client:
        client.track([track_record()])
        client.get_configs()
    stats = collector.stats()
    assert stats["faults"]["unauthorized"] == 0
    assert stats["requests"]["track"] == {"202": 1}
    assert stats["user_agents"] == [USER_AGENT]
    assert collector.records("track")[0]["user_agent"] == USER_AGENT


def test_missing_key_raises_at_first_request(collector: LocalCollector) -> None:
    """The sync client builds without a key and raises MissingApiKeyError when it sends."""
    with CostManagerClient(aicm_api_base=collector.api_base) as client:
        assert client.api_root == collector.url
        with pytest.raises(MissingApiKeyError):
            client.track([track_record()])
    assert all(not c for c in collector.stats()["requests"].values())


def test_settings_from_ini_and_environment(
    collector: LocalCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key: str
) -> None:
    """With no arguments the sync client reads the INI (api_base) and AICM_API_KEY."""
    ini = tmp_path / "config" / "aicm" / "AICM.INI"
    ini.parent.mkdir(parents=True)
    ini.write_text(f"[aicm]\napi_base = {collector.api_base}\n", encoding="utf-8")
    monkeypatch.setenv("AICM_API_KEY", api_key)
    collector.set_faults(Faults(require_api_key=api_key))
    with CostManagerClient() as client:
        assert client.settings.ini_path == str(ini)
        client.track([track_record()])
    assert collector.count("track") == 1


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 408, 425])
def test_transient_statuses_raise_server_error(
    status: int, client: CostManagerClient, collector: LocalCollector
) -> None:
    """5xx, 408 and 425 raise ServerError with the status, as the async client does."""
    collector.set_faults(Faults(failure_rate=1.0, failure_status=status))
    with pytest.raises(ServerError) as info:
        client.track([track_record()])
    assert info.value.status_code == status
    assert collector.count("track") == 0


def test_429_raises_rate_limited_with_retry_after(
    client: CostManagerClient, collector: LocalCollector
) -> None:
    """429 raises RateLimitedError whose retry_after is the header's value."""
    collector.set_faults(Faults(failure_rate=1.0, failure_status=429, retry_after=7))
    with pytest.raises(RateLimitedError) as info:
        client.track_usage([usage_record()])
    assert (info.value.status_code, info.value.retry_after) == (429, 7.0)


def test_refused_key_raises_authentication_error(collector: LocalCollector) -> None:
    """A refused key raises AuthenticationError (401)."""
    collector.set_faults(Faults(require_api_key="the-right-key"))
    with (
        CostManagerClient(aicm_api_key="wrong", aicm_api_base=collector.api_base) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.get_configs()
    assert info.value.status_code == 401


def test_dropped_connection_raises_transport_error(
    client: CostManagerClient, collector: LocalCollector
) -> None:
    """A dropped connection raises TransportError chained to the httpx error."""
    collector.set_faults(Faults(drop_rate=1.0))
    with pytest.raises(TransportError) as info:
        client.track([track_record()])
    assert isinstance(info.value.__cause__, httpx.TransportError)


def test_rejected_record_raises_client_request_error_with_results(
    client: CostManagerClient, collector: LocalCollector
) -> None:
    """A 422 for a rejected response_id raises ClientRequestError naming it in .results."""
    good, bad = track_record(), track_record()
    collector.set_faults(
        Faults(reject_response_ids=frozenset({bad["response_id"]}), reject_status=422)
    )
    with pytest.raises(ClientRequestError) as info:
        client.track([good, bad])
    assert info.value.status_code == 422
    statuses = {r.response_id: r.status for r in info.value.results}
    assert statuses == {good["response_id"]: "queued", bad["response_id"]: "error"}
    assert collector.count("track") == 0


def test_latency_beyond_timeout_raises_transport_error(
    connection: dict[str, str], collector: LocalCollector
) -> None:
    """An answer slower than timeout raises TransportError; the slow request still lands."""
    collector.set_faults(Faults(latency=0.4))
    with (
        CostManagerClient(**connection, timeout=0.1) as client,
        pytest.raises(TransportError) as info,
    ):
        client.track([track_record()])
    assert isinstance(info.value.__cause__, httpx.TimeoutException)
    assert collector.wait_for_count("track", 1)


def test_api_key_never_appears_in_errors_or_reprs(collector: LocalCollector) -> None:
    """Neither errors (with their causes) nor reprs show the API key."""
    texts: list[str] = []
    with CostManagerClient(aicm_api_key=SECRET, aicm_api_base=collector.api_base) as client:
        texts += [repr(client), repr(client.settings)]
        for faults in (
            Faults(failure_rate=1.0, failure_status=500),
            Faults(failure_rate=1.0, failure_status=429, retry_after=1),
            Faults(require_api_key="other"),
            Faults(drop_rate=1.0),
        ):
            collector.set_faults(faults)
            with pytest.raises(AicmError) as info:
                client.track([track_record()])
            error: BaseException | None = info.value
            while error is not None:
                texts += [str(error), repr(error), str(getattr(error, "body", ""))]
                error = error.__cause__
    assert len(texts) > 10
    assert not [t for t in texts if SECRET in t]


def test_repr_names_the_sync_class(client: CostManagerClient, collector: LocalCollector) -> None:
    """repr(client) is the async one's, under the sync name."""
    assert repr(client) == f"CostManagerClient(api_root={collector.url!r})"


# -- configs, idempotency, batching --------------------------------------------------------------


def test_get_configs_revalidates_with_etag(
    client: CostManagerClient, collector: LocalCollector
) -> None:
    """The second get_configs gets 304 (If-None-Match) and returns the cached value."""
    collector.set_configs(CONFIGS)
    first = client.get_configs()
    assert isinstance(first, ConfigsResponse)
    assert [c.config_id for c in first.service_configs] == ["cfg-openai", "cfg-heygen"]
    assert client.get_configs() == first
    only = client.get_configs(api_id="heygen")
    assert [c.config_id for c in only.service_configs] == ["cfg-heygen"]
    assert collector.stats()["requests"]["configs"] == {"200": 2, "304": 1}


def test_repeated_response_id_is_stored_once(
    client: CostManagerClient, collector: LocalCollector
) -> None:
    """The same response_id sent twice is one event at the service."""
    record = track_record()
    client.track([record])
    client.track([record])
    assert collector.count("track") == 1
    assert collector.stats()["records"]["track"]["duplicates"] == 1


def test_more_than_1000_records_are_split(
    client: CostManagerClient, collector: LocalCollector
) -> None:
    """1001 records go as two requests; every result comes back in order."""
    records = [track_record() for _ in range(MAX_RECORDS_PER_REQUEST + 1)]
    result = client.track(records)
    assert len(result.results) == len(records)
    assert result.results[-1].response_id == records[-1]["response_id"]
    assert collector.stats()["requests"]["track"] == {"202": 2}
    assert collector.count("track") == len(records)


def test_injected_mock_transport_is_used(collector: LocalCollector, api_key: str) -> None:
    """transport=httpx.MockTransport carries the sync client's requests (not the network)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        ids = [r["response_id"] for r in json.loads(request.content)["usage_records"]]
        return httpx.Response(
            200, json={"results": [{"response_id": i, "status": "queued"} for i in ids]}
        )

    with CostManagerClient(
        aicm_api_key=api_key,
        aicm_api_base="https://svc.example",
        aicm_api_url="/v2",
        transport=httpx.MockTransport(handler),
    ) as client:
        record = usage_record()
        result = client.track_usage([record])
    assert result.results == (RecordResult(response_id=record["response_id"], status="queued"),)
    (request,) = seen
    assert str(request.url) == "https://svc.example/v2/track-usage"
    assert request.headers["authorization"] == f"Bearer {api_key}"
    assert request.headers["user-agent"] == USER_AGENT
    assert all(not c for c in collector.stats()["requests"].values())


def test_plain_http_to_a_remote_host_warns(caplog: pytest.LogCaptureFixture) -> None:
    """The sync client warns about http:// to a non-loopback host, like the async one."""
    with caplog.at_level(logging.WARNING, logger="aicm"):
        CostManagerClient(aicm_api_key=SECRET, aicm_api_base="http://example.com").close()
        CostManagerClient(aicm_api_key=SECRET, aicm_api_base="http://127.0.0.1:1").close()
    warnings = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == 1
    assert "example.com" in warnings[0].getMessage()
    assert SECRET not in caplog.text


# -- the facade itself -------------------------------------------------------------------------


def test_with_block_closes_the_client(connection: dict[str, str]) -> None:
    """Leaving `with` closes the connection pool: the client sends nothing more."""
    with CostManagerClient(**connection) as client:
        client.track([track_record()])
    # ClosedError (the aicm error for this) is a RuntimeError, as httpx's own is.
    with pytest.raises(RuntimeError):
        client.track([track_record()])


def test_usable_from_many_threads(client: CostManagerClient, collector: LocalCollector) -> None:
    """One sync client serves several threads at once (every call is one portal call)."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                client.track([track_record(), track_record()])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert collector.count("track") == 36


def test_usable_from_inside_a_running_event_loop(
    client: CostManagerClient, collector: LocalCollector
) -> None:
    """A sync call made from async code (a running loop in this thread) still completes."""

    async def main() -> int:
        return len(client.track([track_record()]).results)

    assert anyio.run(main) == 1
    assert collector.count("track") == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_a_working_client(collector: LocalCollector, api_key: str) -> None:
    """After fork, the child's calls run on a fresh runtime and still deliver."""
    script = textwrap.dedent(
        """
        import os, sys, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        from aicm._sync.client import CostManagerClient

        def record(rid):
            return {"api_id": "a", "service_key": "s", "response_id": rid, "payload": {}}

        client = CostManagerClient(aicm_api_key=sys.argv[1], aicm_api_base=sys.argv[2])
        client.track([record("before-fork")])
        pid = os.fork()
        if pid == 0:
            try:
                client.track([record("in-child")])
                client.close()
            except BaseException:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        client.track([record("in-parent")])
        client.close()
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    done = subprocess.run(
        [sys.executable, "-c", script, api_key, collector.api_base],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ids = sorted(r["response_id"] for r in collector.records("track"))
    assert ids == ["before-fork", "in-child", "in-parent"]
