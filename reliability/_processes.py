"""Processes the reliability runs drive: the collector as a subprocess, and producers.

The collector runs as ``python -m aicm.collector`` (its own process, so its CPU is not the
runner's) and is steered through its admin endpoints; producers are
``python -m reliability._producer`` processes whose printed lines are the oracle.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "rel-key-0123456789abcdef"

# Time compressed: an outage of seconds stands for one of minutes at the default settings.
FAST_SETTINGS = {
    "AICM_BACKOFF_BASE": "0.02",
    "AICM_BACKOFF_CAP": "0.25",
    "AICM_AUTH_RETRY_INTERVAL": "0.2",
    "AICM_BATCH_INTERVAL": "0.05",
    "AICM_LEASE_SECONDS": "1.0",
    "AICM_MAX_BATCH_SIZE": "250",
    "AICM_TIMEOUT": "5",
    "AICM_CLOSE_TIMEOUT": "30",
}


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus every ``AICM_*``, plus the repo on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


class CollectorProcess:
    """``python -m aicm.collector`` on a free loopback port, steered over its admin API."""

    def __init__(self, db_path: Path, *, seed: int = 0) -> None:
        self.db_path = db_path
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "aicm.collector", "--port", "0"),
                *("--db", str(db_path), "--seed", str(seed)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=base_env(),
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = _readline_within(self.proc.stdout, 30.0)
        found = re.search(r"listening on (http://[^\s]+)", line or "")
        if found is None:
            self.stop()
            raise RuntimeError(f"the collector did not start: {line!r}")
        self.api_base = found.group(1)
        self._http = httpx.Client(base_url=self.api_base, timeout=30.0)

    def set_faults(self, faults: Mapping[str, Any]) -> None:
        """Put these ``Faults`` fields in force (absent ones off)."""
        self._http.post("/_collector/faults", json=dict(faults)).raise_for_status()

    def set_configs(self, configs: Sequence[Mapping[str, Any]]) -> None:
        """Serve these service configs."""
        self._http.post("/_collector/configs", json=list(configs)).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """The collector's statistics."""
        data: dict[str, Any] = self._http.get("/_collector/stats").raise_for_status().json()
        return data

    def records(self, kind: str = "track") -> list[dict[str, Any]]:
        """Every stored record of ``kind``."""
        answer = self._http.get("/_collector/records", params={"kind": kind}).raise_for_status()
        records: list[dict[str, Any]] = answer.json()["records"]
        return records

    def stop(self) -> None:
        """Stop the collector (SIGTERM, then SIGKILL after 10 s)."""
        if getattr(self, "_http", None) is not None:
            self._http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _readline_within(stream: IO[str], timeout: float) -> str | None:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else None


class Producer:
    """One ``reliability._producer`` process; its complete printed lines, collected live."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reliability._producer", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env),
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self.stderr = ""
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            # A line the kill cut short was never wholly printed: it promises nothing.
            if line.endswith("\n"):
                text = line[:-1]
                if text == "ready":
                    self.ready.set()
                else:
                    self.lines.append(text)
        self.ready.set()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def kill(self) -> None:
        """SIGKILL it and wait for its output to end."""
        self.proc.send_signal(signal.SIGKILL)
        self._finish(30.0)

    def stop(self, timeout: float = 90.0) -> int:
        """Ask it to close (a ``stop`` line), wait, and return its exit status."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        return self._finish(timeout)

    def _finish(self, timeout: float) -> int:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        self._err_reader.join(10)
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        return self.proc.returncode

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until it has built its tracker; False if it died or took too long."""
        deadline = time.monotonic() + timeout
        return self.ready.wait(max(0.0, deadline - time.monotonic())) and self.proc.poll() is None
