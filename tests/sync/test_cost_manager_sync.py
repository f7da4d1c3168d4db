"""CostManager (sync facade): the real openai/anthropic sync clients against the fakes."""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from aicm import CostManager, HandlingConfigError
from aicm.collector import Faults, LocalCollector
from tests.fakes import FakeAnthropic, FakeOpenAI
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
    wait_until_sync,
)

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


@pytest.fixture(scope="module")
def openai_client(openai_fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    """A real openai.OpenAI pointed at the fake."""
    with openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def anthropic_client(anthropic_fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    """A real anthropic.Anthropic pointed at the fake."""
    with anthropic.Anthropic(base_url=anthropic_fake.url, api_key="t", max_retries=0) as client:
        yield client


@pytest.fixture
def llm_configs(collector: LocalCollector) -> None:
    """The collector serves the openai and anthropic handling configs (default api_ids)."""
    collector.set_configs(
        [
            service_config("openai", OPENAI_HANDLING, "openai-chat"),
            service_config("anthropic", ANTHROPIC_HANDLING, "anthropic-messages"),
        ]
    )


@pytest.mark.usefixtures("llm_configs")
def test_openai_create_and_streams(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.OpenAI
) -> None:
    """create, full, closed and left streams: one record each; answers equal direct ones."""
    with CostManager(openai_client, **connection) as tracker:
        assert isinstance(tracker.client, openai.OpenAI)
        assert tracker.api_id == "openai"
        result = tracker.client.chat.completions.create(**CHAT)
        assert same_answer(result, openai_client.chat.completions.create(**CHAT))
        chunks = list(tracker.client.chat.completions.create(**CHAT, **USAGE_STREAM))
        direct = list(openai_client.chat.completions.create(**CHAT, **USAGE_STREAM))
        assert all(same_answer(a, b) for a, b in zip(chunks, direct, strict=True))
        closed = tracker.client.chat.completions.create(**CHAT, **USAGE_STREAM)
        first = next(closed)
        closed.close()
        with tracker.client.chat.completions.create(**CHAT, **USAGE_STREAM) as left:
            second = next(iter(left))
    records = usage_records(collector)
    assert [r["response_id"] for r in records] == [result.id, chunks[0].id, first.id, second.id]
    assert all(r["model"] == "gpt-4o-mini" for r in records)
    assert [tokens(r) for r in records] == [
        OPENAI_TOKENS,
        OPENAI_TOKENS,
        (None, None),
        (None, None),
    ]


@pytest.mark.usefixtures("llm_configs")
def test_abandoned_stream_is_recorded_once(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.OpenAI
) -> None:
    """A stream left by `break` and dropped gives its one record when collected."""
    with CostManager(openai_client, **connection) as tracker:
        stream = tracker.client.chat.completions.create(**CHAT, **USAGE_STREAM)
        for _chunk in stream:
            break
        del stream
        gc.collect()
    assert len(usage_records(collector)) == 1


@pytest.mark.usefixtures("llm_configs")
def test_anthropic_create_stream_and_helper(
    collector: LocalCollector, connection: dict[str, str], anthropic_client: anthropic.Anthropic
) -> None:
    """messages.create, its raw stream, and the messages.stream helper read by text_stream."""
    with CostManager(anthropic_client, **connection) as tracker:
        message = tracker.client.messages.create(**CLAUDE)
        assert same_answer(message, anthropic_client.messages.create(**CLAUDE))
        events = list(tracker.client.messages.create(**CLAUDE, stream=True))
        with tracker.client.messages.stream(**CLAUDE) as stream:
            assert isinstance(stream, anthropic.MessageStream)
            text = "".join(stream.text_stream)
        raw = tracker.client.messages.create(**CLAUDE, stream=True)
        next(iter(raw))
        raw.close()
    assert text == "Hello from the fake Claude"
    records = usage_records(collector)
    assert records[0]["response_id"] == message.id
    assert records[1]["response_id"] == events[0].message.id
    assert [tokens(r) for r in records] == [ANTHROPIC_TOKENS] * 3 + [(25, 1)]
    assert {r["config_id"] for r in records} == {"anthropic-messages"}


@pytest.mark.usefixtures("llm_configs")
def test_customer_key_context_and_thread_local_scopes(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.OpenAI
) -> None:
    """Manager tags on every record; a scope in one thread does not leak into another."""
    with CostManager(
        openai_client, client_customer_key="acme", context={"env": "test"}, **connection
    ) as tracker:
        ready = threading.Event()
        go = threading.Event()

        def other_thread() -> None:
            ready.set()
            go.wait(5)
            tracker.client.chat.completions.create(**CHAT)

        thread = threading.Thread(target=other_thread)
        thread.start()
        ready.wait(5)
        with tracker.scope(client_customer_key="globex", context={"session": "s1"}):
            go.set()
            thread.join(5)
            tracker.client.chat.completions.create(**CHAT)
    tags = sorted(
        (r["client_customer_key"], json.dumps(r["context"])) for r in usage_records(collector)
    )
    assert tags == [
        ("acme", '{"env": "test"}'),
        ("globex", '{"env": "test", "session": "s1"}'),
    ]


def test_api_id_override_and_offline_file(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.OpenAI,
    tmp_path: Path,
) -> None:
    """api_id= picks the configs; configs= a JSON file works offline (no GET /configs)."""
    path = tmp_path / "configs.json"
    path.write_text(json.dumps([service_config("llm", OPENAI_HANDLING, "from-file")]), "utf-8")
    with CostManager(openai_client, api_id="llm", configs=str(path), **connection) as tracker:
        assert tracker.api_id == "llm"
        tracker.client.chat.completions.create(**CHAT)
    assert [r["config_id"] for r in usage_records(collector)] == ["from-file"]
    assert collector.stats()["requests"]["configs"] == {}


def test_malformed_offline_config_raises(
    connection: dict[str, str], openai_client: openai.OpenAI
) -> None:
    """A malformed offline handling config raises HandlingConfigError naming config and field."""
    bad = service_config("openai", {"tracked_methods": ["x"], "response_fields": [3]}, "bad")
    with pytest.raises(HandlingConfigError) as info:
        CostManager(openai_client, configs=[bad], **connection)
    assert (info.value.config_id, info.value.field) == ("bad", "response_fields[0]")


def test_malformed_service_config_is_skipped(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A malformed config from the service is skipped and logged; the good one tracks."""
    collector.set_configs(
        [
            service_config("openai", {"tracked_methods": []}, "empty"),
            service_config("openai", OPENAI_HANDLING, "good"),
        ]
    )
    with (
        caplog.at_level(logging.ERROR, logger="aicm"),
        CostManager(openai_client, **connection) as tracker,
    ):
        tracker.client.chat.completions.create(**CHAT)
    assert any(
        "'empty'" in r.getMessage() and "tracked_methods" in r.getMessage() for r in caplog.records
    )
    assert [r["config_id"] for r in usage_records(collector)] == ["good"]


@pytest.mark.usefixtures("llm_configs")
def test_failing_collector_and_closed_manager_leave_calls_intact(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.OpenAI
) -> None:
    """Delivery failing: calls return; after close: calls pass through untracked."""
    tracker = CostManager(openai_client, batch_interval=0.01, **connection)
    collector.set_faults(Faults(failure_rate=1.0))
    result = tracker.client.chat.completions.create(**CHAT)
    assert tracker.close(timeout=0.2) == 1
    collector.set_faults(Faults())
    after = tracker.client.chat.completions.create(**CHAT)
    with tracker.scope(client_customer_key="late"):
        tracker.client.chat.completions.create(**CHAT)
    assert result.usage is not None
    assert after.usage is not None
    assert usage_records(collector) == []
    assert tracker.closed


def test_service_down_at_startup_then_back(
    connection: dict[str, str], openai_client: openai.OpenAI
) -> None:
    """Configs retried in the background after a failed start; tracking begins once back."""
    service = LocalCollector().start()
    base = service.api_base
    service.stop()
    tracker = CostManager(openai_client, **{**connection, "aicm_api_base": base})
    try:
        early = tracker.client.chat.completions.create(**CHAT)  # the built-in records it
        service.start()
        service.set_configs([service_config("openai", OPENAI_HANDLING)])
        assert wait_until_sync(lambda: bool(tracker._async.extractor.configs))
        tracked = tracker.client.chat.completions.create(**CHAT)
        tracker.close()
        assert [r["response_id"] for r in usage_records(service)] == [tracked.id]
        assert [r["response_id"] for r in service.records("track")] == [early.id]
    finally:
        tracker.close()
        service.stop()


class _Calculator:
    """A client no built-in knows."""

    def add(self, a: int, b: int) -> int:
        return a + b


def test_a_client_with_no_config_warns_once(
    collector: LocalCollector,
    connection: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CostManager with no config for its api_id: one WARNING naming it, however many calls."""
    with (
        caplog.at_level(logging.INFO, logger="aicm"),
        CostManager(_Calculator(), **connection) as tracker,
    ):
        for _ in range(2):
            assert tracker.client.add(1, 2) == 3
        tracker.load_configs()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "no handling config for api_id '_calculator'" in warnings[0]
    assert usage_records(collector) == []


@pytest.mark.usefixtures("llm_configs")
def test_immediate_sends_from_the_callers_thread(
    collector: LocalCollector, connection: dict[str, str], openai_client: openai.OpenAI
) -> None:
    """IMMEDIATE: the record goes out from the caller's thread, as the sync Tracker's does,
    so a busy delivery loop does not hold the wrapped call back."""
    from aicm._delivery.worker import shared_runtime

    with CostManager(openai_client, delivery_type="immediate", **connection) as tracker:
        stuck, release = threading.Event(), threading.Event()

        def hold_the_loop() -> None:  # a plain function: it blocks the loop while it runs
            stuck.set()
            release.wait(6)

        holder = threading.Thread(target=shared_runtime().call, args=(hold_the_loop,))
        holder.start()
        try:
            assert stuck.wait(5)
            started = time.monotonic()
            result = tracker.client.chat.completions.create(**CHAT)
            took = time.monotonic() - started
            assert [r["response_id"] for r in usage_records(collector)] == [result.id]
            assert took < 4, took
        finally:
            release.set()
            holder.join()
        assert tracker.health().sent == 1
