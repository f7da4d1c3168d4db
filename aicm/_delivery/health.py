"""Live delivery figures: per-engine counters, frozen snapshots, the process-wide view (layer 3)."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from .._core.forks import after_fork_in_child
from .loss import report_dropped

logger = logging.getLogger("aicm.delivery")

__all__ = [
    "DeliveryHealth",
    "DeliveryStats",
    "discard_record",
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
    """Mutable counters an engine updates; read only through `snapshot()`."""

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
        self.unexpected_errors = 0
        self.limits_refused = 0

    def discard(self, reason: str, n: int = 1, *, said: bool = False) -> None:
        """Count ``n`` records dropped for ``reason``, and say so (see loss.py) unless the
        caller has (``said``): no drop goes unseen, logging configured or not."""
        with self.lock:
            self.discarded[reason] += n
        if not said:
            report_dropped(n, reason)

    def snapshot(
        self,
        *,
        worker_alive: bool,
        delivery_type: str,
        queued: int,
        in_flight: int,
        oldest_pending_age: float | None,
        capacity: int,
    ) -> DeliveryHealth:
        """These counters with what the engine's store reports, as a frozen snapshot."""
        return DeliveryHealth(
            worker_alive=worker_alive,
            delivery_type=delivery_type,
            queued=queued,
            in_flight=in_flight,
            sent=self.sent,
            retried=self.retried,
            failed=self.failed,
            dead_lettered=self.dead_lettered,
            discarded=dict(self.discarded),
            oldest_pending_age=oldest_pending_age,
            last_error=self.last_error,
            queue_utilisation=(queued / capacity) if capacity else 0.0,
            auth_paused=self.auth_paused,
            limits_refused=self.limits_refused,
        )


def discard_record(
    stats: DeliveryStats,
    record: _Named,
    reason: str,
    on_discard: Callable[[Any], object] | None,
    *,
    said: bool = False,
) -> None:
    """Count a dropped record in ``stats`` and tell the user's ``on_discard`` (whose errors
    are eaten: a drop must not raise at the call site nor stop the actor).

    The drop is said on the log or stderr (see loss.py) unless the caller says the count
    itself (``said``).
    """
    stats.discard(reason, said=said)
    try:
        logger.warning("dropped record %s (%s)", record.response_id, reason)
    except Exception:
        pass  # a failing log handler must not make a drop raise at the call site
    if on_discard is not None:
        try:
            on_discard(record)
        except Exception:
            try:
                logger.exception("on_discard callback raised; ignored")
            except Exception:
                pass


class _Named(Protocol):
    @property
    def response_id(self) -> str: ...


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


def get_global_delivery_health() -> DeliveryHealth:
    """Delivery figures summed over every live tracker and cost manager in this process."""
    with _engines_lock:
        engines = list(_engines)
    snaps = [e.health() for e in engines]
    if not snaps:
        return DeliveryHealth(
            worker_alive=False,
            delivery_type="none",
            queued=0,
            in_flight=0,
            sent=0,
            retried=0,
            failed=0,
            dead_lettered=0,
            discarded={},
            oldest_pending_age=None,
            last_error=None,
            queue_utilisation=0.0,
            engines=0,
        )
    discarded: Counter[str] = Counter()
    for s in snaps:
        discarded.update(s.discarded)
    ages = [s.oldest_pending_age for s in snaps if s.oldest_pending_age is not None]
    errors = [s.last_error for s in snaps if s.last_error]
    types = sorted({s.delivery_type for s in snaps})
    return DeliveryHealth(
        worker_alive=all(s.worker_alive for s in snaps),
        delivery_type=",".join(types),
        queued=sum(s.queued for s in snaps),
        in_flight=sum(s.in_flight for s in snaps),
        sent=sum(s.sent for s in snaps),
        retried=sum(s.retried for s in snaps),
        failed=sum(s.failed for s in snaps),
        dead_lettered=sum(s.dead_lettered for s in snaps),
        discarded=dict(discarded),
        oldest_pending_age=max(ages) if ages else None,
        last_error=errors[-1] if errors else None,
        queue_utilisation=max(s.queue_utilisation for s in snaps),
        auth_paused=any(s.auth_paused for s in snaps),
        engines=len(snaps),
        limits_refused=sum(s.limits_refused for s in snaps),
    )


def age_since(monotonic_at: float) -> float | None:
    """Seconds since a ``time.monotonic()`` instant (None for 0, meaning "nothing")."""
    return None if not monotonic_at else max(0.0, time.monotonic() - monotonic_at)
