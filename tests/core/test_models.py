"""Records and plain data: building, validating, copying and (un)structuring, with properties."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicm._core.exceptions import (
    InvalidKeyError,
    InvalidTimestampError,
    NonFiniteNumberError,
    NotSerializableError,
    RecordError,
    RecordTooLargeError,
)
from aicm._core.jsonplain import check_size, to_plain
from aicm._core.models import (
    ConfigsResponse,
    Endpoint,
    RecordResult,
    ServiceConfig,
    TrackRecord,
    TrackResult,
    UsageRecord,
    converter,
    new_response_id,
    normalize_timestamp,
    utc_now_iso,
)

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UTC = dt.timezone.utc


def build(usage: Any = None, **kwargs: Any) -> TrackRecord:
    """A TrackRecord for api 'openai', service 'openai::gpt-4o'."""
    return TrackRecord.build("openai", "openai::gpt-4o", {} if usage is None else usage, **kwargs)


def exact_size(value: Any) -> int:
    """The compact UTF-8 JSON size, computed independently of aicm."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return len(text.encode("utf-8"))


# -- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05Z", id="naive-is-utc"),
        pytest.param(
            dt.datetime(2024, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-01-02T03:04:05Z",
            id="aware-converted",
        ),
        pytest.param(
            dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
            "2024-01-02T03:04:05.123456Z",
            id="aware-utc-micro",
        ),
        pytest.param("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z", id="iso-Z"),
        pytest.param("2024-01-02t03:04:05z", "2024-01-02T03:04:05Z", id="iso-lower-z"),
        pytest.param("2024-01-01T22:04:05-05:00", "2024-01-02T03:04:05Z", id="iso-offset"),
        pytest.param("2024-01-02T03:04:05", "2024-01-02T03:04:05Z", id="iso-naive-is-utc"),
        pytest.param("  2024-01-02T03:04:05+00:00 ", "2024-01-02T03:04:05Z", id="iso-padded"),
        pytest.param(0, "1970-01-01T00:00:00Z", id="epoch-int"),
        pytest.param(1_700_000_000, "2023-11-14T22:13:20Z", id="epoch-int-recent"),
        pytest.param(1.5, "1970-01-01T00:00:01.500000Z", id="epoch-float"),
    ],
)
def test_timestamp_forms_become_iso_utc(value: object, expected: str) -> None:
    """datetimes (naive = UTC), ISO strings (Z or offset) and epoch seconds become ISO UTC."""
    assert build(timestamp=value).timestamp == expected
    assert normalize_timestamp(value) == expected


def test_timestamp_none_means_now() -> None:
    """Without a timestamp the record is stamped with the current UTC time."""
    before = dt.datetime.now(UTC).replace(microsecond=0)
    stamp = build().timestamp
    after = dt.datetime.now(UTC)
    assert stamp.endswith("Z")
    moment = dt.datetime.fromisoformat(stamp[:-1] + "+00:00")
    assert before <= moment <= after


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="bool"),
        pytest.param(False, id="bool-false"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param(1e20, id="epoch-out-of-range"),
        pytest.param(10**400, id="epoch-int-past-any-float"),
        pytest.param(10**5000, id="epoch-int-too-long-to-print"),
        pytest.param("yesterday", id="garbage-string"),
        pytest.param("", id="empty-string"),
        pytest.param(b"2024-01-01", id="bytes"),
        pytest.param(dt.date(2024, 1, 1), id="date-not-datetime"),
        pytest.param(object(), id="object"),
    ],
)
def test_bad_timestamp_raises_naming_timestamp(value: object) -> None:
    """Unreadable timestamps raise InvalidTimestampError with field 'timestamp'."""
    with pytest.raises(InvalidTimestampError) as info:
        build(timestamp=value)
    assert info.value.field == "timestamp"
    assert str(info.value).startswith("timestamp: ")
    assert isinstance(info.value, RecordError)


def test_usage_record_timestamp_is_normalised() -> None:
    """A /track-usage record's timestamp is normalised too; a bad one names 'timestamp'."""
    record = UsageRecord.build({"response_id": "r", "timestamp": "2024-01-01T01:00:00+01:00"})
    assert record.payload["timestamp"] == "2024-01-01T00:00:00Z"
    with pytest.raises(InvalidTimestampError) as info:
        UsageRecord.build({"response_id": "r", "timestamp": "later"})
    assert info.value.field == "timestamp"


def test_usage_record_timestamp_right_after_now_is_still_checked() -> None:
    """The clock's own value is kept as is; any other, even made just after it, is checked;
    a payload without a timestamp gets none."""
    now = utc_now_iso()
    assert UsageRecord.build({"response_id": "r", "timestamp": now}).payload["timestamp"] is now
    utc_now_iso()
    record = UsageRecord.build({"response_id": "r", "timestamp": "2024-01-01T01:00:00+01:00"})
    assert record.payload["timestamp"] == "2024-01-01T00:00:00Z"
    utc_now_iso()
    with pytest.raises(InvalidTimestampError):
        UsageRecord.build({"response_id": "r", "timestamp": ""})
    assert "timestamp" not in UsageRecord.build({"response_id": "r"}).payload


# -- response ids ----------------------------------------------------------------------------


def test_default_response_id_is_a_fresh_uuid4() -> None:
    """Without a response_id each record gets its own UUID (version 4 format)."""
    ids = [build().response_id for _ in range(50)]
    assert len(set(ids)) == 50
    for rid in ids:
        parsed = uuid.UUID(rid)
        assert parsed.version == 4
        assert str(parsed) == rid


def test_default_response_ids_differ_across_forked_processes() -> None:
    """A forked child draws a new random prefix: its ids never repeat the parent's."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send one id and leave at once
        os.write(write, new_response_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    mine = new_response_id()
    assert uuid.UUID(child).version == 4
    assert child[:24] != mine[:24]  # the random prefix (the counter is the last 12 digits)


def test_given_response_id_is_kept() -> None:
    """The caller's response_id is the record's idempotency key, unchanged."""
    assert build(response_id="call-42").response_id == "call-42"


def test_usage_record_response_ids() -> None:
    """/track-usage records keep their response_id, get a UUID4 without one, int becomes str."""
    assert UsageRecord.build({"response_id": "abc"}).response_id == "abc"
    fresh = UsageRecord.build({"usage": {}})
    assert uuid.UUID(fresh.response_id).version == 4
    assert fresh.payload["response_id"] == fresh.response_id
    assert UsageRecord.build({"response_id": 7}).payload["response_id"] == "7"


@pytest.mark.parametrize("rid", ["", 1.5, True, ["x"]])
def test_usage_record_bad_response_id(rid: object) -> None:
    """An empty or non-string, non-int response_id raises RecordError naming it."""
    with pytest.raises(RecordError) as info:
        UsageRecord.build({"response_id": rid})
    assert info.value.field == "response_id"


# -- invalid records -------------------------------------------------------------------------


class Opaque:
    """An object JSON cannot carry."""


@pytest.mark.parametrize(
    ("usage", "error", "field"),
    [
        pytest.param({"x": Opaque()}, NotSerializableError, "usage.x", id="object"),
        pytest.param({"a": [1, 2, b"raw"]}, NotSerializableError, "usage.a[2]", id="bytes-in-list"),
        pytest.param({"a": {"b": {"c": Opaque}}}, NotSerializableError, "usage.a.b.c", id="class"),
        pytest.param({"x": math.nan}, NonFiniteNumberError, "usage.x", id="nan"),
        pytest.param({"x": [math.inf]}, NonFiniteNumberError, "usage.x[0]", id="inf"),
        pytest.param({"x": -math.inf}, NonFiniteNumberError, "usage.x", id="-inf"),
        pytest.param({"x": Decimal("NaN")}, NonFiniteNumberError, "usage.x", id="decimal-nan"),
        pytest.param({1: "a"}, InvalidKeyError, "usage", id="int-key"),
        pytest.param({"a": {(1, 2): 3}}, InvalidKeyError, "usage.a", id="nested-tuple-key"),
        pytest.param({"a": {None: 3}}, InvalidKeyError, "usage.a", id="none-key"),
        pytest.param([1, 2], NotSerializableError, "usage", id="not-a-mapping"),
    ],
)
def test_invalid_usage_raises_its_error_naming_the_path(
    usage: Any, error: type[RecordError], field: str
) -> None:
    """Each kind of bad value raises its own RecordError subclass with the path to it."""
    with pytest.raises(error) as info:
        build(usage)
    assert type(info.value) is error
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_invalid_context_names_context() -> None:
    """A bad value in context is reported under 'context'."""
    with pytest.raises(NotSerializableError) as info:
        build(context={"user": Opaque()})
    assert info.value.field == "context.user"
    with pytest.raises(NotSerializableError) as info:
        build(context="not a mapping")
    assert info.value.field == "context"


def test_too_deep_nesting_is_refused() -> None:
    """A tree nested past the depth limit is refused rather than recursing without end."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(200):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(NotSerializableError, match="nested deeper"):
        build(deep)


@pytest.mark.parametrize(
    ("field", "args"),
    [
        ("api_id", ("", "svc")),
        ("api_id", (None, "svc")),
        ("api_id", (5, "svc")),
        ("service_key", ("api", "")),
        ("service_key", ("api", None)),
    ],
)
def test_empty_or_missing_ids_raise_naming_the_field(field: str, args: tuple[Any, Any]) -> None:
    """api_id and service_key must be non-empty strings; the error names which."""
    with pytest.raises(RecordError) as info:
        TrackRecord.build(args[0], args[1], {})
    assert info.value.field == field


@pytest.mark.parametrize(("field", "value"), [("response_id", ""), ("client_customer_key", "")])
def test_empty_optional_ids_raise(field: str, value: str) -> None:
    """A given but empty response_id or client_customer_key is an error, not 'absent'."""
    with pytest.raises(RecordError) as info:
        build(**{field: value})
    assert info.value.field == field


def test_oversize_record_reports_size_and_limit() -> None:
    """A record over max_bytes raises RecordTooLargeError with its exact size and the limit."""
    fixed = {"response_id": "r1", "timestamp": "2024-01-01T00:00:00Z"}
    usage = {"text": "é" * 300, "n": list(range(50))}
    size = exact_size(build(usage, **fixed).wire())
    assert build(usage, max_bytes=size, **fixed).payload == usage
    with pytest.raises(RecordTooLargeError) as info:
        build(usage, max_bytes=size - 1, **fixed)
    error = info.value
    assert (error.size, error.limit, error.field) == (size, size - 1, "usage")
    assert str(size) in str(error)


def test_default_size_limit_is_64_kib() -> None:
    """Without max_bytes, a record over 64 KiB is refused; under it, accepted."""
    build({"blob": "x" * 60_000})
    with pytest.raises(RecordTooLargeError) as info:
        build({"blob": "x" * 70_000})
    assert info.value.limit == 65536


def test_usage_record_size_limit() -> None:
    """UsageRecord.build honours max_bytes on the whole payload."""
    payload = {"response_id": "r", "usage": {"blob": "y" * 500}}
    size = exact_size(payload)
    UsageRecord.build(payload, max_bytes=size)
    with pytest.raises(RecordTooLargeError) as info:
        UsageRecord.build(payload, max_bytes=size - 1)
    assert (info.value.size, info.value.field) == (size, "payload")


def test_usage_record_rejects_non_mappings_and_bad_values() -> None:
    """A /track-usage record must be a mapping of plain data; errors name 'payload...'."""
    with pytest.raises(NotSerializableError) as info:
        UsageRecord.build(["x"])  # type: ignore[arg-type]
    assert info.value.field == "payload"
    with pytest.raises(NotSerializableError) as info:
        UsageRecord.build({"usage": {"x": Opaque()}})
    assert info.value.field == "payload.usage.x"


def test_big_integers_count_at_their_real_size() -> None:
    """An int of 200 digits is over a 100-byte limit (the size bound must not undercount)."""
    with pytest.raises(RecordTooLargeError):
        check_size(10**200, field="usage", limit=100)


def test_integer_json_cannot_write_is_refused_at_build() -> None:
    """An int beyond Python's int->str digit limit is refused when the record is built."""
    with pytest.raises(RecordError):
        build({"n": 10**5000})


def test_lone_surrogate_is_refused_at_build() -> None:
    """A string UTF-8 cannot encode (a lone surrogate) is refused when the record is built."""
    with pytest.raises(NotSerializableError):
        build({"note": "\ud800"})


# -- plain data ------------------------------------------------------------------------------


class Color(enum.Enum):
    """A plain enum."""

    RED = "red"


class Level(enum.IntEnum):
    """An int enum."""

    HIGH = 3


@dataclasses.dataclass
class Tokens:
    """A dataclass of usage."""

    input: int
    output: int
    model: Color


class PydanticUsage(pydantic.BaseModel):
    """A pydantic v2 model, as SDK responses are."""

    tokens: int
    when: dt.datetime
    tags: list[str]


def test_rich_values_become_plain_data() -> None:
    """Dataclasses, pydantic models, enums, Decimal, datetime, UUID, sets, tuples -> plain."""
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    usage = {
        "dc": Tokens(1, 2, Color.RED),
        "pd": PydanticUsage(tokens=5, when=dt.datetime(2024, 1, 1, tzinfo=UTC), tags=["a", "b"]),
        "enum": Color.RED,
        "intenum": Level.HIGH,
        "dec_int": Decimal("10"),
        "dec_frac": Decimal("0.25"),
        "when": dt.datetime(2024, 1, 2, 3, 4, 5),
        "day": dt.date(2024, 1, 2),
        "at": dt.time(3, 4, 5),
        "id": ident,
        "set": {3, 1, 2},
        "frozen": frozenset({"b", "a"}),
        "tuple": (1, (2, 3)),
    }
    record = build(usage)
    assert record.payload == {
        "dc": {"input": 1, "output": 2, "model": "red"},
        "pd": {"tokens": 5, "when": "2024-01-01T00:00:00Z", "tags": ["a", "b"]},
        "enum": "red",
        "intenum": 3,
        "dec_int": 10,
        "dec_frac": 0.25,
        "when": "2024-01-02T03:04:05Z",
        "day": "2024-01-02",
        "at": "03:04:05",
        "id": str(ident),
        "set": [1, 2, 3],
        "frozen": ["a", "b"],
        "tuple": [1, [2, 3]],
    }
    assert type(record.payload["intenum"]) is int
    assert json.loads(json.dumps(record.wire())) == record.wire()


def test_pydantic_model_as_the_whole_usage() -> None:
    """A pydantic model can be the usage itself (it dumps to a mapping)."""
    usage = PydanticUsage(tokens=1, when=dt.datetime(2024, 5, 5, tzinfo=UTC), tags=[])
    assert build(usage).payload == {"tokens": 1, "when": "2024-05-05T00:00:00Z", "tags": []}


def test_record_is_a_copy_of_the_callers_data() -> None:
    """Mutating the caller's dict (or nested list) after build changes nothing in the record."""
    usage: dict[str, Any] = {"tokens": 1, "nested": {"items": [1, 2]}}
    context: dict[str, Any] = {"user": {"id": "u1"}}
    record = build(usage, context=context)
    usage["tokens"] = 99
    usage["nested"]["items"].append(3)
    usage["new"] = True
    context["user"]["id"] = "u2"
    assert record.payload == {"tokens": 1, "nested": {"items": [1, 2]}}
    assert record.context == {"user": {"id": "u1"}}
    payload = {"response_id": "r", "usage": {"n": [1]}}
    usage_record = UsageRecord.build(payload)
    payload["usage"]["n"].append(2)  # type: ignore[index]
    assert usage_record.payload["usage"] == {"n": [1]}


def test_str_enum_keys_become_their_value() -> None:
    """A (str, Enum) key is its value in the record, as json.dumps would write it."""

    class Key(str, enum.Enum):
        TOKENS = "tokens"

    payload = build({Key.TOKENS: 1}).payload
    assert json.dumps({Key.TOKENS: 1}) == '{"tokens": 1}'
    assert list(payload) == ["tokens"]
    assert type(next(iter(payload))) is str


def test_str_subclass_keys_become_plain_str() -> None:
    """A plain str-subclass key is kept as its text, as an exact str."""

    class Name(str):
        pass

    payload = build({Name("tokens"): 1}).payload
    assert list(payload) == ["tokens"]
    assert type(next(iter(payload))) is str


def test_wire_form_leaves_out_unset_optionals() -> None:
    """wire() carries the contract's fields, optional ones only when set."""
    base = build({"n": 1}, response_id="r", timestamp=0)
    assert base.wire() == {
        "service_key": "openai::gpt-4o",
        "response_id": "r",
        "timestamp": "1970-01-01T00:00:00Z",
        "payload": {"n": 1},
    }
    full = build({"n": 1}, client_customer_key="cust", context={"a": 1})
    assert full.wire()["customer_key"] == "cust"
    assert full.wire()["context"] == {"a": 1}
    legacy = build({"n": 1}, response_id="r", timestamp=0, customer_key="cust", legacy=True)
    assert legacy.wire() == {
        "api_id": "openai",
        "service_key": "openai::gpt-4o",
        "response_id": "r",
        "timestamp": "1970-01-01T00:00:00Z",
        "payload": {"n": 1},
        "client_customer_key": "cust",
    }
    assert TrackRecord.endpoint is Endpoint.TRACK
    assert UsageRecord.endpoint is Endpoint.TRACK_USAGE
    assert (Endpoint.TRACK.body_key, Endpoint.TRACK_USAGE.body_key) == ("tracked", "usage_records")


# -- the converter ---------------------------------------------------------------------------


def test_converter_round_trips_track_result() -> None:
    """TrackResult unstructures and structures back to an equal value."""
    result = TrackResult(
        results=(
            RecordResult(response_id="a", status="queued"),
            RecordResult(response_id="b", status="error", errors=("bad", "worse")),
        ),
        triggered_limits={"daily": {"used": 3}},
    )
    data = converter.unstructure(result)
    assert data == {
        "results": [
            {"response_id": "a", "status": "queued", "errors": []},
            {"response_id": "b", "status": "error", "errors": ["bad", "worse"]},
        ],
        "triggered_limits": {"daily": {"used": 3}},
    }
    assert converter.structure(data, TrackResult) == result
    assert converter.structure(json.loads(json.dumps(data)), TrackResult) == result


def test_converter_reads_the_wire_answer() -> None:
    """A /track answer from the wire (errors as list, or missing) becomes a TrackResult."""
    wire = {
        "results": [
            {"response_id": "a", "status": "queued"},
            {"response_id": "b", "status": "error", "errors": ["field 'x' is bad"]},
            {"response_id": "c", "status": "service_key_unknown", "errors": "one"},
        ],
        "triggered_limits": {},
    }
    result = converter.structure(wire, TrackResult)
    assert [r.ok for r in result.results] == [True, False, False]
    assert result.results[1].errors == ("field 'x' is bad",)
    assert result.results[2].errors == ("one",)


def test_converter_round_trips_configs_response() -> None:
    """ConfigsResponse survives unstructure -> JSON -> structure unchanged."""
    configs = ConfigsResponse(
        service_configs=(
            ServiceConfig(
                config_id="cfg",
                api_id="openai",
                handling_config={"tracked_methods": ["chat.completions.create"]},
                manual_usage_schema={"tokens": "int"},
            ),
            ServiceConfig(config_id="cfg2", api_id="x"),
        ),
        triggered_limits={"k": 1},
    )
    data = json.loads(json.dumps(converter.unstructure(configs)))
    assert data["service_configs"][0]["config_id"] == "cfg"
    assert converter.structure(data, ConfigsResponse) == configs


def test_converter_unstructures_records_to_their_wire_form() -> None:
    """Records unstructure through the converter to exactly their wire() form."""
    record = build({"n": 1}, response_id="r", timestamp=0)
    assert converter.unstructure(record) == record.wire()
    usage = UsageRecord.build({"response_id": "u", "usage": {"s": 1}})
    assert converter.unstructure(usage) == usage.wire()


# -- properties ------------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_TREES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(), children, max_size=6)
    ),
    max_leaves=25,
)


@PROPERTY
@given(JSON_TREES)
def test_to_plain_keeps_plain_trees_equal_but_copied(tree: Any) -> None:
    """Any JSON-plain tree passes to_plain unchanged in value, as a fresh copy."""
    plain = to_plain(tree)
    assert plain == tree
    assert json.dumps(plain, sort_keys=True) == json.dumps(tree, sort_keys=True)
    if isinstance(tree, (dict, list)):
        assert plain is not tree


@PROPERTY
@given(JSON_TREES, st.data())
def test_check_size_agrees_with_json_dumps(tree: Any, data: st.DataObject) -> None:
    """check_size raises iff the compact UTF-8 JSON is over the limit, reporting the real size."""
    size = exact_size(tree)
    limit = data.draw(st.integers(min_value=1, max_value=size * 2 + 10), label="limit")
    if size > limit:
        with pytest.raises(RecordTooLargeError) as info:
            check_size(tree, field="usage", limit=limit)
        assert (info.value.size, info.value.limit) == (size, limit)
    else:
        assert check_size(tree, field="usage", limit=limit) >= size


@settings(PROPERTY, max_examples=40)
@given(st.dictionaries(st.text(), JSON_TREES, max_size=4))
def test_built_records_hold_exactly_the_usage(usage: dict[str, Any]) -> None:
    """A TrackRecord built from plain usage carries it unchanged, within the size limit."""
    record = build(usage, max_bytes=10**9)
    assert record.payload == usage
    assert exact_size(record.wire()) > exact_size(usage)


@settings(PROPERTY, max_examples=60)
@given(st.datetimes(timezones=st.timezones() | st.none()))
def test_timestamps_round_trip_to_the_same_instant(moment: dt.datetime) -> None:
    """Any datetime normalises to an ISO UTC string naming the same instant."""
    text = normalize_timestamp(moment)
    assert text.endswith("Z")
    parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00")
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    # Subtraction, not ==: inter-zone == is False for times in a DST gap or fold (PEP 495).
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert parsed - epoch == aware - epoch


def test_epoch_matches_time_module() -> None:
    """An epoch number names the same instant as the time module says."""
    now = time.time()
    text = normalize_timestamp(now)
    parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00")
    assert abs(parsed.timestamp() - now) < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        pytest.param({"usage": {10**5000: 1}}, InvalidKeyError, "usage", id="usage-key"),
        pytest.param({"response_id": 10**5000}, RecordError, "response_id", id="response-id"),
        pytest.param(
            {"client_customer_key": 10**5000}, RecordError, "client_customer_key", id="customer"
        ),
    ],
)
def test_an_integer_too_long_to_print_is_named_by_its_size(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    """Python refuses to print an integer past 4300 digits: the error names its size instead
    of failing to build its own message (ValueError)."""
    with pytest.raises(error) as info:
        build(**kwargs)
    assert info.value.field == field  # type: ignore[attr-defined]
    assert "an integer of 16610 bits" in str(info.value)


# -- numbers no double holds, oversized names, objects that raise --------------------------------


@pytest.mark.parametrize(
    "text", ["1e5000", "-1e5000", "1e400", "2e308", "1e1000000", "1e-400", "-5e-1000000"]
)
def test_a_decimal_no_double_holds_is_refused_at_once_naming_the_key(text: str) -> None:
    """Decimals beyond a double's range (either way): NonFiniteNumberError naming the key,
    within a millisecond (1e1000000 used to take ~30 s, 1e5000 a raw ValueError)."""
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        with pytest.raises(NonFiniteNumberError) as info:
            build({"tokens": 1, "cost": {"usd": Decimal(text)}})
        timings.append(time.perf_counter() - started)
        assert info.value.field == "usage.cost.usd"
        assert "double" in str(info.value)
    assert min(timings) < 0.001


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123", 123),
        ("-9223372036854775808", -(2**63)),
        ("1.5", 1.5),
        ("1e300", 1e300),
        ("12345678901234567890123", 1.2345678901234568e22),
        ("1e-300", 1e-300),
        ("0E-1000000", 0),
        ("0E+1000000", 0),
    ],
)
def test_decimals_in_range_become_json_numbers(text: str, expected: float) -> None:
    """Integral Decimals within 64 bits are ints; the rest a double; none a 300-digit int."""
    value = to_plain({"x": Decimal(text)})
    assert value == {"x": expected}
    assert type(value["x"]) is type(expected)  # type: ignore[index]
    assert len(json.dumps(value)) < 40


@pytest.mark.parametrize("field", ["api_id", "service_key", "client_customer_key"])
def test_an_oversized_name_is_named_by_the_too_large_error(field: str) -> None:
    """An api_id, service_key or client_customer_key that makes the record too large is the
    field RecordTooLargeError names (it used to name response_id)."""
    names = {"api_id": "openai", "service_key": "gpt", "client_customer_key": "acme"}
    names[field] = "x" * 100_000
    with pytest.raises(RecordTooLargeError) as info:
        TrackRecord.build(
            names["api_id"],
            names["service_key"],
            {"n": 1},
            client_customer_key=names["client_customer_key"],
        )
    assert info.value.field == field


class RaisingMapping(Mapping[str, Any]):
    """A mapping whose item access raises."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("getitem failed")

    def __iter__(self) -> Iterator[str]:
        return iter(["n"])

    def __len__(self) -> int:
        return 1


class RaisingIteration(list):  # type: ignore[type-arg]
    """A list whose iteration raises."""

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("iter failed")


class RaisingDump:
    """A model whose model_dump raises."""

    def model_dump(self, **kwargs: Any) -> Any:
        raise RuntimeError("dump failed")


class RaisingZone(dt.tzinfo):
    """A time zone that cannot say its offset."""

    def utcoffset(self, moment: dt.datetime | None) -> dt.timedelta:
        raise RuntimeError("tz failed")


RAISING: dict[str, Any] = {
    "getitem": RaisingMapping(),
    "iter": RaisingIteration([1]),
    "model_dump": RaisingDump(),
    "tzinfo": dt.datetime(2024, 1, 1, tzinfo=RaisingZone()),
}


@pytest.mark.parametrize("kind", sorted(RAISING))
def test_an_object_that_raises_is_a_record_error_naming_the_field(kind: str) -> None:
    """A caller's object whose __getitem__, __iter__, model_dump or tzinfo raises: an
    AicmError naming the field, never the object's RuntimeError."""
    with pytest.raises(RecordError) as info:
        build({"n": 1, "inner": {"bad": RAISING[kind]}})
    assert info.value.field == "usage.inner.bad"
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(RecordError) as top:
        build({"n": 1}, context={"bad": RAISING[kind]})
    assert top.value.field == "context.bad"


def test_a_timestamp_whose_zone_raises_is_an_invalid_timestamp() -> None:
    """A datetime whose tzinfo raises, given as the timestamp: InvalidTimestampError."""
    with pytest.raises(InvalidTimestampError) as info:
        build({"n": 1}, timestamp=RAISING["tzinfo"])
    assert info.value.field == "timestamp"


# -- UsageRecord.build(plain=True): an extracted payload is taken without a second copy ---


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"in": value}
    return value


_PLAIN_PAYLOADS: list[dict[str, Any]] = [
    {"response_id": "r", "usage": {"prompt_tokens": 12, "details": {"cached": 0}}},
    {"response_id": 7, "timestamp": "2024-01-01T01:00:00+01:00", "items": [1, 2.5, None]},
    {"service_id": "m", "flag": True, "nothing": None},  # no response_id: a fresh one
]
_NOT_PLAIN_PAYLOADS: list[dict[str, Any]] = [
    {"response_id": "r", "text": "caf\u00e9"},  # non-ASCII: to_plain checks it
    {"response_id": "r", "big": 2**70},  # beyond 64 bits: refused
    {"response_id": "r", "bad": "\ud800"},  # a lone surrogate: refused
    {"response_id": "r", "nan": math.nan},  # not finite: refused
    {"response_id": "r", "tuple": (1, 2)},  # not JSON-shaped: converted
    {"response_id": "r", "deep": _deep(70)},  # deeper than to_plain follows: refused
]


def _same_build(payload: dict[str, Any], **kwargs: Any) -> tuple[Any, Any]:
    """``build(copy, plain=True)`` and ``build(payload)``: each a record or the error raised."""
    out = []
    for plain in (True, False):
        try:
            out.append(UsageRecord.build(_copy(payload), plain=plain, **kwargs))
        except RecordError as exc:
            out.append((type(exc), str(exc)))
    return out[0], out[1]


def _copy(value: Any) -> Any:
    """A deep copy keeping tuples, NaN and surrogates (what the payload holds)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


@pytest.mark.parametrize("payload", _PLAIN_PAYLOADS + _NOT_PLAIN_PAYLOADS)
def test_plain_build_makes_the_record_the_full_conversion_makes(payload: dict[str, Any]) -> None:
    with_plain, converted = _same_build(payload)
    if isinstance(converted, UsageRecord):
        assert isinstance(with_plain, UsageRecord)
        if "response_id" not in payload:  # a fresh id each: compare the rest
            assert with_plain.payload.keys() == converted.payload.keys()
            assert {k: v for k, v in with_plain.payload.items() if k != "response_id"} == {
                k: v for k, v in converted.payload.items() if k != "response_id"
            }
        else:
            assert with_plain == converted
    else:
        assert with_plain == converted  # the same error, the same message


def test_plain_build_still_refuses_a_payload_over_the_size_limit() -> None:
    payload = {"response_id": "r", "text": "x" * 5000}
    with_plain, converted = _same_build(payload, max_bytes=4096)
    assert with_plain == converted
    assert with_plain[0] is RecordTooLargeError
    # Just under the limit once measured exactly: the bound alone would have refused it.
    fits = {"response_id": "r", "text": "x" * 3900}
    assert isinstance(UsageRecord.build(fits, plain=True, max_bytes=4096), UsageRecord)
