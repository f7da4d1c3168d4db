"""Usage limits against the local collector (it prices, evaluates and signs them): a wrapped
real openai client pointed at the fake provider, with a 1-dollar daily limit; asyncio and trio.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import openai
import pytest

from aicm import AsyncCostManager, UsageLimitExceeded
from aicm.collector import LocalCollector
from tests.api.limits_support import fresh_key, keypair, signed
from tests.fakes import FakeOpenAI
from tests.tracking_support import MESSAGES, service_config

pytestmark = pytest.mark.anyio

CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}
# gpt-4o-mini at genai-prices' rates: 0.15 $/M input, 0.60 $/M output tokens, so each call
# below costs 0.30 + 0.30 = 0.60 dollars: the second one crosses the dollar.
PROMPT_TOKENS = 2_000_000
COMPLETION_TOKENS = 500_000

# The usage object goes to the collector whole, in OpenAI's own names (prompt_tokens,
# completion_tokens): the collector prices /track-usage records in that vocabulary.
PRICED_HANDLING: dict[str, Any] = {
    "tracked_methods": ["chat.completions.create"],
    "request_fields": ["model"],
    "response_fields": ["model"],
    "payload_mapping": {
        "config_id": "config_identifier",
        "service_id": "request_data.model",
        "timestamp": "timestamp",
        "response_id": "response_id",
        "usage": "usage_data",
    },
}


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    """A fake OpenAI API answering 0.60 dollars' worth of tokens per call."""
    with FakeOpenAI(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@pytest.fixture
async def openai_client(openai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    """A real openai.AsyncOpenAI pointed at the fake."""
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def priced(collector: LocalCollector) -> LocalCollector:
    """The collector, serving the openai config whose records it can price."""
    collector.set_configs([service_config("asyncopenai", PRICED_HANDLING, "openai-priced")])
    return collector


def _iso(seconds_from_now: float) -> str:
    moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_from_now)
    return moment.isoformat().replace("+00:00", "Z")


async def test_a_one_dollar_daily_limit_stops_the_next_call_until_it_expires(
    priced: LocalCollector, openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    """Calls go through until the limit triggers; the next raises UsageLimitExceeded and the
    fake provider sees no request; calls resume after expires_at."""
    key = fresh_key()
    expires_in = 4.0
    created = priced.add_limit(
        threshold_type="limit",
        amount=1,
        period="day",
        limit_message="daily budget of 1 dollar",
        expires_at=_iso(expires_in),
    )
    started = time.monotonic()
    async with AsyncCostManager(
        openai_client,
        aicm_api_key=key,
        aicm_api_base=priced.api_base,
        limits_public_key=priced.public_key,
        batch_interval=0.05,
    ) as tracker:
        for _ in range(2):  # 0.60, then 1.20 dollars: the second answer carries the limit
            await tracker.client.chat.completions.create(**CHAT)
            await tracker.flush()
        seen = len(openai_fake.requests)
        with pytest.raises(UsageLimitExceeded) as info:
            await tracker.client.chat.completions.create(**CHAT)
        assert len(openai_fake.requests) == seen
        assert info.value.limit_id == created["uuid"]
        assert info.value.limit_message == "daily budget of 1 dollar"
        assert info.value.matched == {"service_key": "openai::gpt-4o-mini", "customer_key": None}
        assert tracker.health().limits_refused == 1
        assert time.monotonic() - started < expires_in, "too slow to see the limit in force"
        await anyio.sleep(max(0.0, expires_in - (time.monotonic() - started)) + 0.2)
        await tracker.client.chat.completions.create(**CHAT)
        assert len(openai_fake.requests) == seen + 1
        await tracker.flush()
    assert priced.count("track_usage") == 3


async def test_a_customer_limit_refuses_only_that_customers_calls(
    priced: LocalCollector, openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    """A limit on one customer's spend refuses that customer's calls, not the others'."""
    key = fresh_key()
    priced.add_limit(threshold_type="limit", amount=1, period="day", client="acme")
    async with AsyncCostManager(
        openai_client, aicm_api_key=key, aicm_api_base=priced.api_base
    ) as tracker:
        with tracker.scope(client_customer_key="acme"):
            for _ in range(2):
                await tracker.client.chat.completions.create(**CHAT)
                await tracker.flush()
            with pytest.raises(UsageLimitExceeded) as info:
                await tracker.client.chat.completions.create(**CHAT)
            assert info.value.matched["customer_key"] == "acme"
        await tracker.client.chat.completions.create(**CHAT)  # no customer: not covered
        with tracker.scope(client_customer_key="globex"):
            await tracker.client.chat.completions.create(**CHAT)


async def test_a_lifted_limit_is_learned_without_any_record_sent(
    priced: LocalCollector,
    openai_fake: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused calls send nothing, so a refusal asks the service again (after REFRESH_AFTER
    seconds without news): once the limit is removed, calls go through."""
    from aicm._api import limits as guard_module

    monkeypatch.setattr(guard_module, "REFRESH_AFTER", 0.0)
    key = fresh_key()
    created = priced.add_limit(threshold_type="limit", amount=1, period="day")
    async with AsyncCostManager(
        openai_client, aicm_api_key=key, aicm_api_base=priced.api_base
    ) as tracker:
        for _ in range(2):
            await tracker.client.chat.completions.create(**CHAT)
            await tracker.flush()
        priced.remove_limit(created["uuid"])
        with pytest.raises(UsageLimitExceeded):
            await tracker.client.chat.completions.create(**CHAT)
        with anyio.fail_after(20):
            while tracker.limit_guard.book.limits:  # noqa: ASYNC110  # set by another task
                await anyio.sleep(0.02)
        await tracker.client.chat.completions.create(**CHAT)


async def test_a_pinned_key_and_a_tampered_payload_refuse_nothing_and_warn_once(
    priced: LocalCollector,
    openai_fake: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Between the SDK and the collector, a man in the middle replaces the signed limits with
    his own (re-signed with his key, his public key beside it): with the collector's key
    pinned, nothing is refused and one WARNING says a payload was ignored."""
    key = fresh_key()
    priced.add_limit(threshold_type="limit", amount=1, period="day")
    forged = signed(
        [
            {
                "event_id": "evt-forged",
                "limit_id": "lim-forged",
                "threshold_type": "limit",
                "amount": 0.01,
                "period": "day",
                "api_key_id": key.rsplit(".", 1)[1],
                "triggered_at": _iso(0),
            }
        ],
        signer=keypair("attacker"),
    )

    class ManInTheMiddle(httpx.AsyncBaseTransport):
        """Passes requests to the collector and swaps the limits in every answer."""

        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            await response.aread()
            try:
                data = response.json()
            except ValueError:
                return response
            if isinstance(data, dict) and "triggered_limits" in data:
                data["triggered_limits"] = forged
                return httpx.Response(response.status_code, json=data, request=request)
            return response

        async def aclose(self) -> None:
            await self.inner.aclose()

    caplog.set_level(logging.WARNING, logger="aicm")
    async with AsyncCostManager(
        openai_client,
        aicm_api_key=key,
        aicm_api_base=priced.api_base,
        limits_public_key=priced.public_key,
        transport=ManInTheMiddle(),
        batch_interval=0.05,
    ) as tracker:
        for _ in range(4):  # 2.40 dollars: the genuine limit triggered too, and was swapped
            await tracker.client.chat.completions.create(**CHAT)
            await tracker.flush()
        assert tracker.health().limits_refused == 0
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "aicm.limits" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "could not be verified" in warnings[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_docs_example_runs_against_aicm_serve(tmp_path: Path) -> None:
    """docs/limits.md's example, run as written against `aicm serve` with a 1-dollar daily
    limit set by `aicm limits set`: it tracks, then is refused with the limit's message."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    env["PYTHONPATH"] = str(root)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    port = _free_port()
    env["AICM_API_BASE"] = f"http://127.0.0.1:{port}"
    env["AICM_API_KEY"] = "sk-demo.local-key"
    server = subprocess.Popen(
        [sys.executable, "-m", "aicm", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{env['AICM_API_BASE']}/_collector/health", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, "aicm serve exited"
                assert time.monotonic() < deadline, "aicm serve did not start"
                time.sleep(0.05)
        set_limit = [sys.executable, "-m", "aicm", "limits", "set", "--amount", "1"]
        set_limit += ["--period", "day", "--message", "Daily budget reached"]
        subprocess.run(set_limit, env=env, check=True, capture_output=True, timeout=60)
        out = subprocess.run(
            [sys.executable, str(root / "docs" / "limits_example.py")],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.terminate()
        server.communicate(timeout=30)
    lines = out.stdout.splitlines()
    assert lines[0] == "tracked 1 (0.90 dollars so far)"
    assert lines[-1].startswith("refused: usage limit ")
    assert "Daily budget reached" in lines[-1]
    assert len(lines) == 2, lines
