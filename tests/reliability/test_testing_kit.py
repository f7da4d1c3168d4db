"""aicm.testing: capture mode for every entry point and delivery type, its assertion
helpers, the fake service's answers, the local collector helper, and the docs' examples."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aicm import (
    AsyncCostManager,
    AsyncRestUsageWrapper,
    AsyncTracker,
    ConfigError,
    CostManager,
    CostManagerClient,
    RestUsageWrapper,
    Tracker,
    UsageValidationError,
)
from aicm._io import http as aicm_http
from aicm.collector import Faults, LocalCollector
from aicm.testing import CapturedRecords, capture, local_collector

ROOT = Path(__file__).resolve().parents[2]
KEY = "kit-key"
DELIVERY_TYPES = ["immediate", "mem_queue", "persistent_queue"]
CALC_CONFIG: dict[str, Any] = {
    "config_id": "calc-config",
    "api_id": "calculator",
    "handling_config": {
        "tracked_methods": ["add"],
        "response_fields": [{"key": "value", "path": ""}],
        "payload_mapping": {
            "config_id": "config_identifier",
            "timestamp": "timestamp",
            "usage": "response_data.value",
        },
    },
}


class Calculator:
    """A client to wrap."""

    def add(self, a: int, b: int) -> int:
        """Add."""
        return a + b


def rest_config(collector: LocalCollector) -> dict[str, Any]:
    """A config tracking the collector's own health endpoint (the REST API under test)."""
    return {
        "config_id": "health-config",
        "api_id": collector.api_base.split("://", 1)[1].rsplit(":", 1)[0],  # the hostname
        "handling_config": {
            "tracked_methods": ["GET /_collector/health"],
            "payload_mapping": {
                "config_id": "config_identifier",
                "service_id": "service_id",
                "timestamp": "timestamp",
            },
            "static_payload_fields": {"usage": {"calls": 1}},
        },
    }


@pytest.mark.parametrize("delivery", DELIVERY_TYPES)
def test_sync_tracker_is_captured_and_nothing_is_sent(
    collector: LocalCollector, tmp_path: Path, delivery: str
) -> None:
    """A Tracker built in a capture delivers 3 records into it; the real collector sees none."""
    with capture() as captured:
        with Tracker(
            aicm_api_key=KEY,
            aicm_api_base=collector.api_base,
            delivery_type=delivery,
            db_path=str(tmp_path / "q.db"),
        ) as tracker:
            results = [
                tracker.track("openai", "gpt", {"n": n}, response_id=f"r-{n}") for n in range(3)
            ]
        expected = "queued" if delivery == "immediate" else "enqueued"
        assert [r.status for r in results] == [expected] * 3
    assert captured.response_ids == ["r-0", "r-1", "r-2"]
    assert [r["payload"] for r in captured.track_records] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert (len(captured), captured.usage_records, captured.duplicates) == (3, [], 0)
    assert collector.stats()["requests"]["track"] == {}


@pytest.mark.parametrize("delivery", DELIVERY_TYPES)
@pytest.mark.anyio
async def test_async_tracker_is_captured(tmp_path: Path, delivery: str) -> None:
    """An AsyncTracker (asyncio and trio) delivers into the capture in every delivery type."""
    with capture() as captured:
        async with AsyncTracker(
            aicm_api_key=KEY, delivery_type=delivery, db_path=str(tmp_path / "q.db")
        ) as tracker:
            for n in range(4):
                await tracker.track("openai", "gpt", {"n": n}, client_customer_key="acme")
            await captured.wait_for_async(4)
    assert len(captured.find(client_customer_key="acme", api_id="openai")) == 4


@pytest.mark.parametrize("delivery", DELIVERY_TYPES)
def test_cost_manager_is_captured(tmp_path: Path, delivery: str) -> None:
    """A CostManager's tracked call becomes one /track-usage record, configs from the capture."""
    with capture(configs=[CALC_CONFIG]) as captured:
        with CostManager(
            Calculator(), aicm_api_key=KEY, delivery_type=delivery, db_path=str(tmp_path / "q")
        ) as manager:
            assert manager.client.add(2, 3) == 5
        [record] = captured.assert_tracked(api_id="calculator", usage=5, count=1)
    assert record["config_id"] == "calc-config"
    assert captured.track_records == []


@pytest.mark.anyio
async def test_async_cost_manager_is_captured() -> None:
    """An AsyncCostManager's calls are captured on asyncio and trio."""
    with capture(configs=[CALC_CONFIG]) as captured:
        async with AsyncCostManager(Calculator(), aicm_api_key=KEY) as manager:
            assert manager.client.add(1, 1) == 2
            assert manager.client.add(a=2, b=2) == 4
    assert sorted(r["usage"] for r in captured.usage_records) == [2, 4]


def test_rest_wrapper_is_captured(collector: LocalCollector) -> None:
    """A RestUsageWrapper's real call goes out; its usage record goes into the capture."""
    with capture(configs=[rest_config(collector)]) as captured:
        session = httpx.Client()
        with RestUsageWrapper(session, base_url=collector.api_base, aicm_api_key=KEY) as wrapper:
            assert wrapper.get("/_collector/health").json() == {"status": "ok"}
        session.close()
    host = collector.api_base.split("://", 1)[1]
    captured.assert_tracked(
        config_id="health-config", service_id=f"{host}/_collector/health", count=1
    )
    assert captured.usage_records[0]["usage"] == {"calls": 1}


@pytest.mark.anyio
async def test_async_rest_wrapper_is_captured(collector: LocalCollector) -> None:
    """An AsyncRestUsageWrapper's two calls become two captured records."""
    with capture(configs=[rest_config(collector)]) as captured:
        async with (
            httpx.AsyncClient() as http,
            AsyncRestUsageWrapper(http, base_url=collector.api_base, aicm_api_key=KEY) as wrapper,
        ):
            for _ in range(2):
                (await wrapper.get("/_collector/health")).raise_for_status()
    captured.assert_tracked(config_id="health-config", count=2)


def test_service_client_talks_to_the_capture() -> None:
    """CostManagerClient's track and get_configs are answered by the fake service."""
    with capture(configs=[CALC_CONFIG]) as captured:
        client = CostManagerClient(aicm_api_key=KEY)
        record = {"api_id": "a", "service_key": "s", "payload": {"x": 1}, "response_id": "c-1"}
        answer = client.track([record])
        configs = client.get_configs("calculator")
        client.close()
    assert [(r.response_id, r.status) for r in answer.results] == [("c-1", "queued")]
    assert [c.config_id for c in configs.service_configs] == ["calc-config"]
    assert captured.response_ids == ["c-1"]


def test_config_tracker_validates_against_the_captured_schema() -> None:
    """A config tracker validates against the captured schema: bad usage refused, good kept."""
    config = {"config_id": "cfg", "api_id": "api", "manual_usage_schema": {"tokens": "int"}}
    with capture(configs=[config]) as captured, Tracker("cfg", "svc", aicm_api_key=KEY) as tracker:
        with pytest.raises(UsageValidationError):
            tracker.track({"tokens": "many"})
        tracker.track({"tokens": 3})
    captured.assert_tracked(api_id="api", config_id="cfg", service_id="svc", usage={"tokens": 3})
    assert len(captured) == 1


def test_a_resend_is_stored_once() -> None:
    """The same response_id twice is one record and one duplicate; another service, a second."""
    with capture() as captured, Tracker(aicm_api_key=KEY) as tracker:
        tracker.track("openai", "svc-a", {"n": 1}, response_id="same")
        tracker.track("openai", "svc-a", {"n": 1}, response_id="same")
        tracker.track("openai", "svc-b", {"n": 1}, response_id="same")
    assert (len(captured), captured.duplicates, captured.requests) == (2, 1, 3)


def test_assert_tracked_counts_exactly_and_explains() -> None:
    """assert_tracked with count demands exactly that many; a miss lists what arrived."""
    with capture() as captured, Tracker(aicm_api_key=KEY) as tracker:
        for n in range(3):
            tracker.track("openai", "gpt", {"n": 1}, context={"run": n})
    assert len(captured.assert_tracked(usage={"n": 1}, count=3)) == 3
    assert len(captured.assert_tracked(context={"run": 2})) == 1
    with pytest.raises(AssertionError, match=r"expected 2 record\(s\) matching .* found 3"):
        captured.assert_tracked(usage={"n": 1}, count=2)
    with pytest.raises(AssertionError, match=r"expected at least 1 .*'api_id': 'nope'.* 3 record"):
        captured.assert_tracked(api_id="nope")
    assert captured.find(client_customer_key=None) == captured.records


def test_fail_next_makes_queues_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """fail_next(2, 429) is retried by a memory queue: delivered once, after 3 requests."""
    monkeypatch.setenv("AICM_BACKOFF_BASE", "0.01")
    with capture() as captured:
        captured.fail_next(2, status=429, retry_after=0.01)
        with Tracker(aicm_api_key=KEY, delivery_type="mem_queue", batch_interval=0.01) as t:
            t.track("openai", "gpt", {"n": 1})
            assert t.flush(5) == 0
    assert (len(captured), captured.requests) == (1, 3)


def test_fail_next_401_pauses_and_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 401 from the fake pauses a queue (records kept); the next answer resumes it."""
    monkeypatch.setenv("AICM_AUTH_RETRY_INTERVAL", "0.05")
    with capture() as captured:
        captured.fail_next(1, status=401)
        with Tracker(aicm_api_key=KEY, delivery_type="mem_queue", batch_interval=0.01) as t:
            t.track("openai", "gpt", {"n": 1})
            assert t.flush(5) == 0
            assert t.health().auth_paused is False
    assert (len(captured), captured.requests) == (1, 2)


def test_capture_restores_the_network_and_nests(collector: LocalCollector) -> None:
    """Inner captures win; after the outer one, new trackers use the network again."""
    before = aicm_http._default_transport
    with capture() as outer:
        with capture() as inner:
            early = Tracker(aicm_api_key=KEY, aicm_api_base=collector.api_base)
        late = Tracker(aicm_api_key=KEY, aicm_api_base=collector.api_base)
    assert aicm_http._default_transport is before
    after = Tracker(aicm_api_key=KEY, aicm_api_base=collector.api_base)
    for tracker, rid in ((early, "early"), (late, "late"), (after, "after")):
        tracker.track("openai", "gpt", {"n": 1}, response_id=rid)
        tracker.close()
    assert (inner.response_ids, outer.response_ids) == (["early"], ["late"])
    assert [r["response_id"] for r in collector.records("track")] == ["after"]


def test_wait_for_blocks_until_records_arrive_or_times_out() -> None:
    """wait_for returns once n records arrived; on a timeout it says how many came."""
    with capture() as captured:
        tracker = Tracker(aicm_api_key=KEY, delivery_type="mem_queue", batch_interval=0.2)
        feeder = threading.Thread(
            target=lambda: [tracker.track("openai", "gpt", {"n": n}) for n in range(5)]
        )
        feeder.start()
        started = time.monotonic()
        assert len(captured.wait_for(5, timeout=10)) == 5
        assert time.monotonic() - started < 5
        feeder.join()
        with pytest.raises(AssertionError, match=r"waited 0.1s for 6 record\(s\), 5 arrived"):
            captured.wait_for(6, timeout=0.1)
        tracker.close()


@pytest.mark.anyio
async def test_wait_for_async_times_out_without_blocking() -> None:
    """wait_for_async raises after its timeout while the loop keeps running other tasks."""
    with capture() as captured:
        ticks: list[int] = []

        async def tick() -> None:
            for n in range(5):
                ticks.append(n)
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            with pytest.raises(AssertionError, match=r"for 1 record\(s\), 0 arrived"):
                await captured.wait_for_async(1, timeout=0.2)
    assert ticks == [0, 1, 2, 3, 4]


@pytest.mark.anyio
async def test_the_fake_service_answers_like_the_service() -> None:
    """The fake service answers 401, 400, 413, per-record errors, 404, ETag and 304."""
    captured = CapturedRecords([CALC_CONFIG])
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(
        transport=captured.transport, base_url="http://svc/api/v1"
    ) as http:
        assert (await http.post("/track", json={"tracked": []})).status_code == 401
        assert (await http.post("/track", content=b"{", headers=auth)).status_code == 400
        many: dict[str, Any] = {"tracked": [{}] * 1001}
        assert (await http.post("/track", json=many, headers=auth)).status_code == 413
        bad = {"api_id": "a", "service_key": 5, "response_id": "b", "timestamp": "x", "z": 1}
        answer = await http.post("/track", json={"tracked": [bad]}, headers=auth)
        assert answer.status_code == 202
        [result] = answer.json()["results"]
        assert result["status"] == "error"
        assert len(result["errors"]) == 4
        assert (await http.get("/nowhere", headers=auth)).status_code == 404
        first = await http.get("/configs", headers=auth)
        etag = first.headers["ETag"]
        again = await http.get("/configs", headers={**auth, "If-None-Match": etag})
        assert (first.status_code, again.status_code) == (200, 304)
    assert (len(captured), captured.requests) == (0, 3)  # the 401 never reached ingest


def test_set_configs_refuses_configs_without_ids() -> None:
    """A served config needs a config_id and an api_id: ConfigError naming the field."""
    with pytest.raises(ConfigError, match="'api_id' must be a non-empty string"):
        CapturedRecords([{"config_id": "c"}])


def test_local_collector_helper_injects_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    """local_collector() serves on loopback with faults; the records outlive no block."""
    monkeypatch.setenv("AICM_BACKOFF_BASE", "0.01")
    with local_collector(faults=Faults(fail_first=2)) as collector:
        assert collector.api_base.startswith("http://127.0.0.1:")
        with Tracker(
            aicm_api_key=KEY, aicm_api_base=collector.api_base, delivery_type="mem_queue"
        ) as tracker:
            tracker.track("openai", "gpt", {"n": 1}, response_id="lc-1")
            assert tracker.flush(5) == 0
        assert [r["response_id"] for r in collector.records("track")] == ["lc-1"]
        assert collector.stats()["faults"]["fail_first"] == 2


# -- the docs' examples ---------------------------------------------------------------------


def doc_files() -> dict[str, str]:
    """The code blocks of docs/testing.md that start with ``# name.py``, by file name."""
    text = (ROOT / "docs" / "testing.md").read_text()
    files: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        first = block.splitlines()[0]
        found = re.fullmatch(r"# (\w+\.py)", first)
        if found:
            files[found.group(1)] = block
    return files


def test_the_docs_examples_run(tmp_path: Path) -> None:
    """Every example file in docs/testing.md passes under pytest."""
    files = doc_files()
    assert sorted(files) == [
        "conftest.py",
        "test_async_and_configs.py",
        "test_billing.py",
        "test_collector_fixture.py",
        "test_failures.py",
        "test_with_a_collector.py",
    ]
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    expected = 7 if importlib.util.find_spec("trio") else 6
    assert re.search(rf"\b{expected} passed\b", done.stdout), done.stdout[-1000:]
