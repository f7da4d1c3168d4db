"""``aicm demo`` as a real subprocess: what it tracked is stored once and priced right."""

from __future__ import annotations

import json
import math
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from .conftest import Run, run_many


def _prices() -> dict[str, dict[str, float]]:
    """The shipped price table, read straight from the package data (not via the CLI)."""
    text = resources.files("aicm.cli").joinpath("prices.json").read_text(encoding="utf-8")
    data: dict[str, dict[str, float]] = json.loads(text)
    return data


def _expected_cost(row: dict[str, Any], prices: dict[str, dict[str, float]]) -> float:
    # A "vendor::model" service is priced by its model's rates.
    rates = prices.get(row["service"]) or prices.get(row["service"].partition("::")[2], {})
    return math.fsum(amount * rates.get(metric, 0.0) for metric, amount in row["usage"].items())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """``aicm demo --json --records 300 --db PATH``: its output, and the kept database."""
    db = tmp_path_factory.mktemp("demo") / "demo.sqlite3"
    (done,) = run_many([["demo", "--json", "--records", "300", "--db", str(db)]])
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result: dict[str, Any] = json.loads(done.stdout)
    return result, db


def test_demo_stores_every_tracked_record_exactly_once(demo: tuple[dict[str, Any], Path]) -> None:
    """Stored equals tracked, per service and customer, and no response_id is stored twice."""
    result, db = demo
    assert result["ok"] is True
    assert result["stored"] == result["offered"] == 3 + 300 + 75 + 60 + 2
    assert result["report"]["rows"] == result["tracked"]
    assert result["duplicates_suppressed"] >= 4  # the REST calls repeated the same 2 sessions
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        track = conn.execute("SELECT count(*), count(DISTINCT response_id) FROM track").fetchone()
        usage = conn.execute(
            "SELECT count(*), count(DISTINCT response_id) FROM track_usage"
        ).fetchone()
    conn.close()
    assert track[0] == track[1]
    assert usage[0] == usage[1]
    assert track[0] + usage[0] == result["stored"]
    assert result["seconds"] < 30


def test_demo_costs_are_the_price_table_applied(demo: tuple[dict[str, Any], Path]) -> None:
    """Every row's cost is the sum of usage x rate; totals per service/customer add up."""
    result, _ = demo
    prices = _prices()
    report = result["report"]
    assert result["prices"] == prices
    assert report["unpriced"] == []
    for row in report["rows"] + report["by_service"]:
        assert row["cost_usd"] == pytest.approx(_expected_cost(row, prices), abs=1e-8)
    total = report["cost_usd"]
    assert total > 0
    for totals in ("rows", "by_service", "by_customer"):
        assert math.fsum(r["cost_usd"] for r in report[totals]) == pytest.approx(total, abs=1e-8)
        assert sum(r["records"] for r in report[totals]) == result["stored"]
    assert {r["customer"] for r in report["by_customer"]} == {"-", "acme_corp", "globex", "initech"}
    heygen = next(r for r in report["by_service"] if r["service"].startswith("api.heygen.com"))
    assert heygen["usage"] == {"duration": 32}
    assert heygen["cost_usd"] == pytest.approx(32 * 0.0125)


def test_report_on_the_demo_database_matches_the_demo(
    aicm: Run, demo: tuple[dict[str, Any], Path]
) -> None:
    """aicm report on the kept database gives the demo's own numbers (one code path)."""
    result, db = demo
    done = aicm("report", "--db", str(db), "--by", "service,customer", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == result["report"]


def test_demo_prints_the_cost_tables_and_refuses_an_existing_db(
    demo: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    """The text demo shows the table and totals per service and customer; --db must be new."""
    _, db = demo
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-5-mini": {"input_tokens": 1.0}}))
    text, custom, existing, bad = run_many(
        [
            ["demo", "--records", "30"],
            ["demo", "--records", "30", "--json", "--prices", str(prices)],
            ["demo", "--db", str(db)],
            ["demo", "--records", "0"],
        ]
    )
    assert text.returncode == 0, text.stderr
    for words in ("Totals by service", "Totals by customer", "cost (USD)", "each exactly once"):
        assert words in text.stdout
    assert custom.returncode == 0, custom.stderr
    report = json.loads(custom.stdout)["report"]
    assert report["unpriced"] == [
        "anthropic::claude-sonnet",
        "api.heygen.com/v2/streaming.list",
        "openai::gpt-5",
    ]
    # The cost manager's records name the model; the tracker's "openai::gpt-5-mini" is
    # priced by the model's rates too.
    minis = [r for r in report["by_service"] if r["service"].endswith("gpt-5-mini")]
    assert sorted(r["service"] for r in minis) == ["gpt-5-mini", "openai::gpt-5-mini"]
    for mini in minis:
        assert mini["cost_usd"] == mini["usage"]["input_tokens"]
    assert existing.returncode == 1
    assert "exists" in existing.stderr
    assert bad.returncode == 2
