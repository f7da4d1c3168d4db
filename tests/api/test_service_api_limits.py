"""Usage-limit management on both clients against the local collector's limits endpoints."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from aicm._core.exceptions import ClientRequestError, NotFoundError
from aicm._core.limits import verify_answer
from aicm._io.http import AsyncCostManagerClient
from aicm._sync.client import CostManagerClient
from aicm.collector import LocalCollector
from tests.service_api_support import API_KEY, price, track, unique


@pytest.mark.anyio
async def test_usage_limit_lifecycle_async(collector: LocalCollector) -> None:
    """Create, list, get, partial update, progress with the tracked spend, delete."""
    customer = unique("lim-cust")
    async with AsyncCostManagerClient(
        aicm_api_key=API_KEY, aicm_api_base=collector.api_base
    ) as client:
        limit = await client.create_usage_limit(
            threshold_type="alert",
            amount=Decimal("1.50"),
            period="month",
            service_key="openai::gpt-5-mini",
            client=customer,
            notification_list=["ops@example.test"],
        )
        track(collector, customer=customer, input_tokens=4000, output_tokens=1000)
        listed = await client.list_usage_limits()
        fetched = await client.get_usage_limit(limit.uuid)
        raised = await client.update_usage_limit(limit.uuid, amount=3)
        progress = await client.list_usage_limit_progress()
        await client.delete_usage_limit(limit.uuid)
        with pytest.raises(NotFoundError):
            await client.get_usage_limit(limit.uuid)
    assert (limit.amount, limit.period, limit.client) == (Decimal("1.50"), "month", customer)
    assert limit.notification_list == ("ops@example.test",)
    assert [x.uuid for x in listed] == [limit.uuid]
    assert fetched == limit
    assert (raised.amount, raised.threshold_type, raised.client) == (Decimal(3), "alert", customer)
    (mine,) = [p for p in progress if p.uuid == limit.uuid]
    assert mine.current_spend == price(4000, 1000)
    assert mine.remaining_amount == Decimal(3) - price(4000, 1000)


def test_usage_limits_sync(collector: LocalCollector) -> None:
    """The sync twin: a limit, its progress, the signed triggered-limits document, a refusal."""
    customer = unique("lim-sync")
    with CostManagerClient(aicm_api_key=API_KEY, aicm_api_base=collector.api_base) as client:
        limit = client.create_usage_limit(
            threshold_type="limit", amount=0.001, period="day", client=customer
        )
        track(collector, customer=customer, input_tokens=10_000, output_tokens=0)
        (progress,) = client.list_usage_limit_progress()
        document = client.get_triggered_limits()
        assert client.update_usage_limit(limit.uuid, active=False).active is False
        assert client.get_usage_limit(limit.uuid).amount == Decimal("0.001")
        client.delete_usage_limit(limit.uuid)
        assert client.list_usage_limits() == []
        with pytest.raises(ClientRequestError):
            client.create_usage_limit(threshold_type="limit", amount=1, period="week")
    assert progress.current_spend == price(10_000, 0)
    assert set(document["triggered_limits"]) >= {"encrypted_payload", "public_key", "key_id"}


@pytest.mark.anyio
async def test_progress_counts_unpriced_usage_apart(collector: LocalCollector) -> None:
    """Progress spends only what has a price and counts the rest in unpriced_events."""
    customer = unique("lim-unpriced")
    async with AsyncCostManagerClient(
        aicm_api_key=API_KEY, aicm_api_base=collector.api_base
    ) as client:
        limit = await client.create_usage_limit(
            threshold_type="alert", amount=5, period="month", client=customer
        )
        track(collector, customer=customer, input_tokens=700, output_tokens=70)
        track(
            collector,
            customer=customer,
            input_tokens=1,
            output_tokens=1,
            service_key="acme-ai::rocket-1",
        )
        progress = await client.list_usage_limit_progress()
    (mine,) = [p for p in progress if p.uuid == limit.uuid]
    assert mine.current_spend == price(700, 70)
    assert mine.extra["unpriced_events"] == 1


@pytest.mark.anyio
async def test_a_limit_with_an_end_and_a_message(collector: LocalCollector) -> None:
    """create_usage_limit and update_usage_limit send expires_at and limit_message, which
    come back in the limit's extra fields."""
    ends = dt.datetime(2031, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
    async with AsyncCostManagerClient(
        aicm_api_key=API_KEY, aicm_api_base=collector.api_base
    ) as client:
        limit = await client.create_usage_limit(
            threshold_type="limit", amount=2, period="day", expires_at=ends, limit_message="stop"
        )
        changed = await client.update_usage_limit(limit.uuid, limit_message="over budget")
    assert limit.extra["limit_message"] == "stop"
    assert limit.extra["expires_at"].startswith("2031-01-02T03:04")
    assert changed.extra["limit_message"] == "over budget"
    assert changed.extra["expires_at"] == limit.extra["expires_at"]
    with CostManagerClient(aicm_api_key=API_KEY, aicm_api_base=collector.api_base) as sync:
        moved = sync.update_usage_limit(limit.uuid, expires_at="2032-05-06T00:00:00Z")
    assert moved.extra["expires_at"].startswith("2032-05-06")


@pytest.mark.anyio
async def test_triggered_limits_async(collector: LocalCollector) -> None:
    """The async twin's get_triggered_limits gives the signed document; its claims name the
    limit the tracked spend reached."""
    customer = unique("lim-trig")
    async with AsyncCostManagerClient(
        aicm_api_key=API_KEY, aicm_api_base=collector.api_base
    ) as client:
        limit = await client.create_usage_limit(
            threshold_type="limit", amount="0.000001", period="day", client=customer
        )
        track(collector, customer=customer, input_tokens=50_000, output_tokens=0)
        document = await client.get_triggered_limits()
    verified = verify_answer(document["triggered_limits"])
    assert [x.limit_id for x in verified.limits] == [limit.uuid]
    assert [x.customer_key for x in verified.limits] == [customer]
