"""Track with the sync Tracker's memory queue and exit without closing (the atexit hook's job).

Usage: python atexit_producer.py N PREFIX; AICM_API_KEY and AICM_API_BASE point at a collector.
"""

from __future__ import annotations

import sys

from aicm import Tracker

count, prefix = int(sys.argv[1]), sys.argv[2]
# A long batch window: nothing goes before exit unless the exit flushes.
tracker = Tracker(delivery_type="mem_queue", batch_interval=60)
for i in range(count):
    tracker.track("openai", "openai::gpt-4o", {"input_tokens": i}, response_id=f"{prefix}-{i}")
print("tracked", flush=True)
