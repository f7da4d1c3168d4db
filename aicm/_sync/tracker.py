"""``Tracker``: the sync facade over [`AsyncTracker`][aicm.AsyncTracker] (layer 5).

``track()`` builds, checks and queues its record (IMMEDIATE: sends it with a blocking HTTP
client) in the caller's thread; everything else is one portal call into the async class.
The ``*_async`` methods and `aclose()` may be awaited from any event loop (asyncio or
trio): they wait in a worker thread, never on the loop.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, overload

import anyio.to_thread

from .._api.conveniences import TrackConveniences
from .._api.options import LlmTrackOptions, TrackerOptions, TrackOptions, resolve_options
from .._api.owner import built_with
from .._api.tracker import AsyncTracker, batch_items, disabled_result, llm_options
from .._core.exceptions import ClosedError
from .._core.models import RecordResult, TrackRecord, UsageRecord
from .facade import SyncFacade

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Tracker"]


class Tracker(TrackConveniences, SyncFacade[AsyncTracker]):
    """Record usage from sync code: [`AsyncTracker`][aicm.AsyncTracker]'s options and call forms.

    ``Tracker()`` tracks free-form (``track(api_id, service_key, usage)``);
    ``Tracker(config_id, service_id)`` loads the config's schema now (blocking; use
    `create_async()` in async code) and tracks ``track(usage)``. Delivery runs on the
    shared background runtime; ``close()`` (or a ``with`` block) flushes and stops it.
    """

    @overload
    def __init__(self, **options: Unpack[TrackerOptions]) -> None: ...

    @overload
    def __init__(
        self, config_id: str, service_id: str, **options: Unpack[TrackerOptions]
    ) -> None: ...

    def __init__(
        self,
        config_id: str | None = None,
        service_id: str | None = None,
        **options: Unpack[TrackerOptions],
    ) -> None:
        # Built on the runtime's loop: the engine's events belong to that loop.
        build = functools.partial(AsyncTracker, config_id, service_id, **options)
        super().__init__(build, options, tracker=True)

    def _start(self) -> None:
        defaults = self.__dict__.get("track_defaults")
        super()._start()
        # One TrackDefaults for the facade and its twin: a forked child's new twin keeps it.
        if defaults is None:
            self.track_defaults = self._async.track_defaults
        else:
            self._async.track_defaults = defaults

    @overload
    @classmethod
    async def create_async(cls, **options: Unpack[TrackerOptions]) -> Tracker: ...

    @overload
    @classmethod
    async def create_async(
        cls, config_id: str, service_id: str, **options: Unpack[TrackerOptions]
    ) -> Tracker: ...

    @classmethod
    async def create_async(
        cls,
        config_id: str | None = None,
        service_id: str | None = None,
        **options: Unpack[TrackerOptions],
    ) -> Tracker:
        """Build a tracker from async code (asyncio or trio) without blocking the event loop.

        The setup (starting the runtime, loading the config) waits in a worker thread.
        """
        settings = resolve_options(options, owner="create_async", tracker=True)
        new = functools.partial(cls, config_id, service_id, **options)
        build = functools.partial(built_with, settings, new)
        if settings.disabled:
            return build()  # no I/O
        return await anyio.to_thread.run_sync(build)

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
        **options: Unpack[TrackOptions],
    ) -> RecordResult: ...

    @overload
    def track(self, usage: Mapping[str, Any], **options: Unpack[TrackOptions]) -> RecordResult: ...

    def track(self, *args: Any, **kwargs: Any) -> RecordResult:
        """Record one usage event (see `AsyncTracker.track()`).

        ``IMMEDIATE`` waits for the service's verdict; the queues return once the record is
        queued. From async code, await `track_async()` instead.
        """
        tracker = self._async
        if self._closed or self._generation != self._runtime.generation:
            tracker = self._live()  # raises if closed; restarts in a forked child
        # Queued, or sent with a blocking client, in this thread: no portal round trip.
        result = tracker.track_from_thread(args, kwargs)
        if result is None:
            result = self._runtime.call(functools.partial(tracker.track, *args, **kwargs))
        return result

    def track_llm_usage(
        self, service_key: str, response: Any, **options: Unpack[LlmTrackOptions]
    ) -> Any:
        """Record the usage a provider's answer reports; return ``response``
        (see `AsyncTracker.track_llm_usage()`)."""
        response_id, track_options = llm_options("track_llm_usage", options)
        from .._providers import llm_usage as _llm  # only LLM answers need the providers

        return _llm.track_response(
            self.track, service_key, response, response_id=response_id, options=track_options
        )

    def track_llm_stream_usage(
        self, service_key: str, stream: Iterable[Any], **options: Unpack[LlmTrackOptions]
    ) -> Iterator[Any]:
        """Yield ``stream``'s events untouched; record its usage once it ends or is left."""
        response_id, track_options = llm_options("track_llm_stream_usage", options, stream=True)
        from .._providers import llm_usage as _llm  # only LLM answers need the providers

        recorder = _llm.stream_recorder(self.track, track_options)
        return _llm.track_stream(recorder, service_key, stream, response_id=response_id)

    @overload
    async def track_async(
        self,
        api_id: str,
        service_key: str,
        usage: Mapping[str, Any],
        **options: Unpack[TrackOptions],
    ) -> RecordResult: ...

    @overload
    async def track_async(
        self, usage: Mapping[str, Any], **options: Unpack[TrackOptions]
    ) -> RecordResult: ...

    async def track_async(self, *args: Any, **kwargs: Any) -> RecordResult:
        """Like `track()`, safe to await from any event loop: it never blocks the loop."""
        tracker = self._live()
        engine = tracker.engine
        if engine.buffer is None:
            if not self.disabled:
                # IMMEDIATE waits for the service, PERSISTENT_QUEUE for a disk commit: in a
                # thread.
                return await anyio.to_thread.run_sync(
                    functools.partial(self.track, *args, **kwargs)
                )
            return disabled_result(tracker.build_record(args, kwargs))
        record = tracker.build_record(args, kwargs)  # microseconds: it stays on the loop
        # Queued from this thread (a close already begun raises here): the actor is woken
        # only when a batch fills, not per record.
        if not engine.try_put(record):  # full: wait in a thread, never on the loop
            await anyio.to_thread.run_sync(engine.put, record)
        return tracker.queued(record)

    def track_batch(
        self, records: Iterable[Mapping[str, Any] | TrackRecord | UsageRecord]
    ) -> list[RecordResult]:
        """Record many events at once (see `AsyncTracker.track_batch()`)."""
        tracker = self._live()
        if self.disabled:
            return [disabled_result(r) for r in tracker.build_batch(batch_items(records))]
        result: list[RecordResult] = self._runtime.call(tracker.track_batch, batch_items(records))
        return result

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Tracker:
        if self._closed:
            raise ClosedError("this tracker is closed; create a new one to track more")
        return self
