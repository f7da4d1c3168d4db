"""Scenario 6: how long ``close()`` takes with 100,000 records pending, delivering them all.

A round builds a fresh client, builds a backlog (untimed), then times ``close()``.

- aicm (``Tracker`` and ``AsyncTracker``, MEM_QUEUE, into the collector): tracks in chunks
  of 1000 until 100,000 records (quick: 20,000) are pending, delivery running meanwhile;
  ``close(120)`` must deliver them all (what is left is reported).
- baselines: posthog's and segment's ``shutdown()``, and the service SDK's persistent queue
  ``close()``, all sending to the loopback sink, which is paused while the backlog is built
  (their sender waits on its first batch, everything else piles up) and resumed just before
  the timed close. The service SDK's backlog is smaller: it enqueues slowly.

Subjects are compared by drain rate (pending records / close seconds); the service SDK's
backlog is too small to compare (one request) and gets no ratio. The target is the aicm close
time itself. The sink parses nothing while the collector validates and stores every record,
which favours the baselines.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx

from .._common import (
    API_ID,
    SERVICE_KEY,
    USAGE,
    Context,
    Measure,
    ScenarioResult,
    Target,
    have,
    rotate,
)
from .._subjects import (
    aicm_options,
    aicm_track_call,
    aicostmanager_call,
    aicostmanager_tracker,
    portal,
    posthog_call,
    posthog_client,
    segment_call,
    segment_client,
)

NAME = "close"
TITLE = "6. close() with pending records: drain rate (records/s)"

SYNC = "aicm Tracker MEM_QUEUE close()"
CHUNK = 1000
FILL_LIMIT_S = 60.0

# (pending at close, close seconds, left undelivered)
Outcome = tuple[int, float, int]


def run(ctx: Context) -> ScenarioResult:
    """Fresh client per round; rounds interleaved."""
    import aicm

    result = ScenarioResult(NAME, TITLE)
    n = ctx.pick(100_000, 5000)
    n_acm = ctx.pick(1000, 100)
    rounds = ctx.pick(min(ctx.rounds, 5), 2)
    base = ctx.collector
    rate = "records/s"
    phases: list[tuple[Measure, Callable[[], Outcome]]] = []

    def pending_of(tracker: Any) -> int:
        health = tracker.health()
        return int(health.queued + health.in_flight)

    def aicm_sync() -> Outcome:
        tracker = aicm.Tracker(**aicm_options(base, delivery_type="mem_queue", queue_size=2 * n))
        call = aicm_track_call(tracker)
        deadline = time.monotonic() + FILL_LIMIT_S
        while pending_of(tracker) < n and time.monotonic() < deadline:
            for _ in range(CHUNK):
                call()
        pending = pending_of(tracker)
        started = time.perf_counter()
        left = tracker.close(120)
        return pending, time.perf_counter() - started, left

    phases.append((result.measure(SYNC, "aicm", "close", rate, "higher"), aicm_sync))

    with contextlib.ExitStack() as stack:
        p = stack.enter_context(portal())

        async def aicm_async() -> Outcome:
            tracker = aicm.AsyncTracker(
                **aicm_options(base, delivery_type="mem_queue", queue_size=2 * n)
            )
            async with tracker:
                deadline = time.monotonic() + FILL_LIMIT_S
                while pending_of(tracker) < n and time.monotonic() < deadline:
                    for _ in range(CHUNK):
                        await tracker.track(API_ID, SERVICE_KEY, USAGE)
                pending = pending_of(tracker)
                started = time.perf_counter()
                left = await tracker.aclose(120)
                seconds = time.perf_counter() - started
            return pending, seconds, left

        phases.append(
            (
                result.measure(
                    "aicm AsyncTracker MEM_QUEUE aclose()", "aicm", "close", rate, "higher"
                ),
                lambda: p.call(aicm_async),
            )
        )

        sink = httpx.Client(base_url=ctx.sink, timeout=30)
        stack.callback(sink.close)

        def paused_fill(call: Callable[[], object], count: int) -> None:
            sink.post("/_sink/pause")
            try:
                for _ in range(count):
                    call()
            finally:
                sink.post("/_sink/resume")

        for dist, module in (
            ("posthog", "posthog"),
            ("segment-analytics-python", "segment.analytics"),
            ("aicostmanager", "aicostmanager"),
        ):
            if not have(module):
                result.notes.append(f"{dist} is not installed: its subject is skipped")
        if have("posthog"):

            def posthog_round() -> Outcome:
                # A long timeout: the paused sink must not time the first batch out.
                client = posthog_client(ctx.sink, max_queue_size=n + 1, timeout=120)
                paused_fill(posthog_call(client), n)
                pending = int(client._analytics_lane.queue.unfinished_tasks)
                started = time.perf_counter()
                client.shutdown()
                return pending, time.perf_counter() - started, 0

            phases.append(
                (
                    result.measure(
                        "posthog shutdown() -> sink", "baseline", "close", rate, "higher"
                    ),
                    posthog_round,
                )
            )
        if have("segment.analytics"):

            def segment_round() -> Outcome:
                client = segment_client(ctx.sink, max_queue_size=n + 1, timeout=120)
                paused_fill(segment_call(client), n)
                pending = int(client.queue.unfinished_tasks)
                started = time.perf_counter()
                client.shutdown()
                return pending, time.perf_counter() - started, 0

            phases.append(
                (
                    result.measure(
                        "segment shutdown() -> sink", "baseline", "close", rate, "higher"
                    ),
                    segment_round,
                )
            )
        if have("aicostmanager"):

            def acm_round() -> Outcome:
                tracker = aicostmanager_tracker("persistent_queue", ctx.sink, ctx.scratch("acm"))
                paused_fill(aicostmanager_call(tracker), n_acm)
                with tracker.delivery._lock:
                    (pending,) = tracker.delivery.conn.execute(
                        "SELECT count(*) FROM queue"
                    ).fetchone()
                started = time.perf_counter()
                tracker.close()
                return int(pending), time.perf_counter() - started, 0

            phases.append(
                (
                    # Its own group: a backlog of 1000 in one request is no match for 100k.
                    result.measure(
                        "aicostmanager Tracker PERSISTENT_QUEUE close() -> sink",
                        "baseline",
                        "close, small backlog",
                        rate,
                        "higher",
                    ),
                    acm_round,
                )
            )

        for r in range(rounds):
            for measure, round_fn in rotate(phases, r):
                pending, seconds, left = round_fn()
                measure.add_value((pending - left) / seconds if seconds > 0 else float("nan"))
                runs: list[dict[str, Any]] = measure.extra.setdefault("runs", [])
                runs.append({"pending": pending, "close_s": round(seconds, 3), "left": left})

    for m in result.measures:
        runs = m.extra.get("runs", [])
        if runs:
            result.notes.append(
                f"{m.subject}: pending {[r['pending'] for r in runs]}, close s "
                f"{[r['close_s'] for r in runs]}, left {[r['left'] for r in runs]}"
            )
    sync_runs = result.get(SYNC).extra.get("runs", [])
    seconds = sorted(r["close_s"] * 100_000 / r["pending"] for r in sync_runs if r["pending"])
    value = seconds[len(seconds) // 2] if seconds else None
    result.targets.append(
        Target(
            "Tracker MEM_QUEUE close() with 100k pending, median",
            value,
            "<=",
            2.0,
            "s",
            note="" if n == 100_000 else f"quick mode: {n:,} pending, time scaled to 100k",
        )
    )
    return result
