"""Every stream shape of the real openai/anthropic SDKs gives exactly one record: ``stream=True``
iterators and the ``.stream()`` helpers, read by iteration, ``text_stream``, ``get_final_*``
or ``until_done``, or left early; sync and async (asyncio and trio)."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from aicm import AsyncCostManager, CostManager
from aicm.collector import LocalCollector
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.sdk_support import (
    anthropic_configs,
    chat_tokens,
    claude_tokens,
    one_record,
    openai_configs,
    responses_tokens,
)
from tests.tracking_support import MESSAGES

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": MESSAGES,
    "stream_options": {"include_usage": True},
}
RESPONSE = {"model": "gpt-4o-mini", "input": "Say hello"}
CLAUDE = {"model": "claude-test-model", "max_tokens": 64, "messages": MESSAGES}
TEXT = "Hello from the fake OpenAI"
CLAUDE_TEXT = "Hello from the fake Claude"

Tokens = Callable[[dict[str, Any]], tuple[Any, Any, str]]
# A read style: makes one streamed call with the tracked client, returns the response id the
# caller saw and the (input, output) tokens the record must carry.
# A response id of None: the stream was left before its first event, so the record carries
# a fresh one.
Style = Callable[[Any], tuple[str | None, tuple[Any, Any]]]
AStyle = Callable[[Any], Awaitable[tuple[str | None, tuple[Any, Any]]]]
FULL = (12, 5)
UNKNOWN = (None, None)  # OpenAI sends usage last: a stream left early has none
CLAUDE_FULL = (25, 15)
CLAUDE_EARLY = (25, 1)  # input tokens and the output placeholder of message_start


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


def check(
    collector: LocalCollector, tokens: Tokens, expected: tuple[Any, Any], rid: str | None
) -> None:
    """One record with the tokens and the response id the caller saw (a fresh one if none)."""
    *got, got_id = tokens(one_record(collector))
    assert got == [*expected]
    assert got_id == rid if rid is not None else isinstance(got_id, str) and got_id


@pytest.fixture
def configs(collector: LocalCollector) -> None:
    """The collector serves the documented configs under every default api_id."""
    collector.set_configs(
        openai_configs("openai")
        + openai_configs("asyncopenai")
        + anthropic_configs("anthropic")
        + anthropic_configs("asyncanthropic")
    )


# -- openai, sync ----------------------------------------------------------------------------


def chat_iterated(c: Any) -> tuple[str, Any]:
    stream = c.chat.completions.create(**CHAT, stream=True)
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == TEXT
    return chunks[0].id, FULL


def chat_left_by_break(c: Any) -> tuple[str, Any]:
    stream = c.chat.completions.create(**CHAT, stream=True)
    for chunk in stream:
        first = chunk
        break
    del stream
    gc.collect()
    return first.id, UNKNOWN


def chat_left_with_block(c: Any) -> tuple[str, Any]:
    with c.chat.completions.create(**CHAT, stream=True) as stream:
        first = next(stream)
    return first.id, UNKNOWN


def chat_helper_iterated(c: Any) -> tuple[str, Any]:
    with c.chat.completions.stream(**CHAT) as stream:
        assert isinstance(stream, openai.lib.streaming.chat.ChatCompletionStream)
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert events[-1] == "chunk"
    return final.id, FULL


def chat_helper_final(c: Any) -> tuple[str, Any]:
    with c.chat.completions.stream(**CHAT) as stream:
        final = stream.get_final_completion()
    assert isinstance(final, openai.types.chat.ParsedChatCompletion)
    assert final.choices[0].message.content == TEXT
    return final.id, FULL


def chat_helper_until_done(c: Any) -> tuple[str, Any]:
    with c.chat.completions.stream(**CHAT) as stream:
        assert stream.until_done() is stream
        completion = stream.current_completion_snapshot
    return completion.id, FULL


def chat_helper_left(c: Any) -> tuple[str, Any]:
    with c.chat.completions.stream(**CHAT) as stream:
        for event in stream:
            assert event.type == "chunk"
            first = event
            break
    return first.chunk.id, UNKNOWN


def responses_iterated(c: Any) -> tuple[str, Any]:
    stream = c.responses.create(**RESPONSE, stream=True)
    events = list(stream)
    assert events[-1].type == "response.completed"
    return events[0].response.id, FULL


def responses_left(c: Any) -> tuple[str, Any]:
    with c.responses.create(**RESPONSE, stream=True) as stream:
        created = next(stream)
    return created.response.id, UNKNOWN


def responses_helper_iterated(c: Any) -> tuple[str, Any]:
    with c.responses.stream(**RESPONSE) as stream:
        assert isinstance(stream, openai.lib.streaming.responses.ResponseStream)
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text == TEXT
    return stream.get_final_response().id, FULL


def responses_helper_final(c: Any) -> tuple[str, Any]:
    with c.responses.stream(**RESPONSE) as stream:
        final = stream.get_final_response()
    assert final.output_text == TEXT
    return final.id, FULL


def responses_helper_until_done(c: Any) -> tuple[str, Any]:
    with c.responses.stream(**RESPONSE) as stream:
        assert stream.until_done() is stream
    return stream.get_final_response().id, FULL


def responses_helper_left(c: Any) -> tuple[str, Any]:
    with c.responses.stream(**RESPONSE) as stream:
        for event in stream:
            first = event
            break
    assert first.type == "response.created"
    return first.response.id, UNKNOWN


# Streams left before their first event: the request was made (the input is billed) and
# nothing came back, so the record names the model asked for under a fresh response id.


def chat_closed_unread(c: Any) -> tuple[None, Any]:
    c.chat.completions.create(**CHAT, stream=True).close()
    return None, UNKNOWN


def chat_dropped_unread(c: Any) -> tuple[None, Any]:
    stream = c.chat.completions.create(**CHAT, stream=True)
    del stream
    gc.collect()
    return None, UNKNOWN


def chat_helper_unread(c: Any) -> tuple[None, Any]:
    with c.chat.completions.stream(**CHAT):
        pass
    return None, UNKNOWN


def responses_closed_unread(c: Any) -> tuple[None, Any]:
    with c.responses.create(**RESPONSE, stream=True):
        pass
    return None, UNKNOWN


def responses_helper_unread(c: Any) -> tuple[None, Any]:
    with c.responses.stream(**RESPONSE):
        pass
    return None, UNKNOWN


OPENAI_SYNC: dict[str, tuple[Style, Tokens]] = {
    "chat stream=True, iterated": (chat_iterated, chat_tokens),
    "chat stream=True, break": (chat_left_by_break, chat_tokens),
    "chat stream=True, with block left": (chat_left_with_block, chat_tokens),
    "chat.completions.stream, iterated": (chat_helper_iterated, chat_tokens),
    "chat.completions.stream, get_final_completion": (chat_helper_final, chat_tokens),
    "chat.completions.stream, until_done": (chat_helper_until_done, chat_tokens),
    "chat.completions.stream, break": (chat_helper_left, chat_tokens),
    "responses stream=True, iterated": (responses_iterated, responses_tokens),
    "responses stream=True, left": (responses_left, responses_tokens),
    "responses.stream, iterated": (responses_helper_iterated, responses_tokens),
    "responses.stream, get_final_response": (responses_helper_final, responses_tokens),
    "responses.stream, until_done": (responses_helper_until_done, responses_tokens),
    "responses.stream, break": (responses_helper_left, responses_tokens),
    "chat stream=True, closed unread": (chat_closed_unread, chat_tokens),
    "chat stream=True, dropped unread": (chat_dropped_unread, chat_tokens),
    "chat.completions.stream, left unread": (chat_helper_unread, chat_tokens),
    "responses stream=True, left unread": (responses_closed_unread, responses_tokens),
    "responses.stream, left unread": (responses_helper_unread, responses_tokens),
}


@pytest.mark.usefixtures("configs")
@pytest.mark.parametrize("style", list(OPENAI_SYNC))
def test_openai_sync_stream_gives_one_record(
    style: str, collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    """openai.OpenAI: each stream shape and read style, exactly one record."""
    run, tokens = OPENAI_SYNC[style]
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        sent = len(openai_fake.requests)
        rid, expected = run(manager.client)
        assert len(openai_fake.requests) == sent + 1
    check(collector, tokens, expected, rid)


# -- openai, async ---------------------------------------------------------------------------


async def achat_iterated(c: Any) -> tuple[str, Any]:
    stream = await c.chat.completions.create(**CHAT, stream=True)
    assert isinstance(stream, openai.AsyncStream)
    chunks = [chunk async for chunk in stream]
    return chunks[0].id, FULL


async def achat_closed(c: Any) -> tuple[str, Any]:
    stream = await c.chat.completions.create(**CHAT, stream=True)
    first = await stream.__anext__()
    await stream.close()
    return first.id, UNKNOWN


async def achat_left_with_block(c: Any) -> tuple[str, Any]:
    async with await c.chat.completions.create(**CHAT, stream=True) as stream:
        first = await stream.__anext__()
    return first.id, UNKNOWN


async def achat_left_by_break(c: Any) -> tuple[str, Any]:
    stream = await c.chat.completions.create(**CHAT, stream=True)
    async for chunk in stream:
        first = chunk
        break
    del stream
    gc.collect()
    return first.id, UNKNOWN


async def achat_helper_iterated(c: Any) -> tuple[str, Any]:
    async with c.chat.completions.stream(**CHAT) as stream:
        assert isinstance(stream, openai.lib.streaming.chat.AsyncChatCompletionStream)
        async for _event in stream:
            pass
        final = await stream.get_final_completion()
    return final.id, FULL


async def achat_helper_final(c: Any) -> tuple[str, Any]:
    async with c.chat.completions.stream(**CHAT) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == TEXT
    return final.id, FULL


async def achat_helper_until_done(c: Any) -> tuple[str, Any]:
    async with c.chat.completions.stream(**CHAT) as stream:
        assert await stream.until_done() is stream
    return stream.current_completion_snapshot.id, FULL


async def achat_helper_left(c: Any) -> tuple[str, Any]:
    async with c.chat.completions.stream(**CHAT) as stream:
        async for event in stream:
            first = event
            break
    del stream
    gc.collect()  # the SDK's abandoned byte stream: finalized here, in this task's thread
    return first.chunk.id, UNKNOWN


async def aresponses_iterated(c: Any) -> tuple[str, Any]:
    events = [e async for e in await c.responses.create(**RESPONSE, stream=True)]
    return events[0].response.id, FULL


async def aresponses_left(c: Any) -> tuple[str, Any]:
    async with await c.responses.create(**RESPONSE, stream=True) as stream:
        created = await stream.__anext__()
    return created.response.id, UNKNOWN


async def aresponses_helper_iterated(c: Any) -> tuple[str, Any]:
    async with c.responses.stream(**RESPONSE) as stream:
        assert isinstance(stream, openai.lib.streaming.responses.AsyncResponseStream)
        types = [e.type async for e in stream]
    assert types[-1] == "response.completed"
    return (await stream.get_final_response()).id, FULL


async def aresponses_helper_final(c: Any) -> tuple[str, Any]:
    async with c.responses.stream(**RESPONSE) as stream:
        final = await stream.get_final_response()
    assert final.output_text == TEXT
    return final.id, FULL


async def aresponses_helper_until_done(c: Any) -> tuple[str, Any]:
    async with c.responses.stream(**RESPONSE) as stream:
        assert await stream.until_done() is stream
    return (await stream.get_final_response()).id, FULL


async def aresponses_helper_left(c: Any) -> tuple[str, Any]:
    async with c.responses.stream(**RESPONSE) as stream:
        async for event in stream:
            first = event
            break
    del stream
    gc.collect()  # the SDK's abandoned byte stream: finalized here, in this task's thread
    return first.response.id, UNKNOWN


async def achat_closed_unread(c: Any) -> tuple[None, Any]:
    await (await c.chat.completions.create(**CHAT, stream=True)).close()
    return None, UNKNOWN


async def achat_helper_unread(c: Any) -> tuple[None, Any]:
    async with c.chat.completions.stream(**CHAT):
        pass
    return None, UNKNOWN


async def aresponses_closed_unread(c: Any) -> tuple[None, Any]:
    async with await c.responses.create(**RESPONSE, stream=True):
        pass
    return None, UNKNOWN


async def aresponses_helper_unread(c: Any) -> tuple[None, Any]:
    async with c.responses.stream(**RESPONSE):
        pass
    return None, UNKNOWN


OPENAI_ASYNC: dict[str, tuple[AStyle, Tokens]] = {
    "chat stream=True, iterated": (achat_iterated, chat_tokens),
    "chat stream=True, closed": (achat_closed, chat_tokens),
    "chat stream=True, async with block left": (achat_left_with_block, chat_tokens),
    "chat stream=True, break": (achat_left_by_break, chat_tokens),
    "chat.completions.stream, iterated": (achat_helper_iterated, chat_tokens),
    "chat.completions.stream, get_final_completion": (achat_helper_final, chat_tokens),
    "chat.completions.stream, until_done": (achat_helper_until_done, chat_tokens),
    "chat.completions.stream, break": (achat_helper_left, chat_tokens),
    "responses stream=True, iterated": (aresponses_iterated, responses_tokens),
    "responses stream=True, left": (aresponses_left, responses_tokens),
    "responses.stream, iterated": (aresponses_helper_iterated, responses_tokens),
    "responses.stream, get_final_response": (aresponses_helper_final, responses_tokens),
    "responses.stream, until_done": (aresponses_helper_until_done, responses_tokens),
    "responses.stream, break": (aresponses_helper_left, responses_tokens),
    "chat stream=True, closed unread": (achat_closed_unread, chat_tokens),
    "chat.completions.stream, left unread": (achat_helper_unread, chat_tokens),
    "responses stream=True, left unread": (aresponses_closed_unread, responses_tokens),
    "responses.stream, left unread": (aresponses_helper_unread, responses_tokens),
}


@pytest.mark.anyio
@pytest.mark.usefixtures("configs")
@pytest.mark.parametrize("style", list(OPENAI_ASYNC))
async def test_openai_async_stream_gives_one_record(
    style: str, collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    """openai.AsyncOpenAI: each stream shape and read style, exactly one record."""
    run, tokens = OPENAI_ASYNC[style]
    async with (
        openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **connection) as manager,
    ):
        sent = len(openai_fake.requests)
        rid, expected = await run(manager.client)
        assert len(openai_fake.requests) == sent + 1
    check(collector, tokens, expected, rid)


# -- anthropic, sync -------------------------------------------------------------------------


def claude_iterated(c: Any) -> tuple[str, Any]:
    events = list(c.messages.create(**CLAUDE, stream=True))
    return events[0].message.id, CLAUDE_FULL


def claude_left(c: Any) -> tuple[str, Any]:
    stream = c.messages.create(**CLAUDE, stream=True)
    start = next(iter(stream))
    stream.close()
    return start.message.id, CLAUDE_EARLY


def claude_left_by_break(c: Any) -> tuple[str, Any]:
    stream = c.messages.create(**CLAUDE, stream=True)
    for event in stream:
        first = event
        break
    del stream
    gc.collect()
    return first.message.id, CLAUDE_EARLY


def claude_left_with_block(c: Any) -> tuple[str, Any]:
    with c.messages.create(**CLAUDE, stream=True) as stream:
        start = next(stream)
    return start.message.id, CLAUDE_EARLY


def claude_helper_iterated(c: Any) -> tuple[str, Any]:
    with c.messages.stream(**CLAUDE) as stream:
        assert isinstance(stream, anthropic.MessageStream)
        types = [event.type for event in stream]
    assert types[-1] == "message_stop"
    return stream.current_message_snapshot.id, CLAUDE_FULL


def claude_helper_text_stream(c: Any) -> tuple[str, Any]:
    with c.messages.stream(**CLAUDE) as stream:
        assert "".join(stream.text_stream) == CLAUDE_TEXT
    return stream.current_message_snapshot.id, CLAUDE_FULL


def claude_helper_final_message(c: Any) -> tuple[str, Any]:
    with c.messages.stream(**CLAUDE) as stream:
        final = stream.get_final_message()
    assert isinstance(final, anthropic.types.ParsedMessage)
    return final.id, CLAUDE_FULL


def claude_helper_final_text(c: Any) -> tuple[str, Any]:
    with c.messages.stream(**CLAUDE) as stream:
        assert stream.get_final_text() == CLAUDE_TEXT
    return stream.current_message_snapshot.id, CLAUDE_FULL


def claude_helper_until_done(c: Any) -> tuple[str, Any]:
    with c.messages.stream(**CLAUDE) as stream:
        assert stream.until_done() is None
    return stream.current_message_snapshot.id, CLAUDE_FULL


def claude_helper_left(c: Any) -> tuple[str, Any]:
    with c.messages.stream(**CLAUDE) as stream:
        for event in stream:
            first = event
            break
    return first.message.id, CLAUDE_EARLY


def claude_helper_text_left(c: Any) -> tuple[str, Any]:
    with c.messages.stream(**CLAUDE) as stream:
        for text in stream.text_stream:
            assert text == "Hello"
            break
    return stream.current_message_snapshot.id, CLAUDE_EARLY


def claude_beta_helper(c: Any) -> tuple[str, Any]:
    with c.beta.messages.stream(**CLAUDE) as stream:
        final = stream.get_final_message()
    return final.id, CLAUDE_FULL


def claude_closed_unread(c: Any) -> tuple[None, Any]:
    c.messages.create(**CLAUDE, stream=True).close()
    return None, UNKNOWN


def claude_helper_unread(c: Any) -> tuple[None, Any]:
    with c.messages.stream(**CLAUDE):
        pass
    return None, UNKNOWN


def claude_beta_helper_unread(c: Any) -> tuple[None, Any]:
    with c.beta.messages.stream(**CLAUDE):
        pass
    return None, UNKNOWN


CLAUDE_SYNC: dict[str, Style] = {
    "stream=True, iterated": claude_iterated,
    "stream=True, closed": claude_left,
    "stream=True, break": claude_left_by_break,
    "stream=True, with block left": claude_left_with_block,
    "messages.stream, iterated": claude_helper_iterated,
    "messages.stream, text_stream": claude_helper_text_stream,
    "messages.stream, get_final_message": claude_helper_final_message,
    "messages.stream, get_final_text": claude_helper_final_text,
    "messages.stream, until_done": claude_helper_until_done,
    "messages.stream, break": claude_helper_left,
    "messages.stream, text_stream break": claude_helper_text_left,
    "beta.messages.stream, get_final_message": claude_beta_helper,
    "stream=True, closed unread": claude_closed_unread,
    "messages.stream, left unread": claude_helper_unread,
    "beta.messages.stream, left unread": claude_beta_helper_unread,
}


@pytest.mark.usefixtures("configs")
@pytest.mark.parametrize("style", list(CLAUDE_SYNC))
def test_anthropic_sync_stream_gives_one_record(
    style: str,
    collector: LocalCollector,
    connection: dict[str, str],
    anthropic_fake: FakeAnthropic,
) -> None:
    """anthropic.Anthropic: each stream shape and read style, exactly one record."""
    with (
        anthropic.Anthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        CostManager(client, **connection) as manager,
    ):
        sent = len(anthropic_fake.requests)
        rid, expected = CLAUDE_SYNC[style](manager.client)
        assert len(anthropic_fake.requests) == sent + 1
    check(collector, claude_tokens, expected, rid)


# -- anthropic, async ------------------------------------------------------------------------


async def aclaude_iterated(c: Any) -> tuple[str, Any]:
    events = [e async for e in await c.messages.create(**CLAUDE, stream=True)]
    return events[0].message.id, CLAUDE_FULL


async def aclaude_helper_iterated(c: Any) -> tuple[str, Any]:
    async with c.messages.stream(**CLAUDE) as stream:
        assert isinstance(stream, anthropic.AsyncMessageStream)
        async for _event in stream:
            pass
    return stream.current_message_snapshot.id, CLAUDE_FULL


async def aclaude_helper_text_stream(c: Any) -> tuple[str, Any]:
    async with c.messages.stream(**CLAUDE) as stream:
        assert "".join([t async for t in stream.text_stream]) == CLAUDE_TEXT
    return stream.current_message_snapshot.id, CLAUDE_FULL


async def aclaude_helper_final_message(c: Any) -> tuple[str, Any]:
    async with c.messages.stream(**CLAUDE) as stream:
        final = await stream.get_final_message()
    return final.id, CLAUDE_FULL


async def aclaude_helper_final_text(c: Any) -> tuple[str, Any]:
    async with c.messages.stream(**CLAUDE) as stream:
        assert await stream.get_final_text() == CLAUDE_TEXT
    return stream.current_message_snapshot.id, CLAUDE_FULL


async def aclaude_helper_until_done(c: Any) -> tuple[str, Any]:
    async with c.messages.stream(**CLAUDE) as stream:
        await stream.until_done()
    return stream.current_message_snapshot.id, CLAUDE_FULL


async def aclaude_helper_left(c: Any) -> tuple[str, Any]:
    async with c.messages.stream(**CLAUDE) as stream:
        async for event in stream:
            first = event
            break
    return first.message.id, CLAUDE_EARLY


async def aclaude_helper_text_left(c: Any) -> tuple[str, Any]:
    async with c.messages.stream(**CLAUDE) as stream:
        async for text in stream.text_stream:
            assert text == "Hello"
            break
    return stream.current_message_snapshot.id, CLAUDE_EARLY


async def aclaude_left(c: Any) -> tuple[str, Any]:
    stream = await c.messages.create(**CLAUDE, stream=True)
    async for event in stream:
        first = event
        break
    await stream.close()
    return first.message.id, CLAUDE_EARLY


async def aclaude_left_with_block(c: Any) -> tuple[str, Any]:
    async with await c.messages.create(**CLAUDE, stream=True) as stream:
        start = await stream.__anext__()
    return start.message.id, CLAUDE_EARLY


async def aclaude_helper_final_then_left(c: Any) -> tuple[str, Any]:
    async with c.messages.stream(**CLAUDE) as stream:
        async for event in stream:
            first = event
            break
        final = await stream.get_final_message()  # reads the rest: the full usage
    assert final.id == first.message.id
    return final.id, CLAUDE_FULL


async def aclaude_beta_helper(c: Any) -> tuple[str, Any]:
    async with c.beta.messages.stream(**CLAUDE) as stream:
        final = await stream.get_final_message()
    return final.id, CLAUDE_FULL


async def aclaude_closed_unread(c: Any) -> tuple[None, Any]:
    await (await c.messages.create(**CLAUDE, stream=True)).close()
    return None, UNKNOWN


async def aclaude_helper_unread(c: Any) -> tuple[None, Any]:
    async with c.messages.stream(**CLAUDE):
        pass
    return None, UNKNOWN


CLAUDE_ASYNC: dict[str, AStyle] = {
    "stream=True, iterated": aclaude_iterated,
    "messages.stream, iterated": aclaude_helper_iterated,
    "messages.stream, text_stream": aclaude_helper_text_stream,
    "messages.stream, get_final_message": aclaude_helper_final_message,
    "messages.stream, get_final_text": aclaude_helper_final_text,
    "messages.stream, until_done": aclaude_helper_until_done,
    "messages.stream, break": aclaude_helper_left,
    "messages.stream, text_stream break": aclaude_helper_text_left,
    "stream=True, break then close": aclaude_left,
    "stream=True, async with block left": aclaude_left_with_block,
    "messages.stream, break then get_final_message": aclaude_helper_final_then_left,
    "beta.messages.stream, get_final_message": aclaude_beta_helper,
    "stream=True, closed unread": aclaude_closed_unread,
    "messages.stream, left unread": aclaude_helper_unread,
}


@pytest.mark.anyio
@pytest.mark.usefixtures("configs")
@pytest.mark.parametrize("style", list(CLAUDE_ASYNC))
async def test_anthropic_async_stream_gives_one_record(
    style: str,
    collector: LocalCollector,
    connection: dict[str, str],
    anthropic_fake: FakeAnthropic,
) -> None:
    """anthropic.AsyncAnthropic: each stream shape and read style, exactly one record."""
    async with (
        anthropic.AsyncAnthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, **connection) as manager,
    ):
        sent = len(anthropic_fake.requests)
        rid, expected = await CLAUDE_ASYNC[style](manager.client)
        assert len(anthropic_fake.requests) == sent + 1
    check(collector, claude_tokens, expected, rid)
