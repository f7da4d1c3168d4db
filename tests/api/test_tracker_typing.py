"""Type checkers see both call forms of AsyncTracker and Tracker (mypy --strict in a subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """
import datetime as dt

from aicm import AsyncTracker, DeliveryType, RecordResult, Tracker


async def async_forms() -> list[RecordResult]:
    async with AsyncTracker(aicm_api_key="k", delivery_type=DeliveryType.MEM_QUEUE) as free:
        a = await free.track("openai", "gpt-5-mini", {"input_tokens": 1})
        b = await free.track(
            "openai",
            "gpt-5-mini",
            {"input_tokens": 1},
            client_customer_key="acme",
            context={"env": "prod"},
            response_id="r-1",
            timestamp=dt.datetime.now(dt.timezone.utc),
        )
    async with AsyncTracker("cfg", "svc", timeout=5.0) as bound:
        c = await bound.track({"tokens": 1}, timestamp="2024-01-01T00:00:00Z")
        d = await bound.track(usage={"tokens": 2})
        batch = await bound.track_batch([{"usage": {"tokens": 3}}])
    return [a, b, c, d, *batch]


def sync_forms() -> int:
    with Tracker(delivery_type="mem_queue", queue_size=10) as free:
        free.track("openai", "gpt-5-mini", {"input_tokens": 1}, response_id="r-2")
    bound = Tracker(config_id="cfg", service_id="svc", log_bodies=True)
    result: RecordResult = bound.track({"tokens": 1}, client_customer_key="acme")
    left: int = bound.close()
    return left + len(result.response_id)


async def sync_from_async() -> str:
    free = await Tracker.create_async()
    bound = await Tracker.create_async("cfg", "svc", delivery_type=DeliveryType.IMMEDIATE)
    first = await free.track_async("openai", "gpt-5-mini", {"input_tokens": 1})
    second = await bound.track_async({"tokens": 1}, context={"k": "v"})
    await free.aclose()
    await bound.aclose()
    return first.response_id + second.response_id
"""

# Every line marked "# wrong" must be reported, and nothing else.
BAD = """
from aicm import AsyncTracker, Tracker


async def wrong_async() -> None:
    async with AsyncTracker() as free:
        await free.track("openai", "gpt-5-mini")  # wrong
        await free.track("a", "b", {"x": 1}, timestamp=object())  # wrong
    AsyncTracker("cfg")  # wrong
    await Tracker.create_async("cfg")  # wrong


def wrong_sync() -> None:
    Tracker(delivry_type="mem_queue")  # wrong
    Tracker().track({"tokens": 1}, colour="red")  # wrong
    Tracker("cfg", "svc").track({"tokens": 1}, client_customer_key=7)  # wrong
"""


@pytest.fixture
def mypy_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A mypy cache that survives between runs when pytest's cache is on (a cold run is ~5 s)."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("mypy-tracker-typing") if cache is not None else tmp_path / ".mypy_cache"


def test_mypy_accepts_both_forms_and_rejects_wrong_calls(tmp_path: Path, mypy_cache: Path) -> None:
    """mypy --strict passes every correct call of both forms and flags each wrong call."""
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "bad.py").write_text(BAD)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(mypy_cache),
            "good.py",
            "bad.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    errors = re.findall(r"^(\w+)\.py:(\d+): error: (.*)$", proc.stdout, re.MULTILINE)
    assert [e for e in errors if e[0] == "good"] == [], proc.stdout
    flagged = {int(line) for name, line, _ in errors if name == "bad"}
    marked = {n for n, text in enumerate(BAD.splitlines(), start=1) if text.endswith("# wrong")}
    assert flagged == marked, proc.stdout
    assert proc.returncode == 1, proc.stderr
    messages = " ".join(message for _, _, message in errors)
    assert 'Unexpected keyword argument "delivry_type"' in messages
    assert 'No overload variant of "track" of "AsyncTracker"' in messages
