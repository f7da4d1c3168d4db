"""When configs come and go around calls: the built-in records while the manager has no
config for its ``api_id`` (still being fetched, or the service was down at startup), the
config as soon as it is loaded, and a call in flight when a config arrives is recorded
exactly once, by the config that is loaded when it ends. asyncio and trio."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest

from aicm import AsyncCostManager
from aicm.collector import Faults, LocalCollector
from tests.fakes import FakeOpenAI
from tests.providers.support import sdk_http, track_records
from tests.sdk_support import openai_configs
from tests.tracking_support import MESSAGES, usage_records

pytestmark = pytest.mark.anyio

ASYNC_HTTP = sdk_http(openai.DefaultAsyncHttpxClient)

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def _answer(request: Any) -> Any:
    if request.url.path.endswith("/embeddings"):
        body: dict[str, Any] = {
            "object": "list",
            "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    else:
        body = {
            "id": f"chatcmpl-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"},
                }
            ],
            "usage": USAGE,
        }
    return ASYNC_HTTP.Response(200, json=body)


@pytest.mark.parametrize("tracked_by_config", [True, False], ids=["chat", "embeddings"])
async def test_a_plain_call_in_flight_when_a_config_arrives_is_recorded_once(
    tracked_by_config: bool, collector: LocalCollector, connection: dict[str, str]
) -> None:
    """The call began under the built-in; when it returns, the config loaded meanwhile
    records it if it tracks the call (chat), else the built-in does (embeddings)."""
    entered, release = anyio.Event(), anyio.Event()

    async def provider(request: Any) -> Any:
        entered.set()
        await release.wait()
        return _answer(request)

    answers: list[Any] = []
    async with (
        openai.AsyncOpenAI(
            api_key="t",
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(
                transport=ASYNC_HTTP.MockTransport(provider)
            ),
        ) as client,
        AsyncCostManager(client, enforce_limits=False, **connection) as manager,
    ):
        assert manager.builtin.active(manager.extractor)

        async def call() -> None:
            if tracked_by_config:
                answers.append(await manager.client.chat.completions.create(**CHAT))
            else:
                answers.append(
                    await manager.client.embeddings.create(
                        model="text-embedding-3-small", input="hi"
                    )
                )

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await entered.wait()
            collector.set_configs(openai_configs("asyncopenai"))
            await manager.load_configs()
            release.set()
        # Loaded now: the built-in records no new call, even one the config does not list.
        assert not manager.should_track("embeddings.create")
        await manager.flush()
    if tracked_by_config:
        assert track_records(collector) == []
        [record] = usage_records(collector)
        assert record["response_id"] == answers[0].id
    else:
        assert usage_records(collector) == []
        [record] = track_records(collector)
        assert record["service_key"] == "openai::text-embedding-3-small"
        assert record["payload"] == {"prompt_tokens": 4, "total_tokens": 4}


async def test_a_stream_in_flight_when_a_config_arrives_is_recorded_once(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    async with (
        openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, enforce_limits=False, **connection) as manager,
    ):
        stream = await manager.client.chat.completions.create(
            **CHAT, stream=True, stream_options={"include_usage": True}
        )
        chunks = [await stream.__anext__()]
        collector.set_configs(openai_configs("asyncopenai"))
        await manager.load_configs()
        chunks += [chunk async for chunk in stream]
        # A call made now is the config's alone.
        later = await manager.client.chat.completions.create(**CHAT)
        await manager.flush()
    assert track_records(collector) == []
    records = usage_records(collector)
    assert sorted(r["response_id"] for r in records) == sorted([chunks[0].id, later.id])


async def test_builtin_records_while_configs_cannot_be_fetched_then_the_config_wins(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    """The service fails at startup: the built-in records the calls meanwhile (delivered
    once the service is back); once the background retry loads the config, it records."""
    collector.set_configs(openai_configs("asyncopenai"))
    collector.set_faults(Faults(failure_rate=1.0))
    async with (
        openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, enforce_limits=False, **connection) as manager,
    ):
        assert manager.extractor.configs == ()
        early = await manager.client.chat.completions.create(**CHAT)
        collector.set_faults(Faults())
        with anyio.fail_after(10):
            # The manager announces a loaded config only in its log: poll for it.
            while not manager.extractor.configs:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        late = await manager.client.chat.completions.create(**CHAT)
        await manager.flush()
    [built_in] = track_records(collector)
    assert built_in["response_id"] == early.id
    assert built_in["service_key"] == "openai::gpt-4o-mini"
    [configured] = usage_records(collector)
    assert configured["response_id"] == late.id
