"""What a tracked proxy asks and tells about calls: the hook protocol, and one tracked call.

A call's end reaches its hook through `Call`, and the proxy asks ``begin_call`` or
``should_track`` before it; each logs and swallows whatever a hook raises (but the
[`UsageLimitExceeded`][aicm.UsageLimitExceeded] that refuses a call), so tracking never breaks
the user's call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import attrs

__all__ = ["Call", "ExtractorHook", "ProxyHooks", "should_track"]

logger = logging.getLogger("aicm.cost_manager")


class ExtractorHook(Protocol):
    """What a `TrackedProxy` asks and tells about calls (the CostManager implements it).

    A hook may also have ``begin_call(call) -> bool``, asked instead of
    ``should_track(call.path)`` before a call is made: one question per call, whose answer
    it may keep in ``call.tracker`` for ``on_call`` and ``on_stream_end``; the
    [`UsageLimitExceeded`][aicm.UsageLimitExceeded] it raises refuses the call.
    """

    def should_track(self, path: str) -> bool:
        """True when calls of the dotted ``path`` (``chat.completions.create``) are tracked."""
        ...

    def on_call(self, call: Call, response: Any) -> None:
        """A tracked ``call`` returned ``response`` (not a stream)."""
        ...

    def on_stream_end(self, call: Call, chunks: list[Any]) -> None:
        """A tracked call's stream ended; ``chunks`` is everything it yielded.

        For SDK helper streams that accumulate a final snapshot (anthropic
        ``MessageStream.current_message_snapshot``, openai
        ``ChatCompletionStream.current_completion_snapshot``) the snapshot is appended as
        the last chunk, so usage is known even when the user read ``text_stream`` or
        called ``get_final_message()`` instead of iterating the stream itself.
        """
        ...


OnCall = Callable[["Call", Any], None]
OnStreamEnd = Callable[["Call", list[Any]], None]


def _never(path: str) -> bool:
    return False


def _ignore_call(*_: Any) -> None:
    return None


@attrs.frozen(kw_only=True)
class ProxyHooks:
    """An `ExtractorHook` made of three plain callables."""

    should_track: Callable[[str], bool] = _never
    on_call: OnCall = _ignore_call
    on_stream_end: OnStreamEnd = _ignore_call


def should_track(hook: ExtractorHook, path: str) -> bool:
    """``hook.should_track(path)``; False (logged) when it raises."""
    try:
        return hook.should_track(path)
    except Exception:
        logger.exception("should_track(%r) failed; call not tracked", path)
        return False


class Call:
    """One tracked call: its hook, dotted path, arguments and the function called."""

    __slots__ = ("args", "func", "hook", "kwargs", "path", "tracker")

    def __init__(
        self,
        hook: ExtractorHook,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        func: Callable[..., Any],
    ) -> None:
        self.hook = hook
        self.path = path
        self.args = args
        self.kwargs = kwargs
        self.func = func
        self.tracker: Any = None  # what the hook's begin_call keeps for the call's end

    def report(self, result: Any) -> None:
        """Hand the call's answer to ``hook.on_call``."""
        try:
            self.hook.on_call(self, result)
        except Exception:
            logger.exception(
                "tracking %s failed; the call's result is returned untouched", self.path
            )

    def report_stream(self, chunks: list[Any]) -> None:
        """Hand what the call's stream yielded to ``hook.on_stream_end``."""
        try:
            self.hook.on_stream_end(self, chunks)
        except Exception:
            logger.exception("tracking the stream of %s failed", self.path)

    def asks_for_stream(self) -> bool:
        """True when the request asked for a stream (``stream=True``, or a ``.stream`` method)."""
        flag = self.kwargs.get("stream")
        return flag is True or (flag is None and self.path.rpartition(".")[2] == "stream")
