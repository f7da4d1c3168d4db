"""Every client idiom of the real openai/anthropic SDKs is tracked once: derived clients,
raw and streamed HTTP responses, sub-resources and beta, sync and async (asyncio and trio)."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from aicm import AsyncCostManager, CostManager
from aicm.collector import LocalCollector
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.providers.support import one_track
from tests.sdk_support import (
    anthropic_configs,
    chat_tokens,
    claude_tokens,
    doc_configs,
    doc_json_blocks,
    one_record,
    openai_configs,
    responses_tokens,
)
from tests.tracking_support import MESSAGES

CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}
USAGE_STREAM: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
RESPONSE = {"model": "gpt-4o-mini", "input": "Say hello"}
CLAUDE = {"model": "claude-test-model", "max_tokens": 64, "messages": MESSAGES}
TAGS: dict[str, Any] = {"client_customer_key": "acme", "context": {"env": "test"}}

Tokens = Callable[[dict[str, Any]], tuple[Any, Any, str]]


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    """A fake OpenAI API for the module."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    """A fake Anthropic API for the module."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def configs(collector: LocalCollector) -> None:
    """The collector serves the documented configs under every default api_id."""
    collector.set_configs(
        openai_configs("openai")
        + openai_configs("asyncopenai")
        + anthropic_configs("anthropic")
        + anthropic_configs("asyncanthropic")
    )


def check(collector: LocalCollector, tokens: Tokens, expected: tuple[int, int], rid: str) -> None:
    """One record, with the provider's tokens and response id and the manager's tags."""
    record = one_record(collector)
    assert tokens(record) == (*expected, rid)
    assert (record["client_customer_key"], record["context"]) == ("acme", {"env": "test"})


# -- openai, sync ----------------------------------------------------------------------------


def _openai_with_options(c: Any) -> str:
    derived = c.with_options(timeout=5)
    assert isinstance(derived, openai.OpenAI)
    assert isinstance(derived.chat.completions, openai.resources.chat.Completions)
    answer = derived.chat.completions.create(**CHAT)
    assert type(answer) is openai.types.chat.ChatCompletion
    return str(answer.id)


def _openai_copy(c: Any) -> str:
    derived = c.copy(max_retries=1)
    assert isinstance(derived, openai.OpenAI)
    return str(derived.with_options(timeout=9).chat.completions.create(**CHAT).id)


def _openai_raw(c: Any) -> str:
    raw = c.chat.completions.with_raw_response.create(**CHAT)
    assert type(raw) is openai._legacy_response.LegacyAPIResponse
    assert raw.headers["content-type"] == "application/json"
    parsed = raw.parse()
    assert raw.parse() is parsed
    assert type(parsed) is openai.types.chat.ChatCompletion
    return str(parsed.id)


def _openai_raw_headers_only(c: Any) -> str:
    raw = c.with_options(timeout=5).with_raw_response.chat.completions.create(**CHAT)
    return str(raw.http_response.json()["id"])


def _openai_raw_stream(c: Any) -> str:
    raw = c.chat.completions.with_raw_response.create(**CHAT, **USAGE_STREAM)
    stream = raw.parse()
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    assert len(chunks) == 8
    return str(chunks[0].id)


def _openai_streaming_parse(c: Any) -> str:
    with c.chat.completions.with_streaming_response.create(**CHAT) as response:
        assert isinstance(response, openai.APIResponse)
        return str(response.parse().id)


def _openai_streaming_json(c: Any) -> str:
    with c.chat.completions.with_streaming_response.create(**CHAT) as response:
        return str(response.json()["id"])


def _openai_streaming_stream(c: Any) -> str:
    with c.chat.completions.with_streaming_response.create(**CHAT, **USAGE_STREAM) as response:
        stream = response.parse()
        assert isinstance(stream, openai.Stream)
        ids = [chunk.id for chunk in stream]  # read to the end: the usage comes last
        return str(ids[-1])


def _openai_responses(c: Any) -> str:
    answer = c.responses.create(**RESPONSE)
    assert type(answer) is openai.types.responses.Response
    assert answer.output_text == "Hello from the fake OpenAI"
    return str(answer.id)


def _openai_responses_raw(c: Any) -> str:
    return str(c.responses.with_raw_response.create(**RESPONSE).parse().id)


OPENAI_SYNC: dict[str, tuple[Callable[[Any], str], Tokens]] = {
    "with_options": (_openai_with_options, chat_tokens),
    "copy": (_openai_copy, chat_tokens),
    "with_raw_response": (_openai_raw, chat_tokens),
    "with_raw_response, body never parsed": (_openai_raw_headers_only, chat_tokens),
    "with_raw_response, stream": (_openai_raw_stream, chat_tokens),
    "with_streaming_response, parse": (_openai_streaming_parse, chat_tokens),
    "with_streaming_response, json": (_openai_streaming_json, chat_tokens),
    "with_streaming_response, stream": (_openai_streaming_stream, chat_tokens),
    "responses.create": (_openai_responses, responses_tokens),
    "responses, with_raw_response": (_openai_responses_raw, responses_tokens),
}


@pytest.mark.usefixtures("configs")
@pytest.mark.parametrize("idiom", list(OPENAI_SYNC))
def test_openai_sync_idiom_gives_one_record(
    idiom: str, collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    """openai.OpenAI: each idiom, one provider request and one record with the tokens,
    response id and tags."""
    run, tokens = OPENAI_SYNC[idiom]
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **TAGS, **connection) as manager,
    ):
        sent = len(openai_fake.requests)
        rid = run(manager.client)
        assert len(openai_fake.requests) == sent + 1
    check(collector, tokens, (12, 5), rid)


# -- openai, async ---------------------------------------------------------------------------


async def _aopenai_with_options(c: Any) -> str:
    derived = c.with_options(timeout=5)
    assert isinstance(derived, openai.AsyncOpenAI)
    answer = await derived.chat.completions.create(**CHAT)
    assert type(answer) is openai.types.chat.ChatCompletion
    return str(answer.id)


async def _aopenai_copy(c: Any) -> str:
    return str((await c.copy(max_retries=1).chat.completions.create(**CHAT)).id)


async def _aopenai_raw(c: Any) -> str:
    raw = await c.chat.completions.with_raw_response.create(**CHAT)
    assert type(raw) is openai._legacy_response.LegacyAPIResponse
    return str(raw.parse().id)


async def _aopenai_raw_stream(c: Any) -> str:
    raw = await c.with_raw_response.chat.completions.create(**CHAT, **USAGE_STREAM)
    stream = raw.parse()
    assert isinstance(stream, openai.AsyncStream)
    chunks = [chunk async for chunk in stream]
    return str(chunks[0].id)


async def _aopenai_streaming_parse(c: Any) -> str:
    async with c.chat.completions.with_streaming_response.create(**CHAT) as response:
        assert isinstance(response, openai.AsyncAPIResponse)
        return str((await response.parse()).id)


async def _aopenai_streaming_json(c: Any) -> str:
    async with c.chat.completions.with_streaming_response.create(**CHAT) as response:
        return str((await response.json())["id"])


async def _aopenai_streaming_stream(c: Any) -> str:
    async with c.chat.completions.with_streaming_response.create(
        **CHAT, **USAGE_STREAM
    ) as response:
        stream = await response.parse()
        assert isinstance(stream, openai.AsyncStream)
        ids = [chunk.id async for chunk in stream]  # read to the end: the usage comes last
        return str(ids[-1])


async def _aopenai_responses(c: Any) -> str:
    return str((await c.with_options(timeout=5).responses.create(**RESPONSE)).id)


OPENAI_ASYNC: dict[str, tuple[Callable[[Any], Awaitable[str]], Tokens]] = {
    "with_options": (_aopenai_with_options, chat_tokens),
    "copy": (_aopenai_copy, chat_tokens),
    "with_raw_response": (_aopenai_raw, chat_tokens),
    "with_raw_response, stream": (_aopenai_raw_stream, chat_tokens),
    "with_streaming_response, parse": (_aopenai_streaming_parse, chat_tokens),
    "with_streaming_response, json": (_aopenai_streaming_json, chat_tokens),
    "with_streaming_response, stream": (_aopenai_streaming_stream, chat_tokens),
    "responses.create": (_aopenai_responses, responses_tokens),
}


@pytest.fixture
async def async_openai(openai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    """A real openai.AsyncOpenAI pointed at the fake."""
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="t", max_retries=0
    ) as client:
        yield client


@pytest.mark.anyio
@pytest.mark.usefixtures("configs")
@pytest.mark.parametrize("idiom", list(OPENAI_ASYNC))
async def test_openai_async_idiom_gives_one_record(
    idiom: str,
    collector: LocalCollector,
    connection: dict[str, str],
    async_openai: openai.AsyncOpenAI,
    openai_fake: FakeOpenAI,
) -> None:
    """openai.AsyncOpenAI: each idiom, one provider request and one record with the tokens,
    response id and tags."""
    run, tokens = OPENAI_ASYNC[idiom]
    async with AsyncCostManager(async_openai, **TAGS, **connection) as manager:
        sent = len(openai_fake.requests)
        rid = await run(manager.client)
        assert len(openai_fake.requests) == sent + 1
    check(collector, tokens, (12, 5), rid)


# -- anthropic -------------------------------------------------------------------------------


def _claude_with_options(c: Any) -> str:
    derived = c.with_options(timeout=5)
    assert isinstance(derived, anthropic.Anthropic)
    message = derived.messages.create(**CLAUDE)
    assert type(message) is anthropic.types.Message
    return str(message.id)


def _claude_copy(c: Any) -> str:
    return str(c.copy(max_retries=1).messages.create(**CLAUDE).id)


def _claude_beta(c: Any) -> str:
    message = c.beta.messages.create(**CLAUDE)
    assert type(message) is anthropic.types.beta.BetaMessage
    return str(message.id)


def _claude_raw(c: Any) -> str:
    raw = c.messages.with_raw_response.create(**CLAUDE)
    return str(raw.parse().id)


def _claude_streaming(c: Any) -> str:
    with c.with_options(timeout=5).messages.with_streaming_response.create(**CLAUDE) as response:
        return str(response.parse().id)


CLAUDE_SYNC = {
    "with_options": _claude_with_options,
    "copy": _claude_copy,
    "beta": _claude_beta,
    "with_raw_response": _claude_raw,
    "with_streaming_response": _claude_streaming,
}


@pytest.mark.usefixtures("configs")
@pytest.mark.parametrize("idiom", list(CLAUDE_SYNC))
def test_anthropic_sync_idiom_gives_one_record(
    idiom: str,
    collector: LocalCollector,
    connection: dict[str, str],
    anthropic_fake: FakeAnthropic,
) -> None:
    """anthropic.Anthropic: each idiom, one provider request and one record with the tokens,
    response id and tags."""
    with (
        anthropic.Anthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        CostManager(client, **TAGS, **connection) as manager,
    ):
        sent = len(anthropic_fake.requests)
        rid = CLAUDE_SYNC[idiom](manager.client)
        assert len(anthropic_fake.requests) == sent + 1
    check(collector, claude_tokens, (25, 15), rid)


async def _aclaude_with_options(c: Any) -> str:
    derived = c.with_options(timeout=5)
    assert isinstance(derived, anthropic.AsyncAnthropic)
    return str((await derived.messages.create(**CLAUDE)).id)


async def _aclaude_beta(c: Any) -> str:
    return str((await c.with_options(timeout=5).beta.messages.create(**CLAUDE)).id)


async def _aclaude_raw(c: Any) -> str:
    raw = await c.messages.with_raw_response.create(**CLAUDE)
    parsed = await raw.parse()
    assert await raw.parse() is parsed
    return str(parsed.id)


async def _aclaude_streaming(c: Any) -> str:
    async with c.messages.with_streaming_response.create(**CLAUDE) as response:
        return str((await response.parse()).id)


CLAUDE_ASYNC = {
    "with_options": _aclaude_with_options,
    "beta": _aclaude_beta,
    "with_raw_response": _aclaude_raw,
    "with_streaming_response": _aclaude_streaming,
}


@pytest.mark.anyio
@pytest.mark.usefixtures("configs")
@pytest.mark.parametrize("idiom", list(CLAUDE_ASYNC))
async def test_anthropic_async_idiom_gives_one_record(
    idiom: str,
    collector: LocalCollector,
    connection: dict[str, str],
    anthropic_fake: FakeAnthropic,
) -> None:
    """anthropic.AsyncAnthropic: each idiom, one provider request and one record with the
    tokens, response id and tags."""
    async with (
        anthropic.AsyncAnthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **TAGS, **connection) as manager,
    ):
        sent = len(anthropic_fake.requests)
        rid = await CLAUDE_ASYNC[idiom](manager.client)
        assert len(anthropic_fake.requests) == sent + 1
    check(collector, claude_tokens, (25, 15), rid)


def test_the_docs_show_one_openai_chat_config() -> None:
    """docs/cost_manager.md and docs/handling_configs.md show the same OpenAI chat config."""
    on_cost_manager = doc_configs()["openai-chat"]["handling_config"]
    on_handling = [
        block
        for block in doc_json_blocks("handling_configs.md")
        if isinstance(block, dict)
        and "chat.completions.create" in block.get("tracked_methods", ())
        and "chat.completions.stream" in block.get("tracked_methods", ())
    ]
    assert on_handling == [on_cost_manager]
    responses = doc_configs()["openai-responses"]["handling_config"]
    assert responses["payload_mapping"] == on_cost_manager["payload_mapping"]


# -- streams read as raw lines: the request alone is recorded ---------------------------------


def _records_without_usage(collector: LocalCollector, served: bool) -> dict[str, Any]:
    """The one record a stream read past the SDK's parser gives: no usage, a fresh id."""
    if served:
        record = one_record(collector)
        assert (record["service_id"], record.get("usage")) == ("gpt-4o-mini", None)
    else:
        record = one_track(collector)
        assert (record["service_key"], record["payload"]) == ("openai::gpt-4o-mini", {})
    assert isinstance(record["response_id"], str)
    assert record["response_id"]
    return record


def _said_unparsed(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not read through parse()" in r.getMessage()]


@pytest.mark.parametrize("served", [True, False], ids=["config", "built-in"])
def test_a_raw_stream_never_parsed_is_recorded_from_the_request(
    served: bool,
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A with_raw_response stream read as raw lines never reaches the SDK's parser: the
    request was billed, so one record from the request alone, and a WARNING says why."""
    if served:
        collector.set_configs(openai_configs("openai"))
    with (
        caplog.at_level(logging.WARNING, logger="aicm"),
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        sent = len(openai_fake.requests)
        raw = manager.client.chat.completions.with_raw_response.create(**CHAT, **USAGE_STREAM)
        lines = list(raw.http_response.iter_lines())
        del raw
        gc.collect()
        assert len(openai_fake.requests) == sent + 1
    assert "data: [DONE]" in lines
    [warning] = _said_unparsed(caplog)
    assert "chat.completions.create" in warning
    _records_without_usage(collector, served)


@pytest.mark.parametrize("served", [True, False], ids=["config", "built-in"])
def test_a_streaming_response_read_as_lines_is_recorded_from_the_request(
    served: bool,
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """with_streaming_response and iter_lines(): one record from the request when the block
    ends; a parse() after the block records nothing more."""
    if served:
        collector.set_configs(openai_configs("openai"))
    with (
        caplog.at_level(logging.WARNING, logger="aicm"),
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        create = manager.client.chat.completions.with_streaming_response.create
        with create(**CHAT, **USAGE_STREAM) as response:
            lines = list(response.iter_lines())
        assert response.parse() is not None
    assert "data: [DONE]" in lines
    assert len(_said_unparsed(caplog)) == 1
    _records_without_usage(collector, served)


@pytest.mark.anyio
@pytest.mark.parametrize("served", [True, False], ids=["config", "built-in"])
async def test_an_async_streaming_response_read_as_bytes_is_recorded_from_the_request(
    served: bool,
    collector: LocalCollector,
    connection: dict[str, str],
    async_openai: openai.AsyncOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The async twin: aiter_bytes() inside async with, one record when the block ends."""
    if served:
        collector.set_configs(openai_configs("asyncopenai"))
    with caplog.at_level(logging.WARNING, logger="aicm"):
        async with AsyncCostManager(async_openai, **connection) as manager:
            create = manager.client.chat.completions.with_streaming_response.create
            async with create(**CHAT, **USAGE_STREAM) as response:
                body = b"".join([chunk async for chunk in response.iter_bytes()])
    assert b"data: [DONE]" in body
    assert len(_said_unparsed(caplog)) == 1
    _records_without_usage(collector, served)
