"""The service's management API on the async client: usage, costs, customers, limits, ... (layer 2).

`ServiceApiMethods` declares each method; mixed into `AsyncCostManagerClient`, it is sent
by the client's `_send()`. Reads, updates and deletes are retried on a transient failure
(5xx, 429, no answer) with the delivery backoff settings; a create is sent once, so a
retry never makes a second customer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

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
)
from .api_calls import (
    Api,
    Call,
    DateLike,
    PagesApi,
    Reader,
    document,
    get,
    items,
    model,
    nothing,
    page,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DateLike", "ServiceApiMethods"]

# The filters of a listing, for its ``list_*`` page and its ``iter_*`` walk (no ``offset``);
# None means "not filtered".


class _Window(TypedDict, total=False):
    start_date: DateLike | None
    end_date: DateLike | None
    limit: int | None


class _RollupFilters(_Window, total=False):
    customer_key: str | None
    service_id: str | None


class _UsageEventFilters(_RollupFilters, total=False):
    config_id: str | None


class _CostEventFilters(_Window, total=False):
    response_id: str | None
    api_key_id: Iterable[str] | None
    customer_key: Iterable[str] | None
    service_key: Iterable[str] | None


class _CustomerFields(TypedDict, total=False):
    """A customer's fields: the filters of its listing, and what an update may change."""

    customer_key: str | None
    name: str | None
    phone: str | None
    email: str | None


class _CustomerFilters(_CustomerFields, total=False):
    limit: int | None


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


class ServiceApiMethods:
    """The service's API beyond ingest; mixed into ``AsyncCostManagerClient``.

    Each method is a declaration: its signature, and the `Call` it makes (method,
    path, arguments, how to read the answer); the client's `_send()` does the rest.
    """

    # -- usage -----------------------------------------------------------------------------

    @Api
    def list_usage_events(
        self, *, offset: int | None = None, **filters: Unpack[_UsageEventFilters]
    ) -> Call[Page[UsageEvent]]:
        """One page of ``GET /usage/events/``: the usage records the service received."""
        return get("/usage/events/", {**filters, "offset": offset}, page(UsageEvent))

    @PagesApi
    def iter_usage_events(self, **filters: Unpack[_UsageEventFilters]) -> Call[Page[UsageEvent]]:
        """Every usage event matching the filters, page after page."""
        return get("/usage/events/", filters, page(UsageEvent))

    @Api
    def get_usage_event(self, event_id: str) -> Call[UsageEvent]:
        """``GET /usage/event/{event_id}/``; [`NotFoundError`][aicm.NotFoundError] when there is
        none."""
        return get("/usage/event/{event_id}/", locals(), model(UsageEvent))

    @Api
    def list_usage_rollups(
        self,
        *,
        granularity: str = "daily",
        offset: int | None = None,
        **filters: Unpack[_RollupFilters],
    ) -> Call[Page[UsageRollup]]:
        """One page of ``GET /usage/rollups/``: usage and cost per service (and customer)
        per day (``granularity="daily"``) or hour (``"hourly"``)."""
        arguments = {**filters, "granularity": granularity, "offset": offset}
        return get("/usage/rollups/", arguments, page(UsageRollup))

    @PagesApi
    def iter_usage_rollups(
        self, *, granularity: str = "daily", **filters: Unpack[_RollupFilters]
    ) -> Call[Page[UsageRollup]]:
        """Every rollup matching the filters, page after page."""
        return get("/usage/rollups/", {**filters, "granularity": granularity}, page(UsageRollup))

    # -- costs -----------------------------------------------------------------------------

    @Api
    def list_cost_events(
        self, *, offset: int | None = None, **filters: Unpack[_CostEventFilters]
    ) -> Call[Page[CostEvent]]:
        """One page of ``GET /costs/``: priced cost units. The list filters take several
        values (``customer_key=["acme", "globex"]``)."""
        return get("/costs/", {**filters, "offset": offset}, page(CostEvent))

    @PagesApi
    def iter_cost_events(self, **filters: Unpack[_CostEventFilters]) -> Call[Page[CostEvent]]:
        """Every cost event matching the filters, page after page."""
        return get("/costs/", filters, page(CostEvent))

    @Api
    def list_cost_events_by_response_id(self, response_id: str) -> Call[list[CostEventRecord]]:
        """``GET /cost-events/{response_id}``: the cost events of one tracked call, in full."""
        return get("/cost-events/{response_id}", locals(), items(CostEventRecord))

    # -- customers -------------------------------------------------------------------------

    @Api
    def list_customers(
        self, *, offset: int | None = None, **filters: Unpack[_CustomerFilters]
    ) -> Call[Page[Customer]]:
        """One page of ``GET /customers/``."""
        return get("/customers/", {**filters, "offset": offset}, page(Customer))

    @PagesApi
    def iter_customers(self, **filters: Unpack[_CustomerFilters]) -> Call[Page[Customer]]:
        """Every customer matching the filters, page after page."""
        return get("/customers/", filters, page(Customer))

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
        return get("/customers/{customer_id}/", locals(), model(Customer))

    @Api
    def update_customer(
        self, customer_id: str, **fields: Unpack[_CustomerFields]
    ) -> Call[Customer]:
        """``PUT /customers/{uuid}/``: the fields given change, the others stay."""
        arguments = {**fields, "customer_id": customer_id}
        return Call("PUT", "/customers/{customer_id}/", arguments, model(Customer), "customer")

    @Api
    def delete_customer(self, customer_id: str) -> Call[None]:
        """``DELETE /customers/{uuid}/``."""
        return Call("DELETE", "/customers/{customer_id}/", locals(), nothing)

    # -- catalogue -------------------------------------------------------------------------

    @Api
    def list_vendors(self) -> Call[list[Vendor]]:
        """``GET /vendors/``: the vendors the service prices."""
        return get("/vendors/", {}, items(Vendor))

    @Api
    def list_vendor_services(self, vendor: str) -> Call[list[Service]]:
        """``GET /services/?vendor=``: the services of one vendor (each names ``vendor``)."""
        return get("/services/", {"vendor": vendor}, _services_of(vendor))

    # -- webhooks --------------------------------------------------------------------------

    @Api
    def list_webhook_endpoints(self, *, active_only: bool = False) -> Call[WebhookList]:
        """``GET /webhooks/``: the endpoints, with the total and active counts."""
        return get("/webhooks/", locals(), model(WebhookList))

    @Api
    def create_webhook_endpoint(
        self, *, url: str, secret: str, active: bool = True, tolerance: int = 300
    ) -> Call[Webhook]:
        """``POST /webhooks/``: the service will call ``url``, signing with ``secret``."""
        return Call("POST", "/webhooks/", locals(), model(Webhook), "webhook")

    @Api
    def get_webhook_endpoint(self, webhook_uuid: str) -> Call[Webhook]:
        """``GET /webhooks/{uuid}/``."""
        return get("/webhooks/{webhook_uuid}/", locals(), model(Webhook))

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
        return get("/custom-services/", locals(), items(CustomServiceSummary))

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
        return get("/custom-services/{uuid}/", locals(), model(CustomService))

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
        return get("/usage-limits/", {}, items(UsageLimit))

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
        return get("/usage-limits/{limit_id}/", locals(), model(UsageLimit))

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
        return get("/usage-limits/progress/", {}, items(UsageLimitProgress))

    @Api
    def get_triggered_limits(self) -> Call[dict[str, Any]]:
        """``GET /triggered-limits``: the service's signed triggered-limits document, as sent."""
        return get("/triggered-limits", {}, document)

    # -- schema ----------------------------------------------------------------------------

    @Api
    def get_openapi_schema(self) -> Call[dict[str, Any]]:
        """``GET /openapi.json``: the service's OpenAPI document."""
        return get("/openapi.json", {}, document)
