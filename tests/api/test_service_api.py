"""AsyncCostManagerClient's management API against the local collector, on asyncio and trio."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from aicm._core.exceptions import (
    AuthenticationError,
    ClientRequestError,
    NotFoundError,
    ServerError,
    UnexpectedAnswerError,
)
from aicm._core.service_models import Page, UsageEvent
from aicm._io.http import AsyncCostManagerClient
from aicm.collector import Faults, LocalCollector
from tests.service_api_support import API_KEY, price, track, unique

pytestmark = pytest.mark.anyio

COST_UNIT = {"name": "second", "cost": "0.0125", "unit": "second"}


def client_for(collector: LocalCollector) -> AsyncCostManagerClient:
    """An async client pointed at ``collector``."""
    return AsyncCostManagerClient(aicm_api_key=API_KEY, aicm_api_base=collector.api_base)


# -- usage ---------------------------------------------------------------------------------


async def test_list_usage_events_filters_by_customer(collector: LocalCollector) -> None:
    """GET /usage/events/ lists a tracked record with its usage; the customer filter applies."""
    mine = track(collector, customer="acme", input_tokens=120, output_tokens=30)
    track(collector, customer="globex", input_tokens=1, output_tokens=1)
    async with client_for(collector) as client:
        page = await client.list_usage_events(customer_key="acme")
    assert page.count == 1
    (event,) = page.results
    assert event.response_id == mine
    assert event.customer_key == "acme"
    assert event.usage == {"input_tokens": 120, "output_tokens": 30}
    assert event.service_id == "openai::gpt-5-mini"
    assert event.timestamp.tzinfo is not None


async def test_iter_usage_events_follows_absolute_next_links(collector: LocalCollector) -> None:
    """iter_usage_events walks every page; the service's next links are absolute URLs."""
    ids = {track(collector, customer="pager", input_tokens=i, output_tokens=0) for i in range(5)}
    async with client_for(collector) as client:
        first = await client.list_usage_events(customer_key="pager", limit=2)
        seen = [
            e.response_id async for e in client.iter_usage_events(customer_key="pager", limit=2)
        ]
    assert first.count == 5
    assert len(first.results) == 2
    assert first.next is not None
    assert first.next.startswith(collector.api_base)
    assert sorted(seen) == sorted(ids)


async def test_usage_event_date_filters(collector: LocalCollector) -> None:
    """start_date / end_date select events by the day they happened."""
    old = track(
        collector,
        customer="dated",
        input_tokens=1,
        output_tokens=1,
        timestamp="2025-01-02T10:00:00Z",
    )
    new = track(
        collector,
        customer="dated",
        input_tokens=1,
        output_tokens=1,
        timestamp="2025-03-04T10:00:00Z",
    )
    async with client_for(collector) as client:
        early = await client.list_usage_events(customer_key="dated", end_date=dt.date(2025, 2, 1))
        late = await client.list_usage_events(customer_key="dated", start_date="2025-02-01")
    assert [e.response_id for e in early.results] == [old]
    assert [e.response_id for e in late.results] == [new]


async def test_get_usage_event(collector: LocalCollector) -> None:
    """GET /usage/event/{id}/ returns the event listed; an unknown id is NotFoundError."""
    response_id = track(collector, customer="one", input_tokens=7, output_tokens=8)
    async with client_for(collector) as client:
        (listed,) = (await client.list_usage_events(customer_key="one")).results
        event = await client.get_usage_event(listed.event_id)
        with pytest.raises(NotFoundError) as caught:
            await client.get_usage_event("no-such-event")
    assert event.response_id == response_id
    assert event.usage == {"input_tokens": 7, "output_tokens": 8}
    assert caught.value.status_code == 404
    assert caught.value.detail is not None
    assert "no-such-event" in caught.value.detail


async def test_daily_and_hourly_rollups_carry_the_tracked_cost(collector: LocalCollector) -> None:
    """GET /usage/rollups/ sums the priced usage per customer and service, daily and hourly."""
    at = "2025-05-06T13:20:00Z"
    track(collector, customer="rolled", input_tokens=1000, output_tokens=100, timestamp=at)
    track(collector, customer="rolled", input_tokens=3000, output_tokens=0, timestamp=at)
    async with client_for(collector) as client:
        daily = await client.list_usage_rollups(customer_key="rolled")
        hourly = [
            r async for r in client.iter_usage_rollups(customer_key="rolled", granularity="hourly")
        ]
    (day,) = daily.results
    assert day.date == "2025-05-06"
    assert day.cost == price(4000, 100)
    assert day.quantity == 4100
    (hour,) = hourly
    assert hour.date.startswith("2025-05-06T13:00")
    assert hour.cost == price(4000, 100)


# -- costs ---------------------------------------------------------------------------------


async def test_cost_events_price_a_tracked_record(collector: LocalCollector) -> None:
    """GET /costs/ has one cost event per priced metric of the record, at the table's rate."""
    response_id = track(collector, customer="payer", input_tokens=2000, output_tokens=500)
    track(collector, customer="other-payer", input_tokens=1, output_tokens=1)
    async with client_for(collector) as client:
        page = await client.list_cost_events(response_id=response_id)
        by_customer = [e async for e in client.iter_cost_events(customer_key=["payer"], limit=1)]
    costs = {e.cost_unit_id: e.cost for e in page.results}
    assert costs == {"input_tokens": price(2000, 0), "output_tokens": price(0, 500)}
    assert {e.provider_id for e in page.results} == {"openai"}
    assert sum(e.cost for e in by_customer) == price(2000, 500)


async def test_cost_events_by_response_id(collector: LocalCollector) -> None:
    """GET /cost-events/{response_id} gives the full cost events of one call."""
    response_id = track(collector, customer="full", input_tokens=10, output_tokens=20)
    async with client_for(collector) as client:
        events = await client.list_cost_events_by_response_id(response_id)
        none = await client.list_cost_events_by_response_id("never-tracked")
    assert {e.response_id for e in events} == {response_id}
    assert {e.customer_key for e in events} == {"full"}
    assert sum((e.cost for e in events), Decimal(0)) == price(10, 20)
    assert none == []


# -- customers -----------------------------------------------------------------------------


async def test_customer_lifecycle(collector: LocalCollector) -> None:
    """A created customer comes back from get; PUT changes only what it names; DELETE removes."""
    key = unique("cust")
    async with client_for(collector) as client:
        created = await client.create_customer(customer_key=key, name="Acme", email="a@acme.test")
        fetched = await client.get_customer(created.uuid)
        updated = await client.update_customer(created.uuid, phone="555-0100")
        listed = await client.list_customers(customer_key=key)
        iterated = [c.uuid async for c in client.iter_customers(customer_key=key)]
        await client.delete_customer(created.uuid)
        with pytest.raises(NotFoundError):
            await client.get_customer(created.uuid)
    assert fetched == created
    assert fetched.name == "Acme"
    assert (updated.name, updated.email, updated.phone) == ("Acme", "a@acme.test", "555-0100")
    assert [c.uuid for c in listed.results] == [created.uuid] == iterated


async def test_duplicate_customer_is_refused_with_the_services_detail(
    collector: LocalCollector,
) -> None:
    """A second customer with the same key is a ClientRequestError carrying the detail."""
    key = unique("dup")
    async with client_for(collector) as client:
        await client.create_customer(customer_key=key)
        with pytest.raises(ClientRequestError) as caught:
            await client.create_customer(customer_key=key)
    assert caught.value.detail is not None
    assert key in caught.value.detail
    assert key in str(caught.value)


# -- catalogue -----------------------------------------------------------------------------


async def test_vendors_and_services_include_what_was_tracked(collector: LocalCollector) -> None:
    """A tracked vendor::model shows up among the vendors and that vendor's services."""
    track(
        collector, customer=None, input_tokens=1, output_tokens=1, service_key="acme-ai::rocket-1"
    )
    async with client_for(collector) as client:
        vendors = await client.list_vendors()
        services = await client.list_vendor_services("acme-ai")
        openai = await client.list_vendor_services("openai")
    assert "acme-ai" in {v.name for v in vendors}
    assert [(s.service_id, s.vendor) for s in services] == [("acme-ai::rocket-1", "acme-ai")]
    assert "openai::gpt-5-mini" in {s.service_id for s in openai}  # from genai-prices


# -- webhooks ------------------------------------------------------------------------------


async def test_webhook_lifecycle(collector: LocalCollector) -> None:
    """Webhooks are stored as given; active_only filters; PUT is partial; DELETE removes."""
    async with client_for(collector) as client:
        hook = await client.create_webhook_endpoint(url="https://hooks.test/a", secret="whsec-1")
        idle = await client.create_webhook_endpoint(
            url="https://hooks.test/b", secret="whsec-2", active=False
        )
        active = await client.list_webhook_endpoints(active_only=True)
        every = await client.list_webhook_endpoints()
        changed = await client.update_webhook_endpoint(hook.uuid, tolerance=60)
        fetched = await client.get_webhook_endpoint(hook.uuid)
        await client.delete_webhook_endpoint(idle.uuid)
        with pytest.raises(NotFoundError):
            await client.get_webhook_endpoint(idle.uuid)
    assert [w.uuid for w in active.endpoints] == [hook.uuid]
    assert (every.total_count, every.active_count) == (2, 1)
    assert (changed.url, changed.secret, changed.tolerance) == (
        "https://hooks.test/a",
        "whsec-1",
        60,
    )
    assert fetched == changed
    assert "whsec-1" not in repr(fetched)


# -- custom services -----------------------------------------------------------------------


async def test_custom_service_lifecycle(collector: LocalCollector) -> None:
    """A custom service keeps its configuration; filters arrive as booleans; PUT is partial."""
    key = unique("custom")
    configuration = {
        "cost_units": [COST_UNIT],
        "mappings": [{"cost_unit": "second", "field": "duration"}],
    }
    async with client_for(collector) as client:
        created = await client.create_custom_service(
            custom_service_key=key, configuration=configuration
        )
        listed = await client.list_custom_services(has_cost_units=True, is_active=True)
        paused = await client.update_custom_service(created.uuid, is_active=False)
        inactive = await client.list_custom_services(is_active=False)
        fetched = await client.get_custom_service(created.uuid)
        await client.delete_custom_service(created.uuid)
        with pytest.raises(NotFoundError):
            await client.get_custom_service(created.uuid)
    assert created.configuration == configuration
    assert created.cost_units[0].cost == Decimal("0.0125")
    assert created.cost_units[0].per_quantity == 1
    assert [s.custom_service_key for s in listed] == [key]
    assert listed[0].cost_units_count == 1
    assert paused.is_active is False
    assert paused.configuration == configuration
    assert [s.uuid for s in inactive] == [created.uuid]
    assert fetched == paused


async def test_custom_service_without_cost_units_is_refused(collector: LocalCollector) -> None:
    """A configuration without cost_units is a 422 whose detail names the field."""
    async with client_for(collector) as client:
        with pytest.raises(ClientRequestError) as caught:
            await client.create_custom_service(custom_service_key=unique("bad"), configuration={})
    assert caught.value.status_code == 422
    assert caught.value.detail is not None
    assert "cost_units" in caught.value.detail


# -- schema, errors, retries ---------------------------------------------------------------


async def test_openapi_schema_lists_the_endpoints(collector: LocalCollector) -> None:
    """GET /openapi.json is an OpenAPI document naming the management endpoints."""
    async with client_for(collector) as client:
        schema = await client.get_openapi_schema()
    assert schema["openapi"].startswith("3.")
    assert {"/usage/events/", "/customers/{customer_id}/", "/usage-limits/"} <= set(schema["paths"])


async def test_a_refused_key_is_an_authentication_error(collector: LocalCollector) -> None:
    """With the collector requiring another key, a read raises AuthenticationError."""
    collector.set_faults(Faults(require_api_key="another-key-0123456789"))
    async with client_for(collector) as client:
        with pytest.raises(AuthenticationError):
            await client.list_vendors()


async def test_a_read_is_retried_but_a_create_is_not(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient 503 is retried for a GET; a POST fails at once and creates nothing."""
    monkeypatch.setenv("AICM_BACKOFF_BASE", "0.01")
    key = unique("retry")
    async with client_for(collector) as client:
        collector.set_faults(Faults(fail_first=1))
        vendors = await client.list_vendors()
        collector.set_faults(Faults(fail_first=1))
        with pytest.raises(ServerError):
            await client.create_customer(customer_key=key)
        collector.set_faults(Faults())
        remaining = await client.list_customers(customer_key=key)
    assert vendors
    assert remaining.count == 0


@pytest.mark.parametrize(
    "link",
    [
        "https://elsewhere.test/api/v1/usage/events/?offset=1",
        "{base}/api/v10/usage/events/?offset=1",
        "{base}/admin/?offset=1",
    ],
)
async def test_a_next_link_off_the_api_root_is_not_followed(
    collector: LocalCollector, link: str
) -> None:
    """A next link off api_root raises instead of sending the API key somewhere else."""
    page: Page[UsageEvent] = Page(
        count=2, next=link.format(base=collector.api_base), item_type=UsageEvent
    )
    async with client_for(collector) as client:
        with pytest.raises(UnexpectedAnswerError, match="not under"):
            await client.next_page(page)


async def test_unpriced_usage_has_no_cost_events_and_is_counted(
    collector: LocalCollector,
) -> None:
    """Usage no price source knows gets no $0 cost event: the event says priced=False and
    its rollup counts it in unpriced_events beside the priced events' cost."""
    at = "2025-05-07T08:00:00Z"
    customer = unique("mixed")
    priced_id = track(
        collector, customer=customer, input_tokens=300, output_tokens=30, timestamp=at
    )
    unpriced_id = track(
        collector,
        customer=customer,
        input_tokens=9,
        output_tokens=9,
        timestamp=at,
        service_key="acme-ai::rocket-1",
    )
    async with client_for(collector) as client:
        unpriced_costs = await client.list_cost_events_by_response_id(unpriced_id)
        priced_costs = await client.list_cost_events_by_response_id(priced_id)
        events = {e.response_id: e async for e in client.iter_usage_events(customer_key=customer)}
        rollups = {r.service_id: r async for r in client.iter_usage_rollups(customer_key=customer)}
    assert unpriced_costs == []
    assert sum((e.cost for e in priced_costs), Decimal(0)) == price(300, 30)
    assert events[unpriced_id].extra["priced"] is False
    assert events[priced_id].extra["priced"] is True
    assert rollups["acme-ai::rocket-1"].extra["unpriced_events"] == 1
    assert rollups["acme-ai::rocket-1"].cost == 0
    assert rollups["openai::gpt-5-mini"].extra["unpriced_events"] == 0
    assert rollups["openai::gpt-5-mini"].cost == price(300, 30)
