"""What the delivery actor does with an answer: pure decisions, no I/O, no clock (layer 3).

Each function takes what happened (an `Answer`, a batch, the time as the caller read it)
and returns what to do; the engine carries it out. Status classes (DESIGN section 3): 2xx
delivered, except the records the answer refuses one by one; 408/425/429/5xx and no
answer retried with backoff (a ``Retry-After`` wins); 401/403, no key and redirects pause
delivery, keeping every record; other 4xx dead-letter the records the answer names, or
split the batch until the bad one stands alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import attrs

from .._core.exceptions import APIStatusError, ClientRequestError
from .._core.models import RecordResult, TrackResult
from .._core.policy import Answer, Outcome, RetryPolicy

__all__ = [
    "Delivered",
    "Gate",
    "Pause",
    "Refused",
    "Retry",
    "Split",
    "decide",
    "expired",
    "gate",
    "reason",
    "settle",
]


class _Named(Protocol):
    @property
    def response_id(self) -> str: ...


T = TypeVar("T", bound=_Named)


@attrs.frozen
class Delivered(Generic[T]):
    """2xx: ``done`` were delivered; ``dead`` the service refused, each with its reason."""

    done: Sequence[T]
    dead: Sequence[tuple[T, str]] = ()


@attrs.frozen
class Retry:
    """A retryable failure: try the whole batch again at ``at``; ``failures`` in a row now."""

    at: float
    failures: int
    reason: str


@attrs.frozen
class Pause:
    """The key or the address needs fixing: keep every record, look again at ``at``."""

    at: float
    reason: str


@attrs.frozen
class Refused(Generic[T]):
    """A permanent refusal: dead-letter ``dead``; send ``again`` (not at fault) on its own."""

    dead: Sequence[tuple[T, str]]
    again: Sequence[T]
    reason: str


@attrs.frozen
class Split(Generic[T]):
    """A refusal naming no record: send ``first`` alone, then ``rest``, to find the bad one."""

    first: Sequence[T]
    rest: Sequence[T]
    reason: str


Decision = Delivered[T] | Retry | Pause | Refused[T] | Split[T]


def reason(result: RecordResult) -> str:
    """Why the service refused one record, as the dead-letter store keeps it."""
    if result.errors:
        return f"{result.status}: " + "; ".join(result.errors)
    return result.status or "rejected"


def settle(items: Sequence[T], result: TrackResult) -> Delivered[T]:
    """Sort a 2xx answer's batch: delivered, or refused by a per-record result.

    A record with no result of its own was delivered (results may name failures only).
    Two records with one ``response_id`` are one event to the service: one verdict.
    """
    refused = {r.response_id: r for r in result.results if not r.ok}
    if not refused:
        return Delivered(items)  # the common case: every record accepted
    done: list[T] = []
    dead: list[tuple[T, str]] = []
    for item in items:
        verdict = refused.get(item.response_id)
        if verdict is None:
            done.append(item)
        else:
            dead.append((item, reason(verdict)))
    return Delivered(done, dead)


def decide(
    answer: Answer,
    items: Sequence[T],
    *,
    now: float,
    failures: int,
    policy: RetryPolicy,
    auth_retry_interval: float,
    rng: random.Random | None = None,
) -> Decision[T]:
    """What to do with ``items`` after ``answer``. ``now`` is the clock the returned times
    are on; ``failures`` the retryable failures in a row before it (the backoff grows)."""
    outcome = answer.outcome
    if outcome is Outcome.DELIVERED:
        return settle(items, answer.result if answer.result is not None else TrackResult())
    error = answer.error
    why = str(error)
    if outcome is Outcome.RETRYABLE:
        at = policy.next_attempt_at(failures + 1, now=now, retry_after=answer.retry_after, rng=rng)
        return Retry(at, failures + 1, why)
    if outcome is not Outcome.PERMANENT:  # AUTH, MISCONFIGURED
        return Pause(now + auth_retry_interval, why)
    named: dict[str, RecordResult] = {}
    if isinstance(error, ClientRequestError):
        for r in error.results:
            if isinstance(r, RecordResult) and not r.ok:
                named[r.response_id] = r
    bad = [(i, reason(named[i.response_id])) for i in items if i.response_id in named]
    if bad:
        return Refused(bad, [i for i in items if i.response_id not in named], why)
    status = error.status_code if isinstance(error, APIStatusError) else 0
    body = error.body if isinstance(error, APIStatusError) else ""
    whole = f"HTTP {status}: {body[:500]}"
    if len(items) <= 1:
        return Refused([(i, whole) for i in items], [], why)
    mid = len(items) // 2
    return Split(items[:mid], items[mid:], why)


@attrs.frozen
class Gate:
    """Whether the actor may send now: ``wait`` s first (0: go), or ``stop`` for good."""

    wait: float = 0.0
    stop: bool = False


def gate(now: float, *, not_before: float, deadline: float) -> Gate:
    """May the actor send at ``now``? ``not_before`` ends a backoff; ``deadline`` a close.
    Past the deadline, or when the backoff ends at or after it, the actor stops (keeping
    what it holds) rather than start an attempt that cannot finish."""
    if now >= deadline:
        return Gate(stop=True)
    wait = not_before - now
    if wait <= 0:
        return Gate()
    if not_before >= deadline:
        return Gate(stop=True)
    return Gate(wait=wait)


class _Aged(Protocol):
    @property
    def created_at(self) -> float: ...


A = TypeVar("A", bound=_Aged)


def expired(items: Sequence[A], *, now: float, max_age: float | None) -> tuple[list[A], list[A]]:
    """``items`` split into those older than ``max_age`` s at ``now``, and the rest."""
    if max_age is None:
        return [], list(items)
    cutoff = now - max_age
    old = [i for i in items if i.created_at < cutoff]
    if not old:
        return [], list(items)
    return old, [i for i in items if i.created_at >= cutoff]
