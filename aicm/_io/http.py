"""The service's HTTP API over httpx: ingest, configs and management calls (layer 2)."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import ssl
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx

from .._core.exceptions import (
    AicmError,
    APIStatusError,
    ClosedError,
    ConfigError,
    MissingApiKeyError,
    RecordError,
    TransportError,
    UnexpectedAnswerError,
)
from .._core.jsonplain import dumps
from .._core.models import (
    ConfigsResponse,
    Endpoint,
    RecordResult,
    TrackRecord,
    TrackResult,
    UsageRecord,
    structure_config,
)
from .._core.policy import Answer, Outcome, RetryPolicy, answer_error
from .._core.service_models import Page, structure_page
from .._core.settings import Settings, TrackFormat, resolve_settings
from .._version import __version__
from .answers import (
    MAX_ANSWER_BYTES,
    MAX_DOCUMENT_BYTES,
    BoundedBody,
    api_error,
    body_truncated,
    error_for_answer,
    json_body,
    limits_in,
    parse_results,
)
from .api_calls import Call
from .blocking_http import blocking_client, send_blocking
from .limits_book import limit_book
from .retrying import retrying_or_raise
from .service_api import ServiceApiMethods

__all__ = [
    "MAX_RECORDS_PER_REQUEST",
    "REQUEST_DEADLINE_FACTOR",
    "USER_AGENT",
    "AsyncCostManagerClient",
    "set_default_transport",
]

logger = logging.getLogger("aicm.http")

_T = TypeVar("_T")
_R = TypeVar("_R")

USER_AGENT = f"aicm-sdk/{__version__}"
_HEADERS = {"User-Agent": USER_AGENT, "Accept": "application/json"}
MAX_RECORDS_PER_REQUEST = 1000
# A whole request (connect, send, read the answer) may take this many ``timeout``s: httpx's
# ``timeout`` bounds each phase, and keeps its precise error for a request slow in one.
REQUEST_DEADLINE_FACTOR = 2.0
#: Tries of a management API read, update or delete before its transient failure is raised.
API_ATTEMPTS = 3
# A retry waits at most this long: a longer Retry-After is raised to the caller to decide.
_MAX_RETRY_WAIT = 5.0
# What _judge gives when an answer names no triggered_limits (None is a value it may name).
_NO_LIMITS = object()

# The hook behind aicm.testing's capture. Process-wide on purpose: the sync facades build
# their clients on the portal's thread, where a caller's context variable is not seen.
_default_transport: httpx.AsyncBaseTransport | None = None


def set_default_transport(
    transport: httpx.AsyncBaseTransport | None,
) -> httpx.AsyncBaseTransport | None:
    """Make clients built from now on without ``transport=`` use ``transport`` (``None``:
    the network); returns the one it replaces. Every client closes its transport when it
    closes, so a shared one must survive ``aclose()``. Meant for `aicm.testing`."""
    global _default_transport
    previous, _default_transport = _default_transport, transport
    return previous


def _warn_if_plaintext(api_base: str) -> None:
    parts = urlsplit(api_base)
    host = parts.hostname or ""
    if parts.scheme != "http" or host == "localhost":
        return
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    logger.warning(
        "api_base %s uses plain http to a non-loopback host: the API key travels unencrypted",
        api_base,
    )


@functools.lru_cache(maxsize=2)
def _shared_ssl_context(verify: bool) -> ssl.SSLContext:
    # Loading the CA bundle costs tens of milliseconds; every client can share one context.
    context: ssl.SSLContext = httpx.create_ssl_context(verify=verify)
    return context


def _env_proxies() -> bool:
    """True when the environment names a proxy (httpx reads the same variables)."""
    return any(kind in ("http", "https", "all") for kind in urllib.request.getproxies())


class AsyncCostManagerClient(ServiceApiMethods):
    """The AICostManager HTTP API: ``track``, ``track_usage``, ``get_configs``, and the
    service's management API (usage, costs, customers, limits, ...).

    Connection options fall back to the environment and the INI file (see the settings
    docs). A ``transport`` (any ``httpx.AsyncBaseTransport``) may be injected, e.g. for
    proxies or tests. Use ``async with`` or call `aclose()`.
    """

    def __init__(
        self,
        *,
        aicm_api_key: str | None = None,
        aicm_api_base: str | None = None,
        aicm_api_url: str | None = None,
        aicm_ini_path: str | None = None,
        timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
        settings: Settings | None = None,
    ) -> None:
        if settings is None:
            settings = resolve_settings(
                ini_path=aicm_ini_path,
                api_key=aicm_api_key,
                api_base=aicm_api_base,
                api_url=aicm_api_url,
                timeout=timeout,
            )
        self.settings = settings
        _warn_if_plaintext(settings.api_base)
        self._verify = verify if isinstance(verify, ssl.SSLContext) else _shared_ssl_context(verify)
        self._deadline = settings.timeout * REQUEST_DEADLINE_FACTOR
        transport = transport if transport is not None else _default_transport
        self._http = httpx.AsyncClient(
            base_url=settings.api_root,
            timeout=settings.timeout,
            transport=transport,
            verify=self._verify,
            headers=_HEADERS,
        )
        # The blocking twin (see post_encoded_blocking) speaks to the network directly:
        # with an injected transport (async) or a proxy from the environment, the sends
        # go through this client on the loop instead.
        self._blocking: httpx.Client | None = None
        self._blocking_lock = threading.Lock()
        self._ingest_parts: dict[tuple[object, str], tuple[httpx.URL, httpx.Headers, Any]] = {}
        self.can_block = transport is None and not _env_proxies()
        self._configs: dict[str | None, tuple[str, ConfigsResponse]] = {}  # ETag, answer
        #: The usage limits in force for this service and key (shared in the process).
        self.limits = limit_book(settings)

    def __repr__(self) -> str:
        return f"AsyncCostManagerClient(api_root={self.settings.api_root!r})"

    @property
    def api_root(self) -> str:
        """``api_base`` + ``api_url``."""
        return self.settings.api_root

    async def __aenter__(self) -> AsyncCostManagerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        with self._blocking_lock:
            self.can_block = False
            blocking, self._blocking = self._blocking, None
        if blocking is not None:
            blocking.close()
        await self._http.aclose()

    def _error_for_response(self, response: httpx.Response) -> APIStatusError | None:
        if 200 <= response.status_code < 300:
            return None
        return error_for_answer(
            response.status_code,
            response.text,
            response.headers.get("Retry-After"),
            location=response.headers.get("Location"),
            request_url=str(response.request.url),
            api_base=self.settings.api_base,
        )

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.require_api_key()}"}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        limit: int = MAX_ANSWER_BYTES,
        request: httpx.Request | None = None,
    ) -> httpx.Response:
        """Send a request (``request``, else one made of the other arguments); the
        answer's body is read up to ``limit`` bytes (see `BoundedBody`)."""
        try:
            # The deadline bounds the whole request, so a trickled answer cannot hold us;
            # our own scope, so an outer cancellation still propagates as one.
            with anyio.move_on_after(self._deadline):
                if request is None:
                    request = self._http.build_request(
                        method, path, content=content, headers=headers, params=params
                    )
                streamed = await self._http.send(request, stream=True)
                try:
                    body = BoundedBody(streamed, limit)
                    if body.whole:
                        await streamed.aread()
                        return streamed
                    if body.wanted:
                        async for chunk in streamed.aiter_bytes():
                            if body.add(chunk):
                                break
                finally:
                    await streamed.aclose()
                return body.response(streamed)
        except (httpx.HTTPError, RuntimeError) as exc:
            raise self._failure(method, path, exc, closed=self._http.is_closed) from exc
        # Only our deadline gets here; httpcore closed the connection: nothing half-read is pooled.
        raise self._past_deadline(method, path)

    def _failure(self, method: str, path: str, exc: Exception, *, closed: bool) -> Exception:
        """The error a request that raised ``exc`` raises (a RuntimeError not our own: itself)."""
        if isinstance(exc, httpx.TransportError):
            return TransportError(
                f"{method} {self.settings.api_root}{path} failed: {type(exc).__name__}: {exc}"
            )
        if isinstance(exc, httpx.HTTPError):
            return TransportError(f"{method} {path} failed: {exc}")
        if closed:
            return ClosedError("this client is closed; create a new one")
        return exc

    def _past_deadline(self, method: str, path: str) -> TransportError:
        return TransportError(
            f"{method} {self.settings.api_root}{path} failed: the request took longer than"
            f" {self._deadline:g} s in all ({REQUEST_DEADLINE_FACTOR:g} x the"
            f" {self.settings.timeout:g} s timeout)"
        )

    def _blocking_http(self) -> httpx.Client | None:
        """The blocking twin of this client, made on first use; None where there is none."""
        blocking = self._blocking
        if blocking is not None or not self.can_block:
            return blocking
        with self._blocking_lock:
            if self._blocking is None and self.can_block:
                self._blocking = blocking_client(
                    base_url=self.settings.api_root,
                    timeout=self.settings.timeout,
                    verify=self._verify,
                    headers=_HEADERS,
                )
            return self._blocking

    def _post_blocking(self, path: str, body: bytes) -> httpx.Response:
        """An ingest POST (see `_request()`) from a plain thread, with the blocking twin."""
        blocking = self._blocking_http()
        if blocking is None:
            raise ClosedError("this client is closed; create a new one")
        started = time.monotonic()
        request = self._ingest_request(blocking, path, body)
        try:
            return send_blocking(blocking, request, deadline=self._deadline, limit=MAX_ANSWER_BYTES)
        except (httpx.HTTPError, RuntimeError) as exc:
            late = time.monotonic() - started >= self._deadline
            if isinstance(exc, httpx.TimeoutException) and late:
                raise self._past_deadline("POST", path) from exc
            raise self._failure("POST", path, exc, closed=blocking.is_closed) from exc

    async def post_encoded(
        self, endpoint: Endpoint, encoded: Sequence[str], *, only_failures: bool = False
    ) -> Answer:
        """POST already JSON-encoded records (at most 1000) to ``endpoint``; the `Answer`
        holds the result or the error (never raised). ``only_failures`` leaves the plain
        successes out of the results."""
        body = _ingest_body(endpoint, encoded)
        try:
            request = self._ingest_request(self._http, endpoint.value, body)
            response = await self._request("POST", endpoint.value, request=request)
        except (TransportError, MissingApiKeyError) as exc:
            return answer_error(exc)
        answer, limits = self._judge(endpoint, response, only_failures=only_failures)
        if limits is not _NO_LIMITS:
            # Read apart from the results: an explicit {} says "none in force" too.
            await self.limits.aabsorb(limits)
        return answer

    def post_encoded_blocking(self, endpoint: Endpoint, encoded: Sequence[str]) -> Answer:
        """`post_encoded()` from a plain thread (only where `can_block`): the same answers."""
        body = _ingest_body(endpoint, encoded)
        try:
            response = self._post_blocking(endpoint.value, body)
        except (TransportError, MissingApiKeyError) as exc:
            return answer_error(exc)
        answer, limits = self._judge(endpoint, response, only_failures=False)
        if limits is not _NO_LIMITS:
            self.limits.absorb_blocking(limits)
        return answer

    def _ingest_request(
        self, client: httpx.AsyncClient | httpx.Client, path: str, body: bytes
    ) -> httpx.Request:
        """The POST of ``body`` to ``path`` that ``client.build_request`` would make, made
        from parts worked out once per client and path: httpx's merging of the URL and
        headers on each call costs more than the rest of the request's making."""
        headers = self._auth()
        headers["Content-Type"] = "application/json"
        if client.cookies:  # the service set a cookie: httpx sends it back
            return client.build_request("POST", path, content=body, headers=headers)
        parts = self._ingest_parts.get((client, path))
        if parts is None:
            model = client.build_request("POST", path, headers=headers)
            del model.headers["Content-Length"]  # the body's own is set below
            parts = (model.url, model.headers, model.extensions)
            self._ingest_parts[(client, path)] = parts
        url, common, extensions = parts
        return httpx.Request("POST", url, content=body, headers=common, extensions=extensions)

    def _judge(
        self, endpoint: Endpoint, response: httpx.Response, *, only_failures: bool
    ) -> tuple[Answer, object]:
        """The `Answer` an ingest response makes, and the ``triggered_limits`` it
        carries to absorb (``_NO_LIMITS``: it carries none)."""
        text: str = response.text
        error = self._error_for_response(response)
        if error is not None:
            return answer_error(error), _NO_LIMITS
        truncated = body_truncated(response)
        parsed = None if truncated else parse_results(text, only_failures=only_failures)
        if parsed is None:
            # 2xx means delivered whatever the body says; the contract's results are a courtesy.
            logger.warning(
                "%s answered %s with %s; the records count as delivered",
                endpoint.value,
                response.status_code,
                f"a body over {MAX_ANSWER_BYTES} bytes, not read further"
                if truncated
                else "an unreadable body",
            )
            return Answer(Outcome.DELIVERED, result=TrackResult()), _NO_LIMITS
        limits = limits_in(text) if '"triggered_limits"' in text else _NO_LIMITS
        return Answer(Outcome.DELIVERED, result=parsed), limits

    async def send(
        self, endpoint: Endpoint, records: Sequence[TrackRecord | UsageRecord]
    ) -> TrackResult:
        """POST records to ``endpoint``, split into requests of at most 1000; raises an
        [`APIStatusError`][aicm.APIStatusError] subclass for an error status and
        [`TransportError`][aicm.TransportError] when there is no answer."""
        results: list[RecordResult] = []
        limits: dict[str, Any] = {}
        for start in range(0, len(records), MAX_RECORDS_PER_REQUEST):
            chunk = records[start : start + MAX_RECORDS_PER_REQUEST]
            answer = await self.post_encoded(endpoint, [dumps(r.wire()) for r in chunk])
            result = answer.unwrap()
            results.extend(result.results)
            limits.update(result.triggered_limits)
        return TrackResult(results=tuple(results), triggered_limits=limits)

    async def track(self, records: Iterable[TrackRecord | Mapping[str, Any]]) -> TrackResult:
        """POST ``/track``: each record a [`TrackRecord`][aicm.TrackRecord] or a mapping of its
        fields.

        A mapping holds ``api_id``, ``service_key`` and ``payload`` (or, in the current
        record's form, a ``"vendor::model"`` ``service_key`` and no ``api_id``) and any of
        ``response_id``, ``timestamp``, ``client_customer_key`` (or ``customer_key``),
        ``context``; it is sent in the record form the ``track_format`` setting names.
        """
        legacy = self.settings.track_format is TrackFormat.LEGACY
        built = [
            r if isinstance(r, TrackRecord) else _track_record(r, legacy=legacy) for r in records
        ]
        return await self.send(Endpoint.TRACK, built)

    async def track_usage(self, records: Iterable[UsageRecord | Mapping[str, Any]]) -> TrackResult:
        """POST ``/track-usage``: each record a [`UsageRecord`][aicm.UsageRecord] or a mapping."""
        built = [r if isinstance(r, UsageRecord) else UsageRecord.build(r) for r in records]
        return await self.send(Endpoint.TRACK_USAGE, built)

    async def get_triggered_limits(self) -> dict[str, Any]:
        """GET ``/triggered-limits``: the service's signed document, as sent; its limits are
        adopted (if verified) by every tracker of this service and key in the process."""
        data = await super().get_triggered_limits()
        # {"triggered_limits": {...}}, or the limits object itself.
        answer = data.get("triggered_limits", data if "encrypted_payload" in data else {})
        if not isinstance(answer, dict):
            raise UnexpectedAnswerError("GET /triggered-limits: holds no triggered_limits object")
        await self.limits.aabsorb(answer)
        return data

    async def refresh_limits(self) -> None:
        """`get_triggered_limits()` for a manager starting, bounded by ``timeout``: failures
        are logged, not raised."""
        self.limits.note_asked()  # one refresh at a time is enough
        with anyio.move_on_after(self.settings.timeout):
            try:
                await self.get_triggered_limits()
            except AicmError as exc:
                logger.info("could not fetch the triggered usage limits at start: %s", exc)
            return
        logger.info("could not fetch the triggered usage limits at start: no answer in time")

    async def get_configs(self, api_id: str | None = None) -> ConfigsResponse:
        """GET ``/configs`` (optionally for one ``api_id``), revalidated with ETag."""
        headers = self._auth()
        cached = self._configs.get(api_id)
        if cached is not None:
            headers["If-None-Match"] = cached[0]
        params = None if api_id is None else {"api_id": api_id}
        response = await self._request(
            "GET", "/configs", headers=headers, params=params, limit=MAX_DOCUMENT_BYTES
        )
        if response.status_code == 304 and cached is not None:
            return cached[1]
        error = self._error_for_response(response)
        if error is not None:
            raise error
        data = json_body(response, "GET /configs", ConfigError)
        value = structure_config(
            data, ConfigsResponse, where="the service's /configs answer is malformed"
        )
        if isinstance(data, dict) and data.get("triggered_limits"):
            await self.limits.aabsorb(data["triggered_limits"])
        etag = response.headers.get("ETag")
        if etag:
            self._configs[api_id] = (etag, value)
        return value

    # -- the management API's calls (each declared in service_api.py) ----------------------

    async def _call(
        self, method: str, path: str, *, body: bytes | None = None, retry: bool = True
    ) -> Any:
        """One API call: the decoded JSON answer (None for an empty one), or an error."""
        headers = self._auth()
        if body is not None:
            headers["Content-Type"] = "application/json"
        policy = RetryPolicy(
            base=self.settings.backoff_base,
            cap=self.settings.backoff_cap,
            attempts=API_ATTEMPTS if retry else 1,
            max_delay=_MAX_RETRY_WAIT,
        )

        async def once() -> httpx.Response:
            response = await self._request(
                method, path, content=body, headers=headers, limit=MAX_DOCUMENT_BYTES
            )
            error = self._error_for_response(response)
            if error is not None:
                raise api_error(error, response.text, response.request.url.path)
            return response

        response = await retrying_or_raise(once, policy)
        return json_body(response, f"{method} {path}", UnexpectedAnswerError)

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


def _ingest_body(endpoint: Endpoint, encoded: Sequence[str]) -> bytes:
    if len(encoded) > MAX_RECORDS_PER_REQUEST:
        raise ValueError(f"at most {MAX_RECORDS_PER_REQUEST} records per request")
    return f'{{"{endpoint.body_key}":[{",".join(encoded)}]}}'.encode()


_TRACK_OPTIONAL = ("response_id", "timestamp", "client_customer_key", "customer_key", "context")


def _track_record(data: Mapping[str, Any], *, legacy: bool) -> TrackRecord:
    if not isinstance(data, Mapping):
        raise TypeError(f"a record must be a TrackRecord or a mapping, got {type(data).__name__}")
    extra = set(data) - {"api_id", "service_key", "payload", *_TRACK_OPTIONAL}
    if extra:
        raise RecordError(f"unknown record field(s): {', '.join(sorted(extra))}", field="record")
    api_id = data.get("api_id")
    service_key = data.get("service_key")
    if api_id is None and isinstance(service_key, str) and "::" in service_key:
        api_id = service_key.partition("::")[0]  # a current record: its vendor names it
    optional: dict[str, Any] = {name: data.get(name) for name in _TRACK_OPTIONAL}
    return TrackRecord.build(
        api_id,  # type: ignore[arg-type]  # checked by build()
        service_key,  # type: ignore[arg-type]
        data.get("payload"),
        **optional,
        legacy=legacy,
    )
