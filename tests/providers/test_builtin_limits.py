"""Usage limits cover the calls the built-ins record: a hard limit on the service a built-in
record names (``"vendor::model"``) refuses the next call of a wrapped Gemini, Bedrock or
OpenAI-compatible client before the provider is paid, as it does an OpenAI client's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from aicm import CostManager, UsageLimitExceeded
from aicm.collector import LocalCollector
from tests.api.limits_support import fresh_key
from tests.fakes import FakeBedrock, FakeGemini
from tests.providers.support import sdk_http
from tests.providers.test_builtin_gemini_bedrock import (
    GEMINI_MODEL,
    NOVA,
    PROMPT,
    bedrock_client,
    gemini_client,
)
from tests.tracking_support import MESSAGES

# Below a billionth of a dollar a limit is reached before anything is spent: in force at once.
AT_ONCE = "0.000000001"


HTTP = sdk_http(openai.DefaultHttpxClient)


@pytest.fixture(scope="module")
def gemini_fake() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="module")
def bedrock_fake() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


def limited(collector: LocalCollector, service: str) -> dict[str, Any]:
    """A hard daily limit on ``service``, in force at once; the manager's connection."""
    collector.add_limit(threshold_type="limit", amount=AT_ONCE, period="day", service=service)
    return {
        "aicm_api_key": fresh_key(),
        "aicm_api_base": collector.api_base,
        "limits_public_key": collector.public_key,
    }


def test_a_bedrock_call_is_refused_by_its_models_limit(
    collector: LocalCollector, bedrock_fake: FakeBedrock
) -> None:
    """Bedrock names its model ``modelId``: the limit on ``amazon-bedrock::<modelId>``
    refuses converse and converse_stream before any request reaches Bedrock."""
    connection = limited(collector, f"amazon-bedrock::{NOVA}")
    seen = len(bedrock_fake.request_ids)
    with CostManager(bedrock_client(bedrock_fake), **connection) as manager:
        with pytest.raises(UsageLimitExceeded) as info:
            manager.client.converse(modelId=NOVA, messages=PROMPT)
        with pytest.raises(UsageLimitExceeded):
            manager.client.converse_stream(modelId=NOVA, messages=PROMPT)
        other = manager.client.converse(modelId="amazon.nova-pro-v1:0", messages=PROMPT)
    assert info.value.matched["service_key"] == f"amazon-bedrock::{NOVA}"
    assert len(bedrock_fake.request_ids) == seen + 1  # only the other model's call
    assert other["ResponseMetadata"]["RequestId"] == bedrock_fake.request_ids[-1]


def test_a_gemini_call_is_refused_by_the_served_models_limit(
    collector: LocalCollector, gemini_fake: FakeGemini
) -> None:
    """Gemini records name the model that answered (``model_version``): once one answer
    said which model serves the requested one, that model's limit refuses the next call."""
    served = f"google::{GEMINI_MODEL}-001"
    connection = limited(collector, served)
    with CostManager(gemini_client(gemini_fake), **connection) as manager:
        manager.client.models.generate_content(model=GEMINI_MODEL, contents="hi")
        with pytest.raises(UsageLimitExceeded) as info:
            manager.client.models.generate_content(model=GEMINI_MODEL, contents="hi")
        with pytest.raises(UsageLimitExceeded):
            manager.client.models.generate_content_stream(model=GEMINI_MODEL, contents="hi")
    assert info.value.matched["service_key"] == served


def test_a_compatible_vendors_call_is_refused_by_its_limit(collector: LocalCollector) -> None:
    """An OpenAI client pointed at Groq records ``groq::<model>``: that limit refuses it."""
    sent: list[Any] = []

    def groq(request: Any) -> Any:
        sent.append(request)
        body = json.loads(request.content)
        return HTTP.Response(
            200,
            json={
                "id": "chatcmpl-groq",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "ok"},
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            },
        )

    connection = limited(collector, "groq::llama-3.1-8b-instant")
    with (
        openai.OpenAI(
            api_key="t",
            base_url="https://api.groq.com/openai/v1",
            http_client=openai.DefaultHttpxClient(transport=HTTP.MockTransport(groq)),
        ) as client,
        CostManager(client, **connection) as manager,
    ):
        with pytest.raises(UsageLimitExceeded):
            manager.client.chat.completions.create(model="llama-3.1-8b-instant", messages=MESSAGES)
        assert sent == []
