"""The service's management API on the async client: usage, costs, customers, limits, ... (layer 2).

:class:`ServiceApiMethods` is mixed into :class:`~aicm._io.http.AsyncCostManagerClient`, so
these calls share its settings, connection pool, API key and error mapping. Reads, updates
and deletes are retried on a transient failure (5xx, 429, no answer) with the delivery
backoff settings; a create is sent once, so a retry never makes a second customer.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload
from urllib.parse import quote, urlencode, urlsplit

import anyio
import attrs
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

__all__ = ["API_ATTEMPTS", "Api", "Call", "DateLike", "PagesApi", "ServiceApiMethods"]

_T = TypeVar("_T")
_R = TypeVar("_R")
_P = ParamSpec("_P")

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


def _field(value: Any) -> Any:
    # Money as the exact string, a time as ISO-8601, any other iterable of values as a list.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping, list)):
        return list(value)
    return value


def _body(fields: Mapping[str, Any], what: str) -> bytes:
    plain = to_plain({k: _field(v) for k, v in fields.items() if v is not None}, field=what)
    return dumps(plain).encode()


# -- what a method declares --------------------------------------------------------------------

Reader = Callable[[Any, str], _R]
"""Reads a decoded answer (the second argument names the request, for errors)."""


@attrs.frozen
class Call(Generic[_R]):
    """One request of the management API, as a method declares it.

    ``path`` names its id segments ``{like_this}``; they are taken from ``arguments``
    (the method's ``locals()``) and escaped. The other arguments that are not None go in
    the query string of a GET or DELETE, in the JSON body (named ``what`` in errors) of a
    POST or PUT. ``read`` turns the decoded answer into the method's result. A POST is
    sent once (a retry could create a second object); other methods are retried.
    """

    method: str
    path: str
    arguments: Mapping[str, Any]
    read: Reader[_R]
    what: str = "body"

    def target(self) -> tuple[str, bytes | None]:
        """The path (with its query) and the body to send."""
        rest = {k: v for k, v in self.arguments.items() if k != "self"}
        segments = {
            name: _segment(rest.pop(name), name)
            for name in list(rest)
            if "{" + name + "}" in self.path
        }
        path = self.path.format(**segments)
        if self.method in ("POST", "PUT"):
            return path, _body(rest, self.what)
        query = _query(rest)
        return (f"{path}?{query}" if query else path), None


def model(cls: type[_T]) -> Reader[_T]:
    """Read an answer as one ``cls``."""
    return lambda data, where: structure_answer(data, cls, where=where)


def items(cls: type[_T]) -> Reader[list[_T]]:
    """Read an answer as a list of ``cls``."""
    many: Any = tuple[cls, ...]  # type: ignore[valid-type]
    return lambda data, where: list(structure_answer(data, many, where=where))


def page(cls: type[_T]) -> Reader[Page[_T]]:
    """Read a paginated answer of ``cls``."""
    return lambda data, where: structure_page(data, cls, where=where)


def document(data: Any, where: str) -> dict[str, Any]:
    """Read an answer as a JSON object, as sent."""
    if not isinstance(data, dict):
        raise UnexpectedAnswerError(f"{where}: expected an object")
    return data


def nothing(data: Any, where: str) -> None:
    """Ignore the answer (a delete's)."""


def _services_of(vendor: str) -> Reader[list[Service]]:
    read = items(Service)

    def services(data: Any, where: str) -> list[Service]:
        if isinstance(data, list):  # each service names the vendor asked about
            data = [
                {**item, "vendor": item.get("vendor", vendor)} if isinstance(item, dict) else item
                for item in data
            ]
        return read(data, where)

    return services


def _signature(declare: Callable[..., Any]) -> inspect.Signature:
    """A declaration's signature as its method's callers see it: no ``self``, no ``Call``."""
    signature = inspect.signature(declare)
    return signature.replace(
        parameters=list(signature.parameters.values())[1:],
        return_annotation=inspect.Signature.empty,
    )


class Api(Generic[_P, _R]):
    """A method of the API from its declaration (a function returning a :class:`Call`):
    on an instance, the coroutine function that sends the call and reads the answer."""

    def __init__(self, declare: Callable[Concatenate[Any, _P], Call[_R]]) -> None:
        self.declare = declare
        self.__doc__ = declare.__doc__
        self.signature = _signature(declare)

    @overload
    def __get__(self, instance: None, owner: type) -> Api[_P, _R]: ...
    @overload
    def __get__(
        self, instance: ServiceApiMethods, owner: type
    ) -> Callable[_P, Coroutine[Any, Any, _R]]: ...
    def __get__(self, instance: ServiceApiMethods | None, owner: type) -> Any:
        if instance is None:
            return self
        declare = self.declare

        @functools.wraps(declare)
        async def method(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            return await instance._send(declare(instance, *args, **kwargs))

        method.__signature__ = self.signature  # type: ignore[attr-defined]
        return method


class PagesApi(Generic[_P, _T]):
    """An ``iter_*`` method from the declaration of its first page: on an instance, an
    async iterator over every item, fetching the next page as the caller reaches it."""

    def __init__(self, declare: Callable[Concatenate[Any, _P], Call[Page[_T]]]) -> None:
        self.declare = declare
        self.__doc__ = declare.__doc__
        self.signature = _signature(declare)

    @overload
    def __get__(self, instance: None, owner: type) -> PagesApi[_P, _T]: ...
    @overload
    def __get__(
        self, instance: ServiceApiMethods, owner: type
    ) -> Callable[_P, AsyncIterator[_T]]: ...
    def __get__(self, instance: ServiceApiMethods | None, owner: type) -> Any:
        if instance is None:
            return self
        declare = self.declare

        @functools.wraps(declare)
        async def method(*args: _P.args, **kwargs: _P.kwargs) -> AsyncIterator[_T]:
            first = await instance._send(declare(instance, *args, **kwargs))
            async for item in instance._iterate(first):
                yield item

        method.__signature__ = self.signature  # type: ignore[attr-defined]
        return method


def _get(path: str, arguments: Mapping[str, Any], read: Reader[_R]) -> Call[_R]:
    return Call("GET", path, arguments, read)


class ServiceApiMethods:
    """The service's API beyond ingest; mixed into ``AsyncCostManagerClient``.

    Each method is a declaration: its signature, and the :class:`Call` it makes (method,
    path, arguments, how to read the answer); :meth:`_send` does the rest.
    """

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

    async def _send(self, call: Call[_R]) -> _R:
        """Send one declared call; its answer as the declaration reads it."""
        path, body = call.target()
        data = await self._call(call.method, path, body=body, retry=call.method != "POST")
        return call.read(data, f"{call.method} {path}")

    async def next_page(self, page: Page[_T]) -> Page[_T] | None:
        """The page after ``page`` (its ``next`` link), or None when it is the last."""
        if page.next is None:
            return None
        link = self._follow(page.next)
        return structure_page(await self._call("GET", link), page.item_type, where=f"GET {link}")

    async def _iterate(self, page: Page[_T]) -> AsyncIterator[_T]:
        current: Page[_T] | None = page
        while current is not None:
            for item in current.results:
                yield item
            current = await self.next_page(current)

    # -- usage -----------------------------------------------------------------------------

    @Api
    def list_usage_events(
        self,
        *,
        customer_key: str | None = None,
        config_id: str | None = None,
        service_id: str | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Call[Page[UsageEvent]]:
        """One page of ``GET /usage/events/``: the usage records the service received."""
        return _get("/usage/events/", locals(), page(UsageEvent))

    @PagesApi
    def iter_usage_events(
        self,
        *,
        customer_key: str | None = None,
        config_id: str | None = None,
        service_id: str | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
    ) -> Call[Page[UsageEvent]]:
        """Every usage event matching the filters, page after page."""
        return _get("/usage/events/", locals(), page(UsageEvent))

    @Api
    def get_usage_event(self, event_id: str) -> Call[UsageEvent]:
        """``GET /usage/event/{event_id}/``; :class:`NotFoundError` when there is none."""
        return _get("/usage/event/{event_id}/", locals(), model(UsageEvent))

    @Api
    def list_usage_rollups(
        self,
        *,
        customer_key: str | None = None,
        service_id: str | None = None,
        granularity: str = "daily",
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Call[Page[UsageRollup]]:
        """One page of ``GET /usage/rollups/``: usage and cost per service (and customer)
        per day (``granularity="daily"``) or hour (``"hourly"``)."""
        return _get("/usage/rollups/", locals(), page(UsageRollup))

    @PagesApi
    def iter_usage_rollups(
        self,
        *,
        customer_key: str | None = None,
        service_id: str | None = None,
        granularity: str = "daily",
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
    ) -> Call[Page[UsageRollup]]:
        """Every rollup matching the filters, page after page."""
        return _get("/usage/rollups/", locals(), page(UsageRollup))

    # -- costs -----------------------------------------------------------------------------

    @Api
    def list_cost_events(
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
    ) -> Call[Page[CostEvent]]:
        """One page of ``GET /costs/``: priced cost units. The list filters take several
        values (``customer_key=["acme", "globex"]``)."""
        return _get("/costs/", locals(), page(CostEvent))

    @PagesApi
    def iter_cost_events(
        self,
        *,
        response_id: str | None = None,
        api_key_id: Iterable[str] | None = None,
        customer_key: Iterable[str] | None = None,
        service_key: Iterable[str] | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
    ) -> Call[Page[CostEvent]]:
        """Every cost event matching the filters, page after page."""
        return _get("/costs/", locals(), page(CostEvent))

    @Api
    def list_cost_events_by_response_id(self, response_id: str) -> Call[list[CostEventRecord]]:
        """``GET /cost-events/{response_id}``: the cost events of one tracked call, in full."""
        return _get("/cost-events/{response_id}", locals(), items(CostEventRecord))

    # -- customers -------------------------------------------------------------------------

    @Api
    def list_customers(
        self,
        *,
        customer_key: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Call[Page[Customer]]:
        """One page of ``GET /customers/``."""
        return _get("/customers/", locals(), page(Customer))

    @PagesApi
    def iter_customers(
        self,
        *,
        customer_key: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        limit: int | None = None,
    ) -> Call[Page[Customer]]:
        """Every customer matching the filters, page after page."""
        return _get("/customers/", locals(), page(Customer))

    @Api
    def create_customer(
        self,
        *,
        customer_key: str,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> Call[Customer]:
        """``POST /customers/``: a new customer, as the service stored it."""
        return Call("POST", "/customers/", locals(), model(Customer), "customer")

    @Api
    def get_customer(self, customer_id: str) -> Call[Customer]:
        """``GET /customers/{uuid}/``."""
        return _get("/customers/{customer_id}/", locals(), model(Customer))

    @Api
    def update_customer(
        self,
        customer_id: str,
        *,
        customer_key: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> Call[Customer]:
        """``PUT /customers/{uuid}/``: the fields given change, the others stay."""
        return Call("PUT", "/customers/{customer_id}/", locals(), model(Customer), "customer")

    @Api
    def delete_customer(self, customer_id: str) -> Call[None]:
        """``DELETE /customers/{uuid}/``."""
        return Call("DELETE", "/customers/{customer_id}/", locals(), nothing)

    # -- catalogue -------------------------------------------------------------------------

    @Api
    def list_vendors(self) -> Call[list[Vendor]]:
        """``GET /vendors/``: the vendors the service prices."""
        return _get("/vendors/", {}, items(Vendor))

    @Api
    def list_vendor_services(self, vendor: str) -> Call[list[Service]]:
        """``GET /services/?vendor=``: the services of one vendor (each names ``vendor``)."""
        return _get("/services/", {"vendor": vendor}, _services_of(vendor))

    # -- webhooks --------------------------------------------------------------------------

    @Api
    def list_webhook_endpoints(self, *, active_only: bool = False) -> Call[WebhookList]:
        """``GET /webhooks/``: the endpoints, with the total and active counts."""
        return _get("/webhooks/", locals(), model(WebhookList))

    @Api
    def create_webhook_endpoint(
        self, *, url: str, secret: str, active: bool = True, tolerance: int = 300
    ) -> Call[Webhook]:
        """``POST /webhooks/``: the service will call ``url``, signing with ``secret``."""
        return Call("POST", "/webhooks/", locals(), model(Webhook), "webhook")

    @Api
    def get_webhook_endpoint(self, webhook_uuid: str) -> Call[Webhook]:
        """``GET /webhooks/{uuid}/``."""
        return _get("/webhooks/{webhook_uuid}/", locals(), model(Webhook))

    @Api
    def update_webhook_endpoint(
        self,
        webhook_uuid: str,
        *,
        url: str | None = None,
        secret: str | None = None,
        active: bool | None = None,
        tolerance: int | None = None,
    ) -> Call[Webhook]:
        """``PUT /webhooks/{uuid}/``: the fields given change, the others stay."""
        return Call("PUT", "/webhooks/{webhook_uuid}/", locals(), model(Webhook), "webhook")

    @Api
    def delete_webhook_endpoint(self, webhook_uuid: str) -> Call[None]:
        """``DELETE /webhooks/{uuid}/``."""
        return Call("DELETE", "/webhooks/{webhook_uuid}/", locals(), nothing)

    # -- custom services -------------------------------------------------------------------

    @Api
    def list_custom_services(
        self,
        *,
        is_active: bool | None = None,
        is_deleted: bool | None = None,
        has_cost_units: bool | None = None,
    ) -> Call[list[CustomServiceSummary]]:
        """``GET /custom-services/``: your own priced services, in summary."""
        return _get("/custom-services/", locals(), items(CustomServiceSummary))

    @Api
    def create_custom_service(
        self,
        *,
        custom_service_key: str,
        configuration: Mapping[str, Any],
        is_active: bool = True,
    ) -> Call[CustomService]:
        """``POST /custom-services/``: ``configuration`` holds ``cost_units`` and, optionally,
        ``mappings``, ``mapping_groups`` and ``exclusions``, as the service documents them."""
        return Call("POST", "/custom-services/", locals(), model(CustomService), "custom service")

    @Api
    def get_custom_service(self, uuid: str) -> Call[CustomService]:
        """``GET /custom-services/{uuid}/``."""
        return _get("/custom-services/{uuid}/", locals(), model(CustomService))

    @Api
    def update_custom_service(
        self,
        uuid: str,
        *,
        custom_service_key: str | None = None,
        configuration: Mapping[str, Any] | None = None,
        is_active: bool | None = None,
    ) -> Call[CustomService]:
        """``PUT /custom-services/{uuid}/``: the fields given change, the others stay."""
        return Call(
            "PUT", "/custom-services/{uuid}/", locals(), model(CustomService), "custom service"
        )

    @Api
    def delete_custom_service(self, uuid: str) -> Call[None]:
        """``DELETE /custom-services/{uuid}/``."""
        return Call("DELETE", "/custom-services/{uuid}/", locals(), nothing)

    # -- usage limits ----------------------------------------------------------------------

    @Api
    def list_usage_limits(self) -> Call[list[UsageLimit]]:
        """``GET /usage-limits/``: your spending alerts and limits."""
        return _get("/usage-limits/", {}, items(UsageLimit))

    @Api
    def create_usage_limit(
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
    ) -> Call[UsageLimit]:
        """``POST /usage-limits/``: ``threshold_type`` ``"alert"`` or ``"limit"``,
        ``amount`` USD per ``period`` (``"day"`` or ``"month"``), for one service
        (``"vendor::model"``) and/or one customer (``client``) when given; ``expires_at``
        (ISO-8601) ends it early, ``limit_message`` is what a refused call is told."""
        return Call("POST", "/usage-limits/", locals(), model(UsageLimit), "limit")

    @Api
    def get_usage_limit(self, limit_id: str) -> Call[UsageLimit]:
        """``GET /usage-limits/{uuid}/``."""
        return _get("/usage-limits/{limit_id}/", locals(), model(UsageLimit))

    @Api
    def update_usage_limit(
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
    ) -> Call[UsageLimit]:
        """``PUT /usage-limits/{uuid}/``: the fields given change, the others stay."""
        return Call("PUT", "/usage-limits/{limit_id}/", locals(), model(UsageLimit), "limit")

    @Api
    def delete_usage_limit(self, limit_id: str) -> Call[None]:
        """``DELETE /usage-limits/{uuid}/``."""
        return Call("DELETE", "/usage-limits/{limit_id}/", locals(), nothing)

    @Api
    def list_usage_limit_progress(self) -> Call[list[UsageLimitProgress]]:
        """``GET /usage-limits/progress/``: each limit with its spend in the current period."""
        return _get("/usage-limits/progress/", {}, items(UsageLimitProgress))

    @Api
    def get_triggered_limits(self) -> Call[dict[str, Any]]:
        """``GET /triggered-limits``: the service's signed triggered-limits document, as sent."""
        return _get("/triggered-limits", {}, document)

    # -- schema ----------------------------------------------------------------------------

    @Api
    def get_openapi_schema(self) -> Call[dict[str, Any]]:
        """``GET /openapi.json``: the service's OpenAPI document."""
        return _get("/openapi.json", {}, document)
