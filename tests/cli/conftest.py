"""Fixtures for the ``aicm`` command's tests: running it as a subprocess, and queue files."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aicm import Tracker
from aicm.collector import Faults, LocalCollector

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123456789abcdef"
DEAD_IDS = ("dead-1", "dead-2")
PENDING = 5

Run = Callable[..., subprocess.CompletedProcess[str]]


def aicm_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: this test's (already isolated), aicm importable."""
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_aicm(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m aicm ARGS`` as a real subprocess (stdin not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "aicm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env if env is not None else aicm_env(),
        timeout=timeout,
    )


def run_many(
    calls: list[list[str]], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``python -m aicm`` calls at once (each a real subprocess); their results."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "aicm", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env if env is not None else aicm_env(),
        )
        for args in calls
    ]
    results = []
    for args, process in zip(calls, processes, strict=True):
        out, err = process.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(args, process.returncode, out, err))
    return results


@pytest.fixture
def aicm() -> Run:
    """``aicm(*args, env=..., stdin=...)`` runs the command in a subprocess."""
    return run_aicm


def make_queue(path: Path, collector: LocalCollector) -> None:
    """Two dead-lettered rows and PENDING pending ones, made by the SDK itself."""
    collector.set_faults(Faults(reject_response_ids=frozenset(DEAD_IDS)))
    options = {
        "delivery_type": "persistent_queue",
        "db_path": str(path),
        "aicm_api_key": API_KEY,
        "aicm_api_base": collector.api_base,
    }
    with Tracker(**options) as tracker:
        for rid in DEAD_IDS:
            tracker.track("openai", "gpt-5-mini", {"input_tokens": 1}, response_id=rid)
        assert tracker.flush(30) == 0
        assert tracker.health().dead_lettered == 2
    # Each pending row is tried once and refused before the tracker closes (a close that
    # came first would leave rows never tried, with no error to show); the Retry-After
    # keeps a second try, which the close would interrupt, from starting.
    collector.set_faults(Faults(failure_rate=1.0, retry_after=3600))
    tracker = Tracker(**options)
    for i in range(PENDING):
        tracker.track(
            "openai",
            "gpt-5-mini",
            {"input_tokens": 100 + i, "output_tokens": 10},
            response_id=f"pending-{i}",
            client_customer_key="acme",
        )
    deadline = time.monotonic() + 30
    while _tried_once(path) < PENDING and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tracker.close(timeout=5) == PENDING
    collector.set_faults(Faults())
    assert _tried_once(path) == PENDING


def _tried_once(path: Path) -> int:
    """Pending rows that were sent, refused with an error, and given back (not leased)."""
    with sqlite3.connect(path) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM records WHERE state = 0 AND attempts >= 1"
            " AND last_error IS NOT NULL AND lease_owner IS NULL"
        ).fetchone()
    conn.close()
    return int(n)


@pytest.fixture(scope="session")
def queue_template(
    session_collector: LocalCollector, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A queue file made once per session (copied for each test)."""
    path = tmp_path_factory.mktemp("queue") / "template.db"
    make_queue(path, session_collector)
    session_collector.clear()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    return path


@pytest.fixture
def queue_file(queue_template: Path, tmp_path: Path, collector: LocalCollector) -> Path:
    """A fresh copy of the session's queue file: 2 dead rows, 5 pending (for the collector)."""
    path = tmp_path / "queue.db"
    shutil.copyfile(queue_template, path)
    return path


def states(path: Path) -> dict[str, int]:
    """Rows by state, read straight from the file (0 pending, 1 dead)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT state, count(*) FROM records GROUP BY state").fetchall()
    conn.close()
    names = {0: "pending", 1: "dead"}
    return {names[s]: n for s, n in rows}


def snapshot(path: Path) -> tuple[bytes, int]:
    """A file's bytes and modification time, to show it was left untouched."""
    return path.read_bytes(), path.stat().st_mtime_ns
