"""The collector's pure request logic, without a server or an event loop."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicm._core.jsonplain import dumps_bytes, loads, stdlib_dumps, stdlib_loads
from aicm._core.wire import (
    MAX_BATCH_RECORDS,
    BadRequest,
    check_track_record,
    check_usage_record,
    configs_document,
    dedup_key,
    etag_for,
    etag_matches,
    normalise_configs,
    parse_batch,
    plan_batch,
    usage_service,
)
from aicm.collector import Faults
from aicm.collector._faults import FaultInjector, faults_from_mapping, faults_to_json
from aicm.collector._logic import api_key_matches

from .helpers import track_record, usage_record


def test_parse_batch_returns_the_records() -> None:
    """A well-formed body gives its list of records."""
    body = json.dumps({"tracked": [{"a": 1}]}).encode()
    assert parse_batch(body, "track") == [{"a": 1}]
    assert parse_batch(b'{"usage_records": []}', "track_usage") == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"records": []}', '"tracked"'),
        (b'{"tracked": {"a": 1}}', "must be a list"),
        (b'{"tracked": [NaN]}', "not valid JSON"),
    ],
)
def test_parse_batch_refuses_malformed_bodies_with_400(body: bytes, fragment: str) -> None:
    """Bad JSON or the wrong top-level shape is a 400 whose detail says what is wrong."""
    with pytest.raises(BadRequest) as info:
        parse_batch(body, "track")
    assert info.value.status_code == 400
    assert fragment in info.value.detail


def test_parse_batch_refuses_more_than_1000_records_with_413() -> None:
    """Over the contract's 1000 records per request is a 413 naming the limit."""
    body = json.dumps({"tracked": [{}] * (MAX_BATCH_RECORDS + 1)}).encode()
    with pytest.raises(BadRequest) as info:
        parse_batch(body, "track")
    assert info.value.status_code == 413
    assert "1000" in info.value.detail


def test_a_valid_track_record_has_no_problems() -> None:
    """The contract's record, optional fields included, passes the check."""
    assert check_track_record(track_record()) == []
    full = track_record(client_customer_key="cust-1", context={"session": "s"})
    assert check_track_record(full) == []
    assert check_track_record(track_record(context=None, client_customer_key=None)) == []


def test_track_record_check_names_every_problem_at_once() -> None:
    """Missing fields, wrong types, empty ids and unexpected fields are all reported."""
    record = {"api_id": 3, "response_id": "", "payload": [], "timestamp": None, "extra": 1}
    problems = check_track_record(record)
    assert "field 'api_id' must be a string, got number" in problems
    assert "missing field 'service_key'" in problems
    assert "field 'response_id' must not be empty" in problems
    assert "field 'timestamp' is null" in problems
    assert "field 'payload' must be an object, got array" in problems
    assert "unexpected field 'extra'" in problems
    assert check_track_record([1]) == ["record must be a JSON object, got array"]


@pytest.mark.parametrize(
    "timestamp",
    ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456+00:00", "2024-06-01T12:30:00+02:00"],
)
def test_track_timestamps_in_iso_8601_with_an_offset_pass(timestamp: str) -> None:
    """ISO-8601 date-times with Z or an offset are accepted."""
    assert check_track_record(track_record(timestamp=timestamp)) == []


@pytest.mark.parametrize("timestamp", ["yesterday", "2024-01-01T00:00:00", "2024-01-01"])
def test_track_timestamps_without_offset_or_unreadable_fail(timestamp: str) -> None:
    """A timestamp that is not ISO-8601 or has no UTC offset is an error."""
    (problem,) = check_track_record(track_record(timestamp=timestamp))
    assert "timestamp" in problem


def test_usage_records_are_free_form_but_need_a_response_id() -> None:
    """A /track-usage record may hold any field; it needs a non-empty string response_id."""
    assert check_usage_record(usage_record(anything={"goes": True})) == []
    assert check_usage_record({"usage": 1}) == ["missing field 'response_id'"]
    assert check_usage_record({"response_id": 7}) == [
        "field 'response_id' must be a string, got number"
    ]
    assert check_usage_record({"response_id": "r", "service_id": 5}) == [
        "field 'service_id' must be a string or null, got number"
    ]


def test_dedup_key_is_the_service_and_the_response_id() -> None:
    """Same event: /track by service_key; /track-usage by service_id, else config_id."""
    assert dedup_key("track", track_record(response_id="r", service_key="k")) == ("k", "r")
    both = {"service_id": "s", "config_id": "c", "response_id": "r"}
    assert dedup_key("track_usage", both) == ("s", "r")
    assert dedup_key("track_usage", {"config_id": "c", "response_id": "r"}) == ("c", "r")
    assert usage_service({}) == ""


def test_plan_batch_answers_one_result_per_record_in_order() -> None:
    """Valid records are queued and stored, invalid ones get error with their problems."""
    good, bad = track_record(), track_record(payload="x")
    plan = plan_batch([good, bad, "junk"], "track")
    assert plan.status_code == 202
    assert [r["status"] for r in plan.results] == ["queued", "error", "error"]
    assert plan.results[0] == {"response_id": good["response_id"], "status": "queued"}
    assert plan.results[1]["response_id"] == bad["response_id"]
    assert plan.results[2]["response_id"] is None
    assert plan.to_store == [good]
    assert plan.errors == 2


def test_plan_batch_rejects_named_ids_and_keeps_the_rest_with_2xx() -> None:
    """With a 2xx reject status, rejected ids get error and the others are still stored."""
    keep, drop = track_record(), track_record()
    plan = plan_batch([keep, drop], "track", reject_ids={drop["response_id"]})
    assert plan.status_code == 202
    assert plan.results[1]["status"] == "error"
    assert "reject" in plan.results[1]["errors"][0]
    assert plan.to_store == [keep]
    assert plan.rejected == 1


def test_plan_batch_with_4xx_reject_status_stores_nothing() -> None:
    """With reject_status 422 a batch holding a rejected id stores nothing and answers 422."""
    keep, drop = track_record(), track_record()
    plan = plan_batch([keep, drop], "track", reject_ids={drop["response_id"]}, reject_status=422)
    assert plan.status_code == 422
    assert plan.to_store == []
    assert [r["status"] for r in plan.results] == ["queued", "error"]
    clean = plan_batch([keep], "track", reject_ids={drop["response_id"]}, reject_status=422)
    assert clean.status_code == 202
    assert clean.to_store == [keep]


def test_api_key_match_needs_bearer_and_the_exact_key() -> None:
    """Only ``Bearer <key>`` with exactly the key matches."""
    assert api_key_matches("Bearer k-1", "k-1")
    assert api_key_matches("bearer k-1", "k-1")
    assert not api_key_matches("Bearer k-2", "k-1")
    assert not api_key_matches("Bearer k-1x", "k-1")
    assert not api_key_matches("Basic k-1", "k-1")
    assert not api_key_matches(None, "k-1")
    assert not api_key_matches("Bearer ключ", "k-1")


def test_configs_accept_the_whole_object_or_the_list() -> None:
    """Configs come as {"service_configs": [...]} or as the list; defaults are filled in."""
    listed = normalise_configs([{"config_id": "c", "api_id": "a"}])
    wrapped = normalise_configs({"service_configs": [{"config_id": "c", "api_id": "a"}]})
    expected = {"config_id": "c", "api_id": "a", "handling_config": {}, "manual_usage_schema": None}
    assert listed == wrapped == [expected]
    with pytest.raises(ValueError, match="config_id"):
        normalise_configs([{"api_id": "a"}])
    with pytest.raises(ValueError, match="service_configs"):
        normalise_configs({"configs": []})


def test_configs_document_filters_by_api_id_and_is_canonical() -> None:
    """The body lists only the asked api_id's configs; equal configs give equal bytes."""
    configs = normalise_configs(
        [{"config_id": "c1", "api_id": "a"}, {"api_id": "b", "config_id": "c2"}]
    )
    assert [c["config_id"] for c in loads(configs_document(configs, "b"))["service_configs"]] == [
        "c2"
    ]
    assert loads(configs_document(configs, None))["triggered_limits"] == {}
    reordered = [dict(reversed(list(c.items()))) for c in configs]
    assert configs_document(configs, None) == configs_document(reordered, None)


def test_etag_matching_follows_if_none_match() -> None:
    """A strong ETag matches itself, its weak form, a list holding it, and ``*``."""
    tag = etag_for(b"body")
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert tag != etag_for(b"other")
    assert etag_matches(tag, tag)
    assert etag_matches(f'"nope", W/{tag}', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('"nope"', tag)
    assert not etag_matches(None, tag)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_stdlib_json_fallback_reads_what_the_fast_path_writes(value: object) -> None:
    """Without orjson the stdlib reads and writes the same JSON values."""
    assert stdlib_loads(dumps_bytes(value)) == loads(stdlib_dumps(value))


@pytest.mark.parametrize(
    "body", [b'["\\ud800"]', b'["\\uDC00x"]', b'["\xed\xa0\x80"]', b'["\xff"]']
)
def test_lone_surrogates_and_invalid_utf8_are_not_json(body: bytes) -> None:
    """Both JSON paths refuse unpaired surrogates and bytes that are not UTF-8."""
    with pytest.raises(ValueError):  # noqa: PT011 - the two libraries word it differently
        loads(body)
    with pytest.raises(ValueError):  # noqa: PT011
        stdlib_loads(body)
    assert stdlib_loads(b'["\\ud83d\\ude00"]') == loads(b'["\\ud83d\\ude00"]') == ["\U0001f600"]


def test_stdlib_json_fallback_refuses_nan() -> None:
    """The stdlib fallback refuses NaN and Infinity, as orjson does."""
    with pytest.raises(ValueError, match="NaN"):
        stdlib_loads(b"[NaN]")
    with pytest.raises(ValueError, match="JSON compliant"):
        stdlib_dumps([math.inf])


def test_faults_are_off_by_default_and_validated() -> None:
    """Every fault is off by default; out-of-range options raise ValueError."""
    faults = Faults()
    assert (faults.failure_rate, faults.drop_rate, faults.latency, faults.fail_first) == (
        0,
        0,
        0,
        0,
    )
    assert (faults.failure_status, faults.reject_status) == (503, 202)
    assert (faults.retry_after, faults.require_api_key) == (None, None)
    for bad in (
        {"failure_rate": 1.5},
        {"drop_rate": -0.1},
        {"latency": -1},
        {"failure_status": 200},
        {"reject_status": 302},
        {"fail_first": -1},
        {"require_api_key": ""},
    ):
        (name,) = bad
        with pytest.raises(ValueError, match=name):
            Faults(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Faults(reject_response_ids="abc")


def test_faults_repr_and_json_hide_the_api_key() -> None:
    """The required API key never appears in a repr or in the admin JSON."""
    faults = Faults(require_api_key="s3cret", reject_response_ids=["b", "a"])
    assert "s3cret" not in repr(faults)
    data = faults_to_json(faults)
    assert data["require_api_key"] == "***"
    assert data["reject_response_ids"] == ["a", "b"]


def test_faults_from_mapping_refuses_unknown_or_ill_typed_fields() -> None:
    """Admin JSON with an unknown option or a wrong type is refused with ValueError."""
    assert faults_from_mapping({"fail_first": 2}) == Faults(fail_first=2)
    with pytest.raises(ValueError, match="unknown"):
        faults_from_mapping({"explode": True})
    with pytest.raises(ValueError, match="integer"):
        faults_from_mapping({"fail_first": "2"})


def test_fault_injector_is_reproducible_with_a_seed() -> None:
    """The same seed and faults give the same failures in the same order."""
    faults = Faults(failure_rate=0.5, drop_rate=0.3)

    def pattern() -> list[tuple[str | None, bool]]:
        injector = FaultInjector(faults, seed=42)
        return [(p.failure, p.drop) for p in (injector.plan() for _ in range(50))]

    first = pattern()
    assert first == pattern()
    assert {f for f, _ in first} == {None, "failure"}


def test_fault_injector_rates_are_roughly_honoured() -> None:
    """A failure_rate of 0.3 fails about 30% of requests; 0 never, 1 always."""
    injector = FaultInjector(Faults(failure_rate=0.3), seed=7)
    failures = sum(injector.plan().failure is not None for _ in range(2000))
    assert 500 < failures < 700
    always = FaultInjector(Faults(failure_rate=1.0))
    never = FaultInjector(Faults(failure_rate=0.0))
    assert all(always.plan().failure == "failure" for _ in range(100))
    assert all(never.plan().failure is None for _ in range(100))


def test_fail_first_counts_down_then_stops() -> None:
    """fail_first=N fails exactly the next N requests, and counts afresh when set again."""
    injector = FaultInjector(Faults(fail_first=3))
    assert [injector.plan().failure for _ in range(5)] == ["fail_first"] * 3 + [None] * 2
    injector.set(Faults(fail_first=1))
    assert [injector.plan().failure for _ in range(2)] == ["fail_first", None]
