"""Seed 002 (the free-form Tracker and /track): every example, run against the local collector.

The examples are the seed's, with ``aicostmanager`` replaced by ``aicm``; AICM_API_KEY and
AICM_API_BASE point ``Tracker()`` at the collector. The log example writes to a temporary
file instead of ``/tmp/aicm.log``. Every example runs twice: in the current /track record
(the default) and in the older one (``AICM_TRACK_FORMAT=legacy``).
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aicm.collector import Faults, LocalCollector
from tests.seeds.tracker_seed_support import check_track_record as check_record_as
from tests.seeds.tracker_seed_support import point_sdk_at, restored_aicm_logging

pytestmark = pytest.mark.filterwarnings("ignore:\\s*on_event is deprecated:DeprecationWarning")


@pytest.fixture(params=["current", "legacy"])
def seed_env(
    collector: LocalCollector,
    monkeypatch: pytest.MonkeyPatch,
    api_key: str,
    request: pytest.FixtureRequest,
) -> LocalCollector:
    """The collector, with the environment pointing the SDK at it, in each record format."""
    if request.param == "legacy":
        monkeypatch.setenv("AICM_TRACK_FORMAT", "legacy")
    return point_sdk_at(collector, monkeypatch, api_key)


def check_track_record(record: dict[str, Any], *args: Any, **kwargs: Any) -> None:
    """The stored record, in the format the test's environment asks for."""
    legacy = os.environ.get("AICM_TRACK_FORMAT") == "legacy"
    check_record_as(record, *args, legacy=legacy, **kwargs)


@pytest.fixture
def restore_aicm_logging() -> Iterator[None]:
    """Undo what log_file/log_level do to the ``aicm`` logger after the test."""
    with restored_aicm_logging():
        yield


def test_creating_a_tracker(seed_env: LocalCollector) -> None:
    """'Creating a tracker': the key comes from the environment; the with block closes."""
    from aicm import Tracker

    # Uses API key from environment by default and ensures the
    # delivery queue is flushed on exit
    with Tracker() as tracker:
        tracker.track("openai", "gpt-5-mini", {"input_tokens": 1})  # call track() as needed

    assert tracker.closed
    (record,) = seed_env.records("track")
    check_track_record(record, "openai", "gpt-5-mini", {"input_tokens": 1})


def test_choosing_a_delivery_manager(seed_env: LocalCollector) -> None:
    """'Choosing a delivery manager': MEM_QUEUE queues in memory and delivers by close()."""
    from aicm import DeliveryType, Tracker

    tracker = Tracker(delivery_type=DeliveryType.MEM_QUEUE)

    result = tracker.track("openai", "gpt-5-mini", {"input_tokens": 2})
    assert result.status == "enqueued"
    tracker.close()
    (record,) = seed_env.records("track")
    check_track_record(
        record, "openai", "gpt-5-mini", {"input_tokens": 2}, response_id=result.response_id
    )


def test_persistent_queue_is_durable(seed_env: LocalCollector, tmp_path: Path) -> None:
    """``persistent_queue`` commits to SQLite before track returns, then delivers."""
    from aicm import DeliveryType, Tracker

    tracker = Tracker(delivery_type=DeliveryType.PERSISTENT_QUEUE, db_path=str(tmp_path / "q.db"))
    result = tracker.track("openai", "gpt-5-mini", {"input_tokens": 3})
    assert result.status == "enqueued"
    assert (tmp_path / "q.db").exists()
    tracker.close()
    (record,) = seed_env.records("track")
    check_track_record(
        record, "openai", "gpt-5-mini", {"input_tokens": 3}, response_id=result.response_id
    )


def test_default_immediate_retries_transient_errors(
    seed_env: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default ``immediate`` mode sends synchronously with up to three attempts."""
    from aicm import DeliveryType, Tracker

    monkeypatch.setenv("AICM_BACKOFF_BASE", "0.01")
    seed_env.set_faults(Faults(fail_first=2))
    with Tracker() as tracker:
        assert tracker.delivery_type is DeliveryType.IMMEDIATE
        result = tracker.track("openai", "gpt-5-mini", {"input_tokens": 4})
    assert (result.status, seed_env.count("track")) == ("queued", 1)
    assert seed_env.stats()["requests"]["track"] == {"202": 1, "503": 2}


def test_log_options(
    seed_env: LocalCollector, tmp_path: Path, api_key: str, restore_aicm_logging: None
) -> None:
    """log_file/log_level/log_bodies: the log shows enqueues, sends and bodies, never the key."""
    from aicm import DeliveryType, Tracker

    log_path = str(tmp_path / "aicm.log")

    tracker = Tracker(log_file=log_path, log_level="DEBUG", log_bodies=True)

    sent = tracker.track("openai", "gpt-5-mini", {"input_tokens": 5})
    tracker.close()
    with Tracker(
        delivery_type=DeliveryType.MEM_QUEUE, log_file=log_path, log_level="DEBUG", log_bodies=True
    ) as queued:
        enqueued = queued.track("openai", "gpt-5-mini", {"input_tokens": 6})
    log = Path(log_path).read_text(encoding="utf-8")
    assert f"sending {sent.response_id} now: " in log
    assert '"payload":{"input_tokens":5}' in log
    assert f"delivered {sent.response_id}" in log
    assert f"enqueued {enqueued.response_id}" in log
    assert api_key not in log
    assert seed_env.count("track") == 2


def test_background_tracking(seed_env: LocalCollector) -> None:
    """'Background tracking': track(api_id, service_key, usage) delivers a /track record."""
    from aicm import Tracker

    tracker = Tracker()

    usage = {"input_tokens": 10, "output_tokens": 20}
    tracker.track("openai", "gpt-5-mini", usage)

    tracker.close()
    (record,) = seed_env.records("track")
    check_track_record(record, "openai", "gpt-5-mini", usage)


def test_optional_fields(seed_env: LocalCollector) -> None:
    """The optional fields arrive as given: customer, context, response_id, timestamp."""
    from aicm import Tracker

    tracker = Tracker()
    usage = {"input_tokens": 10, "output_tokens": 20}

    tracker.track(
        "openai",
        "gpt-5-mini",
        usage,
        client_customer_key="acme_corp",
        context={"env": "prod"},
        response_id="external-session-id",
        timestamp="2024-01-01T00:00:00Z",
    )

    tracker.close()
    (record,) = seed_env.records("track")
    check_track_record(
        record,
        "openai",
        "gpt-5-mini",
        usage,
        client_customer_key="acme_corp",
        context={"env": "prod"},
        response_id="external-session-id",
        timestamp="2024-01-01T00:00:00Z",
    )


@pytest.mark.anyio
async def test_asynchronous_usage(seed_env: LocalCollector) -> None:
    """'Asynchronous usage': await track_async from asyncio and trio."""
    from aicm import Tracker

    tracker = await Tracker.create_async()
    usage = {"input_tokens": 10, "output_tokens": 20}

    await tracker.track_async("openai", "gpt-5-mini", usage)

    await tracker.aclose()
    (record,) = seed_env.records("track")
    check_track_record(record, "openai", "gpt-5-mini", usage)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fastapi_integration(seed_env: LocalCollector, backend: str) -> None:
    """'Example FastAPI integration': a module-level Tracker, track_async per request."""
    from fastapi import FastAPI

    from aicm import Tracker

    app = FastAPI()
    tracker = Tracker()

    @app.on_event("shutdown")
    def shutdown() -> None:
        tracker.close()

    @app.post("/track")
    async def track(payload: dict) -> dict:  # type: ignore[type-arg]
        await tracker.track_async("openai", "gpt-5-mini", payload)
        return {"status": "queued"}

    with TestClient(app, backend=backend) as client:
        answer = client.post("/track", json={"input_tokens": 10, "output_tokens": 20})
        assert answer.json() == {"status": "queued"}
    assert tracker.closed
    (record,) = seed_env.records("track")
    check_track_record(record, "openai", "gpt-5-mini", {"input_tokens": 10, "output_tokens": 20})


def test_shutting_down(seed_env: LocalCollector) -> None:
    """'Shutting down': a with block and a manual close() both flush and stop the tracker."""
    from aicm import Tracker

    with Tracker() as tracker:
        tracker.track("openai", "gpt-5-mini", {"input_tokens": 1})

    # or manually
    tracker = Tracker()
    tracker.track("openai", "gpt-5-mini", {"input_tokens": 2})  # use tracker
    tracker.close()

    assert tracker.closed
    first, second = seed_env.records("track")
    check_track_record(first, "openai", "gpt-5-mini", {"input_tokens": 1})
    check_track_record(second, "openai", "gpt-5-mini", {"input_tokens": 2})
