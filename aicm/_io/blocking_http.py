"""A blocking twin of the service client's POST, for IMMEDIATE sends from a plain thread (layer 2).

The sync ``Tracker`` sends an IMMEDIATE record in the caller's own thread with an
``httpx.Client`` rather than a round trip to the shared event loop: half the CPU of the
async path. The answer is read and judged by the async client's own code, so results,
errors and limits are the same; only the waiting differs.

httpx bounds each phase of a request (connect, each read, each write), not the whole of
it. The async client adds a deadline with a cancel scope; here every socket operation
of the request is given the time left before the same deadline instead, so an answer
trickled a byte at a time stops at the same point.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable

import httpcore
import httpx

__all__ = ["BlockingHttp", "declared_size"]

# The deadline of the request this thread is making (monotonic seconds), or None.
_request = threading.local()


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


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync network backend, its streams bounded by the request's deadline."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _time_left(timeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(path, _time_left(timeout), socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _bound(transport: httpx.BaseTransport) -> bool:
    """Put ``transport``'s connections under the deadline; False where it cannot be done."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.NetworkBackend):
        return False
    pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return True


class BlockingHttp:
    """An ``httpx.Client`` made like the async client, each request under a deadline."""

    def __init__(
        self,
        *,
        base_url: str,
        timeout: float,
        verify: bool | ssl.SSLContext,
        headers: dict[str, str],
    ) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout, verify=verify, headers=headers)
        transports = [self.http._transport, *self.http._mounts.values()]
        #: False when some transport could not be bounded: then this twin is not used.
        self.usable = all(t is None or _bound(t) for t in transports)

    def send(
        self, request: httpx.Request, *, deadline: float, limit: int
    ) -> tuple[httpx.Response, bytes | None, bool]:
        """Send ``request``; read its answer's body up to ``limit`` bytes, all within
        ``deadline`` s. Returns the response, and, when the body had to be read apart
        (its size not declared, or over ``limit``), that body and whether it was cut.

        Raises ``httpx.TimeoutException`` once the deadline passes.
        """
        _request.deadline = time.monotonic() + deadline
        try:
            streamed = self.http.send(request, stream=True)
            try:
                size = declared_size(streamed)
                if size <= limit:
                    streamed.read()
                    return streamed, None, False
                if size != float("inf"):
                    return streamed, b"", True  # over the limit, said up front
                parts: list[bytes] = []
                read = 0
                for chunk in streamed.iter_bytes():
                    if read + len(chunk) > limit:
                        parts.append(chunk[: limit - read])
                        return streamed, b"".join(parts), True
                    parts.append(chunk)
                    read += len(chunk)
                return streamed, b"".join(parts), False
            finally:
                streamed.close()
        finally:
            _request.deadline = None

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


def declared_size(response: httpx.Response) -> float:
    """The body's size as its headers state it, or infinity when they do not say it exactly
    (chunked, or compressed: the decoded size is unknown until it is decoded)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and "Content-Encoding" not in response.headers:
        return int(declared)
    return float("inf")
