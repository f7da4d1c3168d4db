"""Stream wrappers: every chunk passes through untouched, and the stream is reported once.

A stream's `StreamState` reports it when the stream is exhausted, closed, left by
``with``/``async with``, fails, or is garbage-collected, even before its first chunk (the
request was made: the chunks are then empty). A helper stream's ``get_final_*`` and
``until_done`` read the rest through the wrapper first.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from ._base import Delegate
from ._hooks import Call

__all__ = ["StreamState", "TrackedStream", "after_call", "track_stream"]

# Results that are answers, never streams, even with ``stream=True``.
_NOT_STREAMS = (str, bytes, bytearray, int, float, list, tuple, dict, set, frozenset)
# Accumulated snapshots kept by SDK helper streams (anthropic, openai).
_SNAPSHOT_ATTRS = ("current_message_snapshot", "current_completion_snapshot")
# Helper-stream methods that read the stream to its end themselves: run through the wrapper
# first, so the record is made from every event, then answered by the SDK's own method.
_DRAINING = frozenset(
    {
        "until_done",
        "get_final_completion",
        "get_final_response",
        "get_final_message",
        "get_final_text",
    }
)


def after_call(call: Call, result: Any) -> Any:
    """What the caller gets for ``result``: a tracked wrapper of a stream, else ``result``
    itself, reported at once."""
    if _TYPE_KINDS.get(type(result), "unseen") is not None:  # a stream, or a type not seen
        wrapped = _wrap_stream(call, result)
        if wrapped is not None:
            return wrapped
    call.report(result)
    return result


def _wrap_stream(call: Call, result: Any) -> Any:
    """A pass-through wrapper when ``result`` is a stream, else None."""
    kind = _stream_kind(result, call)
    if kind is None:
        return None
    state = StreamState(call, result)
    if kind == "manager":
        return _SyncStreamManager(result, state)
    if kind == "amanager":
        return _AsyncStreamManager(result, state)
    return _stream_class(type(result), kind == "async")(result, state)


def track_stream(call: Call, stream: Any, *, first: tuple[Any, ...] = ()) -> Any:
    """Wrap a stream found inside ``call``'s answer (boto3's ``converse_stream`` returns it in
    a dict), tracked as any other: ``hook.on_stream_end`` sees ``first``, then every event."""
    state = StreamState(call, stream)
    state.chunks.extend(first)
    rtype = type(stream)
    return _stream_class(rtype, _iteration(rtype) == "async")(stream, state)


def _stream_kind(result: Any, call: Call) -> str | None:
    """``"sync"``/``"async"`` for a stream, ``"manager"``/``"amanager"`` for a helper."""
    rtype = type(result)
    kind = _TYPE_KINDS.get(rtype, "unseen")
    if kind == "unseen":
        kind = _type_kind(rtype)
        if len(_TYPE_KINDS) >= 1024:
            _TYPE_KINDS.clear()
        _TYPE_KINDS[rtype] = kind
    if kind != "maybe":
        return kind
    if not call.asks_for_stream():
        return None
    # Helper managers (``client.messages.stream(...)``) are context managers that are not
    # iterable themselves: the request starts when they are entered.
    if hasattr(rtype, "__enter__") and not hasattr(rtype, "__iter__"):
        return "manager"
    if hasattr(rtype, "__aenter__") and not hasattr(rtype, "__aiter__"):
        return "amanager"
    return _iteration(rtype)


def _iteration(rtype: type[Any]) -> str | None:
    """``"sync"`` for an iterable type, ``"async"`` for an async-only one, else None."""
    if hasattr(rtype, "__iter__"):
        return "sync"
    if hasattr(rtype, "__aiter__"):
        return "async"
    return None


def _type_kind(rtype: type[Any]) -> str | None:
    """What a result's type alone says: an answer (None), a stream, or "maybe"."""
    if rtype is type(None) or issubclass(rtype, _NOT_STREAMS):
        return None
    if hasattr(rtype, "model_dump"):  # a pydantic model is an answer even though iterable
        return None
    if hasattr(rtype, "__next__"):
        return "sync"
    if hasattr(rtype, "__anext__"):
        return "async"
    return "maybe"


_TYPE_KINDS: dict[type[Any], str | None] = {}


class StreamState:
    """The record of one stream; kept apart from the wrapper so a finalizer can hold it."""

    __slots__ = ("_pending", "call", "chunks", "target")

    def __init__(self, call: Call, target: Any) -> None:
        self.call = call
        self.target: Any = target
        self.chunks: list[Any] = []
        self._pending = [True]

    def finish(self) -> None:
        """Report the stream once; later calls do nothing."""
        try:
            # list.pop is atomic, so two threads closing at once still report once.
            self._pending.pop()
        except IndexError:
            return
        chunks = self.chunks
        snapshot = _snapshot(self.target)
        if snapshot is not None:
            chunks.append(snapshot)
        self.target = None
        self.call.report_stream(chunks)


def _snapshot(target: Any) -> Any:
    if target is None:
        return None
    rtype = type(target)
    for name in _SNAPSHOT_ATTRS:
        if hasattr(rtype, name):
            try:
                value = getattr(target, name)
            except Exception:  # the SDKs assert a snapshot exists; before any chunk it does not
                continue
            if value is not None:
                return value
    return None


class TrackedStream(Delegate):
    """Base of the stream wrappers: the chunks seen, the drain and close hooks, the finalizer."""

    __slots__ = ("__weakref__", "_aicm_next", "_aicm_state")

    _aicm_state: StreamState
    _aicm_next: Any

    def __init__(self, target: Any, state: StreamState) -> None:
        object.__setattr__(self, "_aicm_target", target)
        object.__setattr__(self, "_aicm_state", state)
        object.__setattr__(self, "_aicm_next", None)
        # A stream abandoned mid-way (``break``, then dropped) is reported when collected.
        weakref.finalize(self, state.finish).atexit = False

    def __getattr__(self, name: str) -> Any:
        value = Delegate.__getattr__(self, name)
        if name in _DRAINING and callable(value):
            return self._aicm_drain_then(value)
        if name in ("close", "aclose") and callable(value):
            state = self._aicm_state

            def close(*args: Any, **kwargs: Any) -> Any:
                try:
                    return value(*args, **kwargs)
                finally:
                    # After close nothing more can arrive, so reporting before an async
                    # close has been awaited loses nothing.
                    state.finish()

            return close
        return value

    def _aicm_drain_then(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` (``get_final_response``...) run once the wrapper has read every event."""
        target = self._aicm_target

        if isinstance(self, _AsyncStream):

            async def drained_async(*args: Any, **kwargs: Any) -> Any:
                async for _ in self:
                    pass
                result = await method(*args, **kwargs)
                return self if result is target else result

            return drained_async

        def drained(*args: Any, **kwargs: Any) -> Any:
            for _ in self:  # type: ignore[attr-defined]
                pass
            result = method(*args, **kwargs)
            return self if result is target else result

        return drained


class _SyncStream(TrackedStream):
    __slots__ = ()

    def __iter__(self) -> _SyncStream:
        return self

    def __next__(self) -> Any:
        step = self._aicm_next
        if step is None:
            target = self._aicm_target
            # Call the target's own __next__ where it has one: iter() on an SDK stream
            # makes a second generator over the same response.
            step = target.__next__ if hasattr(type(target), "__next__") else iter(target).__next__
            object.__setattr__(self, "_aicm_next", step)
        try:
            chunk = step()
        except BaseException:  # StopIteration, a failure or an interrupt all end the stream
            self._aicm_state.finish()
            raise
        self._aicm_state.chunks.append(chunk)
        return chunk


class _SyncStreamCM(_SyncStream):
    __slots__ = ()

    def __enter__(self) -> Any:
        entered = self._aicm_target.__enter__()
        return self if entered is self._aicm_target else entered

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self._aicm_target.__exit__(*exc_info)
        finally:
            self._aicm_state.finish()


class _AsyncStream(TrackedStream):
    __slots__ = ()

    def __aiter__(self) -> _AsyncStream:
        return self

    async def __anext__(self) -> Any:
        step = self._aicm_next
        if step is None:
            target = self._aicm_target
            step = (
                target.__anext__
                if hasattr(type(target), "__anext__")
                else target.__aiter__().__anext__
            )
            object.__setattr__(self, "_aicm_next", step)
        try:
            chunk = await step()
        except BaseException:  # StopAsyncIteration, a failure or a cancellation
            self._aicm_state.finish()
            raise
        self._aicm_state.chunks.append(chunk)
        return chunk


class _AsyncStreamCM(_AsyncStream):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        entered = await self._aicm_target.__aenter__()
        return self if entered is self._aicm_target else entered

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._aicm_target.__aexit__(*exc_info)
        finally:
            self._aicm_state.finish()


def _stream_class(rtype: type[Any], is_async: bool) -> type[TrackedStream]:
    # Only the protocols the target has: a wrapper that claimed __aiter__ for a sync stream
    # would send frameworks (starlette's StreamingResponse) down the wrong path.
    if is_async:
        return _AsyncStreamCM if hasattr(rtype, "__aenter__") else _AsyncStream
    return _SyncStreamCM if hasattr(rtype, "__enter__") else _SyncStream


class _StreamManager(Delegate):
    """Base of the wrappers of helper managers: the stream exists once they are entered."""

    __slots__ = ("_aicm_state", "_aicm_stream")

    _aicm_state: StreamState
    _aicm_stream: TrackedStream | None

    def __init__(self, target: Any, state: StreamState) -> None:
        object.__setattr__(self, "_aicm_target", target)
        object.__setattr__(self, "_aicm_state", state)
        object.__setattr__(self, "_aicm_stream", None)

    def _aicm_entered(self, entered: Any) -> Any:
        state = self._aicm_state
        etype = type(entered)
        kind = _type_kind(etype)
        if kind == "maybe":
            kind = _iteration(etype)
        if kind is None:
            # Not a stream after all: what was entered is the response.
            state.call.report(entered)
            return entered
        state.target = entered
        stream = _stream_class(etype, kind == "async")(entered, state)
        object.__setattr__(self, "_aicm_stream", stream)
        return stream


class _SyncStreamManager(_StreamManager):
    __slots__ = ()

    def __enter__(self) -> Any:
        return self._aicm_entered(self._aicm_target.__enter__())

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self._aicm_target.__exit__(*exc_info)
        finally:
            if self._aicm_stream is not None:
                self._aicm_state.finish()


class _AsyncStreamManager(_StreamManager):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        return self._aicm_entered(await self._aicm_target.__aenter__())

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._aicm_target.__aexit__(*exc_info)
        finally:
            if self._aicm_stream is not None:
                self._aicm_state.finish()
