"""IMMEDIATE delivery: send in the caller's task, a few attempts, then a clear error (layer 3)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .._core.exceptions import AicmError, DeliveryError
from .._core.jsonplain import dumps
from .._core.models import Endpoint, RecordResult, TrackResult, WireRecord
from .._core.policy import RetryPolicy
from .._io.http import MAX_RECORDS_PER_REQUEST, AsyncCostManagerClient
from .._io.retrying import GaveUp, retrying
from .health import DeliveryStats

__all__ = ["send_now"]

logger = logging.getLogger("aicm.delivery")

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


async def send_now(
    client: AsyncCostManagerClient,
    records: Sequence[WireRecord],
    *,
    stats: DeliveryStats,
    policy: RetryPolicy,
    attempts: int,
    note_error: Callable[[BaseException], None],
    rng: random.Random | None = None,
) -> TrackResult:
    """Send ``records`` now, by endpoint, at most 1000 a request, each request up to
    ``attempts`` times on retryable failures; ``stats`` counts what happens.

    Raises :class:`DeliveryError` when a request runs out of attempts (or the service asks
    for a longer wait than a caller should sit through), naming every record of the call.
    """
    results: list[RecordResult] = []
    limits: dict[str, Any] = {}
    groups: dict[Endpoint, list[WireRecord]] = {}
    for record in records:
        groups.setdefault(record.endpoint, []).append(record)
    # Whatever fails, every record of the call is named in the error: those sent may
    # be stored, and a retry of all of them with their ids is safe.
    ids = tuple(r.response_id for r in records)
    policy = attrs.evolve(
        policy, attempts=attempts, max_retry_after=_MAX_DELAY, max_sleep=_MAX_DELAY
    )
    for group in groups.values():
        for start in range(0, len(group), MAX_RECORDS_PER_REQUEST):
            chunk = group[start : start + MAX_RECORDS_PER_REQUEST]
            encoded = [dumps(r.wire()) for r in chunk]
            answer = await _send(
                client, chunk[0].endpoint, encoded, ids, stats, policy, note_error, rng
            )
            results.extend(answer.results)
            limits.update(answer.triggered_limits)
    return TrackResult(results=tuple(results), triggered_limits=limits)


async def _send(
    client: AsyncCostManagerClient,
    endpoint: Endpoint,
    encoded: list[str],
    call_ids: tuple[str, ...],
    stats: DeliveryStats,
    policy: RetryPolicy,
    note_error: Callable[[BaseException], None],
    rng: random.Random | None,
) -> TrackResult:
    n = len(encoded)

    async def attempt() -> TrackResult:
        stats.in_flight += n
        try:
            return await client.send_encoded(endpoint, encoded)
        except AicmError as exc:
            note_error(exc)
            raise
        finally:
            stats.in_flight -= n

    def retried(exc: Exception, attempt: int, delay: float) -> None:
        stats.retried += n
        logger.info("attempt %d failed (%s); retrying in %.2fs", attempt, exc, delay)

    try:
        result = await retrying(attempt, policy, on_retry=retried, rng=rng)
    except GaveUp as gave_up:
        stats.failed += n
        last = gave_up.last
        if gave_up.asked is not None:
            # The service asks for a longer pause than a caller should sit through, and
            # trying again sooner would ignore its Retry-After.
            message = (
                f"could not deliver {n} record(s): the service asks to wait"
                f" {gave_up.asked:g} s before trying again (Retry-After), longer than"
                f" IMMEDIATE delivery waits ({_MAX_DELAY:g} s): {last}."
            )
        else:
            message = f"could not deliver {n} record(s) after {gave_up.attempts} attempts: {last}."
        raise DeliveryError(
            message + _unknown_outcome(call_ids), pending=n, response_ids=call_ids
        ) from last
    except AicmError:
        stats.failed += n
        raise
    ok = sum(1 for r in result.results if r.ok) if result.results else n
    stats.sent += ok
    stats.failed += n - ok
    return result
