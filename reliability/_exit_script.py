"""A script that tracks and simply ends: the atexit hook must deliver what it queued.

Usage: python -m reliability._exit_script KIND DELIVERY PREFIX N

KIND is ``tracker`` (``Tracker.track`` with ids ``PREFIX-i``), ``cost_manager`` (a wrapped
``Calculator.add``) or ``rest`` (a ``RestUsageWrapper`` over ``httpx.Client`` calling the
collector's ``/_collector/health``). Nothing is closed or flushed: it prints ``tracked``
and returns. The connection and the batch window come from ``AICM_*``.
"""

from __future__ import annotations

import os
import sys

import httpx

from aicm import CostManager, RestUsageWrapper, Tracker


class Calculator:
    """The plain client a CostManager wraps."""

    def add(self, a: int, b: int) -> int:
        """Add two numbers."""
        return a + b


def main(argv: list[str]) -> int:
    """Track N records through KIND with DELIVERY, then return without closing anything."""
    kind, delivery, prefix, count = argv[0], argv[1], argv[2], int(argv[3])
    db = os.environ.get("REL_DB")
    if kind == "tracker":
        tracker = Tracker(delivery_type=delivery, db_path=db)
        for i in range(count):
            tracker.track("openai", "openai::gpt-4o-mini", {"n": i}, response_id=f"{prefix}-{i}")
    elif kind == "cost_manager":
        manager = CostManager(Calculator(), delivery_type=delivery, db_path=db)
        for i in range(count):
            manager.client.add(i, 1)
    elif kind == "rest":
        base = os.environ["AICM_API_BASE"]
        wrapper = RestUsageWrapper(
            httpx.Client(), base_url=base, delivery_type=delivery, db_path=db
        )
        for _ in range(count):
            wrapper.get("/_collector/health").raise_for_status()
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    print("tracked", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
