"""The OpenTelemetry GenAI bridge end to end: the real ``openai`` client, instrumented by the
real ``opentelemetry-instrumentation-openai-v2``, against the fake OpenAI server; the spans
recorded by ``AicmSpanProcessor`` land in the local collector as the built-in's records, with
every delivery type; a call also seen by a wrapped client makes one record."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import openai
import pytest
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from aicm import AsyncCostManager, CostManager, Tracker
from aicm._providers.normalize import normalize_usage
from aicm._providers.seen import SEEN
from aicm.collector import LocalCollector
from aicm.otel import AicmSpanProcessor
from tests.fakes import FakeOpenAI
from tests.providers.support import one_track, track_records
from tests.tracking_support import MESSAGES

#: What the built-in tracking records for one chat call of the fake (see
#: tests/providers/test_builtin_openai_anthropic.py); the span gives the same counts.
BUILTIN_CHAT_USAGE = {
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


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """A tracer provider the openai package is instrumented for, for this test only."""
    tracer_provider = TracerProvider()
    OpenAIInstrumentor().instrument(tracer_provider=tracer_provider)
    try:
        yield tracer_provider
    finally:
        OpenAIInstrumentor().uninstrument()
        tracer_provider.shutdown()
    assert not SEEN.active  # every processor stopped: nothing is kept


def received(collector: LocalCollector) -> int:
    """How many /track records the collector was sent (it drops repeated response ids
    itself, so the records it holds cannot show a duplicate the SDK sent)."""
    count: int = collector.stats()["records"]["track"]["received"]
    return count


def bridge(provider: TracerProvider, **options: Any) -> AicmSpanProcessor:
    processor = AicmSpanProcessor(**options)
    provider.add_span_processor(processor)
    return processor


@pytest.mark.parametrize("delivery", ["immediate", "mem_queue", "persistent_queue"])
def test_instrumented_openai_calls_are_recorded_as_the_builtin_does(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    provider: TracerProvider,
    tmp_path: Path,
    delivery: str,
) -> None:
    db = {"db_path": str(tmp_path / "q.db")} if delivery == "persistent_queue" else {}
    processor = bridge(provider, delivery_type=delivery, hold=0.0, **connection, **db)
    with openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client:
        chat = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed = [chunk.id for chunk in stream]
        client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    processor.shutdown()  # records what is held, delivers, closes the tracker it built
    records = {r["service_key"] + "/" + r["response_id"]: r for r in track_records(collector)}
    assert len(records) == 3, records
    call = records[f"openai::gpt-4o-mini/{chat.id}"]
    assert call["payload"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    assert normalize_usage("openai", call["payload"]) == normalize_usage(
        "openai", BUILTIN_CHAT_USAGE
    )
    assert records[f"openai::gpt-4o-mini/{streamed[0]}"]["payload"] == call["payload"]
    (embedding,) = [r for k, r in records.items() if "embedding" in k]
    # Exactly the built-in's record of an embeddings call (no completion tokens).
    assert embedding["payload"] == {"prompt_tokens": 12, "total_tokens": 12}
    assert processor.counts == {"recorded": 3}


@pytest.mark.anyio
async def test_async_instrumented_calls_are_recorded(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    provider: TracerProvider,
    anyio_backend: str,
) -> None:
    with Tracker(delivery_type="mem_queue", **connection) as tracker:
        processor = bridge(provider, tracker=tracker)
        async with openai.AsyncOpenAI(
            base_url=openai_fake.base_url, api_key="t", max_retries=0
        ) as client:
            chat = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert await anyio.to_thread.run_sync(processor.force_flush)
        record = one_track(collector)
        assert (record["service_key"], record["response_id"]) == ("openai::gpt-4o", chat.id)
        processor.shutdown()
        assert not tracker.closed  # a tracker passed in stays the caller's


def test_a_call_seen_by_a_wrapped_client_and_a_span_is_one_record(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    provider: TracerProvider,
) -> None:
    """The span ends first (inside the call); the wrapped client's record, with its customer
    key, wins; the held span sees the id taken and records nothing."""
    processor = bridge(provider, delivery_type="mem_queue", **connection)
    with (
        openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        CostManager(client, client_customer_key="acme", **connection) as manager,
    ):
        chat = manager.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = manager.client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed = {chunk.id for chunk in stream}
    processor.shutdown()
    records = track_records(collector)
    assert sorted(r["response_id"] for r in records) == sorted([chat.id, *streamed])
    assert all(r["customer_key"] == "acme" for r in records)
    assert records[0]["payload"] == BUILTIN_CHAT_USAGE  # the wrapped client's own record
    assert processor.counts == {"duplicate": 2}
    assert received(collector) == 2


def test_a_span_recorded_first_leaves_the_wrapped_client_nothing_to_add(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    provider: TracerProvider,
) -> None:
    processor = bridge(provider, delivery_type="immediate", hold=0.0, **connection)
    with openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client:
        chat = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert processor.force_flush()
        # The same answer reaching the built-in record path later (a wrapped client, or
        # track_llm_usage) is already recorded.
        with Tracker(**connection) as tracker:
            tracker.track_llm_usage("openai", chat)
    processor.shutdown()
    assert one_track(collector)["response_id"] == chat.id
    assert "customer_key" not in one_track(collector)
    assert received(collector) == 1


@pytest.mark.anyio
async def test_async_wrapped_and_instrumented_call_is_one_record(
    collector: LocalCollector,
    connection: dict[str, str],
    openai_fake: FakeOpenAI,
    provider: TracerProvider,
    anyio_backend: str,
) -> None:
    processor = bridge(provider, delivery_type="mem_queue", **connection)
    async with (
        openai.AsyncOpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client,
        AsyncCostManager(client, client_customer_key="acme", **connection) as manager,
    ):
        chat = await manager.client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    await anyio.to_thread.run_sync(processor.shutdown)
    record = one_track(collector)
    assert (record["response_id"], record["customer_key"]) == (chat.id, "acme")
    assert received(collector) == 1
    assert processor.counts == {"duplicate": 1}


def test_other_spans_are_ignored_and_bad_ones_counted_and_logged_once(
    collector: LocalCollector,
    connection: dict[str, str],
    provider: TracerProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    processor = bridge(provider, delivery_type="mem_queue", hold=0.0, **connection)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /") as span:
        span.set_attribute("http.method", "GET")
    with tracer.start_as_current_span("chat failed") as span:
        # A GenAI call that failed reports no usage: nothing to bill.
        span.set_attributes({"gen_ai.provider.name": "openai", "gen_ai.request.model": "m"})
    bad = (
        {"gen_ai.request.model": "c", "gen_ai.usage.input_tokens": "12"},  # not a count
        {"gen_ai.request.model": "c", "gen_ai.usage.input_tokens": -1},
        {"gen_ai.request.model": "", "gen_ai.usage.input_tokens": 1},
        {"gen_ai.usage.output_tokens": 1},  # no model
    )
    with caplog.at_level(logging.WARNING, logger="aicm"):
        for attributes in bad:
            with tracer.start_as_current_span("chat") as span:
                span.set_attributes({"gen_ai.system": "anthropic", **attributes})  # type: ignore[arg-type]
        # The older attribute names still make a record.
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes(
                {
                    "gen_ai.system": "anthropic",
                    "gen_ai.request.model": "claude-x",
                    "gen_ai.usage.prompt_tokens": 30,
                    "gen_ai.usage.completion_tokens": 4,
                    "gen_ai.usage.cache_read_input_tokens": 10,
                    "gen_ai.response.id": "msg_old_names",
                }
            )
    processor.shutdown()
    assert processor.counts == {"invalid": 4, "recorded": 1}
    warnings = [r for r in caplog.records if r.name == "aicm.otel"]
    assert len(warnings) == 1
    assert "gen_ai.usage.input_tokens" in warnings[0].getMessage()
    record = one_track(collector)
    assert record["service_key"] == "anthropic::claude-x"
    assert record["payload"] == {
        "input_tokens": 20,
        "output_tokens": 4,
        "cache_read_input_tokens": 10,
    }


def test_options_are_checked(connection: dict[str, str]) -> None:
    with Tracker(**connection) as tracker:
        with pytest.raises(TypeError, match="not both"):
            AicmSpanProcessor(tracker, delivery_type="mem_queue")
        with pytest.raises(TypeError, match=r"aicm\.Tracker"):
            AicmSpanProcessor(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="hold"):
            AicmSpanProcessor(tracker, hold=-1)
    assert not SEEN.active


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_records_its_own_spans_not_the_parents(
    collector: LocalCollector, connection: dict[str, str], provider: TracerProvider
) -> None:
    processor = bridge(provider, delivery_type="mem_queue", hold=60.0, **connection)
    tracer = provider.get_tracer("test")

    def chat(response_id: str) -> None:
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes(
                {
                    "gen_ai.provider.name": "openai",
                    "gen_ai.response.model": "gpt-4o",
                    "gen_ai.response.id": response_id,
                    "gen_ai.usage.input_tokens": 3,
                    "gen_ai.usage.output_tokens": 1,
                }
            )

    chat("held-by-the-parent")  # held for a minute: still in the parent's memory at the fork
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            chat("made-in-the-child")
            processor.shutdown()
            code = 0 if processor.counts == {"recorded": 1} else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [r["response_id"] for r in track_records(collector)] == ["made-in-the-child"]
    processor.shutdown()
    assert sorted(r["response_id"] for r in track_records(collector)) == [
        "held-by-the-parent",
        "made-in-the-child",
    ]


def test_calls_that_cannot_be_held_or_taken_are_counted_not_raised(
    collector: LocalCollector, connection: dict[str, str], provider: TracerProvider
) -> None:
    tracker = Tracker(delivery_type="mem_queue", **connection)
    processor = bridge(provider, tracker=tracker, hold=60.0, max_pending=1)
    tracer = provider.get_tracer("test")
    for i in range(3):
        with tracer.start_as_current_span("chat") as span:
            span.set_attributes(
                {
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.id": f"call-{i}",
                    "gen_ai.usage.input_tokens": 1,
                }
            )
    assert processor.counts == {"pending_full": 2}
    tracker.close()  # the held call now finds the tracker closed
    processor.shutdown()
    assert processor.counts == {"pending_full": 2, "failed": 1}
    assert track_records(collector) == []
