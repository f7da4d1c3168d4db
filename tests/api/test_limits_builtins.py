"""Usage limits for clients the built-ins track with no handling config: against `aicm serve`
(a 1-dollar daily limit, a wrapped real openai client, the fake provider) and, for every
built-in vendor, against the local collector; refused calls never reach the provider."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import anyio
import boto3
import httpx
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from aicm import AsyncCostManager, CostManager, UsageLimitExceeded
from aicm._core.limits import api_key_id_of
from aicm.collector import LocalCollector
from aicm.collector._limits import api_key_id
from tests.api.limits_support import fresh_key, keypair, signed
from tests.fakes import FakeAnthropic, FakeBedrock, FakeGemini, FakeOpenAI
from tests.tracking_support import MESSAGES

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES}
# gpt-4o-mini at genai-prices' rates: 0.15 $/M input, 0.60 $/M output tokens. The fake
# answers in OpenAI's own usage names (prompt_tokens / completion_tokens): each call costs
# 0.30 + 0.30 = 0.60 dollars, so the second one crosses the dollar.
PROMPT_TOKENS = 2_000_000
COMPLETION_TOKENS = 500_000


def _iso(seconds_from_now: float) -> str:
    moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_from_now)
    return moment.isoformat().replace("+00:00", "Z")


class AicmServe:
    """`aicm serve` in a subprocess: its URL, the public key it printed, its admin API."""

    def __init__(self, url: str, public_key: str) -> None:
        self.url = url
        self.public_key = public_key

    @property
    def api_base(self) -> str:
        return self.url

    def clear(self) -> None:
        """Forget records and limits (the admin surface of the collector)."""
        httpx.post(f"{self.url}/_collector/clear", timeout=10).raise_for_status()

    def add_limit(self, key: str, **fields: Any) -> dict[str, Any]:
        """POST /usage-limits/ as the service's own API takes it."""
        answer = httpx.post(
            f"{self.url}/api/v1/usage-limits/",
            json=fields,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def records(self, kind: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/_collector/records", params={"kind": kind}, timeout=10)
        records: list[dict[str, Any]] = answer.json()["records"]
        return records

    def configs(self) -> Any:
        return httpx.get(f"{self.url}/_collector/configs", timeout=10).json()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AicmServe]:
    """`aicm serve` with a fresh data directory and no handling config."""
    data = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_DATA_HOME"] = str(data / "xdg")
    process = subprocess.Popen(
        [sys.executable, "-m", "aicm", "serve", "--port", "0", "--data-dir", str(data / "d")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    try:
        first = process.stdout.readline()
        url = re.search(r"http://[\d.]+:\d+", first)
        assert url is not None, first + (process.stderr.read() if process.stderr else "")
        lines = []
        while not lines or not lines[-1].startswith("-----END PUBLIC KEY-----"):
            line = process.stdout.readline()
            assert line, "aicm serve stopped before printing its public key"
            lines.append(line)
        pem = "".join(line for line in lines if not line.startswith("usage limits in"))
        assert pem.startswith("-----BEGIN PUBLIC KEY-----"), lines
        yield AicmServe(url.group(0), pem)
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture
def serve(served: AicmServe) -> AicmServe:
    """The running `aicm serve`, emptied."""
    served.clear()
    return served


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    """The fake OpenAI API: 0.60 dollars' worth of gpt-4o-mini tokens per call."""
    with FakeOpenAI(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS) as fake:
        yield fake


@pytest.fixture
async def openai_client(openai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    """A real openai.AsyncOpenAI pointed at the fake."""
    async with openai.AsyncOpenAI(
        base_url=openai_fake.base_url, api_key="test", max_retries=0
    ) as client:
        yield client


@pytest.mark.anyio
async def test_a_one_dollar_daily_limit_stops_a_built_in_client_until_it_expires(
    serve: AicmServe, openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    """No handling config anywhere: the built-in records the calls, `aicm serve` prices them
    (genai-prices, OpenAI's own usage names) and triggers the limit; the next call raises
    UsageLimitExceeded before the provider sees it; calls resume after expires_at."""
    assert serve.configs() == {"service_configs": []}
    key = fresh_key()
    expires_in = 6.0
    created = serve.add_limit(
        key,
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
        aicm_api_base=serve.api_base,
        limits_public_key=serve.public_key,
        batch_interval=0.05,
    ) as tracker:
        assert tracker.extractor.configs == ()
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
        assert info.value.response_id is None
        assert tracker.health().limits_refused == 1
        assert time.monotonic() - started < expires_in, "too slow to see the limit in force"
        await anyio.sleep(max(0.0, expires_in - (time.monotonic() - started)) + 0.2)
        await tracker.client.chat.completions.create(**CHAT)
        assert len(openai_fake.requests) == seen + 1
        await tracker.flush()
    records = serve.records("track")
    assert [r["service_key"] for r in records] == ["openai::gpt-4o-mini"] * 3
    assert serve.records("track_usage") == []


@pytest.mark.anyio
async def test_a_pinned_key_and_a_tampered_payload_refuse_no_built_in_call(
    serve: AicmServe,
    openai_fake: FakeOpenAI,
    openai_client: openai.AsyncOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A man in the middle swaps every signed list for his own (his key beside it): with the
    key `aicm serve` printed pinned, nothing is refused and one WARNING says so."""
    key = fresh_key()
    serve.add_limit(key, threshold_type="limit", amount=1, period="day")
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
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()
            self.swapped = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            await response.aread()
            try:
                data = response.json()
            except ValueError:
                return response
            if isinstance(data, dict) and "triggered_limits" in data:
                data["triggered_limits"] = forged
                self.swapped += 1
                return httpx.Response(response.status_code, json=data, request=request)
            return response

        async def aclose(self) -> None:
            await self.inner.aclose()

    middle = ManInTheMiddle()
    caplog.set_level(logging.WARNING, logger="aicm")
    async with AsyncCostManager(
        openai_client,
        aicm_api_key=key,
        aicm_api_base=serve.api_base,
        limits_public_key=serve.public_key,
        transport=middle,
        batch_interval=0.05,
    ) as tracker:
        for _ in range(4):  # 2.40 dollars: the genuine limit triggered too, and was swapped
            await tracker.client.chat.completions.create(**CHAT)
            await tracker.flush()
        assert tracker.health().limits_refused == 0
    assert middle.swapped >= 4
    assert len(serve.records("track")) == 4
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "aicm.limits" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "could not be verified" in warnings[0]


# -- every built-in vendor, against the local collector ---------------------------------------


class ToFake(httpx.BaseTransport):
    """Sends an OpenAI-compatible vendor's requests (``https://api.x.ai/v1/...``) to the fake
    OpenAI API on loopback, so the client keeps the vendor's base URL."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.target = httpx.URL(fake.url)
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = "/v1" + request.url.path.split("/v1", 1)[1]
        request.url = request.url.copy_with(
            scheme=self.target.scheme, host=self.target.host, port=self.target.port, path=path
        )
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


PROMPT = [{"role": "user", "content": [{"text": "Say hello"}]}]


def _openai_compatible(base_url: str, model: str) -> Any:
    def case(fakes: dict[str, Any]) -> tuple[Any, Any, Any]:
        fake = fakes["openai"]
        client = openai.OpenAI(
            base_url=base_url,
            api_key="t",
            max_retries=0,
            http_client=httpx.Client(transport=ToFake(fake)),
        )
        return client, fake, lambda c: c.chat.completions.create(model=model, messages=MESSAGES)

    return case


def _openai(fakes: dict[str, Any]) -> tuple[Any, Any, Any]:
    fake = fakes["openai"]
    client = openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0)
    return client, fake, lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def _anthropic(fakes: dict[str, Any]) -> tuple[Any, Any, Any]:
    fake = fakes["anthropic"]
    client = anthropic.Anthropic(base_url=fake.url, api_key="t", max_retries=0)
    model = "claude-3-5-haiku-latest"
    return client, fake, lambda c: c.messages.create(model=model, max_tokens=20, messages=MESSAGES)


def _gemini(fakes: dict[str, Any]) -> tuple[Any, Any, Any]:
    fake = fakes["gemini"]
    client = genai.Client(api_key="t", http_options=gtypes.HttpOptions(base_url=fake.url))
    model = "gemini-2.0-flash"
    return client, fake, lambda c: c.models.generate_content(model=model, contents="hi")


def _bedrock(fakes: dict[str, Any]) -> tuple[Any, Any, Any]:
    fake = fakes["bedrock"]
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=fake.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    return client, fake, lambda c: c.converse(modelId="amazon.nova-lite-v1:0", messages=PROMPT)


FIREWORKS_MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"

# (the client and its call, the service key its records carry: the vendor as the service
# names it and the model that answered, which is what the limit names)
VENDORS = {
    "openai": (_openai, "openai::gpt-4o-mini"),
    "xai": (_openai_compatible("https://api.x.ai/v1", "grok-3-mini"), "xai::grok-3-mini"),
    "fireworks-ai": (
        _openai_compatible("https://api.fireworks.ai/inference/v1", FIREWORKS_MODEL),
        f"fireworks-ai::{FIREWORKS_MODEL}",
    ),
    "anthropic": (_anthropic, "anthropic::claude-3-5-haiku-latest"),
    # Gemini answers with the model version that served the request: the limit names that
    # one, and a call asking for gemini-2.0-flash is refused once the manager has seen it.
    "google": (_gemini, "google::gemini-2.0-flash-001"),
    # Bedrock's model is the call's modelId.
    "amazon-bedrock": (_bedrock, "amazon-bedrock::amazon.nova-lite-v1:0"),
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    """One fake server per provider wire protocol."""
    with FakeOpenAI() as o, FakeAnthropic() as a, FakeGemini() as g, FakeBedrock() as b:
        yield {"openai": o, "anthropic": a, "gemini": g, "bedrock": b}


@pytest.mark.parametrize("vendor", list(VENDORS))
def test_every_built_in_vendor_is_refused_before_the_call(
    vendor: str, collector: LocalCollector, fakes: dict[str, Any]
) -> None:
    """A limit on the service key a built-in records (``vendor::served-model``) refuses the
    next call of a client wrapped with no config, before its provider sees it."""
    make, service_key = VENDORS[vendor]
    client, fake, call = make(fakes)
    created = collector.add_limit(
        threshold_type="limit", amount="0.000001", period="day", service_key=service_key
    )
    with CostManager(
        client,
        aicm_api_key=fresh_key(),
        aicm_api_base=collector.api_base,
        limits_public_key=collector.public_key,
    ) as manager:
        call(manager.client)  # a few millionths of a dollar: the limit triggers
        manager.flush()
        seen = len(fake.requests)
        with pytest.raises(UsageLimitExceeded) as info:
            call(manager.client)
        assert len(fake.requests) == seen
        assert info.value.limit_id == created["uuid"]
        assert info.value.matched["service_key"] == service_key
    (record,) = collector.records("track")
    assert record["service_key"] == service_key


def test_a_key_without_a_dot_is_named_as_the_collector_names_it(
    collector: LocalCollector, fakes: dict[str, Any]
) -> None:
    """A key with no dot has no id of its own: the collector names it by its fingerprint,
    and the manager computes the same id, so its limit still refuses its calls."""
    client, _, call = _openai(fakes)
    collector.add_limit(threshold_type="limit", amount="0.000001", period="day")
    key = f"dotless-{uuid.uuid4().hex}"
    with CostManager(client, aicm_api_key=key, aicm_api_base=collector.api_base) as manager:
        call(manager.client)
        manager.flush()
        with pytest.raises(UsageLimitExceeded) as info:
            call(manager.client)
    (limit,) = info.value.limits
    assert limit.api_key_id == api_key_id(key) == api_key_id_of(key)
    assert key not in limit.api_key_id
