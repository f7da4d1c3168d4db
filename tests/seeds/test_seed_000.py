"""Seed 000: CostManager's configuration example and its async example, run as written."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from aicm import AsyncCostManager, AsyncCostManagerClient, CostManager
from aicm.collector import LocalCollector
from tests.tracking_support import SEED_000_HANDLING, service_config, usage_records

# How the async example's call is tracked: AsyncCostManagerClient.get_configs, one call each.
GET_CONFIGS_HANDLING: dict[str, Any] = {
    "tracked_methods": ["get_configs"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "timestamp": "timestamp",
        "api_id": "api_id",
    },
    "static_payload_fields": {"calls": 1},
}


class Calculator:
    """The plain user class of seed 000's example."""

    def add(self, a: int, b: int) -> int:
        return a + b


def check_seed_payload(collector: LocalCollector) -> dict[str, Any]:
    """Exactly the one record seed 000 describes reached the collector; returns it.

    ``usage`` is checked apart (test_seed_000_usage_is_the_bare_result).
    """
    [record] = usage_records(collector)
    assert set(record) == {"config", "timestamp", "usage", "static", "response_id"}
    assert record["config"] == "calc-config"
    assert record["static"] == 1
    assert record["timestamp"].endswith("Z")
    assert uuid.UUID(record["response_id"]).version == 4  # generated: the idempotency key
    return record


def test_seed_000_config_with_cost_manager(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """CostManager tracking `add(a=2, b=3)` delivers the seed's payload; the call returns 5."""
    collector.set_configs([service_config("calculator", SEED_000_HANDLING, "calc-config")])
    with CostManager(Calculator(), **connection) as tracker:
        assert tracker.api_id == "calculator"
        assert tracker.client.add(a=2, b=3) == 5
    check_seed_payload(collector)


def test_seed_000_usage_is_the_bare_result() -> None:
    """Seed 000's `"usage": "response_data.value"` with response path "" gives usage 5."""
    from aicm import UniversalExtractor
    from aicm._core.models import ServiceConfig

    extractor = UniversalExtractor(
        [
            ServiceConfig(
                config_id="calc-config", api_id="calculator", handling_config=SEED_000_HANDLING
            )
        ]
    )
    [payload] = extractor.extract("add", kwargs={"a": 2, "b": 3}, response=5)
    assert payload["usage"] == 5


@pytest.mark.anyio
async def test_seed_000_config_with_async_cost_manager(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """AsyncCostManager tracking `add(2, 3)` delivers the same payload."""
    collector.set_configs([service_config("calculator", SEED_000_HANDLING, "calc-config")])
    async with AsyncCostManager(Calculator(), **connection) as tracker:
        assert tracker.client.add(2, 3) == 5
    check_seed_payload(collector)


@pytest.mark.anyio
async def test_seed_000_async_example_runs_as_written(
    collector: LocalCollector, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's async example, configured by env vars, tracks `tracker.client.get_configs()`."""
    monkeypatch.setenv("AICM_API_KEY", api_key)
    monkeypatch.setenv("AICM_API_BASE", collector.api_base)
    collector.set_configs([service_config("asynccostmanagerclient", GET_CONFIGS_HANDLING)])

    async with AsyncCostManagerClient() as client:  # noqa: SIM117 - the seed's code, as written
        async with AsyncCostManager(client) as tracker:
            answer = await tracker.client.get_configs()

    assert [c.api_id for c in answer.service_configs] == ["asynccostmanagerclient"]
    [record] = usage_records(collector)
    assert record["config_id"] == "asynccostmanagerclient-config"
    assert record["api_id"] == "asynccostmanagerclient"
    assert record["calls"] == 1
