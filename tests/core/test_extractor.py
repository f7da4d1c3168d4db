"""UniversalExtractor: payloads from calls and streams as handling configs say (pure, no loop)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pydantic
import pytest
import requests
from anthropic.lib.streaming import ParsedMessageStopEvent, TextEvent
from anthropic.types import (
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aicm._core.exceptions import HandlingConfigError
from aicm._core.extractor import MISSING, UniversalExtractor, accumulate_stream, resolve_path
from aicm._core.handling import (
    HandlingConfig,
    is_credential_name,
    is_private_name,
    parse_path,
)
from aicm._core.models import ServiceConfig
from tests.tracking_support import SEED_000_HANDLING, SEED_004_HANDLING

TS = "2024-01-01T00:00:00Z"

# The seeds' handling configs, shared with the delivery tests.
SEED_000 = SEED_000_HANDLING
SEED_004 = SEED_004_HANDLING

HEYGEN_BODY = {
    "data": None,
    "sessions": [
        {"session_id": "session-1", "duration": 12},
        {"session_id": "session-2", "duration": 20},
    ],
}

OPENAI_CHAT: dict[str, Any] = {
    "tracked_methods": ["chat.completions.create"],
    "request_fields": ["model", "stream"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "request_data.model",
        "timestamp": "timestamp",
        "response_id": "response_id",
        "usage": "usage_data",
    },
    "streaming": {"final_fields": ["usage"]},
}

ANTHROPIC_MESSAGES: dict[str, Any] = {
    "tracked_methods": ["messages.create", "messages.stream"],
    "request_fields": ["model"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "request_data.model",
        "response_id": "response_id",
        "input_tokens": "usage_data.input_tokens",
        "output_tokens": "usage_data.output_tokens",
        "stop_reason": "response_data.stop_reason",
    },
    "response_fields": ["stop_reason"],
    "streaming": {"final_fields": ["delta.stop_reason"]},
}


def cfg(
    handling: dict[str, Any] | None, config_id: str = "cfg", api_id: str = "api"
) -> ServiceConfig:
    return ServiceConfig(config_id=config_id, api_id=api_id, handling_config=handling)


def one_config(handling: dict[str, Any], config_id: str = "cfg") -> UniversalExtractor:
    return UniversalExtractor([cfg(handling, config_id)])


def config_with(**mapping: Any) -> dict[str, Any]:
    """A config tracking ``call`` whose payload_mapping is ``mapping``."""
    base: dict[str, Any] = {
        "tracked_methods": ["call"],
        "request_fields": ["a", "b", "items", "rest", "data"],
        "response_fields": [],
        "payload_mapping": {},
    }
    for key, value in mapping.items():
        if key in ("response_fields", "request_fields", "list_path", "static_payload_fields"):
            base[key] = value
        else:
            base["payload_mapping"][key] = value
    return base


class Calculator:
    def add(self, a: int, b: int) -> int:
        return a + b


def add(a: int, b: int) -> int:
    return a + b


# -- the seeds ------------------------------------------------------------------------------


def test_seed_000_payload_is_exact() -> None:
    """Seed 000: add(2, 3) -> 5 gives exactly config, timestamp, usage and static."""
    extractor = one_config(SEED_000, "calc-config")
    payloads = extractor.extract("add", args=(2, 3), response=5, func=add, timestamp=TS)
    assert payloads == [{"config": "calc-config", "timestamp": TS, "usage": 5, "static": 1}]


def test_seed_000_generates_a_utc_timestamp() -> None:
    """Without a given timestamp the payload gets the current time as ISO-8601 UTC."""
    before = dt.datetime.now(dt.timezone.utc)
    [payload] = one_config(SEED_000).extract("add", args=(2, 3), response=5, func=add)
    stamp = dt.datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
    assert payload["timestamp"].endswith("Z")
    assert before - dt.timedelta(seconds=1) <= stamp <= dt.datetime.now(dt.timezone.utc)
    assert set(payload) == {"config", "timestamp", "usage", "static"}


def test_seed_004_gives_one_payload_per_session() -> None:
    """Seed 004: the sessions list yields the two payloads the seed shows."""
    extractor = one_config(SEED_004, "api.heygen.com")
    payloads = extractor.extract(
        "GET /v2/streaming.list",
        kwargs={"params": {"page": 1}},
        response=HEYGEN_BODY,
        service_id="api.heygen.com/v2/streaming.list",
        timestamp=TS,
    )
    assert payloads == [
        {
            "config_id": "api.heygen.com",
            "service_id": "api.heygen.com/v2/streaming.list",
            "timestamp": TS,
            "response_id": "session-1",
            "usage": {"duration": 12},
        },
        {
            "config_id": "api.heygen.com",
            "service_id": "api.heygen.com/v2/streaming.list",
            "timestamp": TS,
            "response_id": "session-2",
            "usage": {"duration": 20},
        },
    ]


# -- construction and routing ---------------------------------------------------------------


def test_configs_without_handling_config_are_skipped() -> None:
    """A config with no handling_config tracks nothing and is not an error."""
    extractor = UniversalExtractor([cfg(None, "manual"), cfg(SEED_000, "calc")])
    assert [c.config_id for c in extractor.configs] == ["calc"]


def test_malformed_config_raises_at_construction() -> None:
    """A malformed handling config raises HandlingConfigError naming it, when built."""
    bad = dict(SEED_000, payload_mapping={"usage": "response_data.nope"})
    with pytest.raises(HandlingConfigError) as info:
        UniversalExtractor([cfg(SEED_000, "good"), cfg(bad, "broken")])
    assert info.value.config_id == "broken"
    assert info.value.field == "payload_mapping.usage"


def test_parsed_handling_configs_are_accepted() -> None:
    """The extractor also takes already parsed HandlingConfig objects."""
    parsed = HandlingConfig.from_mapping(SEED_000, config_id="p")
    assert UniversalExtractor([parsed]).extract("add", args=(1, 1), response=2, func=add)


def test_tracks_is_exact_and_cached() -> None:
    """tracks() matches exactly (no suffixes) and answers repeat keys from its cache."""
    extractor = UniversalExtractor([cfg(SEED_000), cfg(OPENAI_CHAT, "oa"), cfg(SEED_004, "hg")])
    assert extractor.tracks("add")
    assert extractor.tracks("chat.completions.create")
    assert not extractor.tracks("create")
    assert not extractor.tracks("completions.create")
    assert not extractor.tracks("math.add")
    assert extractor.tracks("get /v2/streaming.list")
    assert extractor.tracks("chat.completions.create")
    assert [c.config_id for c in extractor.configs_for("add")] == ["cfg"]


def test_rest_templates_route_to_their_config() -> None:
    """A templated REST key tracks concrete paths segment by segment."""
    handling = dict(
        SEED_004, tracked_methods=["GET /v2/sessions/{id}"], list_path=None, response_fields=[]
    )
    handling["payload_mapping"] = {"service_id": "service_id"}
    extractor = one_config(handling)
    assert extractor.tracks("GET /v2/sessions/abc")
    assert not extractor.tracks("GET /v2/sessions/abc/events")
    assert extractor.extract("GET /v2/sessions/abc", response={}, service_id="s") == [
        {"service_id": "s"}
    ]


def test_untracked_method_gives_nothing() -> None:
    """extract() of a method no config tracks returns an empty list."""
    assert one_config(SEED_000).extract("sub", args=(2, 3), response=-1) == []


def test_every_config_tracking_a_method_gives_a_payload() -> None:
    """Two configs tracking the same method give one payload each, in config order."""
    other = dict(SEED_000, static_payload_fields={"static": 2})
    extractor = UniversalExtractor([cfg(SEED_000, "one"), cfg(other, "two")])
    payloads = extractor.extract("add", args=(1, 2), response=3, func=add, timestamp=TS)
    assert [(p["config"], p["static"]) for p in payloads] == [("one", 1), ("two", 2)]


# -- request fields -------------------------------------------------------------------------


def test_request_fields_come_from_kwargs() -> None:
    """Keyword arguments named in request_fields are request_data."""
    extractor = one_config(config_with(req="request_data"))
    assert extractor.extract("call", kwargs={"a": 1, "b": 2, "c": 3}, response=None) == [
        {"req": {"a": 1, "b": 2}}
    ]


def test_positional_arguments_are_bound_by_signature() -> None:
    """Positional arguments are named through inspect.signature of the called function."""
    extractor = one_config(config_with(a="request_data.a", b="request_data.b"))
    assert extractor.extract("call", args=(2, 3), response=5, func=add) == [{"a": 2, "b": 3}]


def test_bound_methods_skip_self() -> None:
    """A bound method's own instance is not taken for its first argument."""
    extractor = one_config(config_with(req="request_data"))
    method = Calculator().add
    assert extractor.extract("call", args=(4,), kwargs={"b": 5}, response=9, func=method) == [
        {"req": {"a": 4, "b": 5}}
    ]


def test_var_positional_arguments_are_a_list() -> None:
    """A *args parameter named in request_fields gets the remaining positional arguments."""

    def call(a: int, *rest: int) -> None:
        return None

    extractor = one_config(config_with(a="request_data.a", rest="request_data.rest"))
    assert extractor.extract("call", args=(1, 2, 3), response=None, func=call) == [
        {"a": 1, "rest": [2, 3]}
    ]


def test_keyword_beats_positional_and_missing_arguments_are_left_out() -> None:
    """kwargs win; without a function, positional arguments cannot be named."""
    extractor = one_config(config_with(a="request_data.a", b="request_data.b"))
    assert extractor.extract("call", args=(1,), kwargs={"a": 7}, response=None, func=add) == [
        {"a": 7}
    ]
    assert extractor.extract("call", args=(1, 2), response=None) == [{}]


def test_uninspectable_callables_do_not_break_extraction() -> None:
    """A builtin without a signature just names no positional arguments."""
    extractor = one_config(config_with(a="request_data.a", b="request_data.b"))
    assert extractor.extract("call", args=(1, 2), kwargs={"b": 2}, response=None, func=max) == [
        {"b": 2}
    ]


def test_request_paths_walk_into_arguments() -> None:
    """request_data.X.path walks into an argument's value."""
    extractor = one_config(config_with(role="request_data.items.0.role"))
    messages = [{"role": "user", "content": "hi"}]
    assert extractor.extract("call", kwargs={"items": messages}, response=None) == [
        {"role": "user"}
    ]


# -- response fields and paths --------------------------------------------------------------


@dataclasses.dataclass
class Usage:
    total: int
    parts: list[int]


class Reply:
    def __init__(self) -> None:
        self.id = "reply-1"
        self.usage = Usage(total=7, parts=[3, 4])
        self.choices = [{"message": {"content": "first"}}, {"message": {"content": "last"}}]
        self._hidden = "sk-do-not-send"

    @property
    def broken(self) -> int:
        raise RuntimeError("boom")


def test_paths_walk_dicts_attributes_and_indexes() -> None:
    """Paths step through attributes, dict keys and list indexes (negative too)."""
    extractor = one_config(
        config_with(
            response_fields=[
                "usage.total",
                "choices.0.message.content",
                {"key": "last", "path": "choices.-1.message.content"},
                {"key": "part", "path": "usage.parts.1"},
            ],
            total="response_data.total",
            content="response_data.content",
            last="response_data.last",
            part="response_data.part",
        )
    )
    assert extractor.extract("call", response=Reply()) == [
        {"total": 7, "content": "first", "last": "last", "part": 4}
    ]


def test_empty_path_is_the_whole_response() -> None:
    """Path "" is the response itself, made JSON-plain."""
    extractor = one_config(
        config_with(response_fields=[{"key": "all", "path": ""}], r="response_data.all")
    )
    assert extractor.extract("call", response={"x": (1, 2)}) == [{"r": {"x": [1, 2]}}]


def test_unresolved_paths_are_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A path that does not resolve is absent (not null) and logged at debug."""
    extractor = one_config(
        config_with(
            response_fields=["usage.total", "nope.deeper", "choices.5", "broken"],
            total="response_data.total",
            nope="response_data.deeper",
            gone="response_data.5",
            broken="response_data.broken",
        )
    )
    with caplog.at_level(logging.DEBUG, logger="aicm.extractor"):
        payloads = extractor.extract("call", response=Reply())
    assert payloads == [{"total": 7}]
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "aicm.extractor")
    assert "nope <- response_data.deeper" in logged
    assert "broken <- response_data.broken" in logged


def test_none_values_are_left_out() -> None:
    """A value that is None is treated like one that is missing."""
    extractor = one_config(
        config_with(response_fields=["usage"], usage="response_data.usage", a="request_data.a")
    )
    assert extractor.extract("call", kwargs={"a": None}, response={"usage": None}) == [{}]


def test_private_attributes_are_never_read() -> None:
    """Paths read public attributes only; a leading underscore is a dict key, not an attribute."""
    extractor = one_config(
        config_with(
            response_fields=["_hidden", {"key": "k", "path": "inner._key"}],
            hidden="response_data._hidden",
            key="response_data.k",
        )
    )
    assert extractor.extract("call", response=Reply()) == [{}]
    assert extractor.extract("call", response={"_hidden": 1, "inner": {"_key": 2}}) == [
        {"hidden": 1, "key": 2}
    ]


def test_resolve_path_reports_missing() -> None:
    """resolve_path returns MISSING where a step fails, the value otherwise."""
    steps = parse_path("a.0.b")
    assert resolve_path({"a": [{"b": 1}]}, steps) == 1
    assert resolve_path({"a": []}, steps) is MISSING
    assert resolve_path({"a": None}, steps) is MISSING
    assert resolve_path("text", parse_path("0")) is MISSING
    assert resolve_path(5, ()) == 5
    assert not MISSING
    assert repr(MISSING) == "MISSING"


# -- the call-level sources -----------------------------------------------------------------


def test_call_level_sources() -> None:
    """service_id, api_id, base_url, client_customer_key, context and response_id map through."""
    extractor = one_config(
        config_with(
            service="service_id",
            api="api_id",
            base="base_url",
            customer="client_customer_key",
            ctx="context",
            rid="response_id",
            config="config_identifier",
        ),
        "the-config",
    )
    [payload] = extractor.extract(
        "call",
        response={"id": "resp-9"},
        service_id="svc",
        api_id="openai",
        base_url="https://api.example.com/v1",
        client_customer_key="cust-1",
        context={"team": "a", "n": 1},
    )
    assert payload == {
        "service": "svc",
        "api": "openai",
        "base": "https://api.example.com/v1",
        "customer": "cust-1",
        "ctx": {"team": "a", "n": 1},
        "rid": "resp-9",
        "config": "the-config",
    }


def test_unset_call_level_sources_are_left_out() -> None:
    """A source the caller did not give is absent from the payload."""
    extractor = one_config(config_with(service="service_id", rid="response_id", ctx="context"))
    assert extractor.extract("call", response=5) == [{}]


def test_usage_data_is_the_response_usage_made_plain() -> None:
    """usage_data is the response's usage (attribute or key) as plain data; .X walks into it."""
    extractor = one_config(config_with(usage="usage_data", total="usage_data.total"))
    assert extractor.extract("call", response=Reply()) == [
        {"usage": {"total": 7, "parts": [3, 4]}, "total": 7}
    ]
    assert extractor.extract("call", response={"usage": {"total": 1}}) == [
        {"usage": {"total": 1}, "total": 1}
    ]


def test_usage_data_of_an_openai_completion() -> None:
    """An openai ChatCompletion's usage becomes its plain model_dump."""
    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
    )
    extractor = one_config(OPENAI_CHAT, "oa")
    [payload] = extractor.extract(
        "chat.completions.create",
        kwargs={"model": "gpt-4o-mini"},
        response=completion,
        timestamp=TS,
    )
    assert payload["usage"]["total_tokens"] == 7
    assert payload["response_id"] == "chatcmpl-1"
    assert payload["service_id"] == "gpt-4o-mini"


def test_unresolved_nested_fields_are_left_out_not_sent_as_null() -> None:
    """A field the answer leaves unset (None) is absent from the payload at any depth; a
    null inside a list keeps its place."""
    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-2",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 4,
                "total_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 1, "audio_tokens": None},
            },
        }
    )
    assert completion.usage is not None
    assert completion.usage.completion_tokens_details is None
    [payload] = one_config(OPENAI_CHAT, "oa").extract(
        "chat.completions.create", kwargs={"model": "gpt-4o-mini"}, response=completion
    )
    assert payload["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
    # A plain answer (the fast path) and one to_plain has to convert (a dataclass).
    extractor = one_config(config_with(usage="usage_data"))
    body = {"usage": {"a": 1, "b": None, "c": {"d": None, "e": [None, 2]}}}
    expected = {"usage": {"a": 1, "c": {"e": [None, 2]}}}
    assert extractor.extract("call", response=body) == [expected]

    @dataclasses.dataclass
    class Usage:
        a: int
        b: int | None
        c: dict[str, Any]

    slow = {"usage": Usage(a=1, b=None, c={"d": None, "e": [None, 2]})}
    assert extractor.extract("call", response=slow) == [expected]


def test_usage_in_list_elements_falls_back_to_the_response() -> None:
    """With list_path, usage_data is the element's usage, else the whole response's."""
    extractor = one_config(config_with(list_path="items", usage="usage_data"))
    body = {"usage": {"calls": 1}, "items": [{"usage": {"calls": 5}}, {"x": 1}]}
    assert extractor.extract("call", response=body) == [
        {"usage": {"calls": 5}},
        {"usage": {"calls": 1}},
    ]


def test_list_path_that_is_not_a_list_gives_nothing() -> None:
    """A list_path that is missing or not a list yields no payloads."""
    extractor = one_config(config_with(list_path="sessions", usage="usage_data"))
    assert extractor.extract("call", response={"sessions": {"a": 1}}) == []
    assert extractor.extract("call", response={}) == []
    assert extractor.extract("call", response={"sessions": []}) == []


# -- making values plain --------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


class Model(pydantic.BaseModel):
    name: str
    when: dt.datetime


def test_values_are_made_json_plain() -> None:
    """Models, dataclasses, enums, datetimes, UUIDs and URLs become plain JSON data."""
    uid = uuid.UUID(int=1)
    extractor = one_config(config_with(data="request_data.data"))
    data = {
        "model": Model(name="m", when=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)),
        "usage": Usage(total=1, parts=[]),
        "colour": Colour.RED,
        "uid": uid,
        "url": httpx.URL("https://api.example.com/v1?x=1"),
        "urls": [httpx.URL("https://a.example")],
    }
    [payload] = extractor.extract("call", kwargs={"data": data}, response=None)
    assert payload["data"] == {
        "model": {"name": "m", "when": "2024-01-01T00:00:00Z"},
        "usage": {"total": 1, "parts": []},
        "colour": "red",
        "uid": str(uid),
        "url": "https://api.example.com/v1?x=1",
        "urls": ["https://a.example"],
    }


def test_a_url_object_alone_becomes_text() -> None:
    """A URL object as the whole value is its string."""
    extractor = one_config(config_with(a="request_data.a"))
    assert extractor.extract(
        "call", kwargs={"a": httpx.URL("https://x.example/p")}, response=0
    ) == [{"a": "https://x.example/p"}]


def test_unserialisable_values_are_left_out_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A value JSON cannot carry (an object, NaN) is left out and logged as a warning."""
    extractor = one_config(config_with(a="request_data.a", b="request_data.b"))
    with caplog.at_level(logging.WARNING, logger="aicm.extractor"):
        payloads = extractor.extract(
            "call", kwargs={"a": object(), "b": float("nan")}, response=None
        )
    assert payloads == [{}]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2


def test_sdk_not_given_sentinels_are_absent() -> None:
    """The SDKs' NotGiven/Omit sentinels count as absent arguments."""
    from openai import NOT_GIVEN

    extractor = one_config(config_with(a="request_data.a", b="request_data.b"))
    assert extractor.extract("call", kwargs={"a": NOT_GIVEN, "b": 1}, response=None) == [{"b": 1}]


def test_static_fields_are_applied_last_and_copied() -> None:
    """static_payload_fields override mapped keys; each payload has its own copy."""
    extractor = one_config(
        config_with(
            list_path="items",
            usage="usage_data",
            static_payload_fields={"usage": {"fixed": True}, "tag": "t"},
        )
    )
    first, second = extractor.extract("call", response={"items": [{"usage": 1}, {"usage": 2}]})
    assert first == {"usage": {"fixed": True}, "tag": "t"}
    first["usage"]["fixed"] = False
    assert second["usage"] == {"fixed": True}
    assert extractor.extract("call", response={"items": [{}]})[0]["usage"] == {"fixed": True}


def test_payloads_are_fresh_plain_copies() -> None:
    """Mutating the caller's data after extraction does not change a payload."""
    extractor = one_config(config_with(a="request_data.a"))
    data = {"k": [1]}
    [payload] = extractor.extract("call", kwargs={"a": data}, response=None)
    data["k"].append(2)
    assert payload == {"a": {"k": [1]}}


# -- streams --------------------------------------------------------------------------------


def openai_chunks(*, include_usage: bool = True) -> list[ChatCompletionChunk]:
    """What openai yields for a stream with stream_options.include_usage."""
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"}

    def chunk(choices: list[Any], usage: Any = None) -> ChatCompletionChunk:
        data = dict(base, choices=choices)
        if include_usage:
            data["usage"] = usage
        return ChatCompletionChunk.model_validate(data)

    chunks = [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
        chunk([{"index": 0, "delta": {"content": "Hi"}}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    ]
    if include_usage:
        usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        chunks.append(chunk([], usage))
    return chunks


def anthropic_events() -> list[Any]:
    """What anthropic yields for messages.create(stream=True)."""
    message = {
        "id": "msg_s",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 3},
    }
    return [
        RawMessageStartEvent.model_validate({"type": "message_start", "message": message}),
        RawContentBlockStartEvent.model_validate(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        RawContentBlockDeltaEvent.model_validate(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            }
        ),
        RawContentBlockStopEvent.model_validate({"type": "content_block_stop", "index": 0}),
        RawMessageDeltaEvent.model_validate(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 15},
            }
        ),
        RawMessageStopEvent.model_validate({"type": "message_stop"}),
    ]


def stream_end(
    handling: dict[str, Any], method: str, chunks: Sequence[Any]
) -> list[dict[str, Any]]:
    return one_config(handling, "cfg").extract_stream_end(
        method, chunks, kwargs={"model": "m", "stream": True}, timestamp=TS
    )


def test_openai_stream_takes_usage_from_the_final_chunk() -> None:
    """openai's include_usage chunk (no choices) supplies the stream's usage."""
    [payload] = stream_end(OPENAI_CHAT, "chat.completions.create", openai_chunks())
    assert payload["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    assert payload["response_id"] == "chatcmpl-s"


def test_openai_stream_without_usage_leaves_usage_out() -> None:
    """A stream that never carried usage gives a payload without it."""
    [payload] = stream_end(
        OPENAI_CHAT, "chat.completions.create", openai_chunks(include_usage=False)
    )
    assert "usage" not in payload


def test_anthropic_stream_merges_start_and_delta_usage() -> None:
    """anthropic: input tokens from message_start, output tokens from message_delta."""
    [payload] = stream_end(ANTHROPIC_MESSAGES, "messages.create", anthropic_events())
    assert payload == {
        "config_id": "cfg",
        "service_id": "m",
        "response_id": "msg_s",
        "input_tokens": 25,
        "output_tokens": 15,
        "stop_reason": "end_turn",
    }


def test_anthropic_helper_events_and_snapshot_agree() -> None:
    """MessageStream's extra events and a final Message snapshot give the same usage."""
    events = anthropic_events()
    snapshot = Message.model_validate(
        {
            "id": "msg_s",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [{"type": "text", "text": "Hi"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 15},
        }
    )
    helper = [
        *events[:3],
        TextEvent(type="text", text="Hi", snapshot="Hi"),
        *events[3:5],
        ParsedMessageStopEvent.model_construct(type="message_stop", message=snapshot),
        snapshot,
    ]
    for chunks in (helper, [snapshot]):
        [payload] = stream_end(ANTHROPIC_MESSAGES, "messages.stream", chunks)
        assert (payload["input_tokens"], payload["output_tokens"]) == (25, 15)
        assert payload["stop_reason"] == "end_turn"


def test_accumulate_stream_builds_the_response() -> None:
    """The stream's response has the first id/model, merged usage and the final fields."""
    [field] = HandlingConfig.from_mapping(ANTHROPIC_MESSAGES, config_id="c").streaming.final_fields  # type: ignore[union-attr]
    response = accumulate_stream(anthropic_events(), [field])
    assert response == {
        "id": "msg_s",
        "model": "claude-x",
        "usage": {
            "input_tokens": 25,
            "output_tokens": 15,
            "cache_read_input_tokens": 3,
        },
        "stop_reason": "end_turn",
    }


def test_plain_dict_chunks_are_understood() -> None:
    """Chunks that are plain dicts (decoded SSE JSON) work like SDK objects."""
    chunks = [
        {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 2}}},
        {"type": "message_delta", "usage": {"output_tokens": 9}},
    ]
    response = accumulate_stream(chunks)
    assert response == {"id": "m1", "usage": {"input_tokens": 2, "output_tokens": 9}}


def test_empty_stream_gives_a_payload_from_the_request() -> None:
    """A stream closed before its first chunk was billed for its input: one payload from the
    request alone (no usage, no response id); an untracked method still gives none."""
    assert stream_end(OPENAI_CHAT, "chat.completions.create", []) == [
        {"config_id": "cfg", "service_id": "m", "timestamp": TS}
    ]
    assert stream_end(OPENAI_CHAT, "embeddings.create", openai_chunks()) == []


# -- what a config may never read -----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "apiKey",
        "APIKey",
        "X-Api-Key",
        "x-goog-api-key",
        "apikey",
        "client_secret",
        "aws_secret_access_key",
        "password",
        "db_passwd",
        "Authorization",
        "Proxy-Authorization",
        "auth",
        "Cookie",
        "Set-Cookie",
        "token",
        "access_token",
        "refreshToken",
        "X-Amz-Security-Token",
        "private_key",
        "credentials",
        "headers",
        "extra_headers",
        "extra_query",
        "cookies",
        "cert",
        "auth_headers",
        "customHeaders",
    ],
)
def test_credential_and_transport_names_are_private(name: str) -> None:
    """Credential words anywhere, key pairs, ``token`` as the last word, transport options."""
    assert is_private_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "input_tokens",
        "output_tokens",
        "max_tokens",
        "total_tokens",
        "cache_read_input_tokens",
        "promptTokenCount",
        "candidatesTokenCount",
        "service_key",
        "client_customer_key",
        "session_id",
        "author",
        "model",
        "tokenizer",
        "keywords",
        "_key",
        "params",
        "auth_calls",
        "authenticated_users",
        "authors",
        "header_count",
    ],
)
def test_usage_and_data_names_are_not_private(name: str) -> None:
    """Usage counters (``*_tokens``, gemini's ``*TokenCount``) and data names stay readable."""
    assert not is_private_name(name)
    assert not is_credential_name(name)


def test_transport_options_without_credentials_are_kept_inside_values() -> None:
    """``verify`` or ``cert`` cannot be read as arguments or path steps, but a delivered
    mapping keeps such keys; ``headers``, ``auth`` and ``cookies`` hold credentials: dropped."""
    for name in ("verify", "cert", "http_client", "extra_query"):
        assert is_private_name(name)
        assert not is_credential_name(name)
    for name in ("headers", "auth", "cookies", "api_key", "Authorization"):
        assert is_credential_name(name)


def test_the_callers_own_context_is_sent_as_given() -> None:
    """The ``context`` source is the caller's own tags, not something the config read: its
    keys are never filtered."""
    extractor = one_config(config_with(ctx="context"))
    context = {"team": "a", "auth_method": "sso", "api_key_id": "key-17"}
    assert extractor.extract("call", response={}, context=context) == [{"ctx": context}]


class Holder:
    """An answer carrying HTTP objects under innocent names."""

    def __init__(self) -> None:
        self.meta = httpx.Headers({"Authorization": "Bearer sk-held", "x-trace": "t1"})
        self.legacy = requests.structures.CaseInsensitiveDict({"Cookie": "sid=sk-held"})
        self.nested = {"outer": [httpx.Headers({"x-api-key": "sk-held"})], "n": 1}
        self.tokens = {"input_tokens": 2, "token": "sk-held"}


def test_http_objects_are_never_delivered_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Header mappings (httpx, requests), even nested, are left out whatever the path is
    called; credential keys are dropped from delivered dicts; one WARNING per config and path."""
    extractor = one_config(
        config_with(
            response_fields=["meta", "legacy", "nested", "tokens"],
            meta="response_data.meta",
            legacy="response_data.legacy",
            nested="response_data.nested",
            tokens="response_data.tokens",
        ),
        config_id="http-objects",
    )
    with caplog.at_level(logging.WARNING, logger="aicm.extractor"):
        for _ in range(3):
            assert extractor.extract("call", response=Holder()) == [{"tokens": {"input_tokens": 2}}]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 4, warned
    assert all("'http-objects'" in w for w in warned)
    assert "sk-held" not in caplog.text


def test_a_refused_path_is_skipped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A path entering ``api_key`` is skipped when the config is compiled, once; the rest of
    the config still works; a refused list_path turns the config off."""
    handling = config_with(
        response_fields=["usage", {"key": "k", "path": "client.api_key"}],
        usage="response_data.usage",
        key="response_data.k",
        raw="usage_data.auth.bearer",
    )
    with caplog.at_level(logging.WARNING, logger="aicm.extractor"):
        first = one_config(handling, config_id="refused-path")
        one_config(handling, config_id="refused-path")
        listed = one_config(
            {**config_with(n="response_data.n", response_fields=["n"]), "list_path": "secrets"},
            config_id="refused-list",
        )
    response = {"usage": {"calls": 1, "auth": {"bearer": "sk-x"}}, "client": {"api_key": "sk-x"}}
    assert first.extract("call", response=response) == [{"usage": {"calls": 1}}]
    assert listed.extract("call", response={"secrets": [{"n": 1}]}) == []
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "'client.api_key'" in m]) == 1
    assert len([m for m in messages if "'usage_data.auth.bearer'" in m]) == 1
    assert len([m for m in messages if "'refused-list'" in m and "'secrets'" in m]) == 1
