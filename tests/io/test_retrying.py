"""The one retry loop: attempts, backoff, Retry-After, and when it gives up."""

from __future__ import annotations

import random

import anyio
import attrs
import pytest

from aicm._core.exceptions import ClientRequestError, RateLimitedError, TransportError
from aicm._core.policy import RetryPolicy
from aicm._io.retrying import GaveUp, retrying, retrying_or_raise

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(base=0.01, cap=0.02)


class Flaky:
    """A call failing with the given errors, one per attempt, then answering ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def limited(after: float) -> RateLimitedError:
    return RateLimitedError("rate limited", status_code=429, retry_after=after)


async def test_retries_until_the_call_succeeds(anyio_backend: str) -> None:
    """Retryable failures are tried again, each wait within the policy's jittered bound."""
    call = Flaky(TransportError("refused"), limited(0.01), TransportError("reset"))
    waits: list[tuple[int, float]] = []
    result = await retrying(
        call,
        attrs.evolve(FAST, attempts=4),
        on_retry=lambda exc, attempt, delay: waits.append((attempt, delay)),
        rng=random.Random(1),
    )
    assert result == "ok"
    assert call.calls == 4
    assert [a for a, _ in waits] == [1, 2, 3]
    assert waits[1][1] == pytest.approx(0.01)  # the Retry-After, not the backoff
    assert all(0 <= d <= FAST.cap for _, d in waits)


async def test_gives_up_after_the_last_attempt(anyio_backend: str) -> None:
    """Out of attempts (three by default): GaveUp carrying the last failure and how many
    attempts were made."""
    last = TransportError("third")
    call = Flaky(TransportError("first"), TransportError("second"), last)
    with pytest.raises(GaveUp) as caught:
        await retrying(call, FAST)
    assert caught.value.last is last
    assert caught.value.attempts == 3
    assert caught.value.asked is None
    assert call.calls == 3


async def test_other_errors_are_not_retried(anyio_backend: str) -> None:
    """A permanent refusal propagates as is, after one attempt."""
    call = Flaky(ClientRequestError("bad", status_code=400))
    with pytest.raises(ClientRequestError):
        await retrying(call, attrs.evolve(FAST, attempts=5))
    assert call.calls == 1


async def test_a_retry_after_longer_than_allowed_stops_at_once(anyio_backend: str) -> None:
    """The service asks to wait longer than the caller may: no sleep, GaveUp saying how long."""
    call = Flaky(limited(30.0))
    with anyio.fail_after(1), pytest.raises(GaveUp) as caught:
        await retrying(call, attrs.evolve(FAST, max_retry_after=5.0))
    assert caught.value.asked == 30.0
    assert call.calls == 1


async def test_a_backoff_longer_than_allowed_stops_at_once(anyio_backend: str) -> None:
    """``max_delay`` bounds any wait, the policy's own backoff included."""
    call = Flaky(TransportError("down"))
    slow = RetryPolicy(base=100.0, cap=100.0, max_delay=5.0)
    with anyio.fail_after(1), pytest.raises(GaveUp) as caught:
        await retrying(call, slow, rng=random.Random(3))
    assert caught.value.asked is not None
    assert caught.value.asked > 5.0


async def test_max_sleep_caps_each_wait(anyio_backend: str) -> None:
    """A long Retry-After that is allowed still sleeps at most ``max_sleep``."""
    call = Flaky(limited(30.0))
    started = anyio.current_time()
    with anyio.fail_after(2):
        assert await retrying(call, attrs.evolve(FAST, max_sleep=0.01)) == "ok"
    assert anyio.current_time() - started < 1.0


async def test_retrying_or_raise_raises_the_calls_own_last_error(anyio_backend: str) -> None:
    """Given up, ``retrying_or_raise`` raises the last failure itself, its cause intact,
    with nothing of the loop chained to it; a success is returned as is."""
    cause = OSError("connection reset")
    last = TransportError("third")
    last.__cause__ = cause
    call = Flaky(TransportError("first"), TransportError("second"), last)
    with pytest.raises(TransportError) as caught:
        await retrying_or_raise(call, FAST)
    assert caught.value is last
    assert caught.value.__cause__ is cause
    assert not isinstance(caught.value.__context__, GaveUp)
    assert call.calls == 3
    assert await retrying_or_raise(Flaky(TransportError("once")), FAST) == "ok"
