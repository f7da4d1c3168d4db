"""``track_llm_usage`` and ``track_llm_stream_usage``: a provider's answer or stream read by the
built-ins, for code that calls its provider itself instead of wrapping the client.

``service_key`` is either ``"vendor::model"`` (recorded as given) or the name of a vendor or
of the service's ``api_id`` for it (``"openai"``, ``"openai_chat"``, ``"anthropic"``,
``"gemini"``, ``"amazon-bedrock"``...), completed with the model the answer names.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any

import attrs

from .._core.exceptions import RecordError
from . import OPENAI, builtin_for_vendor, vendor_of
from ._base import Builtin, Usage
from .seen import SEEN

__all__ = ["LlmTrack", "atrack_stream", "llm_track", "track_stream"]


@attrs.frozen(kw_only=True)
class LlmTrack:
    """The arguments of the ``track()`` call that records one provider answer."""

    api_id: str
    service_key: str
    usage: dict[str, Any]
    response_id: str | None


def _builtin(service_key: Any) -> tuple[Builtin, str | None]:
    if not isinstance(service_key, str) or not service_key:
        raise RecordError(
            "must be 'vendor::model' or a vendor name such as 'openai'", field="service_key"
        )
    vendor = vendor_of(service_key)
    model = service_key.partition("::")[2] or None
    builtin = builtin_for_vendor(vendor)
    if builtin is None:
        builtin = OPENAI.with_vendor(vendor)  # most vendors answer in OpenAI's shape
    elif builtin.vendor != vendor:
        builtin = builtin.with_vendor(vendor)
    return builtin, model


def _finish(
    found: Usage | None, builtin: Builtin, model: str | None, response_id: str | None
) -> LlmTrack | None:
    if found is None:
        raise RecordError(
            f"the answer names no model: pass service_key='{builtin.vendor}::<model>'",
            field="service_key",
        )
    if not found.payload:
        return None
    response_id = response_id if response_id is not None else found.response_id
    if not SEEN.claim(response_id):
        return None  # already recorded from an OpenTelemetry span of the same call
    return LlmTrack(
        api_id=builtin.vendor,
        service_key=model or found.model,
        usage=found.payload,
        response_id=response_id,
    )


def _model_kwargs(model: str | None) -> dict[str, Any]:
    return {"model": model} if model else {}


def llm_track(
    service_key: str, response: Any, *, response_id: str | None = None
) -> LlmTrack | None:
    """What to record for ``response``, or None when it reports no usage (nothing to bill).

    Raises [`RecordError`][aicm.RecordError] when ``service_key`` is not a string, or when neither
    it nor the answer names the model (a Bedrock answer: pass ``"amazon-bedrock::<modelId>"``).
    """
    builtin, model = _builtin(service_key)
    found = builtin.usage("", _model_kwargs(model), response)
    return _finish(found, builtin, model, response_id)


def _stream_track(
    service_key: str, chunks: Sequence[Any], response_id: str | None
) -> LlmTrack | None:
    builtin, model = _builtin(service_key)
    if not chunks:
        return None
    found = builtin.stream_usage("", _model_kwargs(model), chunks)
    return _finish(found, builtin, model, response_id)


def track_stream(
    record: Callable[[LlmTrack], object],
    service_key: str,
    stream: Iterable[Any],
    *,
    response_id: str | None = None,
) -> Iterator[Any]:
    """Yield ``stream``'s events untouched; once it ends (or is left), ``record`` its usage."""
    _builtin(service_key)  # a bad service_key fails here, before the stream is read
    return _track_stream(record, service_key, stream, response_id)


def _track_stream(
    record: Callable[[LlmTrack], object],
    service_key: str,
    stream: Iterable[Any],
    response_id: str | None,
) -> Iterator[Any]:
    chunks: list[Any] = []
    try:
        for chunk in stream:
            chunks.append(chunk)
            yield chunk
    finally:
        track = _stream_track(service_key, chunks, response_id)
        if track is not None:
            record(track)


def atrack_stream(
    record: Callable[[LlmTrack], Awaitable[object]],
    service_key: str,
    stream: Any,
    *,
    response_id: str | None = None,
) -> AsyncIterator[Any]:
    """The async twin of `track_stream()`, for an async iterable ``stream``."""
    _builtin(service_key)
    return _atrack_stream(record, service_key, stream, response_id)


async def _atrack_stream(
    record: Callable[[LlmTrack], Awaitable[object]],
    service_key: str,
    stream: Any,
    response_id: str | None,
) -> AsyncIterator[Any]:
    chunks: list[Any] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
            yield chunk
    finally:
        track = _stream_track(service_key, chunks, response_id)
        if track is not None:
            await record(track)


def attach_result(response: Any, result: Any) -> None:
    """Set ``response.aicm_response_id`` and ``aicm_track_result`` where the object allows."""
    try:
        setattr(response, "aicm_response_id", result.response_id)  # noqa: B010
        setattr(response, "aicm_track_result", result)  # noqa: B010
    except Exception:
        pass  # a dict, a frozen object: the caller has the result from the return value


def track_options(
    *,
    timestamp: Any = None,
    customer_key: str | None = None,
    context: Any = None,
    anonymize_fields: Iterable[str] | None = None,
    anonymizer: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """The options of the ``track()`` call that records an answer: only those given, so the
    tracker's defaults (customer key, context) and anonymisation apply as to any call."""
    options = {
        "timestamp": timestamp,
        "customer_key": customer_key,
        "context": context,
        "anonymize_fields": anonymize_fields,
        "anonymizer": anonymizer,
    }
    return {k: v for k, v in options.items() if v is not None}


def _record_with(track: Callable[..., Any], found: LlmTrack, options: Mapping[str, Any]) -> Any:
    return track(
        found.api_id,
        found.service_key,
        found.usage,
        response_id=found.response_id,
        **options,
    )


def track_response(
    track: Callable[..., Any],
    service_key: str,
    response: Any,
    *,
    response_id: str | None = None,
    options: Mapping[str, Any],
) -> Any:
    """Record ``response`` with the tracker's ``track`` (sync), passing it ``options`` (see
    `track_options()`); return ``response``."""
    found = llm_track(service_key, response, response_id=response_id)
    if found is not None:
        attach_result(response, _record_with(track, found, options))
    return response


async def atrack_response(
    track: Callable[..., Awaitable[Any]],
    service_key: str,
    response: Any,
    *,
    response_id: str | None = None,
    options: Mapping[str, Any],
) -> Any:
    """Record ``response`` with the tracker's async ``track``; return ``response``."""
    found = llm_track(service_key, response, response_id=response_id)
    if found is not None:
        attach_result(response, await _record_with(track, found, options))
    return response


def stream_recorder(
    track: Callable[..., Any], options: Mapping[str, Any]
) -> Callable[[LlmTrack], Any]:
    """The ``record`` callable of `track_stream()` / `atrack_stream()` for a tracker."""

    def record(found: LlmTrack) -> Any:
        return _record_with(track, found, options)

    return record
