"""One usage vocabulary for every vendor, and ``aicm report`` pricing 20 models of the built-in
providers with genai-prices: an unknown model is listed as unpriced, never as $0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import genai_prices
import httpx
import pytest

from aicm._providers.normalize import normalize_usage
from aicm.cli._pricing import price_usage
from aicm.collector import LocalCollector
from tests.cli.conftest import Run, run_aicm

OPENAI_CHAT = {
    "prompt_tokens": 2000,
    "completion_tokens": 500,
    "total_tokens": 2500,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 200, "audio_tokens": 0},
}
OPENAI_RESPONSES = {
    "input_tokens": 3000,
    "input_tokens_details": {"cached_tokens": 2048},
    "output_tokens": 700,
    "output_tokens_details": {"reasoning_tokens": 300},
    "total_tokens": 3700,
}
ANTHROPIC = {
    "input_tokens": 100,
    "output_tokens": 400,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 5000,
}
GEMINI = {
    "prompt_token_count": 1500,
    "candidates_token_count": 300,
    "thoughts_token_count": 120,
    "cached_content_token_count": 1000,
    "total_token_count": 1920,
}
BEDROCK = {
    "inputTokens": 900,
    "outputTokens": 100,
    "totalTokens": 1600,
    "cacheReadInputTokens": 400,
    "cacheWriteInputTokens": 200,
}
EMBEDDINGS = {"prompt_tokens": 8000, "total_tokens": 8000}

# 20 models of the built-in providers, as their records name them, with a usage each.
MODELS: list[tuple[str, dict[str, Any]]] = [
    ("openai::gpt-4o-mini", OPENAI_CHAT),
    ("openai::gpt-4o", OPENAI_CHAT),
    ("openai::gpt-4.1", OPENAI_CHAT),
    ("openai::gpt-4.1-mini", OPENAI_RESPONSES),
    ("openai::gpt-5", OPENAI_RESPONSES),
    ("openai::gpt-5-mini", OPENAI_RESPONSES),
    ("openai::o3-mini", OPENAI_CHAT),
    ("openai::text-embedding-3-small", EMBEDDINGS),
    ("anthropic::claude-sonnet-4-5", ANTHROPIC),
    ("anthropic::claude-3-5-haiku-20241022", ANTHROPIC),
    ("anthropic::claude-opus-4-1", ANTHROPIC),
    ("google::gemini-2.5-flash", GEMINI),
    ("google::gemini-2.5-pro", GEMINI),
    ("google::gemini-2.0-flash", GEMINI),
    ("amazon-bedrock::amazon.nova-lite-v1:0", BEDROCK),
    ("amazon-bedrock::amazon.nova-pro-v1:0", BEDROCK),
    ("amazon-bedrock::anthropic.claude-3-5-sonnet-20240620-v1:0", BEDROCK),
    ("fireworks-ai::accounts/fireworks/models/llama-v3p1-8b-instruct", OPENAI_CHAT),
    ("xai::grok-3", OPENAI_CHAT),
    ("groq::llama-3.1-8b-instant", OPENAI_CHAT),
]
UNKNOWN = "openai::no-such-model-7"


def test_normalized_vocabulary() -> None:
    """Input includes cache reads and writes (added where reported apart); output reasoning."""
    assert normalize_usage("openai", OPENAI_CHAT) == {
        "input_tokens": 2000,
        "output_tokens": 500,
        "cache_read_tokens": 1024,
    }
    assert normalize_usage("openai", OPENAI_RESPONSES) == {
        "input_tokens": 3000,
        "output_tokens": 700,
        "cache_read_tokens": 2048,
    }
    assert normalize_usage("anthropic", ANTHROPIC) == {
        "input_tokens": 8100,
        "output_tokens": 400,
        "cache_read_tokens": 5000,
        "cache_write_tokens": 3000,
    }
    assert normalize_usage("anthropic", {"input_tokens": 10, "output_tokens": 2}) == {
        "input_tokens": 10,
        "output_tokens": 2,
    }
    assert normalize_usage("google", GEMINI) == {
        "input_tokens": 1500,
        "output_tokens": 420,
        "cache_read_tokens": 1000,
    }
    camel = {"promptTokenCount": 10, "candidatesTokenCount": 3, "thoughtsTokenCount": 2}
    assert normalize_usage("google", camel) == {"input_tokens": 10, "output_tokens": 5}
    assert normalize_usage("amazon-bedrock", BEDROCK) == {
        "input_tokens": 1500,
        "output_tokens": 100,
        "cache_read_tokens": 400,
        "cache_write_tokens": 200,
    }
    audio = {
        "prompt_tokens": 50,
        "completion_tokens": 9,
        "prompt_tokens_details": {"audio_tokens": 40},
        "completion_tokens_details": {"audio_tokens": 7},
    }
    assert normalize_usage("openai", audio) == {
        "input_tokens": 50,
        "output_tokens": 9,
        "input_audio_tokens": 40,
        "output_audio_tokens": 7,
    }
    assert normalize_usage(None, {"duration": 3}) == {}
    assert normalize_usage(None, 5) == {}


def test_table_wins_and_unknowns_are_unpriced() -> None:
    table = {"openai::gpt-4o": {"input_tokens": 1.0}, "my-rest": {"calls": 0.5}}
    assert price_usage(table, "openai::gpt-4o", {"input_tokens": 3}).cost == 3.0
    rest = price_usage(table, "my-rest", {"calls": 4})
    assert (rest.cost, rest.priced, rest.source) == (2.0, True, "table")
    unknown = price_usage(table, UNKNOWN, OPENAI_CHAT)
    assert (unknown.priced, unknown.cost) == (False, 0.0)
    odd_vendor = price_usage(table, "somevendor::gpt-4o", OPENAI_CHAT)
    assert odd_vendor.priced is False  # another vendor's price is never guessed
    no_shape = price_usage(table, "openai::gpt-4.1", {"widgets": 3})
    assert no_shape.priced is False


@pytest.fixture
def aicm() -> Run:
    """``aicm(*args)`` runs the command in a subprocess."""
    return run_aicm


@pytest.fixture
def store(collector: LocalCollector) -> str:
    """The collector's database holding one current /track record per model, and an unknown."""
    tracked = [
        {
            "service_key": service,
            "response_id": f"r-{i}",
            "timestamp": "2026-01-05T10:00:00Z",
            "payload": usage,
            "customer_key": "acme",
        }
        for i, (service, usage) in enumerate([*MODELS, (UNKNOWN, OPENAI_CHAT)])
    ]
    answer = httpx.post(collector.url + "/track", json={"tracked": tracked})
    assert answer.status_code == 202
    return collector.db_path


def _genai(service: str, tokens: dict[str, int], provider: str) -> float:
    model = service.partition("::")[2]
    price = genai_prices.calc_price(genai_prices.Usage(**tokens), model, provider_id=provider)
    return float(price.total_price)


def test_report_prices_twenty_models_with_genai_prices(aicm: Run, store: str) -> None:
    done = aicm("report", "--db", store, "--by", "service", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    rows = {r["service"]: r for r in summary["rows"]}
    for service, _ in MODELS:
        assert rows[service]["unpriced_records"] == 0, service
        assert rows[service]["cost_usd"] > 0, service
    # Three prices, checked against genai-prices' own calc_price on the vendor's tokens.
    assert rows["anthropic::claude-sonnet-4-5"]["cost_usd"] == pytest.approx(
        _genai(
            "anthropic::claude-sonnet-4-5",
            {
                "input_tokens": 8100,
                "output_tokens": 400,
                "cache_read_tokens": 5000,
                "cache_write_tokens": 3000,
            },
            "anthropic",
        )
    )
    assert rows["openai::gpt-4o-mini"]["cost_usd"] == pytest.approx(
        _genai(
            "openai::gpt-4o-mini",
            {"input_tokens": 2000, "output_tokens": 500, "cache_read_tokens": 1024},
            "openai",
        )
    )
    assert rows["google::gemini-2.5-flash"]["cost_usd"] == pytest.approx(
        _genai(
            "google::gemini-2.5-flash",
            {"input_tokens": 1500, "output_tokens": 420, "cache_read_tokens": 1000},
            "google",
        )
    )
    # The unknown model: listed and counted as unpriced, its row costs nothing of the total.
    assert summary["unpriced"] == [UNKNOWN]
    assert summary["unpriced_records"] == 1
    assert rows[UNKNOWN]["unpriced_records"] == 1
    assert summary["cost_usd"] == pytest.approx(sum(rows[s]["cost_usd"] for s, _ in MODELS))


def test_report_text_names_the_unpriced(aicm: Run, store: str, tmp_path: Path) -> None:
    """The table says 'unpriced' where a cost would be; a user's table can price it."""
    done = aicm("report", "--db", store, "--by", "service")
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith(UNKNOWN))
    assert line.rstrip().endswith("unpriced (1)")
    assert f"no price for: {UNKNOWN} (1)" in done.stdout
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({UNKNOWN: {"prompt_tokens": 1.0}}))
    priced = aicm("report", "--db", store, "--by", "service", "--json", "--prices", str(override))
    summary = json.loads(priced.stdout)
    assert summary["unpriced"] == []
    assert {r["service"]: r["cost_usd"] for r in summary["rows"]}[UNKNOWN] == 2000.0


def test_price_lines_split_the_cost_as_genai_prices_does() -> None:
    """A genai-prices record's lines are genai-prices' input and output prices (cached
    tokens inside the input, at their own rate); a table's lines carry the table's rate."""
    usage = {
        "prompt_tokens": 10_000,
        "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 4_000},
    }
    priced = price_usage({}, "openai::gpt-5-mini", usage)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=10_000, output_tokens=500, cache_read_tokens=4_000),
        "gpt-5-mini",
        provider_id="openai",
    )
    lines = {line.metric: line for line in priced.lines}
    assert set(lines) == {"input_tokens", "output_tokens"}
    assert lines["input_tokens"].cost == float(expected.input_price)
    assert lines["input_tokens"].quantity == 10_000
    assert lines["output_tokens"].cost == float(expected.output_price)
    assert priced.cost == float(expected.total_price)
    # Cached reads are cheaper, so the input side's average rate is below the list rate.
    uncached = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=10_000), "gpt-5-mini", provider_id="openai"
    )
    assert lines["input_tokens"].rate < float(uncached.input_price) / 10_000
    table = price_usage({"dub": {"seconds": 0.0001, "words": 0.5}}, "dub", {"seconds": 30})
    assert [(x.metric, x.quantity, x.rate) for x in table.lines] == [("seconds", 30, 0.0001)]
    unknown = price_usage({}, "acme-ai::rocket-1", {"input_tokens": 5, "output_tokens": 1})
    assert (unknown.priced, unknown.lines) == (False, ())
