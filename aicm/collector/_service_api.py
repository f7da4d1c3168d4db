"""The service's management API on the collector (layer 6): usage, costs, customers, ...

What the collector answers is computed from what it stored: a ``/track`` or
``/track-usage`` record is a usage event, priced as every report prices
(:func:`aicm.cli._pricing.price_usage`): the collector's price table and the custom
services created, else genai-prices for a model it knows. A priced event has one cost
event per priced metric; an unpriced one has none and is counted as unpriced, never as
$0. Rollups sum both per service, customer and day or hour. Customers, webhooks and
custom services are kept as given in the collector's SQLite store, so they outlive a
restart on the same file (they are cleared with the records). Vendors and services come
from the price data (the table, genai-prices' models) and the records received. Answers
have the shapes of the service's own API, so its SDK parses them: pagination by
``limit``/``offset`` with absolute ``next`` links, ``PUT`` as a partial update, boolean
filters as ``True``/``False``.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aicm._core.jsonplain import dumps_bytes, loads
from aicm._core.models import vendor_service_key
from aicm._providers.normalize import PRICE_PROVIDERS
from aicm._version import __version__
from aicm.cli._pricing import PriceTable, price_usage
from aicm.collector._logic import api_key_matches

if TYPE_CHECKING:
    from aicm.collector._collector import Collector
    from aicm.collector._store import RecordStore

__all__ = ["ApiObjects", "priced_event", "service_api_routes", "usage_events"]

#: Every uuid the collector derives (events, vendors, services) is a uuid5 in this space,
#: so the same record has the same id in every answer and every run.
_NAMESPACE = uuid.UUID("5b0e6f4e-3c1d-4f0a-9a55-6d1c0a11c0de")
#: The one team and API key a local collector knows.
TEAM_UUID = str(uuid.uuid5(_NAMESPACE, "team"))
TEAM_NAME = "local"
API_KEY_ID = str(uuid.uuid5(_NAMESPACE, "api-key"))
DEFAULT_PAGE = 100
# Costs in USD to the pico-dollar: exact enough for any rate, free of float noise.
_COST_DIGITS = 12
MAX_PAGE = 1000
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


def _id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


class ApiError(Exception):
    """An error answer: ``status_code`` and the ``detail`` the client reads."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


# -- usage, costs and rollups from the stored records (pure) -------------------------------


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


def _iso(moment: dt.datetime) -> str:
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
            "timestamp": _iso(self.moment),
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
    priced metric, by :func:`aicm.cli._pricing.price_usage` (the pricing of every report):
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
                event_id=_id("track", key, str(r["response_id"])),
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
                event_id=_id("track_usage", key, str(r["response_id"])),
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
            period = _iso(event.moment.replace(minute=0, second=0, microsecond=0))
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


# -- objects kept as given ------------------------------------------------------------------


class ApiObjects:
    """Customers, webhooks and custom services, by uuid, kept in the collector's store (so
    they outlive a restart on the same database file)."""

    def __init__(self, store: RecordStore) -> None:
        # Held across a uniqueness check and the write it allows.
        self._lock = threading.Lock()
        self._store = store

    def all(self, kind: str) -> list[dict[str, Any]]:
        return self._store.objects(kind)

    def get(self, kind: str, key: str, what: str) -> dict[str, Any]:
        for found in self._store.objects(kind):
            if found.get("uuid") == key:
                return found
        raise ApiError(404, f"no {what} {key!r}")

    def put(
        self, kind: str, key: str, value: dict[str, Any], unique: tuple[str, str] | None = None
    ) -> None:
        with self._lock:
            if unique is not None:
                field, what = unique
                for other in self._store.objects(kind):
                    if other.get("uuid") != key and other.get(field) == value.get(field):
                        raise ApiError(400, f"a {what} with {field} {value.get(field)!r} exists")
            self._store.put_object(kind, key, value)

    def delete(self, kind: str, key: str, what: str) -> None:
        with self._lock:
            if not self._store.delete_object(kind, key):
                raise ApiError(404, f"no {what} {key!r}")


# -- request helpers -----------------------------------------------------------------------


def _flag(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ApiError(422, f"{name}: expected True or False, got {value!r}")


def _int_param(request: Request, name: str, default: int, *, most: int | None = None) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(422, f"{name}: expected an integer, got {value!r}") from None
    if number < 0 or (name == "limit" and number == 0):
        raise ApiError(422, f"{name}: expected a positive integer, got {value!r}")
    return min(number, most) if most is not None else number


def _date_param(request: Request, name: str) -> dt.date | None:
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise ApiError(422, f"{name}: expected a date (YYYY-MM-DD), got {value!r}") from None


def _date_window(request: Request) -> Callable[[dt.datetime], bool]:
    """Whether a moment falls on the days ``start_date``..``end_date`` (read, and checked, once)."""
    start, end = _date_param(request, "start_date"), _date_param(request, "end_date")

    def within(moment: dt.datetime) -> bool:
        day = moment.date()
        return (start is None or day >= start) and (end is None or day <= end)

    return within


def _paginate(request: Request, items: Sequence[Any]) -> dict[str, Any]:
    """``{"count", "next", "previous", "results"}`` by ``limit``/``offset``; absolute links."""
    limit = _int_param(request, "limit", DEFAULT_PAGE, most=MAX_PAGE)
    offset = _int_param(request, "offset", 0)
    url = request.url
    following = None
    if offset + limit < len(items):
        following = str(url.include_query_params(limit=limit, offset=offset + limit))
    preceding = None
    if offset > 0:
        preceding = str(url.include_query_params(limit=limit, offset=max(offset - limit, 0)))
    return {
        "count": len(items),
        "next": following,
        "previous": preceding,
        "results": list(items[offset : offset + limit]),
    }


async def _object_body(request: Request) -> dict[str, Any]:
    try:
        data = loads(await request.body())
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    return data


def _check_fields(
    data: Mapping[str, Any],
    types: Mapping[str, type | tuple[type, ...]],
    *,
    required: Iterable[str] = (),
) -> None:
    """422 naming every problem: unknown fields, missing required ones, wrong types."""
    problems = [f"{name}: unknown field" for name in data if name not in types]
    problems += [f"{name}: required" for name in required if data.get(name) is None]
    for name, expected in types.items():
        value = data.get(name)
        if value is None:
            continue
        bad_bool = isinstance(value, bool) and expected in (int, (int, float, str))
        if bad_bool or not isinstance(value, expected):
            problems.append(f"{name}: wrong type ({type(value).__name__})")
    if problems:
        raise ApiError(422, "; ".join(problems))


# -- the endpoints -------------------------------------------------------------------------

_CUSTOMER_FIELDS: Mapping[str, type] = {
    "customer_key": str,
    "name": str,
    "phone": str,
    "email": str,
}
_WEBHOOK_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "url": str,
    "secret": str,
    "active": bool,
    "tolerance": int,
}
_CUSTOM_SERVICE_FIELDS: Mapping[str, type] = {
    "custom_service_key": str,
    "configuration": dict,
    "is_active": bool,
}
_COST_UNIT_DEFAULTS: Mapping[str, Any] = {
    "per_quantity": 1,
    "min_units": 0,
    "max_units": 10_000_000,
    "currency": "USD",
    "is_active": True,
}
_COST_UNIT_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "name": str,
    "cost": (int, float, str),
    "unit": str,
    "per_quantity": int,
    "min_units": int,
    "max_units": int,
    "currency": str,
    "is_active": bool,
}


class ServiceApi:
    """The handlers, bound to one collector."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    @property
    def objects(self) -> ApiObjects:
        return self.collector.api_objects

    def events(self) -> list[Event]:
        store = self.collector.store
        vendors = {
            str(c["config_id"]): str(c["api_id"])
            for c in self.collector.configs()
            if "config_id" in c and "api_id" in c
        }
        return usage_events(
            store.records("track"), store.records("track_usage"), self.collector.prices(), vendors
        )

    # usage

    async def usage_events(self, request: Request) -> Any:
        params = request.query_params
        within = _date_window(request)
        events = [
            e.wire()
            for e in self.events()
            if _matches(params.get("customer_key"), e.customer_key)
            and _matches(params.get("config_id"), e.config_id)
            and _matches(params.get("service_id"), e.service_key)
            and within(e.moment)
        ]
        return _paginate(request, events)

    async def usage_event(self, request: Request) -> Any:
        wanted = request.path_params["event_id"]
        for event in self.events():
            if event.event_id == wanted:
                return event.wire()
        raise ApiError(404, f"no usage event {wanted!r}")

    async def usage_rollups(self, request: Request) -> Any:
        params = request.query_params
        within = _date_window(request)
        granularity = params.get("granularity") or "daily"
        if granularity not in ("daily", "hourly"):
            raise ApiError(422, f"granularity: expected daily or hourly, got {granularity!r}")
        events = [
            e
            for e in self.events()
            if _matches(params.get("customer_key"), e.customer_key)
            and _matches(params.get("service_id"), e.service_key)
            and within(e.moment)
        ]
        return _paginate(request, rollups(events, hourly=granularity == "hourly"))

    # costs

    async def costs(self, request: Request) -> Any:
        params = request.query_params
        within = _date_window(request)
        customers = params.getlist("customer_key")
        services = params.getlist("service_key")
        keys = params.getlist("api_key_id")
        items = [
            {
                "provider_id": e.vendor,
                "service_key": e.service_key,
                "cost_unit_id": line.cost_unit_id,
                "quantity": line.quantity,
                "cost_per_unit": line.cost_per_unit,
                "cost": line.cost,
            }
            for e in self.events()
            if _matches(params.get("response_id"), e.response_id)
            and (not customers or e.customer_key in customers)
            and (not services or e.service_key in services)
            and (not keys or API_KEY_ID in keys)
            and within(e.moment)
            for line in e.costs
        ]
        return _paginate(request, items)

    async def cost_events(self, request: Request) -> Any:
        wanted = request.path_params["response_id"]
        return [
            {
                "uuid": _id("cost", e.event_id, line.cost_unit_id),
                "event_id": e.event_id,
                "team_id": TEAM_UUID,
                "api_key_id": API_KEY_ID,
                "timestamp": _iso(e.moment),
                "customer_key": e.customer_key,
                "response_id": e.response_id,
                "provider_id": e.vendor,
                "service_key": e.service_key,
                "cost_unit_id": line.cost_unit_id,
                "quantity": line.quantity,
                "cost_per_unit": line.cost_per_unit,
                "cost": line.cost,
                "context": e.context,
                "hourly_rollup_status": "processed",
                "daily_rollup_status": "processed",
            }
            for e in self.events()
            if e.response_id == wanted
            for line in e.costs
        ]

    # customers

    async def customers(self, request: Request) -> Any:
        if request.method == "POST":
            data = await _object_body(request)
            _check_fields(data, _CUSTOMER_FIELDS, required=("customer_key",))
            key = str(uuid.uuid4())
            customer = {"uuid": key, **{k: data.get(k) for k in _CUSTOMER_FIELDS}}
            self.objects.put("customers", key, customer, unique=("customer_key", "customer"))
            return 201, customer
        params = request.query_params
        name = (params.get("name") or "").lower()
        found = [
            c
            for c in self.objects.all("customers")
            if _matches(params.get("customer_key"), c["customer_key"])
            and _matches(params.get("phone"), c.get("phone"))
            and _matches(params.get("email"), c.get("email"))
            and (not name or name in (c.get("name") or "").lower())
        ]
        return _paginate(request, found)

    async def customer(self, request: Request) -> Any:
        return await self._one(request, "customers", "customer_id", "customer", self._customer_put)

    def _customer_put(self, current: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        _check_fields(data, _CUSTOMER_FIELDS)
        return {**current, **{k: v for k, v in data.items() if v is not None}}

    # webhooks

    async def webhooks(self, request: Request) -> Any:
        if request.method == "POST":
            data = await _object_body(request)
            _check_fields(data, _WEBHOOK_FIELDS, required=("url", "secret"))
            now = _now()
            webhook = {
                "uuid": str(uuid.uuid4()),
                "url": data["url"],
                "secret": data["secret"],
                "active": data.get("active", True),
                "tolerance": data.get("tolerance", 300),
                "team_uuid": TEAM_UUID,
                "created_at": now,
                "updated_at": now,
            }
            self.objects.put("webhooks", webhook["uuid"], webhook)
            return 201, webhook
        every = self.objects.all("webhooks")
        active = [w for w in every if w["active"]]
        return {
            "endpoints": active if _flag(request, "active_only") else every,
            "total_count": len(every),
            "active_count": len(active),
        }

    async def webhook(self, request: Request) -> Any:
        return await self._one(request, "webhooks", "webhook_uuid", "webhook", self._webhook_put)

    def _webhook_put(self, current: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        _check_fields(data, _WEBHOOK_FIELDS)
        changes = {k: v for k, v in data.items() if v is not None}
        return {**current, **changes, "updated_at": _now()}

    # custom services

    async def custom_services(self, request: Request) -> Any:
        if request.method == "POST":
            data = await _object_body(request)
            _check_fields(
                data, _CUSTOM_SERVICE_FIELDS, required=("custom_service_key", "configuration")
            )
            now = _now()
            service = {
                "uuid": str(uuid.uuid4()),
                "custom_service_key": data["custom_service_key"],
                "configuration": data["configuration"],
                "is_active": data.get("is_active", True),
                "is_deleted": False,
                "created_at": now,
                "updated_at": now,
                "cost_units": _cost_units(data["configuration"]),
                "team_uuid": TEAM_UUID,
                "team_name": TEAM_NAME,
            }
            self.objects.put(
                "custom_services",
                service["uuid"],
                service,
                unique=("custom_service_key", "custom service"),
            )
            return 201, service
        wanted = {
            name: _flag(request, name) for name in ("is_active", "is_deleted", "has_cost_units")
        }
        summaries = []
        for s in self.objects.all("custom_services"):
            summary = {
                "uuid": s["uuid"],
                "custom_service_key": s["custom_service_key"],
                "is_active": s["is_active"],
                "is_deleted": s["is_deleted"],
                "created_at": s["created_at"],
                "updated_at": s["updated_at"],
                "cost_units_count": len(s["cost_units"]),
            }
            facts = {**summary, "has_cost_units": bool(s["cost_units"])}
            if all(v is None or facts[k] == v for k, v in wanted.items()):
                summaries.append(summary)
        return summaries

    async def custom_service(self, request: Request) -> Any:
        return await self._one(
            request, "custom_services", "uuid", "custom service", self._custom_service_put
        )

    def _custom_service_put(self, current: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        _check_fields(data, _CUSTOM_SERVICE_FIELDS)
        changes = {k: v for k, v in data.items() if v is not None}
        updated = {**current, **changes, "updated_at": _now()}
        if "configuration" in changes:
            updated["cost_units"] = _cost_units(changes["configuration"])
        return updated

    async def _one(
        self,
        request: Request,
        kind: str,
        param: str,
        what: str,
        put: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
    ) -> Any:
        key = request.path_params[param]
        if request.method == "DELETE":
            self.objects.delete(kind, key, what)
            return 204, None
        current = self.objects.get(kind, key, what)
        if request.method == "PUT":
            updated = put(current, await _object_body(request))
            unique = {
                "customers": ("customer_key", "customer"),
                "custom_services": ("custom_service_key", "custom service"),
            }.get(kind)
            self.objects.put(kind, key, updated, unique=unique)
            return updated
        return current

    # catalogue

    def _services(self) -> dict[str, set[str]]:
        by_vendor: dict[str, set[str]] = defaultdict(set)
        for service in self.collector.prices():
            by_vendor[vendor_of(service)].add(service)
        for vendor, models in genai_models().items():
            by_vendor[vendor].update(f"{vendor}::{model}" for model in models)
        for event in self.events():
            by_vendor[event.vendor].add(event.service_key)
        return by_vendor

    async def vendors(self, request: Request) -> Any:
        return [{"uuid": _id("vendor", name), "name": name} for name in sorted(self._services())]

    async def services(self, request: Request) -> Any:
        vendor = request.query_params.get("vendor")
        if not vendor:
            raise ApiError(422, "vendor: required")
        names = self._services().get(vendor, set())
        return [
            {
                "uuid": _id("service", name),
                "service_id": name,
                "name": name.partition("::")[2] or name,
            }
            for name in sorted(names)
        ]

    async def openapi(self, request: Request) -> Any:
        paths: dict[str, dict[str, Any]] = {}
        for path, methods, summary in _SCHEMA_PATHS:
            paths[path] = {
                m.lower(): {"summary": summary, "responses": {"200": {"description": "OK"}}}
                for m in methods
            }
        return {
            "openapi": "3.1.0",
            "info": {"title": "aicm local collector", "version": __version__},
            "servers": [{"url": str(request.url).rsplit("/openapi.json", 1)[0]}],
            "paths": paths,
        }


def _matches(wanted: str | None, value: str | None) -> bool:
    return wanted is None or wanted == "" or wanted == value


def _is_price(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number >= 0


def _cost_units(configuration: Any) -> list[dict[str, Any]]:
    units = configuration.get("cost_units") if isinstance(configuration, Mapping) else None
    if not isinstance(units, list):
        raise ApiError(422, "configuration.cost_units: required, a list of cost units")
    out = []
    for index, unit in enumerate(units):
        if not isinstance(unit, dict):
            raise ApiError(422, f"configuration.cost_units[{index}]: expected an object")
        try:
            _check_fields(unit, _COST_UNIT_FIELDS, required=("name", "cost", "unit"))
        except ApiError as exc:
            raise ApiError(422, f"configuration.cost_units[{index}]: {exc.detail}") from None
        if not _is_price(unit["cost"]):
            raise ApiError(422, f"configuration.cost_units[{index}].cost: expected a number >= 0")
        out.append({**_COST_UNIT_DEFAULTS, **unit})
    return out


_SCHEMA_PATHS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("/track", ("POST",), "Record usage events"),
    ("/track-usage", ("POST",), "Record usage of a handling config"),
    ("/configs", ("GET",), "Service configs"),
    ("/usage/events/", ("GET",), "List usage events"),
    ("/usage/event/{event_id}/", ("GET",), "Get a usage event"),
    ("/usage/rollups/", ("GET",), "Usage and cost per day or hour"),
    ("/costs/", ("GET",), "List cost events"),
    ("/cost-events/{response_id}", ("GET",), "Cost events of one response"),
    ("/customers/", ("GET", "POST"), "List or create customers"),
    ("/customers/{customer_id}/", ("GET", "PUT", "DELETE"), "One customer"),
    ("/vendors/", ("GET",), "List vendors"),
    ("/services/", ("GET",), "List a vendor's services"),
    ("/webhooks/", ("GET", "POST"), "List or create webhook endpoints"),
    ("/webhooks/{webhook_uuid}/", ("GET", "PUT", "DELETE"), "One webhook endpoint"),
    ("/custom-services/", ("GET", "POST"), "List or create custom services"),
    ("/custom-services/{uuid}/", ("GET", "PUT", "DELETE"), "One custom service"),
    ("/usage-limits/", ("GET", "POST"), "List or create usage limits"),
    ("/usage-limits/{limit_id}/", ("GET", "PUT", "DELETE"), "One usage limit"),
    ("/usage-limits/progress/", ("GET",), "Spend against each usage limit"),
    ("/triggered-limits", ("GET",), "Signed triggered limits"),
    ("/openapi.json", ("GET",), "This document"),
)

_Handler = Callable[[Request], Awaitable[Any]]


def _json_response(status_code: int, data: Any) -> Response:
    if data is None:
        return Response(status_code=status_code)
    return Response(dumps_bytes(data), status_code=status_code, media_type="application/json")


async def _refusal(collector: Collector, request: Request) -> Response | None:
    """The collector's faults and API-key check, as on the ingest endpoints."""
    headers = request.headers
    authorization = headers.get("authorization")
    collector.stats.request_arrived(headers.get("user-agent"), authorization is not None)
    plan = collector.faults.plan()
    faults = plan.faults
    if faults.latency:
        collector.stats.fault("latency")
        await anyio.sleep(faults.latency)
    if plan.failure is not None:
        collector.stats.fault(plan.failure)
        extra = {}
        if faults.retry_after is not None:
            extra["Retry-After"] = f"{faults.retry_after:g}"
        response = _json_response(faults.failure_status, {"detail": "injected failure"})
        response.headers.update(extra)
        return response
    if faults.require_api_key is not None and not api_key_matches(
        authorization, faults.require_api_key
    ):
        collector.stats.fault("unauthorized")
        response = _json_response(401, {"detail": "missing or invalid API key"})
        response.headers["WWW-Authenticate"] = 'Bearer realm="aicm"'
        return response
    return None


def _endpoint(collector: Collector, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        refused = await _refusal(collector, request)
        if refused is not None:
            return refused
        try:
            answer = await handler(request)
        except ApiError as exc:
            return _json_response(exc.status_code, {"detail": exc.detail})
        if isinstance(answer, tuple):
            return _json_response(*answer)
        return _json_response(200, answer)

    return endpoint


def service_api_routes(api_url: str, collector: Collector) -> list[Route]:
    """The routes of the service's management API under ``api_url`` (limits excepted)."""
    api = ServiceApi(collector)
    table: Sequence[tuple[str, _Handler, list[str]]] = (
        ("/usage/events/", api.usage_events, ["GET"]),
        ("/usage/event/{event_id}/", api.usage_event, ["GET"]),
        ("/usage/rollups/", api.usage_rollups, ["GET"]),
        ("/costs/", api.costs, ["GET"]),
        ("/cost-events/{response_id}", api.cost_events, ["GET"]),
        ("/customers/", api.customers, ["GET", "POST"]),
        ("/customers/{customer_id}/", api.customer, ["GET", "PUT", "DELETE"]),
        ("/vendors/", api.vendors, ["GET"]),
        ("/services/", api.services, ["GET"]),
        ("/webhooks/", api.webhooks, ["GET", "POST"]),
        ("/webhooks/{webhook_uuid}/", api.webhook, ["GET", "PUT", "DELETE"]),
        ("/custom-services/", api.custom_services, ["GET", "POST"]),
        ("/custom-services/{uuid}/", api.custom_service, ["GET", "PUT", "DELETE"]),
        ("/openapi.json", api.openapi, ["GET"]),
    )
    return [
        Route(f"{api_url}{path}", _endpoint(collector, handler), methods=methods)
        for path, handler, methods in table
    ]
