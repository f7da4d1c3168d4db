"""``AsyncRestUsageWrapper``: track plain REST calls made with an ``httpx.AsyncClient`` (layer 4).

A call's identity comes from its URL: the hostname is the ``api_id`` (and the config the
service keys by it), host + path is the ``service_id``, and ``"METHOD /path"`` is the
method key the handling configs' ``tracked_methods`` match (templates like
``GET /v2/sessions/{id}`` included). Only 2xx JSON answers are tracked; the response is
returned to the caller untouched, its body still readable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import httpx

from .._core.exceptions import AicmError, HandlingConfigError
from .._core.extractor import UniversalExtractor
from .._core.models import UsageRecord
from .._core.settings import DeliveryType
from .configs import CostManagerConfig
from .cost_manager import CallScope
from .recorder import AsyncRecorder, DeliveryOptions

if TYPE_CHECKING:
    import contextlib

    from typing_extensions import Unpack

__all__ = ["AsyncRestUsageWrapper", "RestCall", "rest_call"]

logger = logging.getLogger("aicm.rest")

# How long a host whose configs could not be loaded goes untracked before we ask again.
_CONFIG_RETRY_SECONDS = 60.0


class RestCall:
    """What identifies one REST call for extraction."""

    __slots__ = ("api_id", "base_url", "method_key", "service_id")

    def __init__(self, api_id: str, service_id: str, method_key: str, base_url: str) -> None:
        self.api_id = api_id
        self.service_id = service_id
        self.method_key = method_key
        self.base_url = base_url


def rest_call(method: str, url: str, base_url: str) -> RestCall:
    """The identity of a call to ``url`` (pure): hostname, host + path, ``METHOD /path``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None and parts.port not in (80, 443):
        host = f"{host}:{parts.port}"
    path = parts.path or "/"
    return RestCall(
        api_id=host,
        service_id=f"{host}{path}",
        method_key=f"{method.upper()} {path}",
        base_url=base_url,
    )


def json_body(status_code: int, headers: Mapping[str, str], read_json: Any) -> Any:
    """The decoded body of a 2xx JSON answer, else ``None`` (never raises)."""
    if not 200 <= status_code < 300:
        return None
    content_type = headers.get("content-type", "")
    if "json" not in content_type.lower():
        return None
    try:
        return read_json()
    except ValueError:
        return None


class AsyncRestUsageWrapper(AsyncRecorder):
    """Wrap an ``httpx.AsyncClient``: ``get``/``post``/... to ``base_url``, usage recorded.

    (``client`` may be None only for the sync facade, which sends with its own session.)

    Configs for each host come from the service (``GET /configs?api_id=<host>``) or, offline,
    from ``configs``. Delivery defaults to ``MEM_QUEUE``. Use ``async with``.
    """

    default_delivery = DeliveryType.MEM_QUEUE

    def __init__(
        self,
        client: httpx.AsyncClient | None,
        *,
        base_url: str,
        configs: Any = None,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        **options: Unpack[DeliveryOptions],
    ) -> None:
        super().__init__(**options)
        if not isinstance(base_url, str) or not urlsplit(base_url).hostname:
            raise TypeError(f"base_url must be an absolute URL, got {base_url!r}")
        self.http = client
        self.base_url = base_url.rstrip("/") + "/"
        self.config_source = CostManagerConfig(self.aicm_client, configs=configs)
        self.client_customer_key = client_customer_key
        self.context = dict(context) if context is not None else None
        self._scope = CallScope()
        self._extractors: dict[str, UniversalExtractor] = {}
        self._failed_at: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"AsyncRestUsageWrapper(base_url={self.base_url!r})"

    def scope(
        self, *, client_customer_key: str | None = None, context: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with wrapper.scope(client_customer_key="acme"):`` tags the calls made inside."""
        return self._scope.set(client_customer_key, context)

    def url_for(self, url: str) -> str:
        """``url`` joined to ``base_url`` (an absolute URL is kept)."""
        return urljoin(self.base_url, url.lstrip("/")) if "://" not in url else url

    # -- configs per host -------------------------------------------------------------------

    def cached_extractor(self, api_id: str) -> UniversalExtractor | None:
        """The extractor for ``api_id`` if its configs are loaded (or recently failed)."""
        extractor = self._extractors.get(api_id)
        if extractor is not None:
            return extractor
        failed = self._failed_at.get(api_id)
        if failed is not None and time.monotonic() - failed < _CONFIG_RETRY_SECONDS:
            return UniversalExtractor(())
        return None

    async def extractor_for(self, api_id: str) -> UniversalExtractor:
        """Load (once) the configs for ``api_id`` and return their extractor."""
        cached = self.cached_extractor(api_id)
        if cached is not None:
            return cached
        try:
            configs = await self.config_source.get_config(api_id)
            extractor = UniversalExtractor(configs)
        except (AicmError, HandlingConfigError) as exc:
            if self.config_source.offline:
                raise
            self._failed_at[api_id] = time.monotonic()
            logger.error("could not load configs for %r: %s", api_id, exc)
            return UniversalExtractor(())
        self._extractors[api_id] = extractor
        return extractor

    # -- extraction (pure) ----------------------------------------------------------------

    def records_for_response(
        self,
        extractor: UniversalExtractor,
        call: RestCall,
        request_kwargs: Mapping[str, Any],
        body: Any,
    ) -> list[UsageRecord]:
        """The records one tracked response yields."""
        if body is None or not extractor.tracks(call.method_key):
            return []
        key, ctx = self._scope.get()
        if key is None:
            key = self.client_customer_key
        if self.context is not None:
            ctx = self.context if ctx is None else {**self.context, **ctx}
        payloads = extractor.extract(
            call.method_key,
            kwargs=request_kwargs,
            response=body,
            api_id=call.api_id,
            service_id=call.service_id,
            base_url=call.base_url,
            client_customer_key=key,
            context=ctx,
        )
        return self.usage_records(payloads)

    # -- the HTTP verbs ------------------------------------------------------------------

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request through the wrapped client and record its usage."""
        if self.http is None:
            raise TypeError("this wrapper has no httpx.AsyncClient to send with")
        full = self.url_for(url)
        response = await self.http.request(method, full, **kwargs)
        try:
            if self._task_group is None:
                await self.attach()  # used without `async with`, as seed 004 does
            call = rest_call(method, full, self.base_url)
            extractor = self.cached_extractor(call.api_id)
            if extractor is None:
                extractor = await self.on_worker(self.extractor_for, call.api_id)
            if extractor.tracks(call.method_key):
                body = json_body(response.status_code, response.headers, response.json)
                await self.emit(self.records_for_response(extractor, call, kwargs, body))
        except Exception:
            self.engine.stats.discard("tracking_error")
            logger.exception("tracking %s %s failed; the response is returned as is", method, full)
        return response

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """``GET url``."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """``POST url``."""
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        """``PUT url``."""
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        """``PATCH url``."""
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        """``DELETE url``."""
        return await self.request("DELETE", url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> httpx.Response:
        """``HEAD url``."""
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: str, **kwargs: Any) -> httpx.Response:
        """``OPTIONS url``."""
        return await self.request("OPTIONS", url, **kwargs)
