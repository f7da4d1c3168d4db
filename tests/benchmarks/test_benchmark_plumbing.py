"""The benchmarks' plumbing: the load generator stops by itself, wrk's report is read right,
and ``--compare`` matches, combines and flags figures as it says."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks._compare import Figure, combine, compare, figures_of, render
from benchmarks._load import generate, parse_wrk
from tests.fakes import BackgroundServer


async def _answer(request: Request) -> JSONResponse:
    if request.query_params.get("fail"):
        return JSONResponse({"error": "no"}, status_code=500)
    return JSONResponse({"ok": True})


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """A small JSON app on loopback."""
    with BackgroundServer(Starlette(routes=[Route("/", _answer)])) as server:
        yield server.url


def test_generator_runs_for_its_duration(app_url: str) -> None:
    """Requests complete on every connection; the round ends about when its duration does."""
    started = time.monotonic()
    result = asyncio.run(generate(app_url + "/", connections=4, duration=0.3))
    elapsed = time.monotonic() - started
    assert result.requests > 4
    assert result.errors == 0
    assert 0.3 <= elapsed < 2.0
    assert result.p50_ms is not None
    assert result.p99_ms is not None
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.rate == pytest.approx(result.requests / result.seconds)


def test_generator_stops_at_max_requests(app_url: str) -> None:
    """With a request budget, exactly that many requests are made, however long it allows."""
    result = asyncio.run(generate(app_url + "/", connections=3, duration=30, max_requests=25))
    assert result.requests == 25
    assert result.seconds < 10


def test_generator_counts_non_2xx_as_errors(app_url: str) -> None:
    """An error status is an error, not a completed request."""
    result = asyncio.run(generate(app_url + "/?fail=1", connections=2, duration=30, max_requests=6))
    assert (result.requests, result.errors) == (0, 6)


def test_generator_stops_when_the_server_never_answers() -> None:
    """A server that accepts and never answers: the round still ends, every wait an error."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # connections complete in the backlog; nothing ever reads them
        port = sock.getsockname()[1]
        started = time.monotonic()
        result = asyncio.run(
            generate(f"http://127.0.0.1:{port}/", connections=3, duration=0.2, response_timeout=0.5)
        )
        elapsed = time.monotonic() - started
    assert result.requests == 0
    assert result.errors >= 3
    assert elapsed < 2.0


def test_generator_stops_when_the_port_is_closed() -> None:
    """Refused connections are errors, retried after a pause, until the duration ends."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = asyncio.run(generate(f"http://127.0.0.1:{port}/", connections=2, duration=0.2))
    assert time.monotonic() - started < 2.0
    assert result.requests == 0
    assert 2 <= result.errors < 200  # paused between attempts, not spinning


WRK_REPORT = """\
Running 2s test @ http://127.0.0.1:40123/chat
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.66ms    2.08ms  29.90ms   97.23%
    Req/Sec     5.63k   589.82     6.24k    90.00%
  Latency Distribution
     50%  950.00us
     75%    1.40ms
     90%    1.86ms
     99%   11.21ms
  11208 requests in 2.00s, 2.30MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   5596.95
Transfer/sec:      1.15MB
"""


def test_parse_wrk_reads_requests_percentiles_and_errors() -> None:
    """Counts, seconds, p50/p99 in ms (from us and ms), and socket and status errors."""
    result = parse_wrk(WRK_REPORT)
    assert (result.requests, result.seconds) == (11208, 2.0)
    assert result.p50_ms == pytest.approx(0.95)
    assert result.p99_ms == pytest.approx(11.21)
    assert result.errors == 7
    assert result.rate == pytest.approx(5604.0)


def test_parse_wrk_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="not a wrk report"):
        parse_wrk("wrk: command failed")


# -- --compare ----------------------------------------------------------------------------------


def _report(*measures: tuple[str, str, float | None, str], name: str = "s") -> dict[str, object]:
    """A run's JSON; subjects named ``floor...`` are floors, the others aicm's."""
    return {
        "scenarios": [
            {
                "name": name,
                "measures": [
                    {
                        "subject": subject,
                        "unit": unit,
                        "better": better,
                        "median": median,
                        "role": "floor" if subject.startswith("floor") else "aicm",
                    }
                    for subject, better, median, unit in measures
                ],
            },
            {"name": "broken", "error": "stopped after 50 s"},
        ]
    }


def test_figures_of_keys_by_scenario_and_subject_and_skips_the_unmeasured() -> None:
    report = _report(("a", "lower", 2.0, "us"), ("b", "higher", None, "req/s"))
    assert figures_of(report) == {("s", "a"): Figure("us", "lower", 2.0)}


def test_combine_takes_the_median_of_the_runs() -> None:
    runs = [
        figures_of(_report(("a", "lower", value, "us"), ("b", "lower", 1.0, "us")))
        for value in (3.0, 1.0, 2.0)
    ]
    runs.append(figures_of(_report(("c", "lower", 5.0, "us"))))
    combined = combine(runs)
    assert combined[("s", "a")].value == 2.0
    assert combined[("s", "b")].value == 1.0
    assert combined[("s", "c")].value == 5.0


def test_compare_flags_worse_by_more_than_ten_percent_either_way() -> None:
    rev = figures_of(
        _report(
            ("cost", "lower", 10.0, "us"),
            ("cost ok", "lower", 10.0, "us"),
            ("rate", "higher", 100.0, "req/s"),
            ("rate ok", "higher", 100.0, "req/s"),
            ("zero", "lower", 0.0, "ms"),
            ("gone", "lower", 1.0, "us"),
        )
    )
    work = figures_of(
        _report(
            ("cost", "lower", 11.5, "us"),
            ("cost ok", "lower", 10.9, "us"),
            ("rate", "higher", 85.0, "req/s"),
            ("rate ok", "higher", 120.0, "req/s"),
            ("zero", "lower", 0.5, "ms"),
            ("new", "lower", 1.0, "us"),
        )
    )
    rows, only_rev, only_work = compare(rev, work)
    by_name = {row.key[1]: row for row in rows}
    assert list(by_name) == ["cost", "cost ok", "rate", "rate ok", "zero"]
    assert by_name["cost"].ratio == pytest.approx(1.15)
    assert [name for name, row in by_name.items() if row.worse] == ["cost", "rate"]
    assert by_name["zero"].ratio is None
    assert only_rev == [("s", "gone")]
    assert only_work == [("s", "new")]
    text = render(rows, only_rev, only_work, "abc123")
    assert "5 figures compared; 2 worse by more than 10% on the working tree, 2 of them" in text
    assert text.count("WORSE >10%") == 2
    assert "only in abc123 (1):\n  s: gone" in text
    assert "only in the working tree (1):\n  s: new" in text


def test_summary_gauges_noise_by_the_floors() -> None:
    """Floors run the same code on both sides: how far they moved is reported as the noise,
    as cost ratios (a rate that fell counts as a cost that rose)."""
    rev = figures_of(
        _report(
            ("floor a", "lower", 10.0, "us"),
            ("floor b", "higher", 100.0, "req/s"),
            ("mine", "lower", 10.0, "us"),
        )
    )
    work = figures_of(
        _report(
            ("floor a", "lower", 12.0, "us"),
            ("floor b", "higher", 80.0, "req/s"),
            ("mine", "lower", 10.5, "us"),
        )
    )
    rows, _, _ = compare(rev, work)
    text = render(rows, [], [], "rev")
    assert "3 figures compared; 2 worse by more than 10% on the working tree, 0 of them" in text
    assert "aicm's own (of 1)" in text
    assert "the 2 baselines and floors (the same code on both sides) moved 1.20x to 1.25x" in text
