"""The delivery actor's decisions: every status class, per-record results, splits, backoff."""

from __future__ import annotations

import random
from collections.abc import Sequence

import attrs
import pytest

from aicm._core.exceptions import MissingApiKeyError, TransportError
from aicm._core.models import TrackResult
from aicm._core.policy import Answer, Outcome, RetryPolicy, answer_error
from aicm._delivery.decide import (
    Delivered,
    Gate,
    Pause,
    Refused,
    Retry,
    Split,
    decide,
    expired,
    gate,
    reason,
    settle,
)
from aicm._io.answers import error_for_answer, parse_results

NOW = 1_000.0
POLICY = RetryPolicy(base=0.5, cap=60.0)
AUTH_RETRY = 30.0
SEED = 20


@attrs.frozen
class Rec:
    """A held record as the actor sees it: its id and when it was written."""

    response_id: str
    created_at: float = 0.0


def batch(*ids: str) -> list[Rec]:
    return [Rec(i) for i in ids]


def answer(status: int | None, body: str = "", retry_after: str | None = None) -> Answer:
    """The Answer the HTTP client makes of this status, body and Retry-After header."""
    if status is None:
        return answer_error(TransportError("POST /track failed: ConnectError"))
    error = error_for_answer(status, body, retry_after, location="https://elsewhere.example/")
    if error is not None:
        return answer_error(error)
    return Answer(Outcome.DELIVERED, result=parse_results(body) or TrackResult())


def run(
    ans: Answer, items: Sequence[Rec], *, failures: int = 0, seed: int = SEED
) -> Delivered[Rec] | Retry | Pause | Refused[Rec] | Split[Rec]:
    return decide(
        ans,
        items,
        now=NOW,
        failures=failures,
        policy=POLICY,
        auth_retry_interval=AUTH_RETRY,
        rng=random.Random(seed),
    )


def results(*pairs: tuple[str, str], errors: Sequence[str] = ()) -> str:
    """An ingest answer body naming each (response_id, status)."""
    entries = ",".join(
        f'{{"response_id": "{rid}", "status": "{status}"'
        + (
            f', "errors": {list(errors)!r}'.replace("'", '"')
            if errors and status == "error"
            else ""
        )
        + "}"
        for rid, status in pairs
    )
    return f'{{"results": [{entries}]}}'


# -- status classes ---------------------------------------------------------------------

DELIVERED = [200, 201, 202, 204, 299]
PAUSED = [301, 302, 304, 307, 308, 401, 403]
RETRIED = [408, 425, 429, 500, 502, 503, 504, 599, None]
PERMANENT = [400, 402, 404, 405, 409, 410, 413, 415, 422, 451, 499]


@pytest.mark.parametrize("status", DELIVERED)
def test_2xx_delivers_the_whole_batch(status: int) -> None:
    """A 2xx with no per-record refusal delivers every record, dead-letters none."""
    items = batch("a", "b", "c")
    assert run(answer(status, '{"results": []}'), items) == Delivered(items)


@pytest.mark.parametrize("status", PAUSED)
def test_auth_and_redirects_pause_and_keep_every_record(status: int) -> None:
    """401/403 and 3xx pause delivery until the auth retry interval has passed; no record
    is dead-lettered and the backoff counter does not move."""
    decision = run(answer(status, "nope"), batch("a", "b"), failures=4)
    assert isinstance(decision, Pause)
    assert decision.at == NOW + AUTH_RETRY


def test_a_missing_key_pauses_like_a_refused_one() -> None:
    """No key to send: a pause, not a dead letter."""
    decision = run(answer_error(MissingApiKeyError("no API key")), batch("a"))
    assert decision == Pause(NOW + AUTH_RETRY, "no API key")


@pytest.mark.parametrize("status", RETRIED)
@pytest.mark.parametrize("failures", [0, 1, 5, 40])
def test_retryable_failures_back_off_exponentially_with_jitter(
    status: int | None, failures: int
) -> None:
    """408/425/429/5xx and no answer: the whole batch again, after the policy's jittered
    backoff for this many failures in a row, and one more failure counted."""
    decision = run(answer(status, "busy"), batch("a", "b"), failures=failures)
    assert isinstance(decision, Retry)
    assert decision.failures == failures + 1
    expected = POLICY.delay(failures + 1, rng=random.Random(SEED))
    assert decision.at == pytest.approx(NOW + expected)
    assert NOW <= decision.at <= NOW + min(POLICY.cap, POLICY.base * 2**failures)


@pytest.mark.parametrize(
    ("status", "header", "wait"),
    [
        (429, "7", 7.0),
        (429, "0", 0.0),
        (503, "120", 120.0),
        (503, "  2.5 ", 2.5),
        (429, "86400", 3600.0),  # a service asking for a day waits an hour at most
        (500, "-5", 0.0),
        (429, "soon", None),  # unreadable: the policy's own backoff
    ],
)
def test_retry_after_wins_over_the_backoff(status: int, header: str, wait: float | None) -> None:
    """A Retry-After the service sends sets the next attempt, capped at an hour."""
    decision = run(answer(status, "", header), batch("a"), failures=3)
    assert isinstance(decision, Retry)
    if wait is None:
        assert decision.at == pytest.approx(NOW + POLICY.delay(4, rng=random.Random(SEED)))
    else:
        assert decision.at == NOW + wait


@pytest.mark.parametrize("status", PERMANENT)
def test_a_refusal_naming_no_record_splits_the_batch(status: int) -> None:
    """Another 4xx naming no record: the batch is halved until the bad one stands alone."""
    items = batch("a", "b", "c", "d", "e")
    decision = run(answer(status, "too large"), items)
    assert decision == Split(items[:2], items[2:], str(answer(status, "too large").error))


@pytest.mark.parametrize("status", PERMANENT)
def test_a_lone_record_refused_unnamed_is_dead_lettered_with_the_answer(status: int) -> None:
    """A one-record batch refused without naming it: dead-lettered, the status and the
    start of the body (500 characters) as its reason."""
    body = "x" * 2000
    (item,) = items = batch("a")
    decision = run(answer(status, body), items)
    assert isinstance(decision, Refused)
    assert decision.dead == [(item, f"HTTP {status}: " + "x" * 500)]
    assert decision.again == []


def test_413_splits_until_one_record_then_dead_letters_it() -> None:
    """Following the splits a 413 makes reaches single records, and only the bad one dies."""
    items = batch(*"abcdefgh")
    big = items[5]
    dead: list[Rec] = []
    delivered: list[Rec] = []
    work = [items]
    while work:
        group = work.pop()
        too_big = big in group
        decision = run(answer(413 if too_big else 202, "request too large"), group)
        if isinstance(decision, Split):
            work += [list(decision.rest), list(decision.first)]
        elif isinstance(decision, Refused):
            dead += [i for i, _ in decision.dead]
        else:
            assert isinstance(decision, Delivered)
            delivered += decision.done
    assert dead == [big]
    assert sorted(r.response_id for r in delivered) == sorted("abcdegh")


# -- per-record outcomes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "done", "dead"),
    [
        ([("b", "error")], "ac", {"b": "error: bad record"}),
        ([("a", "service_key_unknown")], "bc", {"a": "service_key_unknown"}),
        ([("a", "queued"), ("b", "completed"), ("c", "queued")], "abc", {}),
        ([("zzz", "error")], "abc", {}),  # an id not in the batch changes nothing
        (
            [("a", "error"), ("b", "error"), ("c", "error")],
            "",
            {k: "error: bad record" for k in "abc"},
        ),
        ([("c", "weird")], "ab", {"c": "weird"}),  # an unknown status is no success
    ],
)
def test_2xx_settles_each_record_by_its_result(
    pairs: list[tuple[str, str]], done: str, dead: dict[str, str]
) -> None:
    """A 2xx delivers every record its results do not refuse, and dead-letters the rest
    with the service's status and errors as the reason."""
    items = batch("a", "b", "c")
    decision = run(answer(202, results(*pairs, errors=["bad record"])), items)
    assert isinstance(decision, Delivered)
    assert [i.response_id for i in decision.done] == list(done)
    assert {i.response_id: why for i, why in decision.dead} == dead


def test_a_4xx_naming_records_dead_letters_them_and_sends_the_rest_again() -> None:
    """A 4xx whose results name bad records: those are dead-lettered, the others (not at
    fault) go again on their own."""
    items = batch("a", "b", "c", "d")
    body = results(("b", "error"), ("d", "error"), errors=["payload must be an object"])
    decision = run(answer(422, body), items)
    assert isinstance(decision, Refused)
    assert [(i.response_id, why) for i, why in decision.dead] == [
        ("b", "error: payload must be an object"),
        ("d", "error: payload must be an object"),
    ]
    assert [i.response_id for i in decision.again] == ["a", "c"]


def test_a_4xx_naming_only_successes_splits() -> None:
    """Results that refuse nothing name no culprit: the batch is split as if unnamed."""
    items = batch("a", "b")
    decision = run(answer(400, results(("a", "queued"), ("b", "queued"))), items)
    assert isinstance(decision, Split)


# -- idempotent duplicates ------------------------------------------------------------


def test_records_sharing_a_response_id_share_the_verdict() -> None:
    """Two records with one response_id are one event: refused together, delivered together."""
    first, twin, other = Rec("dup"), Rec("dup"), Rec("x")
    refused = run(answer(202, results(("dup", "error"), errors=["bad"])), [first, twin, other])
    assert isinstance(refused, Delivered)
    assert [i for i, _ in refused.dead] == [first, twin]
    assert refused.done == [other]
    accepted = run(answer(202, results(("dup", "queued"), ("dup", "completed"))), [first, twin])
    assert accepted == Delivered([first, twin])


def test_a_repeat_the_service_already_stored_is_delivered() -> None:
    """A record sent again (at-least-once) that the service reports as already completed is
    delivered, not refused: the response_id makes the repeat harmless."""
    items = batch("sent-before")
    decision = run(answer(200, results(("sent-before", "completed"))), items)
    assert decision == Delivered(items)


# -- pure helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errors", "status", "expected"),
    [
        (("a", "b"), "error", "error: a; b"),
        ((), "service_key_unknown", "service_key_unknown"),
        ((), "", "rejected"),
    ],
)
def test_reason(errors: tuple[str, ...], status: str, expected: str) -> None:
    """A refused record's reason: its status, then the service's errors."""
    from aicm._core.models import RecordResult

    assert reason(RecordResult(response_id="r", status=status, errors=errors)) == expected


def test_settle_with_no_results_delivers_everything() -> None:
    """A 2xx with no results (or an unreadable body) delivers the whole batch."""
    items = batch("a", "b")
    assert settle(items, TrackResult()) == Delivered(items)


@pytest.mark.parametrize(
    ("now", "not_before", "deadline", "expected"),
    [
        (10.0, 0.0, float("inf"), Gate()),  # no backoff, no close: go
        (10.0, 10.0, float("inf"), Gate()),  # the backoff ends now: go
        (10.0, 12.5, float("inf"), Gate(wait=2.5)),  # wait out the backoff
        (10.0, 12.5, 20.0, Gate(wait=2.5)),  # closing, the retry fits before the deadline
        (10.0, 20.0, 20.0, Gate(stop=True)),  # the retry would start at the deadline
        (10.0, 25.0, 20.0, Gate(stop=True)),  # ... or after it
        (20.0, 0.0, 20.0, Gate(stop=True)),  # the deadline is past
        (30.0, 0.0, 20.0, Gate(stop=True)),
    ],
)
def test_gate(now: float, not_before: float, deadline: float, expected: Gate) -> None:
    """The actor sends, waits out a backoff, or stops at a close deadline it cannot meet."""
    assert gate(now, not_before=not_before, deadline=deadline) == expected


@pytest.mark.parametrize(
    ("max_age", "old"),
    [(None, ""), (1000.0, ""), (150.0, "a"), (50.0, "ab"), (0.0, "abc")],
)
def test_expired(max_age: float | None, old: str) -> None:
    """Records older than max_age (written before now - max_age) expire; the rest stay."""
    items = [Rec("a", created_at=800.0), Rec("b", created_at=900.0), Rec("c", created_at=999.0)]
    gone, kept = expired(items, now=NOW, max_age=max_age)
    assert "".join(i.response_id for i in gone) == old
    assert [*gone, *kept] == items
