"""The built-ins as a [`AsyncCostManager`][aicm.AsyncCostManager] uses them: when, and which
records.

A manager asks `BuiltinTracking.tracks()` for each call path its configs do not track;
the built-in answers only while the manager has no config for its ``api_id`` at all (none
served, none passed, or not loaded yet), so a config for that ``api_id`` always wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._core.exceptions import RecordError
from .._core.settings import TrackFormat
from . import STREAM_KEY, builtin_for, track_record
from ._base import Builtin, Usage
from .seen import SEEN

if TYPE_CHECKING:
    from .._api.cost_manager import AsyncCostManager
    from .._api.proxy import Call
    from .._core.extractor import UniversalExtractor
    from .._core.models import WireRecord

__all__ = ["BuiltinTracking"]

logger = logging.getLogger("aicm.cost_manager")

Tags = tuple[str | None, Any]


class BuiltinTracking:
    """A manager's built-in tracking (a no-op for a client no built-in knows)."""

    __slots__ = ("_builtin", "_manager", "_warned_no_usage")

    def __init__(self, builtin: Builtin | None, manager: AsyncCostManager[Any]) -> None:
        self._builtin = builtin
        self._manager = manager
        self._warned_no_usage = False

    @classmethod
    def for_client(cls, client: Any, manager: AsyncCostManager[Any]) -> BuiltinTracking:
        """The built-in tracking of ``client`` for ``manager``."""
        return cls(builtin_for(client), manager)

    @property
    def name(self) -> str:
        """The built-in's name (``openai``...), ``""`` when there is none."""
        return self._builtin.name if self._builtin is not None else ""

    @property
    def vendor(self) -> str | None:
        """The vendor name its records carry (``openai``, ``fireworks-ai``...), None when
        there is no built-in."""
        return self._builtin.vendor if self._builtin is not None else None

    @property
    def default_api_id(self) -> str | None:
        """The ``api_id`` a manager of this client defaults to, when not the class name."""
        return self._builtin.default_api_id if self._builtin is not None else None

    def active(self, extractor: UniversalExtractor) -> bool:
        """True when the built-in tracks calls: there is one and no config is loaded."""
        return self._builtin is not None and not extractor.configs

    def tracks(self, extractor: UniversalExtractor, path: str) -> bool:
        """True when the built-in records calls of ``path`` now."""
        builtin = self._builtin
        return builtin is not None and not extractor.configs and builtin.tracks(path)

    def defers(self, extractor: UniversalExtractor, path: str, response: Any) -> bool:
        """True when ``response`` holds the call's stream, to be recorded when it ends."""
        builtin = self._builtin
        return (
            builtin is not None
            and path in builtin.stream_paths
            and not extractor.tracks(path)
            and isinstance(response, dict)
            and response.get(STREAM_KEY) is not None
        )

    def wrap_inner_stream(self, call: Call, response: dict[str, Any]) -> None:
        """Replace ``response``'s stream, in place, by one that is tracked when it ends."""
        from .._api.proxy import track_stream

        head = {k: v for k, v in response.items() if k != STREAM_KEY}
        response[STREAM_KEY] = track_stream(call, response[STREAM_KEY], first=(head,))

    def records_for_call(
        self, path: str, kwargs: Mapping[str, Any], response: Any, tags: Tags
    ) -> list[WireRecord]:
        """The ``/track`` record of a call that returned ``response``."""
        if self._builtin is None:
            return []
        return self._records(self._builtin.usage(path, kwargs, response), path, tags)

    def records_for_stream(
        self, path: str, kwargs: Mapping[str, Any], chunks: Sequence[Any], tags: Tags
    ) -> list[WireRecord]:
        """The ``/track`` record of a streamed call, from what it yielded."""
        if self._builtin is None:
            return []
        return self._records(self._builtin.stream_usage(path, kwargs, chunks), path, tags)

    def _records(self, usage: Usage | None, path: str, tags: Tags) -> list[WireRecord]:
        manager = self._manager
        if usage is None:
            manager.engine.stats.discard("invalid_payload")
            manager.warn_no_record(
                path,
                lambda: (
                    f"the built-in {self.name} tracking found no model in the call or its "
                    "answer (pass model=, or serve a handling config for this api_id)"
                ),
            )
            return []
        if not usage.payload and not self._warned_no_usage:
            self._warned_no_usage = True
            logger.warning(
                "a call of %s (api_id %r) ended before the provider reported its usage (a "
                "stream left early, or an OpenAI chat stream without stream_options="
                "{'include_usage': True}): recorded with an empty usage",
                path,
                manager.api_id,
            )
        key, ctx = tags
        try:
            record = track_record(
                usage,
                client_customer_key=key,
                context=ctx,
                max_bytes=manager.settings.max_record_bytes,
                legacy=manager.settings.track_format is TrackFormat.LEGACY,
            )
        except RecordError as exc:
            manager.engine.stats.discard("invalid_payload")
            reason = f"its usage was not recordable: {exc}"
            manager.warn_no_record(path, lambda: reason)
            return []
        if not SEEN.claim(usage.response_id):
            # An OpenTelemetry span of the same call was recorded first (aicm.otel).
            logger.debug("%s already recorded from its span", usage.response_id)
            return []
        return [record]
