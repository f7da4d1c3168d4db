"""``aicm serve`` keeps its records in a file that lasts, ``aicm report`` finds it, and a
port already taken is one line of error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aicm import Tracker

from .conftest import API_KEY, aicm_env, run_many


@contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[dict[str, Any]]:
    """``aicm serve --port 0 --json`` as a real process: where it listens and keeps its data.
    Stopped with SIGINT, as Ctrl-C stops it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aicm", "serve", "--port", "0", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    try:
        first = process.stdout.readline()
        assert first, process.stderr.read() if process.stderr else ""
        yield json.loads(first)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err


def _track(api_base: str, ids: list[str]) -> None:
    with Tracker(aicm_api_key=API_KEY, aicm_api_base=api_base) as tracker:
        for rid in ids:
            tracker.track("openai", "gpt-5-mini", {"input_tokens": 10}, response_id=rid)


def _report(env: dict[str, str]) -> dict[str, Any]:
    (done,) = run_many([["report", "--json", "--by", "service"]], env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_serve_keeps_records_across_a_restart_and_report_finds_them(tmp_path: Path) -> None:
    """Stopped with Ctrl-C and started again, aicm serve still holds (and serves) the earlier
    records; aicm report reads them without --db. The file is in the user data directory
    (XDG_DATA_HOME, a temporary directory in the tests)."""
    env = aicm_env()
    expected = Path(os.environ["XDG_DATA_HOME"]) / "aicm" / "collector" / "records.sqlite3"
    assert str(tmp_path) in str(expected)  # never the real user directory
    with serving(env, "--data-dir", str(tmp_path / "d")) as first:
        assert first["db"] == str(expected)
        _track(first["api_base"], ["r-1", "r-2"])
    assert expected.is_file()
    assert _report(env)["records"] == 2
    with serving(env, "--data-dir", str(tmp_path / "d")) as second:
        _track(second["api_base"], ["r-3", "r-2"])  # r-2 again: stored once, as before
        (usage,) = run_many(
            [["usage", "--json", "--api-base", second["api_base"]]],
            env=aicm_env(AICM_API_KEY=API_KEY),
        )
    assert usage.returncode == 0, usage.stderr
    assert sorted(e["response_id"] for e in json.loads(usage.stdout)) == ["r-1", "r-2", "r-3"]
    assert _report(env)["records"] == 3


def test_the_store_location_is_overridden_by_env_and_flag(tmp_path: Path) -> None:
    """AICM_COLLECTOR_DB moves the store for serve and report alike; --db wins over it."""
    chosen = tmp_path / "elsewhere" / "mine.sqlite3"
    env = aicm_env(AICM_COLLECTOR_DB=str(chosen))
    with serving(env, "--data-dir", str(tmp_path / "d")) as where:
        assert where["db"] == str(chosen)
        _track(where["api_base"], ["e-1"])
    assert _report(env)["records"] == 1
    flagged = tmp_path / "flag.sqlite3"
    (other,) = run_many([["report", "--db", str(flagged)]], env=env)
    assert other.returncode == 1
    assert f"no collector database at {flagged}" in other.stderr
    (missing,) = run_many([["report"]], env=aicm_env())
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "no collector database at" in missing.stderr


def test_a_port_already_taken_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """aicm serve on a port something listens on: one line naming the port, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (done,) = run_many(
            [["serve", "--port", str(port), "--data-dir", str(tmp_path / "d")]], env=aicm_env()
        )
    assert done.returncode == 1
    assert done.stderr == (
        f"aicm serve: error: port {port} on 127.0.0.1 is already in use: stop what listens "
        "there, or choose another with --port (--port 0 picks a free one)\n"
    )
    assert done.stdout == ""
