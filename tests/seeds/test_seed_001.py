"""Seed 001 (manual usage tracking with Tracker): every example, run against the local collector.

The examples are the seed's, with ``aicostmanager`` replaced by ``aicm``; the environment
(AICM_API_KEY, AICM_API_BASE) points them at the collector, which serves the configs
``cfg`` and ``your-config-id``. The FastAPI example appears twice in the seed, identically.
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


def test_basic_usage(seed_env: LocalCollector) -> None:
    """'Basic Usage': the keyword-built tracker sends one /track-usage record."""
    from aicm import Tracker

    tracker = Tracker(
        config_id="your-config-id",
        service_id="your-service-id",
    )

    tracker.track(
        {
            "tokens": 256,
            "model": "gpt-4o-mini",
        }
    )

    tracker.close()
    (record,) = seed_env.records("track_usage")
    check_usage_record(
        record,
        {"tokens": 256, "model": "gpt-4o-mini"},
        config_id="your-config-id",
        service_id="your-service-id",
    )


def test_validation_and_errors(
    seed_env: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """'Validation and Errors': {"tokens": "oops"} raises UsageValidationError; nothing is sent."""
    from aicm import Tracker, UsageValidationError

    tracker = Tracker("cfg", "svc")

    try:
        tracker.track({"tokens": "oops"})
    except UsageValidationError as exc:
        print(exc.errors, exc.missing_fields, exc.extra_fields)

    tracker.close()
    assert (
        capsys.readouterr().out == "{'tokens': \"expected Optional[int], got str 'oops'\"} [] []\n"
    )
    assert seed_env.count("track_usage") == 0


def test_validation_error_lists_missing_and_extra_fields(seed_env: LocalCollector) -> None:
    """The error's missing_fields and extra_fields name what the schema lacks or forbids."""
    from aicm import Tracker, UsageValidationError

    seed_env.set_configs(
        [
            {
                "config_id": "cfg",
                "api_id": "manual",
                "manual_usage_schema": {"tokens": "int", "model": "str"},
            }
        ]
    )
    with Tracker("cfg", "svc") as tracker, pytest.raises(UsageValidationError) as info:
        tracker.track({"tokens": "oops", "colour": "red"})
    assert info.value.errors == {"tokens": "expected int, got str 'oops'"}
    assert info.value.missing_fields == ["model"]
    assert info.value.extra_fields == ["colour"]
    assert seed_env.count("track_usage") == 0


def test_client_context(seed_env: LocalCollector) -> None:
    """'Client Context': client_customer_key and context travel with the record."""
    from aicm import Tracker

    tracker = Tracker("cfg", "svc")

    tracker.track(
        {"duration": 12.3},
        client_customer_key="acme_corp",
        context={"project": "chatbot_v2", "env": "prod"},
    )

    tracker.close()
    (record,) = seed_env.records("track_usage")
    check_usage_record(
        record,
        {"duration": 12.3},
        client_customer_key="acme_corp",
        context={"project": "chatbot_v2", "env": "prod"},
    )


def test_custom_response_ids(seed_env: LocalCollector) -> None:
    """'Custom Response IDs': the remote session id becomes the record's response_id."""
    from aicm import Tracker

    tracker = Tracker("cfg", "svc")
    remote_response = {"session_id": "heygen-session-42"}

    session_id = remote_response["session_id"]
    tracker.track({"duration": 12.3}, response_id=session_id)

    tracker.close()
    (record,) = seed_env.records("track_usage")
    check_usage_record(record, {"duration": 12.3}, response_id="heygen-session-42")


@pytest.mark.anyio
async def test_async_initialization(seed_env: LocalCollector) -> None:
    """'Async Initialization (Web Apps)': create_async, track, close — on asyncio and trio."""
    from aicm import Tracker

    tracker = await Tracker.create_async("cfg", "svc")
    # ... use tracker.track(...)
    tracker.track({"tokens": 7, "model": "gpt-4o-mini"})
    tracker.close()  # during shutdown

    (record,) = seed_env.records("track_usage")
    check_usage_record(record, {"tokens": 7, "model": "gpt-4o-mini"})
    assert tracker.closed


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fastapi_example(seed_env: LocalCollector, backend: str) -> None:
    """'FastAPI Example' (both copies): startup builds it, requests track, shutdown closes."""
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
        assert client.post("/track", json={"tokens": 10, "model": "gpt"}).json() == {"status": "ok"}
        assert client.post("/track", json={"duration": 1.5}).json() == {"status": "ok"}
    assert app.state.tracker.closed
    first, second = seed_env.records("track_usage")
    check_usage_record(first, {"tokens": 10, "model": "gpt"})
    check_usage_record(second, {"duration": 1.5})


def test_delivery_behavior_and_metrics(
    seed_env: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """'Delivery Behavior & Metrics': the global health shows the tracker's delivery."""
    from aicm import Tracker

    tracker = Tracker("cfg", "svc")
    tracker.track({"tokens": 1})

    from aicm import get_global_delivery_health

    print(get_global_delivery_health())

    health = get_global_delivery_health()
    tracker.close()
    assert capsys.readouterr().out.startswith("DeliveryHealth(worker_alive=")
    assert health.engines >= 1
    assert health.sent >= 1


def test_delivery_on_full_backpressure_and_on_discard(
    seed_env: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AICM_DELIVERY_ON_FULL=backpressure drops the oldest record, counts it, calls on_discard."""
    from aicm import DeliveryType, Tracker

    monkeypatch.setenv("AICM_DELIVERY_ON_FULL", "backpressure")
    dropped = []
    tracker = Tracker(
        "cfg",
        "svc",
        delivery_type=DeliveryType.MEM_QUEUE,
        queue_size=2,
        batch_interval=30,
        on_discard=dropped.append,
    )
    ids = [tracker.track({"tokens": i}).response_id for i in range(3)]
    assert tracker.health().discarded == {"backpressure": 1}
    tracker.close()
    assert [r.response_id for r in dropped] == ids[:1]
    assert sorted(r["response_id"] for r in seed_env.records("track_usage")) == sorted(ids[1:])


def test_configuration_requirements(seed_env: LocalCollector) -> None:
    """'Configuration Requirements': a config_id the service lacks is a clear error."""
    from aicm import Tracker, UnknownConfigError

    with pytest.raises(UnknownConfigError, match="no config 'not-provisioned'"):
        Tracker("not-provisioned", "svc")


# -- the second half of the seed: "Manual Usage Tracking with Tracker" ---------------------


def test_creating_a_tracker(seed_env: LocalCollector) -> None:
    """'Creating a Tracker': Tracker("cfg", "svc") loads the schema from /configs at once."""
    from aicm import Tracker

    tracker = Tracker("cfg", "svc")

    assert seed_env.stats()["requests"]["configs"] == {"200": 1}
    tracker.track({"tokens": 3})
    tracker.close()
    check_usage_record(seed_env.records("track_usage")[0], {"tokens": 3})


@pytest.mark.anyio
async def test_asynchronous_factory(seed_env: LocalCollector) -> None:
    """'Asynchronous factory': the instance create_async returns is ready in async code."""
    from aicm import Tracker

    tracker = await Tracker.create_async("cfg", "svc")

    result = await tracker.track_async({"tokens": 4})
    await tracker.aclose()
    check_usage_record(
        seed_env.records("track_usage")[0], {"tokens": 4}, response_id=result.response_id
    )


def test_recording_usage(seed_env: LocalCollector) -> None:
    """'Recording Usage': usage with client_customer_key and context."""
    from aicm import Tracker

    tracker = Tracker("cfg", "svc")

    usage = {"tokens": 10, "model": "gpt"}
    tracker.track(usage, client_customer_key="cust1", context={"task": "demo"})

    tracker.close()
    (record,) = seed_env.records("track_usage")
    check_usage_record(record, usage, client_customer_key="cust1", context={"task": "demo"})


def test_stopping_the_delivery_worker(seed_env: LocalCollector) -> None:
    """'Stopping the delivery worker': try/finally close() leaves the record delivered."""
    from aicm import Tracker

    tracker = Tracker("cfg", "svc")
    try:
        tracker.track({"tokens": 5})
    finally:
        tracker.close()

    assert tracker.closed
    (record,) = seed_env.records("track_usage")
    check_usage_record(record, {"tokens": 5})
