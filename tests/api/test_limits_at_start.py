"""A tracker learns the limits in force as it starts (GET /triggered-limits, in the
background): against the local collector, asyncio and trio, and the sync twin."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from aicm import AsyncTracker, Tracker, UsageLimitExceeded
from aicm.collector import LocalCollector
from tests.api.limits_support import fresh_key

# gpt-5-mini's default price at the collector: 2.5e-07 $ per input token, so 4,000,000
# input tokens cost the whole dollar of the limit.
DOLLAR_OF_TOKENS = 4_000_000
SERVICE = "openai::gpt-5-mini"


def _trigger_elsewhere(
    collector: LocalCollector, key: str, *, service_key: str | None = SERVICE
) -> dict[str, Any]:
    """A one-dollar daily hard limit on ``service_key`` (None: every service) for ``key``,
    reached by a record another process sent (plain HTTP: nothing in this process hears
    the answer)."""
    limit = collector.add_limit(
        threshold_type="limit",
        amount=1,
        period="day",
        service_key=service_key,
        limit_message="daily budget",
    )
    record = {
        "service_key": SERVICE,
        "response_id": f"elsewhere-{key[-8:]}",
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "payload": {"input_tokens": DOLLAR_OF_TOKENS},
    }
    answer = httpx.post(
        collector.url + "/track",
        json={"tracked": [record]},
        headers={"Authorization": f"Bearer {key}"},
    )
    answer.raise_for_status()
    assert answer.json()["triggered_limits"], "the collector did not trigger the limit"
    return limit


def _asked(collector: LocalCollector) -> int:
    return sum(collector.stats()["requests"]["triggered_limits"].values())


@pytest.mark.anyio
async def test_a_new_memory_queue_tracker_raises_from_its_first_track(
    collector: LocalCollector, anyio_backend: str
) -> None:
    """The service already reports a hard limit for the key: a tracker just started refuses
    its very first record (which is still delivered), as every later one."""
    key = fresh_key()
    limit = _trigger_elsewhere(collector, key)
    async with AsyncTracker(
        aicm_api_key=key,
        aicm_api_base=collector.api_base,
        limits_public_key=collector.public_key,
        delivery_type="mem_queue",
        batch_interval=0.05,
    ) as tracker:
        with pytest.raises(UsageLimitExceeded) as info:
            await tracker.track("openai", "gpt-5-mini", {"input_tokens": 1}, response_id="first-1")
        assert info.value.response_id == "first-1"
        assert info.value.limit_id == limit["uuid"]
        assert tracker.health().limits_refused == 1
    delivered = [r["response_id"] for r in collector.records("track")]
    assert "first-1" in delivered
    assert _asked(collector) == 1


def test_a_new_sync_tracker_raises_from_its_first_track(collector: LocalCollector) -> None:
    """The sync twin, on the process's shared worker."""
    key = fresh_key()
    limit = _trigger_elsewhere(collector, key)
    with Tracker(
        aicm_api_key=key,
        aicm_api_base=collector.api_base,
        limits_public_key=collector.public_key,
        delivery_type="mem_queue",
        batch_interval=0.05,
    ) as tracker:
        with pytest.raises(UsageLimitExceeded) as info:
            tracker.track("openai", "gpt-5-mini", {"input_tokens": 1}, response_id="sync-first")
        assert info.value.response_id == "sync-first"
        assert info.value.limit_id == limit["uuid"]
    assert "sync-first" in [r["response_id"] for r in collector.records("track")]


@pytest.mark.anyio
async def test_a_new_config_tracker_raises_from_its_first_track(
    collector: LocalCollector, anyio_backend: str
) -> None:
    """A memory-queue tracker built for a config (a /track-usage record) learns the limit as
    it starts."""
    key = fresh_key()
    collector.set_configs(
        [{"config_id": "avatar", "api_id": "heygen", "manual_usage_schema": {"minutes": "float"}}]
    )
    _trigger_elsewhere(collector, key, service_key=None)
    async with AsyncTracker(
        "avatar",
        "streaming",
        aicm_api_key=key,
        aicm_api_base=collector.api_base,
        limits_public_key=collector.public_key,
        delivery_type="mem_queue",
    ) as tracker:
        with pytest.raises(UsageLimitExceeded) as info:
            await tracker.track({"minutes": 1.5}, response_id="u-1")
        assert info.value.response_id == "u-1"
    assert "u-1" in [r["response_id"] for r in collector.records("track_usage")]


@pytest.mark.anyio
async def test_trackers_of_one_key_ask_once_while_the_answer_is_fresh(
    collector: LocalCollector, anyio_backend: str
) -> None:
    """A second tracker (any delivery) of the same service and key, started right after the
    first, uses the limits the first one fetched: the service is asked once."""
    key = fresh_key()
    _trigger_elsewhere(collector, key)
    options: dict[str, Any] = {
        "aicm_api_key": key,
        "aicm_api_base": collector.api_base,
        "limits_public_key": collector.public_key,
    }
    async with AsyncTracker(**options):
        pass
    async with AsyncTracker(delivery_type="immediate", **options) as second:
        with pytest.raises(UsageLimitExceeded):
            await second.track("openai", "gpt-5-mini", {"input_tokens": 1})
    assert _asked(collector) == 1


@pytest.mark.anyio
async def test_enforcement_off_never_asks(collector: LocalCollector, anyio_backend: str) -> None:
    """With enforce_limits=False the start sends no GET /triggered-limits."""
    async with AsyncTracker(
        aicm_api_key=fresh_key(), aicm_api_base=collector.api_base, enforce_limits=False
    ):
        pass
    assert _asked(collector) == 0


@pytest.fixture
def silent_service() -> Iterator[str]:
    """The API base of a service that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        port = server.getsockname()[1]
        yield f"http://127.0.0.1:{port}/api/v1"


@pytest.mark.anyio
async def test_a_service_that_never_answers_holds_up_neither_start_nor_close(
    silent_service: str, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Entry waits a moment at most, the unanswered request is given up after ``timeout``
    with an INFO line, and closing does not wait for it."""
    caplog.set_level(logging.INFO, logger="aicm")
    tracker = AsyncTracker(aicm_api_key=fresh_key(), aicm_api_base=silent_service, timeout=1.0)
    started = time.monotonic()
    async with tracker:
        entered = time.monotonic() - started
        await anyio.sleep(1.6)
    closing = time.monotonic() - started - entered - 1.6
    assert entered < 0.9, f"entry took {entered:.2f} s"
    assert closing < 0.9, f"close took {closing:.2f} s"
    assert any(
        r.levelno == logging.INFO and "could not fetch the triggered usage limits" in r.message
        for r in caplog.records
    ), [r.message for r in caplog.records]


@pytest.mark.anyio
async def test_closing_while_the_request_is_unanswered_is_prompt(
    silent_service: str, anyio_backend: str
) -> None:
    """Closed before the service answers (timeout far away): the request is dropped."""
    started = time.monotonic()
    async with AsyncTracker(aicm_api_key=fresh_key(), aicm_api_base=silent_service, timeout=30):
        pass
    assert time.monotonic() - started < 2.0


@pytest.mark.anyio
async def test_a_queue_file_holding_fresh_limits_spares_the_request(
    collector: LocalCollector, anyio_backend: str, tmp_path: Any
) -> None:
    """A persistent-queue tracker whose queue file already holds a recent answer (another
    process's, here one verified with another pinned key) enforces it without asking."""
    key = fresh_key()
    _trigger_elsewhere(collector, key)
    options: dict[str, Any] = {
        "aicm_api_key": key,
        "aicm_api_base": collector.api_base,
        "delivery_type": "persistent_queue",
        "db_path": str(tmp_path / "queue.db"),
    }
    async with AsyncTracker(**options):
        pass  # asks, and keeps the answer in the queue file
    assert _asked(collector) == 1
    async with AsyncTracker(limits_public_key=collector.public_key, **options) as pinned:
        with pytest.raises(UsageLimitExceeded) as info:
            await pinned.track("openai", "gpt-5-mini", {"input_tokens": 1}, response_id="q-1")
        assert info.value.response_id == "q-1"
    assert _asked(collector) == 1


def test_a_sync_tracker_against_a_silent_service_starts_and_closes_promptly(
    silent_service: str,
) -> None:
    """The sync twin: building the Tracker waits a moment at most, closing does not wait."""
    started = time.monotonic()
    tracker = Tracker(aicm_api_key=fresh_key(), aicm_api_base=silent_service, timeout=30)
    built = time.monotonic() - started
    tracker.close()
    closed = time.monotonic() - started - built
    assert built < 0.9, f"building took {built:.2f} s"
    assert closed < 0.9, f"closing took {closed:.2f} s"
