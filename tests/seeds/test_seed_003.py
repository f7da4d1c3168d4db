"""Seed 003 (manual usage tracking with Tracker): every example, run against the local collector.

The examples are the seed's, with ``aicostmanager`` replaced by ``aicm``; AICM_API_KEY and
AICM_API_BASE point them at the collector, which serves the config ``cfg``.
"""

import pytest
from fastapi.testclient import TestClient

from aicm.collector import LocalCollector
from tests.seeds.tracker_seed_support import check_usage_record, point_sdk_at

pytestmark = pytest.mark.filterwarnings("ignore:\\s*on_event is deprecated:DeprecationWarning")


@pytest.fixture
def seed_env(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch, api_key: str
) -> LocalCollector:
    """The collector, with the environment pointing the SDK at it."""
    return point_sdk_at(collector, monkeypatch, api_key)


def test_creating_a_tracker(seed_env: LocalCollector) -> None:
    """'Creating a Tracker': the schema is loaded at construction and checked by track."""
    from aicm import Tracker, UsageValidationError

    tracker = Tracker("cfg", "svc")

    assert seed_env.stats()["requests"]["configs"] == {"200": 1}
    with pytest.raises(UsageValidationError):
        tracker.track({"tokens": "ten"})
    tracker.track({"tokens": 10})
    tracker.close()
    (record,) = seed_env.records("track_usage")
    check_usage_record(record, {"tokens": 10})


@pytest.mark.anyio
async def test_asynchronous_factory(seed_env: LocalCollector) -> None:
    """'Asynchronous factory': create_async sets up in a thread; the tracker is ready."""
    from aicm import Tracker

    tracker = await Tracker.create_async("cfg", "svc")

    tracker.track({"tokens": 2, "model": "gpt"})
    tracker.close()
    (record,) = seed_env.records("track_usage")
    check_usage_record(record, {"tokens": 2, "model": "gpt"})


def test_recording_usage(seed_env: LocalCollector) -> None:
    """'Recording Usage': client_customer_key and context are attached to the record."""
    from aicm import Tracker

    tracker = Tracker("cfg", "svc")

    usage = {"tokens": 10, "model": "gpt"}
    tracker.track(usage, client_customer_key="cust1", context={"task": "demo"})

    tracker.close()
    (record,) = seed_env.records("track_usage")
    check_usage_record(record, usage, client_customer_key="cust1", context={"task": "demo"})


def test_stopping_the_delivery_worker(seed_env: LocalCollector) -> None:
    """'Stopping the delivery worker': close() delivers what is queued, then stops."""
    from aicm import DeliveryType, Tracker

    tracker = Tracker("cfg", "svc", delivery_type=DeliveryType.MEM_QUEUE, batch_interval=30)
    tracker.track({"tokens": 5})
    assert seed_env.count("track_usage") == 0

    tracker.close()

    assert tracker.closed
    (record,) = seed_env.records("track_usage")
    check_usage_record(record, {"tokens": 5})


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fastapi_example(seed_env: LocalCollector, backend: str) -> None:
    """'FastAPI example': created once at startup, reused per request, closed at shutdown."""
    from fastapi import FastAPI

    from aicm import Tracker

    app = FastAPI()

    @app.on_event("startup")
    async def startup() -> None:
        app.state.tracker = await Tracker.create_async("cfg", "svc")

    @app.on_event("shutdown")
    def shutdown() -> None:
        app.state.tracker.close()

    @app.post("/track")
    async def track_usage(payload: dict) -> dict:  # type: ignore[type-arg]
        app.state.tracker.track(payload)
        return {"status": "ok"}

    with TestClient(app, backend=backend) as client:
        for tokens in (1, 2, 3):
            assert client.post("/track", json={"tokens": tokens}).json() == {"status": "ok"}
        assert seed_env.stats()["requests"]["configs"] == {"200": 1}
    assert app.state.tracker.closed
    records = seed_env.records("track_usage")
    assert [r["usage"] for r in records] == [{"tokens": 1}, {"tokens": 2}, {"tokens": 3}]
    for record, tokens in zip(records, (1, 2, 3), strict=True):
        check_usage_record(record, {"tokens": tokens})
