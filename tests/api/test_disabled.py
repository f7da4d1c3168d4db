"""The kill switch (``disabled=True``, ``AICM_DISABLED=1``, ``disabled`` in the INI file): every
tracker, cost manager, REST wrapper and the OpenTelemetry processor accepts calls and does
nothing. Each test runs against the real local collector (which must see no request at all,
``/configs`` and ``/triggered-limits`` included), in a ``tmp_path`` holding the queue and log
paths (no file may appear), and compares ``threading.enumerate()`` before and after (no new
thread); wrapped clients still return the fake provider's real answer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import requests
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from aicm import (
    AsyncCostManager,
    AsyncRestUsageWrapper,
    AsyncTracker,
    ConfigError,
    CostManager,
    RecordResult,
    RestUsageWrapper,
    Tracker,
    get_global_delivery_health,
)
from aicm._providers.seen import SEEN
from aicm.collector import LocalCollector
from aicm.otel import AicmSpanProcessor
from tests.api.test_rest import SESSION_HANDLING
from tests.fakes import FakeHeyGen, FakeOpenAI
from tests.tracking_support import MESSAGES, OPENAI_HANDLING, host_of, service_config

DELIVERIES = ["immediate", "mem_queue", "persistent_queue"]
USAGE = {"input_tokens": 10, "output_tokens": 3}
CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
SESSION = {"session_id": "abc", "duration": 7}


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def heygen() -> Iterator[FakeHeyGen]:
    with FakeHeyGen(routes={"GET /v2/sessions/abc": (200, SESSION)}) as fake:
        yield fake


@pytest.fixture
def served(collector: LocalCollector, heygen: FakeHeyGen) -> LocalCollector:
    """The collector serves configs for every wrapper here: a request for them would be
    answered (and counted), so none may be asked."""
    collector.set_configs(
        [
            service_config("asyncopenai", OPENAI_HANDLING, "openai-chat"),
            service_config("openai", OPENAI_HANDLING, "openai-chat-sync"),
            service_config(host_of(heygen.url), SESSION_HANDLING, config_id="sessions"),
        ]
    )
    return collector


def options(collector: LocalCollector, tmp_path: Path, delivery: str) -> dict[str, Any]:
    """Options that would send, queue to a file and log to a file: all of it switched off."""
    return {
        "aicm_api_key": "test-key-0123456789abcdef",
        "aicm_api_base": collector.api_base,
        "delivery_type": delivery,
        "db_path": str(tmp_path / "queue.db"),
        "log_file": str(tmp_path / "aicm.log"),
        "log_level": "DEBUG",
        "disabled": True,
    }


class Quiet:
    """What must not change while aicm is switched off: the collector's requests and
    records, the files under ``tmp_path``, and the process's threads."""

    def __init__(self, collector: LocalCollector, tmp_path: Path) -> None:
        self.collector = collector
        self.tmp_path = tmp_path
        self.threads = set(threading.enumerate())
        self.files = self._files()
        self.engines = get_global_delivery_health().engines

    def _files(self) -> set[Path]:
        return set(self.tmp_path.rglob("*"))

    def requests(self) -> int:
        stats = self.collector.stats()
        asked = sum(sum(by_status.values()) for by_status in stats["requests"].values())
        received = sum(kind["received"] for kind in stats["records"].values())
        return int(asked + received)

    def check(self) -> None:
        assert self.requests() == 0, self.collector.stats()["requests"]
        assert self.collector.records("track") == []
        assert self.collector.records("track_usage") == []
        assert self._files() == self.files
        new = set(threading.enumerate()) - self.threads
        assert not new, [t.name for t in new]
        assert get_global_delivery_health().engines == self.engines


@pytest.fixture
def quiet(served: LocalCollector, tmp_path: Path) -> Callable[[], Quiet]:
    """Take the snapshot once the servers (and any warm-up call) are up."""
    return lambda: Quiet(served, tmp_path)


def is_disabled(result: RecordResult) -> bool:
    return result.status == "disabled" and not result.ok and bool(result.response_id)


# -- trackers ----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("delivery", DELIVERIES)
async def test_async_tracker(
    served: LocalCollector,
    tmp_path: Path,
    quiet: Callable[[], Quiet],
    openai_fake: FakeOpenAI,
    delivery: str,
) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="t", max_retries=0
    ) as client:
        answer = await client.chat.completions.create(**CHAT)  # warm-up: the user's own call
        watch = quiet()
        async with AsyncTracker(**options(served, tmp_path, delivery)) as tracker:
            result = await tracker.track("openai", "openai::gpt-4o-mini", USAGE, response_id="r1")
            assert is_disabled(result)
            assert result.response_id == "r1"
            batch = await tracker.track_batch(
                [{"api_id": "openai", "service_key": "openai::gpt-4o-mini", "usage": USAGE}] * 2
            )
            assert [r.status for r in batch] == ["disabled", "disabled"]
            assert await tracker.track_llm_usage("openai", answer) is answer
            assert answer.aicm_response_id == answer.id  # type: ignore[attr-defined]
            assert await tracker.flush(1.0) == 0
            health = tracker.health()
            assert (health.delivery_type, health.queued, health.sent) == ("disabled", 0, 0)
        # Without `async with` too (a queued tracker would otherwise ask for it).
        plain = AsyncTracker(**options(served, tmp_path, delivery))
        assert is_disabled(await plain.track("openai", "openai::gpt-4o-mini", USAGE))
        assert await plain.aclose() == 0
    watch.check()


@pytest.mark.anyio
async def test_async_tracker_for_a_config_asks_no_schema(
    served: LocalCollector, tmp_path: Path, quiet: Callable[[], Quiet]
) -> None:
    """The config form would load ``GET /configs``: turned off, usage goes unchecked."""
    watch = quiet()
    async with AsyncTracker("cfg", "svc", **options(served, tmp_path, "mem_queue")) as tracker:
        assert await tracker.load_schema() is None
        assert is_disabled(await tracker.track({"seconds": 3}))
    watch.check()


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_tracker(
    served: LocalCollector,
    tmp_path: Path,
    quiet: Callable[[], Quiet],
    openai_fake: FakeOpenAI,
    delivery: str,
) -> None:
    with openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client:
        answer = client.chat.completions.create(**CHAT)
        watch = quiet()
        with Tracker(**options(served, tmp_path, delivery)) as tracker:
            assert tracker.disabled
            assert is_disabled(tracker.track("openai", "openai::gpt-4o-mini", USAGE))
            batch = tracker.track_batch(
                [{"api_id": "openai", "service_key": "openai::gpt-4o-mini", "usage": USAGE}]
            )
            assert [r.status for r in batch] == ["disabled"]
            assert tracker.track_llm_usage("openai", answer) is answer
            stream = client.chat.completions.create(
                **CHAT, stream=True, stream_options={"include_usage": True}
            )
            chunks = list(tracker.track_llm_stream_usage("openai", stream))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
                "".join(openai_fake.pieces)
            )
            assert tracker.flush(1.0) == 0
            assert tracker.health().delivery_type == "disabled"
            assert tracker.dead_letters() == []
        assert tracker.close() == 0
    watch.check()


@pytest.mark.anyio
async def test_tracker_from_async_code(
    served: LocalCollector, tmp_path: Path, quiet: Callable[[], Quiet]
) -> None:
    """``create_async``, ``track_async`` and ``aclose`` would wait in a worker thread."""
    watch = quiet()
    tracker = await Tracker.create_async(**options(served, tmp_path, "immediate"))
    assert is_disabled(await tracker.track_async("openai", "openai::gpt-4o-mini", USAGE))
    assert await tracker.aclose() == 0
    watch.check()


def test_bad_input_is_still_refused(served: LocalCollector, tmp_path: Path) -> None:
    """A test run with aicm off catches the calls that would fail with it on."""
    with Tracker(**options(served, tmp_path, "immediate")) as tracker:
        with pytest.raises(TypeError, match="track"):
            tracker.track("openai", USAGE)  # type: ignore[call-overload]
        with pytest.raises(ConfigError):
            Tracker(disabled="maybe")  # type: ignore[arg-type]


# -- cost managers -------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("delivery", DELIVERIES)
async def test_async_cost_manager(
    served: LocalCollector,
    tmp_path: Path,
    quiet: Callable[[], Quiet],
    openai_fake: FakeOpenAI,
    delivery: str,
) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="t", max_retries=0
    ) as client:
        await client.chat.completions.create(**CHAT)
        watch = quiet()
        async with AsyncCostManager(client, **options(served, tmp_path, delivery)) as manager:
            assert manager.client is client  # no proxy: the call is the client's own
            with manager.scope(client_customer_key="acme"):
                answer = await manager.client.chat.completions.create(**CHAT)
            assert answer.choices[0].message.content == "".join(openai_fake.pieces)
            assert await manager.load_configs() == []
        # Used without `async with` as well.
        plain = AsyncCostManager(client, **options(served, tmp_path, delivery))
        assert (await plain.client.chat.completions.create(**CHAT)).usage is not None
        assert await plain.aclose() == 0
    watch.check()


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_cost_manager(
    served: LocalCollector,
    tmp_path: Path,
    quiet: Callable[[], Quiet],
    openai_fake: FakeOpenAI,
    delivery: str,
) -> None:
    with openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client:
        client.chat.completions.create(**CHAT)
        watch = quiet()
        with CostManager(client, **options(served, tmp_path, delivery)) as manager:
            assert manager.client is client
            answer = manager.client.chat.completions.create(**CHAT)
            assert answer.choices[0].message.content == "".join(openai_fake.pieces)
            stream = manager.client.chat.completions.create(
                **CHAT, stream=True, stream_options={"include_usage": True}
            )
            assert next(c for c in stream if not c.choices).usage.total_tokens == 17
            assert manager.load_configs() == []
            assert manager.flush() == 0
    watch.check()


# -- REST wrappers -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("delivery", DELIVERIES)
async def test_async_rest_wrapper(
    served: LocalCollector,
    tmp_path: Path,
    quiet: Callable[[], Quiet],
    heygen: FakeHeyGen,
    delivery: str,
) -> None:
    async with httpx.AsyncClient() as http:
        await http.get(f"{heygen.url}/v2/sessions/abc")
        watch = quiet()
        async with AsyncRestUsageWrapper(
            http, base_url=heygen.url, **options(served, tmp_path, delivery)
        ) as wrapper:
            answer = await wrapper.get("/v2/sessions/abc")  # relative: joined to base_url
            assert answer.json() == SESSION
        plain = AsyncRestUsageWrapper(
            http, base_url=heygen.url, **options(served, tmp_path, delivery)
        )
        assert (await plain.get(f"{heygen.url}/v2/sessions/abc")).json() == SESSION
        assert await plain.aclose() == 0
    watch.check()


@pytest.mark.parametrize("delivery", DELIVERIES)
@pytest.mark.parametrize("library", ["requests", "httpx"])
def test_rest_wrapper(
    served: LocalCollector,
    tmp_path: Path,
    quiet: Callable[[], Quiet],
    heygen: FakeHeyGen,
    delivery: str,
    library: str,
) -> None:
    session: Any = requests.Session() if library == "requests" else httpx.Client()
    with session:
        session.get(f"{heygen.url}/v2/sessions/abc")
        watch = quiet()
        with RestUsageWrapper(
            session, base_url=heygen.url, **options(served, tmp_path, delivery)
        ) as wrapper:
            assert wrapper.get("/v2/sessions/abc").json() == SESSION
    watch.check()


# -- OpenTelemetry ---------------------------------------------------------------------------


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_span_processor(
    served: LocalCollector,
    tmp_path: Path,
    quiet: Callable[[], Quiet],
    openai_fake: FakeOpenAI,
    delivery: str,
) -> None:
    provider = TracerProvider()
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    try:
        with openai.OpenAI(base_url=openai_fake.base_url, api_key="t", max_retries=0) as client:
            client.chat.completions.create(**CHAT)
            watch = quiet()
            processor = AicmSpanProcessor(hold=0.0, **options(served, tmp_path, delivery))
            provider.add_span_processor(processor)
            answer = client.chat.completions.create(**CHAT)
            assert answer.choices[0].message.content == "".join(openai_fake.pieces)
            assert processor.force_flush(1000)
            processor.shutdown()
            assert processor.counts == {}
            watch.check()
    finally:
        OpenAIInstrumentor().uninstrument()
        provider.shutdown()
    assert not SEEN.active


# -- where the switch is set --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "ini"),
    [
        ({"AICM_DISABLED": "1"}, None),
        ({"AICM_DISABLED": "TRUE"}, None),
        ({}, "[aicm]\naicm_disabled = yes\n"),
        ({}, "[aicm]\ndisabled = On\n"),
    ],
    ids=["env-1", "env-TRUE", "ini-aicm_disabled", "ini-disabled"],
)
def test_switched_on_by_environment_or_ini_without_an_api_key(
    collector: LocalCollector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    ini: str | None,
) -> None:
    """A CI job with no API key: nothing asks for one, every class is built and works."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if ini is not None:
        path = tmp_path / "AICM.INI"
        path.write_text(ini, encoding="utf-8")
        monkeypatch.setenv("AICM_INI_PATH", str(path))
    monkeypatch.setenv("AICM_API_BASE", collector.api_base)
    watch = Quiet(collector, tmp_path)
    with Tracker(delivery_type="persistent_queue") as tracker:
        assert is_disabled(tracker.track("openai", "openai::gpt-4o-mini", USAGE))
    with Tracker("cfg", "svc") as config_tracker:
        assert is_disabled(config_tracker.track({"seconds": 1}))
    with httpx.Client() as http:
        with CostManager(http) as manager:
            assert manager.client is http
        with RestUsageWrapper(http, base_url="https://api.example.com") as wrapper:
            assert wrapper.disabled
    watch.check()


@pytest.mark.parametrize("value", ["0", "false", "No", "OFF"])
def test_a_false_value_leaves_aicm_on(
    collector: LocalCollector,
    connection: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    """The control: with the switch off the same call reaches the collector."""
    monkeypatch.setenv("AICM_DISABLED", value)
    with Tracker(**connection) as tracker:
        assert not tracker.disabled
        assert tracker.track("openai", "openai::gpt-4o-mini", USAGE).ok
    assert len(collector.records("track")) == 1


@pytest.mark.parametrize("value", ["maybe", "2", "disabled"])
def test_a_bad_value_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AICM_DISABLED", value)
    with pytest.raises(ConfigError, match=rf"AICM_DISABLED must be true or false, got '{value}'"):
        Tracker()


def test_an_argument_overrides_the_environment(
    collector: LocalCollector, connection: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AICM_DISABLED", "1")
    with Tracker(disabled=False, **connection) as tracker:
        assert tracker.track("openai", "openai::gpt-4o-mini", USAGE).ok
    assert len(collector.records("track")) == 1
    monkeypatch.setenv("AICM_DISABLED", "0")
    with Tracker(disabled=True, **connection) as tracker:
        assert is_disabled(tracker.track("openai", "openai::gpt-4o-mini", USAGE))
    assert len(collector.records("track")) == 1


SCRIPT = """
import threading, httpx, requests
import aicm
from aicm._delivery.worker import shared_runtime

before = threading.active_count()
for delivery in ("immediate", "mem_queue", "persistent_queue"):
    with aicm.Tracker(delivery_type=delivery) as tracker:
        result = tracker.track("openai", "openai::gpt-4o-mini", {"input_tokens": 1})
        assert result.status == "disabled"
        assert tracker.flush() == 0
    with httpx.Client() as http, aicm.CostManager(http, delivery_type=delivery) as manager:
        assert manager.client is http
    with requests.Session() as session:
        with aicm.RestUsageWrapper(session, base_url="https://api.example.com") as wrapper:
            assert wrapper.disabled
assert not shared_runtime().running
print(before, threading.active_count())
"""


def test_a_process_using_only_sync_facades_starts_no_thread(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """In a fresh interpreter (in this one an earlier test may have started the worker): the
    shared delivery worker never starts, and the thread count stays where it was."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "AICM_DISABLED": "yes",
            "AICM_API_BASE": collector.api_base,
            "AICM_DB_PATH": str(tmp_path / "queue.db"),
            "AICM_LOG_FILE": str(tmp_path / "aicm.log"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.split()
    assert before == after == "1"
    assert list(tmp_path.iterdir()) == []
    assert Quiet(collector, tmp_path).requests() == 0
