"""AsyncTracker against the local collector: both call forms, every delivery type, lifecycle."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from aicm import (
    AicmError,
    AsyncTracker,
    AuthenticationError,
    ClosedError,
    ConfigError,
    DeliveryError,
    DeliveryType,
    InvalidTimestampError,
    NotSerializableError,
    QueueFullError,
    QueueStoreError,
    RateLimitedError,
    RecordError,
    TrackRecord,
    TransportError,
    UnknownConfigError,
    UsageValidationError,
)
from aicm.collector import Faults, LocalCollector

pytestmark = pytest.mark.anyio

SCHEMA = {"tokens": "int", "model": "Optional[str]"}
CONFIGS = [
    {"config_id": "cfg", "api_id": "custom-api", "manual_usage_schema": SCHEMA},
    {
        "config_id": "strict",
        "api_id": "custom-api",
        "manual_usage_schema": {"tokens": "int", "model": "str"},
    },
    {"config_id": "open", "api_id": "custom-api"},
    {"config_id": "empty", "api_id": "custom-api", "manual_usage_schema": {}},
]
USAGE_KEYS = {"config_id", "service_id", "timestamp", "response_id", "usage"}
TRACK_KEYS = {"service_key", "response_id", "timestamp", "payload"}


@pytest.fixture
def configured(collector: LocalCollector) -> LocalCollector:
    """The collector, serving the test configs."""
    collector.set_configs(CONFIGS)
    return collector


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry backoff of milliseconds, so retry tests stay quick."""
    monkeypatch.setenv("AICM_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("AICM_BACKOFF_CAP", "0.02")


def sent(collector: LocalCollector, kind: str) -> list[dict[str, Any]]:
    """The stored records of ``kind`` without the collector's own bookkeeping fields."""
    return [
        {k: v for k, v in r.items() if k not in ("received_at", "user_agent")}
        for r in collector.records(kind)
    ]


def is_recent(timestamp: str) -> bool:
    """Whether an ISO-8601 UTC timestamp is within a minute of now."""
    assert timestamp.endswith("Z")
    when = dt.datetime.fromisoformat(timestamp[:-1] + "+00:00")
    return abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 60


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID4 string."""
    return uuid.UUID(text).version == 4


# -- free-form ------------------------------------------------------------------------------


async def test_free_form_track_sends_every_field(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A free-form track sends one /track record with every field as given."""
    async with AsyncTracker(**connection) as tracker:
        result = await tracker.track(
            "openai",
            "gpt-5-mini",
            {"input_tokens": 10, "output_tokens": 20},
            client_customer_key="acme_corp",
            context={"env": "prod"},
            response_id="external-session-id",
            timestamp="2024-01-01T00:00:00Z",
        )
    assert (result.response_id, result.status, result.ok) == ("external-session-id", "queued", True)
    assert sent(configured, "track") == [
        {
            "service_key": "openai::gpt-5-mini",
            "response_id": "external-session-id",
            "timestamp": "2024-01-01T00:00:00Z",
            "payload": {"input_tokens": 10, "output_tokens": 20},
            "customer_key": "acme_corp",
            "context": {"env": "prod"},
        }
    ]
    assert configured.records("track")[0]["user_agent"].startswith("aicm-sdk/")


async def test_legacy_format_sends_the_older_record(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """track_format="legacy" sends api_id, the bare service_key and client_customer_key."""
    async with AsyncTracker(**connection, track_format="legacy") as tracker:
        await tracker.track(
            "openai",
            "gpt-5-mini",
            {"input_tokens": 10},
            customer_key="acme_corp",
            response_id="r1",
            timestamp="2024-01-01T00:00:00Z",
        )
    assert sent(configured, "track") == [
        {
            "api_id": "openai",
            "service_key": "gpt-5-mini",
            "response_id": "r1",
            "timestamp": "2024-01-01T00:00:00Z",
            "payload": {"input_tokens": 10},
            "client_customer_key": "acme_corp",
        }
    ]


async def test_track_format_comes_from_the_environment(
    configured: LocalCollector, connection: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AICM_TRACK_FORMAT=legacy picks the older record; an explicit argument wins over it."""
    monkeypatch.setenv("AICM_TRACK_FORMAT", "legacy")
    async with AsyncTracker(**connection) as tracker:
        await tracker.track("openai", "gpt", {"n": 1})
    async with AsyncTracker(**connection, track_format="current") as tracker:
        await tracker.track("openai", "gpt", {"n": 2})
    assert [(r.get("api_id"), r["service_key"]) for r in sent(configured, "track")] == [
        ("openai", "gpt"),
        (None, "openai::gpt"),
    ]


async def test_bad_track_format_is_refused(connection: dict[str, str]) -> None:
    """An unknown track_format is a ConfigError naming the choices."""
    with pytest.raises(ConfigError, match="track_format must be one of current, legacy"):
        AsyncTracker(**connection, track_format="v2")


@pytest.mark.parametrize(
    ("api_id", "service_key", "expected"),
    [
        ("openai", "gpt-5-mini", "openai::gpt-5-mini"),
        ("openai_chat", "gpt-4o", "openai::gpt-4o"),
        ("openai_responses", "gpt-5", "openai::gpt-5"),
        ("gemini", "gemini-2.5-flash", "google::gemini-2.5-flash"),
        ("anthropic", "claude-sonnet", "anthropic::claude-sonnet"),
        ("amazon-bedrock", "us.amazon.nova-pro-v1:0", "amazon-bedrock::us.amazon.nova-pro-v1:0"),
        ("custom", "xai::grok-4", "xai::grok-4"),
    ],
)
async def test_service_key_names_the_vendor(
    configured: LocalCollector,
    connection: dict[str, str],
    api_id: str,
    service_key: str,
    expected: str,
) -> None:
    """The current record's service_key is "vendor::model", the vendor mapped from the api_id;
    a service_key already holding "::" is sent as it is."""
    async with AsyncTracker(**connection) as tracker:
        await tracker.track(api_id, service_key, {"n": 1})
    assert [r["service_key"] for r in sent(configured, "track")] == [expected]


async def test_customer_key_is_accepted_as_a_synonym(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """customer_key= tags the record like client_customer_key=; two different keys are refused."""
    async with AsyncTracker(**connection) as tracker:
        await tracker.track("openai", "gpt", {"n": 1}, customer_key="acme")
        await tracker.track(
            "openai", "gpt", {"n": 2}, customer_key="acme", client_customer_key="acme"
        )
        with pytest.raises(RecordError, match="customer_key"):
            await tracker.track(
                "openai", "gpt", {"n": 3}, customer_key="a", client_customer_key="b"
            )
    assert [r["customer_key"] for r in sent(configured, "track")] == ["acme", "acme"]


async def test_free_form_defaults_fill_response_id_and_timestamp(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """Without options the record gets a fresh UUID and the current time, and no optional keys."""
    async with AsyncTracker(**connection) as tracker:
        result = await tracker.track("openai", "gpt-5-mini", {"input_tokens": 1})
    (record,) = sent(configured, "track")
    assert set(record) == TRACK_KEYS
    assert record["response_id"] == result.response_id
    assert is_uuid(record["response_id"])
    assert is_recent(record["timestamp"])


async def test_free_form_accepts_keyword_arguments(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """track(api_id=..., service_key=..., usage=...) works as the overload promises."""
    async with AsyncTracker(**connection) as tracker:
        await tracker.track(api_id="openai", service_key="gpt", usage={"n": 1})
        await tracker.track("openai", "gpt", usage={"n": 2})
    assert [(r["service_key"], r["payload"]) for r in sent(configured, "track")] == [
        ("openai::gpt", {"n": 1}),
        ("openai::gpt", {"n": 2}),
    ]


async def test_timestamp_forms_are_normalised(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A datetime, an offset ISO string and epoch seconds all arrive as ISO-8601 UTC."""
    stamps = [
        dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc),
        "2024-01-01T13:00:00+01:00",
        1704110400,
    ]
    async with AsyncTracker(**connection) as tracker:
        for stamp in stamps:
            await tracker.track("a", "b", {"n": 1}, timestamp=stamp)
    assert [r["timestamp"] for r in sent(configured, "track")] == ["2024-01-01T12:00:00Z"] * 3


# -- config form ----------------------------------------------------------------------------


async def test_config_form_sends_every_field(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A config tracker validates and sends one /track-usage record with every field."""
    async with AsyncTracker("cfg", "svc", **connection) as tracker:
        assert tracker.api_id == "custom-api"
        result = await tracker.track(
            {"tokens": 10, "model": "gpt"},
            client_customer_key="cust1",
            context={"task": "demo"},
            response_id="resp-1",
            timestamp="2024-05-06T07:08:09Z",
        )
    assert (result.response_id, result.status) == ("resp-1", "queued")
    assert sent(configured, "track_usage") == [
        {
            "config_id": "cfg",
            "service_id": "svc",
            "timestamp": "2024-05-06T07:08:09Z",
            "response_id": "resp-1",
            "usage": {"tokens": 10, "model": "gpt"},
            "client_customer_key": "cust1",
            "context": {"task": "demo"},
        }
    ]
    assert configured.count("track") == 0


async def test_config_form_refuses_unprintable_and_oversized_values(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A config tracker names a bad field whatever the value: an integer too long to print
    (past 4300 digits), or an epoch beyond any float, and sends nothing."""
    async with AsyncTracker("cfg", "svc", **connection) as tracker:
        for field in ("response_id", "client_customer_key"):
            with pytest.raises(RecordError, match="an integer of 16610 bits") as info:
                await tracker.track({"tokens": 1}, **{field: 10**5000})
            assert info.value.field == field
        with pytest.raises(InvalidTimestampError, match="out of range"):
            await tracker.track({"tokens": 1}, timestamp=2**1024)
    assert configured.count("track_usage") == 0


async def test_config_form_defaults(configured: LocalCollector, connection: dict[str, str]) -> None:
    """Without options a config record has exactly the required keys, a UUID and now."""
    async with AsyncTracker(config_id="cfg", service_id="svc", **connection) as tracker:
        result = await tracker.track(usage={"tokens": 3})
    (record,) = sent(configured, "track_usage")
    assert set(record) == USAGE_KEYS
    assert record["usage"] == {"tokens": 3}
    assert record["response_id"] == result.response_id
    assert is_uuid(result.response_id)
    assert is_recent(record["timestamp"])


async def test_config_form_without_async_with_loads_schema_on_first_track(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """IMMEDIATE works without ``async with``: the schema is fetched once, on the first track."""
    tracker = AsyncTracker("cfg", "svc", **connection)
    try:
        assert tracker.schema is None
        await tracker.track({"tokens": 1})
        await tracker.track({"tokens": 2})
        assert tracker.schema is not None
        assert set(tracker.schema.field_names) == {"tokens", "model"}
    finally:
        await tracker.aclose()
    assert [r["usage"]["tokens"] for r in sent(configured, "track_usage")] == [1, 2]
    assert configured.stats()["requests"]["configs"] == {"200": 1}


async def test_config_without_schema_accepts_any_mapping(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A config with no manual_usage_schema checks nothing but that usage is a mapping."""
    async with AsyncTracker("open", "svc", **connection) as tracker:
        await tracker.track({"anything": [1, 2], "goes": None})
        with pytest.raises(NotSerializableError, match="usage must be a mapping"):
            await tracker.track(["not", "a", "mapping"])  # type: ignore[call-overload]
    assert [r["usage"] for r in sent(configured, "track_usage")] == [
        {"anything": [1, 2], "goes": None}
    ]


async def test_empty_schema_accepts_only_empty_usage(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """An empty schema ({}) is a schema: any field is an extra one (docs/validation.md)."""
    async with AsyncTracker("empty", "svc", **connection) as tracker:
        await tracker.track({})
        with pytest.raises(UsageValidationError) as info:
            await tracker.track({"tokens": 1})
    assert info.value.extra_fields == ["tokens"]
    assert [r["usage"] for r in sent(configured, "track_usage")] == [{}]


# -- every delivery type --------------------------------------------------------------------


@pytest.mark.parametrize("delivery_type", list(DeliveryType))
async def test_every_delivery_type_delivers_both_forms(
    configured: LocalCollector,
    connection: dict[str, str],
    tmp_path: Path,
    delivery_type: DeliveryType,
) -> None:
    """Each delivery type delivers free-form and config records; queues answer "enqueued"."""
    options: dict[str, Any] = {**connection, "delivery_type": delivery_type}
    async with (
        AsyncTracker(db_path=str(tmp_path / "free.db"), **options) as free,
        AsyncTracker("cfg", "svc", db_path=str(tmp_path / "bound.db"), **options) as bound,
    ):
        assert free.delivery_type is delivery_type
        results = [
            await free.track("openai", "gpt", {"n": i}, response_id=f"free-{i}") for i in range(3)
        ]
        results += [await bound.track({"tokens": i}, response_id=f"bound-{i}") for i in range(3)]
    expected = "queued" if delivery_type is DeliveryType.IMMEDIATE else "enqueued"
    assert {r.status for r in results} == {expected}
    assert sorted(r["response_id"] for r in sent(configured, "track")) == [
        "free-0",
        "free-1",
        "free-2",
    ]
    assert sorted(r["response_id"] for r in sent(configured, "track_usage")) == [
        "bound-0",
        "bound-1",
        "bound-2",
    ]
    assert free.health().queued == 0
    assert bound.health().sent == 3


async def test_delivery_type_from_the_environment(
    configured: LocalCollector, connection: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AICM_DELIVERY_TYPE picks the delivery when no argument does; an argument wins."""
    monkeypatch.setenv("AICM_DELIVERY_TYPE", "mem_queue")
    assert AsyncTracker(**connection).delivery_type is DeliveryType.MEM_QUEUE
    explicit = AsyncTracker(delivery_type="immediate", **connection)
    assert explicit.delivery_type is DeliveryType.IMMEDIATE


async def test_connection_options_fall_back_to_environment_and_ini(
    configured: LocalCollector, api_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The key comes from AICM_API_KEY, the base from the INI file named by aicm_ini_path."""
    ini = tmp_path / "aicm.ini"
    ini.write_text(f"[aicm]\naicm_api_base = {configured.api_base}\ntimeout = 7\n")
    monkeypatch.setenv("AICM_API_KEY", api_key)
    async with AsyncTracker(aicm_ini_path=str(ini)) as tracker:
        assert (tracker.settings.api_base, tracker.settings.timeout) == (configured.api_base, 7.0)
        await tracker.track("a", "b", {"n": 1})
    assert configured.count("track") == 1


async def test_immediate_retries_transient_failures(
    configured: LocalCollector, connection: dict[str, str], fast_retries: None
) -> None:
    """IMMEDIATE survives two 503s (three attempts) and returns the service's verdict."""
    configured.set_faults(Faults(fail_first=2))
    async with AsyncTracker(**connection) as tracker:
        result = await tracker.track("a", "b", {"n": 1})
    assert result.ok
    assert configured.stats()["requests"]["track"] == {"202": 1, "503": 2}


async def test_immediate_gives_up_after_three_attempts(
    configured: LocalCollector, connection: dict[str, str], fast_retries: None
) -> None:
    """A third failure raises DeliveryError with the last error as its cause."""
    configured.set_faults(Faults(fail_first=3))
    async with AsyncTracker(**connection) as tracker:
        with pytest.raises(DeliveryError, match="after 3 attempts") as info:
            await tracker.track("a", "b", {"n": 1})
    assert info.value.pending == 1
    assert configured.count("track") == 0


async def test_immediate_stops_when_retry_after_is_longer_than_it_waits(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A 429 asking for an hour's pause raises DeliveryError at once, after one request: no
    sleeping in the caller, and no early retry that would ignore the Retry-After."""
    configured.set_faults(Faults(failure_rate=1.0, failure_status=429, retry_after=3600))
    async with AsyncTracker(**connection) as tracker:
        with anyio.fail_after(2), pytest.raises(DeliveryError, match="wait 3600 s") as info:
            await tracker.track("a", "b", {"n": 1})
        assert tracker.health().failed == 1
    assert isinstance(info.value.__cause__, RateLimitedError)
    assert info.value.__cause__.retry_after == 3600
    assert info.value.pending == 1
    assert configured.stats()["requests"]["track"] == {"429": 1}


async def test_timeout_option_bounds_each_request(
    configured: LocalCollector, connection: dict[str, str], fast_retries: None
) -> None:
    """``timeout`` bounds each HTTP request: a slow service becomes a TransportError cause."""
    configured.set_faults(Faults(latency=0.5))
    async with AsyncTracker(timeout=0.05, **connection) as tracker:
        with anyio.fail_after(1.0), pytest.raises(DeliveryError) as info:
            await tracker.track("a", "b", {"n": 1}, response_id="slow-1")
    assert isinstance(info.value.__cause__, TransportError)

    # The service still answers the abandoned attempts once its latency has passed (wait
    # for all three, so none lands in the next test): one record, the same response_id.
    def all_three_received() -> bool:
        deadline = time.monotonic() + 5
        while configured.stats()["records"]["track"]["received"] < 3:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    assert await anyio.to_thread.run_sync(all_three_received)
    assert [r["response_id"] for r in sent(configured, "track")] == ["slow-1"]


async def test_immediate_returns_a_refusal_as_the_verdict(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A record the service refuses comes back with its status and errors, not ok."""
    configured.set_faults(Faults(reject_response_ids={"bad-1"}))
    async with AsyncTracker(**connection) as tracker:
        result = await tracker.track("a", "b", {"n": 1}, response_id="bad-1")
    assert (result.status, result.ok) == ("error", False)
    assert result.errors


async def test_backpressure_drops_oldest_and_calls_on_discard(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """MEM_QUEUE with backpressure drops the oldest record, counts it and reports it."""
    dropped: list[Any] = []
    async with AsyncTracker(
        delivery_type="mem_queue",
        delivery_on_full="backpressure",
        queue_size=2,
        batch_interval=30,
        on_discard=dropped.append,
        **connection,
    ) as tracker:
        for i in range(3):
            await tracker.track("a", "b", {"n": i}, response_id=f"r{i}")
        assert tracker.health().discarded == {"backpressure": 1}
    assert [r.response_id for r in dropped] == ["r0"]
    assert sorted(r["response_id"] for r in sent(configured, "track")) == ["r1", "r2"]


async def test_raise_policy_refuses_when_full(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """MEM_QUEUE with delivery_on_full="raise" raises QueueFullError at the call site."""
    async with AsyncTracker(
        delivery_type="mem_queue",
        delivery_on_full="raise",
        queue_size=1,
        batch_interval=30,
        **connection,
    ) as tracker:
        await tracker.track("a", "b", {"n": 0})
        with pytest.raises(QueueFullError):
            await tracker.track("a", "b", {"n": 1})
    assert configured.count("track") == 1


async def test_large_max_batch_size_still_delivers(
    configured: LocalCollector, connection: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_batch_size above the 1000-per-request limit must still deliver every record."""
    monkeypatch.setenv("AICM_CLOSE_TIMEOUT", "0.2")
    records = [{"api_id": "a", "service_key": "b", "usage": {"i": i}} for i in range(1500)]
    async with AsyncTracker(
        delivery_type="mem_queue", max_batch_size=5000, **connection
    ) as tracker:
        await tracker.track_batch(records)
        # The deadline only bounds a hang: two requests of 1,500 records can take longer
        # than a second on a loaded machine, and how long they take is not what is tested.
        left = await tracker.flush(30)
    assert (left, configured.count("track")) == (0, 1500)


async def test_shared_queue_file_health_counts_only_pending_rows(
    configured: LocalCollector, connection: dict[str, str], tmp_path: Path
) -> None:
    """Two trackers share one SQLite file: once all rows are delivered, none counts as queued."""
    options: dict[str, Any] = {
        **connection,
        "delivery_type": "persistent_queue",
        "db_path": str(tmp_path / "shared.db"),
    }
    async with (
        AsyncTracker(batch_interval=30, **options) as slow,
        AsyncTracker(**options) as other,
    ):
        for i in range(3):
            await slow.track("a", "b", {"n": i})
        assert await other.flush(5) == 0
        assert configured.count("track") == 3
        assert slow.health().queued == 0


# -- track_batch ----------------------------------------------------------------------------


async def test_track_batch_splits_2500_records_into_requests_of_1000(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """IMMEDIATE sends 2,500 records as 1000 + 1000 + 500 and returns every verdict in order."""
    records = [
        {"api_id": "a", "service_key": "b", "usage": {"i": i}, "response_id": f"r{i}"}
        for i in range(2500)
    ]
    async with AsyncTracker(**connection) as tracker:
        results = await tracker.track_batch(records)
    assert [r.response_id for r in results] == [f"r{i}" for i in range(2500)]
    assert all(r.ok for r in results)
    assert configured.count("track") == 2500
    assert configured.stats()["requests"]["track"] == {"202": 3}


@pytest.mark.parametrize("delivery_type", [DeliveryType.MEM_QUEUE, DeliveryType.PERSISTENT_QUEUE])
async def test_track_batch_queued_delivers_2500_records(
    configured: LocalCollector,
    connection: dict[str, str],
    tmp_path: Path,
    delivery_type: DeliveryType,
) -> None:
    """Queued track_batch enqueues 2,500 records; they go out in requests of at most 1000."""
    records = [{"api_id": "a", "service_key": "b", "payload": {"i": i}} for i in range(2500)]
    async with AsyncTracker(
        delivery_type=delivery_type, db_path=str(tmp_path / "q.db"), **connection
    ) as tracker:
        results = await tracker.track_batch(records)
        assert {r.status for r in results} == {"enqueued"}
        assert await tracker.flush(10) == 0
    assert configured.count("track") == 2500
    assert sum(configured.stats()["requests"]["track"].values()) >= 3


async def test_track_batch_config_form(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A config tracker's batch takes mappings of usage and options, and built records too."""
    built = TrackRecord.build("openai", "gpt", {"n": 1}, response_id="built-1")
    async with AsyncTracker("cfg", "svc", **connection) as tracker:
        results = await tracker.track_batch(
            [
                {"usage": {"tokens": 1}, "response_id": "u1", "client_customer_key": "acme"},
                {"usage": {"tokens": 2, "model": "m"}, "context": {"k": "v"}, "response_id": "u2"},
                built,
            ]
        )
    assert [r.response_id for r in results] == ["u1", "u2", "built-1"]
    usage_records = sent(configured, "track_usage")
    assert [
        (r["response_id"], r["usage"], r.get("client_customer_key"), r.get("context"))
        for r in usage_records
    ] == [
        ("u1", {"tokens": 1}, "acme", None),
        ("u2", {"tokens": 2, "model": "m"}, None, {"k": "v"}),
    ]
    assert [r["response_id"] for r in sent(configured, "track")] == ["built-1"]


async def test_track_batch_checks_every_record_before_sending(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """One invalid record in a batch raises and nothing at all is sent."""
    batch = [{"usage": {"tokens": 1}}, {"usage": {"tokens": "many"}}, {"usage": {"tokens": 3}}]
    async with AsyncTracker("cfg", "svc", **connection) as tracker:
        with pytest.raises(UsageValidationError) as info:
            await tracker.track_batch(batch)
    assert info.value.errors == {"tokens": "expected int, got str 'many'"}
    assert configured.count("track_usage") == 0


async def test_track_batch_bad_items_name_their_index(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A batch item of the wrong shape is a TypeError that names its index."""
    async with AsyncTracker(**connection) as tracker:
        with pytest.raises(
            TypeError, match=r"records\[1\]: .*missing argument\(s\): 'service_key'"
        ):
            await tracker.track_batch(
                [{"api_id": "a", "service_key": "b", "usage": {}}, {"api_id": "a", "usage": {}}]
            )
        with pytest.raises(TypeError, match=r"records\[0\] must be a mapping"):
            await tracker.track_batch([42])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="not a single dict"):
            await tracker.track_batch({"api_id": "a", "service_key": "b", "usage": {}})
        assert await tracker.track_batch([]) == []
    assert configured.count("track") == 0


# -- validation and unknown configs ---------------------------------------------------------


@pytest.mark.parametrize("delivery_type", list(DeliveryType))
async def test_validation_error_sends_nothing(
    configured: LocalCollector,
    connection: dict[str, str],
    tmp_path: Path,
    delivery_type: DeliveryType,
) -> None:
    """Usage that breaks the schema raises one error listing every problem; nothing leaves."""
    async with AsyncTracker(
        "strict", "svc", delivery_type=delivery_type, db_path=str(tmp_path / "q.db"), **connection
    ) as tracker:
        with pytest.raises(UsageValidationError) as info:
            await tracker.track({"tokens": "oops", "modle": "gpt-4o-mini"})
        assert tracker.health().queued == 0
    assert info.value.errors == {"tokens": "expected int, got str 'oops'"}
    assert info.value.missing_fields == ["model"]
    assert info.value.extra_fields == ["modle"]
    assert isinstance(info.value, ValueError)
    assert configured.count("track_usage") == 0


async def test_bad_values_raise_record_errors_before_sending(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """Bad option values raise a RecordError naming the field; nothing is sent."""
    async with AsyncTracker("cfg", "svc", **connection) as tracker:
        with pytest.raises(RecordError, match="response_id"):
            await tracker.track({"tokens": 1}, response_id="")
        with pytest.raises(RecordError, match="client_customer_key"):
            await tracker.track({"tokens": 1}, client_customer_key=7)  # type: ignore[call-overload]
        with pytest.raises(NotSerializableError, match="context must be a mapping"):
            await tracker.track({"tokens": 1}, context=["x"])  # type: ignore[call-overload]
        with pytest.raises(RecordError, match="timestamp"):
            await tracker.track({"tokens": 1}, timestamp="yesterday")
    async with AsyncTracker(**connection) as tracker:
        with pytest.raises(RecordError, match=r"NaN|finite"):
            await tracker.track("a", "b", {"x": float("nan")})
    assert configured.count("track_usage") + configured.count("track") == 0


async def test_unknown_config_is_a_clear_error(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A config the service does not have raises UnknownConfigError naming it and a near match."""
    with pytest.raises(UnknownConfigError, match=r"no config 'cgf'; did you mean 'cfg'\?") as info:
        async with AsyncTracker("cgf", "svc", **connection):
            pass  # pragma: no cover
    assert isinstance(info.value, LookupError)
    tracker = AsyncTracker("nope", "svc", **connection)
    with pytest.raises(UnknownConfigError, match="'cfg', 'empty', 'open', 'strict'"):
        await tracker.track({"tokens": 1})
    await tracker.aclose()
    assert configured.count("track_usage") == 0


async def test_config_loading_retries_transient_failures(
    configured: LocalCollector, connection: dict[str, str], fast_retries: None
) -> None:
    """A 503 from GET /configs is retried before the tracker gives up."""
    configured.set_faults(Faults(fail_first=1))
    async with AsyncTracker("cfg", "svc", **connection) as tracker:
        await tracker.track({"tokens": 1})
    assert configured.stats()["requests"]["configs"] == {"200": 1, "503": 1}
    assert configured.count("track_usage") == 1


# -- bad arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (({"n": 1},), {}, r"got 1 positional.*Tracker\(config_id, service_id\)|missing argument"),
        (("a", "b"), {}, r"missing argument\(s\): 'usage'"),
        (("a", "b", {}, "x"), {}, "got 4 positional arguments"),
        (("a", "b", {}), {"colour": "red"}, "unexpected keyword argument.*'colour'"),
        (("a", "b", {}), {"api_id": "c"}, "multiple values for argument 'api_id'"),
        ((), {}, r"missing argument\(s\): 'api_id', 'service_key', 'usage'"),
    ],
)
async def test_free_form_bad_calls_raise_type_error(
    configured: LocalCollector,
    connection: dict[str, str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    """A call that fits no form of a free-form tracker is a TypeError saying what is wrong."""
    async with AsyncTracker(**connection) as tracker:
        with pytest.raises(TypeError, match=message):
            await tracker.track(*args, **kwargs)
    assert configured.count("track") == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            ("openai", "gpt", {"tokens": 1}),
            {},
            r"bound to config 'cfg': call track\(usage, \.\.\.\); got 3",
        ),
        ((), {}, r"missing argument\(s\): 'usage'"),
        (({"tokens": 1},), {"payload": {}}, "unexpected keyword argument.*'payload'"),
    ],
)
async def test_config_form_bad_calls_raise_type_error(
    configured: LocalCollector,
    connection: dict[str, str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: str,
) -> None:
    """A config tracker called like a free-form one (or worse) is a TypeError naming the form."""
    async with AsyncTracker("cfg", "svc", **connection) as tracker:
        with pytest.raises(TypeError, match=message):
            await tracker.track(*args, **kwargs)
    assert configured.count("track_usage") == 0


async def test_constructor_bad_arguments_raise_type_error(connection: dict[str, str]) -> None:
    """Half a config form, empty ids, unknown options and positional options are TypeErrors."""
    with pytest.raises(TypeError, match="give both config_id and service_id"):
        AsyncTracker("cfg", **connection)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="config_id must be a non-empty string"):
        AsyncTracker("", "svc", **connection)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) .colour."):
        AsyncTracker(colour="red", **connection)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="positional"):
        AsyncTracker("cfg", "svc", "immediate")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="on_discard must be callable"):
        AsyncTracker(on_discard="print", **connection)  # type: ignore[call-overload]


# -- lifecycle ------------------------------------------------------------------------------


async def test_async_with_runs_and_stops_the_actor(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """``async with`` starts the delivery actor, and its exit flushes and stops it."""
    tracker = AsyncTracker(delivery_type="mem_queue", batch_interval=30, **connection)
    assert not tracker.health().worker_alive
    async with tracker as entered:
        assert entered is tracker
        assert tracker.health().worker_alive
        await tracker.track("a", "b", {"n": 1})
        assert tracker.health().queued == 1
    assert tracker.closed
    assert not tracker.health().worker_alive
    assert configured.count("track") == 1


async def test_start_in_your_own_task_group(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """start(task_group) runs the actor in a caller's task group until aclose()."""
    async with anyio.create_task_group() as tg:
        tracker = AsyncTracker("cfg", "svc", delivery_type="mem_queue", **connection)
        await tracker.start(tg)
        await tracker.track({"tokens": 4})
        assert await tracker.aclose() == 0
    assert [r["usage"] for r in sent(configured, "track_usage")] == [{"tokens": 4}]


async def test_cancelled_body_still_flushes(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A cancelled ``async with`` body still delivers what it queued before stopping."""
    with anyio.move_on_after(0.2) as scope:
        async with AsyncTracker(
            delivery_type="mem_queue", batch_interval=30, **connection
        ) as tracker:
            await tracker.track("a", "b", {"n": 1})
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert tracker.closed
    assert configured.count("track") == 1


async def test_queued_tracker_must_be_started(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A queued tracker used without ``async with`` says so instead of queueing into the void."""
    tracker = AsyncTracker(delivery_type="mem_queue", **connection)
    with pytest.raises(AicmError, match="async with"):
        await tracker.track("a", "b", {"n": 1})
    await tracker.aclose()
    assert configured.count("track") == 0


async def test_aclose_is_idempotent(configured: LocalCollector, connection: dict[str, str]) -> None:
    """aclose reports what was left (0 once delivered); calling it again does nothing."""
    async with anyio.create_task_group() as tg:
        tracker = AsyncTracker(delivery_type="mem_queue", batch_interval=30, **connection)
        await tracker.start(tg)
        await tracker.track("a", "b", {"n": 1})
        assert await tracker.aclose() == 0
        assert await tracker.aclose() == 0
    async with AsyncTracker(**connection) as immediate:
        assert await immediate.aclose() == 0
    assert immediate.closed
    assert configured.count("track") == 1


@pytest.mark.parametrize("form", ["free", "config"])
async def test_closed_tracker_raises_closed_error(
    configured: LocalCollector, connection: dict[str, str], form: str
) -> None:
    """After aclose every track, track_batch and re-entry raises ClosedError."""
    tracker = (
        AsyncTracker(**connection) if form == "free" else AsyncTracker("cfg", "svc", **connection)
    )
    await tracker.aclose()
    args: tuple[Any, ...] = ("a", "b", {"n": 1}) if form == "free" else ({"tokens": 1},)
    with pytest.raises(ClosedError, match="closed"):
        await tracker.track(*args)
    with pytest.raises(ClosedError):
        await tracker.track_batch([])
    with pytest.raises(ClosedError):
        async with tracker:
            pass  # pragma: no cover
    assert isinstance(ClosedError("x"), RuntimeError)
    assert configured.count("track") + configured.count("track_usage") == 0


async def test_body_error_propagates_as_itself(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """An exception in the ``async with`` body comes out unwrapped; queued records still go."""
    tracker = AsyncTracker(delivery_type="mem_queue", **connection)

    async def body() -> None:
        async with tracker:
            await tracker.track("a", "b", {"n": 1})
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await body()
    assert tracker.closed
    assert configured.count("track") == 1


async def test_start_failure_raises_the_error_itself(
    connection: dict[str, str], tmp_path: Path
) -> None:
    """A queue file that cannot be opened raises QueueStoreError, not an ExceptionGroup."""
    tracker = AsyncTracker(delivery_type="persistent_queue", db_path=str(tmp_path), **connection)
    with pytest.raises(QueueStoreError, match="cannot create the queue file"):
        async with tracker:
            pass  # pragma: no cover
    assert tracker.closed


async def test_refused_key_raises_authentication_error(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """IMMEDIATE with a key the service refuses raises AuthenticationError at once (no retry)."""
    configured.set_faults(Faults(require_api_key="another-key"))
    async with AsyncTracker(**connection) as tracker:
        with pytest.raises(AuthenticationError) as info:
            await tracker.track("a", "b", {"n": 1})
    assert info.value.status_code == 401
    assert configured.stats()["requests"]["track"] == {"401": 1}
