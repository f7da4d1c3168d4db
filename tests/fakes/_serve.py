"""Serve an ASGI app on a free loopback port from a daemon thread, for tests (test helper)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

__all__ = ["FAIL_MODEL", "BackgroundServer", "FakeService"]

FAIL_MODEL = "fail-model"
"""The model the LLM fakes answer with a 400 error, as the real APIs do for an unknown model."""

_F = TypeVar("_F", bound="FakeService")


class BackgroundServer:
    """Run ``app`` under uvicorn on ``127.0.0.1:<free port>`` in a daemon thread.

    ``with BackgroundServer(app) as server: httpx.get(server.url + "/path")``; ``start()``
    returns once the server accepts connections and ``stop()`` once it has shut down.
    """

    def __init__(self, app: Any, *, startup_timeout: float = 10.0) -> None:
        self.app = app
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        if self._port is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> BackgroundServer:
        """Start serving; idempotent."""
        if self._server is not None:
            return self
        # Binding port 0 ourselves and handing uvicorn the socket avoids the race of
        # picking a "free" port and binding it later.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            loop="asyncio",
            http="h11",
            access_log=False,
        )
        server = uvicorn.Server(config)
        self._server = server

        def run() -> None:
            asyncio.run(server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=run, name="fake-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=10)
        self._server = self._thread = None
        self._port = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class FakeService:
    """A fake provider: a Starlette ``app``, the JSON bodies it received, and a server.

    ``with FakeX() as fake: ...`` serves it; ``fake.url`` is its root.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._server = BackgroundServer(self.build_app())
        self._lock = threading.Lock()
        self._counter = 0

    def build_app(self) -> Any:
        raise NotImplementedError

    def next_id(self) -> int:
        """A number unique within this fake, for response ids."""
        with self._lock:
            self._counter += 1
            return self._counter

    @property
    def url(self) -> str:
        """The root URL of the running fake."""
        return self._server.url

    def start(self: _F) -> _F:
        """Start serving (idempotent)."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.stop()

    def __enter__(self: _F) -> _F:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
