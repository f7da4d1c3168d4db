"""Built-in tracking of Google Gemini through ``google-genai``: ``models.generate_content`` and
``models.generate_content_stream``, on the client and on its ``aio`` twin.

The model is the answer's ``model_version`` (else the model asked for), the id its
``response_id``, the usage its ``usage_metadata``; a stream's last usage is its total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._base import Found, builtin, first_attr, found, paths_under

__all__ = ["GEMINI"]

_METHODS = ("models.generate_content", "models.generate_content_stream", "models.embed_content")


def _read(path: str, kwargs: Mapping[str, Any], response: Any) -> Found | None:
    model = first_attr(response, "model_version", "modelVersion")
    rid = first_attr(response, "response_id", "responseId")
    usage = first_attr(response, "usage_metadata", "usageMetadata")
    return found(model, rid, usage)


def _read_stream(path: str, kwargs: Mapping[str, Any], chunks: Sequence[Any]) -> Found | None:
    model: str | None = None
    rid: str | None = None
    usage: dict[str, Any] = {}
    for chunk in chunks:
        found = _read(path, kwargs, chunk)
        if found is None:
            continue
        model = found[0] or model
        rid = rid or found[1]
        if found[2]:
            usage = found[2]  # each chunk's usage is the total so far
    return model, rid, usage


GEMINI = builtin(
    "gemini",
    paths_under(("", "aio."), _METHODS),
    _read,
    _read_stream,
    vendor="google",
    default_api_id="google-genai",
)
