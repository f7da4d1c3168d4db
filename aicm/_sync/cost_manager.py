"""``CostManager``: the sync facade over [`AsyncCostManager`][aicm.AsyncCostManager] (layer 5).

The wrapped client's calls run in the caller's thread as always; the facade's proxy
extracts with the async manager's pure methods and queues the records right there.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._api.cost_manager import AsyncCostManager, ManagerHook, WrapsClient
from .._api.options import DeliveryOptions
from .._core.models import ServiceConfig, WireRecord
from .facade import RecorderFacade

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CostManager"]

ClientT = TypeVar("ClientT")


class _ThreadHook(ManagerHook):
    """The proxy hook of the sync facade: extract, then queue from the caller's thread."""

    __slots__ = ("_facade",)

    def __init__(self, facade: CostManager[Any]) -> None:
        self._facade = facade

    def _tracking(self) -> AsyncCostManager[Any] | None:
        # A closed manager passes calls through untracked, and records none in flight; a
        # forked child rebuilds it first (_live).
        facade = self._facade
        if facade._closed:
            return None
        return facade._live() if facade._forked() else facade._async

    def _recording(self, began: AsyncCostManager[Any] | None) -> AsyncCostManager[Any] | None:
        # The manager begin_call found (forks checked then) unless closed since.
        if began is None:
            return self._tracking()
        return None if self._facade._closed else began

    def _emit(self, records: Sequence[WireRecord]) -> None:
        self._facade._async.emit_blocking(records)


class CostManager(RecorderFacade[AsyncCostManager[ClientT]], WrapsClient[ClientT]):
    """Wrap ``client`` from sync code; the same options as
    [`AsyncCostManager`][aicm.AsyncCostManager].

    Configs are loaded when it is built (blocking). ``tracker.client`` is the tracked
    client; its calls run in the caller's thread as always, and records go out through
    the process's shared delivery worker. After `close()` calls pass through untracked.
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
        build = functools.partial(AsyncCostManager, client, api_id=api_id)
        super().__init__(build, configs, client_customer_key, context, options)
        self._wrap(client, None if self.disabled else _ThreadHook(self))

    @property
    def api_id(self) -> str:
        """The api_id whose configs drive extraction."""
        return self._async.api_id

    def load_configs(self) -> list[ServiceConfig]:
        """Reload the handling configs from their source (blocking; none when turned off)."""
        if self.disabled:
            return []
        configs: list[ServiceConfig] = self._runtime.call(self._live().load_configs)
        return configs
