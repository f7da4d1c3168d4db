"""The service's API objects (usage, costs, customers, ...) as attrs records (layer 1, pure).

Every record keeps the fields the service sends that aicm does not know yet in ``extra``,
so a newer service never breaks an older SDK. Money is `Decimal` (the
service sends numbers or strings); times are timezone-aware `datetime`.
All structuring goes through the one converter of `aicm._core.models`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override
from cattrs.v import transform_error

from .exceptions import UnexpectedAnswerError
from .models import _at, _describe, _ShapeError, _type_name, converter

__all__ = [
    "CostEvent",
    "CostEventRecord",
    "CustomCostUnit",
    "CustomService",
    "CustomServiceSummary",
    "Customer",
    "LimitTerms",
    "Page",
    "Service",
    "UsageEvent",
    "UsageLimit",
    "UsageLimitProgress",
    "UsageRollup",
    "Vendor",
    "Webhook",
    "WebhookList",
    "structure_answer",
    "structure_page",
]

_T = TypeVar("_T")


@attrs.frozen(kw_only=True)
class Page(Generic[_T]):
    """One page of a paginated list: ``results``, the total ``count`` and the links.

    ``next`` and ``previous`` are the service's absolute URLs (None at either end).
    """

    count: int
    results: tuple[_T, ...] = ()
    next: str | None = None
    previous: str | None = None
    item_type: type[_T] = attrs.field(repr=False, eq=False)


@attrs.frozen(kw_only=True)
class UsageEvent:
    """One usage record the service received, as ``GET /usage/events/`` lists it."""

    event_id: str
    config_id: str
    service_id: str | None = None
    timestamp: dt.datetime
    response_id: str
    customer_key: str | None = None
    usage: dict[str, Any] = attrs.field(factory=dict)
    base_url: str | None = None
    context: dict[str, Any] | None = None
    status: str
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class UsageRollup:
    """Usage and cost of one service (and customer) over one day or hour."""

    customer_key: str | None = None
    service_id: str
    #: ``YYYY-MM-DD`` for daily rollups; the hour's start for hourly ones
    date: str
    quantity: float
    cost: Decimal
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class CostEvent:
    """One priced cost unit of a usage record, as ``GET /costs/`` lists it (USD)."""

    provider_id: str
    service_key: str
    cost_unit_id: str
    quantity: Decimal
    cost_per_unit: Decimal
    cost: Decimal
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class CostEventRecord:
    """A stored cost event in full, as ``GET /cost-events/{response_id}`` returns it."""

    uuid: str
    event_id: str
    team_id: str
    api_key_id: str
    timestamp: dt.datetime
    customer_key: str | None = None
    response_id: str
    provider_id: str
    service_key: str
    cost_unit_id: str
    quantity: Decimal
    cost_per_unit: Decimal
    cost: Decimal
    context: dict[str, Any] | None = None
    hourly_rollup_status: str
    daily_rollup_status: str
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class Customer:
    """A customer of yours, known to the service by its ``customer_key``."""

    uuid: str
    customer_key: str
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class Vendor:
    """A vendor the service prices (``openai``, ``anthropic``, ...)."""

    uuid: str
    name: str
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class Service:
    """A priced service of a vendor; ``vendor`` is the one asked about."""

    uuid: str
    service_id: str
    vendor: str | None = None
    name: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class Webhook:
    """A webhook endpoint the service calls. ``secret`` signs its calls (never in the repr)."""

    uuid: str
    url: str
    secret: str = attrs.field(repr=False)
    active: bool = True
    tolerance: int = 300
    team_uuid: str
    created_at: dt.datetime
    updated_at: dt.datetime
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class WebhookList:
    """The answer of ``GET /webhooks/``: the endpoints and how many are active."""

    endpoints: tuple[Webhook, ...] = ()
    total_count: int
    active_count: int
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class CustomCostUnit:
    """A cost unit of a custom service: ``cost`` per ``per_quantity`` ``unit``."""

    name: str
    cost: Decimal
    unit: str
    per_quantity: int = 1
    min_units: int = 0
    max_units: int = 10_000_000
    currency: str = "USD"
    is_active: bool = True
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class CustomService:
    """A service you priced yourself: its configuration (cost units, mappings) in full."""

    uuid: str
    custom_service_key: str
    configuration: dict[str, Any]
    is_active: bool
    is_deleted: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    cost_units: tuple[CustomCostUnit, ...] = ()
    team_uuid: str
    team_name: str
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class CustomServiceSummary:
    """A custom service as ``GET /custom-services/`` lists it."""

    uuid: str
    custom_service_key: str
    is_active: bool
    is_deleted: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    cost_units_count: int
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class LimitTerms:
    """What every usage limit states, as the service answers it and the local collector
    stores it: ``threshold_type`` ``alert`` or ``limit``, ``amount`` USD per ``period``
    (``day`` or ``month``)."""

    uuid: str
    threshold_type: str
    amount: Decimal
    period: str


@attrs.frozen(kw_only=True)
class UsageLimit(LimitTerms):
    """A spending alert or limit: ``amount`` USD per ``period`` (``day`` or ``month``)."""

    service: str | None = None
    client: str | None = None
    notification_list: tuple[str, ...] | None = None
    active: bool
    extra: dict[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen(kw_only=True)
class UsageLimitProgress(UsageLimit):
    """A usage limit with the spend so far in its current period."""

    current_spend: Decimal
    remaining_amount: Decimal


# -- structuring ---------------------------------------------------------------------------


def _decimal(value: object, _: type) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise _ShapeError(f"expected a number or a numeric string, got {_type_name(value)}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise _ShapeError(f"expected a number, got {value!r:.40}") from None
    if not number.is_finite():
        raise _ShapeError(f"expected a finite number, got {value!r:.40}")
    return number


def _datetime(value: object, _: type) -> dt.datetime:
    if not isinstance(value, str):
        raise _ShapeError(f"expected an ISO-8601 time, got {_type_name(value)}")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _ShapeError(f"expected an ISO-8601 time, got {value!r:.60}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def _strict_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise _ShapeError(f"expected true or false, got {_type_name(value)}")
    return value


def _keeping_extra(cls: type[_T]) -> Callable[[Any, type], _T]:
    """A structure hook for ``cls`` that puts the fields it does not declare in ``extra``."""
    names = {a.name for a in attrs.fields(cls)} - {"extra"}  # type: ignore[arg-type]
    base = make_dict_structure_fn(cls, converter, extra=override(omit=True))

    def structure(value: Any, _: type) -> _T:
        if not isinstance(value, Mapping):
            raise _ShapeError(f"expected an object, got {_type_name(value)}")
        known = {k: v for k, v in value.items() if k in names}
        unknown = {str(k): v for k, v in value.items() if k not in names}
        made = base(known, cls)
        return attrs.evolve(made, extra=unknown) if unknown else made  # type: ignore[misc]

    return structure


converter.register_structure_hook(Decimal, _decimal)
converter.register_structure_hook(dt.datetime, _datetime)
converter.register_structure_hook(bool, _strict_bool)
# Each class's function is generated the first time an answer holds one (cattrs keeps it),
# not at import: a program that only tracks never reads these answers.
_KEEPING_EXTRA = frozenset(
    {
        UsageEvent,
        UsageRollup,
        CostEvent,
        CostEventRecord,
        Customer,
        Vendor,
        Service,
        Webhook,
        WebhookList,
        CustomCostUnit,
        CustomService,
        CustomServiceSummary,
        UsageLimit,
        UsageLimitProgress,
    }
)
converter.register_structure_hook_factory(_KEEPING_EXTRA.__contains__, _keeping_extra)


def structure_answer(data: Any, cls: type[_T], *, where: str) -> _T:
    """``data`` (a decoded JSON answer) as ``cls``, or
    [`UnexpectedAnswerError`][aicm.UnexpectedAnswerError] naming every field at fault."""
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError, AttributeError) as exc:
        problems = [_at(line) for line in transform_error(exc, format_exception=_describe)]
        raise UnexpectedAnswerError(f"{where}: {'; '.join(problems)}") from exc


def structure_page(data: Any, item_type: type[_T], *, where: str) -> Page[_T]:
    """A paginated answer (``count``, ``next``, ``previous``, ``results``) as a
    [`Page`][aicm.Page]."""
    if not isinstance(data, Mapping):
        raise UnexpectedAnswerError(f"{where}: expected an object, got {_type_name(data)}")
    results = data.get("results", [])
    if not isinstance(results, list):
        raise UnexpectedAnswerError(f"{where}: results: expected a list, got {_type_name(results)}")
    links = {}
    for name in ("next", "previous"):
        link = data.get(name)
        if link is not None and not isinstance(link, str):
            raise UnexpectedAnswerError(f"{where}: {name}: expected a URL, got {_type_name(link)}")
        links[name] = link
    count = data.get("count", len(results))
    if isinstance(count, bool) or not isinstance(count, int):
        raise UnexpectedAnswerError(f"{where}: count: expected an integer, got {_type_name(count)}")
    return Page(
        count=count,
        results=structure_answer(results, tuple[item_type, ...], where=where),  # type: ignore[valid-type]
        next=links["next"],
        previous=links["previous"],
        item_type=item_type,
    )
