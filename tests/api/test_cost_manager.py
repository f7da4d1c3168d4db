"""AsyncCostManager: the real openai/anthropic async clients against the fakes, records at the
collector, on asyncio and trio."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import anyio
import anyio.to_thread
import openai
import pytest

from aicm import AsyncCostManager, CostManagerConfig, HandlingConfigError, QueueStoreError
from aicm.collector import Faults, LocalCollector
from tests.fakes import FAIL_MODEL, FakeAnthropic, FakeOpenAI
from tests.tracking_support import (
    ANTHROPIC_HANDLING,
    ANTHROPIC_TOKENS,
    MESSAGES,
    OPENAI_HANDLING,
    OPENAI_TOKENS,
    same_answer,
    service_config,
    tokens,
    usage_records,
    wait_until,
)

pytestmark = pytest.mark.anyio

USAGE_STREAM: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}
CLAUDE = {"model": "claude-test-model", "max_tokens": 64, "messages": MESSAGES}


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
async def openai_client(openai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    """A real openai.AsyncOpenAI pointed at the fake."""
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def anthropic_client(
    anthropic_fake: FakeAnthropic,
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """A real anthropic.AsyncAnthropic pointed at the fake."""
    async with anthropic.AsyncAnthropic(
        base_url=anthropic_fake.url, api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def llm_configs(collector: LocalCollector) -> None:
    """The collector serves the openai and anthropic handling configs (default api_ids)."""
    collector.set_configs(
        [
            service_config("asyncopenai", OPENAI_HANDLING, "openai-chat"),
            service_config("asyncanthropic", ANTHROPIC_HANDLING, "anthropic-messages"),
        ]
    )


# -- openai ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("llm_configs")
async def test_openai_create_is_tracked_and_untouched(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """create(): the same answer as a direct call, one record with model and tokens."""
    async with AsyncCostManager(openai_client, **connection) as tracker:
        assert isinstance(tracker.client, openai.AsyncOpenAI)
        assert tracker.wrapped is openai_client
        result = await tracker.client.chat.completions.create(**CHAT)
        direct = await openai_client.chat.completions.create(**CHAT)
    assert type(result) is type(direct)
    assert same_answer(result, direct)
    [record] = usage_records(collector)
    assert record["config_id"] == "openai-chat"
    assert record["response_id"] == result.id
    assert (record["service_id"], record["model"]) == ("gpt-4o-mini", "gpt-4o-mini")
    assert tokens(record) == OPENAI_TOKENS
    assert record["timestamp"].endswith("Z")


@pytest.mark.usefixtures("llm_configs")
async def test_openai_stream_gives_one_record(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """A full stream: every chunk reaches the caller untouched; one record with its usage."""
    async with AsyncCostManager(openai_client, **connection) as tracker:
        stream = await tracker.client.chat.completions.create(**CHAT, **USAGE_STREAM)
        assert isinstance(stream, openai.AsyncStream)
        chunks = [chunk async for chunk in stream]
        direct = [
            c async for c in await openai_client.chat.completions.create(**CHAT, **USAGE_STREAM)
        ]
    assert len(chunks) == len(direct) == 8
    assert all(same_answer(a, b) for a, b in zip(chunks, direct, strict=True))
    [record] = usage_records(collector)
    assert record["response_id"] == chunks[0].id
    assert record["model"] == "gpt-4o-mini"
    assert tokens(record) == OPENAI_TOKENS


@pytest.mark.usefixtures("llm_configs")
async def test_openai_stream_stopped_early_gives_one_record(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """Closed or left early: one record each, without usage (OpenAI sends it last)."""
    async with AsyncCostManager(openai_client, **connection) as tracker:
        stream = await tracker.client.chat.completions.create(**CHAT, **USAGE_STREAM)
        first = await stream.__anext__()
        await stream.close()
        async with await tracker.client.chat.completions.create(**CHAT, **USAGE_STREAM) as entered:
            second = await entered.__anext__()
    records = usage_records(collector)
    assert [r["response_id"] for r in records] == [first.id, second.id]
    for record in records:
        assert record["model"] == "gpt-4o-mini"
        assert tokens(record) == (None, None)


async def test_provider_errors_propagate_untracked(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    llm_configs: None,
) -> None:
    """An API error reaches the caller as the SDK's own exception; nothing is recorded."""
    async with AsyncCostManager(openai_client, **connection) as tracker:
        with pytest.raises(openai.BadRequestError):
            await tracker.client.chat.completions.create(model=FAIL_MODEL, messages=MESSAGES)
    assert usage_records(collector) == []


# -- anthropic ------------------------------------------------------------------------------


@pytest.mark.usefixtures("llm_configs")
async def test_anthropic_create_stream_and_helper(
    collector: LocalCollector,
    connection: dict[str, str],
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    """create, create(stream=True) and the messages.stream helper: one full record each."""
    async with AsyncCostManager(anthropic_client, **connection) as tracker:
        assert isinstance(tracker.client, anthropic.AsyncAnthropic)
        message = await tracker.client.messages.create(**CLAUDE)
        direct = await anthropic_client.messages.create(**CLAUDE)
        events = [e async for e in await tracker.client.messages.create(**CLAUDE, stream=True)]
        async with tracker.client.messages.stream(**CLAUDE) as stream:
            assert isinstance(stream, anthropic.AsyncMessageStream)
            final = await stream.get_final_message()
    assert same_answer(message, direct)
    assert events[0].type == "message_start"
    assert final.content[0].text == "Hello from the fake Claude"
    records = usage_records(collector)
    assert [r["response_id"] for r in records] == [message.id, events[0].message.id, final.id]
    for record in records:
        assert record["config_id"] == "anthropic-messages"
        assert record["model"] == "claude-test-model"
        assert tokens(record) == ANTHROPIC_TOKENS


@pytest.mark.usefixtures("llm_configs")
async def test_anthropic_streams_stopped_early(
    collector: LocalCollector,
    connection: dict[str, str],
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    """A raw stream closed and a helper left after message_start: usage so far, once each."""
    async with AsyncCostManager(anthropic_client, **connection) as tracker:
        raw = await tracker.client.messages.create(**CLAUDE, stream=True)
        start = await raw.__anext__()
        await raw.close()
        async with tracker.client.messages.stream(**CLAUDE) as stream:
            async for event in stream:
                assert event.type == "message_start"
                break
    records = usage_records(collector)
    assert len(records) == 2
    assert records[0]["response_id"] == start.message.id
    assert [tokens(r) for r in records] == [(25, 1), (25, 1)]


# -- who, what, where -------------------------------------------------------------------------


@pytest.mark.usefixtures("llm_configs")
async def test_customer_key_and_context_per_manager_and_scope(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """Manager tags every record; a scope overrides the key, merges context, then ends."""
    async with AsyncCostManager(
        openai_client, client_customer_key="acme", context={"env": "test"}, **connection
    ) as tracker:
        await tracker.client.chat.completions.create(**CHAT)
        with tracker.scope(client_customer_key="globex", context={"session": "s1"}):
            await tracker.client.chat.completions.create(**CHAT)
            with tracker.scope(context={"step": 2}):
                await tracker.client.chat.completions.create(**CHAT)
        await tracker.client.chat.completions.create(**CHAT)
    tags = [(r["client_customer_key"], r["context"]) for r in usage_records(collector)]
    assert tags == [
        ("acme", {"env": "test"}),
        ("globex", {"env": "test", "session": "s1"}),
        ("globex", {"env": "test", "session": "s1", "step": 2}),
        ("acme", {"env": "test"}),
    ]


async def test_scopes_are_task_local(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    llm_configs: None,
) -> None:
    """Concurrent tasks each see their own scope."""

    async def call_as(tracker: AsyncCostManager[openai.AsyncOpenAI], key: str) -> None:
        with tracker.scope(client_customer_key=key):
            await anyio.sleep(0.01)
            await tracker.client.chat.completions.create(**CHAT)

    async with (
        AsyncCostManager(openai_client, **connection) as tracker,
        anyio.create_task_group() as tg,
    ):
        for key in ("a", "b", "c"):
            tg.start_soon(call_as, tracker, key)
    keys = sorted(r["client_customer_key"] for r in usage_records(collector))
    assert keys == ["a", "b", "c"]


async def test_mapped_customer_key_is_not_overridden(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """A config that maps client_customer_key itself gets the same value, once."""
    handling = json.loads(json.dumps(OPENAI_HANDLING))
    handling["payload_mapping"]["customer"] = "client_customer_key"
    collector.set_configs([service_config("asyncopenai", handling)])
    async with AsyncCostManager(openai_client, client_customer_key="acme", **connection) as t:
        await t.client.chat.completions.create(**CHAT)
    [record] = usage_records(collector)
    assert (record["customer"], record["client_customer_key"]) == ("acme", "acme")
    assert "context" not in record


async def test_api_id_default_and_override(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """api_id is the class name lower-cased unless given; configs are asked for that api_id."""
    collector.set_configs([service_config("my-llm", OPENAI_HANDLING, "mine")])
    async with AsyncCostManager(openai_client, **connection) as default:
        assert default.api_id == "asyncopenai"
        await default.client.chat.completions.create(**CHAT)
    async with AsyncCostManager(openai_client, api_id="my-llm", **connection) as named:
        assert named.api_id == "my-llm"
        await named.client.chat.completions.create(**CHAT)
    assert [r["config_id"] for r in usage_records(collector)] == ["mine"]
    with pytest.raises(TypeError, match="api_id"):
        AsyncCostManager(openai_client, api_id="", **connection)


async def test_offline_configs_from_a_list_and_a_file(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    tmp_path: Path,
) -> None:
    """configs= a list, or a JSON file path: no GET /configs, records delivered."""
    configs = [service_config("asyncopenai", OPENAI_HANDLING, "offline")]
    path = tmp_path / "configs.json"
    path.write_text(json.dumps({"service_configs": configs}), encoding="utf-8")
    for source in (configs, str(path)):
        async with AsyncCostManager(openai_client, configs=source, **connection) as tracker:
            assert tracker.config_source.offline
            await tracker.client.chat.completions.create(**CHAT)
    assert [r["config_id"] for r in usage_records(collector)] == ["offline", "offline"]
    assert collector.stats()["requests"]["configs"] == {}


async def test_calls_outside_the_manager_pass_through_untracked(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    llm_configs: None,
) -> None:
    """Before `async with` and after it, calls work and nothing is recorded."""
    tracker = AsyncCostManager(openai_client, **connection)
    before = await tracker.client.chat.completions.create(**CHAT)
    async with tracker:
        await tracker.client.chat.completions.create(**CHAT)
    after = await tracker.client.chat.completions.create(**CHAT)
    assert before.usage is not None
    assert after.usage is not None
    assert len(usage_records(collector)) == 1
    assert tracker.closed


async def test_sync_client_called_from_a_worker_thread(
    collector: LocalCollector, connection: dict[str, str], openai_fake: FakeOpenAI
) -> None:
    """A sync openai.OpenAI inside AsyncCostManager, called via to_thread, is recorded."""
    collector.set_configs([service_config("openai", OPENAI_HANDLING)])
    with openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client:
        async with AsyncCostManager(client, delivery_type="immediate", **connection) as tracker:
            result = await anyio.to_thread.run_sync(
                lambda: tracker.client.chat.completions.create(**CHAT)
            )
            tracker.client.chat.completions.create(**CHAT)  # from the loop's thread
    assert result.usage.total_tokens == 17
    assert [tokens(r) for r in usage_records(collector)] == [OPENAI_TOKENS] * 2


async def test_persistent_queue_delivery(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    llm_configs: None,
    tmp_path: Path,
) -> None:
    """PERSISTENT_QUEUE: records go through the SQLite file and reach the collector."""
    db_path = str(tmp_path / "queue.db")
    async with AsyncCostManager(
        openai_client, delivery_type="persistent_queue", db_path=db_path, **connection
    ) as tracker:
        result = await tracker.client.chat.completions.create(**CHAT)
        assert await tracker.flush(5) == 0
    assert [r["response_id"] for r in usage_records(collector)] == [result.id]


# -- nothing that goes wrong reaches the call --------------------------------------------------


async def test_failing_collector_leaves_results_intact(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    llm_configs: None,
) -> None:
    """With every collector request failing, calls return their answers; records wait."""
    async with AsyncCostManager(openai_client, batch_interval=0.01, **connection) as tracker:
        collector.set_faults(Faults(failure_rate=1.0))
        results = [await tracker.client.chat.completions.create(**CHAT) for _ in range(3)]
        stream = await tracker.client.chat.completions.create(**CHAT, **USAGE_STREAM)
        assert len([c async for c in stream]) == 8
        assert await wait_until(lambda: tracker.health().retried > 0)
        assert await tracker.aclose(timeout=0.2) == 4
    assert all(r.usage.total_tokens == 17 for r in results)
    assert usage_records(collector) == []
    assert tracker.health().discarded == {"closed": 4}


async def test_full_queue_never_reaches_the_call(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    llm_configs: None,
) -> None:
    """A full queue with the `raise` policy drops the record (counted), not the call."""
    async with AsyncCostManager(
        openai_client, queue_size=1, delivery_on_full="raise", batch_interval=5, **connection
    ) as tracker:
        for _ in range(3):
            assert (await tracker.client.chat.completions.create(**CHAT)).usage is not None
    assert tracker.health().discarded == {"queue_error": 2}
    assert len(usage_records(collector)) == 1


async def test_malformed_config_from_the_service_is_skipped_and_logged(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A malformed service config is skipped and logged (config, field); the good one tracks."""
    bad = {"tracked_methods": ["chat.completions.create"], "payload_mapping": {"x": "nowhere"}}
    collector.set_configs(
        [
            service_config("asyncopenai", bad, "broken"),
            service_config("asyncopenai", OPENAI_HANDLING, "good"),
            {"config_id": "manual", "api_id": "asyncopenai", "manual_usage_schema": {"n": "int"}},
        ]
    )
    with caplog.at_level(logging.ERROR, logger="aicm"):
        async with AsyncCostManager(openai_client, **connection) as tracker:
            assert [c.config_id for c in tracker.extractor.configs] == ["good"]
            await tracker.client.chat.completions.create(**CHAT)
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "'broken'" in error
    assert "payload_mapping.x" in error
    assert [r["config_id"] for r in usage_records(collector)] == ["good"]


async def test_malformed_offline_config_raises_naming_config_and_field(
    connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """Offline, a malformed handling config raises HandlingConfigError when the manager is built."""
    bad = service_config("asyncopenai", {"tracked_methods": "create"}, "offline-bad")
    with pytest.raises(HandlingConfigError) as info:
        AsyncCostManager(openai_client, configs=[bad], **connection)
    assert info.value.config_id == "offline-bad"
    assert info.value.field == "tracked_methods"
    with pytest.raises(HandlingConfigError):
        CostManagerConfig(configs=[bad])


async def test_unresolved_extractor_path_leaves_the_call_intact(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """A mapping path that does not resolve is left out of the record; the call is untouched."""
    handling = json.loads(json.dumps(OPENAI_HANDLING))
    handling["payload_mapping"]["cost"] = "usage_data.no.such.field"
    handling["payload_mapping"]["region"] = "response_data.model.region"
    collector.set_configs([service_config("asyncopenai", handling)])
    async with AsyncCostManager(openai_client, **connection) as tracker:
        result = await tracker.client.chat.completions.create(**CHAT)
    assert result.choices[0].message.content == "Hello from the fake OpenAI"
    [record] = usage_records(collector)
    assert "cost" not in record
    assert "region" not in record
    assert tokens(record) == OPENAI_TOKENS


async def test_service_down_at_startup_then_back(
    connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """Configs failing at startup are retried in the background; the config takes over once
    back, and the calls made before are recorded by the built-in OpenAI tracking."""
    service = LocalCollector().start()
    base = service.api_base
    service.stop()  # the port is remembered: start() comes back on it
    options = {**connection, "aicm_api_base": base}
    async with AsyncCostManager(openai_client, **options) as tracker:
        early = await tracker.client.chat.completions.create(**CHAT)
        service.start()
        try:
            service.set_configs([service_config("asyncopenai", OPENAI_HANDLING)])
            assert await wait_until(lambda: bool(tracker.extractor.configs))
            tracked = await tracker.client.chat.completions.create(**CHAT)
            await tracker.aclose()
            records = usage_records(service)
            builtin = service.records("track")
        finally:
            service.stop()
    assert [r["response_id"] for r in records] == [tracked.id]
    assert [r["response_id"] for r in builtin] == [early.id]


async def test_closing_cancels_the_config_retry(
    connection: dict[str, str], openai_client: openai.AsyncOpenAI
) -> None:
    """A manager closed while configs are still being retried closes promptly and cleanly."""
    service = LocalCollector().start()
    base = service.api_base
    service.stop()
    with anyio.fail_after(3):
        async with AsyncCostManager(openai_client, **{**connection, "aicm_api_base": base}):
            pass


async def test_missing_api_key_raises_at_start(openai_client: openai.AsyncOpenAI) -> None:
    """Without an API key the manager says so when started, instead of retrying forever."""
    from aicm import MissingApiKeyError

    with pytest.raises(MissingApiKeyError):
        async with AsyncCostManager(openai_client, aicm_api_base="http://127.0.0.1:9"):
            pass


async def test_close_does_not_wait_past_its_deadline_for_a_hung_service(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    llm_configs: None,
) -> None:
    """IMMEDIATE sends stuck on a hung collector are given up at the close deadline."""
    async with AsyncCostManager(openai_client, delivery_type="immediate", **connection) as tracker:
        # Fails after the delay, so the late answer stores nothing in the next test.
        collector.set_faults(Faults(latency=1.0, failure_rate=1.0))
        result = await tracker.client.chat.completions.create(**CHAT)
        with anyio.fail_after(2):
            assert await tracker.aclose(timeout=0.3) == 1
    assert result.usage is not None
    assert tracker.health().discarded == {"closed": 1}


async def test_an_error_in_the_body_propagates_as_itself(connection: dict[str, str]) -> None:
    """An exception raised inside ``async with AsyncCostManager`` is not an ExceptionGroup."""

    class Calculator:
        def add(self, a: int, b: int) -> int:
            return a + b

    with pytest.raises(ValueError, match="boom"):
        async with AsyncCostManager(Calculator(), configs=[], **connection):
            raise ValueError("boom")


async def test_a_failed_start_raises_the_error_itself(
    connection: dict[str, str], tmp_path: Path
) -> None:
    """A corrupt queue file at entry raises QueueStoreError itself, not an ExceptionGroup."""
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"not a database" * 100)

    class Calculator:
        def add(self, a: int, b: int) -> int:
            return a + b

    manager = AsyncCostManager(
        Calculator(),
        configs=[],
        delivery_type="persistent_queue",
        db_path=str(db),
        **connection,
    )
    with pytest.raises(QueueStoreError):
        async with manager:
            pass


# -- never silent ------------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("aicm")
    ]


class _Calculator:
    """A client no built-in knows."""

    def add(self, a: int, b: int) -> int:
        return a + b


async def test_a_client_with_no_config_warns_once(
    collector: LocalCollector,
    connection: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No config for the api_id: one WARNING naming it and the fixes, not one per reload."""
    collector.set_configs([service_config("someone-else", OPENAI_HANDLING)])
    with caplog.at_level(logging.INFO, logger="aicm"):
        async with AsyncCostManager(_Calculator(), **connection) as tracker:
            assert tracker.client.add(1, 2) == 3
            await tracker.load_configs()
    [warning] = _warnings(caplog)
    assert "'_calculator'" in warning
    assert "configs=" in warning
    assert "api_id=" in warning
    assert usage_records(collector) == []


async def test_a_tracked_call_without_a_record_warns_once_per_method(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A config that yields nothing: one WARNING per method naming config and paths, then DEBUG."""
    handling = json.loads(json.dumps(OPENAI_HANDLING))
    handling["list_path"] = "data.items"
    handling["tracked_methods"] = ["chat.completions.create", "responses.create"]
    collector.set_configs([service_config("asyncopenai", handling, "listy")])
    with caplog.at_level(logging.DEBUG, logger="aicm"):
        async with AsyncCostManager(openai_client, **connection) as tracker:
            for _ in range(3):
                await tracker.client.chat.completions.create(**CHAT)
            stream = await tracker.client.chat.completions.create(**CHAT, **USAGE_STREAM)
            assert len([c async for c in stream]) == 8
            await tracker.client.responses.create(model="gpt-4o-mini", input="Say hello")
    [chat, responses] = [w for w in _warnings(caplog) if "gave no usage record" in w]
    assert "chat.completions.create" in chat
    assert "responses.create" in responses
    for warning in (chat, responses):
        assert "config 'listy'" in warning
        assert "list_path 'data.items' did not resolve to a list" in warning
    quiet = [
        r
        for r in caplog.records
        if r.levelno == logging.DEBUG and "gave no usage record" in r.getMessage()
    ]
    assert len(quiet) == 3  # the later calls and the stream of the same method
    assert usage_records(collector) == []


async def test_a_payload_that_cannot_be_recorded_names_what_did_not_resolve(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.AsyncOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A payload the record refuses: the WARNING names the config and its unresolved paths."""
    handling = json.loads(json.dumps(OPENAI_HANDLING))
    handling["payload_mapping"]["response_id"] = "usage_data"  # an object, not an id
    handling["payload_mapping"]["cost"] = "usage_data.no_such_field"
    collector.set_configs([service_config("asyncopenai", handling, "odd")])
    with caplog.at_level(logging.WARNING, logger="aicm"):
        async with AsyncCostManager(openai_client, **connection) as tracker:
            await tracker.client.chat.completions.create(**CHAT)
    [warning] = [w for w in _warnings(caplog) if "gave no usage record" in w]
    assert "config 'odd'" in warning
    assert "not recordable" in warning
    assert "cost <- usage_data.no_such_field" in warning
    assert usage_records(collector) == []
