"""Scenario 1: what one ``track`` costs its caller, per delivery type, against the baselines.

Every call is timed on its own (``perf_counter_ns``, the timer's own cost subtracted), in
bursts that fit the queue; between rounds, untimed, each subject drains what it queued so
every round starts alike. Delivery runs meanwhile (into the collector, or the sink for
posthog and segment), so the p99 shows the caller waiting for the GIL while a delivery
thread encodes a batch. Groups: *queued* (in memory, background delivery), *durable* (on
disk before the call returns), *immediate* (the service's answer before the call returns).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

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
    time_calls,
    timer_overhead_ns,
)
from .._subjects import (
    AsyncHttpFloor,
    HttpFloor,
    SimpleQueueFloor,
    SqliteFloor,
    aicm_options,
    aicm_track_call,
    aicostmanager_call,
    aicostmanager_drain,
    aicostmanager_sent,
    aicostmanager_tracker,
    portal,
    posthog_call,
    posthog_client,
    segment_call,
    segment_client,
    time_awaits,
)

NAME = "caller_cost"
TITLE = "1. Caller cost per track (us/call)"

SYNC_MEM = "aicm Tracker.track MEM_QUEUE (sync)"
ASYNC_MEM = "aicm AsyncTracker.track MEM_QUEUE (asyncio)"
SYNC_IMM = "aicm Tracker.track IMMEDIATE (sync)"
ASYNC_IMM = "aicm AsyncTracker.track IMMEDIATE (asyncio)"
SYNC_POST_FLOOR = "floor: httpx POST of one record"
ASYNC_POST_FLOOR = "floor: httpx.AsyncClient POST of one record (asyncio)"
SYNC_PQ = "aicm Tracker.track PERSISTENT_QUEUE (sync)"
ASYNC_PQ = "aicm AsyncTracker.track PERSISTENT_QUEUE (asyncio)"
COMMIT_FLOOR = "floor: SQLite insert + commit per record"

Round = tuple[Measure, Callable[[], list[int]], Callable[[], None]]
# Subjects whose samples are not single timed calls: the timer's cost is not subtracted.
_AMORTISED = "floor: SQLite insert, 1000 per commit (per record)"


def run(ctx: Context) -> ScenarioResult:
    """Measure every subject, rounds interleaved."""
    import aicm

    result = ScenarioResult(NAME, TITLE)
    overhead = timer_overhead_ns()
    result.extra["timer_overhead_ns"] = overhead
    n_mem = ctx.pick(5000, 1000)
    n_pq = ctx.pick(1000, 100)
    n_imm = ctx.pick(200, 20)
    result.extra["calls_per_round"] = {"queued": n_mem, "durable": n_pq, "immediate": n_imm}
    us = "us/call"
    rounds: list[Round] = []

    with contextlib.ExitStack() as stack:
        p = stack.enter_context(portal())
        base = ctx.collector

        # -- aicm ---------------------------------------------------------------------------
        def sync_tracker(delivery: str, **options: Any) -> Any:
            tracker = aicm.Tracker(**aicm_options(base, delivery_type=delivery, **options))
            stack.callback(tracker.close, 30)
            return tracker

        def async_tracker(delivery: str, **options: Any) -> Any:
            def build() -> Any:
                return aicm.AsyncTracker(**aicm_options(base, delivery_type=delivery, **options))

            tracker = p.call(build)
            return stack.enter_context(p.wrap_async_context_manager(tracker))

        def add_sync(name: str, group: str, tracker: Any, n: int, settle: bool) -> None:
            m = result.measure(name, "aicm", group, us, "lower")
            call = aicm_track_call(tracker)
            rounds.append(
                (m, lambda: time_calls(call, n), (lambda: tracker.flush(60)) if settle else _nop)
            )

        def add_async(name: str, group: str, tracker: Any, n: int, settle: bool) -> None:
            m = result.measure(name, "aicm", group, us, "lower")
            call = functools.partial(tracker.track, API_ID, SERVICE_KEY, USAGE)
            rounds.append(
                (
                    m,
                    lambda: p.call(time_awaits, call, n),
                    (lambda: p.call(tracker.flush, 60)) if settle else _nop,
                )
            )

        queue_size = max(10_000, 2 * n_mem)
        add_sync(SYNC_MEM, "queued", sync_tracker("mem_queue", queue_size=queue_size), n_mem, True)
        add_async(
            ASYNC_MEM, "queued", async_tracker("mem_queue", queue_size=queue_size), n_mem, True
        )
        add_sync(
            SYNC_PQ,
            "durable",
            sync_tracker("persistent_queue", db_path=str(ctx.scratch("pq") / "q.db")),
            n_pq,
            True,
        )
        add_async(
            ASYNC_PQ,
            "durable",
            async_tracker("persistent_queue", db_path=str(ctx.scratch("apq") / "q.db")),
            n_pq,
            True,
        )
        add_sync(
            SYNC_IMM,
            "immediate",
            sync_tracker("immediate"),
            n_imm,
            False,
        )
        add_async(
            ASYNC_IMM,
            "immediate",
            async_tracker("immediate"),
            n_imm,
            False,
        )

        # -- baselines ------------------------------------------------------------------------
        if have("posthog"):
            ph = posthog_client(ctx.sink, max_queue_size=queue_size)
            stack.callback(ph.shutdown)
            ph_call = posthog_call(ph)
            rounds.append(
                (
                    result.measure("posthog capture", "baseline", "queued", us, "lower"),
                    lambda: time_calls(ph_call, n_mem),
                    lambda: ph.flush(60),
                )
            )
        else:
            result.notes.append("posthog is not installed: its subject is skipped")
        if have("segment.analytics"):
            seg = segment_client(ctx.sink, max_queue_size=queue_size)
            stack.callback(seg.shutdown)
            seg_call = segment_call(seg)
            rounds.append(
                (
                    result.measure("segment track", "baseline", "queued", us, "lower"),
                    lambda: time_calls(seg_call, n_mem),
                    seg.flush,
                )
            )
        else:
            result.notes.append("segment-analytics-python is not installed: skipped")
        sq = SimpleQueueFloor()
        rounds.append(
            (
                result.measure("floor: dict + SimpleQueue.put", "floor", "queued", us, "lower"),
                lambda: time_calls(sq.call, n_mem),
                sq.drain,
            )
        )

        if have("aicostmanager"):
            acm_pq = aicostmanager_tracker("persistent_queue", base, ctx.scratch("acm-pq"))
            stack.callback(acm_pq.close)
            acm_call = aicostmanager_call(acm_pq)
            sent = [aicostmanager_sent(acm_pq)]

            def acm_pq_round() -> list[int]:
                samples = time_calls(acm_call, n_pq)
                sent[0] += n_pq
                return samples

            rounds.append(
                (
                    result.measure(
                        "aicostmanager Tracker.track PERSISTENT_QUEUE",
                        "baseline",
                        "durable",
                        us,
                        "lower",
                    ),
                    acm_pq_round,
                    lambda: _ignore(aicostmanager_drain(acm_pq, sent[0], 60)),
                )
            )
            acm_imm = aicostmanager_tracker("immediate", base, ctx.scratch("acm-imm"))
            stack.callback(acm_imm.close)
            acm_imm_call = aicostmanager_call(acm_imm)
            rounds.append(
                (
                    result.measure(
                        "aicostmanager Tracker.track IMMEDIATE",
                        "baseline",
                        "immediate",
                        us,
                        "lower",
                    ),
                    lambda: time_calls(acm_imm_call, n_imm),
                    _nop,
                )
            )
        else:
            result.notes.append("aicostmanager is not installed: its subjects are skipped")

        floor_db = SqliteFloor(ctx.scratch("floor") / "floor.db")
        stack.callback(floor_db.close)
        rounds.append(
            (
                result.measure(COMMIT_FLOOR, "floor", "durable", us, "lower"),
                lambda: time_calls(floor_db.insert_one, n_pq),
                floor_db.clear,
            )
        )
        batches = max(5, n_pq // 100)

        def batched_round() -> list[int]:
            # One sample per batch: the batch's time per record (amortised).
            return [ns // 1000 for ns in time_calls(lambda: floor_db.insert_batch(1000), batches)]

        rounds.append(
            (
                result.measure(_AMORTISED, "floor", "durable", us, "lower"),
                batched_round,
                floor_db.clear,
            )
        )
        http_floor = HttpFloor(base)
        stack.callback(http_floor.close)
        rounds.append(
            (
                result.measure(SYNC_POST_FLOOR, "floor", "immediate", us, "lower"),
                lambda: time_calls(http_floor.call, n_imm),
                _nop,
            )
        )
        async_floor = AsyncHttpFloor(base)
        stack.callback(p.call, async_floor.aclose)
        rounds.append(
            (
                result.measure(ASYNC_POST_FLOOR, "floor", "immediate", us, "lower"),
                lambda: p.call(time_awaits, async_floor.call, n_imm),
                _nop,
            )
        )

        # -- warm up (full runs), then interleaved rounds ------------------------------------
        for _, round_fn, settle in rounds if not ctx.quick else []:
            round_fn()
            settle()
        for r in range(ctx.rounds):
            for measure, round_fn, settle in rotate(rounds, r):
                cost = 0.0 if measure.subject == _AMORTISED else overhead
                measure.add_samples(round_fn(), overhead_ns=cost)
                settle()

    result.targets.append(
        Target(
            "sync Tracker.track on MEM_QUEUE, median",
            result.get(SYNC_MEM).median,
            "<=",
            5.0,
            "us/call",
        )
    )
    result.targets.append(
        Target(
            "AsyncTracker.track on asyncio MEM_QUEUE, median",
            result.get(ASYNC_MEM).median,
            "<=",
            4.0,
            "us/call",
        )
    )
    same_client = "a bare POST of one record with the same kind of client"
    for what, tracked, floor, limit in (
        (f"IMMEDIATE sync Tracker.track / {same_client}", SYNC_IMM, SYNC_POST_FLOOR, 1.2),
        (f"IMMEDIATE AsyncTracker.track / {same_client}", ASYNC_IMM, ASYNC_POST_FLOOR, 1.2),
        (
            "PERSISTENT_QUEUE AsyncTracker.track (one task awaiting each call) / one SQLite"
            " insert + commit",
            ASYNC_PQ,
            COMMIT_FLOOR,
            2.0,
        ),
        (
            "PERSISTENT_QUEUE sync Tracker.track / one SQLite insert + commit",
            SYNC_PQ,
            COMMIT_FLOOR,
            2.0,
        ),
    ):
        mine, bare = result.get(tracked).median, result.get(floor).median
        result.targets.append(
            Target(what, None if mine is None or not bare else mine / bare, "<=", limit, "x")
        )
    result.notes.append(
        f"per-call times less the timer's own {overhead:.0f} ns; "
        + ("quick mode: no warm-up round" if ctx.quick else "a warm-up round is not counted")
    )
    return result


def _nop() -> None:
    return None


def _ignore(_: object) -> None:
    return None
