"""The sync Tracker's IMMEDIATE track(), sent from the caller's thread: the same outcomes,
errors, retries, health counts and usage-limit checks as AsyncTracker's, over loopback."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from aicm import AicmError, AsyncTracker, Tracker, TransportError, UsageLimitExceeded
from aicm.collector import Faults, LocalCollector
from tests.api.limits_support import LimitsService, fresh_key, limit, signed
from tests.reliability.test_bad_input import TRICKLE, RawServer

API, SERVICE, USAGE = "openai", "gpt-4o-mini", {"input_tokens": 3, "output_tokens": 5}

# Each fault, and what both trackers must agree on when it is in force.
FAULTS = {
    "none": Faults(),
    "one 503, then through": Faults(fail_first=1),
    "503 every time": Faults(failure_rate=1.0),
    "429 with a short Retry-After": Faults(fail_first=1, failure_status=429, retry_after=0.3),
    "Retry-After longer than a caller waits": Faults(failure_rate=1.0, retry_after=60),
    "the record refused in a 2xx": Faults(reject_response_ids=["RID"]),
    "the batch refused with a 422": Faults(reject_response_ids=["RID"], reject_status=422),
    "wrong API key": Faults(require_api_key="another-key-0123456789"),
    "connection dropped after storing": Faults(drop_rate=1.0, drop_after_store=True),
}


def _summary(
    collector: LocalCollector, tracker: Any, outcome: Any, rid: str, took: float
) -> dict[str, Any]:
    health = tracker.health()
    if isinstance(outcome, BaseException):
        shown = (type(outcome).__name__, str(outcome).replace(rid, "RID"))
        shown += (getattr(outcome, "response_ids", None) == (rid,),)
    else:
        shown = (outcome.status, outcome.ok, outcome.response_id == rid, outcome.errors)
    return {
        "outcome": shown,
        "health": (health.sent, health.failed, health.retried, health.in_flight),
        "last_error": (health.last_error or "").replace(rid, "RID"),
        "stored": [r["response_id"] for r in collector.records("track")].count(rid),
        "requests": collector.stats()["requests"]["track"],
        "waited": took >= 0.3 if "429" in str(collector.stats()["requests"]["track"]) else None,
    }


def _run_async(collector: LocalCollector, connection: dict[str, str], rid: str) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with AsyncTracker(**connection) as tracker:  # type: ignore[arg-type]
            started = time.monotonic()
            try:
                outcome: Any = await tracker.track(API, SERVICE, USAGE, response_id=rid)
            except AicmError as exc:
                outcome = exc
            return _summary(collector, tracker, outcome, rid, time.monotonic() - started)

    return anyio.run(main)


def _run_sync(collector: LocalCollector, connection: dict[str, str], rid: str) -> dict[str, Any]:
    with Tracker(**connection) as tracker:  # type: ignore[arg-type]
        started = time.monotonic()
        try:
            outcome: Any = tracker.track(API, SERVICE, USAGE, response_id=rid)
        except AicmError as exc:
            outcome = exc
        summary = _summary(collector, tracker, outcome, rid, time.monotonic() - started)
        # The record went from this thread, not through the shared loop.
        assert tracker._async.engine.client._blocking is not None
        return summary


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_sync_tracker_does_what_the_async_one_does(
    collector: LocalCollector, connection: dict[str, str], fault: str
) -> None:
    """Under each fault, the sync IMMEDIATE track() returns or raises what AsyncTracker's
    does, with the same health counts, the same requests and the same records stored."""
    seen = []
    for run in (_run_async, _run_sync):
        collector.clear()
        faults = FAULTS[fault]
        rid = f"imm-{uuid.uuid4().hex[:12]}"
        if faults.reject_response_ids:
            faults = Faults(
                reject_response_ids=[rid],
                reject_status=faults.reject_status,
            )
        collector.set_faults(faults)
        seen.append(run(collector, connection, rid))
    assert seen[1] == seen[0]


def test_the_trickled_answer_is_bounded_in_the_callers_thread() -> None:
    """An answer trickled a byte at a time: the sync track() stops at the request deadline
    (2 x timeout), with the message the async client gives."""
    server = RawServer(TRICKLE, trickle=0.2)
    try:
        with Tracker(aicm_api_key="k" * 20, aicm_api_base=server.base, timeout=0.5) as tracker:
            started = time.monotonic()
            with pytest.raises(AicmError) as caught:
                tracker.track(API, SERVICE, USAGE)
            took = time.monotonic() - started
            assert tracker.health().failed == 1
    finally:
        server.close()
    assert took < 5
    assert isinstance(caught.value.__cause__, TransportError)
    assert "took longer than 1 s in all (2 x the 0.5 s timeout)" in str(caught.value)


def test_threads_tracking_at_once_are_each_counted(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """Many threads sending IMMEDIATE through one tracker: every record stored once, every
    send counted, nothing left in flight."""
    with Tracker(**connection) as tracker:  # type: ignore[arg-type]

        def work(n: int) -> None:
            for i in range(25):
                assert tracker.track(API, SERVICE, USAGE, response_id=f"t{n}-{i}").ok

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        health = tracker.health()
    assert (health.sent, health.failed, health.in_flight) == (200, 0, 0)
    stored = [r["response_id"] for r in collector.records("track")]
    assert sorted(stored) == sorted(f"t{n}-{i}" for n in range(8) for i in range(25))


@pytest.fixture
def limits_service() -> Iterator[LimitsService]:
    """A service that signs the triggered limits it answers with."""
    with LimitsService() as service:
        yield service


def test_a_limit_in_the_answer_is_enforced_after_delivery(limits_service: LimitsService) -> None:
    """A triggered limit in a sync IMMEDIATE answer is adopted: the record is delivered,
    then track() raises for it, as AsyncTracker's does."""
    key = fresh_key()
    limits_service.answer = signed([limit(key, customer_key="acme")])
    with Tracker(aicm_api_key=key, aicm_api_base=limits_service.api_base) as tracker:
        assert tracker.track(API, SERVICE, USAGE).ok  # another customer: not covered
        with pytest.raises(UsageLimitExceeded) as info:
            tracker.track(API, SERVICE, USAGE, client_customer_key="acme", response_id="r-acme")
        assert info.value.response_id == "r-acme"
        assert tracker.health().limits_refused == 1
        assert tracker._async.engine.client._blocking is not None
    assert [r["response_id"] for r in limits_service.records][-1] == "r-acme"
