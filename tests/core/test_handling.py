"""Handling configs: parsing, validation errors naming config and field, method matching."""

from __future__ import annotations

from typing import Any

import pytest

from aicm._core.exceptions import ConfigError, HandlingConfigError
from aicm._core.handling import (
    HandlingConfig,
    MethodMatcher,
    ResponseField,
    SourceKind,
    parse_path,
)
from tests.tracking_support import SEED_000_HANDLING, SEED_004_HANDLING

# The seeds' handling configs, shared with the delivery tests.
SEED_000 = SEED_000_HANDLING
SEED_004 = SEED_004_HANDLING


def parse(data: Any, config_id: str = "cfg") -> HandlingConfig:
    return HandlingConfig.from_mapping(data, config_id=config_id)


def with_changes(**changes: Any) -> dict[str, Any]:
    data = dict(SEED_000)
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_seed_000_config_parses() -> None:
    """Seed 000's config parses into methods, fields, compiled sources and static fields."""
    cfg = parse(SEED_000, "calc")
    assert cfg.config_id == "calc"
    assert cfg.tracked_methods == ("add",)
    assert cfg.request_fields == ("a", "b")
    assert cfg.response_fields == (ResponseField(key="value", path="", steps=()),)
    assert [(s.key, s.kind, s.name, s.steps) for s in cfg.payload_mapping] == [
        ("config", SourceKind.CONFIG_IDENTIFIER, None, ()),
        ("timestamp", SourceKind.TIMESTAMP, None, ()),
        ("usage", SourceKind.RESPONSE_DATA, "value", ()),
    ]
    assert cfg.static_payload_fields == {"static": 1}
    assert cfg.list_path is None
    assert cfg.streaming is None
    assert cfg.only_success is True


def test_seed_004_config_parses() -> None:
    """Seed 004's REST config parses with its list_path and REST method key."""
    cfg = parse(SEED_004, "api.heygen.com")
    assert cfg.tracked_methods == ("GET /v2/streaming.list",)
    assert cfg.list_path == (("sessions", None),)
    assert [f.key for f in cfg.response_fields] == ["session_id", "duration"]
    assert cfg.tracks("GET /v2/streaming.list")


def test_bare_response_path_takes_last_segment_as_key() -> None:
    """A bare response path is stored under its last segment."""
    cfg = parse(
        with_changes(
            response_fields=["usage.total_tokens", "choices.0.message.content"],
            payload_mapping={"usage": "response_data.total_tokens"},
        )
    )
    assert [(f.key, f.path) for f in cfg.response_fields] == [
        ("total_tokens", "usage.total_tokens"),
        ("content", "choices.0.message.content"),
    ]
    assert cfg.response_fields[1].steps == (
        ("choices", None),
        ("0", 0),
        ("message", None),
        ("content", None),
    )


def test_paths_of_every_source_compile() -> None:
    """request_data.X.Y, response_data.X.Y and usage_data.X compile to a name plus steps."""
    cfg = parse(
        {
            "tracked_methods": ["chat.completions.create"],
            "request_fields": ["model", "messages"],
            "response_fields": ["choices"],
            "payload_mapping": {
                "model": "request_data.model",
                "first_role": "request_data.messages.0.role",
                "finish": "response_data.choices.-1.finish_reason",
                "tokens": "usage_data.total_tokens",
                "usage": "usage_data",
                "req": "request_data",
                "resp": "response_data",
            },
        }
    )
    sources = {s.key: (s.kind, s.name, s.steps) for s in cfg.payload_mapping}
    assert sources["first_role"] == (
        SourceKind.REQUEST_DATA,
        "messages",
        (("0", 0), ("role", None)),
    )
    assert sources["finish"] == (
        SourceKind.RESPONSE_DATA,
        "choices",
        (("-1", -1), ("finish_reason", None)),
    )
    assert sources["tokens"] == (SourceKind.USAGE_DATA, None, (("total_tokens", None),))
    assert sources["usage"] == (SourceKind.USAGE_DATA, None, ())
    assert sources["req"] == (SourceKind.REQUEST_DATA, None, ())


def test_every_scalar_source_is_accepted() -> None:
    """All sources the seeds and the REST wrappers use are known."""
    names = [
        "config_identifier",
        "timestamp",
        "service_id",
        "api_id",
        "response_id",
        "client_customer_key",
        "context",
        "base_url",
        "request_data",
        "response_data",
        "usage_data",
    ]
    cfg = parse(with_changes(payload_mapping={n: n for n in names}))
    assert [s.kind.value for s in cfg.payload_mapping] == names


def test_streaming_and_only_success_parse() -> None:
    """streaming.final_fields and only_success are read."""
    cfg = parse(
        with_changes(streaming={"final_fields": ["usage", "delta.stop_reason"]}, only_success=False)
    )
    assert cfg.streaming is not None
    assert [(f.key, f.path) for f in cfg.streaming.final_fields] == [
        ("usage", "usage"),
        ("stop_reason", "delta.stop_reason"),
    ]
    assert cfg.only_success is False


def test_tracked_methods_are_normalised_and_deduplicated() -> None:
    """REST verbs are upper-cased; repeated methods are kept once."""
    cfg = parse(with_changes(tracked_methods=["add", "add", "get /v2/x", "GET /v2/x"]))
    assert cfg.tracked_methods == ("add", "GET /v2/x")


def test_unknown_top_level_keys_are_ignored() -> None:
    """Keys a newer service may send (client_fields, ...) are not errors."""
    cfg = parse(with_changes(client_fields={"x": "y"}, future_option=True))
    assert cfg.tracked_methods == ("add",)


def test_static_fields_only_config_is_valid() -> None:
    """A config may send only static fields (counting calls)."""
    cfg = parse(with_changes(payload_mapping=..., static_payload_fields={"usage": {"calls": 1}}))
    assert cfg.payload_mapping == ()
    assert cfg.static_payload_fields == {"usage": {"calls": 1}}


# (id, changes to seed 000 (... drops a key), field named, fragment of the message)
BAD_CONFIGS: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing-methods", dict(tracked_methods=...), "tracked_methods", "required"),
    ("empty-methods", dict(tracked_methods=[]), "tracked_methods", "at least one"),
    ("methods-str", dict(tracked_methods="add"), "tracked_methods", "list"),
    ("method-int", dict(tracked_methods=[1]), "tracked_methods[0]", "string"),
    ("method-dots", dict(tracked_methods=["chat..create"]), "tracked_methods[0]", "neither"),
    ("rest-no-slash", dict(tracked_methods=["GET v2/x"]), "tracked_methods[0]", "neither"),
    ("bad-template", dict(tracked_methods=["GET /x/{id"]), "tracked_methods[0]", "template"),
    (
        "partial-template",
        dict(tracked_methods=["GET /x/a{id}"]),
        "tracked_methods[0]",
        "whole segment",
    ),
    ("request-fields-str", dict(request_fields="a"), "request_fields", "list"),
    ("request-field-dot", dict(request_fields=["a.b"]), "request_fields[0]", "argument name"),
    ("response-fields-dict", dict(response_fields={"key": "v"}), "response_fields", "list"),
    ("response-field-int", dict(response_fields=[3]), "response_fields[0]", "path string"),
    ("bare-empty", dict(response_fields=[""]), "response_fields[0]", "empty"),
    ("no-key", dict(response_fields=[{"path": "x"}]), "response_fields[0].key", "name"),
    (
        "path-int",
        dict(response_fields=[{"key": "v", "path": 3}]),
        "response_fields[0].path",
        "string",
    ),
    (
        "path-dots",
        dict(response_fields=[{"key": "v", "path": "a..b"}]),
        "response_fields[0].path",
        "malformed",
    ),
    (
        "path-brackets",
        dict(response_fields=[{"key": "v", "path": "choices[0]"}]),
        "response_fields[0].path",
        "choices.0",
    ),
    (
        "field-extra-key",
        dict(response_fields=[{"key": "v", "path": "a", "x": 1}]),
        "response_fields[0]",
        "unknown keys",
    ),
    (
        "duplicate-key",
        dict(response_fields=["a.value", "b.value"]),
        "response_fields[1]",
        "duplicate",
    ),
    (
        "dunder",
        dict(response_fields=[{"key": "v", "path": "__class__.x"}]),
        "response_fields[0].path",
        "dunder",
    ),
    ("mapping-list", dict(payload_mapping=["usage"]), "payload_mapping", "mapping"),
    (
        "sends-nothing",
        dict(payload_mapping=..., static_payload_fields=...),
        "payload_mapping",
        "nothing",
    ),
    ("source-int", dict(payload_mapping={"usage": 3}), "payload_mapping.usage", "string"),
    (
        "unknown-source",
        dict(payload_mapping={"usage": "response"}),
        "payload_mapping.usage",
        "unknown source",
    ),
    (
        "scalar-with-path",
        dict(payload_mapping={"t": "timestamp.x"}),
        "payload_mapping.t",
        "takes no path",
    ),
    ("empty-path", dict(payload_mapping={"u": "usage_data."}), "payload_mapping.u", "malformed"),
    (
        "undeclared-response",
        dict(payload_mapping={"u": "response_data.nope"}),
        "payload_mapping.u",
        "response_fields",
    ),
    (
        "undeclared-request",
        dict(payload_mapping={"u": "request_data.c"}),
        "payload_mapping.u",
        "request_fields",
    ),
    ("static-list", dict(static_payload_fields=[1]), "static_payload_fields", "mapping"),
    (
        "static-object",
        dict(static_payload_fields={"x": object()}),
        "static_payload_fields.x",
        "serialisable",
    ),
    (
        "static-nan",
        dict(static_payload_fields={"x": float("nan")}),
        "static_payload_fields.x",
        "finite",
    ),
    ("list-path-int", dict(list_path=3), "list_path", "string"),
    ("list-path-bad", dict(list_path="a.[0]"), "list_path", "malformed"),
    ("streaming-list", dict(streaming=["usage"]), "streaming", "mapping"),
    ("final-str", dict(streaming={"final_fields": "usage"}), "streaming.final_fields", "list"),
    ("final-empty", dict(streaming={"final_fields": [""]}), "streaming.final_fields[0]", "empty"),
    ("only-success-str", dict(only_success="yes"), "only_success", "true or false"),
]


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        pytest.param(changes, field, fragment, id=name)
        for name, changes, field, fragment in BAD_CONFIGS
    ],
)
def test_malformed_config_names_config_and_field(
    changes: dict[str, Any], field: str, fragment: str
) -> None:
    """Each malformed field raises HandlingConfigError naming the config and that field."""
    with pytest.raises(HandlingConfigError) as info:
        parse(with_changes(**changes), "my-config")
    assert info.value.config_id == "my-config"
    assert info.value.field == field
    assert fragment in str(info.value)
    assert "my-config" in str(info.value)


def test_non_mapping_config_is_refused() -> None:
    """A handling config that is not a mapping is refused as a whole."""
    with pytest.raises(HandlingConfigError) as info:
        parse(["add"], "cfg-x")
    assert info.value.field == "handling_config"
    assert info.value.config_id == "cfg-x"


def test_every_problem_is_reported_at_once() -> None:
    """One error lists every problem; its field is the first."""
    with pytest.raises(HandlingConfigError) as info:
        parse(with_changes(tracked_methods=[], only_success=1, list_path=2))
    text = str(info.value)
    assert info.value.field == "tracked_methods"
    assert "2 more" in text
    assert "only_success" in text
    assert "list_path" in text


def test_handling_config_error_is_a_config_and_value_error() -> None:
    """Callers may catch it as ConfigError or ValueError."""
    with pytest.raises(ConfigError):
        parse({})
    with pytest.raises(ValueError, match="tracked_methods"):
        parse({})


def test_parse_path() -> None:
    """Paths compile to (segment, index) steps; "" is the whole object."""
    assert parse_path("") == ()
    assert parse_path("choices.0.message") == (("choices", None), ("0", 0), ("message", None))
    assert parse_path("items.-1") == (("items", None), ("-1", -1))
    assert parse_path("_private") == (("_private", None),)
    with pytest.raises(HandlingConfigError, match="malformed"):
        parse_path("a. b", config_id="c", field="f")
    with pytest.raises(HandlingConfigError, match="dunder"):
        parse_path("__dict__")


def test_matcher_is_exact_for_dotted_methods() -> None:
    """A dotted key matches only itself: no suffix, prefix or case-folded matches."""
    matcher = MethodMatcher(["create", "chat.completions.create"])
    assert matcher.match("create") == "create"
    assert matcher.match("chat.completions.create") == "chat.completions.create"
    assert matcher.match("completions.create") is None
    assert matcher.match("chat.completions") is None
    assert matcher.match("Create") is None
    only_create = MethodMatcher(["create"])
    assert "chat.completions.create" not in only_create
    assert "create" in only_create
    assert 3 not in only_create


def test_matcher_rest_keys_and_templates() -> None:
    """REST keys: verb case-insensitive, query ignored, {name} is exactly one segment."""
    matcher = MethodMatcher(["GET /v2/sessions/{id}", "POST /v1/items", "get /v2/streaming.list"])
    assert matcher.match("GET /v2/sessions/abc") == "GET /v2/sessions/{id}"
    assert matcher.match("get /v2/sessions/abc?x=1") == "GET /v2/sessions/{id}"
    assert matcher.match("GET /v2/sessions/abc/x") is None
    assert matcher.match("GET /v2/sessions/") is None
    assert matcher.match("GET /v2/sessions") is None
    assert matcher.match("DELETE /v2/sessions/abc") is None
    assert matcher.match("post /v1/items") == "POST /v1/items"
    assert matcher.match("POST /v1/items/1") is None
    assert matcher.match("GET /v2/streaming.list") == "get /v2/streaming.list"
    assert matcher.match("GET /v2/streaming.lists") is None


def test_config_tracks_uses_its_matcher() -> None:
    """HandlingConfig.tracks matches exactly, with templates."""
    cfg = parse(with_changes(tracked_methods=["add", "GET /v2/sessions/{id}"]))
    assert cfg.tracks("add")
    assert not cfg.tracks("math.add")
    assert cfg.tracks("GET /v2/sessions/s-1")
    assert not cfg.tracks("GET /v2/sessions/s-1/events")


def test_config_is_frozen() -> None:
    """A parsed config cannot be changed."""
    cfg = parse(SEED_000)
    with pytest.raises(AttributeError):
        cfg.config_id = "other"  # type: ignore[misc]
