"""The provider response ids already recorded in this process: one record per call.

A call can be seen twice: by a wrapped client (``CostManager``) and by an OpenTelemetry span
of an instrumentation library. Each path claims the answer's id (`SeenResponses.claim`) before
it records; the second claim of an id is refused, so the call makes one record.

Claims are only kept while an `aicm.otel.AicmSpanProcessor` is live (another source
of the same calls): without one a claim costs one attribute read and keeps nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .._core.forks import after_fork_in_child

__all__ = ["SEEN", "SeenResponses"]


class SeenResponses:
    """A bounded, thread-safe set of response ids, oldest forgotten first."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._users = 0

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def active(self) -> bool:
        """True while claims are kept (a second source of records is live)."""
        return self._users > 0

    def activate(self) -> None:
        """A second source of records (a span processor) starts: keep claims."""
        with self._lock:
            self._users += 1

    def deactivate(self) -> None:
        """A span processor stopped; the last one to stop forgets every claim."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if not self._users:
                self._ids.clear()

    def claim(self, response_id: str | None) -> bool:
        """True when ``response_id`` is recorded by the caller (first claim, no id, or no
        second source live); False when it was already claimed."""
        if not self._users or not response_id:
            return True
        with self._lock:
            if response_id in self._ids:
                return False
            self._ids[response_id] = None
            if len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
            return True

    def _after_fork_in_child(self) -> None:
        # A lock another thread held at the fork would stay held in the child forever.
        self._lock = threading.Lock()


#: The process's registry.
SEEN = SeenResponses()
after_fork_in_child(SEEN._after_fork_in_child)
