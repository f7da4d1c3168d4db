"""The ``with_raw_response``/``with_streaming_response`` wrappers: calls that hand back the
HTTP response are tracked once, from the body it parses to.

A raw response's body is read at once, so it is parsed and tracked right away (the SDK
caches what ``parse()`` returns: the caller's own ``parse()`` gives the very same object).
A streamed body read past the SDK's parser (raw lines or bytes), or never read, is
reported as a stream that ended before its first chunk: the request was made and billed.
"""

from __future__ import annotations

import inspect
import logging
import types
import weakref
from collections.abc import Coroutine
from typing import Any

from ._base import Delegate
from ._hooks import Call
from ._streams import StreamState, after_call

__all__ = ["after_raw_acall", "after_raw_call"]

logger = logging.getLogger("aicm.cost_manager")


def after_raw_call(call: Call, result: Any, mode: str) -> Any:
    """A call under ``with_raw_response``/``with_streaming_response`` returned ``result``."""
    rtype = type(result)
    if mode == "streaming":
        if hasattr(rtype, "__enter__"):
            return _SyncResponseCM(result, call)
        if hasattr(rtype, "__aenter__"):
            return _AsyncResponseCM(result, call)
    elif hasattr(rtype, "parse"):
        tracked = _ParsedResponse(result, call)
        if call.asks_for_stream():
            tracked._aicm_report_if_never_parsed()
            return tracked  # the stream is wrapped when the caller parses it
        # The body is already read: track it now, so a caller who only reads headers is
        # still billed. The SDK caches what parse() returns, so the caller's own parse()
        # later gives the very same object.
        try:
            parsed = result.parse()
        except Exception:
            logger.warning("%s: the raw response did not parse; call not tracked", call.path)
            return result
        if type(parsed) is types.CoroutineType:
            parsed.close()  # an async parse from a sync call: track when the caller parses
            return tracked
        tracked._aicm_take(parsed)
        return result
    return after_call(call, result)


async def after_raw_acall(call: Call, result: Any, mode: str) -> Any:
    """An awaited call under ``with_raw_response`` returned ``result`` (see after_raw_call)."""
    if mode == "raw" and not call.asks_for_stream():
        parse = getattr(result, "parse", None)
        if parse is not None and inspect.iscoroutinefunction(parse):
            tracked = _ParsedResponse(result, call)
            try:
                tracked._aicm_take(await parse())
            except Exception:
                logger.warning("%s: the raw response did not parse; call not tracked", call.path)
            return result
    return after_raw_call(call, result, mode)


_UNPARSED: Any = object()


class _ParsedResponse(Delegate):
    """An SDK HTTP response of a tracked call: tracked from the body it parses to, once."""

    __slots__ = ("__weakref__", "_aicm_call", "_aicm_parsed", "_aicm_unread")

    def __init__(self, target: Any, call: Call) -> None:
        object.__setattr__(self, "_aicm_target", target)
        object.__setattr__(self, "_aicm_call", call)
        object.__setattr__(self, "_aicm_parsed", _UNPARSED)
        object.__setattr__(self, "_aicm_unread", [])

    def _aicm_report_if_never_parsed(self) -> None:
        """Record the call from its request alone if this response is dropped unparsed."""
        unread: list[Call] = self._aicm_unread
        unread.append(self._aicm_call)
        weakref.finalize(self, _never_parsed, unread).atexit = False

    def __getattr__(self, name: str) -> Any:
        value = Delegate.__getattr__(self, name)
        if name != "parse" or not callable(value):
            return value

        def parse(*args: Any, **kwargs: Any) -> Any:
            parsed = value(*args, **kwargs)
            if type(parsed) is types.CoroutineType:
                return self._aicm_await(parsed)
            return self._aicm_take(parsed)

        return parse

    async def _aicm_await(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self._aicm_take(await coro)

    @property
    def _aicm_was_parsed(self) -> bool:
        return self._aicm_parsed is not _UNPARSED

    def _aicm_take(self, parsed: Any) -> Any:
        """Track the first body parsed; hand back what the caller gets for ``parsed``."""
        first = self._aicm_parsed
        if first is not _UNPARSED:
            seen, given = first
            return given if seen is parsed else parsed
        self._aicm_unread.clear()
        given = after_call(self._aicm_call, parsed)
        object.__setattr__(self, "_aicm_parsed", (parsed, given))
        return given


def _never_parsed(unread: list[Call]) -> None:
    for call in unread:
        _report_unparsed_stream(call)


def _report_unparsed_stream(call: Call) -> None:
    """A streamed response whose events never reached the SDK's parser (read as raw lines or
    bytes, or never read): the request was made and billed, so it is recorded from the
    request alone, with no usage."""
    logger.warning(
        "%s: a streamed response was not read through parse(); recorded from the request "
        "alone, with no usage",
        call.path,
    )
    StreamState(call, None).finish()


class _ResponseCM(Delegate):
    """``with_streaming_response``: the response entered is tracked when parsed, or on exit."""

    __slots__ = ("_aicm_call", "_aicm_response")

    def __init__(self, target: Any, call: Call) -> None:
        object.__setattr__(self, "_aicm_target", target)
        object.__setattr__(self, "_aicm_call", call)
        object.__setattr__(self, "_aicm_response", None)

    def _aicm_entered(self, entered: Any) -> Any:
        if not hasattr(type(entered), "parse"):
            return entered
        response = _ParsedResponse(entered, self._aicm_call)
        object.__setattr__(self, "_aicm_response", response)
        return response

    def _aicm_unparsed(self) -> _ParsedResponse | None:
        """The entered response when it still has to be parsed for its record."""
        response: _ParsedResponse | None = self._aicm_response
        if response is None or response._aicm_was_parsed:
            return None
        if self._aicm_call.asks_for_stream():
            # A stream read as raw lines or bytes: its events never reached the SDK's parser.
            # A parse() after this (of a closed response) is not recorded a second time.
            object.__setattr__(response, "_aicm_parsed", (None, None))
            _report_unparsed_stream(self._aicm_call)
            return None
        # The caller read the body some other way (json(), text()) or not at all: the call
        # was billed all the same, so it is parsed for the record.
        return response

    def _aicm_parse_failed(self) -> None:
        logger.warning("%s: the response body did not parse; not tracked", self._aicm_call.path)


class _SyncResponseCM(_ResponseCM):
    __slots__ = ()

    def __enter__(self) -> Any:
        return self._aicm_entered(self._aicm_target.__enter__())

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            response = self._aicm_unparsed()
            if response is not None:
                try:
                    response.parse()
                except Exception:
                    self._aicm_parse_failed()
        finally:
            exited = self._aicm_target.__exit__(*exc_info)
        return exited


class _AsyncResponseCM(_ResponseCM):
    __slots__ = ()

    async def __aenter__(self) -> Any:
        return self._aicm_entered(await self._aicm_target.__aenter__())

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            response = self._aicm_unparsed()
            if response is not None:
                try:
                    await response.parse()
                except Exception:
                    self._aicm_parse_failed()
        finally:
            exited = await self._aicm_target.__aexit__(*exc_info)
        return exited
