"""``python -m reliability [--long]``: chaos, deployment shapes and bad input, with figures.

Without ``--long`` it runs the quick forms (what CI runs through ``tests/reliability``);
with it, the long form: about 4 minutes of chaos at a higher rate with more kills, larger
deployment shapes and tens of thousands of fuzzed inputs, bounded to under 10 minutes.
It prints a Markdown report (``docs/reliability.md`` quotes one) and exits 1 if any
oracle failed. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ._processes import CollectorProcess
from .badinput import (
    Tally,
    fast_retries,
    fuzz_answers_immediate,
    fuzz_answers_queued,
    fuzz_env,
    fuzz_handling_configs,
    fuzz_ini,
    fuzz_queue_file_bytes,
    fuzz_schemas,
    fuzz_track,
)
from .chaos import ChaosResult, long_schedule, quick_schedule, run_chaos
from .shapes import (
    ShapeResult,
    async_app,
    deleted_file,
    exit_script,
    gunicorn,
    gunicorn_available,
    hookless_fork,
    prefork,
    threads,
)

#: Failures the runner expects, until the bug is fixed (reported, not counted as new).
KNOWN_BUGS = {
    "prefork mem_queue": "a fork-pool worker ends with os._exit: atexit never delivers its "
    "memory queue",
    "gunicorn persistent_queue": "intermittent: a worker forked while the master's queue "
    "was inside a SQLite transaction cannot write its queue ('database is locked')",
    "prefork persistent_queue": "intermittent: a worker forked while the parent's queue "
    "was inside a SQLite transaction cannot write its queue ('database is locked')",
}

SIZES: dict[str, dict[str, Any]] = {
    "quick": {
        "rates": {"immediate": 300.0, "mem_queue": 600.0, "persistent_queue": 400.0},
        "kills": {"mem_queue": (1.5, 4.0), "persistent_queue": (0.7, 2.5)},
        "requests": 60,
        "fork": (10, 6, 20),
        "threads": 24,
        "tasks": (40, 25),
        "exit": 40,
        "hookless": (2, 30),
        "deleted": 40,
        "fuzz": {
            "track": 150,
            "handling": 80,
            "schemas": 80,
            "ini": 150,
            "env": 150,
            "answers": 40,
            "queued": 15,
            "files": 30,
        },
    },
    "long": {
        "rates": {"immediate": 600.0, "mem_queue": 1500.0, "persistent_queue": 1000.0},
        "kills": {"mem_queue": (3.0, 10.0), "persistent_queue": (1.0, 5.0)},
        "requests": 500,
        "fork": (50, 20, 100),
        "threads": 32,
        "tasks": (100, 50),
        "exit": 300,
        "hookless": (6, 200),
        "deleted": 400,
        "fuzz": {
            "track": 2000,
            "handling": 1000,
            "schemas": 1000,
            "ini": 2000,
            "env": 2000,
            "answers": 300,
            "queued": 100,
            "files": 300,
        },
    },
}


def run_shapes(collector: CollectorProcess, size: dict[str, Any], work: Path) -> list[ShapeResult]:
    """Every deployment shape at this size."""
    results: list[ShapeResult] = []
    if gunicorn_available():
        for delivery in ("mem_queue", "persistent_queue"):
            results.append(gunicorn(collector, delivery, size["requests"], work))
    for delivery in ("mem_queue", "persistent_queue"):
        parent_n, tasks, per_task = size["fork"]
        results.append(prefork(collector, delivery, parent_n, tasks, per_task, work))
        if delivery == "mem_queue":
            results.append(
                prefork(collector, delivery, parent_n, tasks, per_task, work, finalize=True)
            )
    per_thread = {"immediate": 10, "mem_queue": 250, "persistent_queue": 60}
    for delivery, n in per_thread.items():
        results.append(threads(collector, delivery, size["threads"], n, work))
    for backend in ("asyncio", "trio"):
        for delivery in ("mem_queue", "persistent_queue"):
            n_tasks, per_task = size["tasks"]
            results.append(async_app(collector, delivery, backend, n_tasks, per_task, work))
    for kind, delivery in (
        ("tracker", "mem_queue"),
        ("tracker", "persistent_queue"),
        ("cost_manager", "persistent_queue"),
        ("rest", "mem_queue"),
    ):
        results.append(exit_script(collector, kind, delivery, size["exit"], work))
    children, per_process = size["hookless"]
    for delivery in ("mem_queue", "persistent_queue"):
        results.append(hookless_fork(collector, delivery, children, per_process, work))
    for how in ("db", "all"):
        results.append(deleted_file(collector, how, size["deleted"], work))
    return results


def run_fuzz(
    collector: CollectorProcess, counts: dict[str, int], work: Path, failures: list[str]
) -> list[Tally]:
    """Every bad-input target with these example counts; a broken rule goes to ``failures``."""

    def stored() -> list[dict[str, Any]]:
        return collector.records("track")

    targets: list[tuple[str, Callable[[], Tally]]] = [
        ("track", lambda: fuzz_track(collector.api_base, stored, counts["track"], work)),
        ("handling", lambda: fuzz_handling_configs(counts["handling"])),
        ("schemas", lambda: fuzz_schemas(counts["schemas"])),
        ("ini", lambda: fuzz_ini(counts["ini"], work / "ini")),
        ("env", lambda: fuzz_env(counts["env"], work)),
        ("files", lambda: fuzz_queue_file_bytes(counts["files"], collector.api_base, work)),
    ]
    for backend in ("asyncio", "trio"):
        targets.append(
            (f"answers {backend}", partial(fuzz_answers_immediate, counts["answers"], backend))
        )
        targets.append(
            (f"queued {backend}", partial(fuzz_answers_queued, counts["queued"], backend))
        )
        targets.append(
            (
                f"persistent {backend}",
                partial(
                    fuzz_answers_queued,
                    counts["queued"],
                    backend,
                    "persistent_queue",
                    work / "answers",
                ),
            )
        )
    tallies: list[Tally] = []
    with fast_retries():
        for name, target in targets:
            try:
                tallies.append(target())
            except AssertionError as exc:
                failures.append(f"bad input, {name}: {exc}")
    return tallies


def report(
    form: str,
    seconds: float,
    chaos: ChaosResult,
    shapes: list[ShapeResult],
    tallies: list[Tally],
    failures: list[str],
) -> str:
    """The run as Markdown."""
    lines = [
        f"## Run of the {form} form",
        "",
        f"`python -m reliability{' --long' if form == 'long' else ''}` on {platform.node()} "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}): {seconds:.0f} s in all.",
        "",
        f"### Chaos ({chaos.seconds:.0f} s of faults, {len(chaos.phases)} phases)",
        "",
        "| delivery | offered | records/s | stored | lost | lost in memory at a kill "
        "| resent, absorbed by the server | kill -9 restarts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lane in chaos.lanes:
        lines.append(
            f"| {lane.delivery} | {lane.offered} | {lane.records_per_second:.0f} | {lane.stored} "
            f"| {lane.lost} | {lane.lost_in_memory_at_kill} | {lane.duplicates_suppressed} "
            f"| {lane.restarts} |"
        )
    total = sum(lane.offered for lane in chaos.lanes)
    lines += [
        "",
        f"Load held: {total} records in {chaos.seconds:.0f} s "
        f"({total / chaos.seconds:.0f} records/s over the three lanes).",
        "",
        "Faults injected, by kind (requests that met them, all lanes):",
        "",
        "| fault | requests |",
        "|---|---|",
        *[f"| {kind} | {n} |" for kind, n in chaos.faults.items()],
        "",
        "### Deployment shapes",
        "",
        "| shape | expected | stored | duplicates | verdict |",
        "|---|---|---|---|---|",
    ]
    for shape in shapes:
        verdict = "exact" if shape.ok else KNOWN_BUGS.get(shape.name, "FAILED")
        if shape.ok and shape.duplicates:
            verdict = "exact (resends after a worker's os._exit, absorbed by the server)"
        if not shape.ok and shape.name in KNOWN_BUGS:
            verdict = f"known bug: {verdict}"
        lines.append(
            f"| {shape.name} | {shape.expected} | {shape.stored} | {shape.duplicates} | {verdict} |"
        )
    tried = sum(t.tried for t in tallies)
    lines += [
        "",
        f"### Bad input ({tried} inputs)",
        "",
        "| entry point | tried | taken | refused (by error) |",
        "|---|---|---|---|",
    ]
    for tally in tallies:
        refused = ", ".join(f"{k} {v}" for k, v in tally.rejected.most_common())
        lines.append(f"| {tally.target} | {tally.tried} | {tally.accepted} | {refused} |")
    lines += ["", "### Failures", ""]
    lines += [f"- {f}" for f in failures] or ["none"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the quick or the long form and print the report."""
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    parser.add_argument("--long", action="store_true", help="the long form (< 10 minutes)")
    parser.add_argument("--seed", type=int, default=1, help="seed of kills and fault dice")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    form = "long" if args.long else "quick"
    size = SIZES[form]
    started = time.monotonic()
    failures: list[str] = []

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="aicm-reliability-") as tmp:
        work = Path(tmp)
        log("chaos")
        chaos = run_chaos(
            work / "chaos",
            schedule=long_schedule() if args.long else quick_schedule(),
            rates=size["rates"],
            kill_between=size["kills"],
            seed=args.seed,
            log=log,
        )
        failures += chaos.problems
        collector = CollectorProcess(work / "collector.db", seed=args.seed)
        try:
            log("deployment shapes")
            shapes = run_shapes(collector, size, work)
            failures += [
                f"{s.name}: {s.stored}/{s.expected} stored, {s.duplicates} duplicates, "
                f"missing {s.missing[:3]}, unexpected {s.unexpected[:3]} ({s.note})"
                for s in shapes
                if not s.ok and s.name not in KNOWN_BUGS
            ]
            log("bad input")
            fuzz_work = work / "fuzz"
            fuzz_work.mkdir()
            tallies = run_fuzz(collector, size["fuzz"], fuzz_work, failures)
        finally:
            collector.stop()
    seconds = time.monotonic() - started
    text = report(form, seconds, chaos, shapes, tallies, failures)
    print(text)
    if args.json:
        data = {
            "form": form,
            "seconds": seconds,
            "chaos": {
                "seconds": chaos.seconds,
                "faults": chaos.faults,
                "lanes": [
                    {
                        k: getattr(lane, k)
                        for k in (
                            "delivery",
                            "offered",
                            "delivered",
                            "stored",
                            "lost",
                            "lost_in_memory_at_kill",
                            "committed_unprinted",
                            "duplicates_suppressed",
                            "restarts",
                            "requests",
                        )
                    }
                    for lane in chaos.lanes
                ],
            },
            "shapes": [
                {"name": s.name, "expected": s.expected, "stored": s.stored, "ok": s.ok}
                for s in shapes
            ],
            "bad_input": {t.target: {"tried": t.tried, **Counter(t.rejected)} for t in tallies},
            "failures": failures,
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    log(f"done: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
