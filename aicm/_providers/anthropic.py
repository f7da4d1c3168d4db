"""Built-in tracking of Anthropic messages: ``messages.create`` (also with ``stream=True``) and
the ``messages.stream`` helper. ``messages.count_tokens`` is not usage and is not tracked.

A stream's usage is read from ``message_start`` (input and cache tokens) updated by each
``message_delta`` (output tokens so far); the helper's accumulated message, when there is
one, is the last word. A stream left early is recorded with the tokens seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._base import Found, builtin, found, plain_usage, read_answer

__all__ = ["ANTHROPIC"]

_METHODS = (
    "messages.create",
    "messages.stream",
    "beta.messages.create",
    "beta.messages.stream",
)


def _read_stream(path: str, kwargs: Mapping[str, Any], chunks: Sequence[Any]) -> Found | None:
    model: str | None = None
    rid: str | None = None
    usage: dict[str, Any] = {}
    for item in chunks:
        kind = getattr(item, "type", None)
        if kind == "message_start":
            message = getattr(item, "message", None)
            model = getattr(message, "model", None) or model
            rid = getattr(message, "id", None) or rid
            usage = plain_usage(getattr(message, "usage", None))
        elif kind == "message_delta":
            # Cumulative counts: the latest non-null value of each field wins.
            usage.update(plain_usage(getattr(item, "usage", None)))
        elif kind == "message":  # the helper's accumulated snapshot, appended last
            model = getattr(item, "model", None) or model
            rid = getattr(item, "id", None) or rid
            usage = {**usage, **plain_usage(getattr(item, "usage", None))}
    return found(model, rid, usage)


ANTHROPIC = builtin("anthropic", _METHODS, read_answer, _read_stream)
