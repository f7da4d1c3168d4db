"""``track_llm_usage`` / ``track_llm_stream_usage`` on both tracker twins, with answers and
streams of the real SDKs (OpenAI and Anthropic over their fake servers; Gemini and Bedrock
answers built by their SDKs' own types), each giving one ``/track`` record."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from google.genai import types as gtypes

from aicm import AsyncTracker, RecordError, Tracker
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
            "openai::gpt-4o", answer, response_id="mine", anonymize_fields=["total_tokens"]
        )
    record = one_track(collector)
    assert record["service_key"] == "openai::gpt-4o"  # a full key is recorded as given
    assert record["response_id"] == "mine"
    assert record["payload"]["input_tokens"] == 12
    assert record["payload"]["total_tokens"] == "[redacted]"


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
