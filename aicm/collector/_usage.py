"""Usage events, cost events and rollups computed from the stored records (layer 6, pure).

A ``/track`` or ``/track-usage`` record is a usage event, priced as every report prices
(`aicm.cli._pricing.price_usage()`): the collector's price table and the custom
services created, else genai-prices for a model it knows. A priced event has one cost
event per priced metric; an unpriced one has none and is counted as unpriced, never as
$0. Rollups sum both per service, customer and day or hour.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from aicm._core.models import vendor_service_key
from aicm._providers.normalize import PRICE_PROVIDERS
from aicm.cli._pricing import PriceTable, price_usage

__all__ = [
    "API_KEY_ID",
    "TEAM_NAME",
    "TEAM_UUID",
    "CostLine",
    "Event",
    "custom_prices",
    "genai_models",
    "iso_time",
    "now_iso",
    "priced_event",
    "rollups",
    "stable_id",
    "usage_events",
    "vendor_of",
]

#: Every uuid the collector derives (events, vendors, services) is a uuid5 in this space,
#: so the same record has the same id in every answer and every run.
_NAMESPACE = uuid.UUID("5b0e6f4e-3c1d-4f0a-9a55-6d1c0a11c0de")
#: The one team and API key a local collector knows.
TEAM_UUID = str(uuid.uuid5(_NAMESPACE, "team"))
TEAM_NAME = "local"
API_KEY_ID = str(uuid.uuid5(_NAMESPACE, "api-key"))
# Costs in USD to the pico-dollar: exact enough for any rate, free of float noise.
_COST_DIGITS = 12
_NO_VENDOR = "unknown"
# Who sells the models of the default price table, whose keys name models only.
_VENDOR_PREFIXES = (
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding-", "openai"),
    ("claude-", "anthropic"),
    ("gemini-", "google"),
    ("api.heygen.com/", "heygen"),
)


def genai_models() -> dict[str, list[str]]:
    """The models genai-prices prices, by the vendor name ``/track`` records use (none
    without genai-prices installed)."""
    try:
        from genai_prices import data
    except ImportError:
        return {}
    by_id = {provider.id: provider for provider in data.providers}
    return {
        vendor: [model.id for model in by_id[provider].models]
        for vendor, provider in PRICE_PROVIDERS.items()
        if provider in by_id
    }


def stable_id(*parts: str) -> str:
    """A uuid5 of ``parts``: the same record has the same id in every answer and run."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def now_iso() -> str:
    """Now, as the service writes a time (ISO-8601, UTC, ``Z``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _moment(timestamp: Any, received_at: Any) -> dt.datetime:
    """A record's time (ISO-8601 or epoch seconds), else when it arrived; always UTC."""
    moment: dt.datetime | None = None
    if isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
        moment = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    elif isinstance(timestamp, str):
        try:
            moment = dt.datetime.fromtimestamp(float(timestamp), dt.timezone.utc)
        except (ValueError, OverflowError, OSError):
            try:
                moment = dt.datetime.fromisoformat(timestamp)
            except ValueError:
                moment = None
    if moment is None:
        seconds = received_at if isinstance(received_at, (int, float)) else 0.0
        moment = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def iso_time(moment: dt.datetime) -> str:
    """``moment`` as the service writes a time."""
    return moment.isoformat().replace("+00:00", "Z")


def vendor_of(service: str) -> str:
    """The vendor of ``"vendor::model"``, or of a model of the default price table."""
    if "::" in service:
        return service.partition("::")[0]
    for prefix, vendor in _VENDOR_PREFIXES:
        if service.startswith(prefix):
            return vendor
    return _NO_VENDOR


@attrs.frozen(kw_only=True)
class CostLine:
    """One priced metric of a usage event."""

    cost_unit_id: str
    quantity: float
    cost_per_unit: float
    cost: float


@attrs.frozen(kw_only=True)
class Event:
    """A stored record as the service's usage event, with its vendor, time and price."""

    event_id: str
    config_id: str
    service_key: str
    vendor: str
    moment: dt.datetime
    response_id: str
    customer_key: str | None
    usage: dict[str, Any]
    base_url: str | None
    context: dict[str, Any] | None
    #: False when neither the price table nor genai-prices prices it: it has no cost
    #: lines, adds nothing to a cost, and answers count it as unpriced.
    priced: bool
    quantity: float
    costs: tuple[CostLine, ...]

    @property
    def cost(self) -> float:
        return math.fsum(line.cost for line in self.costs)

    def wire(self) -> dict[str, Any]:
        """The ``UsageEvent`` answer."""
        return {
            "event_id": self.event_id,
            "config_id": self.config_id,
            "service_id": self.service_key,
            "timestamp": iso_time(self.moment),
            "response_id": self.response_id,
            "customer_key": self.customer_key,
            "usage": self.usage,
            "base_url": self.base_url,
            "context": self.context,
            "status": "processed",
            "priced": self.priced,
        }


def _plain_number(amount: float) -> float:
    # 1000 tokens read as 1000, not 1000.0
    return int(amount) if amount.is_integer() and abs(amount) < 2**53 else amount


def priced_event(
    prices: PriceTable, service: str, usage: Any
) -> tuple[bool, float, tuple[CostLine, ...]]:
    """Whether ``usage`` of ``service`` is priced, its quantity, and one cost line per
    priced metric, by `aicm.cli._pricing.price_usage()` (the pricing of every report):
    the table's rates, else genai-prices; unpriced usage has no lines."""
    price = price_usage(prices, service, usage)
    lines = tuple(
        CostLine(
            cost_unit_id=line.metric,
            quantity=_plain_number(line.quantity),
            cost_per_unit=line.rate,
            cost=round(line.cost, _COST_DIGITS),
        )
        for line in price.lines
    )
    if price.source == "genai-prices":
        # Cached and audio tokens are parts of the input and output counts.
        quantity = price.amounts["input_tokens"] + price.amounts["output_tokens"]
    else:
        quantity = math.fsum(price.amounts.values())
    return price.priced, _plain_number(quantity), lines


def custom_prices(services: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The active custom services as a price table: each usage field a mapping names costs
    its cost unit's ``cost / per_quantity`` (times ``multiply_by``, over ``divide_by``);
    without mappings, a usage field named like a cost unit costs that unit's rate.

    Rounding, min/max values, conditions and exclusions are not applied: the local
    collector prices the plain case.
    """
    table: dict[str, dict[str, float]] = {}
    for service in services:
        if not service.get("is_active", True) or service.get("is_deleted"):
            continue
        try:
            table[str(service["custom_service_key"])] = _custom_rates(service)
        except (TypeError, ValueError, ZeroDivisionError, AttributeError):
            continue  # a configuration the plain case cannot price: its usage costs nothing
    return table


def _custom_rates(service: Mapping[str, Any]) -> dict[str, float]:
    """One custom service's rates (raises on a value it cannot read)."""
    units = {
        str(u["name"]): float(u["cost"]) / float(u.get("per_quantity") or 1)
        for u in service.get("cost_units", ())
        if u.get("is_active", True)
    }
    mappings = (service.get("configuration") or {}).get("mappings") or []
    rates: dict[str, float] = {}
    for mapping in mappings:
        unit, field = mapping.get("cost_unit"), mapping.get("field")
        if not isinstance(field, str) or unit not in units:
            continue
        multiply, divide = mapping.get("multiply_by"), mapping.get("divide_by")
        factor = (1.0 if multiply is None else float(multiply)) / (
            1.0 if divide is None else float(divide)
        )
        rates[field] = units[unit] * factor
    return rates if mappings else units


def usage_events(
    track: Iterable[Mapping[str, Any]],
    track_usage: Iterable[Mapping[str, Any]],
    prices: PriceTable,
    config_vendors: Mapping[str, str],
) -> list[Event]:
    """The stored records of both endpoints as usage events, priced, oldest first.

    A ``/track`` record's service is its ``"vendor::model"`` key (an older record's
    ``api_id`` names the vendor of a bare key); a ``/track-usage`` record's is its
    ``service_id``, else its ``config_id``, whose config names the vendor.
    """
    events: list[Event] = []
    for r in track:
        key = str(r["service_key"])
        api_id = r.get("api_id")
        if isinstance(api_id, str):
            # As aicm report and the usage limits name it: "openai_chat" is openai's.
            key = vendor_service_key(api_id, key)
        payload = r.get("payload")
        usage = dict(payload) if isinstance(payload, Mapping) else {"units": payload}
        customer = r.get("customer_key") or r.get("client_customer_key")
        vendor = vendor_of(key)
        events.append(
            Event(
                event_id=stable_id("track", key, str(r["response_id"])),
                config_id=str(api_id or vendor),
                service_key=key,
                vendor=vendor,
                moment=_moment(r.get("timestamp"), r.get("received_at")),
                response_id=str(r["response_id"]),
                customer_key=None if customer is None else str(customer),
                usage=usage,
                base_url=None,
                context=r.get("context"),
                **_price_fields(prices, key, payload),
            )
        )
    for r in track_usage:
        config_id = str(r.get("config_id") or r.get("service_id") or _NO_VENDOR)
        key = str(r.get("service_id") or config_id)
        raw = r.get("usage")
        usage = dict(raw) if isinstance(raw, Mapping) else {"units": raw}
        customer = r.get("client_customer_key") or r.get("customer_key")
        events.append(
            Event(
                event_id=stable_id("track_usage", key, str(r["response_id"])),
                config_id=config_id,
                service_key=key,
                vendor=config_vendors.get(config_id) or vendor_of(key),
                moment=_moment(r.get("timestamp"), r.get("received_at")),
                response_id=str(r["response_id"]),
                customer_key=None if customer is None else str(customer),
                usage=usage,
                base_url=r.get("base_url"),
                context=r.get("context"),
                **_price_fields(prices, key, raw),
            )
        )
    events.sort(key=lambda e: e.moment)
    return events


def _price_fields(prices: PriceTable, service: str, usage: Any) -> dict[str, Any]:
    priced, quantity, costs = priced_event(prices, service, usage)
    return {"priced": priced, "quantity": quantity, "costs": costs}


def rollups(events: Iterable[Event], *, hourly: bool) -> list[dict[str, Any]]:
    """Usage quantity and cost per (customer, service, day or hour): ``UsageRollup`` answers."""
    groups: dict[tuple[str, str, str], list[Event]] = defaultdict(list)
    for event in events:
        if hourly:
            period = iso_time(event.moment.replace(minute=0, second=0, microsecond=0))
        else:
            period = event.moment.date().isoformat()
        groups[(period, event.service_key, event.customer_key or "")].append(event)
    return [
        {
            "customer_key": customer or None,
            "service_id": service,
            "date": period,
            "quantity": _plain_number(math.fsum(e.quantity for e in group)),
            # The priced events' cost; the unpriced ones are counted, never costed at $0.
            "cost": round(math.fsum(e.cost for e in group), _COST_DIGITS),
            "unpriced_events": sum(not e.priced for e in group),
        }
        for (period, service, customer), group in sorted(groups.items())
    ]
