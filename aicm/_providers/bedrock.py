"""Built-in tracking of Amazon Bedrock through boto3's ``bedrock-runtime`` client: ``converse``
and ``converse_stream`` (boto3 is sync only).

Bedrock answers name neither the model nor an id: the model is the call's ``modelId`` and the
id the answer's ``ResponseMetadata.RequestId``. ``converse`` carries ``usage``; the event
stream of ``converse_stream`` (the ``"stream"`` of the dict it returns) ends with a
``metadata`` event carrying it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._base import Found, builtin, plain_usage

__all__ = ["BEDROCK", "STREAM_KEY"]

STREAM_KEY = "stream"
_METHODS = ("converse", "converse_stream")


def _model(kwargs: Mapping[str, Any]) -> str | None:
    model = kwargs.get("modelId")
    return model if isinstance(model, str) and model else None


def _request_id(response: Any) -> str | None:
    meta = response.get("ResponseMetadata") if isinstance(response, Mapping) else None
    rid = meta.get("RequestId") if isinstance(meta, Mapping) else None
    return rid if isinstance(rid, str) and rid else None


def _read(path: str, kwargs: Mapping[str, Any], response: Any) -> Found | None:
    if not isinstance(response, Mapping):
        return None
    usage = response.get("usage")
    return _model(kwargs), _request_id(response), plain_usage(usage) if usage else {}


def _read_stream(path: str, kwargs: Mapping[str, Any], chunks: Sequence[Any]) -> Found | None:
    rid: str | None = None
    usage: dict[str, Any] = {}
    for event in chunks:
        if not isinstance(event, Mapping):
            continue
        rid = rid or _request_id(event)  # the call's answer is handed in first
        metadata = event.get("metadata")
        if isinstance(metadata, Mapping) and metadata.get("usage"):
            usage = plain_usage(metadata["usage"])
    return _model(kwargs), rid, usage


BEDROCK = builtin(
    "bedrock",
    _METHODS,
    _read,
    _read_stream,
    vendor="amazon-bedrock",
    default_api_id="bedrock-runtime",
    stream_paths=frozenset({"converse_stream"}),
)
