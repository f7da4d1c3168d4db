"""Benchmark of the local collector: records/s in 1000-record batches, requests/s of singles.

The collector runs as a subprocess (``python -m aicm.collector``) on a free loopback port,
storing to a SQLite file. Driver processes send it pre-serialised ``/track`` bodies with
httpx over a few keep-alive connections each; every record is a new event, so nothing is
deduplicated away. Each phase runs several rounds, each bounded by a request count and a
time limit; the medians are reported, with the collector's own CPU time per request (from
/proc, where there is one), printed as a table and written to
``benchmarks/results/collector.json``.

An httpx client spends several times the collector's CPU on each small request, so the
single-record phase drives from two processes: one cannot keep the collector busy.

    python benchmarks/bench_collector.py           # full run, about a minute
    python benchmarks/bench_collector.py --quick   # a few seconds, prints only
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "collector.json"
TARGET_BATCH_RECORDS_PER_S = 100_000
TARGET_SINGLE_REQUESTS_PER_S = 2_000
HEADERS = {
    "Content-Type": "application/json",
    "Authorization": "Bearer bench-key",
    "User-Agent": "aicm-bench/1",
}


def _bodies(prefix: str, count: int, records_per_body: int) -> list[bytes]:
    """Pre-serialised ``/track`` bodies; every record a new event (its own response_id)."""
    ids = itertools.count()
    bodies = []
    for _ in range(count):
        records = []
        for _ in range(records_per_body):
            n = next(ids)
            records.append(
                {
                    "api_id": "openai",
                    "service_key": "openai::gpt-4o-mini",
                    "response_id": f"{prefix}-{n}",
                    "timestamp": "2024-05-01T12:00:00.000000Z",
                    "payload": {"input_tokens": 100 + n % 50, "output_tokens": 20},
                    "client_customer_key": "customer-1",
                    "context": {"session": "bench", "n": n},
                }
            )
        bodies.append(json.dumps({"tracked": records}).encode())
    return bodies


def _send_all(
    transports: list[httpx.HTTPTransport], url: str, bodies: list[bytes], deadline: float
) -> int:
    """Send ``bodies`` from one thread per transport (connection) until done or the deadline.

    The drivers use httpx's transport directly: the Client's per-request conveniences
    (cookies, auth, redirects, URL merging) cost a quarter of the driver's CPU, which on
    a 2-core machine is taken from the server being measured.
    """
    feed: Iterator[bytes] = iter(bodies)  # next() on a list iterator is atomic: no lock
    target = httpx.URL(url + "/api/v1/track")
    counts = [0] * len(transports)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        transport = transports[index]
        try:
            for body in feed:
                request = httpx.Request("POST", target, content=body, headers=HEADERS)
                response = transport.handle_request(request)
                response.read()
                if response.status_code != 202:
                    raise RuntimeError(f"collector answered {response.status_code}")
                counts[index] += 1
                if time.perf_counter() > deadline:
                    return
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(transports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sum(counts)


def _driver(
    name: str,
    url: str,
    rounds: int,
    requests: int,
    records_per_request: int,
    connections: int,
    time_limit: float,
    barrier: Any,
    results: Any,
) -> None:
    """One driver process: per round, make its bodies, wait for the others, send, report.

    Blocking httpx transports in threads cost less CPU per request than an AsyncClient.
    """
    transports = [httpx.HTTPTransport() for _ in range(connections)]
    try:
        warm = _bodies(f"{name}-warm", connections * 2, records_per_request)
        _send_all(transports, url, warm, time.perf_counter() + time_limit)
        for round_ in range(rounds):
            bodies = _bodies(f"{name}-{round_}", requests, records_per_request)
            barrier.wait()
            started, cpu = time.perf_counter(), time.process_time()
            done = _send_all(transports, url, bodies, started + time_limit)
            results.put((round_, done, started, time.perf_counter(), time.process_time() - cpu))
    finally:
        for transport in transports:
            transport.close()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _phase(
    url: str,
    server_pid: int,
    *,
    name: str,
    drivers: int,
    connections: int,
    rounds: int,
    requests_per_round: int,
    records_per_request: int,
    time_limit: float,
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(drivers + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=_driver,
            args=(
                f"{name}{i}-{os.getpid()}",
                url,
                rounds,
                requests_per_round // drivers,
                records_per_request,
                connections,
                time_limit,
                barrier,
                results,
            ),
        )
        for i in range(drivers)
    ]
    for process in processes:
        process.start()
    per_round = []
    try:
        for _ in range(rounds):
            barrier.wait(timeout=120)
            cpu_before = _cpu_seconds(server_pid)
            reports = [results.get(timeout=time_limit + 60) for _ in range(drivers)]
            cpu_after = _cpu_seconds(server_pid)
            done = sum(r[1] for r in reports)
            seconds = max(r[3] for r in reports) - min(r[2] for r in reports)
            cpu_us = None
            if cpu_before is not None and cpu_after is not None and done:
                cpu_us = round((cpu_after - cpu_before) / done * 1e6, 1)
            driver_us = round(sum(r[4] for r in reports) / max(done, 1) * 1e6, 1)
            per_round.append(
                {
                    "requests": done,
                    "records": done * records_per_request,
                    "seconds": round(seconds, 4),
                    "requests_per_s": round(done / seconds, 1),
                    "records_per_s": round(done * records_per_request / seconds, 1),
                    "server_cpu_us_per_request": cpu_us,
                    "driver_cpu_us_per_request": driver_us,
                }
            )
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    cpu = [r["server_cpu_us_per_request"] for r in per_round]
    return {
        "phase": name,
        "records_per_request": records_per_request,
        "driver_processes": drivers,
        "connections_per_driver": connections,
        "rounds": per_round,
        "median_requests_per_s": round(
            statistics.median(r["requests_per_s"] for r in per_round), 1
        ),
        "median_records_per_s": round(statistics.median(r["records_per_s"] for r in per_round), 1),
        "median_driver_cpu_us_per_request": round(
            statistics.median(r["driver_cpu_us_per_request"] for r in per_round), 1
        ),
        "median_server_cpu_us_per_request": (
            round(statistics.median(cpu), 1) if None not in cpu else None  # type: ignore[type-var]
        ),
    }


def _start_collector(db: Path) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "aicm.collector", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if match is None:
        process.kill()
        raise SystemExit(f"the collector did not start: {line!r}")
    return process, match.group(0)


def _machine() -> dict[str, Any]:
    def have(module: str) -> bool:
        try:
            __import__(module)
        except ImportError:
            return False
        return True

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "orjson": have("orjson"),
        "uvloop": have("uvloop"),
        "httptools": have("httptools"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds; prints only")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per phase (5; quick 3)")
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds per round, at most")
    parser.add_argument("--drivers", type=int, default=2, help="driver processes for singles")
    parser.add_argument("--output", type=Path, default=None, help=f"JSON file (default {RESULTS})")
    args = parser.parse_args(argv)
    output = args.output or (None if args.quick else RESULTS)
    rounds = args.rounds or (3 if args.quick else 5)
    machine = _machine()

    with tempfile.TemporaryDirectory(prefix="aicm-bench-") as tmp:
        process, url = _start_collector(Path(tmp) / "bench.sqlite3")
        try:
            batches = _phase(
                url,
                process.pid,
                name="batches",
                drivers=1,
                connections=3,
                rounds=rounds,
                requests_per_round=20 if args.quick else 100,
                records_per_request=1000,
                time_limit=args.time_limit,
            )
            singles = _phase(
                url,
                process.pid,
                name="singles",
                drivers=args.drivers,
                connections=4,
                rounds=rounds,
                requests_per_round=1000 if args.quick else 6000,
                records_per_request=1,
                time_limit=args.time_limit,
            )
            stats = httpx.get(url + "/_collector/stats").json()
        finally:
            process.terminate()
            process.communicate(timeout=30)

    phases = [batches, singles]
    met = {
        "batch_records_per_s": batches["median_records_per_s"] >= TARGET_BATCH_RECORDS_PER_S,
        "single_requests_per_s": singles["median_requests_per_s"] >= TARGET_SINGLE_REQUESTS_PER_S,
    }
    if hasattr(os, "getloadavg"):  # other work on the machine skews the figures: say how much
        machine["load_average_at_end"] = list(os.getloadavg())
    report = {
        "benchmark": "collector",
        "quick": args.quick,
        "machine": machine,
        "targets": {
            "batch_records_per_s": TARGET_BATCH_RECORDS_PER_S,
            "single_requests_per_s": TARGET_SINGLE_REQUESTS_PER_S,
        },
        "met": met,
        "phases": phases,
        "collector_records": stats["records"]["track"],
    }

    print(f"{'phase':<8} {'rec/req':>7} {'procs':>5} {'conns':>5} {'req/s':>8} {'records/s':>10}"
          f" {'server us/req':>13} {'driver us/req':>13}")  # fmt: skip
    for p in phases:
        cpu = p["median_server_cpu_us_per_request"]
        print(
            f"{p['phase']:<8} {p['records_per_request']:>7} {p['driver_processes']:>5}"
            f" {p['connections_per_driver']:>5} {p['median_requests_per_s']:>8,.0f}"
            f" {p['median_records_per_s']:>10,.0f} {cpu if cpu is not None else '-':>13}"
            f" {p['median_driver_cpu_us_per_request']:>13}"
        )
    print(
        f"targets: batches >= {TARGET_BATCH_RECORDS_PER_S:,} records/s"
        f" ({'met' if met['batch_records_per_s'] else 'MISSED'}),"
        f" singles >= {TARGET_SINGLE_REQUESTS_PER_S:,} req/s"
        f" ({'met' if met['single_requests_per_s'] else 'MISSED'})"
    )
    records = stats["records"]["track"]
    print(f"collector stored {records['stored']:,} records, {records['duplicates']} duplicates")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {output}")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
