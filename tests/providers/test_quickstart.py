"""The quickstart as a new user runs it: wrap an OpenAI client, then an Anthropic one, with
no config, run, and ``aicm report`` shows both calls in dollars (genai-prices' own price of
their tokens)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import genai_prices
import pytest

from aicm.collector import LocalCollector
from tests.cli.conftest import aicm_env, run_aicm
from tests.fakes import FakeAnthropic, FakeOpenAI

QUICKSTART = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"
_WRAP = re.compile(r"<!-- quickstart:wrap -->\n```python\n(.*?)```", re.DOTALL)
_WRAP_ANTHROPIC = re.compile(r"<!-- quickstart:wrap-anthropic -->\n```python\n(.*?)```", re.DOTALL)


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(prompt_tokens=1200, completion_tokens=300, cached_tokens=1024) as fake:
        yield fake


@pytest.fixture
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(input_tokens=800, output_tokens=250, cache_read_input_tokens=2000) as fake:
        yield fake


def test_wrap_run_report_shows_dollars(
    openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic, tmp_path: Path
) -> None:
    text = QUICKSTART.read_text(encoding="utf-8")
    (code,) = _WRAP.findall(text)
    (claude_code,) = _WRAP_ANTHROPIC.findall(text)
    db = tmp_path / "usage.sqlite3"
    with LocalCollector(db_path=db) as collector:
        env = aicm_env(
            AICM_API_KEY="anything",
            AICM_API_BASE=collector.api_base,
            OPENAI_API_KEY="sk-test",
            OPENAI_BASE_URL=openai_fake.base_url,
        )
        env.pop("AICM_CONFIGS", None)
        ran = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "Hello from the fake OpenAI"
        assert "WARNING" not in ran.stderr
        env.update(ANTHROPIC_API_KEY="sk-test", ANTHROPIC_BASE_URL=anthropic_fake.url)
        ran = subprocess.run(
            [sys.executable, "-c", claude_code], env=env, capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "Hello from the fake Claude"
        assert "WARNING" not in ran.stderr
    done = run_aicm("report", "--db", str(db), "--by", "service", "--json", env=aicm_env())
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    claude, row = summary["rows"]
    assert row["service"] == "openai::gpt-4o-mini"
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1024),
        "gpt-4o-mini",
        provider_id="openai",
    )
    assert row["cost_usd"] == pytest.approx(float(expected.total_price))
    assert row["cost_usd"] > 0
    assert claude["service"] == "anthropic::claude-sonnet-4-5"
    claude_price = genai_prices.calc_price(
        # Anthropic counts cache reads apart from input_tokens: all input is 800 + 2000.
        genai_prices.Usage(input_tokens=2800, output_tokens=250, cache_read_tokens=2000),
        "claude-sonnet-4-5",
        provider_id="anthropic",
    )
    assert claude["cost_usd"] == pytest.approx(float(claude_price.total_price))
    assert summary["unpriced"] == []
    text = run_aicm("report", "--db", str(db), env=aicm_env())
    assert "openai::gpt-4o-mini" in text.stdout
    assert "anthropic::claude-sonnet-4-5" in text.stdout
    assert "unpriced" not in text.stdout
