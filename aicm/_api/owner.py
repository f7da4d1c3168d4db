"""``DeliveryOwner``: the one class that owns a delivery engine, its client and lifecycle
(layer 4).

Every tracker, cost manager and REST wrapper delivers through one. It runs either in a
task group of the caller (``async with``, or `DeliveryOwner.start()`), or, *detached*,
on the process's shared delivery worker (the sync facades' runtime) when it is used
without ``async with``: then everything that touches the engine or the service runs on
the worker's loop, and the caller's loop (asyncio or trio) only waits for it in a thread.

With the kill switch on (``disabled=True``, ``AICM_DISABLED=1`` or ``disabled`` in the INI
file) an owner starts nothing: no log file, no queue, no request, no worker thread.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import attrs

from .._core.exceptions import AicmError, ClosedError
from .._core.settings import DeliveryType, Settings
from .._delivery.engine import DeadLetterRecord, DeliveryEngine
from .._delivery.health import DeliveryHealth, unregister_engine
from .._delivery.worker import shared_runtime
from .._io.http import AsyncCostManagerClient
from .._io.logfile import configure_logging
from .lifecycle import AsyncWithLifecycle
from .options import resolve_options

__all__ = ["DeliveryOwner", "built_with", "resolved"]

logger = logging.getLogger("aicm")

T = TypeVar("T")

# Settings already resolved from the options of the owner being built (see built_with).
_resolved: contextvars.ContextVar[Settings | None] = contextvars.ContextVar(
    "aicm_resolved_settings", default=None
)


def built_with(settings: Settings, build: Callable[[], T]) -> T:
    """``build()``, whose owner takes ``settings`` (resolved from the very options it is
    given) instead of reading the environment and the INI file again."""
    token = _resolved.set(settings)
    try:
        return build()
    finally:
        _resolved.reset(token)


def resolved(options: Any, *, owner: str, tracker: bool = False) -> Settings:
    """The settings of ``options``: those `built_with()` gives, else resolved now."""
    settings = _resolved.get()
    if settings is None:
        settings = resolve_options(options, owner=owner, tracker=tracker)
    return settings


class DeliveryOwner(AsyncWithLifecycle):
    """Owns a `DeliveryEngine`, its HTTP client and their lifecycle.

    ``async with`` starts delivery in a task group of the caller's task and closes it on
    exit; `start()` does the same in a task group the caller supplies; `attach()`
    starts it on the process's shared worker instead. Subclasses decide what to record,
    and load what they need in `_prepare()` and `_after_start()`.
    """

    default_delivery: ClassVar[DeliveryType] = DeliveryType.MEM_QUEUE

    def __init__(self, **options: Any) -> None:
        self.settings = resolved(options, owner=type(self).__name__)
        self.delivery_type = self.settings.delivery_type or self.default_delivery
        #: True when the kill switch is on: calls are accepted and nothing is recorded.
        self.disabled = self.settings.disabled
        self._options = options
        if not self.disabled:  # turned off: not even a log file
            configure_logging(log_file=self.settings.log_file, log_level=self.settings.log_level)
        self._build_delivery()

    def _build_delivery(self) -> None:
        self.aicm_client = AsyncCostManagerClient(
            settings=self.settings, transport=self._options.get("transport")
        )
        self.engine = DeliveryEngine(
            self.aicm_client,
            self.settings,
            # Turned off: an engine with no queue (no file), never started, not counted.
            delivery_type=DeliveryType.IMMEDIATE if self.disabled else self.delivery_type,
            on_discard=self._options.get("on_discard"),
        )
        if self.disabled:
            unregister_engine(self.engine)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._background: set[anyio.CancelScope] = set()
        # Records a sync hook handed to a task (_spawn_enqueue) and not yet queued or sent,
        # and those tasks' scopes: close waits for them until its deadline, then cancels.
        self._handed_off = 0
        self._handed_off_done: anyio.Event | None = None
        self._handoff_scopes: set[anyio.CancelScope] = set()
        self._closed = False
        self._detached = False
        self._attach_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def _before_enter(self) -> None:
        if self._closed:
            raise ClosedError(f"this {type(self).__name__} is closed")

    async def _start_in(self, task_group: anyio.abc.TaskGroup) -> None:
        await self.start(task_group)

    @property
    def started(self) -> bool:
        """True once delivery runs (in a task group, or on the shared worker)."""
        return self._task_group is not None

    @property
    def closed(self) -> bool:
        """True once `aclose()` was called."""
        return self._closed

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Prepare (see `_prepare()`) and start delivery in ``task_group``.

        Everything this object spawns is cancelled by `aclose()`, so the task group
        can end once it is closed.
        """
        if self._closed:
            raise ClosedError(f"this {type(self).__name__} is closed")
        if self._task_group is not None:
            raise AicmError(f"this {type(self).__name__} is already started")
        self._task_group = task_group
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        if self.disabled:
            return  # turned off: no configs, no limits, no actor
        try:
            # Configs first: if they raise, no actor is left running in the caller's group.
            await self._prepare()
            await self.engine.start(task_group)
            await self._after_start()
        except BaseException:
            self._cancel_background()
            self._task_group = self._token = self._loop_thread = None
            raise

    async def _prepare(self) -> None:
        """Load what the subclass needs before delivery starts (configs...)."""

    async def _after_start(self) -> None:
        """What the subclass starts once delivery runs (the queue is open)."""

    def _start_background(self, func: Callable[[], Awaitable[object]], name: str) -> None:
        """Run ``func`` in the task group until it returns or `aclose()` cancels it.

        It must not raise: a failing task would tear down the caller's task group, or the
        shared worker every facade of the process relies on.
        """
        assert self._task_group is not None
        scope = anyio.CancelScope()
        self._background.add(scope)

        async def run() -> None:
            try:
                with scope:
                    await func()
            except Exception:
                logger.exception("background task %s of %r failed", name, self)
            finally:
                self._background.discard(scope)

        self._task_group.start_soon(run, name=name)

    def _cancel_background(self) -> None:
        for scope in list(self._background):
            scope.cancel()
        self._background.clear()

    async def aclose(self, timeout: float | None = None) -> int:
        """Deliver what is queued within ``timeout`` s (default ``close_timeout``), then stop.

        Returns how many records were left undelivered.
        """
        if self._closed:
            return 0
        self._closed = True
        left: int = await self.on_worker(self._shutdown, timeout)
        return left

    async def _shutdown(self, timeout: float | None) -> int:
        self._cancel_background()
        if timeout is None:
            timeout = self.settings.close_timeout
        deadline = anyio.current_time() + timeout
        try:
            await self._wait_handed_off(timeout)
            unsent = self._handed_off
            for scope in list(self._handoff_scopes):
                scope.cancel()
            left = await self.engine.aclose(max(0.0, deadline - anyio.current_time()))
            return unsent + left
        finally:
            with anyio.CancelScope(shield=True):
                await self.aicm_client.aclose()
            if self._detached:
                shared_runtime().unregister(self)

    async def flush(self, timeout: float | None = None) -> int:
        """Deliver everything queued within ``timeout`` s; return how many records are left."""
        left: int = await self.on_worker(self._flush, timeout)
        return left

    async def _flush(self, timeout: float | None) -> int:
        start = anyio.current_time()
        await self._wait_handed_off(timeout)
        remaining = None if timeout is None else max(0.0, timeout - (anyio.current_time() - start))
        return self._handed_off + await self.engine.flush(remaining)

    async def _wait_handed_off(self, timeout: float | None) -> None:
        with anyio.move_on_after(timeout):
            while self._handed_off:
                self._handed_off_done = event = anyio.Event()
                await event.wait()

    def health(self) -> DeliveryHealth:
        """A snapshot of this object's delivery (all zeros, ``delivery_type="disabled"``,
        when the kill switch is on)."""
        if self.disabled:
            return attrs.evolve(self.engine.health(), delivery_type="disabled")
        return self.engine.health()

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Records the service refused for good (memory queues; persistent ones are in the file)."""
        return self.engine.dead_letters()

    # -- detached: the process's shared worker -----------------------------------------------

    @property
    def detached(self) -> bool:
        """True when delivery runs on the shared worker because no task group was given."""
        return self._detached

    async def attach(self) -> None:
        """Start delivery on the process's shared worker (for use without ``async with``).

        Everything that touches the engine or the network then runs on that worker's loop,
        so this object can be used from any event loop, asyncio or trio, without blocking
        it. Does nothing when already started or closed, or when the kill switch is on.
        """
        if self._task_group is not None or self._closed or self.disabled:
            return
        # A thread lock, not an anyio one: callers may come from different event loops.
        await anyio.to_thread.run_sync(self._attach_blocking)

    def _attach_blocking(self) -> None:
        # The shared worker (the sync facades' loop) hosts an async object only when the
        # caller gave it no task group.
        with self._attach_lock:
            if self._task_group is not None or self._closed:
                return
            runtime = shared_runtime()
            # Set before start() publishes the task group, so that no caller ever sees a
            # started object that still runs its work on the caller's own loop.
            self._detached = True
            try:
                runtime.call(self._start_on_worker, runtime)
            except BaseException:
                self._detached = False
                raise

    async def _start_on_worker(self, runtime: Any, closable: Any = None) -> None:
        """Start in the shared worker's task group; ``closable`` (this object by default)
        is closed at interpreter exit and told of a fork."""
        await self.start(runtime.task_group)
        runtime.close_timeout = max(runtime.close_timeout, self.settings.close_timeout)
        runtime.register(self if closable is None else closable)

    def _on_engine_thread(self) -> bool:
        return self._loop_thread is not None and threading.get_ident() == self._loop_thread

    async def on_worker(self, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Await ``func(*args)`` on the engine's loop (the shared worker's when detached)."""
        if not self._detached or self._on_engine_thread():
            return await func(*args)

        return await anyio.to_thread.run_sync(shared_runtime().call, func, *args)

    def after_fork_in_child(self) -> None:
        """In a forked child, forget the parent's worker, queue and connections.

        Called by the shared runtime for a detached object; the next call attaches afresh.
        """
        self.engine.after_fork_in_child()
        self._build_delivery()
