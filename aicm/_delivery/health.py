"""Live delivery figures: per-engine counters, frozen snapshots, the process-wide view (layer 3)."""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping
from typing import Protocol

import attrs

from .._core.forks import after_fork_in_child
from .loss import report_dropped

__all__ = [
    "DeliveryHealth",
    "DeliveryStats",
    "get_global_delivery_health",
    "register_engine",
]


@attrs.frozen(kw_only=True)
class DeliveryHealth:
    """A snapshot of delivery: what is waiting, what went, what failed, and why."""

    worker_alive: bool
    delivery_type: str
    queued: int
    in_flight: int
    sent: int
    retried: int
    failed: int
    dead_lettered: int
    discarded: Mapping[str, int]
    oldest_pending_age: float | None
    last_error: str | None
    queue_utilisation: float
    auth_paused: bool = False
    engines: int = 1
    #: Calls and tracks refused because a usage limit the service triggered covers them.
    limits_refused: int = 0

    @property
    def discarded_total(self) -> int:
        """Records dropped for any reason."""
        return sum(self.discarded.values())


class DeliveryStats:
    """Mutable counters an engine updates; read through its ``health()``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.retried = 0
        self.failed = 0
        self.dead_lettered = 0
        self.discarded: Counter[str] = Counter()
        self.in_flight = 0
        self.last_error: str | None = None
        self.auth_paused = False
        self.limits_refused = 0

    def add(self, **deltas: int) -> None:
        """Add to counters from any thread (IMMEDIATE sends count from callers' threads)."""
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def discard(self, reason: str, n: int = 1, *, said: bool = False) -> None:
        """Count ``n`` records dropped for ``reason``, and say so (see loss.py) unless the
        caller has (``said``): no drop goes unseen, logging configured or not."""
        with self.lock:
            self.discarded[reason] += n
        if not said:
            report_dropped(n, reason)


class _HasHealth(Protocol):
    def health(self) -> DeliveryHealth: ...


_engines: weakref.WeakSet[_HasHealth] = weakref.WeakSet()
_engines_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A lock another thread held at the fork would stay held in the child forever.
    global _engines_lock
    _engines_lock = threading.Lock()


after_fork_in_child(_after_fork_in_child)


def register_engine(engine: _HasHealth) -> None:
    """Make ``engine`` count in [`get_global_delivery_health()`][aicm.get_global_delivery_health]
    while it lives."""
    with _engines_lock:
        _engines.add(engine)


def unregister_engine(engine: _HasHealth) -> None:
    """Stop counting ``engine`` (it was closed)."""
    with _engines_lock:
        _engines.discard(engine)


# The figures that add up over engines.
_SUMMED = ("queued", "in_flight", "sent", "retried", "failed", "dead_lettered", "limits_refused")


def get_global_delivery_health() -> DeliveryHealth:
    """Delivery figures summed over every live tracker and cost manager in this process."""
    with _engines_lock:
        engines = list(_engines)
    snaps = [e.health() for e in engines]
    discarded: Counter[str] = Counter()
    for s in snaps:
        discarded.update(s.discarded)
    ages = [s.oldest_pending_age for s in snaps if s.oldest_pending_age is not None]
    errors = [s.last_error for s in snaps if s.last_error]
    return DeliveryHealth(
        worker_alive=bool(snaps) and all(s.worker_alive for s in snaps),
        delivery_type=",".join(sorted({s.delivery_type for s in snaps})) or "none",
        discarded=dict(discarded),
        oldest_pending_age=max(ages, default=None),
        last_error=errors[-1] if errors else None,
        queue_utilisation=max((s.queue_utilisation for s in snaps), default=0.0),
        auth_paused=any(s.auth_paused for s in snaps),
        engines=len(snaps),
        **{name: sum(getattr(s, name) for s in snaps) for name in _SUMMED},
    )


def age_since(monotonic_at: float) -> float | None:
    """Seconds since a ``time.monotonic()`` instant (None for 0, meaning "nothing")."""
    return None if not monotonic_at else max(0.0, time.monotonic() - monotonic_at)
