"""The collector's counters (layer 6): requests, records, faults, who called; thread-safe."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from aicm._core.wire import KINDS, Kind

__all__ = ["ENDPOINTS", "FAULT_KINDS", "CollectorStats"]

#: The SDK endpoints the statistics count, by name.
ENDPOINTS = ("track", "track_usage", "configs", "usage_limits", "triggered_limits")
#: The kinds of injected faults the statistics count.
FAULT_KINDS = ("fail_first", "failure", "latency", "drop", "reject", "unauthorized")


class CollectorStats:
    """What the collector has seen since it started (or was last cleared).

    Only whether an ``Authorization`` header came is kept, never its value.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Start counting afresh."""
        with self._lock:
            self._requests: dict[str, Counter[str]] = {e: Counter() for e in ENDPOINTS}
            self._records: dict[Kind, Counter[str]] = {k: Counter() for k in KINDS}
            self._faults: Counter[str] = Counter()
            self._user_agents: set[str] = set()
            self._last_user_agent: str | None = None
            self._auth_seen = False
            self._without_auth = 0

    def request_arrived(self, user_agent: str | None, has_authorization: bool) -> None:
        """Note an SDK request's User-Agent and whether it carried an Authorization header."""
        with self._lock:
            self._last_user_agent = user_agent
            if user_agent is not None:
                self._user_agents.add(user_agent)
            if has_authorization:
                self._auth_seen = True
            else:
                self._without_auth += 1

    def answered(self, endpoint: str, status: int | str) -> None:
        """Note the status an SDK request got (``"dropped"`` when the connection was cut)."""
        with self._lock:
            self._requests[endpoint][str(status)] += 1

    def records_seen(
        self, kind: Kind, *, received: int, stored: int, duplicates: int, errors: int
    ) -> None:
        """Note the fate of one batch's records."""
        with self._lock:
            counter = self._records[kind]
            counter["received"] += received
            counter["stored"] += stored
            counter["duplicates"] += duplicates
            counter["errors"] += errors

    def fault(self, kind: str, n: int = 1) -> None:
        """Note ``n`` injected faults of ``kind``."""
        with self._lock:
            self._faults[kind] += n

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-ready data."""
        with self._lock:
            return {
                "requests": {e: dict(sorted(c.items())) for e, c in self._requests.items()},
                "records": {
                    k: {name: c[name] for name in ("received", "stored", "duplicates", "errors")}
                    for k, c in self._records.items()
                },
                "faults": {name: self._faults[name] for name in FAULT_KINDS},
                "last_user_agent": self._last_user_agent,
                "user_agents": sorted(self._user_agents),
                "auth_header_seen": self._auth_seen,
                "requests_without_auth": self._without_auth,
            }
