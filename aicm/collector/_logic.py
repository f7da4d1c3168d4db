"""The collector's HTTP-side request logic as pure functions (layer 6, sans-IO).

The answer value the Starlette app sends and the API-key check; the wire contract itself
(batch bodies, per-record checks, results, configs) is `aicm._core.wire`, shared
with `aicm.testing`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import attrs

from aicm._core.jsonplain import dumps_bytes

__all__ = ["Answer", "api_key_matches", "bearer_token", "error_answer"]


@attrs.frozen
class Answer:
    """An HTTP answer, ready to send: status, JSON body bytes, extra headers."""

    status_code: int
    body: bytes
    headers: Mapping[str, str] = attrs.field(factory=dict)


def error_answer(status_code: int, detail: str, headers: Mapping[str, str] | None = None) -> Answer:
    """A ``{"detail": ...}`` answer."""
    return Answer(status_code, dumps_bytes({"detail": detail}), dict(headers or {}))


def bearer_token(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header ('' when there is none)."""
    if not authorization:
        return ""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def api_key_matches(authorization: str | None, expected: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <expected>``, in constant time."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:
        given = token.strip().encode("latin-1")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given, expected.encode("utf-8"))
