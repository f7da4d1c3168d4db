"""kill -9 at random moments loses no committed record and sends none twice to storage."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from delivery_helpers import duplicates, stored_ids

from aicm.collector import LocalCollector

HERE = Path(__file__).parent
RUNS = 10


def producer_env(collector: LocalCollector, api_key: str) -> dict[str, str]:
    """The producer's environment: the collector, the key, short leases."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    env.update(
        AICM_API_KEY=api_key,
        AICM_API_BASE=collector.api_base,
        AICM_LEASE_SECONDS="0.5",
        AICM_BACKOFF_BASE="0.02",
        AICM_BACKOFF_CAP="0.1",
    )
    return env


def run_and_kill(args: list[str], env: dict[str, str], delay: float) -> list[str]:
    """Start the producer, SIGKILL it ``delay`` s after its first record, return what it printed."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "kill_producer.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    printed: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            printed.append(line.strip())
            started.set()
        started.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert started.wait(20), "the producer never tracked anything"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(20)
        reader.join(20)
    assert proc.returncode == -signal.SIGKILL
    # A line cut by the kill was not fully printed: it does not count as promised.
    return [line for line in printed if line]


def test_kill_nine_loses_nothing(collector: LocalCollector, api_key: str, tmp_path: Path) -> None:
    """SIGKILL a persistent-queue producer 10 times; every id it printed arrives once."""
    db_path = str(tmp_path / "shared.db")
    env = producer_env(collector, api_key)
    rng = random.Random()
    promised: list[str] = []
    for run in range(RUNS):
        promised += run_and_kill([db_path, f"run{run}"], env, rng.uniform(0.05, 0.8))
    drain = subprocess.run(
        [sys.executable, str(HERE / "kill_producer.py"), db_path, "--drain"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert drain.returncode == 0, drain.stderr
    assert drain.stdout.strip() == "left 0"
    stored = stored_ids(collector)
    missing = set(promised) - set(stored)
    assert not missing, f"{len(missing)} committed record(s) lost, e.g. {sorted(missing)[:5]}"
    assert len(stored) == len(set(stored))
    assert len(promised) == len(set(promised))
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 0
    # Resends after a kill between the service's store and our ack are expected; the
    # service's dedup absorbs them. Report how many there were.
    print(f"\n{len(promised)} promised, {len(stored)} stored, {duplicates(collector)} resent")


_LEASE_HOLDER = """
import sys, time
from aicm import Tracker
db_path, base = sys.argv[1], sys.argv[2]
tracker = Tracker(
    delivery_type="persistent_queue", db_path=db_path, aicm_api_base=base, batch_interval=0.02
)
for n in range(50):
    tracker.track("openai", "openai::gpt-4o", {"input_tokens": n}, response_id=f"held-{n}")
print("tracked", flush=True)
time.sleep(600)
"""


def _leased(db_path: str) -> int:
    with sqlite3.connect(db_path) as conn:
        found: int = conn.execute(
            "SELECT count(*) FROM records WHERE lease_owner IS NOT NULL AND next_attempt_at > ?",
            (time.time(),),
        ).fetchone()[0]
    return found


def test_a_killed_owners_lease_is_free_at_once(
    collector: LocalCollector, api_key: str, tmp_path: Path
) -> None:
    """Rows a kill -9'd process had leased (its request hung) are sent at once by the next
    process, not after lease_seconds (60 s)."""
    from aicm.collector import Faults

    db_path = str(tmp_path / "held.db")
    collector.set_faults(Faults(latency=2.0))  # the service hangs: the batch stays leased
    env = {k: v for k, v in os.environ.items() if not k.startswith("AICM_")}
    env["AICM_API_KEY"] = api_key
    proc = subprocess.Popen(
        [sys.executable, "-c", _LEASE_HOLDER, db_path, collector.api_base],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "tracked"
        deadline = time.monotonic() + 10
        while _leased(db_path) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _leased(db_path) == 50, "the producer never leased its rows"
        late = time.monotonic() + 2.5  # when the hung request has surely ended
    finally:
        proc.kill()
        proc.wait(10)
    collector.set_faults(Faults())
    from aicm import Tracker

    started = time.monotonic()
    tracker = Tracker(
        delivery_type="persistent_queue",
        db_path=db_path,
        aicm_api_key=api_key,
        aicm_api_base=collector.api_base,
    )
    try:
        left = tracker.flush(10)
    finally:
        tracker.close(5)
    assert left == 0
    assert time.monotonic() - started < 5
    # (The hung request may still store its copy: the service's dedup absorbs it.)
    assert set(stored_ids(collector)) == {f"held-{n}" for n in range(50)}
    time.sleep(max(0.0, late - time.monotonic()))  # not into the next test's collector
