"""With no handling config, wrapped OpenAI and Anthropic clients are tracked by the built-ins:
one ``/track`` record per call (``"vendor::model"``, the provider's id, its usage), through
plain calls, every stream helper and read style, early exit, sync and async (asyncio and
trio). A served config for the ``api_id`` takes over."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from aicm import AsyncCostManager, CostManager
from aicm.collector import LocalCollector
from tests.api.test_sdk_idioms import CLAUDE_ASYNC as IDIOMS_CLAUDE_ASYNC
from tests.api.test_sdk_idioms import CLAUDE_SYNC as IDIOMS_CLAUDE_SYNC
from tests.api.test_sdk_idioms import OPENAI_ASYNC as IDIOMS_OPENAI_ASYNC
from tests.api.test_sdk_idioms import OPENAI_SYNC as IDIOMS_OPENAI_SYNC
from tests.api.test_sdk_streams import (
    CHAT,
    CLAUDE,
    CLAUDE_ASYNC,
    CLAUDE_SYNC,
    OPENAI_ASYNC,
    OPENAI_SYNC,
    RESPONSE,
)
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.providers.support import one_track, sdk_http
from tests.sdk_support import anthropic_configs, one_record, openai_configs
from tests.tracking_support import MESSAGES

CHAT_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
RESPONSES_USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 17,
}


HTTP = sdk_http(openai.DefaultHttpxClient)


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


def tokens(record: dict[str, Any]) -> tuple[Any, Any]:
    """(input, output) tokens of a built-in record's payload, either OpenAI shape."""
    usage = record["payload"]
    return (
        usage.get("prompt_tokens", usage.get("input_tokens")),
        usage.get("completion_tokens", usage.get("output_tokens")),
    )


def check(record: dict[str, Any], vendor: str, model: str, rid: str | None, expected: Any) -> None:
    """``rid`` None: the stream was left before its first event, the record has a fresh id."""
    assert record["service_key"] == f"{vendor}::{model}"
    assert record["response_id"] == rid if rid is not None else record["response_id"]
    assert "api_id" not in record
    if expected[0] is None:
        assert record["payload"] == {}  # the stream ended before its usage came
    else:
        assert tokens(record) == expected


# -- plain calls -----------------------------------------------------------------------------


def test_openai_plain_calls_need_no_config(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    """Chat, Responses and (through with_options and raw responses) each give one record."""
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, client_customer_key="acme", **connection) as manager,
    ):
        chat = manager.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    record = one_track(collector)
    assert record == {
        "service_key": "openai::gpt-4o-mini",
        "response_id": chat.id,
        "timestamp": record["timestamp"],
        "payload": CHAT_USAGE,
        "customer_key": "acme",
    }
    collector.clear()
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        answer = manager.client.with_options(timeout=5).responses.create(**RESPONSE)
    record = one_track(collector)
    assert record["payload"] == RESPONSES_USAGE
    assert (record["service_key"], record["response_id"]) == ("openai::gpt-4o-mini", answer.id)
    collector.clear()
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        raw = manager.client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    record = one_track(collector)
    assert record["response_id"] == raw.parse().id
    assert record["payload"] == CHAT_USAGE


@pytest.mark.anyio
async def test_async_openai_embeddings_need_no_config(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    async with (
        openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **connection) as manager,
    ):
        answer = await manager.client.embeddings.create(
            model="text-embedding-3-small", input=["a", "b"]
        )
    assert len(answer.data) == 2
    record = one_track(collector)
    assert record["service_key"] == "openai::text-embedding-3-small"
    assert record["payload"] == {"prompt_tokens": 12, "total_tokens": 12}
    assert record["response_id"]  # embeddings answers carry no id: a fresh one


@pytest.mark.anyio
async def test_async_openai_plain_call_needs_no_config(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    async with (
        openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **connection) as manager,
    ):
        chat = await manager.client.copy().chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    record = one_track(collector)
    check(record, "openai", "gpt-4o-mini", chat.id, (12, 5))


def test_azure_openai_is_tracked_as_openai(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    with (
        openai.AzureOpenAI(
            base_url=openai_fake.base_url, api_key="t", api_version="2024-06-01", max_retries=0
        ) as client,
        CostManager(client, **connection) as manager,
    ):
        assert manager.api_id == "azureopenai"
        chat = manager.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    check(one_track(collector), "openai", "gpt-4o-mini", chat.id, (12, 5))


@pytest.mark.anyio
async def test_async_azure_openai_is_tracked(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    async with (
        openai.AsyncAzureOpenAI(
            base_url=openai_fake.base_url, api_key="t", api_version="2024-06-01", max_retries=0
        ) as client,
        AsyncCostManager(client, **connection) as manager,
    ):
        chat = await manager.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    check(one_track(collector), "openai", "gpt-4o-mini", chat.id, (12, 5))


def test_anthropic_plain_call_needs_no_config(
    collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    with (
        anthropic.Anthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        message = manager.client.messages.create(**CLAUDE)
    record = one_track(collector)
    assert record["service_key"] == "anthropic::claude-test-model"
    assert record["response_id"] == message.id
    assert record["payload"]["input_tokens"] == 25
    assert record["payload"]["output_tokens"] == 15
    assert None not in record["payload"].values()


@pytest.mark.anyio
async def test_async_anthropic_plain_call_needs_no_config(
    collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    async with (
        anthropic.AsyncAnthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **connection) as manager,
    ):
        message = await manager.client.messages.create(**CLAUDE)
    check(one_track(collector), "anthropic", "claude-test-model", message.id, (25, 15))


# -- every stream shape ----------------------------------------------------------------------


@pytest.mark.parametrize("style", list(OPENAI_SYNC))
def test_openai_sync_streams_need_no_config(
    style: str, collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    run, _ = OPENAI_SYNC[style]
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        sent = len(openai_fake.requests)
        rid, expected = run(manager.client)
        assert len(openai_fake.requests) == sent + 1
    check(one_track(collector), "openai", "gpt-4o-mini", rid, expected)


@pytest.mark.anyio
@pytest.mark.parametrize("style", list(OPENAI_ASYNC))
async def test_openai_async_streams_need_no_config(
    style: str, collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    run, _ = OPENAI_ASYNC[style]
    async with (
        openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **connection) as manager,
    ):
        sent = len(openai_fake.requests)
        rid, expected = await run(manager.client)
        assert len(openai_fake.requests) == sent + 1
    check(one_track(collector), "openai", "gpt-4o-mini", rid, expected)


@pytest.mark.parametrize("style", list(CLAUDE_SYNC))
def test_anthropic_sync_streams_need_no_config(
    style: str, collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    with (
        anthropic.Anthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        sent = len(anthropic_fake.requests)
        rid, expected = CLAUDE_SYNC[style](manager.client)
        assert len(anthropic_fake.requests) == sent + 1
    check(one_track(collector), "anthropic", "claude-test-model", rid, expected)


@pytest.mark.anyio
@pytest.mark.parametrize("style", list(CLAUDE_ASYNC))
async def test_anthropic_async_streams_need_no_config(
    style: str, collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    async with (
        anthropic.AsyncAnthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **connection) as manager,
    ):
        sent = len(anthropic_fake.requests)
        rid, expected = await CLAUDE_ASYNC[style](manager.client)
        assert len(anthropic_fake.requests) == sent + 1
    check(one_track(collector), "anthropic", "claude-test-model", rid, expected)


# -- what is not usage, and configs taking over -----------------------------------------------


def test_count_tokens_and_other_calls_are_not_tracked(connection: dict[str, str]) -> None:
    manager = AsyncCostManager(anthropic.Anthropic(api_key="t"), **connection)
    assert manager.should_track("messages.count_tokens") is False
    assert manager.should_track("models.list") is False
    assert manager.should_track("messages.create") is True
    assert manager.should_track("messages.stream") is True


def test_served_config_takes_over(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    """A config served for the api_id makes its record, and the built-in none."""
    collector.set_configs(openai_configs("openai"))
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        chat = manager.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert collector.records("track") == []
    assert one_record(collector)["response_id"] == chat.id


@pytest.mark.anyio
async def test_passed_config_takes_over_for_anthropic(
    collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    async with (
        anthropic.AsyncAnthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        AsyncCostManager(
            client, configs=anthropic_configs("asyncanthropic"), **connection
        ) as manager,
        manager.client.messages.stream(**CLAUDE) as stream,
    ):
        final = await stream.get_final_message()
    assert collector.records("track") == []
    assert one_record(collector)["response_id"] == final.id


def test_config_for_another_api_id_leaves_the_builtin(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    collector.set_configs(openai_configs("someother"))
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        stream = manager.client.chat.completions.create(**CHAT, stream=True)
        chunks = list(stream)
    check(one_track(collector), "openai", "gpt-4o-mini", chunks[0].id, (12, 5))


@pytest.mark.parametrize(
    ("host", "vendor"),
    [
        ("https://api.fireworks.ai/inference/v1", "fireworks-ai"),
        ("https://api.x.ai/v1", "xai"),
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://api.openai.com/v1", "openai"),
        ("https://myres.openai.azure.com/openai", "openai"),
        ("https://notgroq.com/v1", "openai"),
    ],
)
def test_openai_compatible_vendor_by_base_url(host: str, vendor: str) -> None:
    from aicm._providers import builtin_for

    client = openai.OpenAI(base_url=host, api_key="t")
    builtin = builtin_for(client)
    assert builtin is not None
    assert builtin.vendor == vendor


# -- every SDK idiom (options, copies, raw and streaming responses) ---------------------------

TAGS: dict[str, Any] = {"client_customer_key": "acme", "context": {"env": "test"}}


def check_tagged(record: dict[str, Any], vendor: str, model: str, rid: str, expected: Any) -> None:
    check(record, vendor, model, rid, expected)
    assert record["customer_key"] == "acme"
    assert record["context"] == {"env": "test"}


@pytest.mark.parametrize("idiom", list(IDIOMS_OPENAI_SYNC))
def test_openai_sync_idioms_need_no_config(
    idiom: str, collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    run, _ = IDIOMS_OPENAI_SYNC[idiom]
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **TAGS, **connection) as manager,
    ):
        sent = len(openai_fake.requests)
        rid = run(manager.client)
        assert len(openai_fake.requests) == sent + 1
    check_tagged(one_track(collector), "openai", "gpt-4o-mini", rid, (12, 5))


@pytest.mark.anyio
@pytest.mark.parametrize("idiom", list(IDIOMS_OPENAI_ASYNC))
async def test_openai_async_idioms_need_no_config(
    idiom: str, collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    run, _ = IDIOMS_OPENAI_ASYNC[idiom]
    async with (
        openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **TAGS, **connection) as manager,
    ):
        sent = len(openai_fake.requests)
        rid = await run(manager.client)
        assert len(openai_fake.requests) == sent + 1
    check_tagged(one_track(collector), "openai", "gpt-4o-mini", rid, (12, 5))


@pytest.mark.parametrize("idiom", list(IDIOMS_CLAUDE_SYNC))
def test_anthropic_sync_idioms_need_no_config(
    idiom: str, collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    with (
        anthropic.Anthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        CostManager(client, **TAGS, **connection) as manager,
    ):
        sent = len(anthropic_fake.requests)
        rid = IDIOMS_CLAUDE_SYNC[idiom](manager.client)
        assert len(anthropic_fake.requests) == sent + 1
    check_tagged(one_track(collector), "anthropic", "claude-test-model", rid, (25, 15))


@pytest.mark.anyio
@pytest.mark.parametrize("idiom", list(IDIOMS_CLAUDE_ASYNC))
async def test_anthropic_async_idioms_need_no_config(
    idiom: str, collector: LocalCollector, connection: dict[str, str], anthropic_fake: FakeAnthropic
) -> None:
    async with (
        anthropic.AsyncAnthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **TAGS, **connection) as manager,
    ):
        sent = len(anthropic_fake.requests)
        rid = await IDIOMS_CLAUDE_ASYNC[idiom](manager.client)
        assert len(anthropic_fake.requests) == sent + 1
    check_tagged(one_track(collector), "anthropic", "claude-test-model", rid, (25, 15))


def test_a_known_client_without_config_logs_no_warning(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The built-in is announced at INFO; the no-config WARNING is for unknown clients."""
    with (
        caplog.at_level(logging.INFO, logger="aicm"),
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        manager.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("built-in openai tracking" in r.getMessage() for r in caplog.records)


def test_legacy_track_format_sends_the_older_record(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AICM_TRACK_FORMAT", "legacy")
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        chat = manager.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    record = one_track(collector)
    assert (record["api_id"], record["service_key"], record["response_id"]) == (
        "openai",
        "gpt-4o-mini",
        chat.id,
    )


@pytest.mark.parametrize(
    ("base_url", "vendor", "model"),
    [
        ("https://api.fireworks.ai/inference/v1", "fireworks-ai", "accounts/fireworks/models/x"),
        ("https://api.x.ai/v1", "xai", "grok-3"),
        ("https://api.groq.com/openai/v1", "groq", "llama-3.1-8b-instant"),
    ],
)
def test_openai_compatible_vendor_calls_are_recorded_under_the_vendor(
    base_url: str, vendor: str, model: str, collector: LocalCollector, connection: dict[str, str]
) -> None:
    """An OpenAI client pointed at a compatible vendor (answered in-process: no network)
    records ``vendor::model`` with the vendor's answer id and usage."""

    def vendor_api(request: Any) -> Any:
        assert request.url.host == base_url.partition("://")[2].partition("/")[0]
        return HTTP.Response(
            200,
            json={
                "id": f"chatcmpl-{vendor}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": json.loads(request.content)["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "ok"},
                    }
                ],
                "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
            },
        )

    with (
        openai.OpenAI(
            api_key="t",
            base_url=base_url,
            http_client=openai.DefaultHttpxClient(transport=HTTP.MockTransport(vendor_api)),
        ) as client,
        CostManager(client, **connection) as manager,
    ):
        manager.client.chat.completions.create(model=model, messages=MESSAGES)
    record = one_track(collector)
    assert record["service_key"] == f"{vendor}::{model}"
    assert record["response_id"] == f"chatcmpl-{vendor}"
    assert record["payload"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def test_a_call_the_builtin_cannot_record_warns_once_per_method(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Responses stream with no model (a prompt template's), left before its first event,
    names no model: no record, counted as dropped; one WARNING for the method, then DEBUG."""
    with (
        caplog.at_level(logging.DEBUG, logger="aicm.cost_manager"),
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        for _ in range(3):
            with manager.client.responses.create(input="Say hello", stream=True):
                pass
        dropped = manager.health().discarded.get("invalid_payload")
    said = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if "gave no usage record" in r.getMessage()
    ]
    assert [level for level, _ in said] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "responses.create" in said[0][1]
    assert "no model" in said[0][1]
    assert dropped == 3
    assert collector.records("track") == []
