"""Usage limits the service triggered: verify its signed payload, match calls (layer 1, pure).

The service answers ingest requests and ``GET /triggered-limits`` with ``triggered_limits:
{version, key_id, public_key, encrypted_payload}``. ``encrypted_payload`` is an RS256 JWT
(issuer ``aicm-api``) whose ``triggered_limits`` claim lists the limits in force. This
module turns such an answer into [`TriggeredLimit`][aicm.TriggeredLimit] values (or says why it
cannot), and decides which of them a call or a record falls under. No I/O, no state.

pyjwt and cryptography are imported on first use: ``import aicm`` does not pay for them,
and without them (the ``aicm-sdk[limits]`` extra) `verify_answer()` raises
`LimitsUnavailableError`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from .settings import key_fingerprint

__all__ = [
    "CLOCK_LEEWAY",
    "ISSUER",
    "LimitsPayloadError",
    "LimitsUnavailableError",
    "TriggeredLimit",
    "VerifiedLimits",
    "api_key_id_of",
    "matching",
    "parse_instant",
    "vendor_of",
    "verify_answer",
]

#: The ``iss`` claim every payload must carry.
ISSUER = "aicm-api"

#: Seconds of clock difference with the service tolerated on a payload's exp/nbf.
CLOCK_LEEWAY = 60.0

_THRESHOLD_TYPES = frozenset({"alert", "limit"})

# The service's vendor names (the part before ``::`` of a service key), by the api_id or
# client class name a wrapped client is tracked under.
_VENDORS = {
    "openai": "openai",
    "asyncopenai": "openai",
    "openai_chat": "openai",
    "openai_responses": "openai",
    "azureopenai": "openai",
    "asyncazureopenai": "openai",
    "anthropic": "anthropic",
    "asyncanthropic": "anthropic",
    "anthropicbedrock": "anthropic",
    "asyncanthropicbedrock": "anthropic",
    "gemini": "google",
    "google": "google",
    "google-genai": "google",
    "bedrock": "amazon-bedrock",
    "bedrock-runtime": "amazon-bedrock",
    "amazon-bedrock": "amazon-bedrock",
    "bedrockruntime": "amazon-bedrock",
    "fireworks-ai": "fireworks-ai",
    "xai": "xai",
}


class LimitsPayloadError(Exception):
    """A ``triggered_limits`` answer that cannot be trusted or read (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LimitsUnavailableError(LimitsPayloadError):
    """pyjwt or cryptography is not installed: payloads cannot be verified."""


@attrs.frozen(kw_only=True)
class TriggeredLimit:
    """One limit the service says is reached, as its signed payload states it.

    ``threshold_type`` is ``"limit"`` (calls are refused) or ``"alert"`` (a warning only).
    ``service_key`` / ``customer_key`` of None match any; ``expires_at`` (epoch seconds)
    of None means until the service says otherwise.
    """

    event_id: str
    limit_id: str
    threshold_type: str
    amount: float | None = None
    period: str | None = None
    api_key_id: str | None = None
    service_key: str | None = None
    customer_key: str | None = None
    limit_context: str | None = None
    limit_message: str | None = None
    triggered_at: str | None = None
    expires_at: float | None = None

    @property
    def hard(self) -> bool:
        """True for a ``"limit"``: matching calls are refused."""
        return self.threshold_type == "limit"

    def active(self, now: float) -> bool:
        """False once ``expires_at`` has passed."""
        return self.expires_at is None or now < self.expires_at

    def applies(
        self, *, service_keys: Collection[str], customer_key: str | None, api_key_id: str | None
    ) -> bool:
        """Whether a call or record with these keys falls under this limit.

        A limit for another API key never applies; a limit naming a service applies when
        one of ``service_keys`` is that service; one naming a customer, when
        ``customer_key`` is that customer.
        """
        if self.api_key_id is not None and api_key_id not in (None, self.api_key_id):
            return False
        if self.service_key is not None and self.service_key not in service_keys:
            return False
        return self.customer_key is None or self.customer_key == customer_key

    def describe(self, *, with_message: bool = True) -> str:
        """One line naming the limit for logs and errors."""
        scope = []
        if self.service_key is not None:
            scope.append(f"service {self.service_key!r}")
        if self.customer_key is not None:
            scope.append(f"customer {self.customer_key!r}")
        where = f" for {' and '.join(scope)}" if scope else ""
        amount = f" of ${self.amount:g}" if self.amount is not None else ""
        period = f" per {self.period}" if self.period else ""
        text = f"{self.threshold_type} {self.limit_id}{amount}{period}{where}"
        if with_message and self.limit_message:
            text += f": {self.limit_message}"
        return text


@attrs.frozen(kw_only=True)
class VerifiedLimits:
    """A payload whose signature checked out: its limits, and when it was issued."""

    limits: tuple[TriggeredLimit, ...]
    issued_at: float | None
    key_id: str | None


def api_key_id_of(api_key: str | None) -> str | None:
    """The id of an API key, as limits name it: the part after its last dot.

    A key with nothing after a dot (or no dot) has no id of its own: it gets its one-way
    fingerprint, the one the local collector gives it too, so its limits still name it
    (and never the key itself). None when there is no key.
    """
    if not api_key:
        return None
    tail = api_key.rsplit(".", 1)[1] if "." in api_key else ""
    return tail or key_fingerprint(api_key)


def vendor_of(api_id: str) -> str:
    """The service's vendor name for a client tracked as ``api_id`` (itself when unknown)."""
    return _VENDORS.get(api_id.lower(), api_id.lower())


def parse_instant(value: object) -> float | None:
    """Epoch seconds from an ISO-8601 string (naive means UTC) or a number; None for None.

    Raises ValueError for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"not a time: {value!r}")
        return seconds
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = dt.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return moment.timestamp()
    raise ValueError(f"not a time: {type(value).__name__}")


def _optional_text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise LimitsPayloadError(f"{name} is {type(value).__name__}, not text")
    return value


def _limit_from_claim(item: object) -> TriggeredLimit:
    if not isinstance(item, Mapping):
        raise LimitsPayloadError(f"a triggered limit is {type(item).__name__}, not an object")
    event_id = item.get("event_id")
    limit_id = item.get("limit_id")
    threshold = item.get("threshold_type")
    for name, value in (("event_id", event_id), ("limit_id", limit_id)):
        if not isinstance(value, str) or not value:
            raise LimitsPayloadError(f"a triggered limit has no {name}")
    if threshold not in _THRESHOLD_TYPES:
        raise LimitsPayloadError(f"unknown threshold_type {str(threshold)[:40]!r}")
    amount = item.get("amount")
    try:
        amount_value = None if amount is None else float(amount)
    except (TypeError, ValueError) as exc:
        raise LimitsPayloadError(f"limit {limit_id!r}: amount: {exc}") from None
    try:
        expires_at = parse_instant(item.get("expires_at"))
    except (TypeError, ValueError, OverflowError) as exc:
        raise LimitsPayloadError(f"limit {limit_id!r}: expires_at: {exc}") from None
    return TriggeredLimit(
        event_id=str(event_id),
        limit_id=str(limit_id),
        threshold_type=str(threshold),
        amount=amount_value,
        period=_optional_text(item, "period"),
        api_key_id=_optional_text(item, "api_key_id"),
        service_key=_optional_text(item, "service_key"),
        customer_key=_optional_text(item, "customer_key"),
        limit_context=_optional_text(item, "limit_context"),
        limit_message=_optional_text(item, "limit_message"),
        triggered_at=None if item.get("triggered_at") is None else str(item.get("triggered_at")),
        expires_at=expires_at,
    )


def verify_answer(answer: object, *, pinned_key: str | None = None) -> VerifiedLimits:
    """Check the signature of a ``triggered_limits`` answer and read its limits.

    With ``pinned_key`` (a PEM public key) only that key is trusted; without it the
    ``public_key`` the answer itself carries is used, which proves the payload is intact
    but not who made it. Raises `LimitsPayloadError` (why, in ``reason``) for a
    payload that is malformed, signed by another key, altered, expired or not issued by
    ``aicm-api``; `LimitsUnavailableError` when pyjwt/cryptography are missing.
    """
    if not isinstance(answer, Mapping):
        raise LimitsPayloadError(f"triggered_limits is {type(answer).__name__}, not an object")
    token = answer.get("encrypted_payload")
    if not isinstance(token, str) or not token:
        raise LimitsPayloadError("triggered_limits has no encrypted_payload")
    key = pinned_key if pinned_key is not None else answer.get("public_key")
    if not isinstance(key, str) or not key:
        raise LimitsPayloadError("triggered_limits has no public_key and none is pinned")
    try:
        import jwt  # lazily: only a tracker that meets a limit pays for it
    except ImportError as exc:
        raise LimitsUnavailableError(
            f"pyjwt with cryptography is needed to verify usage limits ({exc})"
        ) from None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            issuer=ISSUER,
            # iat only orders payloads here: a service clock a little ahead of ours must
            # not make every payload "not yet valid"; exp/nbf get a minute of leeway.
            options={"require": ["iss"], "verify_iat": False},
            leeway=CLOCK_LEEWAY,
        )
    except jwt.PyJWTError as exc:
        raise LimitsPayloadError(f"{type(exc).__name__}: {exc}") from None
    except (ValueError, TypeError) as exc:  # a key cryptography cannot load
        raise LimitsPayloadError(f"the public key cannot be used: {exc}") from None
    items = claims.get("triggered_limits")
    if not isinstance(items, list):
        raise LimitsPayloadError("the payload's claims hold no triggered_limits list")
    try:
        issued_at = parse_instant(claims.get("iat"))
    except ValueError:
        issued_at = None
    key_id = answer.get("key_id")
    return VerifiedLimits(
        limits=tuple(_limit_from_claim(item) for item in items),
        issued_at=issued_at,
        key_id=key_id if isinstance(key_id, str) else None,
    )


def matching(
    limits: Iterable[TriggeredLimit],
    *,
    service_keys: Collection[str],
    customer_key: str | None,
    api_key_id: str | None,
    now: float,
) -> list[TriggeredLimit]:
    """The limits in ``limits`` that are in force at ``now`` and apply to these keys."""
    return [
        limit
        for limit in limits
        if limit.active(now)
        and limit.applies(
            service_keys=service_keys, customer_key=customer_key, api_key_id=api_key_id
        )
    ]
