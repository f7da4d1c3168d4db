"""Records dropped for good are said out loud: on the log, or on stderr when nobody logs (layer 3).

A library logs through a ``NullHandler``, so an application that configured no logging
would never hear of a loss. Every drop the health figures count comes here: one line per
reason, the first at once, then at most one every ``_INTERVAL`` s while drops go on, the
rest at close and at exit; to the ``aicm.delivery`` logger when a handler would show it,
else to stderr.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections import Counter

from .._core.forks import after_fork_in_child
from .._io.logfile import shown_somewhere

__all__ = ["report_dropped", "report_pending"]

logger = logging.getLogger("aicm.delivery")

_INTERVAL = 10.0

# What each reason means, as the line says it.
_WHY = {
    "closed": "not delivered before the memory queue closed (close deadline)",
    "queue_error": "could not be queued (the log says why)",
    "invalid_payload": "a handling config made records that are not valid (the log says why)",
    "tracking_error": "calls whose usage could not be read (the log says why)",
    "not_started": "tracked before the tracker was started",
    "backpressure": "dropped oldest first: the memory queue was full (on_full=backpressure)",
    "dead_letter": "the service refused them (kept in memory: tracker.dead_letters())",
    "dead_row": "the service refused them (kept as dead rows in the queue file:"
    " `aicm queue list --state dead`)",
    "unencodable": "could not be encoded",
    "immediate_failed": "sending them at once (immediate delivery) failed; the service may"
    " have stored some (the log says why)",
    "immediate_refused": "the service refused them (immediate delivery; the log says why)",
}


# Counts per reason not said yet, and when each reason was last said.
_lock = threading.Lock()
_unsaid: Counter[str] = Counter()
_said_at: dict[str, float] = {}


def report_dropped(n: int, reason: str) -> None:
    """``n`` records were dropped for ``reason``: say so (now, or in the next line)."""
    if n <= 0:
        return
    now = time.monotonic()
    with _lock:
        _unsaid[reason] += n
        last = _said_at.get(reason)
        if last is not None and now - last < _INTERVAL:
            return
        _said_at[reason] = now
        count = _unsaid.pop(reason)
    _say(count, reason)


def report_pending() -> None:
    """Say every drop not said yet (at close and at exit)."""
    with _lock:
        unsaid = sorted(_unsaid.items())
        _unsaid.clear()
    for reason, count in unsaid:
        _say(count, reason)


def _say(count: int, reason: str) -> None:
    line = f"aicm: {count} usage record(s) not delivered: {_WHY.get(reason, reason)}"
    try:
        if shown_somewhere(logger):
            logger.error("%s", line)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
    except Exception:
        pass  # saying it must never break the caller or the actor


def _after_fork_in_child() -> None:
    # The parent says its own drops; a lock held at the fork would stay held.
    global _lock
    _lock = threading.Lock()
    _unsaid.clear()
    _said_at.clear()


after_fork_in_child(_after_fork_in_child)
atexit.register(report_pending)
