"""The one retry loop for calls made in the caller's task: attempts, backoff, Retry-After (layer 2).

IMMEDIATE delivery, the service API's calls and a tracker's config fetch share it; when the
next attempt goes out is computed in one place (`RetryPolicy.next_attempt_at()`), which the
delivery engine asks for its own backoff too.
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
    retryable: tuple[type[Exception], ...] = RETRYABLE,
    on_retry: Callable[[Exception, int, float], None] | None = None,
    rng: random.Random | None = None,
) -> _T:
    """Await ``call()`` up to ``policy.attempts`` times while it raises a ``retryable`` error.

    Between attempts it sleeps the backoff or the service's ``Retry-After`` (at most
    ``policy.max_sleep`` s); it stops when the service asks for more than
    ``policy.max_retry_after`` s or the wait is over ``policy.max_delay`` s, raising
    `GaveUp`. ``on_retry(error, attempt, delay)`` is told before each sleep.
    """
    attempt = 1
    while True:
        try:
            return await call()
        except retryable as exc:
            delay = _wait_before_next(exc, attempt, policy, anyio.current_time(), rng)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            await anyio.sleep(min(delay, policy.max_sleep))
            attempt += 1


async def retrying_or_raise(
    call: Callable[[], Awaitable[_T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[Exception, int, float], None] | None = None,
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
    on_retry: Callable[[Exception, int, float], None] | None = None,
    rng: random.Random | None = None,
) -> _T:
    """`retrying()` for a plain thread: the same attempts and waits, slept in the thread."""
    attempt = 1
    while True:
        try:
            return call()
        except RETRYABLE as exc:
            delay = _wait_before_next(exc, attempt, policy, time.monotonic(), rng)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            time.sleep(min(delay, policy.max_sleep))
            attempt += 1


def _wait_before_next(
    exc: Exception, attempt: int, policy: RetryPolicy, now: float, rng: random.Random | None
) -> float:
    """How long to wait after ``attempt`` failed with ``exc``; `GaveUp` when no more."""
    if attempt >= policy.attempts:
        raise GaveUp(exc, attempts=attempt) from exc
    asked = exc.retry_after if isinstance(exc, APIStatusError) else None
    if asked is not None and asked > policy.max_retry_after:
        raise GaveUp(exc, attempts=attempt, asked=asked) from exc
    delay = policy.next_attempt_at(attempt, now=now, retry_after=asked, rng=rng) - now
    if delay > policy.max_delay:
        raise GaveUp(exc, attempts=attempt, asked=delay) from exc
    return delay
