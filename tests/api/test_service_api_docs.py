"""The management API's pages: every Python example runs as written against the collector."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aicm.collector import LocalCollector
from tests.service_api_support import API_KEY, price

DOCS = Path(__file__).resolve().parents[2] / "docs"


def run_page(name: str) -> dict[str, Any]:
    """Run the page's ```python blocks in order, in one namespace; return it."""
    text = (DOCS / name).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks, f"{name} has no Python examples"
    namespace: dict[str, Any] = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/{name} block {number}", "exec"), namespace)
    return namespace


@pytest.fixture
def served(collector: LocalCollector, monkeypatch: pytest.MonkeyPatch) -> LocalCollector:
    """The environment the pages describe: AICM_API_BASE at the collector, any key."""
    monkeypatch.setenv("AICM_API_BASE", collector.api_base)
    monkeypatch.setenv("AICM_API_KEY", API_KEY)
    return collector


def test_usage_and_costs_page(served: LocalCollector, capsys: pytest.CaptureFixture[str]) -> None:
    """The usage-and-costs page's examples run; its cost total is the two calls' price."""
    namespace = run_page("usage_and_costs.md")
    out = capsys.readouterr().out
    assert namespace["total"] == price(1200, 300) + price(800, 50)
    assert "1 ['resp-acme-1']" in out
    assert "openai" in namespace["vendors"]
    assert "404" in out
    assert namespace["service"].cost_units[0].cost == Decimal("0.006")


def test_customers_page(served: LocalCollector, capsys: pytest.CaptureFixture[str]) -> None:
    """The customers page's examples run: created, fetched, updated, refused twice, deleted."""
    namespace = run_page("customers.md")
    out = capsys.readouterr().out
    assert namespace["updated"].phone == "+1 555 0100"
    assert namespace["updated"].email == "billing@acme.test"
    assert "gone:" in out
    assert "400" in out


def test_webhooks_page(served: LocalCollector, capsys: pytest.CaptureFixture[str]) -> None:
    """The webhooks page's examples run: two endpoints, one active, one updated, one deleted."""
    namespace = run_page("webhooks.md")
    out = capsys.readouterr().out
    assert "2 1" in out
    assert namespace["changed"].tolerance == 60
    assert "deleted" in out


def test_limits_api_page(served: LocalCollector, capsys: pytest.CaptureFixture[str]) -> None:
    """The limits page's examples run; the progress shown is the tracked call's price."""
    namespace = run_page("limits_api.md")
    out = capsys.readouterr().out
    assert namespace["progress"].current_spend == price(40000, 2000)
    assert namespace["raised"].amount == Decimal("20.00")
    assert "deleted" in out
