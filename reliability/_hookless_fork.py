"""A process that forks through libc's ``fork()``, skipping Python's fork hooks.

Usage: python -m reliability._hookless_fork DELIVERY RUN CHILDREN N

As uWSGI without ``py-call-osafterfork`` forks its workers: the parent tracks N records
(aicm generates their response ids; each usage carries ``run``), then forks CHILDREN
times through ``ctypes``; every child tracks N records, closes and exits, the parent
tracks N more after each fork. Every process prints the ids ``track`` returned, one a line.
A fork comes while aicm's thread sleeps (the parent's records wait for a long batch
window): a hookless fork made while another thread runs Python can leave the child's
interpreter itself stuck, whatever the library.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

from aicm import Tracker


def main(argv: list[str]) -> int:
    """Track, fork without hooks, track in every process; print every id."""
    delivery, run, children, n = argv[0], argv[1], int(argv[2]), int(argv[3])
    tracker = Tracker(delivery_type=delivery, db_path=os.environ.get("REL_DB"), batch_interval=30)
    fork = ctypes.PyDLL(None).fork  # holds the GIL through the call: the child has it

    def track() -> None:
        ids = [
            tracker.track("openai", "openai::gpt-4o-mini", {"run": run, "n": i}).response_id
            for i in range(n)
        ]
        sys.stdout.write("".join(f"{rid}\n" for rid in ids))
        sys.stdout.flush()

    track()
    failed = 0
    for _ in range(children):
        time.sleep(0.3)  # aicm's thread asleep at the fork
        pid = fork()
        if pid == 0:
            code = 1
            try:
                track()
                code = 0 if tracker.close(20) == 0 else 2
            finally:
                os._exit(code)
        track()
        _, status = os.waitpid(pid, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    left = tracker.close(20)
    return 1 if failed or left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
