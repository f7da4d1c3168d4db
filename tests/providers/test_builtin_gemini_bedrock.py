"""With no handling config, wrapped ``google-genai`` and boto3 ``bedrock-runtime`` clients are
tracked by the built-ins against fake servers speaking the real wire protocols: plain calls,
streams read whole or left early, Gemini's ``aio`` twin (asyncio and trio); one ``/track``
record per call with the provider's usage and id; a served config takes over."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from google import genai
from google.genai import types as gtypes

from aicm import AsyncCostManager, CostManager, Tracker
from aicm.collector import LocalCollector
from tests.fakes import FakeBedrock, FakeGemini
from tests.providers.support import one_track, track_records
from tests.tracking_support import usage_records

GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_USAGE = {
    "prompt_token_count": 9,
    "candidates_token_count": 5,
    "thoughts_token_count": 3,
    "total_token_count": 17,
    "prompt_tokens_details": [{"modality": "TEXT", "token_count": 9}],
}
NOVA = "amazon.nova-lite-v1:0"
BEDROCK_USAGE = {
    "inputTokens": 11,
    "outputTokens": 6,
    "totalTokens": 21,
    "cacheReadInputTokens": 4,
    "cacheWriteInputTokens": 0,
}
PROMPT = [{"role": "user", "content": [{"text": "Say hello"}]}]
GEMINI_CONFIG = {
    "config_id": "gemini-config",
    "api_id": "google-genai",
    "handling_config": {
        "tracked_methods": ["models.generate_content"],
        "request_fields": ["model"],
        "response_fields": [{"key": "usage", "path": "usage_metadata"}],
        "payload_mapping": {
            "config_id": "config_identifier",
            "service_id": "request_data.model",
            "timestamp": "timestamp",
            "input_tokens": "response_data.usage.prompt_token_count",
        },
    },
}
BEDROCK_CONFIG = {
    "config_id": "bedrock-config",
    "api_id": "bedrock-runtime",
    "handling_config": {
        "tracked_methods": ["converse"],
        "request_fields": ["modelId"],
        "response_fields": [{"key": "usage", "path": "usage"}],
        "payload_mapping": {
            "config_id": "config_identifier",
            "service_id": "request_data.modelId",
            "timestamp": "timestamp",
            "input_tokens": "response_data.usage.inputTokens",
        },
    },
}


@pytest.fixture(scope="module")
def gemini_fake() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="module")
def bedrock_fake() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


def gemini_client(fake: FakeGemini) -> genai.Client:
    return genai.Client(api_key="t", http_options=gtypes.HttpOptions(base_url=fake.url))


def bedrock_client(fake: FakeBedrock) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=fake.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def check_gemini(record: dict[str, Any], rid: str, usage: dict[str, Any]) -> None:
    assert record["service_key"] == f"google::{GEMINI_MODEL}-001"  # the model that answered
    assert record["response_id"] == rid
    assert record["payload"] == usage


# -- Gemini ------------------------------------------------------------------------------------


def test_gemini_plain_call(
    collector: LocalCollector, connection: dict[str, str], gemini_fake: FakeGemini
) -> None:
    with CostManager(gemini_client(gemini_fake), **connection) as manager:
        assert manager.api_id == "google-genai"
        answer = manager.client.models.generate_content(model=GEMINI_MODEL, contents="hi")
    assert answer.text == "Hello from the fake Gemini"
    check_gemini(one_track(collector), answer.response_id or "", GEMINI_USAGE)


def test_gemini_stream_iterated(
    collector: LocalCollector, connection: dict[str, str], gemini_fake: FakeGemini
) -> None:
    with CostManager(gemini_client(gemini_fake), **connection) as manager:
        chunks = list(
            manager.client.models.generate_content_stream(model=GEMINI_MODEL, contents="hi")
        )
    assert "".join(c.text or "" for c in chunks) == "Hello from the fake Gemini"
    check_gemini(one_track(collector), chunks[0].response_id or "", GEMINI_USAGE)


def test_gemini_stream_left_early(
    collector: LocalCollector, connection: dict[str, str], gemini_fake: FakeGemini
) -> None:
    with CostManager(gemini_client(gemini_fake), **connection) as manager:
        stream = manager.client.models.generate_content_stream(model=GEMINI_MODEL, contents="hi")
        for chunk in stream:
            first = chunk
            break
        del stream
        gc.collect()
    usage = {**GEMINI_USAGE, "candidates_token_count": 1, "total_token_count": 13}
    check_gemini(one_track(collector), first.response_id or "", usage)


# google-genai's aio client runs on asyncio only (its HTTP layer asks for the asyncio loop).
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_gemini_aio_plain_and_stream(
    collector: LocalCollector, connection: dict[str, str], gemini_fake: FakeGemini
) -> None:
    async with AsyncCostManager(gemini_client(gemini_fake), **connection) as manager:
        answer = await manager.client.aio.models.generate_content(model=GEMINI_MODEL, contents="hi")
        # The async stream call is awaited first; what it returns is then iterated.
        stream = await manager.client.aio.models.generate_content_stream(
            model=GEMINI_MODEL, contents="hi"
        )
        chunks = [chunk async for chunk in stream]
    plain, streamed = track_records(collector)
    check_gemini(plain, answer.response_id or "", GEMINI_USAGE)
    check_gemini(streamed, chunks[0].response_id or "", GEMINI_USAGE)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_gemini_aio_stream_left_early(
    collector: LocalCollector, connection: dict[str, str], gemini_fake: FakeGemini
) -> None:
    async with AsyncCostManager(gemini_client(gemini_fake), **connection) as manager:
        stream = await manager.client.aio.models.generate_content_stream(
            model=GEMINI_MODEL, contents="hi"
        )
        async for chunk in stream:
            first = chunk
            break
        await stream.aclose()
    usage = {**GEMINI_USAGE, "candidates_token_count": 1, "total_token_count": 13}
    check_gemini(one_track(collector), first.response_id or "", usage)


def test_gemini_served_config_takes_over(
    collector: LocalCollector, connection: dict[str, str], gemini_fake: FakeGemini
) -> None:
    collector.set_configs([GEMINI_CONFIG])
    with CostManager(gemini_client(gemini_fake), **connection) as manager:
        manager.client.models.generate_content(model=GEMINI_MODEL, contents="hi")
    assert track_records(collector) == []
    [record] = usage_records(collector)
    assert record["input_tokens"] == 9


def test_gemini_track_llm_usage_with_a_real_answer(
    collector: LocalCollector, connection: dict[str, str], gemini_fake: FakeGemini
) -> None:
    client = gemini_client(gemini_fake)
    answer = client.models.generate_content(model=GEMINI_MODEL, contents="hi")
    with Tracker(**connection) as tracker:
        tracker.track_llm_usage("google", answer)
        chunks = list(
            tracker.track_llm_stream_usage(
                "gemini",
                client.models.generate_content_stream(model=GEMINI_MODEL, contents="hi"),
            )
        )
    plain, streamed = track_records(collector)
    check_gemini(plain, answer.response_id or "", GEMINI_USAGE)
    check_gemini(streamed, chunks[0].response_id or "", GEMINI_USAGE)


# -- Bedrock -----------------------------------------------------------------------------------


def test_bedrock_converse(
    collector: LocalCollector, connection: dict[str, str], bedrock_fake: FakeBedrock
) -> None:
    with CostManager(bedrock_client(bedrock_fake), **connection) as manager:
        assert manager.api_id == "bedrock-runtime"
        answer = manager.client.converse(modelId=NOVA, messages=PROMPT)
    assert answer["output"]["message"]["content"][0]["text"] == "Hello from the fake Bedrock"
    record = one_track(collector)
    assert record["service_key"] == f"amazon-bedrock::{NOVA}"
    assert record["response_id"] == answer["ResponseMetadata"]["RequestId"]
    assert record["payload"] == BEDROCK_USAGE


def test_bedrock_converse_stream_iterated(
    collector: LocalCollector, connection: dict[str, str], bedrock_fake: FakeBedrock
) -> None:
    with CostManager(bedrock_client(bedrock_fake), **connection) as manager:
        answer = manager.client.converse_stream(modelId=NOVA, messages=PROMPT)
        events = list(answer["stream"])
    assert "metadata" in events[-1]
    record = one_track(collector)
    assert record["service_key"] == f"amazon-bedrock::{NOVA}"
    assert record["response_id"] == answer["ResponseMetadata"]["RequestId"]
    assert record["payload"] == BEDROCK_USAGE


def test_bedrock_converse_stream_left_early(
    collector: LocalCollector, connection: dict[str, str], bedrock_fake: FakeBedrock
) -> None:
    """A stream closed before its metadata event: one record, with no usage known."""
    with CostManager(bedrock_client(bedrock_fake), **connection) as manager:
        answer = manager.client.converse_stream(modelId=NOVA, messages=PROMPT)
        for event in answer["stream"]:
            assert "messageStart" in event
            break
        answer["stream"].close()
    record = one_track(collector)
    assert record["response_id"] == answer["ResponseMetadata"]["RequestId"]
    assert record["payload"] == {}


@pytest.mark.anyio
async def test_bedrock_under_the_async_manager(
    collector: LocalCollector, connection: dict[str, str], bedrock_fake: FakeBedrock
) -> None:
    """boto3 is sync only; a sync client wrapped by the async manager is tracked alike."""
    async with AsyncCostManager(bedrock_client(bedrock_fake), **connection) as manager:
        answer = manager.client.converse_stream(modelId=NOVA, messages=PROMPT)
        events = list(answer["stream"])
        plain = manager.client.converse(modelId=NOVA, messages=PROMPT)
    assert len(events) == 9
    streamed, called = track_records(collector)
    assert streamed["payload"] == called["payload"] == BEDROCK_USAGE
    assert called["response_id"] == plain["ResponseMetadata"]["RequestId"]


def test_bedrock_served_config_takes_over(
    collector: LocalCollector, connection: dict[str, str], bedrock_fake: FakeBedrock
) -> None:
    collector.set_configs([BEDROCK_CONFIG])
    with CostManager(bedrock_client(bedrock_fake), **connection) as manager:
        manager.client.converse(modelId=NOVA, messages=PROMPT)
        stream = manager.client.converse_stream(modelId=NOVA, messages=PROMPT)["stream"]
        list(stream)
    assert track_records(collector) == []  # the config tracks converse only: no built-in
    [record] = usage_records(collector)
    assert record["input_tokens"] == 11


def test_bedrock_track_llm_usage_with_real_answers(
    collector: LocalCollector, connection: dict[str, str], bedrock_fake: FakeBedrock
) -> None:
    client = bedrock_client(bedrock_fake)
    answer = client.converse(modelId=NOVA, messages=PROMPT)
    streamed = client.converse_stream(modelId=NOVA, messages=PROMPT)
    key = f"amazon-bedrock::{NOVA}"
    with Tracker(**connection) as tracker:
        assert tracker.track_llm_usage(key, answer) is answer
        events = list(
            tracker.track_llm_stream_usage(
                key,
                streamed["stream"],
                response_id=streamed["ResponseMetadata"]["RequestId"],
            )
        )
    plain, stream = track_records(collector)
    assert len(events) == 9
    assert (plain["service_key"], plain["response_id"]) == (
        key,
        answer["ResponseMetadata"]["RequestId"],
    )
    assert stream["response_id"] == streamed["ResponseMetadata"]["RequestId"]
    assert plain["payload"] == stream["payload"] == BEDROCK_USAGE
