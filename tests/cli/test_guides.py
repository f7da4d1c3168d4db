"""The integration guides' code, run as the guides say, against local collectors.

The code of each guide lives in ``docs/guides/*.py`` and is included into its page as is,
so a change that breaks a guide fails here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from aicm.collector import LocalCollector

from .conftest import API_KEY, REPO

GUIDES = REPO / "docs" / "guides"
HAVE_DJANGO = importlib.util.find_spec("django") is not None
SCRIPTS = ["script.py", "prefork_worker.py", "trio_app.py"] + (
    ["django_view.py"] if HAVE_DJANGO else []
)

Outcome = tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Every script guide run at once, each as ``python docs/guides/NAME`` with its own
    collector; its result and the records its collector stored."""
    home = tmp_path_factory.mktemp("guides")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    base_env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"))
    base_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    collectors = {name: LocalCollector().start() for name in SCRIPTS}
    try:
        processes = {
            name: subprocess.Popen(
                [sys.executable, str(GUIDES / name)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=home,
                env={**base_env, "AICM_API_KEY": API_KEY, "AICM_API_BASE": c.api_base},
            )
            for name, c in collectors.items()
        }
        outcomes: dict[str, Outcome] = {}
        for name, process in processes.items():
            out, err = process.communicate(timeout=60)
            done = subprocess.CompletedProcess(name, process.returncode, out, err)
            outcomes[name] = (done, collectors[name].records("track"))
        yield outcomes
    finally:
        for c in collectors.values():
            c.stop()


def _ok(outcome: Outcome) -> list[dict[str, Any]]:
    done, records = outcome
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return records


def test_plain_script_guide_delivers_now_and_at_exit(ran: dict[str, Outcome]) -> None:
    """The script's IMMEDIATE record and its 100 queued ones (delivered at exit) all arrive."""
    records = _ok(ran["script.py"])
    assert ran["script.py"][0].stdout.splitlines() == ["queued True"]
    customers = [r.get("customer_key") for r in records]
    assert (customers.count("acme"), customers.count("globex")) == (1, 100)
    assert sorted(r["payload"]["input_tokens"] for r in records[1:]) == list(range(100))


def test_prefork_guide_delivers_every_job_from_forked_workers(ran: dict[str, Outcome]) -> None:
    """20 jobs tracked in forked pool workers: 20 records, each delivered once."""
    records = _ok(ran["prefork_worker.py"])
    # Which of the two workers takes which jobs is the pool's business: one may take all.
    assert re.fullmatch(
        r"[12] worker processes tracked 20 jobs\n", ran["prefork_worker.py"][0].stdout
    )
    assert sorted(r["payload"]["input_tokens"] for r in records) == [100 + j for j in range(20)]
    assert len({r["response_id"] for r in records}) == 20


def test_trio_guide_delivers_every_task(ran: dict[str, Outcome]) -> None:
    """The nursery's 10 tasks are all delivered by the end of the `async with`."""
    records = _ok(ran["trio_app.py"])
    assert sorted(r["payload"]["input_tokens"] for r in records) == [50 * j for j in range(10)]
    assert {r["service_key"] for r in records} == {"anthropic::claude-sonnet"}


@pytest.mark.skipif(not HAVE_DJANGO, reason="django is not installed (pip install django)")
def test_django_guide_tracks_each_request(ran: dict[str, Outcome]) -> None:
    """Three requests to the Django view: three records with the customer from the query."""
    records = _ok(ran["django_view.py"])
    assert ran["django_view.py"][0].stdout.strip() == "3 requests served, 0 records left"
    assert [r["customer_key"] for r in records] == ["acme", "globex", "acme"]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"guide_{name}", GUIDES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fastapi_guide_tracks_in_the_lifespan(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    """The FastAPI app's lifespan tracker records each request and delivers at shutdown."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("AICM_API_KEY", API_KEY)
    monkeypatch.setenv("AICM_API_BASE", collector.api_base)
    guide = _load("fastapi_app")
    with TestClient(guide.app) as client:
        for customer in ("acme", "globex"):
            assert client.post("/summarise", params={"customer": customer}).status_code == 200
    records = collector.records("track")
    assert [r["customer_key"] for r in records] == ["acme", "globex"]
    assert records[0]["payload"] == {"input_tokens": 812, "output_tokens": 96}


@pytest.mark.parametrize(
    ("page", "code"),
    [
        ("fastapi.md", "fastapi_app.py"),
        ("django.md", "django_view.py"),
        ("prefork.md", "prefork_worker.py"),
        ("scripts.md", "script.py"),
        ("trio.md", "trio_app.py"),
    ],
)
def test_each_guide_page_shows_the_tested_code(page: str, code: str) -> None:
    """The page shows the very file the tests run (tests/test_docs_source.py checks that the
    block is the file's current text)."""
    marker = f"<!-- docs/guides/{code}: this block is that file, which the tests run -->"
    assert marker in (GUIDES / page).read_text(encoding="utf-8")
