"""Scenario 9: what tracking costs a FastAPI handler under load (uvicorn, its own process).

One app process per mode (:mod:`benchmarks._webapp`: the handler awaits a fake LLM client
that answers at once, then tracks the usage as the mode says), all started before the first
round and idle but for the one under load. ``wrk`` (one thread, 8 keep-alive connections)
drives ``GET /chat``; without ``wrk``, the bounded generator of :mod:`benchmarks._load`
does. Records go to the local collector, another process. The modes' rounds are
interleaved, the order rotating.

Per round and mode: requests/s and the p50/p99 latency the load generator saw; the app
process's CPU (every thread, ``flush()`` of what the round queued included) per request;
and the p99 of the event loop's lag, sampled inside the app every 5 ms. Ratios are to the
same app without tracking.
"""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any

import httpx

from .._common import Context, Measure, ScenarioResult, Target, child_env, rotate, start_server
from .._load import run_load, wrk_path
from .._webapp import MODES

NAME = "web"
TITLE = "9. FastAPI under uvicorn: tracking in a web handler, 8 connections"

CONNECTIONS = 8
# (figure, unit, which way is better): one measure per mode and figure.
FIGURES: list[tuple[str, str, str]] = [
    ("req/s", "req/s", "higher"),
    ("latency p50", "ms", "lower"),
    ("latency p99", "ms", "lower"),
    ("app CPU per request", "us CPU/req", "lower"),
    ("event-loop lag p99", "ms", "lower"),
]


def subject(mode: str, figure: str) -> str:
    """The measure's name: ``FastAPI <mode label>: <figure>``."""
    return f"FastAPI {MODES[mode]}: {figure}"


def _one_round(url: str, duration: float, use_wrk: bool) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=120) as control:
        before = control.post("/_bench/start").json()
        load = run_load(url + "/chat", connections=CONNECTIONS, duration=duration, use_wrk=use_wrk)
        after = control.post("/_bench/stop").json()
    requests = max(1, int(after["requests"]))
    return {
        "req/s": load.rate,
        "latency p50": load.p50_ms,
        "latency p99": load.p99_ms,
        "app CPU per request": (after["cpu"] - before["cpu"]) / requests * 1e6,
        "event-loop lag p99": after["lag_p99_ms"],
        "errors": load.errors,
        "tool": load.tool,
    }


def run(ctx: Context) -> ScenarioResult:
    """Start one app per mode; drive them in interleaved rounds."""
    result = ScenarioResult(NAME, TITLE)
    duration = float(ctx.pick(4, 1))
    use_wrk = wrk_path() is not None
    measures: dict[tuple[str, str], Measure] = {}
    for figure, unit, better in FIGURES:
        for mode in MODES:
            role = "floor" if mode == "none" else "aicm"
            measures[mode, figure] = result.measure(
                subject(mode, figure),
                role,  # type: ignore[arg-type]
                figure,
                unit,
                better,  # type: ignore[arg-type]
            )
    env = child_env(ctx.tmp)
    processes: list[subprocess.Popen[str]] = []
    errors = 0
    tools: set[str] = set()
    try:
        urls: dict[str, str] = {}
        for mode in MODES:
            process, url = start_server(
                ["-m", "benchmarks._webapp", mode, "--collector", ctx.collector], env
            )
            processes.append(process)
            urls[mode] = url
        modes = list(MODES)
        for mode in modes if not ctx.quick else []:  # warm-up: first connections, caches
            _one_round(urls[mode], 1.0, use_wrk)
        for r in range(ctx.rounds):
            for mode in rotate(modes, r):
                figures = _one_round(urls[mode], duration, use_wrk)
                errors += int(figures["errors"])
                tools.add(str(figures["tool"]))
                for figure, _, _ in FIGURES:
                    value = figures[figure]
                    if value is not None:
                        measures[mode, figure].add_value(float(value))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=30)
    _targets(result)
    warm = "" if ctx.quick else ", after a 1 s warm-up each"
    result.notes.append(
        f"load: {', '.join(sorted(tools))}, {CONNECTIONS} connections, {duration:.0f} s per "
        f"round and mode, {ctx.rounds} rounds interleaved{warm}; {errors} failed requests"
    )
    result.notes.append(
        "app CPU per request: the app process's CPU (every thread) over the round, the "
        "flush() of what the round queued included, over the requests it handled; "
        "event-loop lag: how late a 5 ms sleep on the app's loop woke, p99 of the round"
    )
    result.extra["load_tool"] = sorted(tools)
    return result


def _targets(result: ScenarioResult) -> None:
    """The sync facade's added CPU against AsyncTracker's, for the same delivery type."""
    cpu = {mode: result.get(subject(mode, "app CPU per request")).median for mode in MODES}
    base = cpu["none"]
    added: dict[str, float | None] = {
        mode: None if value is None or base is None else value - base for mode, value in cpu.items()
    }
    result.extra["added_cpu_us_per_request"] = added
    for delivery in ("mem", "imm"):
        sync_added, async_added = added[f"sync_{delivery}"], added[f"async_{delivery}"]
        ratio = (
            None
            if sync_added is None or async_added is None or async_added <= 0
            else sync_added / async_added
        )
        label = "MEM_QUEUE" if delivery == "mem" else "IMMEDIATE"
        result.targets.append(
            Target(
                f"Tracker.track_async / AsyncTracker.track, app CPU added per request ({label})",
                ratio,
                "<=",
                1.1,
                "x",
            )
        )
