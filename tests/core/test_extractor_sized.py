"""The size bound the extractor counts while building a payload, and the record built on it.

The bound spares the record a second walk of the payload, so it must never be below the
payload's real JSON size, must be unknown (-1) wherever that walk's exact checks are
needed, and must leave the answer the call returned untouched.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import warnings
from typing import Annotated, Any

import pydantic
import pytest
from openai.types.chat import ChatCompletion

from aicm._core.exceptions import NotSerializableError, RecordTooLargeError
from aicm._core.extractor import UniversalExtractor
from aicm._core.handling import is_credential_name
from aicm._core.jsonplain import plain_size_bound
from aicm._core.models import ServiceConfig, UsageRecord
from aicm._core.values import plain_value_sized

OPENAI_CHAT: dict[str, Any] = {
    "tracked_methods": ["chat.completions.create"],
    "request_fields": ["model"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "request_data.model",
        "timestamp": "timestamp",
        "response_id": "response_id",
        "usage": "usage_data",
    },
}

ANSWER: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": None},
    },
}


def extractor(handling: dict[str, Any] = OPENAI_CHAT) -> UniversalExtractor:
    return UniversalExtractor([ServiceConfig(config_id="c", api_id="a", handling_config=handling)])


def sized(response: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    [(payload, bound)] = extractor().extract_sized(
        "chat.completions.create",
        kwargs={"model": "gpt-4o-mini", **kwargs},
        response=response,
        timestamp="2024-01-01T00:00:00Z",
    )
    return payload, bound


def json_sizes(payload: dict[str, Any]) -> list[int]:
    """The payload's JSON size as every encoder a record may go through writes it."""
    return [
        len(json.dumps(payload).encode()),
        len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()),
    ]


def test_a_chat_completion_gives_the_same_payload_and_a_bound_above_its_size() -> None:
    answer = ChatCompletion.model_validate(ANSWER)
    payload, bound = sized(answer)
    assert (
        payload
        == extractor().extract(
            "chat.completions.create",
            kwargs={"model": "gpt-4o-mini"},
            response=answer,
            timestamp="2024-01-01T00:00:00Z",
        )[0]
    )
    assert payload["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},  # None left out
    }
    assert bound >= max(json_sizes(payload))
    assert bound <= plain_size_bound(payload)  # never looser than the walk it replaces


def test_a_dict_answer_is_copied_and_bounded() -> None:
    answer = json.loads(json.dumps(ANSWER))
    payload, bound = sized(answer)
    assert bound >= max(json_sizes(payload))
    payload["usage"]["prompt_tokens_details"]["cached_tokens"] = 99
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 3


class Usage(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    prompt_tokens: int
    details: dict[str, Any] | None = None


class Answer(pydantic.BaseModel):
    id: str
    usage: Usage


def test_credential_keys_inside_a_model_are_dropped_and_the_model_is_untouched() -> None:
    usage = Usage(prompt_tokens=5, details={"api_key": "sk-secret", "n": 1}, authorization="x")
    answer = Answer(id="r1", usage=usage)
    payload, bound = sized(answer)
    assert payload["usage"] == {"prompt_tokens": 5, "details": {"n": 1}}
    assert bound >= max(json_sizes(payload))
    assert usage.details == {"api_key": "sk-secret", "n": 1}
    assert usage.model_extra == {"authorization": "x"}
    again, _ = sized(answer)
    assert again["usage"] == payload["usage"]
    assert again["usage"] is not payload["usage"]


@pytest.mark.parametrize(
    "odd",
    [
        "caf\u00e9",  # non-ASCII: the exact walk checks its encoding
        2**70,  # wider than the fast check's ints
    ],
)
def test_values_that_need_the_exact_checks_leave_the_bound_unknown(odd: Any) -> None:
    payload, bound = sized(Answer(id="r1", usage=Usage(prompt_tokens=1, note=odd)))
    assert payload["usage"]["note"] == odd
    assert bound == -1


def test_a_non_ascii_request_value_leaves_the_bound_unknown() -> None:
    _, bound = sized(ChatCompletion.model_validate(ANSWER), model="gpt-\u00e9")
    assert bound == -1


def test_an_unknown_bound_still_gets_the_records_exact_checks() -> None:
    payload, bound = sized(Answer(id="r1", usage=Usage(prompt_tokens=1, note="a\ud800b")))
    assert bound == -1
    with pytest.raises(NotSerializableError):
        UsageRecord.build(payload, plain=True, bound=bound)


def test_a_record_over_the_limit_is_refused_with_a_known_bound() -> None:
    payload, bound = sized(Answer(id="r1", usage=Usage(prompt_tokens=1, note="x" * 3000)))
    assert bound >= 0
    with pytest.raises(RecordTooLargeError):
        UsageRecord.build(payload, plain=True, bound=bound, max_bytes=2048)
    record = UsageRecord.build(payload, plain=True, bound=bound, max_bytes=64 * 1024)
    assert record.payload["usage"]["note"] == "x" * 3000


class Colour(enum.Enum):
    RED = "red"


class Inner(pydantic.BaseModel):
    n: int | None = None
    when: dt.datetime | None = None


class Aliased(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(serialize_by_alias=True)

    total: int = pydantic.Field(serialization_alias="sum")


class Computed(pydantic.BaseModel):
    a: int

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return 2 * self.a


class Serialized(pydantic.BaseModel):
    a: int

    @pydantic.field_serializer("a")
    def _a(self, a: int) -> str:
        return f"#{a}"


class Rounded(pydantic.BaseModel):
    cost: Annotated[float, pydantic.PlainSerializer(lambda v: round(v, 2))]


class Shouted(pydantic.BaseModel):
    name: Annotated[str, pydantic.WrapSerializer(lambda v, handler: handler(v).upper())]


class HoldsRounded(pydantic.BaseModel):
    inner: Rounded


class ExcludedIfOne(pydantic.BaseModel):
    x: int = pydantic.Field(default=0, exclude_if=lambda v: v == 1)


with warnings.catch_warnings():  # json_encoders is deprecated, and still honoured by the dump
    warnings.simplefilter("ignore")

    class Encoded(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(json_encoders={float: lambda v: round(v, 2)})

        x: float


class SubInner(Inner):
    more: str = "a subclass' own field, which the dump by the declared type leaves out"


class Scalars(pydantic.BaseModel):
    n: int
    s: str | None = None
    b: bool
    f: float = 1.0


class SameNames(pydantic.BaseModel):
    """The field names of `Scalars`, other types: a plan is the class's own."""

    n: str
    s: int
    b: float
    f: bool


class Outer(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    tokens: int
    ratio: float = 0.5
    label: str | None = None
    colour: Colour | None = None
    inner: Inner | None = None
    items: list[Inner] = []
    extra_map: dict[str, Any] = {}


MODELS = [
    Outer(tokens=1),
    Outer(tokens=1, label="x", inner=Inner(n=2), items=[Inner(n=3), Inner()]),
    Outer(tokens=1, colour=Colour.RED),  # an enum the dump turns into its value
    Outer(tokens=1, inner=Inner(when=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))),
    Outer(tokens=1, extra_map={"password": "p", "k": None, "v": 1}),
    Outer(tokens=1, note="an extra field"),
    Outer(tokens=1, inner=SubInner(n=1)),  # dumped by the field's declared type
    Outer(tokens=1, items=[SubInner(n=1)]),
    Outer(tokens=1, extra_map={"m": Inner(n=1)}),  # a model inside a container
    Outer.model_construct(tokens="not validated"),
    Outer.model_construct(tokens=True),  # a bool in an int field: the dump gives 1
    Outer.model_construct(tokens=1, ratio=1),  # an int in a float field: the dump gives 1.0
    Rounded(cost=1.23456),  # serializers in a field's metadata
    Shouted(name="abc"),
    HoldsRounded(inner=Rounded(cost=0.123456)),
    ExcludedIfOne(x=1),
    Encoded(x=1.23456),
    Aliased(total=3),
    Computed(a=2),
    Serialized(a=2),
    ChatCompletion.model_validate(ANSWER),
    Outer(tokens=1, label="non-ASCII \u00e9"),
    Scalars(n=1, s="s", b=True, f=0.25),
    Scalars.model_construct(n=1, s="s", b=1, f=0.25),  # an int in a bool field
    Scalars.model_construct(n=1, s=2, b=True, f=0.25),  # an int in a str field
    Scalars.model_construct(n=1, s="s", b=True),  # a field never set
    SameNames(n="text", s=1, b=0.5, f=True),
]


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_a_model_is_made_plain_as_its_json_dump_says(model: pydantic.BaseModel) -> None:
    """Read from the fields directly or dumped, a model gives what its JSON dump gives,
    without None fields and credential keys, and a bound above its size."""

    def expected(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: expected(v)
                for k, v in value.items()
                if v is not None and not is_credential_name(k)
            }
        if isinstance(value, list):
            return [expected(v) for v in value]
        return value

    dump = model.model_dump(mode="json", exclude_none=True)
    plain, bound = plain_value_sized(model, "payload.usage", "c")
    assert plain == expected(dump)
    assert json.dumps(plain) == json.dumps(expected(dump))  # the same order
    if bound >= 0:
        assert bound >= max(json_sizes(plain))
    again, _ = plain_value_sized(model, "payload.usage", "c")
    assert again == plain  # the type's plan, once made, gives the same


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_a_model_the_caller_gave_keeps_its_none_fields(model: pydantic.BaseModel) -> None:
    """A value the config did not read (the caller's own) gives the whole JSON dump,
    None fields included, in the same order."""
    dump = model.model_dump(mode="json")
    for _ in range(2):  # planned on the first use, then reused
        plain, bound = plain_value_sized(model, "payload.context", "c", read=False)
        assert json.dumps(plain) == json.dumps(dump)
        if bound >= 0:
            assert bound >= max(json_sizes(plain))


ODD_KEYS = ['a"b', "new\nline", "é", "{i}", "x) or __import__('os').system('false') or (y"]


@pytest.mark.parametrize("config_id", ["c", "çfg\"'\n", "{CID}"])
@pytest.mark.parametrize("static", [{}, {"flat": 1, "s": "é"}, {"nested": {"k": [1, "x"]}}])
def test_every_mapping_shape_gives_its_payload_in_order_with_a_bound(
    config_id: str, static: dict[str, Any]
) -> None:
    """Whatever a config names (odd keys, ids, static fields), the payload holds each
    source's value under its key in the mapping's order, and the bound is above its size."""
    mapping: dict[str, str] = {"usage": "usage_data", "response_id": "response_id"}
    mapping |= {key: "config_identifier" for key in ODD_KEYS}
    mapping |= {"when": "timestamp", "service_id": "request_data.model", "gone": "usage_data.nope"}
    handling = {
        "tracked_methods": ["chat.completions.create"],
        "request_fields": ["model"],
        "payload_mapping": mapping,
        "static_payload_fields": static,
    }
    ex = UniversalExtractor(
        [ServiceConfig(config_id=config_id, api_id="a", handling_config=handling)]
    )
    for _ in range(2):  # a fresh static copy each time
        [(payload, bound)] = ex.extract_sized(
            "chat.completions.create",
            kwargs={"model": "gpt-4o-mini"},
            response=ChatCompletion.model_validate(ANSWER),
            timestamp="2024-01-01T00:00:00Z",
        )
        expected: dict[str, Any] = {
            "usage": {
                "completion_tokens": 2,
                "prompt_tokens": 9,
                "total_tokens": 11,
                "completion_tokens_details": {"reasoning_tokens": 0},
                "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 3},
            },
            "response_id": "chatcmpl-1",
            **dict.fromkeys(ODD_KEYS, config_id),
            "when": "2024-01-01T00:00:00Z",
            "service_id": "gpt-4o-mini",
            **static,
        }
        assert json.dumps(payload) == json.dumps(expected)
        assert bound == -1 or bound >= max(json_sizes(payload))
        if static.get("nested"):
            assert payload["nested"] is not static["nested"]
