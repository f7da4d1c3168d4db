"""``Tracker``: the sync facade over :class:`AsyncTracker`, on the shared runtime (layer 5).

Queued ``track`` calls never cross into the runtime's loop: the record is built and
validated in the caller's thread (by the async class's own pure method) and handed to the
engine's thread-safe queue, or committed to SQLite, right there. Everything else is one
portal call into the async class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, overload

import anyio
import anyio.to_thread

from .._api.tracker import AsyncTracker
from .._core.exceptions import ClosedError
from .._core.models import RecordResult, TrackRecord
from .._core.settings import DeliveryType, OnFull
from .._delivery.engine import DeadLetterRecord
from .._delivery.health import DeliveryHealth
from .runtime import SharedRuntime, shared_runtime

__all__ = ["Tracker"]

_ENQUEUED = "enqueued"


class Tracker:
    """Record usage from sync code: :class:`AsyncTracker`'s options and call forms.

    ``Tracker()`` tracks free-form (``track(api_id, service_key, usage)``);
    ``Tracker(config_id, service_id)`` loads the config's schema now (blocking; use
    :meth:`create_async` in async code) and tracks ``track(usage)``.
    """

    @overload
    def __init__(self, **options: Any) -> None: ...

    @overload
    def __init__(self, config_id: str, service_id: str, **options: Any) -> None: ...

    def __init__(
        self, config_id: str | None = None, service_id: str | None = None, **options: Any
    ) -> None:
        self._args = (config_id, service_id)
        self._options = options
        self._closed = False
        self._runtime: SharedRuntime = shared_runtime()
        self._start()

    def _start(self) -> None:
        runtime = self._runtime
        config_id, service_id = self._args
        options = self._options

        def build() -> AsyncTracker:
            if config_id is None:
                return AsyncTracker(**options)
            return AsyncTracker(config_id, service_id, **options)  # type: ignore[arg-type]

        self._async: AsyncTracker = runtime.call(build)
        self._generation = runtime.generation
        try:
            runtime.call(self._async.start, runtime.task_group)
        except BaseException:
            runtime.call(self._async.aclose, 0.0)
            raise
        runtime.close_timeout = self._async.settings.close_timeout
        runtime.register(self)
        self._engine = self._async.engine
        self._queued = self._async.delivery_type is not DeliveryType.IMMEDIATE

    def _live(self) -> AsyncTracker:
        if self._closed:
            raise ClosedError("this tracker is closed; create a new one to track more")
        if self._generation != self._runtime.generation:
            self._start()  # we are a forked child: start afresh, the parent's queue is its own
        return self._async

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncTracker", "Tracker", 1)

    @classmethod
    async def create_async(
        cls, config_id: str | None = None, service_id: str | None = None, **options: Any
    ) -> Tracker:
        """Build a tracker from async code without blocking the event loop."""
        return await anyio.to_thread.run_sync(
            lambda: cls(config_id, service_id, **options)  # type: ignore[arg-type]
        )

    @property
    def delivery_type(self) -> DeliveryType:
        """How this tracker delivers."""
        return self._async.delivery_type

    @property
    def config_id(self) -> str | None:
        """The config this tracker validates against (config form)."""
        return self._async.config_id

    @property
    def service_id(self) -> str | None:
        """The service this tracker's records belong to (config form)."""
        return self._async.service_id

    # -- tracking --------------------------------------------------------------------------

    @overload
    def track(
        self,
        api_id: str,
        service_key: str,
        usage: Mapping[str, Any],
        *,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        response_id: str | None = None,
        timestamp: object = None,
    ) -> RecordResult: ...

    @overload
    def track(
        self,
        usage: Mapping[str, Any],
        *,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        response_id: str | None = None,
        timestamp: object = None,
    ) -> RecordResult: ...

    def track(self, *args: Any, **kwargs: Any) -> RecordResult:
        """Record one usage event (see :meth:`AsyncTracker.track`)."""
        tracker = self._live()
        if not self._queued:
            result: RecordResult = self._runtime.call(_track, tracker, args, kwargs)
            return result
        record = tracker.build_record(args, kwargs)
        self._engine.put(record)
        return RecordResult(response_id=record.response_id, status=_ENQUEUED)

    @overload
    async def track_async(
        self,
        api_id: str,
        service_key: str,
        usage: Mapping[str, Any],
        *,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        response_id: str | None = None,
        timestamp: object = None,
    ) -> RecordResult: ...

    @overload
    async def track_async(
        self,
        usage: Mapping[str, Any],
        *,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        response_id: str | None = None,
        timestamp: object = None,
    ) -> RecordResult: ...

    async def track_async(self, *args: Any, **kwargs: Any) -> RecordResult:
        """Like :meth:`track`, safe to await from any event loop: it never blocks the loop."""
        tracker = self._live()
        buffer = self._engine.buffer
        if buffer is not None and buffer.on_full is not OnFull.BLOCK:
            # Building and queueing cost microseconds and cannot block: stay on the loop.
            record = tracker.build_record(args, kwargs)
            self._engine.put(record)
            return RecordResult(response_id=record.response_id, status=_ENQUEUED)
        if buffer is not None:
            record = tracker.build_record(args, kwargs)
            if not buffer.try_put(record):
                await anyio.to_thread.run_sync(self._engine.put, record)
            return RecordResult(response_id=record.response_id, status=_ENQUEUED)
        return await anyio.to_thread.run_sync(lambda: self.track(*args, **kwargs))

    def track_batch(self, records: Iterable[Mapping[str, Any] | TrackRecord]) -> list[RecordResult]:
        """Record many events at once (see :meth:`AsyncTracker.track_batch`)."""
        tracker = self._live()
        result: list[RecordResult] = self._runtime.call(tracker.track_batch, list(records))
        return result

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> int:
        """Deliver everything queued within ``timeout`` s; return how many records are left."""
        if self._closed or self._generation != self._runtime.generation:
            return 0
        left: int = self._runtime.call(self._async.flush, timeout)
        return left

    def close(self, timeout: float | None = None) -> int:
        """Deliver what is queued within ``timeout`` s, then stop; return how many were left."""
        if self._closed:
            return 0
        self._closed = True
        self._runtime.unregister(self)
        if self._generation != self._runtime.generation:
            return 0
        left: int = self._runtime.call(self._async.aclose, timeout)
        return left

    async def aclose(self, timeout: float | None = None) -> int:
        """Close from the runtime itself (interpreter exit) — not for user code."""
        self._closed = True
        return await self._async.aclose(timeout)

    def after_fork_in_child(self) -> None:
        """Drop the parent's engine state in a forked child (called by the runtime)."""
        self._engine.after_fork_in_child()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def health(self) -> DeliveryHealth:
        """A snapshot of this tracker's delivery."""
        return self._async.health()

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Records the service refused for good (memory queues)."""
        return self._async.dead_letters()


async def _track(
    tracker: AsyncTracker, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> RecordResult:
    return await tracker.track(*args, **kwargs)
