"""Reading the service's answers: per-record results, triggered limits, error statuses (layer 2).

Pure functions of an answer's status, body and headers; the HTTP client (http.py) calls
them, and raises or returns what they make of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import cattrs
import httpx

from .._core.exceptions import (
    AicmError,
    APIStatusError,
    AuthenticationError,
    ClientRequestError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    ServiceRedirectError,
)
from .._core.jsonplain import dumps, loads
from .._core.models import RecordResult, TrackResult, converter
from .._core.policy import Outcome, classify_status, parse_retry_after

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_DOCUMENT_BYTES",
    "BoundedBody",
    "api_error",
    "body_truncated",
    "error_for_answer",
    "json_body",
    "limits_in",
    "parse_results",
]

# The most of one answer aicm reads, decoded (an ingest answer is ~100 bytes a record; a
# configs or management document may hold every handling config, or a large page), so no
# answer can grow the process without bound.
MAX_ANSWER_BYTES = 1 << 20
MAX_DOCUMENT_BYTES = 16 << 20
_BODY_EXCERPT = 2000
# Set on a response whose body was cut at the limit (the rest was never read).
_TRUNCATED = "aicm_body_truncated"
# Headers that describe the body as it came over the wire, not as it was read.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class BoundedBody:
    """A streamed answer's body, read up to ``limit`` bytes (decoded), by the async and
    the blocking client alike.

    The usual answer states its length (and no encoding to expand it): ``whole``, read it
    at once. One said to be over the limit is not read at all. Any other is read chunk by
    chunk while ``wanted`` (`add()` says when to stop); `response()` is then the answer
    with what was read, marked when it was cut (see `body_truncated()`).
    """

    def __init__(self, streamed: httpx.Response, limit: int) -> None:
        declared = streamed.headers.get("Content-Length", "")
        known = declared.isdigit() and "Content-Encoding" not in streamed.headers
        self.whole = known and int(declared) <= limit
        self.truncated = known and not self.whole
        self.wanted = not known
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk`` (up to the limit); True when the rest is not to be read."""
        if self._size + len(chunk) > self._limit:
            self._parts.append(chunk[: self._limit - self._size])
            self.truncated = True
            return True
        self._parts.append(chunk)
        self._size += len(chunk)
        return False

    def response(self, streamed: httpx.Response) -> httpx.Response:
        """A response holding the body read of ``streamed``."""
        return httpx.Response(
            streamed.status_code,
            headers=[
                (k, v) for k, v in streamed.headers.multi_items() if k.lower() not in _WIRE_HEADERS
            ],
            content=b"".join(self._parts),
            request=streamed.request,
            extensions={_TRUNCATED: self.truncated},
        )


def body_truncated(response: httpx.Response) -> bool:
    """True when ``response``'s body was cut at the read limit (see `BoundedBody`)."""
    return bool(response.extensions.get(_TRUNCATED))


def json_body(response: httpx.Response, where: str, error: type[AicmError]) -> Any:
    """A 2xx document's decoded JSON (None for an empty body); ``error`` when the body was
    cut at `MAX_DOCUMENT_BYTES` (see `BoundedBody`) or is not JSON."""
    if body_truncated(response):
        raise error(
            f"{where}: the service's answer is larger than {MAX_DOCUMENT_BYTES} bytes; it was"
            " not read further"
        )
    text: str = response.text
    if not text.strip():
        return None
    try:
        return loads(text)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
        raise error(f"{where}: the service's answer is not JSON: {exc}") from exc


def _is_plain_success(result: object) -> bool:
    if not isinstance(result, dict):
        return False
    # Compared, not looked up in a set: a status of any JSON type (a list, say) is no
    # success, and must not raise.
    status = result.get("status")
    return (status == "queued" or status == "completed") and not result.get("errors")


def parse_results(text: str, *, only_failures: bool = False) -> TrackResult | None:
    """The answer's per-record results; with ``only_failures``, the plain successes are
    skipped (the delivery engine only needs to know which records were refused)."""
    if only_failures and '"error' not in text and "service_key_unknown" not in text:
        # Every status is a success (no "error", "errors" or unknown key anywhere): a
        # 1000-record answer need not be parsed record by record.
        return TrackResult(triggered_limits=limits_in(text) or {})
    try:
        data = loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
        return None
    if not isinstance(data, Mapping) or not isinstance(data.get("results", []), list):
        return None
    results = data.get("results", [])
    try:
        if only_failures:
            results = [r for r in results if not _is_plain_success(r)]
        return TrackResult(
            results=tuple(converter.structure(r, RecordResult) for r in results),
            triggered_limits=dict(data.get("triggered_limits") or {}),
        )
    except (TypeError, ValueError, AttributeError, cattrs.BaseValidationError):
        return None


def limits_in(text: str) -> dict[str, Any] | None:
    """The answer's top-level ``triggered_limits`` object, read alone (None when absent).

    A quoted ``"triggered_limits"`` followed by a colon is a key: inside a JSON string its
    quotes would be escaped.
    """
    key = _LIMITS_KEY.search(text)
    if key is None:
        return None
    try:
        value, _ = _DECODER.raw_decode(text, key.end())
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


_LIMITS_KEY = re.compile(r'"triggered_limits"[ \t\r\n]*:[ \t\r\n]*')  # JSON's whitespace
_DECODER = json.JSONDecoder()


def _redirect_message(
    status: int, location: str | None, request_url: str | None, api_base: str | None
) -> str:
    now = f" (now {api_base!r})" if api_base else ""
    fix = f"set aicm_api_base / AICM_API_BASE{now} to the address the service answers at"
    if status == 304:
        # We only ask conditionally with a cached answer in hand, and that 304 never gets here.
        return f"the service answered 304 Not Modified to a request that was not conditional; {fix}"
    if not location:
        return f"the service answered a redirect without a Location header; {fix}"
    target, hint = location, ""
    if request_url is not None:
        try:
            url = httpx.URL(request_url)
            joined = url.join(location)
        except (httpx.InvalidURL, ValueError, TypeError):
            pass
        else:
            target = str(joined)
            # The usual case (http:// -> https://, a new host): the same api_url and
            # endpoint under a new base, which is then the value to set.
            base_path = urlsplit(api_base).path.rstrip("/") if api_base else ""
            tail = url.path[len(base_path) :] if url.path.startswith(base_path) else ""
            bare = str(joined.copy_with(query=None, fragment=None))
            if tail and bare.endswith(tail) and len(bare) > len(tail):
                hint = f", probably {bare[: -len(tail)]!r}"
    return (
        f"the service redirects this request to {target[:500]!r} (its Location header); aicm "
        f"does not follow redirects, so a POST is never resent as a GET: {fix}{hint}"
    )


def error_for_answer(
    status: int,
    text: str,
    retry_after_header: str | None,
    *,
    location: str | None = None,
    request_url: str | None = None,
    api_base: str | None = None,
) -> APIStatusError | None:
    """The [`APIStatusError`][aicm.APIStatusError] subclass a non-2xx answer means (None for a 2xx).

    ``location`` (the ``Location`` header), ``request_url`` and ``api_base`` let a
    redirect's error say where the service sent the request and what to set instead.
    """
    verdict = classify_status(status, retry_after_header)
    if verdict.outcome is Outcome.DELIVERED:
        return None
    excerpt = text[:_BODY_EXCERPT]
    if verdict.outcome is Outcome.MISCONFIGURED:
        return ServiceRedirectError(
            _redirect_message(status, location, request_url, api_base),
            status_code=status,
            location=location,
            body=excerpt,
        )
    if verdict.outcome is Outcome.AUTH:
        return AuthenticationError(
            "the API key was refused; records are kept", status_code=status, body=excerpt
        )
    if verdict.outcome is Outcome.RETRYABLE:
        retry_after = parse_retry_after(retry_after_header)
        if status == 429:
            return RateLimitedError(
                "rate limited", status_code=status, body=excerpt, retry_after=retry_after
            )
        return ServerError(
            "the service failed", status_code=status, body=excerpt, retry_after=retry_after
        )
    parsed = parse_results(text)
    return ClientRequestError(
        "the service rejected the request",
        status_code=status,
        body=excerpt,
        results=parsed.results if parsed is not None else (),
    )


def api_error(error: APIStatusError, text: str, path: str) -> APIStatusError:
    """``error`` as a management call raises it: a 404 as a `NotFoundError` naming what was
    not found, and the service's JSON ``detail`` (if any) in the message and ``error.detail``."""
    detail = _detail(text)
    if error.status_code == 404:
        error = NotFoundError(f"not found: {detail or path}", status_code=404, body=error.body)
    elif detail:
        error.args = (f"{error.args[0]}: {detail}",)
    error.detail = detail
    return error


def _detail(text: str) -> str | None:
    """The ``detail`` of a JSON error body, as one line; None when there is none."""
    try:
        data = loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, Mapping) or "detail" not in data:
        return None
    detail = data["detail"]
    return (detail if isinstance(detail, str) else dumps(detail))[:500]
