"""Usage limits end to end on loopback: a service signing its limits, the real openai client
against the fake provider, trackers; on asyncio and trio."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import openai
import pytest
import requests

from aicm import (
    AsyncCostManager,
    AsyncRestUsageWrapper,
    AsyncTracker,
    CostManager,
    RestUsageWrapper,
    Tracker,
    UsageLimitExceeded,
)
from aicm._api import limits as guard_module
from aicm._core.settings import key_fingerprint
from aicm._io import limits_book
from tests.api.limits_support import LimitsService, fresh_key, keypair, limit, signed
from tests.fakes import FakeHeyGen, FakeOpenAI
from tests.tracking_support import (
    MESSAGES,
    OPENAI_HANDLING,
    SEED_004_HANDLING,
    host_of,
    netloc_of,
    service_config,
    wait_until_sync,
)

pytestmark = pytest.mark.anyio

CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    """A fake OpenAI API for the module."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def module_service() -> Iterator[LimitsService]:
    """One signing service for the module."""
    with LimitsService() as svc:
        yield svc


@pytest.fixture
def service(module_service: LimitsService) -> LimitsService:
    """The service, with no limits, no records, and the openai handling config."""
    module_service.answer = None
    module_service.records.clear()
    module_service.limit_requests = 0
    module_service.configs = [
        service_config("asyncopenai", OPENAI_HANDLING, "openai-chat"),
        service_config("openai", OPENAI_HANDLING, "openai-chat-sync"),
    ]
    return module_service


@pytest.fixture
async def openai_client(openai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    """A real openai.AsyncOpenAI pointed at the fake."""
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="test", max_retries=0
    ) as client:
        yield client


def limit_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNINGs aicm logged about usage limits."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "aicm.limits" and r.levelno == logging.WARNING
    ]


async def test_a_wrapped_client_is_refused_before_the_call_and_resumes_after_expiry(
    service: LimitsService, openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    """Calls go through until an answer carries the limit; the next call raises without
    reaching the provider, and calls resume once the limit's expires_at has passed."""
    key = fresh_key()
    async with AsyncCostManager(
        openai_client, aicm_api_key=key, aicm_api_base=service.api_base, batch_interval=0.05
    ) as tracker:
        await tracker.client.chat.completions.create(**CHAT)
        await tracker.flush()
        expires = time.time() + 1.5
        service.answer = signed([limit(key, service_key="openai::gpt-4o-mini", expires_at=expires)])
        await tracker.client.chat.completions.create(**CHAT)  # not known yet: goes through
        await tracker.flush()  # its answer carries the limit
        seen = len(openai_fake.requests)
        with pytest.raises(UsageLimitExceeded) as info:
            await tracker.client.chat.completions.create(**CHAT)
        assert len(openai_fake.requests) == seen  # the provider saw nothing
        assert info.value.limit_id == "lim-daily"
        assert info.value.limit_message == "Daily budget of $1 reached"
        assert info.value.matched["service_key"] == "openai::gpt-4o-mini"
        assert info.value.response_id is None
        assert "Daily budget of $1 reached" in str(info.value)
        assert tracker.health().limits_refused == 1
        # Another model is not covered by this service's limit.
        await tracker.client.chat.completions.create(**{**CHAT, "model": "gpt-4o"})
        await anyio.sleep(max(0.0, expires - time.time()) + 0.05)
        await tracker.client.chat.completions.create(**CHAT)
        assert len(openai_fake.requests) == seen + 2
    assert len(service.records) == 4


async def test_limits_are_fetched_at_start(
    service: LimitsService, openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    """A manager started while a limit is in force refuses its very first call."""
    key = fresh_key()
    service.answer = signed([limit(key)])
    async with AsyncCostManager(
        openai_client, aicm_api_key=key, aicm_api_base=service.api_base
    ) as tracker:
        seen = len(openai_fake.requests)
        with pytest.raises(UsageLimitExceeded):
            await tracker.client.chat.completions.create(**CHAT)
        assert len(openai_fake.requests) == seen
    assert service.limit_requests == 1


async def test_the_served_model_is_matched_too(
    service: LimitsService, openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    """A limit on the model that served a request covers requests for that requested model."""
    key = fresh_key()
    async with AsyncCostManager(
        openai_client, aicm_api_key=key, aicm_api_base=service.api_base
    ) as tracker:
        answer = await tracker.client.chat.completions.create(**CHAT)
        served = answer.model
        service.answer = signed([limit(key, service_key=f"openai::{served}-snapshot")])
        await tracker.client.chat.completions.create(**CHAT)
        await tracker.flush()
        await tracker.client.chat.completions.create(**CHAT)  # that model never served it
        tracker.limit_guard.after_call(CHAT, {"model": f"{served}-snapshot"})
        with pytest.raises(UsageLimitExceeded) as info:
            await tracker.client.chat.completions.create(**CHAT)
        assert info.value.matched["service_key"] == f"openai::{served}-snapshot"


async def test_a_key_without_a_dot_obeys_only_its_own_limits(
    service: LimitsService, openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    """A key with no dot is named by its fingerprint, as the local collector names it: a
    limit of another key in the answer never refuses its calls, its own does."""
    from aicm.collector._limits import api_key_id

    key = f"dotless-{uuid.uuid4().hex}"
    async with AsyncCostManager(
        openai_client, aicm_api_key=key, aicm_api_base=service.api_base
    ) as tracker:
        service.answer = signed([limit(fresh_key())])  # another API key's limit
        await tracker.client.chat.completions.create(**CHAT)
        await tracker.flush()
        await tracker.client.chat.completions.create(**CHAT)
        assert tracker.health().limits_refused == 0
        service.answer = signed([limit(fresh_key(), api_key_id=api_key_id(key))])
        await tracker.client.chat.completions.create(**CHAT)
        await tracker.flush()
        with pytest.raises(UsageLimitExceeded):
            await tracker.client.chat.completions.create(**CHAT)


@pytest.mark.parametrize("tampering", ["re-signed", "altered"])
async def test_a_pinned_key_and_a_tampered_payload_refuse_nothing_and_warn_once(
    service: LimitsService,
    openai_fake: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
    caplog: pytest.LogCaptureFixture,
    tampering: str,
) -> None:
    """A payload re-signed by a man in the middle (his public key in the answer) or altered
    after signing is ignored: nothing is refused, and one WARNING says so."""
    key = fresh_key()
    if tampering == "re-signed":
        service.answer = signed([limit(key)], signer=keypair("attacker"))
    else:
        answer = signed([limit(key)])
        head, body, sig = answer["encrypted_payload"].split(".")
        answer["encrypted_payload"] = f"{head}.{body[:-4]}AAAA.{sig}"
        service.answer = answer
    caplog.set_level(logging.WARNING, logger="aicm")
    async with AsyncCostManager(
        openai_client,
        aicm_api_key=key,
        aicm_api_base=service.api_base,
        limits_public_key=keypair().public_pem,
    ) as tracker:
        for _ in range(3):
            await tracker.client.chat.completions.create(**CHAT)
            await tracker.flush()
        assert tracker.health().limits_refused == 0
    warnings = limit_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "could not be verified" in warnings[0]


async def test_tracker_track_delivers_then_raises_with_the_response_id(
    service: LimitsService,
) -> None:
    """Tracker.track sends the record, and raises once the answer says a limit covers it."""
    key = fresh_key()
    service.answer = signed([limit(key, customer_key="acme")])
    async with AsyncTracker(aicm_api_key=key, aicm_api_base=service.api_base) as tracker:
        result = await tracker.track("openai", "gpt-4o-mini", {"input_tokens": 1})
        assert result.response_id  # another customer: not covered
        with pytest.raises(UsageLimitExceeded) as info:
            await tracker.track(
                "openai",
                "gpt-4o-mini",
                {"input_tokens": 1},
                client_customer_key="acme",
                response_id="resp-acme-1",
            )
        assert info.value.response_id == "resp-acme-1"
        assert info.value.matched["customer_key"] == "acme"
        assert tracker.health().limits_refused == 1
    assert [r["response_id"] for r in service.records][-1] == "resp-acme-1"


async def test_a_config_tracker_matches_its_service_id(service: LimitsService) -> None:
    """A /track-usage record is matched by its service_id and client_customer_key."""
    key = fresh_key()
    service.configs = [
        {"config_id": "avatar", "api_id": "heygen", "manual_usage_schema": {"minutes": "float"}}
    ]
    service.answer = signed([limit(key, service_key="streaming", customer_key="acme")])
    async with AsyncTracker(
        "avatar", "streaming", aicm_api_key=key, aicm_api_base=service.api_base
    ) as tracker:
        await tracker.track({"minutes": 1.5})  # no customer: not covered
        with pytest.raises(UsageLimitExceeded) as info:
            await tracker.track({"minutes": 2.0}, client_customer_key="acme", response_id="u-2")
        assert info.value.response_id == "u-2"
        assert info.value.matched == {"service_key": "streaming", "customer_key": "acme"}
    assert [r["response_id"] for r in service.records][-1] == "u-2"


async def test_a_tracker_with_enforcement_off_never_raises(service: LimitsService) -> None:
    """Tracker(enforce_limits=False) delivers and returns as if no limit were in force."""
    key = fresh_key()
    service.answer = signed([limit(key)])
    async with AsyncTracker(
        aicm_api_key=key, aicm_api_base=service.api_base, enforce_limits=False
    ) as tracker:
        for n in range(2):
            result = await tracker.track("openai", "gpt-4o-mini", {"n": n})
            assert result.ok
        assert tracker.health().limits_refused == 0
    assert len(service.records) == 2


def test_a_sync_queued_tracker_raises_after_queueing(service: LimitsService) -> None:
    """The sync Tracker's memory queue path checks too: the record is queued, then raises."""
    key = fresh_key()
    with Tracker(
        aicm_api_key=key, aicm_api_base=service.api_base, delivery_type="mem_queue"
    ) as tracker:
        tracker.track("openai", "gpt-4o-mini", {"n": 1})
        service.answer = signed([limit(key, service_key="openai::gpt-4o-mini")])
        tracker.flush()
        with pytest.raises(UsageLimitExceeded) as info:
            tracker.track("openai", "gpt-4o-mini", {"n": 2}, response_id="queued-2")
        assert info.value.response_id == "queued-2"
        tracker.track("anthropic", "claude-sonnet", {"n": 3})  # another service
        tracker.flush()
    assert [r["response_id"] for r in service.records][1] == "queued-2"
    assert len(service.records) == 3


async def test_alerts_never_raise_and_warn_once_per_event(
    service: LimitsService, openai_client: openai.AsyncOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``alert`` limit logs one WARNING per event and refuses nothing."""
    key = fresh_key()
    service.answer = signed([limit(key, threshold_type="alert", limit_message="80% spent")])
    caplog.set_level(logging.WARNING, logger="aicm")
    async with AsyncCostManager(
        openai_client, aicm_api_key=key, aicm_api_base=service.api_base
    ) as tracker:
        for _ in range(3):
            await tracker.client.chat.completions.create(**CHAT)
            await tracker.flush()
    warnings = limit_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "80% spent" in warnings[0]


async def test_enforcement_off_lets_calls_through_with_one_warning(
    service: LimitsService,
    openai_fake: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AICM_ENFORCE_LIMITS=0: a hard limit is reported once, never enforced."""
    key = fresh_key()
    monkeypatch.setenv("AICM_ENFORCE_LIMITS", "0")
    caplog.set_level(logging.WARNING, logger="aicm")
    async with AsyncCostManager(
        openai_client, aicm_api_key=key, aicm_api_base=service.api_base
    ) as tracker:
        await tracker.client.chat.completions.create(**CHAT)
        service.answer = signed([limit(key)])
        await tracker.flush()
        seen = len(openai_fake.requests)
        for _ in range(3):
            await tracker.client.chat.completions.create(**CHAT)
        assert len(openai_fake.requests) == seen + 3
        assert tracker.health().limits_refused == 0
    warnings = limit_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "not enforced" in warnings[0]


def _assert_limits_stored_without_the_key(db: Path, key: str) -> None:
    """The file names the key by a one-way fingerprint: the key itself is never stored."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(f"SELECT key_fp, answer FROM {limits_book._TABLE}").fetchall()
    assert [fp for fp, _ in rows] == [key_fingerprint(key)]
    assert key not in rows[0][1]
    for f in db.parent.glob(db.name + "*"):
        assert key.encode() not in f.read_bytes(), f


async def test_a_persistent_queue_shares_limits_with_other_processes(
    service: LimitsService, tmp_path: Path
) -> None:
    """Limits one process learns are in the queue file; another process sharing it reads
    and verifies them there, without asking the service."""
    key = fresh_key()
    db = tmp_path / "queue.db"
    async with AsyncTracker(
        aicm_api_key=key,
        aicm_api_base=service.api_base,
        delivery_type="persistent_queue",
        db_path=str(db),
        batch_interval=0.05,
    ) as tracker:
        await tracker.track("openai", "gpt-4o-mini", {"input_tokens": 1})
        service.answer = signed([limit(key)])
        await tracker.flush()
        with pytest.raises(UsageLimitExceeded):
            await tracker.track("openai", "gpt-4o-mini", {"input_tokens": 1})
        await tracker.flush()
    _assert_limits_stored_without_the_key(db, key)
    requests_before = service.limit_requests
    code = (
        "import json, sys\n"
        "from aicm._core.settings import resolve_settings\n"
        "from aicm._io.limits_book import limit_book\n"
        "s = resolve_settings(api_key=sys.argv[1], api_base=sys.argv[2])\n"
        "book = limit_book(s)\n"
        "book.share_through(__import__('pathlib').Path(sys.argv[3]))\n"
        "print(json.dumps([l.limit_id for l in book.limits]))\n"
    )
    out = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-c", code, key, service.api_base, str(db)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    )
    assert json.loads(out.stdout) == ["lim-daily"]
    assert service.limit_requests == requests_before
    assert "answer" not in out.stderr


def test_a_sync_cost_manager_refuses_in_the_callers_thread(
    service: LimitsService, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync facade over a sync openai client refuses before the call (and asks the
    service again from the worker), then resumes once the limit expires."""
    monkeypatch.setattr(guard_module, "REFRESH_AFTER", 0.0)
    key = fresh_key()
    client = openai.OpenAI(base_url=openai_fake.base_url, api_key="test", max_retries=0)
    with CostManager(client, aicm_api_key=key, aicm_api_base=service.api_base) as tracker:
        tracker.client.chat.completions.create(**CHAT)
        expires = time.time() + 1.0
        service.answer = signed([limit(key, expires_at=expires)])
        tracker.client.chat.completions.create(**CHAT)
        tracker.flush()
        seen = len(openai_fake.requests)
        with pytest.raises(UsageLimitExceeded) as info:
            tracker.client.chat.completions.create(**CHAT)
        assert info.value.response_id is None
        assert len(openai_fake.requests) == seen
        assert tracker.health().limits_refused == 1
        assert wait_until_sync(lambda: service.limit_requests == 2)  # at start, after refusal
        time.sleep(max(0.0, expires - time.time()) + 0.05)
        tracker.client.chat.completions.create(**CHAT)
        assert len(openai_fake.requests) == seen + 1
    client.close()


async def test_without_pyjwt_limits_are_not_enforced_and_one_warning_says_so(
    service: LimitsService,
    openai_fake: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the limits extra missing, calls go through and one WARNING names the extra."""
    monkeypatch.setitem(sys.modules, "jwt", None)  # `import jwt` raises ImportError
    monkeypatch.setattr(limits_book, "_unavailable_warned", False)
    key = fresh_key()
    service.answer = signed([limit(key)])
    caplog.set_level(logging.WARNING, logger="aicm")
    async with AsyncCostManager(
        openai_client, aicm_api_key=key, aicm_api_base=service.api_base
    ) as tracker:
        seen = len(openai_fake.requests)
        for _ in range(2):
            await tracker.client.chat.completions.create(**CHAT)
            await tracker.flush()
        assert len(openai_fake.requests) == seen + 2
    warnings = limit_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "NOT enforced" in warnings[0]
    assert "aicm-sdk[limits]" in warnings[0]


def test_import_aicm_does_not_load_jwt() -> None:
    """pyjwt and cryptography load only when a payload is verified."""
    code = "import sys, aicm; print('jwt' in sys.modules, 'cryptography' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "False"]


async def test_get_triggered_limits_returns_the_document_and_adopts_its_limits(
    service: LimitsService,
) -> None:
    """The management client's get_triggered_limits gives the service's document as sent, and
    every tracker of that service and key in the process enforces the limits in it at once
    (a memory-queue tracker's first record raises, before any answer of its own)."""
    from aicm import AsyncCostManagerClient, DeliveryType

    key = fresh_key()
    service.answer = signed([limit(key)])
    async with AsyncCostManagerClient(aicm_api_key=key, aicm_api_base=service.api_base) as client:
        document = await client.get_triggered_limits()
    assert document == {"triggered_limits": service.answer}
    async with AsyncTracker(
        aicm_api_key=key, aicm_api_base=service.api_base, delivery_type=DeliveryType.MEM_QUEUE
    ) as tracker:
        with pytest.raises(UsageLimitExceeded) as info:
            await tracker.track("openai", "gpt-4o-mini", {"input_tokens": 1}, response_id="r-1")
        assert info.value.response_id == "r-1"
    assert [r["response_id"] for r in service.records] == ["r-1"]


@pytest.fixture(scope="module")
def heygen() -> Iterator[FakeHeyGen]:
    """A HeyGen-like REST API, its streaming.list tracked by seed 004's config."""
    with FakeHeyGen() as fake:
        yield fake


@pytest.mark.parametrize("flavour", ["httpx.AsyncClient", "requests.Session"])
async def test_a_rest_wrapper_is_refused_before_the_request(
    service: LimitsService, heygen: FakeHeyGen, flavour: str
) -> None:
    """A hard limit on the whole key refuses the next tracked REST request before it is sent
    (the API never sees it); a request no config tracks is sent as before."""
    key = fresh_key()
    service.configs = [service_config(host_of(heygen.url), SEED_004_HANDLING)]
    connection = {"aicm_api_key": key, "aicm_api_base": service.api_base}

    if flavour == "httpx.AsyncClient":
        async with (
            httpx.AsyncClient() as client,
            AsyncRestUsageWrapper(client, base_url=heygen.url, **connection) as wrapper,
        ):
            await wrapper.get("/v2/streaming.list")
            service.answer = signed([limit(key)])
            await wrapper.flush()  # its answer carries the limit
            seen = len(heygen.requests)
            with pytest.raises(UsageLimitExceeded) as info:
                await wrapper.get("/v2/streaming.list")
            assert len(heygen.requests) == seen
            assert info.value.matched["service_key"] == f"{netloc_of(heygen.url)}/v2/streaming.list"
            assert (await wrapper.get("/v2/untracked")).status_code == 404
            assert wrapper.health().limits_refused == 1
    else:

        def sync_calls() -> UsageLimitExceeded:
            with (
                requests.Session() as session,
                RestUsageWrapper(session, base_url=heygen.url, **connection) as wrapper,
            ):
                wrapper.get("/v2/streaming.list")
                service.answer = signed([limit(key)])
                wrapper.flush()
                seen = len(heygen.requests)
                with pytest.raises(UsageLimitExceeded) as refused:
                    wrapper.get("/v2/streaming.list")
                assert len(heygen.requests) == seen
                assert wrapper.get("/v2/untracked").status_code == 404
                return refused.value

        exceeded = await anyio.to_thread.run_sync(sync_calls)
        assert exceeded.limit_id == "lim-daily"
    assert len(service.records) == 2  # the two sessions of the one request sent


@pytest.mark.parametrize("flavour", ["httpx.AsyncClient", "requests.Session"])
async def test_a_new_rest_wrapper_refuses_its_first_request(
    service: LimitsService, heygen: FakeHeyGen, flavour: str
) -> None:
    """The service already reports a hard limit on the key: a REST wrapper just started
    (it asked GET /triggered-limits as it started) refuses its first tracked request."""
    key = fresh_key()
    service.configs = [service_config(host_of(heygen.url), SEED_004_HANDLING)]
    service.answer = signed([limit(key)])
    connection = {"aicm_api_key": key, "aicm_api_base": service.api_base}
    seen = len(heygen.requests)

    if flavour == "httpx.AsyncClient":
        async with (
            httpx.AsyncClient() as client,
            AsyncRestUsageWrapper(client, base_url=heygen.url, **connection) as wrapper,
        ):
            with pytest.raises(UsageLimitExceeded) as info:
                await wrapper.get("/v2/streaming.list")
        exceeded = info.value
    else:

        def sync_calls() -> UsageLimitExceeded:
            with (
                requests.Session() as session,
                RestUsageWrapper(session, base_url=heygen.url, **connection) as wrapper,
                pytest.raises(UsageLimitExceeded) as refused,
            ):
                wrapper.get("/v2/streaming.list")
            return refused.value

        exceeded = await anyio.to_thread.run_sync(sync_calls)
    assert exceeded.limit_id == "lim-daily"
    assert len(heygen.requests) == seen
    assert service.records == []
    assert service.limit_requests == 1
