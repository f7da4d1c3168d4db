"""Scenario 5: memory while 1,000,000 records are offered to a MEM_QUEUE and the service is down.

Each subject runs in a fresh process of its own (``python -m benchmarks.scenarios.memory``)
so its RSS is its own: set up, note the RSS, reset the peak (``/proc/self/clear_refs``),
offer the records, note the RSS and the peak. Growth = max(peak, end) - start. The service is
a loopback port nobody listens on; aicm drops the oldest (``backpressure``) or refuses
(``raise``) once its 10,000-record queue is full, and posthog and segment drop once theirs
is. The floor keeps the newest 10,000 dict records in a ``deque``. Warnings are disabled in
these processes: every drop logs one, and the figure here is memory, not time. Subjects run
side by side (their own processes), so their times are not compared.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .._common import (
    API_ID,
    REPO,
    SERVICE_KEY,
    USAGE,
    Context,
    ScenarioResult,
    Target,
    child_env,
    closed_port,
    have,
    reset_peak_rss,
    rss_mb,
)

NAME = "memory"
TITLE = "5. Memory: 1M records offered to a full MEM_QUEUE, service down (MB)"

SUBJECTS: dict[str, tuple[str, str]] = {
    "aicm-backpressure": ("aicm Tracker MEM_QUEUE, on_full=backpressure", "aicm"),
    "aicm-raise": ("aicm Tracker MEM_QUEUE, on_full=raise", "aicm"),
    "posthog": ("posthog capture (queue 10,000)", "baseline"),
    "segment": ("segment track (queue 10,000)", "baseline"),
    "floor": ("floor: deque(maxlen=10,000) of dict records", "floor"),
}
PRIMARY = "aicm-backpressure"


def run(ctx: Context) -> ScenarioResult:
    """Every subject in its own process, all at once, ``rounds`` times."""
    result = ScenarioResult(NAME, TITLE)
    records = ctx.pick(1_000_000, 20_000)
    rounds = 1  # RSS hardly varies between runs; 1M records per subject take minutes
    names = [n for n in SUBJECTS if _available(n)]
    for name in SUBJECTS:
        if name not in names:
            result.notes.append(f"{name} is not installed: skipped")
    measures = {
        n: result.measure(SUBJECTS[n][0], SUBJECTS[n][1], "memory", "MB", "lower")  # type: ignore[arg-type]
        for n in names
    }
    env = child_env(ctx.tmp)
    for _ in range(rounds):
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            futures = {n: pool.submit(_child, n, records, env) for n in names}
            for n, future in futures.items():
                data = future.result()
                m = measures[n]
                m.add_value(data["growth_mb"], samples=records)
                m.extra.setdefault("runs", []).append(data)
    primary = measures.get(PRIMARY)
    result.targets.append(
        Target(
            f"RSS growth, {records:,} records offered (backpressure)",
            primary.median if primary else None,
            "<=",
            64.0,
            "MB",
            note="" if records == 1_000_000 else f"quick mode: {records:,} records",
        )
    )
    result.notes.append(
        "growth = max(peak RSS, end RSS) - RSS before the first record; each subject in "
        "its own process"
    )
    return result


def _available(name: str) -> bool:
    if name == "posthog":
        return have("posthog")
    if name == "segment":
        return have("segment.analytics")
    return True


def _child(name: str, records: int, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.scenarios.memory", name, str(records)]
    done = subprocess.run(
        command, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=900, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"memory child {name} failed: {done.stderr[-1500:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


# -- the child process -------------------------------------------------------------------------


def _measure(name: str, records: int) -> dict[str, Any]:
    logging.disable(logging.WARNING)
    down = f"http://127.0.0.1:{closed_port()}"
    offer: Callable[[], object]
    tracker: Any = None
    if name.startswith("aicm"):
        import aicm

        policy = name.split("-", 1)[1]
        tracker = aicm.Tracker(
            aicm_api_key="bench-key",
            aicm_api_base=down,
            delivery_type="mem_queue",
            delivery_on_full=policy,
        )
        track = tracker.track

        if policy == "raise":

            def offer() -> object:
                try:
                    return track(API_ID, SERVICE_KEY, USAGE)
                except aicm.QueueFullError:
                    return None

        else:

            def offer() -> object:
                return track(API_ID, SERVICE_KEY, USAGE)

    elif name == "posthog":
        from .._subjects import posthog_call, posthog_client

        offer = posthog_call(posthog_client(down))
    elif name == "segment":
        from .._subjects import segment_call, segment_client

        offer = segment_call(segment_client(down))
    else:
        from .._subjects import floor_record

        kept: deque[dict[str, Any]] = deque(maxlen=10_000)

        def offer() -> object:
            kept.append(floor_record())
            return None

    before, _ = rss_mb()
    peak_reset = reset_peak_rss()
    started = time.perf_counter()
    for _ in range(records):
        offer()
    seconds = time.perf_counter() - started
    after, peak = rss_mb()
    growth = max(after, peak if peak_reset else after) - before
    data = {
        "subject": name,
        "records": records,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "peak_mb": round(peak, 1) if peak_reset else None,
        "growth_mb": round(growth, 1),
        "seconds": round(seconds, 2),
    }
    if tracker is not None:
        health = tracker.health()
        data["discarded"] = dict(health.discarded)
        data["queued"] = health.queued
        tracker.close(0.1)
    # The baselines are not closed: their sends to the dead port would retry for seconds.
    # The process ends with os._exit() instead.
    return data


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.scenarios.memory SUBJECT RECORDS``: print one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(_measure(args[0], int(args[1]))), flush=True)
    return 0


if __name__ == "__main__":
    import os

    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: baselines retry a dead server at exit
