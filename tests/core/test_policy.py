"""Delivery policy: status classes, Retry-After parsing, and capped full-jitter backoff."""

from __future__ import annotations

import email.utils
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicm._core.policy import Outcome, RetryPolicy, Verdict, classify_status, parse_retry_after

NOW = 1_700_000_000.0

DELIVERED = [200, 201, 202, 204, 226, 299]
AUTH = [401, 403]
RETRYABLE = [408, 425, 429, 500, 501, 502, 503, 504, 520, 599]
PERMANENT = [400, 402, 404, 405, 409, 410, 413, 415, 422, 426, 428, 431, 451, 499]


@pytest.mark.parametrize("status", DELIVERED)
def test_2xx_is_delivered(status: int) -> None:
    """Every 2xx means the records were delivered."""
    assert classify_status(status) == Verdict(Outcome.DELIVERED)


@pytest.mark.parametrize("status", AUTH)
def test_401_403_stop_for_auth(status: int) -> None:
    """401 and 403 pause delivery: the key was refused."""
    assert classify_status(status, "30") == Verdict(Outcome.AUTH)


@pytest.mark.parametrize("status", RETRYABLE)
def test_408_425_429_and_5xx_are_retryable(status: int) -> None:
    """408, 425, 429 and any 5xx are retryable, carrying the Retry-After they came with."""
    assert classify_status(status) == Verdict(Outcome.RETRYABLE, None)
    assert classify_status(status, "7") == Verdict(Outcome.RETRYABLE, 7.0)


@pytest.mark.parametrize("status", PERMANENT)
def test_other_4xx_are_permanent(status: int) -> None:
    """Any other 4xx is permanent for the batch, Retry-After or not."""
    assert classify_status(status) == Verdict(Outcome.PERMANENT)
    assert classify_status(status, "7") == Verdict(Outcome.PERMANENT)


def test_no_answer_is_a_retryable_transport_error() -> None:
    """status None (no HTTP answer at all) is retryable with no delay asked."""
    assert classify_status(None) == Verdict(Outcome.RETRYABLE, None)


def test_every_error_status_falls_in_exactly_its_class() -> None:
    """Across 400-599 each status gets the class the wire contract gives it."""
    for status in range(400, 600):
        outcome = classify_status(status).outcome
        if status in (401, 403):
            assert outcome is Outcome.AUTH, status
        elif status in (408, 425, 429) or status >= 500:
            assert outcome is Outcome.RETRYABLE, status
        else:
            assert outcome is Outcome.PERMANENT, status


# -- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 3 ", 3.0),
        ("-5", 0.0),
        ("99999", 3600.0),
        ("1e9", 3600.0),
    ],
)
def test_retry_after_seconds(header: str, seconds: float) -> None:
    """Delta-seconds are read as seconds; negatives become 0; huge values are capped at 1 h."""
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    ("offset", "seconds"), [(30, 30.0), (0, 0.0), (-600, 0.0), (86400, 3600.0)]
)
def test_retry_after_http_date(offset: int, seconds: float) -> None:
    """An HTTP date means 'until then': past dates give 0, far ones are capped at 1 h."""
    header = email.utils.formatdate(NOW + offset, usegmt=True)
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_http_date_against_the_clock() -> None:
    """Without ``now`` an HTTP date is measured from the current time."""
    import time

    header = email.utils.formatdate(time.time() + 100, usegmt=True)
    delay = parse_retry_after(header)
    assert delay is not None
    assert 98.0 <= delay <= 100.0


@pytest.mark.parametrize(
    "header", [None, "", "   ", "soon", "12 seconds", "Mon, 99 Foo 2024", "nan", "inf", "-inf"]
)
def test_retry_after_garbage_is_none(header: str | None) -> None:
    """A missing, unreadable or non-finite Retry-After gives None (use our own backoff)."""
    assert parse_retry_after(header, now=NOW) is None


# -- backoff -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "cap", "attempt", "ceiling"),
    [
        (0.5, 60.0, 1, 0.5),
        (0.5, 60.0, 2, 1.0),
        (0.5, 60.0, 4, 4.0),
        (0.5, 60.0, 8, 60.0),
        (1.0, 10.0, 3, 4.0),
        (1.0, 10.0, 5, 10.0),
        (0.5, 60.0, 0, 0.5),
        (0.5, 60.0, -3, 0.5),
        (0.5, 60.0, 10**6, 60.0),
    ],
)
def test_delay_is_full_jitter_under_the_capped_ceiling(
    base: float, cap: float, attempt: int, ceiling: float
) -> None:
    """Retry n waits uniformly in [0, min(cap, base*2^(n-1))]: spread over, never beyond."""
    policy = RetryPolicy(base=base, cap=cap)
    rng = random.Random(1234)
    delays = [policy.delay(attempt, rng=rng) for _ in range(500)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter: the draws cover the whole range, not a fixed or half-jittered delay.
    assert min(delays) < 0.1 * ceiling
    assert max(delays) > 0.9 * ceiling


def test_delay_without_rng_uses_the_global_random() -> None:
    """Without an rng the delay is still within bounds (and varies)."""
    policy = RetryPolicy(base=1.0, cap=8.0)
    delays = {policy.delay(4) for _ in range(50)}
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert len(delays) > 1


@pytest.mark.parametrize("retry_after", [0.0, 2.5, 30.0, 3600.0])
def test_retry_after_wins_over_backoff(retry_after: float) -> None:
    """A delay the service asked for is used as is, even beyond the cap."""
    policy = RetryPolicy(base=0.5, cap=10.0)
    assert policy.delay(1, retry_after=retry_after) == retry_after
    assert policy.delay(30, retry_after=retry_after, rng=random.Random(0)) == retry_after


def test_defaults_match_settings() -> None:
    """RetryPolicy's defaults are the settings' backoff_base and backoff_cap."""
    from aicm._core.settings import DEFAULTS

    assert RetryPolicy() == RetryPolicy(base=DEFAULTS["backoff_base"], cap=DEFAULTS["backoff_cap"])


@settings(max_examples=200, deadline=None)
@given(
    base=st.floats(min_value=1e-3, max_value=10.0),
    cap=st.floats(min_value=1e-3, max_value=1000.0),
    attempt=st.integers(min_value=-5, max_value=10_000),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_never_leaves_its_bounds(base: float, cap: float, attempt: int, seed: int) -> None:
    """For any base, cap and attempt the delay is within [0, min(cap, base*2^(n-1))]."""
    delay = RetryPolicy(base=base, cap=cap).delay(attempt, rng=random.Random(seed))
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 1000))
    assert 0.0 <= delay <= ceiling


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_retry_after_seconds_always_within_zero_and_an_hour(seconds: float) -> None:
    """Any numeric Retry-After lands in [0, 3600]."""
    delay = parse_retry_after(repr(seconds), now=NOW)
    assert delay is not None
    assert 0.0 <= delay <= 3600.0
    assert delay == min(max(seconds, 0.0), 3600.0)
