"""``CostManagerClient``: the sync facade over
[`AsyncCostManagerClient`][aicm.AsyncCostManagerClient] (layer 5).

The async client is built inside the shared runtime's event loop, so its connection pool
belongs to that loop; every method is one portal call into it. No behaviour lives here.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import httpx

from .._core.models import ConfigsResponse, TrackRecord, TrackResult, UsageRecord
from .._core.settings import Settings
from .._io.http import AsyncCostManagerClient
from .facade import OnRuntime
from .service_api import ServiceApiSyncMethods

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ClientOptions", "CostManagerClient"]


class ClientOptions(TypedDict, total=False):
    """The options of [`AsyncCostManagerClient`][aicm.AsyncCostManagerClient], which the sync client
    passes on as they are (a test checks the two agree)."""

    aicm_api_key: str | None
    aicm_api_base: str | None
    aicm_api_url: str | None
    aicm_ini_path: str | None
    timeout: float | None
    transport: httpx.AsyncBaseTransport | None
    verify: bool | ssl.SSLContext
    settings: Settings | None


class CostManagerClient(OnRuntime[AsyncCostManagerClient], ServiceApiSyncMethods):
    """The AICostManager HTTP API from sync code: ``track``, ``track_usage``, ``get_configs``.

    Takes [`AsyncCostManagerClient`][aicm.AsyncCostManagerClient]'s options and raises its errors.
    Use ``with`` or call `close()`.
    """

    def __init__(self, **connection: Unpack[ClientOptions]) -> None:
        super().__init__(functools.partial(AsyncCostManagerClient, **connection))

    @property
    def settings(self) -> Settings:
        """The resolved settings (the repr never shows the key)."""
        return self._async.settings

    @property
    def api_root(self) -> str:
        """``api_base`` + ``api_url``."""
        return self._async.api_root

    def track(self, records: Iterable[TrackRecord | Mapping[str, Any]]) -> TrackResult:
        """POST ``/track`` (see `AsyncCostManagerClient.track()`)."""
        result: TrackResult = self._runtime.call(self._live().track, list(records))
        return result

    def track_usage(self, records: Iterable[UsageRecord | Mapping[str, Any]]) -> TrackResult:
        """POST ``/track-usage`` (see `AsyncCostManagerClient.track_usage()`)."""
        result: TrackResult = self._runtime.call(self._live().track_usage, list(records))
        return result

    def get_configs(self, api_id: str | None = None) -> ConfigsResponse:
        """GET ``/configs`` with ETag (see `AsyncCostManagerClient.get_configs()`)."""
        configs: ConfigsResponse = self._runtime.call(self._live().get_configs, api_id)
        return configs

    def close(self) -> None:
        """Close the connection pool (a forked child's was the parent's)."""
        if not self._forked():
            self._runtime.call(self._async.aclose)
