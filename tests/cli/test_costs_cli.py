"""``aicm costs`` and ``aicm usage`` against the local collector, in-process and JSON."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from aicm.cli import main
from aicm.collector import LocalCollector
from tests.service_api_support import API_KEY, price, track


@pytest.fixture
def tracked(collector: LocalCollector, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Three calls on two days for two customers; the key in AICM_API_KEY."""
    monkeypatch.setenv("AICM_API_KEY", API_KEY)
    return {
        "a1": track(
            collector,
            customer="acme",
            input_tokens=1000,
            output_tokens=10,
            timestamp="2025-06-01T09:00:00Z",
        ),
        "a2": track(
            collector,
            customer="acme",
            input_tokens=2000,
            output_tokens=0,
            timestamp="2025-06-02T09:00:00Z",
        ),
        "g1": track(
            collector,
            customer="globex",
            input_tokens=0,
            output_tokens=500,
            timestamp="2025-06-02T10:00:00Z",
        ),
    }


def json_out(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    """Run ``aicm ARGV --json`` and parse what it printed."""
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_costs_by_day_and_customer(
    collector: LocalCollector, tracked: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``aicm costs --by day,customer --json`` sums the tracked costs per day and customer."""
    out = json_out(capsys, "costs", "--api-base", collector.api_base, "--by", "day,customer")
    assert isinstance(out, dict)
    rows = {(r["day"], r["customer"]): Decimal(str(r["cost_usd"])) for r in out["rows"]}
    assert rows == {
        ("2025-06-01", "acme"): price(1000, 10),
        ("2025-06-02", "acme"): price(2000, 0),
        ("2025-06-02", "globex"): price(0, 500),
    }
    assert Decimal(str(out["cost_usd"])) == price(3000, 510)


def test_costs_by_service_with_a_customer_filter(
    collector: LocalCollector, tracked: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--customer`` and ``--start-date`` narrow what ``aicm costs --by service`` sums."""
    out = json_out(
        capsys,
        "costs",
        "--api-base",
        collector.api_base,
        "--by",
        "service",
        "--customer",
        "acme",
        "--start-date",
        "2025-06-02",
    )
    assert isinstance(out, dict)
    assert [(r["service"], Decimal(str(r["cost_usd"]))) for r in out["rows"]] == [
        ("openai::gpt-5-mini", price(2000, 0))
    ]


def test_costs_table(
    collector: LocalCollector, tracked: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The text table has a row per day and the total."""
    assert main(["costs", "--api-base", collector.api_base]) == 0
    text = capsys.readouterr().out
    assert "2025-06-01" in text
    assert "2025-06-02" in text
    assert f"{float(price(3000, 510)):.6f}" in text


def test_usage_lists_events(
    collector: LocalCollector, tracked: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``aicm usage --json`` lists the tracked events, filters and --limit applied."""
    out = json_out(capsys, "usage", "--api-base", collector.api_base, "--customer", "acme")
    assert isinstance(out, list)
    assert {e["response_id"] for e in out} == {tracked["a1"], tracked["a2"]}
    limited = json_out(capsys, "usage", "--api-base", collector.api_base, "--limit", "1")
    assert isinstance(limited, list)
    assert len(limited) == 1
    assert main(["usage", "--api-base", collector.api_base]) == 0
    assert tracked["g1"] in capsys.readouterr().out


def test_without_a_key_the_command_says_so(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """No AICM_API_KEY: exit 1 and one line naming the variable."""
    assert main(["costs", "--api-base", collector.api_base]) == 1
    assert "AICM_API_KEY" in capsys.readouterr().err


def test_unpriced_events_are_counted_not_costed(
    collector: LocalCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model no price source knows is counted as unpriced per row, never as $0 of cost."""
    monkeypatch.setenv("AICM_API_KEY", API_KEY)
    day = "2025-07-01T09:00:00Z"
    track(collector, customer="acme", input_tokens=100, output_tokens=10, timestamp=day)
    for _ in range(2):
        track(
            collector,
            customer="acme",
            input_tokens=5,
            output_tokens=5,
            timestamp=day,
            service_key="acme-ai::rocket-1",
        )
    out = json_out(capsys, "costs", "--api-base", collector.api_base, "--by", "service")
    assert isinstance(out, dict)
    rows = {r["service"]: r for r in out["rows"]}
    assert rows["acme-ai::rocket-1"]["unpriced_events"] == 2
    assert rows["openai::gpt-5-mini"]["unpriced_events"] == 0
    assert out["unpriced_events"] == 2
    assert Decimal(str(out["cost_usd"])) == price(100, 10)
    assert main(["costs", "--api-base", collector.api_base]) == 0
    assert "2 event(s) have no price" in capsys.readouterr().out
