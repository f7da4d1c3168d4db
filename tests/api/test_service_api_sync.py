"""CostManagerClient's management API (the sync twin) against the local collector."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from aicm._core.exceptions import ClientRequestError, NotFoundError
from aicm._sync.client import CostManagerClient
from aicm.collector import LocalCollector
from tests.service_api_support import API_KEY, price, track, unique


@pytest.fixture
def client(collector: LocalCollector) -> Iterator[CostManagerClient]:
    """A sync client pointed at the collector."""
    with CostManagerClient(aicm_api_key=API_KEY, aicm_api_base=collector.api_base) as client:
        yield client


def test_usage_events_and_one_event(collector: LocalCollector, client: CostManagerClient) -> None:
    """list/iter/get usage events return the tracked record's usage."""
    response_id = track(collector, customer="s-acme", input_tokens=5, output_tokens=6)
    for _ in range(3):
        track(collector, customer="s-acme", input_tokens=1, output_tokens=1)
    page = client.list_usage_events(customer_key="s-acme", limit=3)
    every = list(client.iter_usage_events(customer_key="s-acme", limit=3))
    (mine,) = [e for e in every if e.response_id == response_id]
    assert page.count == 4
    assert len(page.results) == 3
    assert len(every) == 4
    assert client.get_usage_event(mine.event_id).usage == {"input_tokens": 5, "output_tokens": 6}
    with pytest.raises(NotFoundError):
        client.get_usage_event("missing")


def test_rollups_and_costs(collector: LocalCollector, client: CostManagerClient) -> None:
    """The tracked cost appears in /costs/, /cost-events/{id} and the daily and hourly rollups."""
    response_id = track(collector, customer="s-payer", input_tokens=4000, output_tokens=250)
    expected = price(4000, 250)
    costs = client.list_cost_events(response_id=response_id)
    assert sum(e.cost for e in costs.results) == expected
    assert sum(e.cost for e in client.iter_cost_events(customer_key=["s-payer"])) == expected
    full = client.list_cost_events_by_response_id(response_id)
    assert sum((e.cost for e in full), Decimal(0)) == expected
    (daily,) = client.list_usage_rollups(customer_key="s-payer").results
    assert daily.cost == expected
    (hourly,) = client.iter_usage_rollups(customer_key="s-payer", granularity="hourly")
    assert hourly.cost == expected


def test_customers(client: CostManagerClient) -> None:
    """A created customer comes back from get_customer; update is partial; delete removes."""
    key = unique("s-cust")
    created = client.create_customer(customer_key=key, name="Initech")
    assert client.get_customer(created.uuid) == created
    updated = client.update_customer(created.uuid, email="bill@initech.test")
    assert (updated.name, updated.email) == ("Initech", "bill@initech.test")
    assert [c.uuid for c in client.iter_customers(customer_key=key)] == [created.uuid]
    assert client.list_customers(customer_key=key).count == 1
    client.delete_customer(created.uuid)
    with pytest.raises(NotFoundError):
        client.get_customer(created.uuid)


def test_catalogue(collector: LocalCollector, client: CostManagerClient) -> None:
    """Vendors and their services include a tracked vendor::model."""
    track(collector, customer=None, input_tokens=1, output_tokens=1, service_key="sync-ai::m-1")
    assert "sync-ai" in {v.name for v in client.list_vendors()}
    assert [s.service_id for s in client.list_vendor_services("sync-ai")] == ["sync-ai::m-1"]


def test_webhooks(client: CostManagerClient) -> None:
    """Webhooks: create, list (active_only), get, partial update, delete."""
    hook = client.create_webhook_endpoint(url="https://hooks.test/sync", secret="whsec-s")
    client.create_webhook_endpoint(url="https://hooks.test/off", secret="x", active=False)
    listed = client.list_webhook_endpoints(active_only=True)
    assert [w.url for w in listed.endpoints] == ["https://hooks.test/sync"]
    assert client.update_webhook_endpoint(hook.uuid, active=False).url == hook.url
    assert client.get_webhook_endpoint(hook.uuid).active is False
    client.delete_webhook_endpoint(hook.uuid)
    with pytest.raises(NotFoundError):
        client.get_webhook_endpoint(hook.uuid)


def test_custom_services(client: CostManagerClient) -> None:
    """Custom services: create, list with filters, get, partial update, delete, refusal."""
    key = unique("s-custom")
    configuration = {"cost_units": [{"name": "page", "cost": 0.002, "unit": "page"}]}
    created = client.create_custom_service(custom_service_key=key, configuration=configuration)
    assert [s.uuid for s in client.list_custom_services(has_cost_units=True)] == [created.uuid]
    renamed = client.update_custom_service(created.uuid, custom_service_key=key + "-v2")
    assert renamed.configuration == configuration
    assert client.get_custom_service(created.uuid).custom_service_key == key + "-v2"
    client.delete_custom_service(created.uuid)
    assert client.list_custom_services() == []
    with pytest.raises(ClientRequestError):
        client.create_custom_service(custom_service_key=key, configuration={"cost_units": "x"})


def test_openapi(client: CostManagerClient) -> None:
    """The OpenAPI document names the custom-services endpoints."""
    assert "/custom-services/{uuid}/" in client.get_openapi_schema()["paths"]
