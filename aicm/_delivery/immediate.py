"""IMMEDIATE delivery: send in the caller's task, a few attempts, then a clear error (layer 3)."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from .._core.exceptions import AicmError, DeliveryError
from .._core.jsonplain import dumps
from .._core.models import Endpoint, RecordResult, TrackResult, WireRecord
from .._core.policy import RetryPolicy
from .._io.http import MAX_RECORDS_PER_REQUEST, AsyncCostManagerClient
from .._io.retrying import GaveUp, retrying, retrying_blocking
from .health import DeliveryStats

__all__ = [
    "Immediate",
    "failure_logged",
    "log_sending",
    "send_now",
    "send_now_blocking",
    "verdicts",
]

logger = logging.getLogger("aicm.delivery")
# What a tracker's IMMEDIATE call logs of its records goes out under the tracker's name.
_tracker_logger = logging.getLogger("aicm.tracker")

# The longest a caller sits between two attempts; a service asking (Retry-After) for
# more is not tried again: the caller gets the error at once.
_MAX_DELAY = 5.0
# Health counts are updated by callers' tasks and, for the sync facade, their threads.
_stats_lock = threading.Lock()


def _unknown_outcome(ids: tuple[str, ...]) -> str:
    """What an IMMEDIATE failure's message adds: the service may have the records."""
    shown_ids = ", ".join(ids[:3]) + (f", ... ({len(ids)} in all)" if len(ids) > 3 else "")
    return (
        " The service may have stored them without its answer coming back: tracking them"
        " again with the same response_id (error.response_ids: "
        f"{shown_ids}) is safe, a repeated response_id is counted once"
    )


def _requests(records: Sequence[WireRecord]) -> Iterator[tuple[Endpoint, list[str]]]:
    """The requests ``records`` make: by endpoint, at most 1000 encoded records each."""
    groups: dict[Endpoint, list[str]] = {}
    for record in records:
        groups.setdefault(record.endpoint, []).append(dumps(record.wire()))
    for endpoint, encoded in groups.items():
        for start in range(0, len(encoded), MAX_RECORDS_PER_REQUEST):
            yield endpoint, encoded[start : start + MAX_RECORDS_PER_REQUEST]


@functools.lru_cache(maxsize=32)
def _caller_policy(policy: RetryPolicy, attempts: int) -> RetryPolicy:
    """``policy`` for a caller who waits: ``attempts`` tries, no wait over ``_MAX_DELAY``."""
    return attrs.evolve(policy, attempts=attempts, max_retry_after=_MAX_DELAY, max_sleep=_MAX_DELAY)


@attrs.frozen
class Immediate:
    """What IMMEDIATE sends need of their engine: the health counters, the retry policy
    and its ``attempts``, where the last error goes, the jitter's source."""

    stats: DeliveryStats
    policy: RetryPolicy
    attempts: int
    note_error: Callable[[BaseException], None]
    rng: random.Random | None = None


class _Call:
    """One IMMEDIATE call's counting, the same for an async send and a blocking one (which
    may run in many threads at once, hence the lock)."""

    def __init__(self, records: Sequence[WireRecord], how: Immediate) -> None:
        # Whatever fails, every record of the call is named in the error: those sent may
        # be stored, and a retry of all of them with their ids is safe.
        self.ids = tuple(r.response_id for r in records)
        self.how = how
        self.policy = _caller_policy(how.policy, how.attempts)
        self.results: list[RecordResult] = []
        self.limits: dict[str, Any] = {}

    def count(self, **deltas: int) -> None:
        with _stats_lock:
            for name, delta in deltas.items():
                setattr(self.how.stats, name, getattr(self.how.stats, name) + delta)

    @contextlib.contextmanager
    def attempt(self, n: int) -> Iterator[None]:
        """Around one attempt of a request of ``n`` records: in flight, its error noted."""
        self.count(in_flight=n)
        try:
            yield
        except AicmError as exc:
            self.how.note_error(exc)
            raise
        finally:
            self.count(in_flight=-n)

    def retried(self, n: int) -> Callable[[Exception, int, float], None]:
        def retried(exc: Exception, attempt: int, delay: float) -> None:
            self.count(retried=n)
            logger.info("attempt %d failed (%s); retrying in %.2fs", attempt, exc, delay)

        return retried

    @contextlib.contextmanager
    def request(self, n: int) -> Iterator[None]:
        """Around a request's attempts: a failure is counted, and running out of attempts
        raises [`DeliveryError`][aicm.DeliveryError] naming every record of the call."""
        try:
            yield
        except GaveUp as gave_up:
            self.count(failed=n)
            last = gave_up.last
            if gave_up.asked is not None:
                # Trying again sooner than the service asks would ignore its Retry-After.
                message = (
                    f"could not deliver {n} record(s): the service asks to wait"
                    f" {gave_up.asked:g} s before trying again (Retry-After), longer than"
                    f" IMMEDIATE delivery waits ({_MAX_DELAY:g} s): {last}."
                )
            else:
                message = (
                    f"could not deliver {n} record(s) after {gave_up.attempts} attempts: {last}."
                )
            message += _unknown_outcome(self.ids)
            raise DeliveryError(message, pending=n, response_ids=self.ids) from last
        except AicmError:
            self.count(failed=n)
            raise

    def delivered(self, result: TrackResult, n: int) -> None:
        ok = sum(1 for r in result.results if r.ok) if result.results else n
        self.count(sent=ok, failed=n - ok)
        self.results.extend(result.results)
        self.limits.update(result.triggered_limits)

    def result(self) -> TrackResult:
        return TrackResult(results=tuple(self.results), triggered_limits=self.limits)


async def send_now(
    client: AsyncCostManagerClient, records: Sequence[WireRecord], how: Immediate
) -> TrackResult:
    """Send ``records`` now, by endpoint, at most 1000 a request, each request up to
    ``how.attempts`` times on retryable failures; ``how.stats`` counts what happens.

    Raises [`DeliveryError`][aicm.DeliveryError] when a request runs out of attempts (or the
    service asks for a longer wait than a caller should sit through), naming every record
    of the call.
    """
    call = _Call(records, how)
    for endpoint, encoded in _requests(records):

        async def attempt(
            endpoint: Endpoint = endpoint, encoded: list[str] = encoded
        ) -> TrackResult:
            with call.attempt(len(encoded)):
                return await client.send_encoded(endpoint, encoded)

        with call.request(len(encoded)):
            result = await retrying(
                attempt, call.policy, on_retry=call.retried(len(encoded)), rng=how.rng
            )
        call.delivered(result, len(encoded))
    return call.result()


def send_now_blocking(
    client: AsyncCostManagerClient, records: Sequence[WireRecord], how: Immediate
) -> TrackResult:
    """`send_now()` from a plain thread, with the client's blocking twin (only where
    ``client.can_block``): the same requests, attempts, waits, errors and counts."""
    call = _Call(records, how)
    for endpoint, encoded in _requests(records):

        def attempt(endpoint: Endpoint = endpoint, encoded: list[str] = encoded) -> TrackResult:
            with call.attempt(len(encoded)):
                return client.post_encoded_blocking(endpoint, encoded).unwrap()

        with call.request(len(encoded)):
            result = retrying_blocking(
                attempt, call.policy, on_retry=call.retried(len(encoded)), rng=how.rng
            )
        call.delivered(result, len(encoded))
    return call.result()


def log_sending(records: Sequence[WireRecord], *, log_bodies: bool) -> None:
    """Log (DEBUG) each record about to be sent, with its body when ``log_bodies``."""
    if _tracker_logger.isEnabledFor(logging.DEBUG):
        for record in records:
            if log_bodies:
                body = dumps(record.wire())
                _tracker_logger.debug("sending %s now: %s", record.response_id, body)
            else:
                _tracker_logger.debug("sending %s now", record.response_id)


@contextlib.contextmanager
def failure_logged(n: int) -> Iterator[None]:
    """Around an IMMEDIATE send of ``n`` records: its failure is logged (WARNING), then raised."""
    try:
        yield
    except AicmError as exc:
        _tracker_logger.warning("immediate delivery of %d record(s) failed: %s", n, exc)
        raise


def verdicts(records: Sequence[WireRecord], answer: TrackResult) -> list[RecordResult]:
    """Each record's result in ``answer``, in order (logged; refusals at WARNING)."""
    by_id = {r.response_id: r for r in answer.results}
    results: list[RecordResult] = []
    for record in records:
        # A 2xx without a verdict for this record still means delivered.
        verdict = by_id.get(record.response_id) or RecordResult(
            response_id=record.response_id, status="queued"
        )
        if verdict.ok:
            _tracker_logger.debug("delivered %s: %s", record.response_id, verdict.status)
        else:
            _tracker_logger.warning(
                "the service refused %s: %s %s",
                record.response_id,
                verdict.status,
                "; ".join(verdict.errors),
            )
        results.append(verdict)
    return results
