"""Scenario 2: durable enqueue (PERSISTENT_QUEUE) throughput, and caller cost as the backlog grows.

a. One sequential sync caller: records/s committed (``track`` returns once the record is in
   SQLite), delivery into the collector running meanwhile; against the service SDK's
   persistent queue and SQLite floors (one commit per record; 1000 per commit).
b. 100 concurrent asyncio tasks on one ``AsyncTracker`` (group commit); against the service
   SDK's ``track_async`` (a thread per call) from 100 tasks, and the batched floor.
c. Caller cost with a backlog of 0, 100k and 1M rows (quick: 0, 10k, 50k) while the service
   is down (a loopback port nobody listens on), so rows stay queued. The backlog is made by
   tracking one record, then copying its row in SQL; the service SDK's queue is filled the
   same way. The ratio cost(largest)/cost(0) should stay near 1.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._common import (
    API_ID,
    SERVICE_KEY,
    USAGE,
    Context,
    Measure,
    ScenarioResult,
    Target,
    closed_port,
    have,
    rotate,
    time_calls,
    timer_overhead_ns,
    wait_until,
)
from .._subjects import (
    SqliteFloor,
    aicm_options,
    aicm_track_call,
    aicostmanager_abandon,
    aicostmanager_call,
    aicostmanager_drain,
    aicostmanager_sent,
    aicostmanager_tracker,
    portal,
)

NAME = "durable"
TITLE = "2. Durable enqueue: PERSISTENT_QUEUE throughput and backlog"

SYNC = "aicm Tracker.track PERSISTENT_QUEUE, 1 sync caller"
ASYNC = "aicm AsyncTracker.track PERSISTENT_QUEUE, 100 asyncio tasks"
ASYNC_ALONE = "aicm AsyncTracker.track PERSISTENT_QUEUE, 100 asyncio tasks, service down"
LOOP_CPU = "aicm AsyncTracker PERSISTENT_QUEUE, 100 tasks delivering: event-loop CPU per record"
TASKS = 100


def run(ctx: Context) -> ScenarioResult:
    """Throughput phases (a, b), then the backlog phase (c)."""
    result = ScenarioResult(NAME, TITLE)
    _throughput(ctx, result)
    _backlog(ctx, result)
    return result


def _rate(calls: int, one: Callable[[], object], records_per_call: int = 1) -> float:
    """Records/s of ``calls`` calls of ``one()``."""
    started = time.perf_counter()
    for _ in range(calls):
        one()
    return calls * records_per_call / (time.perf_counter() - started)


def _throughput(ctx: Context, result: ScenarioResult) -> None:
    import aicm

    n_sync = ctx.pick(3000, 400)
    n_async = ctx.pick(20_000, 2000)
    rate = "records/s"
    phases: list[tuple[Measure, Callable[[], float], Callable[[], None]]] = []
    with contextlib.ExitStack() as stack:
        p = stack.enter_context(portal())
        base = ctx.collector

        sync_tracker = aicm.Tracker(
            **aicm_options(
                base, delivery_type="persistent_queue", db_path=str(ctx.scratch("s") / "q.db")
            )
        )
        stack.callback(sync_tracker.close, 60)
        sync_call = aicm_track_call(sync_tracker)

        def sync_round() -> float:
            return _rate(n_sync, sync_call)

        phases.append(
            (
                result.measure(SYNC, "aicm", "1 caller", rate, "higher"),
                sync_round,
                lambda: _ignore(sync_tracker.flush(120)),
            )
        )

        def build_async() -> Any:
            return aicm.AsyncTracker(
                **aicm_options(
                    base, delivery_type="persistent_queue", db_path=str(ctx.scratch("a") / "q.db")
                )
            )

        async_tracker = stack.enter_context(p.wrap_async_context_manager(p.call(build_async)))
        loop_cpu = result.measure(LOOP_CPU, "aicm", f"{TASKS} tasks", "us/record", "lower")

        def tasks_round(tracker: Any, loop_cpu: Measure | None = None) -> float:
            track = functools.partial(tracker.track, API_ID, SERVICE_KEY, USAGE)

            async def run() -> float:
                import anyio

                async def worker(count: int) -> None:
                    for _ in range(count):
                        await track()

                records = n_async // TASKS * TASKS
                # The event loop's own CPU (this thread's): the callers, the group
                # commits' hand-offs and the delivery, until every record is delivered.
                cpu = time.thread_time()
                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(TASKS):
                        tg.start_soon(worker, n_async // TASKS)
                rate = records / (time.perf_counter() - started)
                if loop_cpu is not None:
                    await tracker.flush(120)
                    loop_cpu.add_value((time.thread_time() - cpu) / records * 1e6)
                return rate

            value: float = p.call(run)
            return value

        phases.append(
            (
                result.measure(ASYNC, "aicm", f"{TASKS} tasks", rate, "higher"),
                lambda: tasks_round(async_tracker, loop_cpu),
                lambda: _ignore(p.call(async_tracker.flush, 120)),
            )
        )

        # The same callers with the service down (a closed loopback port): the enqueue
        # alone, with no delivery sharing the process's CPU and the file's write lock.
        def build_alone() -> Any:
            return aicm.AsyncTracker(
                **aicm_options(
                    f"http://127.0.0.1:{closed_port()}",
                    delivery_type="persistent_queue",
                    db_path=str(ctx.scratch("alone") / "q.db"),
                )
            )

        alone = stack.enter_context(p.wrap_async_context_manager(p.call(build_alone)))
        phases.append(
            (
                result.measure(ASYNC_ALONE, "aicm", f"{TASKS} tasks", rate, "higher"),
                lambda: tasks_round(alone),
                lambda: None,
            )
        )

        if have("aicostmanager"):
            acm = aicostmanager_tracker("persistent_queue", base, ctx.scratch("acm"))
            stack.callback(acm.close)
            acm_call = aicostmanager_call(acm)
            n_acm = ctx.pick(1000, 100)
            sent = [aicostmanager_sent(acm)]

            def acm_round() -> float:
                value = _rate(n_acm, acm_call)
                sent[0] += n_acm
                return value

            phases.append(
                (
                    result.measure(
                        "aicostmanager Tracker.track PERSISTENT_QUEUE, 1 sync caller",
                        "baseline",
                        "1 caller",
                        rate,
                        "higher",
                    ),
                    acm_round,
                    lambda: _ignore(aicostmanager_drain(acm, sent[0], 120)),
                )
            )

            async def acm_async_round() -> float:
                import anyio

                per_task = max(1, n_acm // TASKS)

                async def worker() -> None:
                    for _ in range(per_task):
                        await acm.track_async(f"{API_ID}::{SERVICE_KEY}", USAGE)

                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(TASKS):
                        tg.start_soon(worker)
                sent[0] += per_task * TASKS
                return per_task * TASKS / (time.perf_counter() - started)

            phases.append(
                (
                    result.measure(
                        "aicostmanager Tracker.track_async PERSISTENT_QUEUE, 100 asyncio tasks",
                        "baseline",
                        f"{TASKS} tasks",
                        rate,
                        "higher",
                    ),
                    lambda: p.call(acm_async_round),
                    lambda: _ignore(aicostmanager_drain(acm, sent[0], 120)),
                )
            )
        else:
            result.notes.append("aicostmanager is not installed: its subjects are skipped")

        floor = SqliteFloor(ctx.scratch("floor") / "floor.db")
        stack.callback(floor.close)
        phases.append(
            (
                result.measure(
                    "floor: SQLite insert + commit per record", "floor", "1 caller", rate, "higher"
                ),
                lambda: _rate(n_sync, floor.insert_one),
                floor.clear,
            )
        )
        batches = max(1, n_async // 1000)
        for group in ("1 caller", f"{TASKS} tasks"):
            phases.append(
                (
                    result.measure(
                        f"floor: SQLite insert, 1000 per commit ({group})",
                        "floor",
                        group,
                        rate,
                        "higher",
                    ),
                    lambda: _rate(batches, lambda: floor.insert_batch(1000), 1000),
                    floor.clear,
                )
            )

        for _, round_fn, settle in phases if not ctx.quick else []:  # warm-up
            round_fn()
            settle()
        loop_cpu.round_values.clear()  # (the warm-up's)
        for r in range(ctx.rounds):
            for measure, round_fn, settle in rotate(phases, r):
                measure.add_value(round_fn())
                settle()

    result.targets.append(
        Target("PERSISTENT_QUEUE, one sync caller", result.get(SYNC).median, ">=", 20_000, "rec/s")
    )
    result.targets.append(
        Target(
            "PERSISTENT_QUEUE, 100 async tasks (delivering meanwhile)",
            result.get(ASYNC).median,
            ">=",
            100_000,
            "rec/s",
        )
    )
    result.targets.append(
        Target(
            "PERSISTENT_QUEUE, 100 async tasks, enqueue alone (service down)",
            result.get(ASYNC_ALONE).median,
            ">=",
            100_000,
            "rec/s",
        )
    )
    result.targets.append(
        Target(
            "PERSISTENT_QUEUE, 100 async tasks delivering: event-loop CPU per record",
            result.get(LOOP_CPU).median,
            "<=",
            3.0,
            "us",
        )
    )
    result.notes.append(
        "throughput phases deliver into the collector meanwhile; each round starts with an "
        "empty queue (drained between rounds, untimed); the 'service down' subject is the "
        "enqueue alone: its rows stay queued, and no delivery shares the CPU or the file"
    )


# -- c. the backlog ---------------------------------------------------------------------------


def _multiply_rows(db: Path, table: str, copies: int, id_column: str, unique: str | None) -> int:
    """Copy the table's first row ``copies`` times in one transaction; the rows in the end."""
    conn = sqlite3.connect(db, timeout=60)
    try:
        columns = [
            row[1] for row in conn.execute(f"PRAGMA table_info({table})") if row[1] != id_column
        ]
        select = [
            f"{c} || '-' || n" if c == unique else c  # keep idempotency keys distinct
            for c in columns
        ]
        conn.execute(
            f"""
            WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?)
            INSERT INTO {table} ({", ".join(columns)})
            SELECT {", ".join(select)} FROM seq,
                (SELECT * FROM {table} ORDER BY {id_column} LIMIT 1)
            """,
            (copies,),
        )
        conn.commit()
        count: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return count
    finally:
        conn.close()


def _backlog(ctx: Context, result: ScenarioResult) -> None:
    import aicm

    levels = [0, 100_000, 1_000_000] if not ctx.quick else [0, 10_000, 50_000]
    calls = ctx.pick(1000, 100)
    acm_calls = ctx.pick(100, 20)
    down = f"http://127.0.0.1:{closed_port()}"
    overhead = timer_overhead_ns()
    us = "us/call"
    built: dict[int, dict[str, Any]] = {}
    for level in levels:
        group = f"backlog {level:,}"
        phases: list[tuple[Measure, Callable[[], list[int]]]] = []
        with contextlib.ExitStack() as stack:
            db = ctx.scratch(f"backlog-{level}") / "q.db"
            options = aicm_options(down, delivery_type="persistent_queue", db_path=str(db))
            seed = aicm.Tracker(**options)
            seed.track(API_ID, SERVICE_KEY, USAGE)
            seed.close(0.1)
            rows = _multiply_rows(db, "records", level, "id", "response_id") if level else 1
            tracker = aicm.Tracker(**options)
            stack.callback(tracker.close, 0.1)
            # Let the actor meet the dead port once (claim, fail, give back, back off) before
            # measuring, at every level alike; at level 0 it needs a row to claim.
            tracker.track(API_ID, SERVICE_KEY, USAGE)
            wait_until(functools.partial(_met_dead_port, tracker), 10)
            call = aicm_track_call(tracker)
            m = result.measure(
                f"aicm Tracker.track PERSISTENT_QUEUE, {group}", "aicm", group, us, "lower"
            )
            m.extra["rows_before"] = rows
            phases.append((m, functools.partial(time_calls, call, calls)))
            built[level] = {"aicm": m}
            if have("aicostmanager"):
                scratch = ctx.scratch(f"acm-backlog-{level}")
                acm = aicostmanager_tracker("persistent_queue", down, scratch)
                acm.track(f"{API_ID}::{SERVICE_KEY}", USAGE)
                aicostmanager_abandon(acm)
                queue_db = scratch / "aicostmanager-queue.db"
                acm_rows = _multiply_rows(queue_db, "queue", level, "id", None) if level else 1
                with sqlite3.connect(queue_db) as conn:  # rows a crashed run left 'processing'
                    conn.execute("UPDATE queue SET status = 'queued', retry_count = 0")
                acm = aicostmanager_tracker("persistent_queue", down, scratch)
                stack.callback(aicostmanager_abandon, acm)
                am = result.measure(
                    f"aicostmanager Tracker.track PERSISTENT_QUEUE, {group}",
                    "baseline",
                    group,
                    us,
                    "lower",
                )
                am.extra["rows_before"] = acm_rows
                phases.append(
                    (am, functools.partial(time_calls, aicostmanager_call(acm), acm_calls))
                )
                built[level]["aicostmanager"] = am
            for _, round_fn in phases if not ctx.quick else []:  # warm-up
                round_fn()
            for r in range(ctx.rounds):
                for measure, round_fn in rotate(phases, r):
                    measure.add_samples(round_fn(), overhead_ns=overhead)

    flat: dict[str, Any] = {}
    for who in ("aicm", "aicostmanager"):
        first = built[levels[0]].get(who)
        last = built[levels[-1]].get(who)
        if first is None or last is None or not first.median or last.median is None:
            continue
        flat[who] = {
            "median_ratio_largest_to_empty": round(last.median / first.median, 2),
            "levels": {f"{lv:,}": built[lv][who].median for lv in levels},
        }
    result.extra["backlog_flatness"] = flat
    aicm_flat = flat.get("aicm", {}).get("median_ratio_largest_to_empty")
    result.targets.append(
        Target(
            f"caller cost at a {levels[-1]:,}-row backlog / at an empty queue (median)",
            aicm_flat,
            "<=",
            1.5,
            "x",
            note="stays flat",
        )
    )
    for who, data in flat.items():
        result.notes.append(
            f"{who}: median cost at {levels[-1]:,} rows is "
            f"{data['median_ratio_largest_to_empty']}x the cost at an empty queue"
        )
    result.notes.append(
        "backlog phase: the service is down (a closed loopback port), so the rows stay queued"
    )


def _met_dead_port(tracker: Any) -> bool:
    return tracker.health().last_error is not None


def _ignore(_: object) -> None:
    return None
