"""A producer for the kill test: tracks through a persistent queue until it is killed.

Usage: python kill_producer.py DB_PATH PREFIX       track PREFIX-0, PREFIX-1, ... forever
       python kill_producer.py DB_PATH --drain      deliver what the file holds, then exit

Each response_id is printed (and flushed) only after ``track`` returned, i.e. once the
record is committed: the test's oracle is that every printed id reaches the collector.
AICM_API_KEY, AICM_API_BASE and AICM_LEASE_SECONDS come from the environment.
"""

from __future__ import annotations

import sys
import time

from aicm import Tracker

db_path, mode = sys.argv[1], sys.argv[2]
tracker = Tracker(delivery_type="persistent_queue", db_path=db_path, batch_interval=0.02)
if mode == "--drain":
    left = tracker.flush(20)
    print(f"left {left}", flush=True)
    tracker.close(5)
    sys.exit(0)
n = 0
while True:
    rid = f"{mode}-{n}"
    tracker.track("openai", "openai::gpt-4o", {"input_tokens": n}, response_id=rid)
    sys.stdout.write(rid + "\n")
    sys.stdout.flush()
    n += 1
    if n % 20 == 0:
        time.sleep(0.005)  # let the actor's batches interleave with the writes
