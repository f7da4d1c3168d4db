"""Scenario 3: records/s delivered end to end, from the first ``track`` to the last answer.

A round tracks N records as fast as one caller can, then waits until every one is
delivered (aicm: ``flush()`` returns 0, i.e. the collector answered 2xx for all of them);
the rate is N over that whole time. aicm runs with its defaults (a 10,000-record queue that
blocks when full, batches of 1000), so a producer faster than delivery is held back, as in
production. Baselines: the service SDK's persistent queue (into the collector), posthog and
segment (into the loopback sink, which stores nothing, so the comparison favours them), and
the floor: the same records pre-serialised in 1000-record bodies, posted by one httpx
client (the collector's own ceiling for one sequential sender).
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable

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
    aicostmanager_drain,
    aicostmanager_sent,
    aicostmanager_tracker,
    batch_bodies,
    portal,
    post_bodies,
    posthog_call,
    posthog_client,
    segment_call,
    segment_client,
)

NAME = "end_to_end"
TITLE = "3. End to end: records/s delivered"

SYNC_MEM = "aicm Tracker MEM_QUEUE -> collector (sync)"
ASYNC_MEM = "aicm AsyncTracker MEM_QUEUE -> collector (asyncio)"
SYNC_PQ = "aicm Tracker PERSISTENT_QUEUE -> collector (sync)"
POST_FLOOR = "floor: pre-serialised 1000-record POSTs -> collector"


def run(ctx: Context) -> ScenarioResult:
    """Every subject's rounds, interleaved."""
    import aicm

    result = ScenarioResult(NAME, TITLE)
    n = ctx.pick(50_000, 3000)
    n_slow = ctx.pick(500, 200)
    n_pq = ctx.pick(10_000, 1000)
    rate = "records/s"
    phases: list[tuple[Measure, Callable[[int], tuple[float, int]]]] = []
    stored_before = ctx.collector_stored()
    offered = {"aicm": 0, "floor": 0, "aicostmanager": 0}

    with contextlib.ExitStack() as stack:
        p = stack.enter_context(portal())
        base = ctx.collector

        mem = aicm.Tracker(**aicm_options(base, delivery_type="mem_queue"))
        stack.callback(mem.close, 60)
        mem_call = aicm_track_call(mem)

        def mem_round(count: int) -> tuple[float, int]:
            started = time.perf_counter()
            for _ in range(count):
                mem_call()
            left = mem.flush(120)
            offered["aicm"] += count
            return (count - left) / (time.perf_counter() - started), count

        phases.append((result.measure(SYNC_MEM, "aicm", "e2e", rate, "higher"), mem_round))

        amem = stack.enter_context(
            p.wrap_async_context_manager(
                p.call(lambda: aicm.AsyncTracker(**aicm_options(base, delivery_type="mem_queue")))
            )
        )
        atrack = functools.partial(amem.track, API_ID, SERVICE_KEY, USAGE)

        async def amem_run(count: int) -> float:
            started = time.perf_counter()
            for _ in range(count):
                await atrack()
            left: int = await amem.flush(120)
            return (count - left) / (time.perf_counter() - started)

        def amem_round(count: int) -> tuple[float, int]:
            offered["aicm"] += count
            value: float = p.call(amem_run, count)
            return value, count

        phases.append((result.measure(ASYNC_MEM, "aicm", "e2e", rate, "higher"), amem_round))

        pq = aicm.Tracker(
            **aicm_options(
                base, delivery_type="persistent_queue", db_path=str(ctx.scratch("pq") / "q.db")
            )
        )
        stack.callback(pq.close, 60)
        pq_call = aicm_track_call(pq)

        def pq_round(count: int) -> tuple[float, int]:
            count = max(1, count * n_pq // n)
            started = time.perf_counter()
            for _ in range(count):
                pq_call()
            left = pq.flush(120)
            offered["aicm"] += count
            return (count - left) / (time.perf_counter() - started), count

        phases.append(
            (
                result.measure(SYNC_PQ, "aicm", "e2e", rate, "higher"),
                pq_round,
            )
        )

        if have("aicostmanager"):
            acm = aicostmanager_tracker("persistent_queue", base, ctx.scratch("acm"))
            stack.callback(acm.close)
            acm_call = aicostmanager_call(acm)

            def acm_round(count: int) -> tuple[float, int]:
                count = max(1, count * n_slow // n)
                target = aicostmanager_sent(acm) + count
                started = time.perf_counter()
                for _ in range(count):
                    acm_call()
                aicostmanager_drain(acm, target, 120)
                offered["aicostmanager"] += count
                done = count - max(0, target - aicostmanager_sent(acm))
                return done / (time.perf_counter() - started), count

            phases.append(
                (
                    result.measure(
                        "aicostmanager Tracker PERSISTENT_QUEUE -> collector",
                        "baseline",
                        "e2e",
                        rate,
                        "higher",
                    ),
                    acm_round,
                )
            )
        else:
            result.notes.append("aicostmanager is not installed: its subject is skipped")

        for dist, module in (
            ("posthog", "posthog"),
            ("segment-analytics-python", "segment.analytics"),
        ):
            if not have(module):
                result.notes.append(f"{dist} is not installed: its subject is skipped")
        if have("posthog"):
            ph = posthog_client(ctx.sink)
            stack.callback(ph.shutdown)
            ph_call = posthog_call(ph)

            def ph_round(count: int) -> tuple[float, int]:
                started = time.perf_counter()
                for _ in range(count):
                    ph_call()
                ph.flush(120)
                return count / (time.perf_counter() - started), count

            phases.append(
                (
                    result.measure("posthog capture -> sink", "baseline", "e2e", rate, "higher"),
                    ph_round,
                )
            )
        if have("segment.analytics"):
            seg = segment_client(ctx.sink)
            stack.callback(seg.shutdown)
            seg_call = segment_call(seg)

            def seg_round(count: int) -> tuple[float, int]:
                started = time.perf_counter()
                for _ in range(count):
                    seg_call()
                seg.flush()
                return count / (time.perf_counter() - started), count

            phases.append(
                (
                    result.measure("segment track -> sink", "baseline", "e2e", rate, "higher"),
                    seg_round,
                )
            )

        def floor_round(count: int) -> tuple[float, int]:
            bodies = batch_bodies(f"floor-{time.monotonic_ns()}", count)
            started = time.perf_counter()
            post_bodies(base, bodies)
            offered["floor"] += count
            return count / (time.perf_counter() - started), count

        phases.append(
            (
                result.measure(POST_FLOOR, "floor", "e2e", rate, "higher"),
                floor_round,
            )
        )

        for _, round_fn in phases:  # warm-up, not counted
            round_fn(max(100, n // 10))
        for r in range(ctx.pick(ctx.rounds, 2)):
            for measure, round_fn in rotate(phases, r):
                cpu = time.process_time()
                value, count = round_fn(n)
                cpu = time.process_time() - cpu
                measure.add_value(value, samples=count)
                per_record: list[float] = measure.extra.setdefault("cpu_us_per_record", [])
                per_record.append(round(cpu / count * 1e6, 2))

    stored = ctx.collector_stored() - stored_before
    expected = sum(offered.values())
    result.extra.update(offered=offered, collector_stored=stored)
    result.notes.append(
        f"the collector stored {stored:,} new records for {offered['aicm']:,} tracked by aicm, "
        f"{offered['aicostmanager']:,} by aicostmanager and {offered['floor']:,} posted by "
        "the floor: "
        + ("none lost or doubled" if stored == expected else f"MISMATCH ({stored - expected:+,})")
    )
    cpu_notes = []
    for m in result.measures:
        values = m.extra.get("cpu_us_per_record")
        if values:
            m.extra["cpu_us_per_record_median"] = statistics.median(values)
            cpu_notes.append(f"{m.subject} {statistics.median(values):.1f}")
    result.notes.append(
        "CPU of this process (caller + delivery threads; not the collector's, not the "
        "sink's) per record, us: " + "; ".join(cpu_notes)
    )
    result.targets.append(
        Target(
            "MEM_QUEUE into the collector (sync)",
            result.get(SYNC_MEM).median,
            ">=",
            100_000,
            "rec/s",
        )
    )
    mine, bare = result.get(SYNC_PQ).median, result.get(POST_FLOOR).median
    result.targets.append(
        Target(
            "PERSISTENT_QUEUE end to end (sync) / the pre-serialised 1000-record POST floor",
            None if mine is None or not bare else mine / bare,
            ">=",
            0.5,
            "x",
        )
    )
    return result
