"""``aicm limits`` against a running collector, and ``aicm serve`` with limits end to end."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aicm import Tracker
from aicm.collector import LocalCollector
from tests.service_api_support import price

from .conftest import Run, aicm_env

KEY = "sk-secret-part.key-0001"


@pytest.fixture
def env(collector: LocalCollector) -> dict[str, str]:
    """The subprocess environment pointing ``aicm limits`` at the collector."""
    return aicm_env(AICM_API_BASE=collector.api_base, AICM_API_KEY=KEY)


def test_set_list_progress_and_remove(
    aicm: Run, collector: LocalCollector, env: dict[str, str]
) -> None:
    """set creates (then --id changes) a limit; list and progress show it; remove deletes it."""
    made = aicm(
        "limits", "set", "--amount", "1", "--period", "day", "--service", "openai::gpt-5-mini",
        "--customer", "acme", "--message", "daily budget", "--json", env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    limit = json.loads(made.stdout)
    assert (limit["threshold_type"], limit["amount"], limit["client"]) == ("limit", 1, "acme")
    changed = aicm("limits", "set", "--id", limit["uuid"], "--type", "alert", "--json", env=env)
    assert json.loads(changed.stdout)["threshold_type"] == "alert"
    with Tracker(aicm_api_key=KEY, aicm_api_base=collector.api_base) as tracker:
        tracker.track("openai", "gpt-5-mini", {"input_tokens": 1_000_000}, customer_key="acme")
    listed = aicm("limits", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert limit["uuid"] in listed.stdout
    assert "openai::gpt-5-mini" in listed.stdout
    progress = aicm("limits", "progress", "--json", env=env)
    (row,) = json.loads(progress.stdout)
    spent = price(1_000_000, 0)
    assert (row["current_spend"], row["remaining_amount"]) == (float(spent), float(1 - spent))
    table = aicm("limits", "progress", env=env)
    assert f"${spent:.6f}" in table.stdout
    removed = aicm("limits", "remove", limit["uuid"], env=env)
    assert removed.returncode == 0, removed.stderr
    assert collector.limits() == []
    assert aicm("limits", "list", env=env).stdout.strip() == "no usage limits"


def test_mistakes_exit_with_one_line(
    aicm: Run, collector: LocalCollector, env: dict[str, str]
) -> None:
    """A new limit without amount is a usage error (2); a refused or unknown limit, and a
    missing key, fail (1) with the reason on one line; the key is never printed."""
    missing = aicm("limits", "set", "--period", "day", env=env)
    assert missing.returncode == 2
    assert "--amount" in missing.stderr
    refused = aicm("limits", "set", "--amount", "-3", "--period", "day", env=env)
    assert refused.returncode == 1
    assert "amount" in refused.stderr
    unknown = aicm("limits", "remove", "no-such-limit", env=env)
    assert unknown.returncode == 1
    assert "404" in unknown.stderr
    no_key = aicm("limits", "list", env=aicm_env(AICM_API_BASE=collector.api_base))
    assert no_key.returncode == 1
    assert "AICM_API_KEY" in no_key.stderr
    for done in (missing, refused, unknown):
        assert KEY not in done.stderr + done.stdout
        assert len(done.stderr.strip().splitlines()) <= 1 or "usage:" in done.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``aicm serve`` in a subprocess with a data directory: its URL and the printed key."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aicm", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=aicm_env(),
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    lines = [process.stdout.readline() for _ in range(10)]
    try:
        url = re.search(r"http://[\d.]+:\d+", first)
        assert url is not None, first
        pem = "".join(lines[1:]).strip()
        assert pem.startswith("-----BEGIN PUBLIC KEY-----"), lines
        assert (tmp_path / "d" / "public_key.pem").read_text().strip() == pem
        yield url.group(0), pem
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_serve_prints_its_key_and_the_service_sdk_obeys_its_limits(
    aicm: Run, served: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against `aicm serve`: the printed public key verifies the answers, and the service's
    own SDK raises its UsageLimitExceeded once a limit set with `aicm limits` triggers."""
    aicostmanager = pytest.importorskip("aicostmanager")
    from aicostmanager.client.exceptions import UsageLimitExceeded
    from aicostmanager.triggered_limits_cache import triggered_limits_cache

    url, pem = served
    env = aicm_env(AICM_API_BASE=url, AICM_API_KEY=KEY)
    made = aicm("limits", "set", "--amount", "1", "--period", "day", "--service",
                "openai::gpt-5-mini", "--json", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    public = httpx.get(url + "/_collector/public-key").json()
    assert public["public_key"].strip() == pem
    ini = tmp_path / "AICM.INI"
    ini.write_text("[tracker]\nAICM_LIMITS_ENABLED = true\n")
    monkeypatch.setenv("AICM_API_BASE", url)
    monkeypatch.setenv("AICM_LOG_FILE", str(tmp_path / "sdk.log"))
    triggered_limits_cache.clear()
    try:
        with aicostmanager.Tracker(aicm_api_key=KEY, ini_path=str(ini)) as tracker:
            tracker.track("openai::gpt-5-mini", {"input_tokens": 3_000_000})
            with pytest.raises(UsageLimitExceeded):
                tracker.track("openai::gpt-5-mini", {"input_tokens": 1_000_000})
    finally:
        triggered_limits_cache.clear()
    records = httpx.get(url + "/_collector/records", params={"kind": "track"}).json()
    assert records["count"] == 2


def test_a_huge_answer_is_refused_past_16_mib(aicm: Run) -> None:
    """A service answering ``aicm limits list`` with 100 MiB: the command fails on one line
    naming the limit, having read about 16 MiB of it, not the whole answer."""
    sent: list[int] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        total = 0
        with conn:
            try:
                while b"\r\n\r\n" not in conn.recv(65536):
                    pass
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                block = b"[" + b" " * 65535
                while total < 100 << 20:
                    conn.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                    total += len(block)
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the command hung up: what this test is here to see
            finally:
                sent.append(total)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.getsockname()[1]}"
        done = aicm("limits", "list", env=aicm_env(AICM_API_BASE=base, AICM_API_KEY=KEY))
        thread.join(30)
    finally:
        server.close()
    assert done.returncode == 1
    assert "larger than 16777216 bytes" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert len(sent) == 1
    assert sent[0] < (16 << 20) + (16 << 20)  # plus what the socket buffers held
