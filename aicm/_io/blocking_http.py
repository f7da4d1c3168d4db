"""A blocking twin of the service client's POST, for IMMEDIATE sends from a plain thread (layer 2).

Sending in the caller's thread costs half the CPU of a round trip to the shared event
loop; the async client judges the answer. httpx bounds each phase of a request, not the
whole: the async client adds a deadline with a cancel scope, and here the transport's own
``httpcore`` pool (public API only) gives every socket operation the time left before the
same deadline, so an answer trickled a byte at a time stops at the same point.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable, Iterator

import httpcore
import httpx

from .answers import BoundedBody

__all__ = ["blocking_client", "send_blocking"]

# The deadline of the request this thread is making (monotonic seconds), or None.
_request = threading.local()

# httpcore's errors; httpx has one of the same name for each (what httpx's own transport raises).
_CORE_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)


def _time_left(timeout: float | None) -> float | None:
    """``timeout``, shortened to what is left before this thread's request deadline."""
    deadline: float | None = getattr(_request, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation ends by the request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _time_left(timeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    """httpcore's sync network backend, its streams bounded by the request's deadline."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = super().connect_tcp(host, port, _time_left(timeout), local_address, socket_options)
        return _DeadlineStream(stream)


def _httpx_error(exc: Exception) -> httpx.TransportError:
    kind = getattr(httpx, type(exc).__name__, httpx.TransportError)
    if not (isinstance(kind, type) and issubclass(kind, httpx.TransportError)):
        kind = httpx.TransportError
    return kind(str(exc))


class _Body(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_stream()
        except _CORE_ERRORS as exc:
            raise _httpx_error(exc) from exc

    def close(self) -> None:
        self._response.close()


class _DeadlineTransport(httpx.BaseTransport):
    """What ``httpx.HTTPTransport`` does (with httpx's default pool limits) over a pool
    whose sockets honour the request deadline."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_DeadlineBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            request.method,
            httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            answer = self._pool.handle_request(core)
        except _CORE_ERRORS as exc:
            raise _httpx_error(exc) from exc
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=_Body(answer),
            extensions=answer.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def blocking_client(
    *, base_url: str, timeout: float, verify: ssl.SSLContext, headers: dict[str, str]
) -> httpx.Client:
    """An ``httpx.Client`` made like the async client, whose requests `send_blocking()` bounds
    (no proxies: the caller checks there are none to honour)."""
    transport = _DeadlineTransport(verify)
    return httpx.Client(base_url=base_url, timeout=timeout, headers=headers, transport=transport)


def send_blocking(
    http: httpx.Client, request: httpx.Request, *, deadline: float, limit: int
) -> httpx.Response:
    """Send ``request``; its answer read up to ``limit`` bytes (see `BoundedBody`), all
    within ``deadline`` s. Raises ``httpx.TimeoutException`` once the deadline passes."""
    _request.deadline = time.monotonic() + deadline
    try:
        streamed = http.send(request, stream=True)
        try:
            body = BoundedBody(streamed, limit)
            if body.whole:
                streamed.read()
                return streamed
            for chunk in streamed.iter_bytes() if body.wanted else ():
                if body.add(chunk):
                    break
        finally:
            streamed.close()
        return body.response(streamed)
    finally:
        _request.deadline = None
