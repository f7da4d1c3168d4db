"""Celery-style prefork: a pool of forked worker processes tracking with the sync Tracker."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.util import Finalize

import aicm

# Made once in the parent, before the pool forks. A child never inherits the parent's
# queue or worker: the first track() in a child starts the child's own.
tracker = aicm.Tracker(delivery_type="mem_queue")


def start_worker() -> None:
    # Pool workers leave without running atexit hooks (Celery's too): close the tracker
    # when the worker shuts down, so what it queued is delivered. In Celery, connect
    # tracker.close to the worker_process_shutdown signal instead.
    Finalize(tracker, tracker.close, exitpriority=10)


def summarise(job: int) -> int:
    usage = {"input_tokens": 100 + job, "output_tokens": 20}
    tracker.track("openai", "gpt-5-mini", usage, client_customer_key=f"customer-{job % 3}")
    return os.getpid()


def main() -> None:
    pool = multiprocessing.get_context("fork").Pool(processes=2, initializer=start_worker)
    pids = set(pool.map(summarise, range(20)))
    pool.close()  # not terminate(): let each worker shut down and deliver
    pool.join()
    tracker.close()
    print(f"{len(pids)} worker processes tracked 20 jobs")


if __name__ == "__main__":
    main()
