"""Delivery policy as pure functions: outcome classification, Retry-After, backoff (layer 1)."""

from __future__ import annotations

import email.utils
import enum
import math
import random
import time

import attrs

from .exceptions import (
    AicmError,
    APIStatusError,
    MissingApiKeyError,
    TransportError,
)
from .models import TrackResult

__all__ = [
    "Answer",
    "Outcome",
    "RetryPolicy",
    "Verdict",
    "answer_error",
    "classify_status",
    "parse_retry_after",
]

# 408 Request Timeout, 425 Too Early, 429 Too Many Requests: the request may succeed later.
_RETRYABLE_4XX = frozenset({408, 425, 429})
# Retry-After beyond this is treated as this: a service asking for an hour must not park us.
_MAX_RETRY_AFTER = 3600.0


class Outcome(enum.Enum):
    """What a delivery attempt's answer means for the records in it."""

    DELIVERED = "delivered"
    RETRYABLE = "retryable"
    AUTH = "auth"
    #: a redirect (3xx): ``api_base`` points at the wrong address. Like AUTH, no record is
    #: at fault: delivery pauses and keeps them until the setting is fixed.
    MISCONFIGURED = "misconfigured"
    PERMANENT = "permanent"


@attrs.frozen
class Verdict:
    """An outcome, and the delay the service asked for (seconds) if any."""

    outcome: Outcome
    retry_after: float | None = None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def classify_status(status: int | None, retry_after: str | None = None) -> Verdict:
    """Classify an HTTP answer; ``None`` means no answer at all (a transport error)."""
    if status is None:
        return Verdict(Outcome.RETRYABLE)
    if 200 <= status < 300:
        return Verdict(Outcome.DELIVERED)
    if 300 <= status < 400:
        return Verdict(Outcome.MISCONFIGURED)
    if status in (401, 403):
        return Verdict(Outcome.AUTH)
    if status in _RETRYABLE_4XX or status >= 500:
        return Verdict(Outcome.RETRYABLE, parse_retry_after(retry_after))
    return Verdict(Outcome.PERMANENT)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter; a Retry-After from the service wins.

    For a call retried in its caller's task (see ``aicm._io.retrying``) it also says how
    many ``attempts`` in all, and when to stop early: a ``Retry-After`` over
    ``max_retry_after`` s, or any wait over ``max_delay`` s; a wait sleeps at most
    ``max_sleep`` s. The delivery actor, which retries until delivered, uses only the
    backoff.
    """

    base: float = 0.5
    cap: float = 60.0
    attempts: int = 3
    max_retry_after: float = math.inf
    max_delay: float = math.inf
    max_sleep: float = math.inf

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        ceiling = min(self.cap, self.base * (2.0 ** min(max(attempt - 1, 0), 62)))
        jittered = (rng or random).uniform(0.0, ceiling)
        return jittered if retry_after is None else retry_after

    def next_attempt_at(
        self,
        attempt: int,
        *,
        now: float,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """When (on the clock ``now`` reads) retry number ``attempt`` may go out.

        The one place a retry's time is computed: the delivery actor, IMMEDIATE sends and
        the service API calls all ask here.
        """
        return now + self.delay(attempt, retry_after=retry_after, rng=rng)


@attrs.frozen
class Answer:
    """One request's outcome as a value: the service's result, or the error a caller sees.

    ``outcome`` is `Outcome.DELIVERED` with ``result`` set, or another outcome with
    ``error`` set (the [`APIStatusError`][aicm.APIStatusError] subclass,
    [`TransportError`][aicm.TransportError] or [`MissingApiKeyError`][aicm.MissingApiKeyError] that
    `unwrap()` raises).
    """

    outcome: Outcome
    result: TrackResult | None = None
    error: AicmError | None = None

    @property
    def retry_after(self) -> float | None:
        """The delay (s) the service asked for, if any."""
        return self.error.retry_after if isinstance(self.error, APIStatusError) else None

    def unwrap(self) -> TrackResult:
        """The result of a delivered answer; raises the error of any other."""
        if self.error is not None:
            raise self.error
        return self.result if self.result is not None else TrackResult()


def answer_error(error: APIStatusError | TransportError | MissingApiKeyError) -> Answer:
    """The `Answer` for a request that ended in ``error`` (classified by its status)."""
    if isinstance(error, APIStatusError):
        return Answer(classify_status(error.status_code).outcome, error=error)
    if isinstance(error, MissingApiKeyError):
        return Answer(Outcome.AUTH, error=error)  # no key to send: like a refused one
    return Answer(Outcome.RETRYABLE, error=error)  # no answer at all
