"""The service's management API on the async client: usage, costs, customers, limits, ... (layer 2).

:class:`ServiceApiMethods` is mixed into :class:`~aicm._io.http.AsyncCostManagerClient`, so
these calls share its settings, connection pool, API key and error mapping. Reads, updates
and deletes are retried on a transient failure (5xx, 429, no answer) with the delivery
backoff settings; a create is sent once, so a retry never makes a second customer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import anyio
import httpx

from .._core.exceptions import (
    APIStatusError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnexpectedAnswerError,
)
from .._core.jsonplain import dumps, loads, to_plain
from .._core.policy import RetryPolicy
from .._core.service_models import (
    CostEvent,
    CostEventRecord,
    Customer,
    CustomService,
    CustomServiceSummary,
    Page,
    Service,
    UsageEvent,
    UsageLimit,
    UsageLimitProgress,
    UsageRollup,
    Vendor,
    Webhook,
    WebhookList,
    structure_answer,
    structure_page,
)

if TYPE_CHECKING:
    from .._core.settings import Settings

__all__ = ["API_ATTEMPTS", "DateLike", "ServiceApiMethods"]

_T = TypeVar("_T")

#: Tries of a read, update or delete before its transient failure is raised.
API_ATTEMPTS = 3
#: The most of one management answer aicm reads (decoded): a page of events as large as
#: a caller's ``limit`` asks, the OpenAPI schema. Past it a service (or whatever answers
#: in its place) could grow the process without bound.
MAX_API_ANSWER_BYTES = 16 << 20
# A retry waits at most this long (a longer Retry-After is raised to the caller, who can
# decide; an API call should not stall for a minute inside the SDK).
_MAX_RETRY_WAIT = 5.0

DateLike = dt.date | str
"""A date filter: a :class:`datetime.date` (or datetime) or an ISO-8601 string."""

FilterValue = str | int | bool | dt.date | Iterable[str] | None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"  # the service's (Python's) spelling
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _query(filters: Mapping[str, FilterValue]) -> str:
    """Filters as a query string: None left out, a list as repeated keys, booleans
    as ``True`` / ``False``."""
    pairs: list[tuple[str, str]] = []
    for name, value in filters.items():
        if value is None:
            continue
        if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
            pairs.extend((name, _query_value(v)) for v in value)
        else:
            pairs.append((name, _query_value(value)))
    return urlencode(pairs)


def _detail(text: str) -> str | None:
    """The ``detail`` of a JSON error body, as one line; None when there is none."""
    try:
        data = loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, Mapping) or "detail" not in data:
        return None
    detail = data["detail"]
    if isinstance(detail, str):
        return detail[:500]
    return dumps(detail)[:500]


def _segment(value: str, what: str) -> str:
    """An id as one path segment (a ``/`` or ``..`` in it cannot reach another endpoint)."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a non-empty string, got {type(value).__name__}")
    return quote(value, safe="")


def _body(fields: Mapping[str, Any], what: str) -> bytes:
    plain = to_plain({k: v for k, v in fields.items() if v is not None}, field=what)
    return dumps(plain).encode()


class ServiceApiMethods:
    """The service's API beyond ingest; mixed into ``AsyncCostManagerClient``."""

    if TYPE_CHECKING:
        settings: Settings

        def _auth(self) -> dict[str, str]: ...

        async def _request(
            self,
            method: str,
            path: str,
            *,
            content: bytes | None = None,
            headers: dict[str, str],
            params: dict[str, str] | None = None,
            limit: int = ...,
        ) -> httpx.Response: ...

        def _raise_for_response(self, response: httpx.Response, text: str) -> None: ...

    # -- plumbing --------------------------------------------------------------------------

    def _raise_for_api_answer(self, response: httpx.Response, text: str) -> None:
        if 200 <= response.status_code < 300:
            return
        detail = _detail(text)
        try:
            self._raise_for_response(response, text)
        except APIStatusError as exc:
            if response.status_code == 404:
                error = NotFoundError(
                    f"not found: {detail or response.request.url.path}",
                    status_code=404,
                    body=exc.body,
                )
                error.detail = detail
                raise error from None
            if detail:
                exc.detail = detail
                exc.args = (f"{exc.args[0]}: {detail}",)
            raise

    async def _call(
        self, method: str, path: str, *, body: bytes | None = None, retry: bool = True
    ) -> Any:
        """One API call: the decoded JSON answer (None for an empty one), or an error."""
        from .http import body_truncated  # http.py mixes this class in: imported late

        headers = self._auth()
        if body is not None:
            headers["Content-Type"] = "application/json"
        policy = RetryPolicy(base=self.settings.backoff_base, cap=self.settings.backoff_cap)
        attempts = API_ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                response = await self._request(
                    method, path, content=body, headers=headers, limit=MAX_API_ANSWER_BYTES
                )
                text: str = response.text
                self._raise_for_api_answer(response, text)
                break
            except (ServerError, RateLimitedError, TransportError) as exc:
                if attempt == attempts:
                    raise
                delay = policy.delay(attempt, retry_after=getattr(exc, "retry_after", None))
                if delay > _MAX_RETRY_WAIT:
                    raise
                await anyio.sleep(delay)
        if body_truncated(response):
            raise UnexpectedAnswerError(
                f"{method} {path}: the service's answer is larger than {MAX_API_ANSWER_BYTES}"
                " bytes; it was not read further"
            )
        if response.status_code == 204 or not text.strip():
            return None
        try:
            return loads(text)
        except (ValueError, RecursionError) as exc:
            raise UnexpectedAnswerError(
                f"{method} {path}: the service's answer is not JSON: {exc}"
            ) from exc

    def _follow(self, link: str) -> str:
        """A ``next`` link, checked to stay under ``api_root`` (the key goes nowhere else)."""
        root = self.settings.api_root.rstrip("/")
        parts, base = urlsplit(link), urlsplit(root)
        same_origin = (parts.scheme, parts.netloc) == (base.scheme, base.netloc)
        if not same_origin or not (parts.path + "/").startswith(base.path.rstrip("/") + "/"):
            raise UnexpectedAnswerError(
                f"the service's next page link {link[:200]!r} is not under {root!r}; aicm "
                "does not send the API key elsewhere"
            )
        return link

    async def _page(self, path: str, item_type: type[_T], where: str) -> Page[_T]:
        return structure_page(await self._call("GET", path), item_type, where=where)

    async def next_page(self, page: Page[_T]) -> Page[_T] | None:
        """The page after ``page`` (its ``next`` link), or None when it is the last."""
        if page.next is None:
            return None
        link = self._follow(page.next)
        return await self._page(link, page.item_type, f"GET {link}")

    async def _iterate(self, page: Page[_T]) -> AsyncIterator[_T]:
        current: Page[_T] | None = page
        while current is not None:
            for item in current.results:
                yield item
            current = await self.next_page(current)

    async def _list(self, path: str, item_type: type[_T]) -> list[_T]:
        data = await self._call("GET", path)
        return list(structure_answer(data, tuple[item_type, ...], where=f"GET {path}"))  # type: ignore[valid-type]

    async def _one(
        self, method: str, path: str, item_type: type[_T], *, body: bytes | None = None
    ) -> _T:
        data = await self._call(method, path, body=body, retry=method != "POST")
        return structure_answer(data, item_type, where=f"{method} {path}")

    @staticmethod
    def _with_query(path: str, filters: Mapping[str, FilterValue]) -> str:
        query = _query(filters)
        return f"{path}?{query}" if query else path

    # -- usage -----------------------------------------------------------------------------

    async def list_usage_events(
        self,
        *,
        customer_key: str | None = None,
        config_id: str | None = None,
        service_id: str | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[UsageEvent]:
        """One page of ``GET /usage/events/``: the usage records the service received."""
        path = self._with_query("/usage/events/", locals_of(locals()))
        return await self._page(path, UsageEvent, f"GET {path}")

    async def iter_usage_events(
        self,
        *,
        customer_key: str | None = None,
        config_id: str | None = None,
        service_id: str | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[UsageEvent]:
        """Every usage event matching the filters, page after page."""
        first = await self.list_usage_events(**locals_of(locals()))
        async for event in self._iterate(first):
            yield event

    async def get_usage_event(self, event_id: str) -> UsageEvent:
        """``GET /usage/event/{event_id}/``; :class:`NotFoundError` when there is none."""
        return await self._one("GET", f"/usage/event/{_segment(event_id, 'event_id')}/", UsageEvent)

    async def list_usage_rollups(
        self,
        *,
        customer_key: str | None = None,
        service_id: str | None = None,
        granularity: str = "daily",
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[UsageRollup]:
        """One page of ``GET /usage/rollups/``: usage and cost per service (and customer)
        per day (``granularity="daily"``) or hour (``"hourly"``)."""
        path = self._with_query("/usage/rollups/", locals_of(locals()))
        return await self._page(path, UsageRollup, f"GET {path}")

    async def iter_usage_rollups(
        self,
        *,
        customer_key: str | None = None,
        service_id: str | None = None,
        granularity: str = "daily",
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[UsageRollup]:
        """Every rollup matching the filters, page after page."""
        first = await self.list_usage_rollups(**locals_of(locals()))
        async for rollup in self._iterate(first):
            yield rollup

    # -- costs -----------------------------------------------------------------------------

    async def list_cost_events(
        self,
        *,
        response_id: str | None = None,
        api_key_id: Iterable[str] | None = None,
        customer_key: Iterable[str] | None = None,
        service_key: Iterable[str] | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[CostEvent]:
        """One page of ``GET /costs/``: priced cost units. The list filters take several
        values (``customer_key=["acme", "globex"]``)."""
        path = self._with_query("/costs/", locals_of(locals()))
        return await self._page(path, CostEvent, f"GET {path}")

    async def iter_cost_events(
        self,
        *,
        response_id: str | None = None,
        api_key_id: Iterable[str] | None = None,
        customer_key: Iterable[str] | None = None,
        service_key: Iterable[str] | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CostEvent]:
        """Every cost event matching the filters, page after page."""
        first = await self.list_cost_events(**locals_of(locals()))
        async for event in self._iterate(first):
            yield event

    async def list_cost_events_by_response_id(self, response_id: str) -> list[CostEventRecord]:
        """``GET /cost-events/{response_id}``: the cost events of one tracked call, in full."""
        path = f"/cost-events/{_segment(response_id, 'response_id')}"
        return await self._list(path, CostEventRecord)

    # -- customers -------------------------------------------------------------------------

    async def list_customers(
        self,
        *,
        customer_key: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[Customer]:
        """One page of ``GET /customers/``."""
        path = self._with_query("/customers/", locals_of(locals()))
        return await self._page(path, Customer, f"GET {path}")

    async def iter_customers(
        self,
        *,
        customer_key: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Customer]:
        """Every customer matching the filters, page after page."""
        first = await self.list_customers(**locals_of(locals()))
        async for customer in self._iterate(first):
            yield customer

    async def create_customer(
        self,
        *,
        customer_key: str,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> Customer:
        """``POST /customers/``: a new customer, as the service stored it."""
        body = _body(locals_of(locals()), "customer")
        return await self._one("POST", "/customers/", Customer, body=body)

    async def get_customer(self, customer_id: str) -> Customer:
        """``GET /customers/{uuid}/``."""
        path = f"/customers/{_segment(customer_id, 'customer_id')}/"
        return await self._one("GET", path, Customer)

    async def update_customer(
        self,
        customer_id: str,
        *,
        customer_key: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> Customer:
        """``PUT /customers/{uuid}/``: the fields given change, the others stay."""
        body = _body(locals_of(locals(), "customer_id"), "customer")
        path = f"/customers/{_segment(customer_id, 'customer_id')}/"
        return await self._one("PUT", path, Customer, body=body)

    async def delete_customer(self, customer_id: str) -> None:
        """``DELETE /customers/{uuid}/``."""
        await self._call("DELETE", f"/customers/{_segment(customer_id, 'customer_id')}/")

    # -- catalogue -------------------------------------------------------------------------

    async def list_vendors(self) -> list[Vendor]:
        """``GET /vendors/``: the vendors the service prices."""
        return await self._list("/vendors/", Vendor)

    async def list_vendor_services(self, vendor: str) -> list[Service]:
        """``GET /services/?vendor=``: the services of one vendor (each names ``vendor``)."""
        path = self._with_query("/services/", {"vendor": vendor})
        data = await self._call("GET", path)
        if isinstance(data, list):
            data = [
                {**item, "vendor": item.get("vendor", vendor)} if isinstance(item, dict) else item
                for item in data
            ]
        return list(structure_answer(data, tuple[Service, ...], where=f"GET {path}"))

    # -- webhooks --------------------------------------------------------------------------

    async def list_webhook_endpoints(self, *, active_only: bool = False) -> WebhookList:
        """``GET /webhooks/``: the endpoints, with the total and active counts."""
        path = self._with_query("/webhooks/", {"active_only": active_only})
        return await self._one("GET", path, WebhookList)

    async def create_webhook_endpoint(
        self, *, url: str, secret: str, active: bool = True, tolerance: int = 300
    ) -> Webhook:
        """``POST /webhooks/``: the service will call ``url``, signing with ``secret``."""
        body = _body(locals_of(locals()), "webhook")
        return await self._one("POST", "/webhooks/", Webhook, body=body)

    async def get_webhook_endpoint(self, webhook_uuid: str) -> Webhook:
        """``GET /webhooks/{uuid}/``."""
        path = f"/webhooks/{_segment(webhook_uuid, 'webhook_uuid')}/"
        return await self._one("GET", path, Webhook)

    async def update_webhook_endpoint(
        self,
        webhook_uuid: str,
        *,
        url: str | None = None,
        secret: str | None = None,
        active: bool | None = None,
        tolerance: int | None = None,
    ) -> Webhook:
        """``PUT /webhooks/{uuid}/``: the fields given change, the others stay."""
        body = _body(locals_of(locals(), "webhook_uuid"), "webhook")
        path = f"/webhooks/{_segment(webhook_uuid, 'webhook_uuid')}/"
        return await self._one("PUT", path, Webhook, body=body)

    async def delete_webhook_endpoint(self, webhook_uuid: str) -> None:
        """``DELETE /webhooks/{uuid}/``."""
        await self._call("DELETE", f"/webhooks/{_segment(webhook_uuid, 'webhook_uuid')}/")

    # -- custom services -------------------------------------------------------------------

    async def list_custom_services(
        self,
        *,
        is_active: bool | None = None,
        is_deleted: bool | None = None,
        has_cost_units: bool | None = None,
    ) -> list[CustomServiceSummary]:
        """``GET /custom-services/``: your own priced services, in summary."""
        path = self._with_query("/custom-services/", locals_of(locals()))
        return await self._list(path, CustomServiceSummary)

    async def create_custom_service(
        self,
        *,
        custom_service_key: str,
        configuration: Mapping[str, Any],
        is_active: bool = True,
    ) -> CustomService:
        """``POST /custom-services/``: ``configuration`` holds ``cost_units`` and, optionally,
        ``mappings``, ``mapping_groups`` and ``exclusions``, as the service documents them."""
        body = _body(locals_of(locals()), "custom service")
        return await self._one("POST", "/custom-services/", CustomService, body=body)

    async def get_custom_service(self, uuid: str) -> CustomService:
        """``GET /custom-services/{uuid}/``."""
        path = f"/custom-services/{_segment(uuid, 'uuid')}/"
        return await self._one("GET", path, CustomService)

    async def update_custom_service(
        self,
        uuid: str,
        *,
        custom_service_key: str | None = None,
        configuration: Mapping[str, Any] | None = None,
        is_active: bool | None = None,
    ) -> CustomService:
        """``PUT /custom-services/{uuid}/``: the fields given change, the others stay."""
        body = _body(locals_of(locals(), "uuid"), "custom service")
        path = f"/custom-services/{_segment(uuid, 'uuid')}/"
        return await self._one("PUT", path, CustomService, body=body)

    async def delete_custom_service(self, uuid: str) -> None:
        """``DELETE /custom-services/{uuid}/``."""
        await self._call("DELETE", f"/custom-services/{_segment(uuid, 'uuid')}/")

    # -- usage limits ----------------------------------------------------------------------

    async def list_usage_limits(self) -> list[UsageLimit]:
        """``GET /usage-limits/``: your spending alerts and limits."""
        return await self._list("/usage-limits/", UsageLimit)

    async def create_usage_limit(
        self,
        *,
        threshold_type: str,
        amount: Decimal | int | float | str,
        period: str,
        service_key: str | None = None,
        client: str | None = None,
        team_uuid: str | None = None,
        api_key_uuid: str | None = None,
        notification_list: Iterable[str] | None = None,
        active: bool = True,
        expires_at: str | dt.datetime | None = None,
        limit_message: str | None = None,
    ) -> UsageLimit:
        """``POST /usage-limits/``: ``threshold_type`` ``"alert"`` or ``"limit"``,
        ``amount`` USD per ``period`` (``"day"`` or ``"month"``), for one service
        (``"vendor::model"``) and/or one customer (``client``) when given; ``expires_at``
        (ISO-8601) ends it early, ``limit_message`` is what a refused call is told."""
        fields = locals_of(locals())
        if isinstance(expires_at, dt.datetime):
            fields["expires_at"] = expires_at.isoformat()
        fields["amount"] = str(amount) if isinstance(amount, Decimal) else amount
        if notification_list is not None:
            fields["notification_list"] = list(notification_list)
        return await self._one("POST", "/usage-limits/", UsageLimit, body=_body(fields, "limit"))

    async def get_usage_limit(self, limit_id: str) -> UsageLimit:
        """``GET /usage-limits/{uuid}/``."""
        return await self._one(
            "GET", f"/usage-limits/{_segment(limit_id, 'limit_id')}/", UsageLimit
        )

    async def update_usage_limit(
        self,
        limit_id: str,
        *,
        threshold_type: str | None = None,
        amount: Decimal | int | float | str | None = None,
        period: str | None = None,
        service_key: str | None = None,
        client: str | None = None,
        notification_list: Iterable[str] | None = None,
        active: bool | None = None,
        api_key_uuid: str | None = None,
        expires_at: str | dt.datetime | None = None,
        limit_message: str | None = None,
    ) -> UsageLimit:
        """``PUT /usage-limits/{uuid}/``: the fields given change, the others stay."""
        fields = locals_of(locals(), "limit_id")
        if isinstance(expires_at, dt.datetime):
            fields["expires_at"] = expires_at.isoformat()
        if isinstance(amount, Decimal):
            fields["amount"] = str(amount)
        if notification_list is not None:
            fields["notification_list"] = list(notification_list)
        path = f"/usage-limits/{_segment(limit_id, 'limit_id')}/"
        return await self._one("PUT", path, UsageLimit, body=_body(fields, "limit"))

    async def delete_usage_limit(self, limit_id: str) -> None:
        """``DELETE /usage-limits/{uuid}/``."""
        await self._call("DELETE", f"/usage-limits/{_segment(limit_id, 'limit_id')}/")

    async def list_usage_limit_progress(self) -> list[UsageLimitProgress]:
        """``GET /usage-limits/progress/``: each limit with its spend in the current period."""
        return await self._list("/usage-limits/progress/", UsageLimitProgress)

    async def get_triggered_limits(self) -> dict[str, Any]:
        """``GET /triggered-limits``: the service's signed triggered-limits document, as sent."""
        data = await self._call("GET", "/triggered-limits")
        if not isinstance(data, dict):
            raise UnexpectedAnswerError("GET /triggered-limits: expected an object")
        return data

    # -- schema ----------------------------------------------------------------------------

    async def get_openapi_schema(self) -> dict[str, Any]:
        """``GET /openapi.json``: the service's OpenAPI document."""
        data = await self._call("GET", "/openapi.json")
        if not isinstance(data, dict):
            raise UnexpectedAnswerError("GET /openapi.json: expected an object")
        return data


def locals_of(names: Mapping[str, Any], *skip: str) -> dict[str, Any]:
    """A method's keyword arguments from its ``locals()`` (``self`` and ``skip`` left out)."""
    return {k: v for k, v in names.items() if k != "self" and k not in skip}
