"""The service's management API on the sync client: one portal call per method (layer 5).

`ServiceApiSyncMethods`, mixed into `CostManagerClient`, holds the twin of each declaration
on `ServiceApiMethods` (same name, arguments, docstring and result type); an ``iter_*``
fetches one page per portal call, as the caller consumes it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .._core.service_models import Page
from .._io.api_calls import Api, Declared, PagesApi
from .._io.service_api import ServiceApiMethods

if TYPE_CHECKING:
    from .._delivery.worker import SharedRuntime
    from .._io.http import AsyncCostManagerClient

__all__ = ["ServiceApiSyncMethods"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Twin(Declared[_P, _R, Callable[_P, _R]]):
    """The sync twin of an async method: a portal call to it, or (``pages``) an iterator
    over the items of every page, one portal call per page."""

    def __init__(self, api: Api[_P, Any] | PagesApi[_P, Any]) -> None:
        super().__init__(api.declare)  # type: ignore[arg-type]  # _R: what the twin returns
        self.api = api
        self.pages = isinstance(api, PagesApi)

    def _bind(self, instance: ServiceApiSyncMethods) -> Callable[_P, Any]:
        declare, pages, name = self.declare, self.pages, self.name

        def method(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            live = instance._live()
            if pages:
                first = instance._run(live._send, declare(live, *args, **kwargs))
                return instance._pages(first)
            return instance._run(getattr(live, name), *args, **kwargs)

        return method


@overload
def _twin(api: PagesApi[_P, _T]) -> _Twin[_P, Iterator[_T]]: ...
@overload
def _twin(api: Api[_P, _T]) -> _Twin[_P, _T]: ...
def _twin(api: Api[_P, Any] | PagesApi[_P, Any]) -> _Twin[_P, Any]:
    return _Twin(api)


_A = ServiceApiMethods


class ServiceApiSyncMethods:
    """The sync twins of `ServiceApiMethods` (see there)."""

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

    list_usage_events = _twin(_A.list_usage_events)
    iter_usage_events = _twin(_A.iter_usage_events)
    get_usage_event = _twin(_A.get_usage_event)
    list_usage_rollups = _twin(_A.list_usage_rollups)
    iter_usage_rollups = _twin(_A.iter_usage_rollups)
    list_cost_events = _twin(_A.list_cost_events)
    iter_cost_events = _twin(_A.iter_cost_events)
    list_cost_events_by_response_id = _twin(_A.list_cost_events_by_response_id)
    list_customers = _twin(_A.list_customers)
    iter_customers = _twin(_A.iter_customers)
    create_customer = _twin(_A.create_customer)
    get_customer = _twin(_A.get_customer)
    update_customer = _twin(_A.update_customer)
    delete_customer = _twin(_A.delete_customer)
    list_vendors = _twin(_A.list_vendors)
    list_vendor_services = _twin(_A.list_vendor_services)
    list_webhook_endpoints = _twin(_A.list_webhook_endpoints)
    create_webhook_endpoint = _twin(_A.create_webhook_endpoint)
    get_webhook_endpoint = _twin(_A.get_webhook_endpoint)
    update_webhook_endpoint = _twin(_A.update_webhook_endpoint)
    delete_webhook_endpoint = _twin(_A.delete_webhook_endpoint)
    list_custom_services = _twin(_A.list_custom_services)
    create_custom_service = _twin(_A.create_custom_service)
    get_custom_service = _twin(_A.get_custom_service)
    update_custom_service = _twin(_A.update_custom_service)
    delete_custom_service = _twin(_A.delete_custom_service)
    list_usage_limits = _twin(_A.list_usage_limits)
    create_usage_limit = _twin(_A.create_usage_limit)
    get_usage_limit = _twin(_A.get_usage_limit)
    update_usage_limit = _twin(_A.update_usage_limit)
    delete_usage_limit = _twin(_A.delete_usage_limit)
    list_usage_limit_progress = _twin(_A.list_usage_limit_progress)
    get_triggered_limits = _twin(_A.get_triggered_limits)
    get_openapi_schema = _twin(_A.get_openapi_schema)
