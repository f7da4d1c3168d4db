"""IMMEDIATE delivery: send in the caller's task, a few attempts, then a clear error (layer 3)."""

from __future__ import annotations

import contextlib
import logging
import random
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
    "verdicts",
]

logger = logging.getLogger("aicm.delivery")
# What a tracker's IMMEDIATE call logs of its records goes out under the tracker's name.
_tracker_logger = logging.getLogger("aicm.tracker")

# The longest a caller sits between two attempts; a service asking (Retry-After) for
# more is not tried again: the caller gets the error at once.
_MAX_DELAY = 5.0


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


class Immediate:
    """One engine's IMMEDIATE sending: each request up to ``attempts`` times on retryable
    failures, counted in the engine's ``stats``, its errors told to ``note_error``.

    Counting is the same for an async send and a blocking one, which may run in many
    threads at once (``stats.add`` takes the counters' lock).
    """

    def __init__(
        self,
        client: AsyncCostManagerClient,
        stats: DeliveryStats,
        policy: RetryPolicy,
        attempts: int,
        note_error: Callable[[BaseException], None],
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.stats = stats
        self.note_error = note_error
        self.rng = rng
        # A caller waits: no sleep between attempts over _MAX_DELAY.
        self.policy = attrs.evolve(
            policy, attempts=attempts, max_retry_after=_MAX_DELAY, max_sleep=_MAX_DELAY
        )

    async def send(self, records: Sequence[WireRecord]) -> TrackResult:
        """Send ``records`` now, by endpoint, at most 1000 a request.

        Raises [`DeliveryError`][aicm.DeliveryError] when a request runs out of attempts
        (or the service asks for a longer wait than a caller should sit through), naming
        every record of the call.
        """
        answers: list[TrackResult] = []
        for endpoint, encoded in _requests(records):

            async def attempt(e: Endpoint = endpoint, encoded: list[str] = encoded) -> TrackResult:
                with self._attempt(len(encoded)):
                    return (await self.client.post_encoded(e, encoded)).unwrap()

            n = len(encoded)
            with self._request(records, n):
                answer = await retrying(
                    attempt, self.policy, on_retry=self._retried(n), rng=self.rng
                )
            answers.append(self._delivered(answer, n))
        return _merged(answers)

    def send_blocking(self, records: Sequence[WireRecord]) -> TrackResult:
        """`send()` from a plain thread, with the client's blocking twin (only where
        ``client.can_block``): the same requests, attempts, waits, errors and counts."""
        answers: list[TrackResult] = []
        for endpoint, encoded in _requests(records):

            def attempt(e: Endpoint = endpoint, encoded: list[str] = encoded) -> TrackResult:
                with self._attempt(len(encoded)):
                    return self.client.post_encoded_blocking(e, encoded).unwrap()

            n = len(encoded)
            with self._request(records, n):
                answer = retrying_blocking(
                    attempt, self.policy, on_retry=self._retried(n), rng=self.rng
                )
            answers.append(self._delivered(answer, n))
        return _merged(answers)

    @contextlib.contextmanager
    def _attempt(self, n: int) -> Iterator[None]:
        """Around one attempt of a request of ``n`` records: in flight, its error noted."""
        self.stats.add(in_flight=n)
        try:
            yield
        except AicmError as exc:
            self.note_error(exc)
            raise
        finally:
            self.stats.add(in_flight=-n)

    def _retried(self, n: int) -> Callable[[Exception, int, float], None]:
        def retried(exc: Exception, attempt: int, delay: float) -> None:
            self.stats.add(retried=n)
            logger.info("attempt %d failed (%s); retrying in %.2fs", attempt, exc, delay)

        return retried

    @contextlib.contextmanager
    def _request(self, records: Sequence[WireRecord], n: int) -> Iterator[None]:
        """Around the attempts of a request of ``n`` of ``records``: a failure is counted;
        running out of attempts raises a `DeliveryError` naming every record of the call
        (those sent may be stored: a retry of all of them with their ids is safe)."""
        try:
            yield
        except GaveUp as gave_up:
            self.stats.add(failed=n)
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
            ids = tuple(r.response_id for r in records)
            raise DeliveryError(
                message + _unknown_outcome(ids), pending=n, response_ids=ids
            ) from last
        except AicmError:
            self.stats.add(failed=n)
            raise

    def _delivered(self, result: TrackResult, n: int) -> TrackResult:
        ok = sum(1 for r in result.results if r.ok) if result.results else n
        self.stats.add(sent=ok, failed=n - ok)
        return result


def _merged(answers: list[TrackResult]) -> TrackResult:
    """One call's answer: every request's results, and the limits any of them triggered."""
    limits: dict[str, Any] = {}
    for answer in answers:
        limits.update(answer.triggered_limits)
    results = tuple(r for answer in answers for r in answer.results)
    return TrackResult(results=results, triggered_limits=limits)


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
