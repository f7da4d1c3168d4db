"""``LocalCollector`` (layer 6): the collector served by uvicorn from a daemon thread.

The server runs its own event loop in one thread; the Python API (records, stats,
faults) reads the same store and counters from the caller's thread, under locks.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import uvicorn

from aicm.collector._app import API_URL, build_app
from aicm.collector._collector import Collector, CollectorOptions, ConfigsSource, data_dir_for
from aicm.collector._faults import Faults
from aicm.collector._store import kind_from_name

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CollectorServer", "LocalCollector", "uvicorn_config"]


def uvicorn_config(
    app: Any, *, host: str, port: int, in_process: bool, **options: Any
) -> uvicorn.Config:
    """uvicorn settings for the collector: uvloop/httptools when present, no access log.

    In process (``in_process=True``) uvicorn leaves the host's logging configuration alone.
    """
    if in_process:
        options.setdefault("log_config", None)
        options.setdefault("log_level", None)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",
        http="auto",
        ws="none",
        lifespan="off",  # the collector is opened and closed by whoever runs the server
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=2,
        **options,
    )


class CollectorServer(uvicorn.Server):
    """A uvicorn server that reports its bound address and stops without polling delays."""

    def __init__(
        self, config: uvicorn.Config, *, on_started: Callable[[CollectorServer], None] | None
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def bound_port(self) -> int:
        """The port the server listens on (the free one chosen when asked for port 0)."""
        port: int = self.servers[0].sockets[0].getsockname()[1]
        return port

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started(self)

    async def main_loop(self) -> None:
        # uvicorn polls should_exit every 0.1 s; waiting on an event makes stop() prompt.
        # on_tick(0) also refreshes the Date header, as uvicorn does once a second.
        assert self._wake is not None
        while not await self.on_tick(0):
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Called by uvicorn's signal handler (main thread = loop thread): wake main_loop now.
        super().handle_exit(sig, frame)
        self.request_exit()

    def request_exit(self) -> None:
        """Ask the server to shut down; safe from any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop has closed already: nothing left to wake
                pass


class LocalCollector:
    """A real collector on a free loopback port, in a daemon thread of this process.

    ::

        with LocalCollector(configs=[...], faults=Faults(fail_first=2)) as collector:
            client = AsyncCostManagerClient(api_base=collector.api_base, ...)
            ...
            assert collector.wait_for_count("track", 3)

    ``stop()`` closes the store: read records before it. A stopped collector can be
    started again on the same port (records survive only with a ``db_path``).
    """

    api_url: str = API_URL

    def __init__(
        self,
        *,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        **options: Unpack[CollectorOptions],
    ) -> None:
        # No data directory: a temporary one for this object's life, so a restart keeps
        # the signing key and the usage limits, as `aicm serve` keeps them on disk.
        self.data_dir, self._own_data_dir = data_dir_for(
            options.get("configs"), options.get("configs_path"), options.get("data_dir")
        )
        self._options: CollectorOptions = {**options, "data_dir": self.data_dir}
        self._faults = faults or Faults()
        self.host = host
        self._port = port
        self._collector: Collector | None = None
        self._server: CollectorServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> LocalCollector:
        """Start serving; returns once the port accepts connections."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the collector is already running")
            collector = Collector(faults=self._faults, **self._options)
            ready = threading.Event()
            server = CollectorServer(
                uvicorn_config(
                    build_app(collector), host=self.host, port=self._port, in_process=True
                ),
                on_started=lambda _server: ready.set(),
            )
            failure: list[BaseException] = []

            def serve() -> None:
                try:
                    server.run()
                except BaseException as exc:  # uvicorn exits (SystemExit) when it cannot bind
                    failure.append(exc)
                finally:
                    ready.set()

            thread = threading.Thread(target=serve, name="aicm-collector", daemon=True)
            thread.start()
            # A bind or startup failure sets `ready` too, with the server not started.
            if not ready.wait(timeout=30) or not server.started:
                server.request_exit()
                thread.join()
                collector.close()
                reason = f": {failure[0]!r}" if failure else ""
                raise RuntimeError(
                    f"the collector could not start on {self.host}:{self._port}{reason}"
                )
            self._port = server.bound_port  # a restart comes back on the same port
            self._collector, self._server, self._thread = collector, server, thread
            return self

    def stop(self) -> None:
        """Stop serving, join the thread and close the store. Safe to call twice."""
        with self._lock:
            server, thread, collector = self._server, self._thread, self._collector
            self._server = self._thread = self._collector = None
            if server is not None:
                server.request_exit()
            if thread is not None:
                thread.join()
            if collector is not None:
                self._faults = collector.faults.faults
                collector.close()

    def __enter__(self) -> LocalCollector:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where it is ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the collector is serving."""
        return self._thread is not None

    @property
    def port(self) -> int:
        """The bound port (0 before the first start when a free port was asked for)."""
        return self._port

    @property
    def api_base(self) -> str:
        """``http://127.0.0.1:PORT``: give this to the SDK as ``api_base``."""
        self._running()
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def url(self) -> str:
        """The API root: ``api_base + api_url``."""
        return self.api_base + self.api_url

    @property
    def db_path(self) -> str:
        """The SQLite file holding the records."""
        return self._running().store.path

    # -- control and inspection ---------------------------------------------------------

    def _running(self) -> Collector:
        collector = self._collector
        if collector is None:
            raise RuntimeError("the collector is not running: start() it (or use `with`)")
        return collector

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        collector = self._collector
        return collector.faults.faults if collector is not None else self._faults

    def set_faults(self, faults: Faults) -> None:
        """Put ``faults`` in force from the next request on (thread-safe)."""
        if not isinstance(faults, Faults):
            raise TypeError(f"expected Faults, got {type(faults).__name__}")
        with self._lock:
            self._faults = faults
            if self._collector is not None:
                self._collector.faults.set(faults)

    def set_configs(self, configs: ConfigsSource) -> None:
        """Serve other service configs from now on (their ETag changes)."""
        self._running().set_configs(configs)

    def records(self, kind: str) -> list[dict[str, Any]]:
        """The stored records of ``kind`` (``"track"`` or ``"track_usage"``), in arrival order.

        Each is the record as sent, JSON fields decoded, plus ``received_at`` (Unix time)
        and ``user_agent``.
        """
        return self._running().store.records(kind_from_name(kind))

    def count(self, kind: str) -> int:
        """How many records of ``kind`` are stored (duplicates once)."""
        return self._running().store.count(kind_from_name(kind))

    def stats(self) -> dict[str, Any]:
        """Requests by endpoint and status, records received/stored/duplicates/errors,
        faults injected by kind, the last User-Agent, whether Authorization headers came."""
        return self._running().stats.snapshot()

    def clear(self) -> None:
        """Forget the stored records, the statistics and the usage limits (the faults and
        the signing key stay)."""
        self._running().clear()

    # -- usage limits ------------------------------------------------------------------

    @property
    def public_key(self) -> str:
        """The PEM public key the collector signs ``triggered_limits`` with (pin it in the SDK)."""
        return self._running().signing_key.public_pem

    def add_limit(self, **fields: Any) -> dict[str, Any]:
        """Store a usage limit (the fields ``POST /usage-limits/`` takes); return it as
        the service answers it, its id under ``"uuid"``."""
        return self._running().limits.create(fields).out()

    def update_limit(self, limit_id: str, **fields: Any) -> dict[str, Any]:
        """Change the given fields of a usage limit; ``KeyError`` if there is none."""
        changed = self._running().limits.update(limit_id, fields)
        if changed is None:
            raise KeyError(limit_id)
        return changed.out()

    def remove_limit(self, limit_id: str) -> None:
        """Remove a usage limit; ``KeyError`` if there is none."""
        if not self._running().limits.delete(limit_id):
            raise KeyError(limit_id)

    def limits(self) -> list[dict[str, Any]]:
        """The usage limits, each with its current period's spend and what remains."""
        return self._running().limits_progress()

    def triggered_limits(self, api_key: str) -> dict[str, Any]:
        """The ``triggered_limits`` the collector would answer the key ``api_key`` now."""
        return self._running().triggered_limits(f"Bearer {api_key}")

    def wait_for_count(self, kind: str, n: int, *, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` records of ``kind`` are stored; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.count(kind) >= n:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def __repr__(self) -> str:
        where = self.api_base if self.running else "stopped"
        return f"<LocalCollector {where} faults={self.faults!r}>"
