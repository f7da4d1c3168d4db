"""``aicm.otel.register_metrics``: the process's delivery health read by a real OpenTelemetry
``MeterProvider`` through an ``InMemoryMetricReader``."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from aicm import AsyncTracker, Tracker, get_global_delivery_health
from aicm.collector import Faults, LocalCollector
from aicm.otel import register_metrics


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader])
    register_metrics(provider)
    gc.collect()  # trackers earlier tests left unclosed are not counted
    try:
        yield metric_reader
    finally:
        provider.shutdown()


def read(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Each metric's points as (attributes, value)."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: [(dict(p.attributes or {}), p.value) for p in metric.data.data_points]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def value(points: dict[str, list[tuple[dict[str, Any], Any]]], name: str) -> Any:
    ((_, found),) = points[f"aicm.delivery.{name}"]
    return found


def test_delivery_health_is_published_as_counters_and_gauges(
    collector: LocalCollector, connection: dict[str, str], reader: InMemoryMetricReader
) -> None:
    before = read(reader)
    sent_before = value(before, "sent")
    assert sent_before == get_global_delivery_health().sent
    with Tracker(delivery_type="mem_queue", queue_size=10, **connection) as tracker:
        for i in range(3):
            tracker.track("openai", "gpt-4o", {"input_tokens": i})
        assert tracker.flush(5) == 0
        points = read(reader)
        assert value(points, "sent") == sent_before + 3
        assert value(points, "queued") == 0
        assert value(points, "worker_alive") == 1.0
        assert value(points, "engines") == get_global_delivery_health().engines >= 1
        assert value(points, "queue_utilisation") == 0.0
        # The service refuses the next batch for good: it is dead-lettered and counted.
        collector.set_faults(Faults(failure_rate=1.0, failure_status=400))
        tracker.track("openai", "gpt-4o", {"input_tokens": 9})
        tracker.flush(5)
        points = read(reader)
        health = get_global_delivery_health()
        assert value(points, "dead_lettered") == health.dead_lettered >= 1
    # A full queue that drops its oldest records: counted as discarded, by reason.
    with Tracker(
        delivery_type="mem_queue", queue_size=1, delivery_on_full="backpressure", **connection
    ) as tracker:
        collector.set_faults(Faults(latency=0.2))
        for i in range(5):
            tracker.track("openai", "gpt-4o", {"input_tokens": i})
        points = read(reader)
        health = get_global_delivery_health()
        discarded = {a["reason"]: v for a, v in points["aicm.delivery.discarded"]}
        assert discarded == dict(health.discarded)
        assert discarded["backpressure"] >= 1
        collector.set_faults(Faults())
    assert "aicm.delivery.oldest_pending_age" not in read(reader)  # nothing is waiting


@pytest.mark.anyio
async def test_metrics_of_async_trackers(
    collector: LocalCollector,
    connection: dict[str, str],
    reader: InMemoryMetricReader,
    anyio_backend: str,
) -> None:
    # The service answers slowly, so the batch is seen in flight; the deadline only
    # bounds a hang.
    collector.set_faults(Faults(latency=2.0))
    async with AsyncTracker(delivery_type="mem_queue", batch_interval=0.01, **connection) as t:
        await t.track("openai", "gpt-4o", {"input_tokens": 1})
        with anyio.fail_after(10):
            while True:
                points = await anyio.to_thread.run_sync(read, reader)
                if value(points, "in_flight") == 1:
                    break
                await anyio.sleep(0.01)
        assert value(points, "queued") == 0
        await t.flush(15)
        points = await anyio.to_thread.run_sync(read, reader)
        assert value(points, "in_flight") == 0
