"""``CostManager``: the sync facade over :class:`AsyncCostManager` (layer 5).

The wrapped client's calls run in the caller's thread as always; the facade's proxy
extracts with the async manager's pure methods and queues the records right there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._api.cost_manager import AsyncCostManager
from .._api.proxy import TrackedProxy
from .._api.recorder import DeliveryOptions
from .._core.models import ServiceConfig
from .facade import SyncFacade

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["CostManager"]

ClientT = TypeVar("ClientT")


class _ThreadHook:
    """The proxy hook of the sync facade: extract, then queue from the caller's thread."""

    def __init__(self, facade: CostManager[Any]) -> None:
        self._facade = facade

    def should_track(self, path: str) -> bool:
        # A closed manager passes calls through untracked.
        return not self._facade.closed and self._facade._live().should_track(path)

    def before_call(self, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # A usage limit refuses the call in the caller's thread, before it is made.
        if not self._facade.closed:
            self._facade._live().before_call(path, args, kwargs)

    def on_call(
        self,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        response: Any,
        func: Callable[..., Any],
    ) -> None:
        if self._facade.closed:
            return
        manager = self._facade._live()
        self._facade._emit(manager.records_after_call(self, path, args, kwargs, response, func))

    def on_stream_end(
        self,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chunks: list[Any],
        func: Callable[..., Any],
    ) -> None:
        if self._facade.closed:
            return  # a stream that outlived its manager
        manager = self._facade._live()
        self._facade._emit(manager.records_after_stream(path, args, kwargs, chunks, func))


class CostManager(SyncFacade[AsyncCostManager[ClientT]], Generic[ClientT]):
    """Wrap ``client`` from sync code; the same options as :class:`AsyncCostManager`.

    Configs are loaded when it is built (blocking). ``tracker.client`` is the tracked
    client; its calls run in the caller's thread as always, and records go out through
    the process's shared delivery worker. After :meth:`close` calls pass through untracked.
    """

    def __init__(
        self,
        client: ClientT,
        *,
        api_id: str | None = None,
        configs: Any = None,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        **options: Unpack[DeliveryOptions],
    ) -> None:
        def build() -> AsyncCostManager[ClientT]:
            return AsyncCostManager(
                client,
                api_id=api_id,
                configs=configs,
                client_customer_key=client_customer_key,
                context=context,
                **options,
            )

        super().__init__(build)
        self._wrapped = client
        self._proxy: Any = TrackedProxy(client, extractor_hook=_ThreadHook(self))

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncCostManager", "CostManager", 1)

    def __enter__(self) -> Self:
        return self

    @property
    def client(self) -> ClientT:
        """The wrapped client, tracked: use it exactly as the client itself."""
        proxy: ClientT = self._proxy
        return proxy

    @property
    def wrapped(self) -> ClientT:
        """The client itself, untracked."""
        return self._wrapped

    @property
    def api_id(self) -> str:
        """The api_id whose configs drive extraction."""
        return self._async.api_id

    def scope(
        self, *, client_customer_key: str | None = None, context: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with manager.scope(client_customer_key="acme"):`` tags the calls made inside."""
        manager = self._async if self._closed else self._live()
        return manager.scope(client_customer_key=client_customer_key, context=context)

    def load_configs(self) -> list[ServiceConfig]:
        """Reload the handling configs from their source (blocking)."""
        configs: list[ServiceConfig] = self._runtime.call(self._live().load_configs)
        return configs
