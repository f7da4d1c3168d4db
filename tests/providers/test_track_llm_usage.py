"""``track_llm_usage`` / ``track_llm_stream_usage`` on both tracker twins, with answers and
streams of the real SDKs (OpenAI and Anthropic over their fake servers; Gemini and Bedrock
answers built by their SDKs' own types), each giving one ``/track`` record."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import types as gtypes

from aicm import AsyncTracker, RecordError, SaltedHash, Tracker
from aicm.collector import LocalCollector
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.providers.support import one_track, track_records
from tests.tracking_support import MESSAGES

CLAUDE = {"model": "claude-test-model", "max_tokens": 64, "messages": MESSAGES}
GEMINI_ANSWER = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}],
    "modelVersion": "gemini-2.5-flash",
    "responseId": "gem-123",
    "usageMetadata": {
        "promptTokenCount": 9,
        "candidatesTokenCount": 4,
        "thoughtsTokenCount": 2,
        "totalTokenCount": 15,
    },
}
BEDROCK_ANSWER = {
    "ResponseMetadata": {"RequestId": "req-42", "HTTPStatusCode": 200},
    "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 11, "outputTokens": 3, "totalTokens": 14},
    "metrics": {"latencyMs": 12},
}


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


def test_openai_answer_sync(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0)
    chat = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with Tracker(**connection) as tracker:
        returned = tracker.track_llm_usage("openai_chat", chat, customer_key="acme")
    assert returned is chat
    record = one_track(collector)
    assert record["service_key"] == "openai::gpt-4o-mini"
    assert record["response_id"] == chat.id == chat.aicm_response_id  # type: ignore[attr-defined]
    assert record["payload"]["prompt_tokens"] == 12
    assert record["payload"]["completion_tokens"] == 5
    assert record["customer_key"] == "acme"


@pytest.mark.anyio
async def test_openai_answer_async_with_a_full_key(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="t", max_retries=0
    ) as client:
        answer = await client.responses.create(model="gpt-4o-mini", input="hi")
    async with AsyncTracker(**connection) as tracker:
        await tracker.track_llm_usage(
            "openai::gpt-4o",
            answer,
            response_id="mine",
            anonymize_fields=["total_tokens", "input_tokens_details.cached_tokens"],
        )
    record = one_track(collector)
    assert record["service_key"] == "openai::gpt-4o"  # a full key is recorded as given
    assert record["response_id"] == "mine"
    assert record["payload"]["input_tokens"] == 12
    # The tracker's one anonymisation: the default is its salted hash, as for track().
    assert record["payload"]["total_tokens"] == SaltedHash()(answer.usage.total_tokens)
    assert record["payload"]["total_tokens"] != answer.usage.total_tokens
    cached = record["payload"]["input_tokens_details"]["cached_tokens"]  # a dotted path
    assert cached == SaltedHash()(answer.usage.input_tokens_details.cached_tokens)


def test_anthropic_answer_and_stream_sync(
    collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    client = anthropic.Anthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0)
    message = client.messages.create(**CLAUDE)
    with Tracker(**connection) as tracker:
        tracker.track_llm_usage("anthropic", message)
        events = list(
            tracker.track_llm_stream_usage(
                "anthropic", client.messages.create(**CLAUDE, stream=True)
            )
        )
    first, second = track_records(collector)
    assert (first["service_key"], first["response_id"]) == (
        "anthropic::claude-test-model",
        message.id,
    )
    assert (first["payload"]["input_tokens"], first["payload"]["output_tokens"]) == (25, 15)
    assert second["response_id"] == events[0].message.id
    assert (second["payload"]["input_tokens"], second["payload"]["output_tokens"]) == (25, 15)


@pytest.mark.anyio
async def test_openai_stream_async_left_early_and_whole(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    chat = {"model": "gpt-4o-mini", "messages": MESSAGES}
    async with (
        openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        AsyncTracker(**connection) as tracker,
    ):
        stream = await client.chat.completions.create(
            **chat, stream=True, stream_options={"include_usage": True}
        )
        ids = [c.id async for c in tracker.track_llm_stream_usage("openai", stream)]
        left = await client.chat.completions.create(**chat, stream=True)
        tracked = tracker.track_llm_stream_usage("openai", left)
        async for _chunk in tracked:
            break
        await tracked.aclose()  # type: ignore[attr-defined]
    [record] = track_records(collector)  # the stream left early reported no usage
    assert record["response_id"] == ids[0]
    assert record["payload"]["total_tokens"] == 17


@pytest.mark.anyio
async def test_anthropic_stream_async_left_early(
    collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    async with (
        anthropic.AsyncAnthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        AsyncTracker(**connection) as tracker,
    ):
        stream = await client.messages.create(**CLAUDE, stream=True)
        tracked = tracker.track_llm_stream_usage("anthropic", stream)
        async for event in tracked:
            first = event
            break
        await tracked.aclose()  # type: ignore[attr-defined]
        await stream.close()
    record = one_track(collector)
    assert record["response_id"] == first.message.id
    assert (record["payload"]["input_tokens"], record["payload"]["output_tokens"]) == (25, 1)


def test_gemini_answer_object(collector: LocalCollector, connection: dict[str, str]) -> None:
    answer = gtypes.GenerateContentResponse.model_validate(GEMINI_ANSWER)
    with Tracker(**connection) as tracker:
        tracker.track_llm_usage("gemini", answer)
    record = one_track(collector)
    assert record["service_key"] == "google::gemini-2.5-flash"
    assert record["response_id"] == "gem-123"
    assert record["payload"] == {
        "prompt_token_count": 9,
        "candidates_token_count": 4,
        "thoughts_token_count": 2,
        "total_token_count": 15,
    }


def test_bedrock_answer_needs_its_model(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    with Tracker(**connection) as tracker:
        with pytest.raises(RecordError, match="amazon-bedrock::<model>"):
            tracker.track_llm_usage("amazon-bedrock", BEDROCK_ANSWER)
        tracker.track_llm_usage("amazon-bedrock::amazon.nova-lite-v1:0", BEDROCK_ANSWER)
    record = one_track(collector)
    assert record["service_key"] == "amazon-bedrock::amazon.nova-lite-v1:0"
    assert record["response_id"] == "req-42"
    assert record["payload"] == {"inputTokens": 11, "outputTokens": 3, "totalTokens": 14}


def test_bad_service_key_is_refused(connection: dict[str, str]) -> None:
    with Tracker(**connection) as tracker:
        with pytest.raises(RecordError, match="service_key"):
            tracker.track_llm_usage(None, {})  # type: ignore[arg-type]
        with pytest.raises(RecordError, match="service_key"):
            tracker.track_llm_stream_usage("", iter(()))
        # A stream's options are checked when it is handed over, not when it ends.
        with pytest.raises(TypeError, match="anonymize_fields"):
            tracker.track_llm_stream_usage("openai", iter(()), anonymize_fields="email")


def test_an_answer_without_usage_records_nothing(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    class Answer:
        model = "gpt-4o-mini"
        id = "x"
        usage: Any = None

    with Tracker(**connection) as tracker:
        tracker.track_llm_usage("openai", Answer())
    assert track_records(collector) == []


def _salted(value: object) -> object:
    return f"hashed:{value}"


def test_tracker_defaults_and_anonymisation_apply_as_to_track(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    """The tracker's customer key, context, anonymised fields and anonymizer apply to
    track_llm_usage and track_llm_stream_usage exactly as to track(); per-call fields are
    dotted paths like track()'s, anonymised by the tracker's anonymizer."""
    with openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client:
        chat = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        with Tracker(anonymize_fields=["total_tokens"], **connection) as tracker:
            tracker.set_customer_key("acme")
            tracker.set_context({"env": "test"})
            tracker.set_anonymizer(_salted)
            tracker.track_llm_usage(
                "openai", chat, anonymize_fields=["prompt_tokens_details.cached_tokens"]
            )
            list(tracker.track_llm_stream_usage("openai", stream, customer_key="globex"))
            tracker.track("openai", "gpt-4o-mini", dict(chat.usage.model_dump()))  # type: ignore[union-attr]
    plain, streamed, by_hand = track_records(collector)
    assert plain["customer_key"] == by_hand["customer_key"] == "acme"
    assert streamed["customer_key"] == "globex"  # a call's own key wins
    assert plain["context"] == streamed["context"] == by_hand["context"] == {"env": "test"}
    for record in (plain, streamed, by_hand):
        assert record["payload"]["total_tokens"] == "hashed:17"
    assert plain["payload"]["prompt_tokens_details"]["cached_tokens"] == "hashed:0"
    assert plain["payload"]["prompt_tokens"] == 12


@pytest.mark.anyio
async def test_async_tracker_anonymises_with_its_default_anonymizer(
    collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    """Per-call anonymize_fields of the async twin use track()'s default anonymizer."""
    async with (
        anthropic.AsyncAnthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        AsyncTracker(**connection) as tracker,
    ):
        message = await client.messages.create(**CLAUDE)
        tracker.set_customer_key("acme")
        await tracker.track_llm_usage("anthropic", message, anonymize_fields=["output_tokens"])
        stream = await client.messages.create(**CLAUDE, stream=True)
        async for _ in tracker.track_llm_stream_usage(
            "anthropic", stream, anonymize_fields=["output_tokens"]
        ):
            pass
    plain, streamed = track_records(collector)
    for record in (plain, streamed):
        assert record["customer_key"] == "acme"
        assert record["payload"]["input_tokens"] == 25
        hashed = record["payload"]["output_tokens"]
        assert isinstance(hashed, str)
        assert hashed.startswith("anon:")
        assert len(hashed) == 37
    assert plain["payload"]["output_tokens"] == streamed["payload"]["output_tokens"]


def test_service_key_vendor_names() -> None:
    """The service's api_id names and the built-ins' default api_ids map to vendors (one
    table with the usage limits'); a vendor's own name is kept as given."""
    from aicm._providers import vendor_of

    assert vendor_of("openai_chat") == vendor_of("asyncopenai") == "openai"
    assert vendor_of("gemini") == vendor_of("google-genai") == "google"
    assert vendor_of("bedrock-runtime") == "amazon-bedrock"
    assert vendor_of("MyVendor::my-model") == "MyVendor"


def test_credentials_in_a_usage_object_are_never_recorded(
    collector: LocalCollector, connection: dict[str, str]
) -> None:
    """A usage object carrying credential-named keys (an OpenAI-compatible proxy echoing
    them as extra fields) or an HTTP header object: the counts are recorded, the
    credentials and the headers are not."""
    usage = openai.types.CompletionUsage.model_validate(
        {
            "prompt_tokens": 3,
            "completion_tokens": 1,
            "total_tokens": 4,
            "api_key": "sk-leak-1",
            "prompt_tokens_details": {"cached_tokens": 1, "access_token": "sk-leak-2"},
            "auth_headers": {"X-Api-Key": "sk-leak-3"},
        }
    )
    answer = SimpleNamespace(id="cmpl-1", model="gpt-4o-mini", usage=usage)
    odd = SimpleNamespace(
        id="cmpl-2",
        model="gpt-4o-mini",
        usage={"prompt_tokens": 5, "echo": httpx.Headers({"x-api-key": "sk-leak-4"})},
    )
    with Tracker(**connection) as tracker:
        tracker.track_llm_usage("openai", answer)
        tracker.track_llm_usage("openai", odd)
    first, second = track_records(collector)
    assert first["payload"] == {
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
    assert second["payload"] == {"prompt_tokens": 5}
    assert "sk-leak" not in repr(collector.records("track"))
