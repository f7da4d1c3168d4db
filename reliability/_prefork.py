"""A Celery-like prefork pool: the parent tracks, forks 2 workers, they run tracking tasks.

Usage: python -m reliability._prefork DELIVERY PREFIX PARENT_N TASKS PER_TASK [--finalize]

The parent builds a ``Tracker`` and tracks ``PARENT_N`` records *before* the pool forks
(its memory queue and SQLite handles are then the children's inheritance), then a
``multiprocessing`` pool with the fork start method runs ``TASKS`` tasks, each tracking
``PER_TASK`` records in a worker, as Celery's prefork pool does. Workers end the way pool
workers end (``os._exit`` after the pool closes). The parent then tracks once more,
closes its tracker and prints ``left N`` (records it could not deliver). ``REL_DB`` is
the queue file; the connection comes from ``AICM_*``. With ``--finalize`` each worker
closes the tracker as it ends (``multiprocessing.util.Finalize``, docs/guides/prefork.md).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import sys
import time

from aicm import Tracker

tracker: Tracker | None = None


def task(prefix: str, per_task: int) -> int:
    """One pool task: track ``per_task`` records with the tracker the parent built."""
    assert tracker is not None
    for i in range(per_task):
        tracker.track("openai", "openai::gpt-4o-mini", {"n": i}, response_id=f"{prefix}-{i}")
    return os.getpid()


def close_at_worker_exit() -> None:
    """Pool initializer: close the tracker when the worker ends (what atexit cannot do)."""
    assert tracker is not None
    multiprocessing.util.Finalize(tracker, tracker.close, exitpriority=10)


def main(argv: list[str]) -> int:
    """Run the pool (see the module docstring)."""
    global tracker
    delivery, prefix = argv[0], argv[1]
    parent_n, tasks, per_task = int(argv[2]), int(argv[3]), int(argv[4])
    tracker = Tracker(delivery_type=delivery, db_path=os.environ.get("REL_DB"))
    for i in range(parent_n):
        tracker.track("openai", "openai::gpt-4o-mini", {"n": i}, response_id=f"{prefix}-p-{i}")
    initializer = close_at_worker_exit if "--finalize" in argv else None
    pool = multiprocessing.get_context("fork").Pool(2, initializer=initializer)
    try:
        jobs = [pool.apply_async(task, (f"{prefix}-t{t}", per_task)) for t in range(tasks)]
        pids = {job.get(15) for job in jobs}
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    tracker.track("openai", "openai::gpt-4o-mini", {"n": 0}, response_id=f"{prefix}-p-after")
    # Rows a worker leased and never acked (it ended mid-request) wait out their lease.
    deadline = time.monotonic() + 30
    left = tracker.flush(5)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = tracker.flush(5)
    left = tracker.close(5)
    print(f"workers {len(pids)} left {left}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
