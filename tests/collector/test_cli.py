"""``python -m aicm.collector`` as a real subprocess, its options, and the missing-extra error."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aicm.collector import Faults, add_arguments
from aicm.collector._cli import _faults_from_args

from .helpers import CONFIGS, track_record

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "aicm.collector", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if match is None:
        process.kill()
        _, err = process.communicate(timeout=5)
        pytest.fail(f"no URL line from the collector: {line!r} {err}")
    return process, match.group(0)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """A collector subprocess on a free port, with a db file and configs; killed if left."""
    configs = tmp_path / "configs.json"
    configs.write_text(json.dumps({"service_configs": CONFIGS}))
    db = tmp_path / "records.sqlite3"
    process, url = _start("--db", str(db), "--configs", str(configs))
    try:
        yield process, url, db
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_cli_serves_on_a_free_port_and_exits_0_on_a_signal(
    served: tuple[subprocess.Popen[str], str, Path], sig: signal.Signals
) -> None:
    """The subprocess prints its URL, serves the contract, and exits 0 on Ctrl-C or SIGTERM."""
    process, url, db = served
    response = httpx.post(url + "/api/v1/track", json={"tracked": [track_record()]})
    assert response.status_code == 202
    assert httpx.get(url + "/api/v1/configs").json()["service_configs"] == CONFIGS
    assert httpx.get(url + "/_collector/stats").json()["records"]["track"]["stored"] == 1
    process.send_signal(sig)
    _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert db.exists()


def test_the_cli_applies_fault_options_and_reads_the_key_from_the_environment() -> None:
    """Fault flags reach the server; --require-api-key-env takes the key from that variable."""
    process, url = _start(
        "--fail-first", "1", "--failure-status", "429", "--retry-after", "3",
        "--require-api-key-env", "COLLECTOR_TEST_KEY",
        env=_env(COLLECTOR_TEST_KEY="k-42"),
    )  # fmt: skip
    try:
        headers = {"Authorization": "Bearer k-42"}
        first = httpx.get(url + "/api/v1/configs", headers=headers)
        assert (first.status_code, first.headers["retry-after"]) == (429, "3")
        assert httpx.get(url + "/api/v1/configs", headers=headers).status_code == 200
        assert httpx.get(url + "/api/v1/configs").status_code == 401
        assert "k-42" not in process.args  # the key never appears on the command line
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode == 0


def test_the_cli_refuses_a_missing_key_variable_and_a_bad_configs_file(tmp_path: Path) -> None:
    """An unset --require-api-key-env variable or a missing configs file exits 2, saying why."""
    env = _env()
    env.pop("NO_SUCH_VARIABLE_HERE", None)
    base = [sys.executable, "-m", "aicm.collector", "--port", "0"]
    missing = subprocess.run(
        [*base, "--require-api-key-env", "NO_SUCH_VARIABLE_HERE"],
        capture_output=True, text=True, env=env, timeout=20,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "NO_SUCH_VARIABLE_HERE" in missing.stderr
    bad = subprocess.run(
        [*base, "--configs", str(tmp_path / "absent.json")],
        capture_output=True, text=True, env=env, timeout=20,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "absent.json" in bad.stderr


def test_add_arguments_maps_every_fault_flag_onto_faults() -> None:
    """The argparse options (shared with ``aicm serve``) build the matching Faults."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--failure-rate", "0.25", "--failure-status", "500", "--retry-after", "1.5",
            "--latency", "0.1", "--drop-rate", "0.5", "--drop-after-store",
            "--reject-response-id", "a", "--reject-response-id", "b", "--reject-status", "422",
            "--fail-first", "3", "--forge-limits",
        ]
    )  # fmt: skip
    assert _faults_from_args(args) == Faults(
        failure_rate=0.25,
        failure_status=500,
        retry_after=1.5,
        latency=0.1,
        drop_rate=0.5,
        drop_after_store=True,
        reject_response_ids=frozenset({"a", "b"}),
        reject_status=422,
        fail_first=3,
        forge_limits=True,
    )
    defaults = parser.parse_args([])
    assert (defaults.host, defaults.port, defaults.db, defaults.configs) == (
        "127.0.0.1",
        8765,
        None,
        None,
    )
    assert _faults_from_args(defaults) == Faults()


def test_importing_without_the_extra_says_how_to_install_it() -> None:
    """Without starlette/uvicorn, importing aicm.collector raises ImportError naming the extra."""
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("starlette", "uvicorn"):
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, Block())
        try:
            import aicm.collector
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=20
    )
    assert "pip install 'aicm-sdk[collector]'" in result.stdout, result.stderr
