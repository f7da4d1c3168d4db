"""``aicm demo`` as a real subprocess: what it tracked is stored once and priced right."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from .conftest import Run, aicm_env, run_many
from .pty_helper import run_in_pty


def _prices() -> dict[str, dict[str, float]]:
    """The shipped price table, read straight from the package data (not via the CLI)."""
    text = resources.files("aicm.cli").joinpath("prices.json").read_text(encoding="utf-8")
    data: dict[str, dict[str, float]] = json.loads(text)
    return data


PROVIDERS = {"openai": "openai", "anthropic": "anthropic"}


def _expected_cost(row: dict[str, Any], prices: dict[str, dict[str, float]]) -> float:
    """A REST service at the shipped table's rates; a model at genai-prices' own price of the
    row's usage (the demo's calls are far below any tier, so a row's price is its records')."""
    import genai_prices

    rates = prices.get(row["service"])
    if rates is not None:
        return math.fsum(amount * rates.get(metric, 0.0) for metric, amount in row["usage"].items())
    vendor, _, model = row["service"].rpartition("::")
    usage = genai_prices.Usage(**{k: int(v) for k, v in row["usage"].items()})
    price = genai_prices.calc_price(usage, model, provider_id=PROVIDERS.get(vendor))
    return float(price.total_price)


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
    # Trackers, the cost manager over a stand-in client, REST sessions, and 6 calls each of
    # the real openai and anthropic SDKs tracked by their built-ins with no config.
    assert result["stored"] == result["offered"] == 3 + 300 + 75 + 60 + 2 + 6 + 6
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


def test_demo_costs_are_genai_prices_and_the_table_applied(
    demo: tuple[dict[str, Any], Path],
) -> None:
    """Every model row costs what genai-prices says, the REST service its table rate; the
    OpenAI and Anthropic SDK calls, tracked with no config, are priced; totals add up."""
    result, _ = demo
    prices = _prices()
    report = result["report"]
    assert result["prices"] == prices
    assert report["unpriced"] == []
    checked = set()
    for row in report["rows"]:
        # Below every long-context tier genai-prices' price of a row's summed usage is the
        # sum of its records' prices (a row above one is checked through the totals only).
        if row["usage"].get("input_tokens", 0) >= 200_000:
            continue
        assert row["cost_usd"] == pytest.approx(_expected_cost(row, prices), abs=1e-8)
        checked.add(row["service"])
    assert len(checked) >= 5
    for service in report["by_service"]:
        rows = [r for r in report["rows"] if r["service"] == service["service"]]
        assert math.fsum(r["cost_usd"] for r in rows) == pytest.approx(service["cost_usd"])
    total = report["cost_usd"]
    assert total > 0
    for totals in ("rows", "by_service", "by_customer"):
        assert math.fsum(r["cost_usd"] for r in report[totals]) == pytest.approx(total, abs=1e-8)
        assert sum(r["records"] for r in report[totals]) == result["stored"]
    assert {r["customer"] for r in report["by_customer"]} == {"-", "acme_corp", "globex", "initech"}
    services = {r["service"]: r for r in report["by_service"]}
    for sdk in ("openai::gpt-4o-mini-2024-07-18", "anthropic::claude-sonnet-4-5"):
        assert services[sdk]["cost_usd"] > 0
        assert services[sdk]["unpriced_records"] == 0
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
    assert "\x1b" not in text.stdout + text.stderr  # piped: no progress, no colour
    assert custom.returncode == 0, custom.stderr
    report = json.loads(custom.stdout)["report"]
    # The user's table is laid over the shipped one; what it does not list is still priced.
    assert report["unpriced"] == []
    # The cost manager's records name the model; the tracker's "openai::gpt-5-mini" is
    # priced by the model's rates too: the user's rates win over genai-prices.
    minis = [r for r in report["by_service"] if r["service"].endswith("gpt-5-mini")]
    assert sorted(r["service"] for r in minis) == ["gpt-5-mini", "openai::gpt-5-mini"]
    for mini in minis:
        assert mini["cost_usd"] == mini["usage"]["input_tokens"]
    assert existing.returncode == 1
    assert "exists" in existing.stderr
    assert bad.returncode == 2


def test_demo_prices_the_older_track_record_the_same(tmp_path: Path) -> None:
    """With AICM_TRACK_FORMAT=legacy the demo stores the older /track record, and the report
    shows and prices it exactly as the current one."""
    demo = ["demo", "--records", "30", "--json"]
    db = tmp_path / "legacy.sqlite3"
    (legacy,) = run_many([[*demo, "--db", str(db)]], env=aicm_env(AICM_TRACK_FORMAT="legacy"))
    (current,) = run_many([demo])
    assert legacy.returncode == 0, legacy.stderr
    assert current.returncode == 0, current.stderr
    with sqlite3.connect(db) as conn:
        (without_api_id,) = conn.execute(
            "SELECT COUNT(*) FROM track WHERE api_id IS NULL"
        ).fetchone()
    assert without_api_id == 0  # every /track record is the older one
    legacy_result = json.loads(legacy.stdout)
    assert legacy_result["ok"]
    assert legacy_result["report"]["rows"] == json.loads(current.stdout)["report"]["rows"]


def test_demo_shows_progress_on_a_terminal_only() -> None:
    """On a terminal the demo counts the records as it tracks them (N/total, on a bar
    erased once done); piped it shows none (see the cost tables test)."""
    args = ["demo", "--records", "40"]
    code, output = run_in_pty(args)
    assert code == 0, output
    assert "tracking" in output or "Tracker" in output
    assert re.search(r"\d+/\d+", output)
    assert "\x1b[2K" in output
    assert "each exactly once" in output
