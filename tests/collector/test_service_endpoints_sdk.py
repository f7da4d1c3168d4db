"""The service's own SDK client (``aicostmanager.CostManagerClient``) against the collector.

A real third-party client of the service's management API: every answer of the collector
must parse into its typed (pydantic) models, its filters and pagination must work.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aicm._core.limits import verify_answer
from aicm.collector import LocalCollector
from tests.service_api_support import price, track, unique

aicostmanager = pytest.importorskip("aicostmanager")
models = pytest.importorskip("aicostmanager.models")
sdk_errors = pytest.importorskip("aicostmanager.client.exceptions")


@pytest.fixture
def sdk(collector: LocalCollector, tmp_path: Path) -> Iterator[Any]:
    """The service SDK's client pointed at the collector, its INI file in a temp folder."""
    client = aicostmanager.CostManagerClient(
        aicm_api_key="sk-test.key-0001",
        aicm_api_base=collector.api_base,
        aicm_ini_path=str(tmp_path / "AICM.INI"),
    )
    yield client
    client.close()


def test_usage_events_typed_iterated_and_one(collector: LocalCollector, sdk: Any) -> None:
    """Its typed usage-event listing, paginated iteration and single-event read all parse."""
    first = track(collector, customer="sdk-acme", input_tokens=11, output_tokens=3)
    for _ in range(2):
        track(collector, customer="sdk-acme", input_tokens=1, output_tokens=1)
    page = sdk.list_usage_events_typed(models.UsageEventFilters(customer_key="sdk-acme", limit=2))
    assert page.count == 3
    assert page.next is not None
    events = list(sdk.iter_usage_events({"customer_key": "sdk-acme", "limit": 2}))
    assert len(events) == 3
    (mine,) = [e for e in events if e.response_id == first]
    one = sdk.get_usage_event(mine.event_id)
    assert isinstance(one, models.UsageEvent)
    assert one.usage == {"input_tokens": 11, "output_tokens": 3}


def test_rollups_carry_the_cost(collector: LocalCollector, sdk: Any) -> None:
    """Its rollup models read the tracked cost, daily (typed) and hourly (iterated)."""
    track(collector, customer="sdk-roll", input_tokens=8000, output_tokens=400)
    daily = sdk.list_usage_rollups_typed(models.RollupFilters(customer_key="sdk-roll"))
    (day,) = daily.results
    assert Decimal(str(day.cost)) == price(8000, 400)
    hourly = list(
        sdk.iter_usage_rollups(
            models.RollupFilters(customer_key="sdk-roll", granularity=models.Granularity.HOURLY)
        )
    )
    assert [Decimal(str(r.cost)) for r in hourly] == [price(8000, 400)]


def test_costs_and_cost_events(collector: LocalCollector, sdk: Any) -> None:
    """/costs/ (with its list filters) and /cost-events/{id} parse into its cost models."""
    response_id = track(collector, customer="sdk-pay", input_tokens=100, output_tokens=10)
    listed = sdk.list_cost_events(models.CostEventFilters(customer_key=["sdk-pay"]))
    assert isinstance(listed, models.CostEventsResponse)
    assert sum(Decimal(str(e.cost)) for e in listed.results) == price(100, 10)
    full = sdk.list_cost_events_by_response_id(response_id)
    assert {e.response_id for e in full} == {response_id}
    assert sum(Decimal(str(e.cost)) for e in full) == price(100, 10)


def test_customers(sdk: Any) -> None:
    """Its customer calls round-trip, PUT acting as a partial update, list and iterate."""
    key = unique("sdk-cust")
    created = sdk.create_customer(models.CustomerIn(customer_key=key, name="Hooli"))
    assert sdk.get_customer(created.uuid) == created
    updated = sdk.update_customer(created.uuid, {"email": "gavin@hooli.test"})
    assert (updated.name, updated.email) == ("Hooli", "gavin@hooli.test")
    typed = sdk.list_customers_typed(models.CustomerFilters(customer_key=key))
    assert [c.uuid for c in typed.results] == [created.uuid]
    assert created.uuid in {c.uuid for c in sdk.iter_customers()}
    sdk.delete_customer(created.uuid)
    with pytest.raises(sdk_errors.APIRequestError) as caught:
        sdk.get_customer(created.uuid)
    assert caught.value.status_code == 404
    assert caught.value.error is not None


def test_vendors_and_services(collector: LocalCollector, sdk: Any) -> None:
    """Its vendor and service models parse the catalogue, tracked services included."""
    track(collector, customer=None, input_tokens=1, output_tokens=1, service_key="sdk-ai::x-1")
    assert "sdk-ai" in {v.name for v in sdk.list_vendors()}
    assert [s.service_id for s in sdk.list_vendor_services("sdk-ai")] == ["sdk-ai::x-1"]


def test_webhooks(sdk: Any) -> None:
    """Its webhook calls: create, list (active_only as True/False), get, update, delete."""
    hook = sdk.create_webhook_endpoint(
        models.WebhookEndpointCreate(url="https://hooks.test/sdk", secret="whsec-sdk")
    )
    sdk.create_webhook_endpoint({"url": "https://hooks.test/off", "secret": "s", "active": False})
    active = sdk.list_webhook_endpoints(active_only=True)
    assert [w.uuid for w in active.endpoints] == [hook.uuid]
    assert (active.total_count, active.active_count) == (2, 1)
    changed = sdk.update_webhook_endpoint(hook.uuid, models.WebhookEndpointUpdate(tolerance=30))
    assert (changed.tolerance, changed.secret) == (30, "whsec-sdk")
    assert sdk.get_webhook_endpoint(hook.uuid) == changed
    sdk.delete_webhook_endpoint(hook.uuid)
    assert [w.url for w in sdk.list_webhook_endpoints().endpoints] == ["https://hooks.test/off"]


def test_custom_services(sdk: Any) -> None:
    """Its custom-service models parse what the collector keeps; filters arrive as booleans."""
    key = unique("sdk-custom")
    configuration = models.CustomServiceConfiguration(
        cost_units=[models.CustomCostUnitIn(name="minute", cost="0.05", unit="minute")],
        mappings=[models.Mapping(cost_unit="minute", field="minutes")],
    )
    created = sdk.create_custom_service(
        models.CustomServiceIn(custom_service_key=key, configuration=configuration)
    )
    assert created.configuration == configuration
    assert created.cost_units[0].name == "minute"
    listed = sdk.list_custom_services(models.CustomServiceFilter(is_active=True))
    assert [s.custom_service_key for s in listed] == [key]
    assert sdk.list_custom_services({"is_active": False}) == []
    paused = sdk.update_custom_service(created.uuid, {"is_active": False})
    assert paused.is_active is False
    assert sdk.get_custom_service(created.uuid).custom_service_key == key
    sdk.delete_custom_service(created.uuid)
    assert sdk.list_custom_services() == []


def test_openapi(sdk: Any) -> None:
    """Its schema call gets the collector's OpenAPI document."""
    assert "/usage/rollups/" in sdk.get_openapi_schema()["paths"]


def test_usage_limits(collector: LocalCollector, sdk: Any) -> None:
    """Its usage-limit models parse the collector's limits, progress included."""
    customer = unique("sdk-lim")
    limit = sdk.create_usage_limit(
        models.UsageLimitIn(
            threshold_type=models.ThresholdType.ALERT,
            amount="2.50",
            period=models.Period.MONTH,
            client=customer,
        )
    )
    track(collector, customer=customer, input_tokens=2000, output_tokens=100)
    assert limit.uuid in {x.uuid for x in sdk.list_usage_limits()}
    assert sdk.get_usage_limit(limit.uuid).client == customer
    raised = sdk.update_usage_limit(limit.uuid, {"amount": "9"})
    assert Decimal(str(raised.amount)) == Decimal(9)
    assert raised.threshold_type == models.ThresholdType.ALERT
    (progress,) = [p for p in sdk.list_usage_limit_progress() if p.uuid == limit.uuid]
    assert Decimal(str(progress.current_spend)) == price(2000, 100)
    sdk.delete_usage_limit(limit.uuid)
    assert limit.uuid not in {x.uuid for x in sdk.list_usage_limits()}


def test_triggered_limits(collector: LocalCollector, sdk: Any) -> None:
    """Its triggered-limits call gets the collector's signed document, whose verified
    claims name the limit the tracked spend reached."""
    customer = unique("sdk-trig")
    limit = sdk.create_usage_limit(
        models.UsageLimitIn(
            threshold_type=models.ThresholdType.LIMIT,
            amount="0.000001",
            period=models.Period.DAY,
            client=customer,
        )
    )
    track(collector, customer=customer, input_tokens=50_000, output_tokens=0)
    document = sdk.get_triggered_limits()
    verified = verify_answer(document["triggered_limits"])
    sdk.delete_usage_limit(limit.uuid)
    assert [x.limit_id for x in verified.limits] == [limit.uuid]
