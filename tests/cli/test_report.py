"""``aicm report`` on collector databases, and the pricing and summary functions under it."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path

import pytest

from aicm import Tracker
from aicm.cli import main
from aicm.cli._common import CommandError, UsageError
from aicm.cli._pricing import cost_of, default_prices, load_prices, parse_prices, usage_amounts
from aicm.cli._report import UsageEvent, parse_by, print_report, render_csv, summarise
from aicm.collector import LocalCollector

from .conftest import API_KEY, Run, run_many, snapshot

PRICES = {"gpt-5-mini": {"input_tokens": 0.5, "output_tokens": 2.0}, "cfg-svc": {"seconds": 3.0}}


def _genai_cost(model: str, **tokens: int) -> float:
    """What genai-prices itself says ``tokens`` of OpenAI's ``model`` cost."""
    import genai_prices

    usage = genai_prices.Usage(**tokens)
    return float(genai_prices.calc_price(usage, model, provider_id="openai").total_price)


@pytest.fixture(scope="module")
def collector_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A collector database holding known /track and /track-usage records (collector stopped)."""
    path = tmp_path_factory.mktemp("report") / "records.sqlite3"
    configs = [{"config_id": "cfg", "api_id": "cfg"}]
    with LocalCollector(db_path=path, configs=configs) as collector:
        options = {"aicm_api_key": API_KEY, "aicm_api_base": collector.api_base}
        # One service in both /track record forms: the report groups them as one.
        with Tracker(**options) as current, Tracker(**options, track_format="legacy") as legacy:
            for tracker, customer, tokens in [
                (current, "acme", 10),
                (legacy, "acme", 20),
                (current, "globex", 5),
            ]:
                tracker.track(
                    "openai",
                    "gpt-5-mini",
                    {"input_tokens": tokens, "output_tokens": 1, "model": "x"},
                    client_customer_key=customer,
                    timestamp="2025-03-01T23:30:00-02:00",  # 2025-03-02 in UTC
                )
            legacy.track("other", "unpriced-svc", {"calls": 4}, timestamp="2025-03-01T10:00:00Z")
        with Tracker("cfg", "cfg-svc", **options) as tracker:
            tracker.track({"seconds": 1.5}, client_customer_key="globex")
    return path


@pytest.fixture
def prices_file(tmp_path: Path) -> Path:
    """A price table file with round numbers."""
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    return path


def test_report_groups_usage_and_cost_by_service_customer_and_day(
    aicm: Run, collector_db: Path, prices_file: Path
) -> None:
    """report --json: rows by service, customer and (UTC) day, costs at the table's rates."""
    done = aicm("report", "--db", str(collector_db), "--prices", str(prices_file), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["by"] == ["service", "customer", "day"]
    assert summary["rows"] == [
        {
            "service": "cfg-svc",
            "customer": "globex",
            "day": summary["rows"][0]["day"],
            "records": 1,
            "usage": {"seconds": 1.5},
            "cost_usd": 4.5,
            "unpriced_records": 0,
        },
        {
            "service": "openai::gpt-5-mini",
            "customer": "acme",
            "day": "2025-03-02",
            "records": 2,
            "usage": {"input_tokens": 30, "output_tokens": 2},
            "cost_usd": 19.0,
            "unpriced_records": 0,
        },
        {
            "service": "openai::gpt-5-mini",
            "customer": "globex",
            "day": "2025-03-02",
            "records": 1,
            "usage": {"input_tokens": 5, "output_tokens": 1},
            "cost_usd": 4.5,
            "unpriced_records": 0,
        },
        {
            "service": "other::unpriced-svc",
            "customer": "-",
            "day": "2025-03-01",
            "records": 1,
            "usage": {"calls": 4},
            "cost_usd": 0.0,
            "unpriced_records": 1,
        },
    ]
    assert summary["records"] == 5
    assert summary["cost_usd"] == 28.0
    assert summary["unpriced"] == ["other::unpriced-svc"]
    assert summary["unpriced_records"] == 1
    assert summary["unpriced_by_service"] == {"other::unpriced-svc": 1}
    assert [(r["customer"], r["cost_usd"]) for r in summary["by_customer"]] == [
        ("-", 0.0),
        ("acme", 19.0),
        ("globex", 9.0),
    ]


def test_report_text_csv_and_by(aicm: Run, collector_db: Path, prices_file: Path) -> None:
    """The table shows totals per service and customer; --csv gives one column per metric."""
    text, table = run_many(
        [
            ["report", "--db", str(collector_db), "--prices", str(prices_file), "--by", "service"],
            [
                "report",
                "--db",
                str(collector_db),
                "--prices",
                str(prices_file),
                "--csv",
                "--by",
                "customer,service",
            ],
        ]
    )
    assert text.returncode == 0, text.stderr
    assert "Totals by customer" in text.stdout
    assert "Totals by service" not in text.stdout  # the rows already are
    assert "5 records, total $28.000000" in text.stdout
    assert "1 unpriced record(s), not in the total" in text.stdout
    assert "no price for: other::unpriced-svc (1)" in text.stdout
    assert "unpriced (1)" in text.stdout  # the row's cost, not $0
    assert "\033[" not in text.stdout
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert list(rows[0]) == [
        "customer",
        "service",
        "records",
        "calls",
        "input_tokens",
        "output_tokens",
        "seconds",
        "cost_usd",
    ]
    acme = next(r for r in rows if r["customer"] == "acme")
    assert (acme["records"], acme["input_tokens"], float(acme["cost_usd"])) == ("2", "30", 19.0)


def test_report_reads_a_running_collectors_file_without_changing_it(
    aicm: Run, collector: LocalCollector
) -> None:
    """A live collector's database can be reported on; its file is not written to."""
    with Tracker(aicm_api_key=API_KEY, aicm_api_base=collector.api_base) as tracker:
        tracker.track("openai", "gpt-5-mini", {"input_tokens": 1_000_000})
    db = Path(collector.db_path)
    before = snapshot(db)
    done = aicm("report", "--db", str(db), "--by", "service", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["rows"]
    assert row["cost_usd"] == pytest.approx(_genai_cost("gpt-5-mini", input_tokens=1_000_000))
    assert snapshot(db) == before


def test_report_refuses_bad_input_in_one_line(
    collector_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad --by or formats exit 2; missing/corrupt db or bad prices exit 1, files untouched."""
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(os.urandom(2048))
    bad_prices = tmp_path / "bad.json"
    bad_prices.write_text('{"gpt-5": {"input_tokens": -1}, "x": 3}')
    not_json = tmp_path / "broken.json"
    not_json.write_text("{\n  'no'")
    before = snapshot(garbage), snapshot(collector_db)
    time.sleep(0.01)
    db = ["--db", str(collector_db)]
    calls = [
        (["report", *db, "--by", "service,week"], 2, "--by"),
        (["report", "--db", str(tmp_path / "missing.sqlite3")], 1, "no collector database"),
        (["report", "--db", str(garbage)], 1, "not a usable collector database"),
        (["report", *db, "--prices", str(bad_prices)], 1, "a rate must be a number >= 0"),
    ]
    for (_args, code, words), done in zip(calls, run_many([c[0] for c in calls]), strict=True):
        assert done.returncode == code, done
        assert words in done.stderr, done
        assert "Traceback" not in done.stderr
    in_process = [
        (["report", *db, "--by", "service,service"], 2, "twice"),
        (["report", *db, "--json", "--csv"], 2, "not allowed"),
        (["report"], 1, "no collector database at"),  # where aicm serve keeps one
        (["report", *db, "--prices", str(not_json)], 1, "broken.json:2: not valid JSON"),
        (["report", *db, "--prices", str(tmp_path / "nope.json")], 1, "no price table"),
    ]
    for args, code, words in in_process:
        assert main(args) == code, args
        err = capsys.readouterr().err
        assert words in err
    assert (snapshot(garbage), snapshot(collector_db)) == before
    assert not (tmp_path / "missing.sqlite3").exists()


def test_usage_amounts_flatten_and_name_a_bare_number() -> None:
    """Nested metrics are dotted; a bare number takes the service's only priced metric."""
    usage = {"input_tokens": 3, "details": {"cached": 2, "note": "x"}, "flag": True, "n": [1]}
    assert usage_amounts(usage) == {"input_tokens": 3.0, "details.cached": 2.0}
    assert usage_amounts(12, {"duration": 0.5}) == {"duration": 12.0}
    assert usage_amounts(12, {"a": 1.0, "b": 2.0}) == {"units": 12.0}
    assert usage_amounts("text") == {}
    # Not amounts either: numbers no float holds (a row another program wrote, say).
    assert usage_amounts({"huge": 10**400, "nan": math.nan, "ok": 1}) == {"ok": 1.0}
    assert usage_amounts(10**400) == {}


def test_cost_is_the_sum_of_amount_times_rate() -> None:
    """Metrics without a rate, and services without prices, cost nothing."""
    rates = {"input_tokens": 0.25e-6, "output_tokens": 2e-6}
    amounts = {"input_tokens": 1e6, "output_tokens": 1e6, "images": 4.0}
    assert cost_of(amounts, rates) == pytest.approx(2.25)
    assert cost_of(amounts, None) == 0.0


def test_parse_prices_names_every_problem() -> None:
    """A bad table is refused with all its problems in one message."""
    with pytest.raises(CommandError) as caught:
        parse_prices({"a": {"x": "1", "y": math.inf, "z": 10**5000}, "b": [1]}, source="t.json")
    message = str(caught.value)
    assert message.startswith("t.json: ")
    assert "'a'.'x'" in message
    assert "'a'.'y'" in message
    assert "'a'.'z': a rate must be a number >= 0, got an integer of 16610 bits" in message
    assert "'b': expected an object" in message
    with pytest.raises(CommandError, match="expected a JSON object"):
        parse_prices([1])
    assert load_prices(None) == default_prices()
    assert default_prices()["api.heygen.com/v2/streaming.list"] == {"duration": 0.0125}


def test_summarise_groups_and_totals_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    """Rows, per-service and per-customer totals all add up to the grand total."""
    events = [
        UsageEvent(service="s", customer=c, day=d, usage={"u": n})
        for c, d, n in [("a", "d1", 1), ("a", "d2", 2), ("b", "d1", 3), ("b", "d1", 0.1)]
    ]
    summary = summarise(events, {"s": {"u": 0.1}}, by=("customer", "day"))
    assert [(r["customer"], r["day"], r["records"]) for r in summary["rows"]] == [
        ("a", "d1", 1),
        ("a", "d2", 1),
        ("b", "d1", 2),
    ]
    assert summary["cost_usd"] == pytest.approx(0.61)
    assert sum(r["cost_usd"] for r in summary["by_customer"]) == pytest.approx(0.61)
    assert summary["by_service"][0]["usage"] == {"u": 6.1}
    print_report(summary)
    assert "Totals by service" in capsys.readouterr().out
    assert render_csv(summary).splitlines()[0] == "customer,day,records,u,cost_usd"
    assert parse_by(" day , service") == ("day", "service")
    with pytest.raises(UsageError):
        parse_by("")


def test_report_days_and_prices_the_service_sdks_epoch_timestamps(
    aicm: Run, collector: LocalCollector
) -> None:
    """A current record stamped in epoch seconds (as the service's own SDK sends it) lands
    on its UTC day and is priced by its model's rates."""
    import httpx

    record = {
        "service_key": "openai::gpt-5-mini",
        "response_id": "epoch-1",
        "timestamp": "1740873600.5",  # 2025-03-02T00:00:00.5Z
        "payload": {"input_tokens": 1_000_000},
        "customer_key": "acme",
    }
    answer = httpx.post(collector.url + "/track", json={"tracked": [record]})
    assert answer.status_code == 202
    done = aicm("report", "--db", collector.db_path, "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["rows"]
    assert (row["service"], row["customer"], row["day"]) == (
        "openai::gpt-5-mini",
        "acme",
        "2025-03-02",
    )
    assert row["cost_usd"] == pytest.approx(_genai_cost("gpt-5-mini", input_tokens=1_000_000))
