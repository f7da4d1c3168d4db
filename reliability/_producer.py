"""The chaos runs' producer: a process that tracks at a steady rate until told to stop.

Usage::

    python -m reliability._producer DELIVERY PREFIX [--rate R] [--threads K] [--db PATH]
    python -m reliability._producer persistent_queue PREFIX --db PATH --drain

Each ``response_id`` is printed (and flushed) only after ``track`` returned for it: the
oracle is that every printed id reaches the collector exactly once. A line ``stop`` (or
the end) on standard input makes it close the tracker and print ``closed LEFT``.
Connection and backoff settings come from ``AICM_*`` environment variables.

``immediate`` runs ``--threads`` workers; a ``track`` that raises is tried again with the
same ``response_id`` (what an application that wants its record does), so a resend after
a lost answer must be absorbed by the service. An id still failing at the stop is printed
as ``gaveup ID``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from aicm import AicmError, Tracker

API_ID = "openai"
SERVICE_KEY = "openai::gpt-4o-mini"
_print_lock = threading.Lock()


def emit(line: str) -> None:
    """Write one whole line and flush it (threads never interleave within a line)."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def watch_stdin(stop: threading.Event) -> None:
    """Set ``stop`` on a ``stop`` line or at the end of standard input."""
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()


def pace(started: float, done: int, rate: float) -> None:
    """Sleep so that ``done`` records took at least ``done / rate`` seconds."""
    ahead = done / rate - (time.monotonic() - started)
    if ahead > 0:
        time.sleep(ahead)


def run_queued(tracker: Tracker, prefix: str, rate: float, stop: threading.Event) -> None:
    """Track ``PREFIX-0``, ``PREFIX-1``... into a queue until ``stop``."""
    started = time.monotonic()
    n = 0
    while not stop.is_set():
        rid = f"{prefix}-{n}"
        tracker.track(API_ID, SERVICE_KEY, {"input_tokens": n, "output_tokens": 1}, response_id=rid)
        emit(rid)
        n += 1
        pace(started, n, rate)


def run_immediate(
    tracker: Tracker, prefix: str, rate: float, threads: int, stop: threading.Event
) -> None:
    """``threads`` workers each track ``PREFIX-W-0``, ``PREFIX-W-1``... until ``stop``."""

    def worker(w: int) -> None:
        started = time.monotonic()
        n = 0
        while not stop.is_set():
            rid = f"{prefix}-{w}-{n}"
            while True:
                try:
                    result = tracker.track(
                        API_ID,
                        SERVICE_KEY,
                        {"input_tokens": n, "output_tokens": 1},
                        response_id=rid,
                    )
                except AicmError:
                    if stop.is_set():
                        emit(f"gaveup {rid}")
                        return
                    time.sleep(0.02)
                    continue
                if not result.ok:
                    emit(f"refused {rid} {result.status}")
                else:
                    emit(rid)
                break
            n += 1
            pace(started, n, rate / threads)

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def main(argv: list[str] | None = None) -> int:
    """Run the producer (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m reliability._producer")
    parser.add_argument("delivery", choices=["immediate", "mem_queue", "persistent_queue"])
    parser.add_argument("prefix")
    parser.add_argument("--rate", type=float, default=500.0, help="records per second")
    parser.add_argument("--threads", type=int, default=8, help="workers (immediate)")
    parser.add_argument("--db", default=None, help="queue file (persistent_queue)")
    parser.add_argument("--drain", action="store_true", help="deliver what the file holds")
    parser.add_argument("--close-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    tracker = Tracker(delivery_type=args.delivery, db_path=args.db)
    if args.drain:
        left = tracker.flush(args.close_timeout)
        emit(f"left {left}")
        tracker.close(5)
        return 0
    stop = threading.Event()
    threading.Thread(target=watch_stdin, args=(stop,), daemon=True).start()
    emit("ready")
    if args.delivery == "immediate":
        run_immediate(tracker, args.prefix, args.rate, args.threads, stop)
    else:
        run_queued(tracker, args.prefix, args.rate, stop)
    left = tracker.close(args.close_timeout)
    emit(f"closed {left}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
