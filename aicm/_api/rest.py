"""The REST wrappers' async core, and ``AsyncRestUsageWrapper`` for ``httpx.AsyncClient`` (layer 4).

A call's identity comes from its URL (see `rest_call()`): the hostname is the
``api_id`` the configs are asked for, host (with a non-default port) + path is the
``service_id``, and ``"METHOD /path"`` is
the method key the handling configs' ``tracked_methods`` match (templates like
``GET /v2/sessions/{id}`` included). Only JSON answers are read, and only 2xx ones unless a
config says ``"only_success": false``. The response is returned to the caller untouched,
its body still readable; nothing that goes wrong in tracking reaches the call.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import attrs
import httpx

from .._core.exceptions import AicmError, UsageLimitExceeded
from .._core.extractor import UniversalExtractor
from .._core.handling import TRANSPORT_ARGUMENTS
from .._core.models import ServiceConfig, UsageRecord
from .._core.settings import DeliveryType
from .configs import CostManagerConfig
from .limits import LimitGuard, fetch_at_start, refresh_soon
from .recorder import AsyncRecorder, DeliveryOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "AsyncRestUsageWrapper",
    "HostConfigs",
    "HttpVerbs",
    "RestCall",
    "RestUsageRecorder",
    "json_body",
    "public_url",
    "rest_call",
]

logger = logging.getLogger("aicm.rest")

# How long a host whose configs could not be loaded goes untracked before we ask again.
_CONFIG_RETRY_SECONDS = 60.0
# Hosts whose configs are kept; absolute URLs may name any host, so the cache is bounded.
_MAX_HOSTS = 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}

ResponseT = TypeVar("ResponseT")


@attrs.frozen(kw_only=True)
class RestCall:
    """What identifies one REST call for extraction."""

    api_id: str
    service_id: str
    method_key: str
    base_url: str


def rest_call(method: str, url: str, base_url: str) -> RestCall:
    """The identity of a call to the absolute ``url`` (pure).

    ``api_id`` is the lower-cased hostname, never with a port (``api.heygen.com``,
    ``127.0.0.1``, ``[::1]``): the service keys an API's configs by it, as both their
    ``api_id`` and ``config_id``. ``service_id`` is the URL without scheme, query and
    fragment, the port kept when it is not the scheme's default
    (``127.0.0.1:8080/v2/x``); ``method_key`` is ``"GET /path"``; ``base_url`` is
    ``base_url`` without credentials (``user:password@``), query or fragment.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        netloc = f"{host}:{port}"
    path = parts.path or "/"
    return RestCall(
        api_id=host,
        service_id=f"{netloc}{path}",
        method_key=f"{method.upper()} {path}",
        base_url=public_url(base_url),
    )


def public_url(url: str) -> str:
    """``url`` without ``user:password@``, query and fragment: what may be shown or sent."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def json_body(headers: Mapping[str, str], read_json: Callable[[], Any]) -> Any:
    """The decoded body of a JSON answer, else ``None`` (never raises)."""
    content_type = headers.get("content-type") or ""
    if "json" not in content_type.lower():
        return None
    try:
        return read_json()
    except ValueError:  # requests' and httpx's JSON errors are ValueErrors
        return None


@attrs.frozen(kw_only=True)
class HostConfigs:
    """The extractors for one host: for 2xx answers, and for the others.

    ``retry_at`` (``time.monotonic()``) is set when the configs could not be loaded:
    until then the host goes untracked.
    """

    on_success: UniversalExtractor
    on_failure: UniversalExtractor
    retry_at: float | None = None

    @classmethod
    def build(cls, configs: Iterable[ServiceConfig]) -> HostConfigs:
        """Compile ``configs``; those with ``only_success: false`` also see non-2xx answers."""
        on_success = UniversalExtractor(configs)
        on_failure = UniversalExtractor([c for c in on_success.configs if not c.only_success])
        return cls(on_success=on_success, on_failure=on_failure)

    @classmethod
    def unavailable(cls, retry_after: float) -> HostConfigs:
        """No configs (they could not be loaded); ask again in ``retry_after`` s."""
        return cls(
            on_success=_NO_CONFIGS,
            on_failure=_NO_CONFIGS,
            retry_at=time.monotonic() + retry_after,
        )

    def extractor(self, status_code: int) -> UniversalExtractor:
        """The extractor for an answer with ``status_code``."""
        return self.on_success if 200 <= status_code < 300 else self.on_failure

    def fresh(self) -> bool:
        """False once an unavailable host is due to be asked again."""
        return self.retry_at is None or time.monotonic() < self.retry_at


_NO_CONFIGS = UniversalExtractor(())


class RestUsageRecorder(AsyncRecorder):
    """Everything the REST wrappers share except sending: identity, configs, extraction.

    Configs for each host come from the service (``GET /configs?api_id=<host>``), once
    per host, or, offline, from ``configs``. [`AsyncRestUsageWrapper`][aicm.AsyncRestUsageWrapper]
    and the sync ``RestUsageWrapper`` send with the user's own client and hand the answer to
    `records_for_response()`.
    """

    default_delivery = DeliveryType.MEM_QUEUE

    def __init__(
        self,
        *,
        base_url: str,
        configs: Any = None,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        **options: Unpack[DeliveryOptions],
    ) -> None:
        if not isinstance(base_url, str) or not urlsplit(base_url).hostname:
            raise TypeError(f"base_url must be an absolute URL, got {base_url!r}")
        super().__init__(client_customer_key=client_customer_key, context=context, **options)
        self.base_url = base_url.rstrip("/")
        self.config_source = CostManagerConfig(self.aicm_client, configs=configs)
        self._hosts: dict[str, HostConfigs] = {}
        self._loading: dict[str, anyio.Event] = {}
        self.limit_guard = LimitGuard(
            self.aicm_client.limits,
            self.settings,
            lambda: self.engine.stats,
            refresh=lambda: refresh_soon(self),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={public_url(self.base_url)!r})"

    def url_for(self, url: object) -> str | None:
        """``url`` appended to ``base_url``, as httpx's ``base_url`` does; absolute ones kept.

        ``url`` may be text, bytes or an ``httpx.URL``.
        None when it is no URL this can read: the client then gets it as given, and the
        call goes untracked rather than failing here.
        """
        try:
            if isinstance(url, (bytes, bytearray)):
                text = url.decode()
            elif isinstance(url, (str, httpx.URL)):
                text = str(url)
            else:
                return None  # the library takes it or raises, as without aicm
            if urlsplit(text).scheme:
                return text
        except (UnicodeDecodeError, ValueError):
            return None
        return f"{self.base_url}/{text.lstrip('/')}"

    def call_target(self, method: str, url: object) -> str | None:
        """Where a wrapped call to ``url`` goes, tracked; None: send ``url`` as given, untracked.

        Raises [`UsageLimitExceeded`][aicm.UsageLimitExceeded] when a hard usage limit covers the
        call, before it costs anything (once closed, calls pass through unchecked).
        """
        full = self.url_for(url)
        if full is None:  # a URL only the user's client can read (or refuse)
            self.engine.stats.discard("tracking_error")
            return None
        if not self._closed:
            self.check_limits(method, full)
        return full

    def tracking_failed(self, method: str, url: str) -> None:
        """Count and log a call whose tracking failed (its answer is returned as is)."""
        self.engine.stats.discard("tracking_error")
        logger.exception("tracking %s %s failed; the response is returned as is", method, url)

    def check_limits(self, method: str, url: str) -> None:
        """Raise [`UsageLimitExceeded`][aicm.UsageLimitExceeded] before a request a hard usage limit
        covers.

        Only a request the host's configs track (once they are loaded) is checked, on its
        ``service_id`` and the customer key of the call; a check that fails otherwise is
        logged and the request is sent.
        """
        if not self.limit_guard.book.limits:
            return
        try:
            call = rest_call(method, url, self.base_url)
            host = self.cached_host_configs(call.api_id)
            if host is None or not host.on_success.tracks(call.method_key):
                return
            self.limit_guard.before_service_call(call.service_id, self.tags()[0])
        except UsageLimitExceeded:
            raise
        except Exception:
            logger.exception("checking usage limits for %s %s failed; it is sent", method, url)

    # -- configs per host -------------------------------------------------------------------

    async def _prepare(self) -> None:
        if not self.config_source.offline:
            self.settings.require_api_key()  # no retry can fix this: say so at the start
        await fetch_at_start(self.aicm_client, self.settings, self._start_background)
        await self.host_configs(rest_call("GET", self.base_url, self.base_url).api_id)

    def cached_host_configs(self, api_id: str) -> HostConfigs | None:
        """The configs of ``api_id`` if known (or recently unavailable); None: load them."""
        hit = self._hosts.get(api_id)
        return hit if hit is not None and hit.fresh() else None

    async def host_configs(self, api_id: str) -> HostConfigs:
        """The configs of ``api_id``, loaded once (concurrent callers share one request).

        Runs on the engine's loop. When the service cannot answer, the host goes untracked
        for a minute (logged), then is asked again; it never raises for that.
        """
        while True:
            cached = self.cached_host_configs(api_id)
            if cached is not None:
                return cached
            pending = self._loading.get(api_id)
            if pending is None:
                break
            await pending.wait()  # if that load was cancelled, the loop loads it here
        done = self._loading[api_id] = anyio.Event()
        try:
            try:
                host = HostConfigs.build(await self.config_source.get_config(api_id))
            except AicmError as exc:
                logger.error(
                    "could not load configs for %r (%s); its calls go untracked for %.0f s",
                    api_id,
                    exc,
                    _CONFIG_RETRY_SECONDS,
                )
                host = HostConfigs.unavailable(_CONFIG_RETRY_SECONDS)
            if len(self._hosts) >= _MAX_HOSTS:
                self._hosts.clear()
            self._hosts[api_id] = host
            return host
        finally:
            del self._loading[api_id]
            done.set()

    # -- extraction (pure) ----------------------------------------------------------------

    def records_for_response(
        self,
        host: HostConfigs,
        call: RestCall,
        request_kwargs: Mapping[str, Any],
        status_code: int,
        headers: Mapping[str, str],
        read_json: Callable[[], Any],
    ) -> list[UsageRecord]:
        """The records one answer yields; its body is only read when a config tracks the call."""
        extractor = host.extractor(status_code)
        if not extractor.tracks(call.method_key):
            return []
        body = json_body(headers, read_json)
        if body is None:
            return []
        key, ctx = tags = self.tags()
        # Transport options carry credentials: never handed to extraction (configs come
        # from the service and may name any request field; the extractor refuses them too).
        kwargs = {k: v for k, v in request_kwargs.items() if k not in TRANSPORT_ARGUMENTS}
        payloads = extractor.extract(
            call.method_key,
            kwargs=kwargs,
            response=body,
            api_id=call.api_id,
            service_id=call.service_id,
            base_url=call.base_url,
            client_customer_key=key,
            context=ctx,
        )
        return self.usage_records(payloads, tags)


class HttpVerbs(Generic[ResponseT]):
    """``get``, ``post``, ... of a REST wrapper: each is its ``request`` with that method."""

    def request(self, method: str, url: Any, **kwargs: Any) -> ResponseT:
        """Send a request with the wrapped client and record its usage."""
        raise NotImplementedError

    def get(self, url: str, **kwargs: Any) -> ResponseT:
        """``GET url``."""
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> ResponseT:
        """``POST url``."""
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> ResponseT:
        """``PUT url``."""
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> ResponseT:
        """``PATCH url``."""
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> ResponseT:
        """``DELETE url``."""
        return self.request("DELETE", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> ResponseT:
        """``HEAD url``."""
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> ResponseT:
        """``OPTIONS url``."""
        return self.request("OPTIONS", url, **kwargs)


class AsyncRestUsageWrapper(RestUsageRecorder, HttpVerbs[Coroutine[Any, Any, httpx.Response]]):
    """Wrap an ``httpx.AsyncClient``: ``get``/``post``/... to ``base_url``, usage recorded.

    Use it with ``async with`` (delivery runs in your task group), or simply call it (as
    the AICostManager docs do): the first call attaches it to the process's shared delivery
    worker, and records are delivered from there; call `aclose()` (or `flush()`) to
    deliver what is queued before your program ends. Takes the options of every tracker
    (`DeliveryOptions`); delivery defaults to ``MEM_QUEUE``.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        configs: Any = None,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        **options: Unpack[DeliveryOptions],
    ) -> None:
        if not inspect.iscoroutinefunction(getattr(client, "request", None)):
            raise TypeError(
                "client must be an httpx.AsyncClient (a requests.Session or an httpx.Client "
                f"goes with RestUsageWrapper), got {type(client).__name__}"
            )
        super().__init__(
            base_url=base_url,
            configs=configs,
            client_customer_key=client_customer_key,
            context=context,
            **options,
        )
        self.http = client

    async def request(self, method: str, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """Send a request through the wrapped client and record its usage."""
        if self.disabled:  # the kill switch: the call as the client makes it, nothing else
            return await self.http.request(method, self.url_for(url) or url, **kwargs)
        full = self.call_target(method, url)
        if full is None:
            return await self.http.request(method, url, **kwargs)
        response = await self.http.request(method, full, **kwargs)
        if not self._closed:
            try:
                await self._track(method, full, kwargs, response)
            except Exception:
                self.tracking_failed(method, full)
        return response

    async def _track(
        self, method: str, url: str, kwargs: Mapping[str, Any], response: httpx.Response
    ) -> None:
        if not self.started:
            await self.attach()  # used without `async with`, as the AICostManager docs do
        call = rest_call(method, url, self.base_url)
        host = self.cached_host_configs(call.api_id)
        if host is None:
            host = await self.on_worker(self.host_configs, call.api_id)
        records = self.records_for_response(
            host, call, kwargs, response.status_code, response.headers, response.json
        )
        await self.emit(records)
