"""Where the microseconds go in aicm's hot paths: a cost breakdown and cProfile tables.

Not part of ``python -m benchmarks`` (it reports no ratios): a tool to look inside the
figures the benchmarks report, and to check a fix.

    python -m benchmarks.profile_hot_paths           # breakdown + cProfile of the caller paths
    python -m benchmarks.profile_hot_paths --py-spy  # also sample the delivery thread (py-spy)

The breakdown times each step of ``Tracker.track`` on MEM_QUEUE on its own (best of 5,
microseconds per call) through aicm's private modules: when those move, the affected
lines say so and the rest still runs. The caller paths are profiled with the service down
(a loopback port nobody listens on), so the delivery thread stays idle and cProfile sees
the caller only; ``--py-spy`` runs MEM_QUEUE into the collector and samples every thread.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import API_ID, KEY, SERVICE_KEY, USAGE, child_env, closed_port, servers


def _best(fn: Callable[[], object], number: int = 20_000) -> float:
    """Microseconds per call, best of 5 repeats."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def breakdown() -> list[tuple[str, float | None]]:
    """The steps of a queued ``Tracker.track``, each timed alone."""
    import aicm

    down = f"http://127.0.0.1:{closed_port()}"
    tracker = aicm.Tracker(
        aicm_api_key=KEY,
        aicm_api_base=down,
        delivery_type="mem_queue",
        queue_size=10_000_000,
        delivery_on_full="backpressure",
    )
    rows: list[tuple[str, float | None]] = []

    def step(name: str, make: Callable[[], Callable[[], object]]) -> None:
        try:
            rows.append((name, _best(make())))
        except Exception as exc:  # an internal moved: say so, carry on
            rows.append((f"{name} (skipped: {type(exc).__name__}: {exc})", None))

    try:
        step("Tracker.track (whole, sync)", lambda: aicm_call(tracker))
        async_tracker = tracker._async
        step(
            "  AsyncTracker.build_record (argument parsing + TrackRecord.build)",
            lambda: functools.partial(async_tracker.build_record, (API_ID, SERVICE_KEY, USAGE), {}),
        )
        from aicm._core import jsonplain, models

        step(
            "    TrackRecord.build",
            lambda: functools.partial(models.TrackRecord.build, API_ID, SERVICE_KEY, USAGE),
        )
        step(
            "      TrackRecord(...) (frozen attrs __init__)",
            lambda: functools.partial(
                models.TrackRecord,
                api_id=API_ID,
                service_key=SERVICE_KEY,
                response_id="r",
                timestamp="t",
                payload=dict(USAGE),
            ),
        )
        step("      new_response_id()", lambda: models.new_response_id)
        # The check for a fork that skipped Python's hooks runs twice per queued track():
        # reading runtime.generation (a property that checks) and in new_response_id().
        from aicm._core import forks

        runtime: Any = tracker._runtime
        step("  fork check: forks.check() (new_response_id calls it)", lambda: forks.check)
        step(
            "  fork check: runtime.generation (a property that calls it)",
            lambda: lambda: runtime.generation,
        )
        step(
            "  fork check: runtime._generation (the plain read it replaces)",
            lambda: lambda: runtime._generation,
        )
        step("  fork check: os.getpid() (the system call it avoids)", lambda: os.getpid)
        step("      utc_now_iso()", lambda: models.utc_now_iso)
        step(
            "      plain_mapping(usage)",
            lambda: functools.partial(jsonplain.plain_mapping, USAGE, field="usage"),
        )
        record = models.TrackRecord.build(API_ID, SERVICE_KEY, USAGE)
        buffer: Any = tracker._engine.buffer
        step("  RecordBuffer.try_put", lambda: functools.partial(buffer.try_put, record))
        step(
            "  RecordResult(...) returned",
            lambda: functools.partial(models.RecordResult, response_id="r", status="enqueued"),
        )
        step("actor: dumps(record.wire())", lambda: lambda: jsonplain.dumps(record.wire()))
        try:
            import orjson

            step("actor: orjson.dumps(record.wire())", lambda: lambda: orjson.dumps(record.wire()))
        except ImportError:
            pass
        try:
            rows.append(("actor: parse the answer, per record of 1000", _parse_per_record()))
        except Exception as exc:
            rows.append((f"actor: parse the answer (skipped: {type(exc).__name__})", None))
    finally:
        tracker.close(0.1)
    return rows


def _parse_per_record() -> float:
    """The actor's parsing of a 1000-result answer, per record."""
    import json

    from aicm._io import answers

    body = json.dumps(
        {
            "results": [{"response_id": f"r{i}", "status": "queued"} for i in range(1000)],
            "triggered_limits": {},
        }
    )
    parse: Callable[[], object] = functools.partial(answers.parse_results, body)
    try:  # the engine asks only for the refused records, where the client supports that
        functools.partial(answers.parse_results, body, only_failures=True)()
        parse = functools.partial(answers.parse_results, body, only_failures=True)
    except TypeError:
        pass
    return _best(parse, number=100) / 1000


def aicm_call(tracker: Any) -> Callable[[], object]:
    """One ``track`` call."""
    return functools.partial(tracker.track, API_ID, SERVICE_KEY, USAGE)


def profile(label: str, fn: Callable[[], object], calls: int, top: int = 18) -> str:
    """cProfile of ``calls`` calls of ``fn``, top functions by own time."""
    for _ in range(min(calls, 2000)):
        fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return f"---- {label} ({calls:,} calls)\n" + out.getvalue()


def caller_profiles() -> list[str]:
    """cProfile of the caller side of each hot path (service down, actor idle)."""
    import aicm

    down = f"http://127.0.0.1:{closed_port()}"
    reports = []
    mem = aicm.Tracker(
        aicm_api_key=KEY,
        aicm_api_base=down,
        delivery_type="mem_queue",
        queue_size=10_000_000,
        delivery_on_full="backpressure",
    )
    try:
        reports.append(profile("Tracker.track, MEM_QUEUE", aicm_call(mem), 50_000))
    finally:
        mem.close(0.1)
    with tempfile.TemporaryDirectory() as tmp:
        pq = aicm.Tracker(
            aicm_api_key=KEY,
            aicm_api_base=down,
            delivery_type="persistent_queue",
            db_path=str(Path(tmp) / "q.db"),
        )
        try:
            reports.append(profile("Tracker.track, PERSISTENT_QUEUE", aicm_call(pq), 5000))
        finally:
            pq.close(0.1)
    from .scenarios.proxy import API, CONFIG, MESSAGES, BenchChat

    client = BenchChat()
    manager = aicm.CostManager(
        client,
        api_id=API,
        configs=[CONFIG],
        aicm_api_key=KEY,
        aicm_api_base=down,
        delivery_type="mem_queue",
        queue_size=10_000_000,
        delivery_on_full="backpressure",
    )
    tracked = manager.client
    try:
        reports.append(
            profile(
                "CostManager proxied call (chat.completions.create)",
                lambda: tracked.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
                20_000,
            )
        )
    finally:
        manager.close(0.1)
    return reports


# -- py-spy: every thread, delivery included ------------------------------------------------------


def _workload(collector: str, records: int) -> None:
    import aicm

    tracker = aicm.Tracker(
        aicm_api_key=KEY, aicm_api_base=collector, delivery_type="mem_queue", queue_size=records
    )
    call = aicm_call(tracker)
    for _ in range(records):
        call()
    tracker.flush(120)
    tracker.close(30)


def py_spy(records: int = 200_000) -> str:
    """Sample MEM_QUEUE into the collector with py-spy; own and inclusive time per thread."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return "py-spy is not installed (pip install py-spy)"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with servers(tmp) as (collector, _, _, _):
            raw = tmp / "profile.txt"
            subprocess.run(
                [
                    exe,
                    "record",
                    "-r",
                    "400",
                    "-f",
                    "raw",
                    "--threads",
                    "-o",
                    str(raw),
                    "--",
                    sys.executable,
                    "-m",
                    "benchmarks.profile_hot_paths",
                    "--workload",
                    collector,
                    str(records),
                ],
                env=child_env(tmp),
                check=True,
                capture_output=True,
            )
            return _summarise(raw.read_text())


def _summarise(raw: str, top: int = 15) -> str:
    per_thread: collections.Counter[str] = collections.Counter()
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(":")[-1].strip() or frames[0]
        per_thread[thread] += count
        seen = set()
        for frame in frames[1:]:
            name = frame.split(" (")[0]
            if name not in seen:
                inclusive[thread][name] += count
                seen.add(name)
    total = sum(per_thread.values()) or 1
    out = [f"py-spy samples per thread: {dict(per_thread)}"]
    for thread, counter in inclusive.items():
        share = per_thread[thread] / total
        if share < 0.05:
            continue  # start-up, imports
        out.append(f"---- thread {thread} ({share:.0%} of samples), inclusive share:")
        # Frames on (nearly) every stack are the thread's scaffolding: show what is under them.
        shown = [
            (name, count)
            for name, count in counter.most_common()
            if count / per_thread[thread] < 0.9
        ]
        for name, count in shown[:top]:
            out.append(f"  {count / per_thread[thread]:6.1%}  {name}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print the breakdown and the profiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", action="store_true", help="also sample the delivery thread")
    parser.add_argument("--workload", nargs=2, metavar=("COLLECTOR", "RECORDS"), help="internal")
    args = parser.parse_args(argv)
    if args.workload:
        _workload(args.workload[0], int(args.workload[1]))
        return 0
    print("== Tracker.track on MEM_QUEUE, step by step (us per call, best of 5)")
    for name, us in breakdown():
        print(f"  {'-' if us is None else f'{us:7.2f}'}  {name}")
    for report in caller_profiles():
        print(report)
    if args.py_spy:
        print("== MEM_QUEUE into the collector, every thread (py-spy)")
        print(py_spy())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
