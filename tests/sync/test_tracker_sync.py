"""Tracker, the sync facade: both call forms, every delivery type, lifecycle, async helpers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from aicm import (
    ClosedError,
    DeliveryType,
    RecordResult,
    Tracker,
    UnknownConfigError,
    UsageValidationError,
    get_global_delivery_health,
)
from aicm.collector import Faults, LocalCollector

SCHEMA = {"tokens": "int", "model": "Optional[str]"}
CONFIGS = [
    {"config_id": "cfg", "api_id": "custom-api", "manual_usage_schema": SCHEMA},
    {
        "config_id": "strict",
        "api_id": "custom-api",
        "manual_usage_schema": {"tokens": "int", "model": "str"},
    },
]
TICK = 0.01
# The slow service's latency (or the batch window) the loop must not wait out: long enough
# that a blocked loop (a gap of WAIT) stands well clear of the gaps a loaded machine makes.
WAIT = 0.8


@pytest.fixture
def configured(collector: LocalCollector) -> LocalCollector:
    """The collector, serving the test configs."""
    collector.set_configs(CONFIGS)
    return collector


def sent(collector: LocalCollector, kind: str) -> list[dict[str, Any]]:
    """The stored records of ``kind`` without the collector's own bookkeeping fields."""
    return [
        {k: v for k, v in r.items() if k not in ("received_at", "user_agent")}
        for r in collector.records(kind)
    ]


class Ticker:
    """Ticks every 10 ms on the running loop, recording how many ticks and the longest gap."""

    def __init__(self) -> None:
        self.ticks = 0
        self.max_gap = 0.0

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Tick until cancelled."""
        last = time.monotonic()
        task_status.started()
        while True:
            await anyio.sleep(TICK)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            last = now
            self.ticks += 1


async def while_ticking(work: Callable[[], Awaitable[None]]) -> tuple[Ticker, float]:
    """Run ``work`` beside a ticker; return the ticker and how long the work took."""
    ticker = Ticker()
    async with anyio.create_task_group() as tg:
        await tg.start(ticker.run)
        started = time.monotonic()
        await work()
        elapsed = time.monotonic() - started
        tg.cancel_scope.cancel()
    return ticker, elapsed


def assert_loop_kept_ticking(ticker: Ticker, elapsed: float) -> None:
    """The loop was never blocked: no gap near the WAIT-long waits, and enough ticks happened."""
    assert ticker.max_gap < WAIT / 2, f"the loop stalled for {ticker.max_gap:.3f} s"
    assert ticker.ticks >= 0.3 * elapsed / TICK, (ticker.ticks, elapsed)


# -- both forms -----------------------------------------------------------------------------


def test_free_form_track_sends_every_field(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """Tracker().track(api_id, service_key, usage, ...) sends a /track record with every field."""
    with Tracker(**connection) as tracker:
        result = tracker.track(
            "openai",
            "gpt-5-mini",
            {"input_tokens": 10},
            client_customer_key="acme_corp",
            context={"env": "prod"},
            response_id="sess-1",
            timestamp="2024-01-01T00:00:00Z",
        )
    assert (result.response_id, result.status) == ("sess-1", "queued")
    assert sent(configured, "track") == [
        {
            "service_key": "openai::gpt-5-mini",
            "response_id": "sess-1",
            "timestamp": "2024-01-01T00:00:00Z",
            "payload": {"input_tokens": 10},
            "customer_key": "acme_corp",
            "context": {"env": "prod"},
        }
    ]


@pytest.mark.parametrize("delivery_type", ["immediate", "mem_queue", "persistent_queue"])
def test_legacy_format_in_every_delivery_type(
    configured: LocalCollector, connection: dict[str, str], tmp_path: Path, delivery_type: str
) -> None:
    """track_format="legacy" sends the older record whichever way records travel."""
    with Tracker(
        **connection,
        track_format="legacy",
        delivery_type=delivery_type,
        db_path=str(tmp_path / "q.db"),
    ) as tracker:
        tracker.track("openai", "gpt-5-mini", {"input_tokens": 1}, customer_key="acme")
        tracker.track("anthropic", "claude", {"input_tokens": 2})
    assert [
        (r["api_id"], r["service_key"], r.get("client_customer_key"))
        for r in sent(configured, "track")
    ] == [("openai", "gpt-5-mini", "acme"), ("anthropic", "claude", None)]


def test_config_form_loads_schema_at_construction(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """Tracker(config_id, service_id) fetches the config once, then sends /track-usage records."""
    tracker = Tracker("cfg", "svc", **connection)
    try:
        assert configured.stats()["requests"]["configs"] == {"200": 1}
        assert (tracker.config_id, tracker.service_id) == ("cfg", "svc")
        tracker.track(
            {"tokens": 10, "model": "gpt"},
            client_customer_key="cust1",
            context={"task": "demo"},
            response_id="u-1",
            timestamp="2024-02-03T04:05:06Z",
        )
        tracker.track({"tokens": 11})
    finally:
        tracker.close()
    records = sent(configured, "track_usage")
    assert records[0] == {
        "config_id": "cfg",
        "service_id": "svc",
        "timestamp": "2024-02-03T04:05:06Z",
        "response_id": "u-1",
        "usage": {"tokens": 10, "model": "gpt"},
        "client_customer_key": "cust1",
        "context": {"task": "demo"},
    }
    assert set(records[1]) == {"config_id", "service_id", "timestamp", "response_id", "usage"}
    assert configured.stats()["requests"]["configs"] == {"200": 1}


@pytest.mark.parametrize("delivery_type", list(DeliveryType))
def test_every_delivery_type_delivers_both_forms(
    configured: LocalCollector,
    connection: dict[str, str],
    tmp_path: Path,
    delivery_type: DeliveryType,
) -> None:
    """Every delivery type delivers both forms by the end of the ``with`` block."""
    options: dict[str, Any] = {**connection, "delivery_type": delivery_type}
    with (
        Tracker(db_path=str(tmp_path / "free.db"), **options) as free,
        Tracker("cfg", "svc", db_path=str(tmp_path / "bound.db"), **options) as bound,
    ):
        assert free.delivery_type is delivery_type
        results = [free.track("openai", "gpt", {"n": i}, response_id=f"f{i}") for i in range(3)]
        results += [bound.track({"tokens": i}, response_id=f"b{i}") for i in range(3)]
    expected = "queued" if delivery_type is DeliveryType.IMMEDIATE else "enqueued"
    assert [r.status for r in results] == [expected] * 6
    assert sorted(r["response_id"] for r in sent(configured, "track")) == ["f0", "f1", "f2"]
    assert sorted(r["response_id"] for r in sent(configured, "track_usage")) == ["b0", "b1", "b2"]


def test_flush_delivers_without_closing(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """flush() sends what is queued now and the tracker keeps working."""
    with Tracker(delivery_type="mem_queue", batch_interval=30, **connection) as tracker:
        for i in range(3):
            tracker.track("a", "b", {"n": i})
        assert tracker.flush(5) == 0
        assert configured.count("track") == 3
        tracker.track("a", "b", {"n": 3})
    assert configured.count("track") == 4


def test_track_batch_splits_2500_records(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """IMMEDIATE track_batch sends 2,500 records in three requests and returns each verdict."""
    records = [
        {"api_id": "a", "service_key": "b", "usage": {"i": i}, "response_id": f"r{i}"}
        for i in range(2500)
    ]
    with Tracker(**connection) as tracker:
        results = tracker.track_batch(records)
    assert [r.response_id for r in results] == [f"r{i}" for i in range(2500)]
    assert configured.count("track") == 2500
    assert configured.stats()["requests"]["track"] == {"202": 3}


def test_track_batch_queued_config_form(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """A queued config tracker's batch validates every record, then delivers all of them."""
    with Tracker("cfg", "svc", delivery_type="mem_queue", **connection) as tracker:
        with pytest.raises(UsageValidationError):
            tracker.track_batch([{"usage": {"tokens": 1}}, {"usage": {"tokens": "x"}}])
        results = tracker.track_batch([{"usage": {"tokens": i}} for i in range(1200)])
        with pytest.raises(TypeError, match="not a single dict"):
            tracker.track_batch({"usage": {"tokens": 1}})
    assert {r.status for r in results} == {"enqueued"}
    assert sorted(r["usage"]["tokens"] for r in sent(configured, "track_usage")) == list(
        range(1200)
    )


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("delivery_type", [DeliveryType.IMMEDIATE, DeliveryType.MEM_QUEUE])
def test_validation_error_sends_nothing(
    configured: LocalCollector, connection: dict[str, str], delivery_type: DeliveryType
) -> None:
    """A usage dict that breaks the schema raises UsageValidationError and nothing is sent."""
    with (
        Tracker("strict", "svc", delivery_type=delivery_type, **connection) as tracker,
        pytest.raises(UsageValidationError) as info,
    ):
        tracker.track({"tokens": "oops", "modle": "gpt"})
    assert info.value.errors == {"tokens": "expected int, got str 'oops'"}
    assert (info.value.missing_fields, info.value.extra_fields) == (["model"], ["modle"])
    assert configured.count("track_usage") == 0


def test_unknown_config_raises_at_construction(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """Tracker for a config the service lacks raises UnknownConfigError naming it."""
    with pytest.raises(UnknownConfigError, match=r"no config 'cfh'; did you mean 'cfg'\?"):
        Tracker("cfh", "svc", **connection)


@pytest.mark.parametrize("delivery_type", [DeliveryType.IMMEDIATE, DeliveryType.MEM_QUEUE])
def test_bad_calls_raise_type_error(
    configured: LocalCollector, connection: dict[str, str], delivery_type: DeliveryType
) -> None:
    """Wrong arity or unknown keywords are TypeErrors naming the form, queued or not."""
    with Tracker(delivery_type=delivery_type, **connection) as free:
        with pytest.raises(TypeError, match=r"Tracker\(config_id, service_id\)"):
            free.track({"tokens": 1})  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"unexpected keyword argument.*'colour'"):
            free.track("a", "b", {}, colour="red")  # type: ignore[call-overload]
    with Tracker("cfg", "svc", delivery_type=delivery_type, **connection) as bound:
        with pytest.raises(TypeError, match=r"bound to config 'cfg': call track\(usage, \.\.\.\)"):
            bound.track("a", "b", {"tokens": 1})  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"missing argument\(s\): 'usage'"):
            bound.track()  # type: ignore[call-overload]
    assert configured.count("track") + configured.count("track_usage") == 0


def test_constructor_bad_arguments_raise_type_error(connection: dict[str, str]) -> None:
    """Unknown options and half a config form are TypeErrors that name Tracker."""
    with pytest.raises(
        TypeError, match=r"Tracker\(\) got unexpected keyword argument\(s\) 'colour'"
    ):
        Tracker(colour="red", **connection)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="give both config_id and service_id"):
        Tracker("cfg", **connection)  # type: ignore[call-overload]


# -- lifecycle ------------------------------------------------------------------------------


def test_with_block_and_close(configured: LocalCollector, connection: dict[str, str]) -> None:
    """``with`` closes on exit; close() is idempotent; a closed tracker raises ClosedError."""
    with Tracker(delivery_type="mem_queue", **connection) as tracker:
        tracker.track("a", "b", {"n": 1})
    assert tracker.closed
    assert configured.count("track") == 1
    assert tracker.close() == 0
    with pytest.raises(ClosedError, match="closed"):
        tracker.track("a", "b", {"n": 2})
    with pytest.raises(ClosedError):
        tracker.track_batch([])
    with pytest.raises(ClosedError), tracker:
        pass  # pragma: no cover
    manual = Tracker(**connection)
    manual.track("a", "b", {"n": 3})
    assert manual.close() == 0
    assert manual.close() == 0
    assert configured.count("track") == 2


def test_health_reports_delivery(configured: LocalCollector, connection: dict[str, str]) -> None:
    """health() counts this tracker's sends; the global view includes it while it lives."""
    with Tracker(delivery_type="mem_queue", **connection) as tracker:
        tracker.track("a", "b", {"n": 1})
        assert tracker.flush(5) == 0
        health = tracker.health()
        assert (health.sent, health.queued, health.worker_alive) == (1, 0, True)
        overall = get_global_delivery_health()
        assert overall.engines >= 1
        assert overall.sent >= 1
    assert not tracker.health().worker_alive


# -- from async code ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["free", "config"])
async def test_create_async_on_both_backends(
    configured: LocalCollector, connection: dict[str, str], form: str
) -> None:
    """create_async builds a working tracker from asyncio and from trio, in both forms."""
    if form == "free":
        tracker = await Tracker.create_async(**connection)
        result = await tracker.track_async("openai", "gpt", {"n": 1})
    else:
        tracker = await Tracker.create_async("cfg", "svc", **connection)
        result = await tracker.track_async({"tokens": 1}, client_customer_key="acme")
    assert result.ok
    assert await tracker.aclose() == 0
    assert tracker.closed
    kind = "track" if form == "free" else "track_usage"
    assert [r["response_id"] for r in sent(configured, kind)] == [result.response_id]


@pytest.mark.anyio
async def test_create_async_unknown_config(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """create_async raises UnknownConfigError (not a thread or portal error) for a bad config."""
    with pytest.raises(UnknownConfigError, match="'nope'"):
        await Tracker.create_async("nope", "svc", **connection)
    with pytest.raises(TypeError, match=r"create_async\(\) got unexpected keyword argument"):
        await Tracker.create_async(colour="red", **connection)  # type: ignore[call-overload]


@pytest.mark.anyio
async def test_create_async_does_not_block_the_loop(
    configured: LocalCollector, connection: dict[str, str]
) -> None:
    """Loading the config (WAIT s of service latency) leaves the caller's loop ticking."""
    configured.set_faults(Faults(latency=WAIT))
    made: list[Tracker] = []

    async def work() -> None:
        made.append(await Tracker.create_async("cfg", "svc", **connection))

    ticker, elapsed = await while_ticking(work)
    configured.set_faults(Faults())
    await made[0].aclose()
    assert elapsed >= WAIT
    assert_loop_kept_ticking(ticker, elapsed)


@pytest.mark.anyio
@pytest.mark.parametrize("delivery_type", list(DeliveryType))
async def test_track_async_every_delivery_type(
    configured: LocalCollector, connection: dict[str, str], delivery_type: DeliveryType
) -> None:
    """track_async returns the verdict (IMMEDIATE) or "enqueued", and every record arrives."""
    tracker = await Tracker.create_async("cfg", "svc", delivery_type=delivery_type, **connection)
    results = [await tracker.track_async({"tokens": i}, response_id=f"a{i}") for i in range(3)]
    with pytest.raises(UsageValidationError):
        await tracker.track_async({"tokens": "three"})
    await tracker.aclose()
    expected = "queued" if delivery_type is DeliveryType.IMMEDIATE else "enqueued"
    assert [(r.response_id, r.status) for r in results] == [(f"a{i}", expected) for i in range(3)]
    assert sorted(r["response_id"] for r in sent(configured, "track_usage")) == ["a0", "a1", "a2"]
    with pytest.raises(ClosedError):
        await tracker.track_async({"tokens": 4})


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["immediate", "persistent_queue", "mem_queue_full"])
async def test_track_async_does_not_block_the_loop(
    configured: LocalCollector, connection: dict[str, str], mode: str
) -> None:
    """While track_async and aclose wait on a slow service (or a full queue), the loop ticks."""
    if mode == "mem_queue_full":
        # One slot, released only when the actor sends (WAIT s after the oldest record).
        options: dict[str, Any] = {
            "delivery_type": "mem_queue",
            "queue_size": 1,
            "batch_interval": WAIT,
        }
    else:
        configured.set_faults(Faults(latency=WAIT))
        options = {"delivery_type": mode}
    tracker = await Tracker.create_async(**options, **connection)
    results: list[RecordResult] = []

    async def work() -> None:
        for i in range(3):
            results.append(await tracker.track_async("a", "b", {"n": i}))
        await tracker.aclose()

    ticker, elapsed = await while_ticking(work)
    assert elapsed >= WAIT
    assert_loop_kept_ticking(ticker, elapsed)
    assert sorted(r["response_id"] for r in sent(configured, "track")) == sorted(
        r.response_id for r in results
    )
    assert len(results) == 3


def test_persistent_close_right_after_track_delivers(
    configured: LocalCollector, connection: dict[str, str], tmp_path: Path
) -> None:
    """close() straight after a persistent track() delivers the record (20 rounds)."""
    left = []
    for i in range(20):
        tracker = Tracker(
            delivery_type="persistent_queue", db_path=str(tmp_path / f"q{i}.db"), **connection
        )
        tracker.track("a", "b", {"n": i})
        left.append(tracker.close())
    assert left == [0] * 20
    assert configured.count("track") == 20


def test_rows_queued_in_the_older_format_are_still_delivered(
    configured: LocalCollector, connection: dict[str, str], tmp_path: Path
) -> None:
    """A persistent queue's rows keep the record form they were queued in, across a restart
    with the other format: older rows already on disk are delivered as they are."""
    db = str(tmp_path / "q.db")
    configured.set_faults(Faults(failure_rate=1.0))  # nothing gets through: rows stay queued
    tracker = Tracker(
        **connection, track_format="legacy", delivery_type="persistent_queue", db_path=db
    )
    tracker.track("openai", "gpt-5-mini", {"input_tokens": 1}, response_id="old-row")
    assert tracker.close(timeout=0.3) == 1
    assert configured.count("track") == 0
    configured.set_faults(Faults())
    with Tracker(**connection, delivery_type="persistent_queue", db_path=db) as tracker:
        tracker.track("openai", "gpt-5-mini", {"input_tokens": 2}, response_id="new-row")
    assert {
        r["response_id"]: (r.get("api_id"), r["service_key"]) for r in sent(configured, "track")
    } == {
        "old-row": ("openai", "gpt-5-mini"),
        "new-row": (None, "openai::gpt-5-mini"),
    }
