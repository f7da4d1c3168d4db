"""The service's management API on the sync client: one portal call per method (layer 5).

:class:`ServiceApiSyncMethods` is mixed into :class:`~aicm._sync.client.CostManagerClient`;
each method runs its twin on :class:`~aicm._io.service_api.ServiceApiMethods` in the shared
runtime and takes the same arguments. An ``iter_*`` fetches one page per portal call, as
the caller consumes it.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

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
from .._io.service_api import DateLike, locals_of

if TYPE_CHECKING:
    from .._delivery.worker import SharedRuntime
    from .._io.http import AsyncCostManagerClient

__all__ = ["ServiceApiSyncMethods"]

_T = TypeVar("_T")
_kwargs = locals_of


class ServiceApiSyncMethods:
    """The sync twins of :class:`~aicm._io.service_api.ServiceApiMethods` (see there)."""

    if TYPE_CHECKING:
        _runtime: SharedRuntime

        def _live(self) -> AsyncCostManagerClient: ...

    def _run(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._runtime.call(functools.partial(method, *args, **kwargs))

    def _pages(self, page: Page[_T]) -> Iterator[_T]:
        current: Page[_T] | None = page
        while current is not None:
            yield from current.results
            current = self._run(self._live().next_page, current)

    def next_page(self, page: Page[_T]) -> Page[_T] | None:
        """The page after ``page``, or None when it is the last."""
        result: Page[_T] | None = self._run(self._live().next_page, page)
        return result

    # -- usage and costs -------------------------------------------------------------------

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
    ) -> Page[UsageEvent]:
        """One page of ``GET /usage/events/`` (filters: ``customer_key``, ``config_id``,
        ``service_id``, ``start_date``, ``end_date``, ``limit``, ``offset``)."""
        page: Page[UsageEvent] = self._run(self._live().list_usage_events, **_kwargs(locals()))
        return page

    def iter_usage_events(
        self,
        *,
        customer_key: str | None = None,
        config_id: str | None = None,
        service_id: str | None = None,
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
    ) -> Iterator[UsageEvent]:
        """Every usage event matching the filters, page after page."""
        return self._pages(self.list_usage_events(**_kwargs(locals())))

    def get_usage_event(self, event_id: str) -> UsageEvent:
        """``GET /usage/event/{event_id}/``."""
        event: UsageEvent = self._run(self._live().get_usage_event, event_id)
        return event

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
    ) -> Page[UsageRollup]:
        """One page of ``GET /usage/rollups/`` (``granularity="daily"`` or ``"hourly"``)."""
        page: Page[UsageRollup] = self._run(self._live().list_usage_rollups, **_kwargs(locals()))
        return page

    def iter_usage_rollups(
        self,
        *,
        customer_key: str | None = None,
        service_id: str | None = None,
        granularity: str = "daily",
        start_date: DateLike | None = None,
        end_date: DateLike | None = None,
        limit: int | None = None,
    ) -> Iterator[UsageRollup]:
        """Every rollup matching the filters, page after page."""
        return self._pages(self.list_usage_rollups(**_kwargs(locals())))

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
    ) -> Page[CostEvent]:
        """One page of ``GET /costs/`` (filters: ``response_id``, ``api_key_id``,
        ``customer_key``, ``service_key``, ``start_date``, ``end_date``)."""
        page: Page[CostEvent] = self._run(self._live().list_cost_events, **_kwargs(locals()))
        return page

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
    ) -> Iterator[CostEvent]:
        """Every cost event matching the filters, page after page."""
        return self._pages(self.list_cost_events(**_kwargs(locals())))

    def list_cost_events_by_response_id(self, response_id: str) -> list[CostEventRecord]:
        """``GET /cost-events/{response_id}``."""
        events: list[CostEventRecord] = self._run(
            self._live().list_cost_events_by_response_id, response_id
        )
        return events

    # -- customers -------------------------------------------------------------------------

    def list_customers(
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
        page: Page[Customer] = self._run(self._live().list_customers, **_kwargs(locals()))
        return page

    def iter_customers(
        self,
        *,
        customer_key: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Customer]:
        """Every customer matching the filters, page after page."""
        return self._pages(self.list_customers(**_kwargs(locals())))

    def create_customer(
        self,
        *,
        customer_key: str,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> Customer:
        """``POST /customers/``."""
        customer: Customer = self._run(
            self._live().create_customer,
            customer_key=customer_key,
            name=name,
            phone=phone,
            email=email,
        )
        return customer

    def get_customer(self, customer_id: str) -> Customer:
        """``GET /customers/{uuid}/``."""
        customer: Customer = self._run(self._live().get_customer, customer_id)
        return customer

    def update_customer(
        self,
        customer_id: str,
        *,
        customer_key: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> Customer:
        """``PUT /customers/{uuid}/``: the fields given change, the others stay."""
        customer: Customer = self._run(
            self._live().update_customer, customer_id, **_kwargs(locals(), "customer_id")
        )
        return customer

    def delete_customer(self, customer_id: str) -> None:
        """``DELETE /customers/{uuid}/``."""
        self._run(self._live().delete_customer, customer_id)

    # -- catalogue -------------------------------------------------------------------------

    def list_vendors(self) -> list[Vendor]:
        """``GET /vendors/``."""
        vendors: list[Vendor] = self._run(self._live().list_vendors)
        return vendors

    def list_vendor_services(self, vendor: str) -> list[Service]:
        """``GET /services/?vendor=``."""
        services: list[Service] = self._run(self._live().list_vendor_services, vendor)
        return services

    # -- webhooks --------------------------------------------------------------------------

    def list_webhook_endpoints(self, *, active_only: bool = False) -> WebhookList:
        """``GET /webhooks/``."""
        webhooks: WebhookList = self._run(
            self._live().list_webhook_endpoints, active_only=active_only
        )
        return webhooks

    def create_webhook_endpoint(
        self, *, url: str, secret: str, active: bool = True, tolerance: int = 300
    ) -> Webhook:
        """``POST /webhooks/``."""
        webhook: Webhook = self._run(
            self._live().create_webhook_endpoint,
            url=url,
            secret=secret,
            active=active,
            tolerance=tolerance,
        )
        return webhook

    def get_webhook_endpoint(self, webhook_uuid: str) -> Webhook:
        """``GET /webhooks/{uuid}/``."""
        webhook: Webhook = self._run(self._live().get_webhook_endpoint, webhook_uuid)
        return webhook

    def update_webhook_endpoint(
        self,
        webhook_uuid: str,
        *,
        url: str | None = None,
        secret: str | None = None,
        active: bool | None = None,
        tolerance: int | None = None,
    ) -> Webhook:
        """``PUT /webhooks/{uuid}/``: the fields given change, the others stay."""
        webhook: Webhook = self._run(
            self._live().update_webhook_endpoint, webhook_uuid, **_kwargs(locals(), "webhook_uuid")
        )
        return webhook

    def delete_webhook_endpoint(self, webhook_uuid: str) -> None:
        """``DELETE /webhooks/{uuid}/``."""
        self._run(self._live().delete_webhook_endpoint, webhook_uuid)

    # -- custom services -------------------------------------------------------------------

    def list_custom_services(
        self,
        *,
        is_active: bool | None = None,
        is_deleted: bool | None = None,
        has_cost_units: bool | None = None,
    ) -> list[CustomServiceSummary]:
        """``GET /custom-services/`` (filters: ``is_active``, ``is_deleted``,
        ``has_cost_units``)."""
        services: list[CustomServiceSummary] = self._run(
            self._live().list_custom_services, **_kwargs(locals())
        )
        return services

    def create_custom_service(
        self,
        *,
        custom_service_key: str,
        configuration: Mapping[str, Any],
        is_active: bool = True,
    ) -> CustomService:
        """``POST /custom-services/``."""
        service: CustomService = self._run(
            self._live().create_custom_service,
            custom_service_key=custom_service_key,
            configuration=configuration,
            is_active=is_active,
        )
        return service

    def get_custom_service(self, uuid: str) -> CustomService:
        """``GET /custom-services/{uuid}/``."""
        service: CustomService = self._run(self._live().get_custom_service, uuid)
        return service

    def update_custom_service(
        self,
        uuid: str,
        *,
        custom_service_key: str | None = None,
        configuration: Mapping[str, Any] | None = None,
        is_active: bool | None = None,
    ) -> CustomService:
        """``PUT /custom-services/{uuid}/``: the fields given change, the others stay."""
        service: CustomService = self._run(
            self._live().update_custom_service, uuid, **_kwargs(locals(), "uuid")
        )
        return service

    def delete_custom_service(self, uuid: str) -> None:
        """``DELETE /custom-services/{uuid}/``."""
        self._run(self._live().delete_custom_service, uuid)

    # -- usage limits ----------------------------------------------------------------------

    def list_usage_limits(self) -> list[UsageLimit]:
        """``GET /usage-limits/``."""
        limits: list[UsageLimit] = self._run(self._live().list_usage_limits)
        return limits

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
    ) -> UsageLimit:
        """``POST /usage-limits/`` (``threshold_type``, ``amount``, ``period``, ...)."""
        limit: UsageLimit = self._run(self._live().create_usage_limit, **_kwargs(locals()))
        return limit

    def get_usage_limit(self, limit_id: str) -> UsageLimit:
        """``GET /usage-limits/{uuid}/``."""
        limit: UsageLimit = self._run(self._live().get_usage_limit, limit_id)
        return limit

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
    ) -> UsageLimit:
        """``PUT /usage-limits/{uuid}/``: the fields given change, the others stay."""
        limit: UsageLimit = self._run(
            self._live().update_usage_limit, limit_id, **_kwargs(locals(), "limit_id")
        )
        return limit

    def delete_usage_limit(self, limit_id: str) -> None:
        """``DELETE /usage-limits/{uuid}/``."""
        self._run(self._live().delete_usage_limit, limit_id)

    def list_usage_limit_progress(self) -> list[UsageLimitProgress]:
        """``GET /usage-limits/progress/``."""
        progress: list[UsageLimitProgress] = self._run(self._live().list_usage_limit_progress)
        return progress

    def get_triggered_limits(self) -> dict[str, Any]:
        """``GET /triggered-limits``."""
        document: dict[str, Any] = self._run(self._live().get_triggered_limits)
        return document

    # -- schema ----------------------------------------------------------------------------

    def get_openapi_schema(self) -> dict[str, Any]:
        """``GET /openapi.json``."""
        schema: dict[str, Any] = self._run(self._live().get_openapi_schema)
        return schema
