"""The service's management API on the collector (layer 6): usage, costs, customers, ...

What the collector answers is computed from what it stored (`._usage`). Customers,
webhooks and custom services are kept as given in the collector's SQLite store, so they
outlive a restart on the same file (they are cleared with the records). Vendors and
services come from the price data (the table, genai-prices' models) and the records
received. Answers have the shapes of the service's own API, so its SDK parses them:
pagination by ``limit``/``offset`` with absolute ``next`` links, ``PUT`` as a partial
update, boolean filters as ``True``/``False``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aicm._version import __version__
from aicm.collector._api_requests import (
    CUSTOM_SERVICE_FIELDS,
    CUSTOMER_FIELDS,
    WEBHOOK_FIELDS,
    ApiError,
    ApiObjects,
    answer_response,
    check_fields,
    cost_units,
    date_window,
    flag,
    json_response,
    matches,
    object_body,
    paginate,
)
from aicm.collector._usage import (
    API_KEY_ID,
    TEAM_NAME,
    TEAM_UUID,
    CostLine,
    Event,
    genai_models,
    iso_time,
    now_iso,
    rollups,
    stable_id,
    usage_events,
    vendor_of,
)

if TYPE_CHECKING:
    from aicm.collector._collector import Collector

__all__ = ["service_api_routes"]


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
        within = date_window(request)
        events = [
            e.wire()
            for e in self.events()
            if matches(params.get("customer_key"), e.customer_key)
            and matches(params.get("config_id"), e.config_id)
            and matches(params.get("service_id"), e.service_key)
            and within(e.moment)
        ]
        return paginate(request, events)

    async def usage_event(self, request: Request) -> Any:
        wanted = request.path_params["event_id"]
        for event in self.events():
            if event.event_id == wanted:
                return event.wire()
        raise ApiError(404, f"no usage event {wanted!r}")

    async def usage_rollups(self, request: Request) -> Any:
        params = request.query_params
        within = date_window(request)
        granularity = params.get("granularity") or "daily"
        if granularity not in ("daily", "hourly"):
            raise ApiError(422, f"granularity: expected daily or hourly, got {granularity!r}")
        events = [
            e
            for e in self.events()
            if matches(params.get("customer_key"), e.customer_key)
            and matches(params.get("service_id"), e.service_key)
            and within(e.moment)
        ]
        return paginate(request, rollups(events, hourly=granularity == "hourly"))

    # costs

    async def costs(self, request: Request) -> Any:
        params = request.query_params
        within = date_window(request)
        customers = params.getlist("customer_key")
        services = params.getlist("service_key")
        keys = params.getlist("api_key_id")
        items = [
            _cost(e, line)
            for e in self.events()
            if matches(params.get("response_id"), e.response_id)
            and (not customers or e.customer_key in customers)
            and (not services or e.service_key in services)
            and (not keys or API_KEY_ID in keys)
            and within(e.moment)
            for line in e.costs
        ]
        return paginate(request, items)

    async def cost_events(self, request: Request) -> Any:
        wanted = request.path_params["response_id"]
        return [
            {
                "uuid": stable_id("cost", e.event_id, line.cost_unit_id),
                "event_id": e.event_id,
                "team_id": TEAM_UUID,
                "api_key_id": API_KEY_ID,
                "timestamp": iso_time(e.moment),
                "customer_key": e.customer_key,
                "response_id": e.response_id,
                **_cost(e, line),
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
            data = await object_body(request)
            check_fields(data, CUSTOMER_FIELDS, required=("customer_key",))
            key = str(uuid.uuid4())
            customer = {"uuid": key, **{k: data.get(k) for k in CUSTOMER_FIELDS}}
            self.objects.put("customers", key, customer, unique=("customer_key", "customer"))
            return 201, customer
        params = request.query_params
        name = (params.get("name") or "").lower()
        found = [
            c
            for c in self.objects.all("customers")
            if matches(params.get("customer_key"), c["customer_key"])
            and matches(params.get("phone"), c.get("phone"))
            and matches(params.get("email"), c.get("email"))
            and (not name or name in (c.get("name") or "").lower())
        ]
        return paginate(request, found)

    async def customer(self, request: Request) -> Any:
        return await self._one(request, "customers", "customer_id", "customer", self._customer_put)

    def _customer_put(self, current: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        check_fields(data, CUSTOMER_FIELDS)
        return {**current, **{k: v for k, v in data.items() if v is not None}}

    # webhooks

    async def webhooks(self, request: Request) -> Any:
        if request.method == "POST":
            data = await object_body(request)
            check_fields(data, WEBHOOK_FIELDS, required=("url", "secret"))
            webhook = _created(
                url=data["url"],
                secret=data["secret"],
                active=data.get("active", True),
                tolerance=data.get("tolerance", 300),
            )
            self.objects.put("webhooks", webhook["uuid"], webhook)
            return 201, webhook
        every = self.objects.all("webhooks")
        active = [w for w in every if w["active"]]
        return {
            "endpoints": active if flag(request, "active_only") else every,
            "total_count": len(every),
            "active_count": len(active),
        }

    async def webhook(self, request: Request) -> Any:
        return await self._one(request, "webhooks", "webhook_uuid", "webhook", self._webhook_put)

    def _webhook_put(self, current: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        check_fields(data, WEBHOOK_FIELDS)
        changes = {k: v for k, v in data.items() if v is not None}
        return {**current, **changes, "updated_at": now_iso()}

    # custom services

    async def custom_services(self, request: Request) -> Any:
        if request.method == "POST":
            data = await object_body(request)
            check_fields(
                data, CUSTOM_SERVICE_FIELDS, required=("custom_service_key", "configuration")
            )
            service = _created(
                custom_service_key=data["custom_service_key"],
                configuration=data["configuration"],
                is_active=data.get("is_active", True),
                is_deleted=False,
                cost_units=cost_units(data["configuration"]),
                team_name=TEAM_NAME,
            )
            self.objects.put(
                "custom_services",
                service["uuid"],
                service,
                unique=("custom_service_key", "custom service"),
            )
            return 201, service
        wanted = {
            name: flag(request, name) for name in ("is_active", "is_deleted", "has_cost_units")
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
        check_fields(data, CUSTOM_SERVICE_FIELDS)
        changes = {k: v for k, v in data.items() if v is not None}
        updated = {**current, **changes, "updated_at": now_iso()}
        if "configuration" in changes:
            updated["cost_units"] = cost_units(changes["configuration"])
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
            updated = put(current, await object_body(request))
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
        return [
            {"uuid": stable_id("vendor", name), "name": name} for name in sorted(self._services())
        ]

    async def services(self, request: Request) -> Any:
        vendor = request.query_params.get("vendor")
        if not vendor:
            raise ApiError(422, "vendor: required")
        names = self._services().get(vendor, set())
        return [
            {
                "uuid": stable_id("service", name),
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


def _created(**fields: Any) -> dict[str, Any]:
    """A new object of the team: a fresh uuid, ``fields``, and its creation time."""
    now = now_iso()
    return {
        "uuid": str(uuid.uuid4()),
        **fields,
        "team_uuid": TEAM_UUID,
        "created_at": now,
        "updated_at": now,
    }


def _cost(event: Event, line: CostLine) -> dict[str, Any]:
    """A ``CostEvent`` answer: one priced metric of a usage event."""
    return {
        "provider_id": event.vendor,
        "service_key": event.service_key,
        "cost_unit_id": line.cost_unit_id,
        "quantity": line.quantity,
        "cost_per_unit": line.cost_per_unit,
        "cost": line.cost,
    }


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


def _endpoint(collector: Collector, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        headers = request.headers
        refused = await collector.admit(
            collector.faults.plan(), headers.get("authorization"), headers.get("user-agent")
        )
        if refused is not None:
            return answer_response(refused)
        try:
            answer = await handler(request)
        except ApiError as exc:
            return json_response({"detail": exc.detail}, exc.status_code)
        if isinstance(answer, tuple):
            return json_response(answer[1], answer[0])
        return json_response(answer)

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
