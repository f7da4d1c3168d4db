"""A process whose queue file is deleted while it tracks, then killed: nothing may be lost.

Usage: python -m reliability._deleted_file produce PREFIX N HOW
       python -m reliability._deleted_file drain

``produce`` tracks PREFIX-0 .. PREFIX-(N/2 - 1) through a persistent queue (a 60 s batch
window: nothing leaves), deletes the queue file (``db``: the database alone; ``all``:
with its -wal and -shm), tracks the rest, prints ``tracked`` and kills itself (SIGKILL).
``drain`` opens the same file and delivers what it holds. The file is ``REL_DB``.
"""

from __future__ import annotations

import os
import signal
import sys

from aicm import Tracker


def main(argv: list[str]) -> int:
    """Produce (and die), or drain."""
    db = os.environ["REL_DB"]
    if argv[0] == "drain":
        tracker = Tracker(delivery_type="persistent_queue", db_path=db)
        left = tracker.flush(30)
        tracker.close(5)
        print(f"left {left}", flush=True)
        return 0 if left == 0 else 1
    prefix, n, how = argv[1], int(argv[2]), argv[3]
    tracker = Tracker(delivery_type="persistent_queue", db_path=db, batch_interval=60)
    for i in range(n):
        if i == n // 2:
            for suffix in ("",) if how == "db" else ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.unlink(db + suffix)
        tracker.track("openai", "openai::gpt-4o-mini", {"n": i}, response_id=f"{prefix}-{i}")
    print("tracked", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
