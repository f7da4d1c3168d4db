"""Scenario 8: CPU an idle tracker burns: 10 s (quick: 2 s) with delivery started, no traffic.

Each subject runs in a process of its own (``python -m benchmarks.scenarios.idle_cpu``):
it starts its clients, tracks one record and waits until it is delivered (so every
background worker has run once), settles for half a second, then measures
``time.process_time()`` over the idle window. All subjects' processes run side by side.
aicm: a started ``Tracker`` on MEM_QUEUE and one on PERSISTENT_QUEUE, into the collector.
Baselines: the service SDK's persistent queue (its worker polls SQLite), posthog and
segment clients (into the sink). Floor: a bare interpreter sleeping.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
from typing import Any

from .._common import REPO, Context, ScenarioResult, Target, child_env, have

NAME = "idle_cpu"
TITLE = "8. CPU used while idle (ms of CPU per second)"

SUBJECTS: dict[str, tuple[str, str]] = {
    "aicm": ("aicm Tracker MEM_QUEUE + PERSISTENT_QUEUE, started, idle", "aicm"),
    "aicostmanager": ("aicostmanager Tracker PERSISTENT_QUEUE, idle", "baseline"),
    "posthog": ("posthog client, idle", "baseline"),
    "segment": ("segment client, idle", "baseline"),
    "floor": ("floor: a bare interpreter sleeping", "floor"),
}
_MODULE = {"aicostmanager": "aicostmanager", "posthog": "posthog", "segment": "segment.analytics"}


def run(ctx: Context) -> ScenarioResult:
    """All subjects at once, ``rounds`` times."""
    result = ScenarioResult(NAME, TITLE)
    seconds = float(ctx.pick(10, 2))
    rounds = ctx.pick(3, 1)
    names = [n for n in SUBJECTS if n not in _MODULE or have(_MODULE[n])]
    measures = {
        n: result.measure(SUBJECTS[n][0], SUBJECTS[n][1], "idle", "ms/s", "lower")  # type: ignore[arg-type]
        for n in names
    }
    env = child_env(ctx.tmp)
    for r in range(rounds):
        scratch = ctx.scratch(f"idle-{r}")
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            futures = {
                n: pool.submit(_child, n, seconds, ctx.collector, ctx.sink, str(scratch), env)
                for n in names
            }
            for n, future in futures.items():
                data = future.result()
                measures[n].add_value(data["cpu_ms"] / seconds)
                measures[n].extra.setdefault("runs", []).append(data)
    aicm = measures["aicm"]
    result.targets.append(
        Target(
            f"idle CPU over {seconds:g} s, MEM_QUEUE + PERSISTENT_QUEUE trackers",
            None if aicm.median is None else aicm.median * seconds,
            "<=",
            # No figure was set; an idle tracker should cost well under 1% of a core.
            10.0 * seconds,
            "ms",
            note="target chosen here: < 1% of one core",
        )
    )
    result.notes.append(
        "ms of CPU per second of idling, user + system, of the whole process (every thread)"
    )
    return result


def _child(
    name: str, seconds: float, collector: str, sink: str, scratch: str, env: dict[str, str]
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.scenarios.idle_cpu",
        name,
        str(seconds),
        collector,
        sink,
        scratch,
    ]
    done = subprocess.run(
        command, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"idle child {name} failed: {done.stderr[-1500:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def _idle(name: str, seconds: float, collector: str, sink: str, scratch: str) -> dict[str, Any]:
    from pathlib import Path

    from .._subjects import aicm_options

    closers: list[Any] = []
    if name == "aicm":
        import aicm

        mem = aicm.Tracker(**aicm_options(collector, delivery_type="mem_queue"))
        pq = aicm.Tracker(
            **aicm_options(
                collector,
                delivery_type="persistent_queue",
                db_path=str(Path(scratch) / "aicm-idle.db"),
            )
        )
        for tracker in (mem, pq):
            tracker.track("openai", "gpt-4o-mini", {"input_tokens": 1})
            tracker.flush(30)
            closers.append(tracker.close)
    elif name == "aicostmanager":
        from .._subjects import aicostmanager_drain, aicostmanager_tracker

        tracker = aicostmanager_tracker("persistent_queue", collector, Path(scratch))
        tracker.track("openai::gpt-4o-mini", {"input_tokens": 1})
        aicostmanager_drain(tracker, 1, 30)
        closers.append(tracker.close)
    elif name == "posthog":
        from .._subjects import posthog_call, posthog_client

        client = posthog_client(sink)
        posthog_call(client)()
        client.flush(30)
        closers.append(client.shutdown)
    elif name == "segment":
        from .._subjects import segment_call, segment_client

        client = segment_client(sink)
        segment_call(client)()
        client.flush()
        closers.append(client.shutdown)
    time.sleep(0.5)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    for close in closers:
        close()
    return {"subject": name, "cpu_ms": round(cpu * 1000, 2), "wall_s": round(wall, 3)}


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.scenarios.idle_cpu NAME SECONDS COLLECTOR SINK SCRATCH``."""
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(_idle(args[0], float(args[1]), args[2], args[3], args[4])), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
