"""The one retry loop for calls made in the caller's task: attempts, backoff, Retry-After (layer 2).

IMMEDIATE delivery, the service API's calls and a tracker's config fetch share it; the
wait comes from `RetryPolicy.next_attempt_at()`, as the delivery engine's own backoff does.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from .._core.exceptions import APIStatusError, RateLimitedError, ServerError, TransportError
from .._core.policy import RetryPolicy

__all__ = ["RETRYABLE", "GaveUp", "retrying", "retrying_blocking", "retrying_or_raise"]

_T = TypeVar("_T")
OnRetry = Callable[[Exception, int, float], None]

#: The failures worth another attempt: no answer, 5xx/408/425, and 429.
RETRYABLE: tuple[type[Exception], ...] = (TransportError, ServerError, RateLimitedError)


class GaveUp(Exception):
    """The retry loop stopped: ``last`` is the final failure, after ``attempts`` attempts;
    ``asked`` is the wait (``Retry-After`` or backoff) when one too long stopped it early."""

    def __init__(self, last: Exception, *, attempts: int, asked: float | None = None) -> None:
        super().__init__(str(last))
        self.last = last
        self.attempts = attempts
        self.asked = asked


async def retrying(
    call: Callable[[], Awaitable[_T]],
    policy: RetryPolicy,
    *,
    on_retry: OnRetry | None = None,
    rng: random.Random | None = None,
) -> _T:
    """Await ``call()`` up to ``policy.attempts`` times while it raises a `RETRYABLE` error.

    Between attempts it sleeps the backoff or the service's ``Retry-After`` (at most
    ``policy.max_sleep`` s); it stops when the service asks for more than
    ``policy.max_retry_after`` s or the wait is over ``policy.max_delay`` s, raising
    `GaveUp`. ``on_retry(error, attempt, delay)`` is told before each sleep.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except RETRYABLE as exc:
            sleep = _sleep_before_next(exc, attempt, policy, anyio.current_time(), rng, on_retry)
        await anyio.sleep(sleep)


async def retrying_or_raise(
    call: Callable[[], Awaitable[_T]], policy: RetryPolicy, *, on_retry: OnRetry | None = None
) -> _T:
    """`retrying()`, raising the call's own last failure when the loop gives up."""
    try:
        return await retrying(call, policy, on_retry=on_retry)
    except GaveUp as gave_up:
        last = gave_up.last
    raise last  # outside the handler: its cause and context stay the call's own


def retrying_blocking(
    call: Callable[[], _T],
    policy: RetryPolicy,
    *,
    on_retry: OnRetry | None = None,
    rng: random.Random | None = None,
) -> _T:
    """`retrying()` for a plain thread: the same attempts and waits, slept in the thread."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except RETRYABLE as exc:
            sleep = _sleep_before_next(exc, attempt, policy, time.monotonic(), rng, on_retry)
        time.sleep(sleep)


def _sleep_before_next(
    exc: Exception,
    attempt: int,
    policy: RetryPolicy,
    now: float,
    rng: random.Random | None,
    on_retry: OnRetry | None,
) -> float:
    """How long to sleep after ``attempt`` failed with ``exc`` (``on_retry`` told the
    whole wait); `GaveUp` when there is to be no next attempt."""
    if attempt >= policy.attempts:
        raise GaveUp(exc, attempts=attempt) from exc
    asked = exc.retry_after if isinstance(exc, APIStatusError) else None
    if asked is not None and asked > policy.max_retry_after:
        raise GaveUp(exc, attempts=attempt, asked=asked) from exc
    delay = policy.next_attempt_at(attempt, now=now, retry_after=asked, rng=rng) - now
    if delay > policy.max_delay:
        raise GaveUp(exc, attempts=attempt, asked=delay) from exc
    if on_retry is not None:
        on_retry(exc, attempt, delay)
    return min(delay, policy.max_sleep)
