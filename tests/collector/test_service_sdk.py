"""The service's own SDK (``aicostmanager``) as the client of the local collector.

The collector is a reference server of the service's wire contract: what that SDK sends
must be stored as it sent it, and what the collector answers must be what that SDK reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aicm.collector import LocalCollector

aicostmanager = pytest.importorskip("aicostmanager")

#: A key in the service's shape: its id is the part after the last dot.
SDK_KEY = "sk-test-secret.key-0001"


@pytest.fixture
def sdk_env(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, Any]:
    """The service SDK pointed at the collector, its INI file and logs in a temporary folder."""
    monkeypatch.setenv("AICM_API_BASE", collector.api_base)
    monkeypatch.setenv("AICM_LOG_FILE", str(tmp_path / "aicostmanager.log"))
    return {"aicm_api_key": SDK_KEY, "ini_path": str(tmp_path / "AICM.INI")}


def stored(collector: LocalCollector) -> list[dict[str, Any]]:
    """The stored /track records without the collector's bookkeeping."""
    return [
        {k: v for k, v in r.items() if k not in ("received_at", "user_agent")}
        for r in collector.records("track")
    ]


def test_the_service_sdk_tracks_immediately(
    collector: LocalCollector, sdk_env: dict[str, Any]
) -> None:
    """Its immediate Tracker's record is stored as sent, epoch-seconds timestamp included."""
    when = dt.datetime(2025, 3, 1, 12, tzinfo=dt.timezone.utc)
    with aicostmanager.Tracker(**sdk_env) as tracker:
        answer = tracker.track(
            "openai::gpt-5-mini",
            {"input_tokens": 3, "output_tokens": 1},
            response_id="sdk-1",
            timestamp=when,
            customer_key="acme",
            context={"env": "test"},
        )
    assert answer["result"] == {"response_id": "sdk-1", "status": "queued"}
    assert stored(collector) == [
        {
            "service_key": "openai::gpt-5-mini",
            "response_id": "sdk-1",
            "timestamp": str(when.timestamp()),
            "payload": {"input_tokens": 3, "output_tokens": 1},
            "customer_key": "acme",
            "context": {"env": "test"},
        }
    ]
    assert collector.records("track")[0]["user_agent"] == "aicostmanager-python"


def test_the_service_sdk_tracks_through_its_persistent_queue(
    collector: LocalCollector, sdk_env: dict[str, Any], tmp_path: Path
) -> None:
    """Its persistent queue delivers a batch the collector stores whole, each record once."""
    with aicostmanager.Tracker(**sdk_env, delivery_type="persistent_queue") as tracker:
        for i in range(5):
            tracker.track("anthropic::claude-sonnet", {"input_tokens": i})
        batch = tracker.track_batch(
            [{"service_key": "openai::gpt-5", "usage": {"input_tokens": 9}, "response_id": "b1"}]
        )
    assert batch["response_ids"] == ["b1"]
    records = stored(collector)
    assert sorted(r["payload"]["input_tokens"] for r in records) == [0, 1, 2, 3, 4, 9]
    assert {r["service_key"] for r in records} == {"anthropic::claude-sonnet", "openai::gpt-5"}
    assert all(float(r["timestamp"]) > 0 for r in records)


def test_aicm_and_the_service_sdk_send_the_same_record(
    collector: LocalCollector, sdk_env: dict[str, Any]
) -> None:
    """aicm's current record and the service SDK's differ only in the timestamp's spelling."""
    from aicm import Tracker

    with Tracker(aicm_api_key=SDK_KEY, aicm_api_base=collector.api_base) as ours:
        ours.track(
            "openai",
            "gpt-5-mini",
            {"input_tokens": 3},
            response_id="ours",
            timestamp="2025-03-01T12:00:00Z",
            client_customer_key="acme",
        )
    with aicostmanager.Tracker(**sdk_env) as theirs:
        theirs.track(
            "openai::gpt-5-mini",
            {"input_tokens": 3},
            response_id="theirs",
            timestamp="2025-03-01T12:00:00+00:00",
            customer_key="acme",
        )
    ours_record, theirs_record = stored(collector)
    assert set(ours_record) == set(theirs_record)
    for record in (ours_record, theirs_record):
        del record["response_id"], record["timestamp"]
    assert ours_record == theirs_record


@pytest.fixture
def sdk_limits_on(sdk_env: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The service SDK with its limit checks on (an INI option), its process-wide cache clean."""
    from aicostmanager.triggered_limits_cache import triggered_limits_cache

    Path(sdk_env["ini_path"]).write_text("[tracker]\nAICM_LIMITS_ENABLED = true\n")
    triggered_limits_cache.clear()
    try:
        yield sdk_env
    finally:
        triggered_limits_cache.clear()


def test_the_service_sdk_raises_its_own_usage_limit_exceeded(
    collector: LocalCollector, sdk_limits_on: dict[str, Any]
) -> None:
    """Once a limit triggers, the collector's signed answer makes the service SDK's Tracker
    raise UsageLimitExceeded, naming the limit; before it, tracking goes through."""
    from aicostmanager.client.exceptions import UsageLimitExceeded

    limit = collector.add_limit(
        threshold_type="limit", amount=1, period="day", service_key="openai::gpt-5-mini"
    )
    with aicostmanager.Tracker(**sdk_limits_on) as tracker:
        # gpt-5-mini costs 2.5e-07 $ per input token: 2,000,000 tokens are half the limit.
        first = tracker.track("openai::gpt-5-mini", {"input_tokens": 2_000_000})
        assert first["result"]["status"] == "queued"
        with pytest.raises(UsageLimitExceeded) as info:
            tracker.track("openai::gpt-5-mini", {"input_tokens": 2_000_000})
        (triggered,) = info.value.triggered_limits
        assert (triggered.limit_id, triggered.api_key_id) == (limit["uuid"], "key-0001")
        # Another service is not limited.
        other = tracker.track("anthropic::claude-sonnet", {"input_tokens": 1})
        assert other["result"]["status"] == "queued"
    assert collector.count("track") == 3  # the SDK raises after the record is delivered
