"""Built-in tracking of OpenAI and OpenAI-compatible APIs: chat completions, Responses, embeddings.

A call is read from the answer: ``model`` (the model that answered), ``id`` and ``usage``.
A stream is read from its chunks: chat chunks (usage on the last one when
``stream_options={"include_usage": True}``), the chat helper's chunk events and final
snapshot, or Responses events (``response.completed`` carries the whole answer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._base import Found, builtin, found, read_answer

__all__ = ["OPENAI", "openai_vendor"]

_METHODS = (
    "chat.completions.create",
    "chat.completions.parse",
    "chat.completions.stream",
    "beta.chat.completions.parse",
    "beta.chat.completions.stream",
    "responses.create",
    "responses.parse",
    "responses.stream",
    "embeddings.create",
    "completions.create",
)

#: OpenAI-compatible vendors by a part of their API host, as the service names them.
COMPATIBLE_HOSTS: tuple[tuple[str, str], ...] = (
    ("fireworks.ai", "fireworks-ai"),
    ("api.x.ai", "xai"),
    ("groq.com", "groq"),
    ("api.together.xyz", "together"),
    ("api.deepseek.com", "deepseek"),
    ("api.mistral.ai", "mistral"),
)


def openai_vendor(base_url: object) -> str:
    """The vendor an OpenAI-SDK client talks to, by its ``base_url`` (``openai`` by default)."""
    host = str(base_url).lower().partition("://")[2].partition("/")[0]
    for part, vendor in COMPATIBLE_HOSTS:
        if host == part or host.endswith("." + part):
            return vendor
    return "openai"


def _unwrap(item: Any) -> Any:
    """The answer-shaped object inside a stream item (a chunk, a snapshot, a response)."""
    kind = getattr(item, "type", None)
    if kind == "chunk" and getattr(item, "chunk", None) is not None:
        return item.chunk  # the chat helper's ChunkEvent
    if isinstance(kind, str) and kind.startswith("response."):
        return getattr(item, "response", None)  # Responses events that carry the response
    if kind is None or getattr(item, "object", None) in (
        "chat.completion",
        "chat.completion.chunk",
    ):
        return item
    return None


def _read_stream(path: str, kwargs: Mapping[str, Any], chunks: Sequence[Any]) -> Found | None:
    model: str | None = None
    rid: str | None = None
    usage: Any = None
    for item in chunks:
        obj = _unwrap(item)
        if obj is None:
            continue
        value = getattr(obj, "model", None)
        if isinstance(value, str) and value:
            model = value
        value = getattr(obj, "id", None)
        if isinstance(value, str) and value and rid is None:
            rid = value
        value = getattr(obj, "usage", None)
        if value is not None:
            usage = value
    return found(model, rid, usage)


OPENAI = builtin("openai", _METHODS, read_answer, _read_stream)
