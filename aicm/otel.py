"""OpenTelemetry bridge (``pip install 'aicm-sdk[otel]'``): GenAI spans become usage records,
and delivery health becomes metrics.

[`AicmSpanProcessor`][aicm.otel.AicmSpanProcessor] reads each ended span that follows the
OpenTelemetry GenAI semantic conventions (made by an instrumentation such as
``opentelemetry-instrumentation-openai-v2`` or OpenLLMetry's) and records the call as the
built-in provider tracking would: the same ``/track`` record, through a
[`Tracker`][aicm.Tracker] and so with any delivery type. A call also seen by a wrapped client
(``CostManager``) makes one record: the wrapped client's, which carries its customer key and
context.

[`register_metrics`][aicm.otel.register_metrics] publishes
[`get_global_delivery_health`][aicm.get_global_delivery_health] as observable counters and
gauges of a ``MeterProvider``.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

try:
    from opentelemetry import metrics
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
    raise ImportError(
        f"aicm.otel needs the OpenTelemetry SDK ({exc}): pip install 'aicm-sdk[otel]'"
    ) from exc

from ._api.tracker import AsyncTracker
from ._core.forks import after_fork_in_child
from ._delivery.health import DeliveryHealth, get_global_delivery_health
from ._delivery.loss import report_dropped
from ._providers.genai_spans import GENAI_KEYS, genai_track
from ._providers.llm_usage import LlmTrack
from ._providers.seen import SEEN
from ._sync.tracker import Tracker
from ._version import __version__

__all__ = ["AicmSpanProcessor", "DeliveryMetrics", "register_metrics"]

logger = logging.getLogger("aicm.otel")


class AicmSpanProcessor(SpanProcessor):
    """Record the usage of every GenAI span a ``TracerProvider`` ends.

    ``AicmSpanProcessor(tracker)`` records through a [`Tracker`][aicm.Tracker] of yours;
    ``AicmSpanProcessor(**options)`` builds one from ``Tracker``'s options
    (``delivery_type=``, ``aicm_api_key=``...) and closes it at `shutdown()`.

    `on_end()` only reads the span's attributes and hands the call to a background
    thread: it never blocks on delivery and never raises into the instrumented code. That
    thread records a call ``hold`` seconds after its span ended, unless a wrapped client
    recorded the same answer (same ``response_id``) meanwhile; `force_flush()` and
    `shutdown()` record what is held at once. Spans that are not GenAI calls, or report
    no token usage, are ignored; a GenAI span whose attributes make no record is counted in
    `counts` (``invalid``) and logged once.
    """

    def __init__(
        self,
        tracker: Tracker | None = None,
        *,
        hold: float = 0.5,
        max_pending: int = 10_000,
        **options: Any,
    ) -> None:
        if isinstance(tracker, AsyncTracker):
            raise TypeError(
                "AicmSpanProcessor records from its own thread: pass a Tracker (it also "
                "serves async code), or Tracker options to build one"
            )
        if tracker is not None and options:
            raise TypeError("pass a tracker or Tracker options, not both")
        if tracker is not None and not isinstance(tracker, Tracker):
            raise TypeError(f"tracker must be an aicm.Tracker, got {type(tracker).__name__}")
        if hold < 0 or max_pending < 1:
            raise ValueError("hold must be >= 0 and max_pending >= 1")
        self._owns_tracker = tracker is None
        self.tracker: Tracker = Tracker(**options) if tracker is None else tracker
        self._hold = hold
        self._max_pending = max_pending
        #: Spans recorded, skipped as already recorded, invalid, and not recorded.
        self.counts: Counter[str] = Counter()
        self._pending: deque[tuple[float, LlmTrack]] = deque()
        self._cond = threading.Condition()
        self._busy = 0  # calls taken from _pending and not yet handed to the tracker
        self._stopped = False
        self._warned: set[str] = set()
        self._thread: threading.Thread | None = None
        SEEN.activate()
        # Before aicm's own exit hook closes the trackers (it was registered when aicm was
        # imported, and exit hooks run last-registered first): what is held is recorded.
        atexit.register(self.shutdown)
        ref = weakref.ref(self)
        after_fork_in_child(lambda: _after_fork_in_child(ref))

    def _after_fork_in_child(self) -> None:
        # The parent's thread is not in the child, and the lock may have been held by it:
        # the child starts a thread of its own with the next span. What the parent held is
        # the parent's to record.
        self._cond = threading.Condition()
        self._thread = None
        self._busy = 0
        self._pending = deque()

    # -- the SpanProcessor interface -------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing is done when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Hand a GenAI span's call to the recording thread (never raises); with the
        tracker's kill switch on, do nothing."""
        if self.tracker.disabled:
            return
        try:
            attributes = span.attributes
            if not attributes or not any(key in attributes for key in GENAI_KEYS):
                return
            track = genai_track(attributes)
            if track is None or self._stopped:
                return
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="aicm-otel", daemon=True)
                    self._thread.start()
                if len(self._pending) < self._max_pending:
                    self._pending.append((time.monotonic() + self._hold, track))
                    self._cond.notify()
                    return
            self._drop("pending_full", "spans dropped: more calls waiting than max_pending")
        except Exception as exc:
            self._drop("invalid", f"GenAI spans not recordable ({exc})")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Record every held call now and deliver what the tracker queued; True when all
        went within the timeout."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            self._pending = deque((0.0, track) for _, track in self._pending)
            self._cond.notify_all()
            while (self._pending or self._busy) and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        try:
            return self.tracker.flush(max(0.0, deadline - time.monotonic())) == 0
        except Exception as exc:
            logger.warning("flushing the tracker failed: %s", exc)
            return False

    def shutdown(self) -> None:
        """Record what is held, stop the thread; close the tracker if this built it."""
        if self._stopped:
            return
        self.force_flush()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5.0)
        atexit.unregister(self.shutdown)
        SEEN.deactivate()
        if self._owns_tracker:
            self.tracker.close()

    # -- the recording thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (
                    not self._pending or self._pending[0][0] > time.monotonic()
                ):
                    wait = self._pending[0][0] - time.monotonic() if self._pending else None
                    self._cond.wait(wait)
                if self._stopped and not self._pending:
                    return
                now = time.monotonic()
                due: list[LlmTrack] = []
                while self._pending and (self._pending[0][0] <= now or self._stopped):
                    due.append(self._pending.popleft()[1])
                self._busy = len(due)
            try:
                for track in due:
                    self._record(track)
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()

    def _record(self, track: LlmTrack) -> None:
        if not SEEN.claim(track.response_id):
            with self._cond:
                self.counts["duplicate"] += 1
            return
        try:
            self.tracker.track(
                track.api_id, track.service_key, track.usage, response_id=track.response_id
            )
        except Exception as exc:
            self._drop("failed", f"calls the tracker did not take ({exc})")
            return
        with self._cond:
            self.counts["recorded"] += 1

    def _drop(self, kind: str, why: str) -> None:
        with self._cond:
            self.counts[kind] += 1
        report_dropped(1, f"{why.partition(' (')[0]} (aicm.otel)")
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning("aicm.otel: %s; later ones are only counted", why)


def _after_fork_in_child(ref: weakref.ref[AicmSpanProcessor]) -> None:
    processor = ref()
    if processor is not None:
        processor._after_fork_in_child()


# -- delivery health as metrics ---------------------------------------------------------------

#: What each instrument reports, in the order they are made (``sent`` first: see _callback).
_WHAT: Mapping[str, str] = {
    "sent": "records the service accepted",
    "retried": "delivery attempts retried",
    "failed": "records whose delivery failed",
    "dead_lettered": "records the service refused for good",
    "limits_refused": "calls and tracks refused by a usage limit",
    "discarded": "records dropped, by reason",
    "queued": "records waiting to be sent",
    "in_flight": "records being sent",
    "oldest_pending_age": "age of the oldest waiting record",
    "queue_utilisation": "fill of the fullest memory queue (0..1)",
    "worker_alive": "1 while every delivery worker runs",
    "auth_paused": "1 while delivery waits for a valid API key",
    "engines": "live trackers and cost managers",
}
#: Figures that go up and down (the others only add up).
_GAUGES = frozenset(
    [
        "queued",
        "in_flight",
        "oldest_pending_age",
        "queue_utilisation",
        "worker_alive",
        "auth_paused",
        "engines",
    ]
)
_UNITS: Mapping[str, str] = {
    "retried": "{attempt}",
    "limits_refused": "{call}",
    "oldest_pending_age": "s",
    "queue_utilisation": "1",
    "worker_alive": "1",
    "auth_paused": "1",
    "engines": "{engine}",
}


class DeliveryMetrics:
    """The instruments [`register_metrics`][aicm.otel.register_metrics] made; `snapshot()`
    is what they last read."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._lock = threading.Lock()
        self._health: DeliveryHealth | None = None
        self.instruments: list[Any] = []
        for i, (name, what) in enumerate(_WHAT.items()):
            create = (
                meter.create_observable_gauge
                if name in _GAUGES
                else meter.create_observable_counter
            )
            callback = self._discarded if name == "discarded" else self._callback(name, i == 0)
            self.instruments.append(
                create(
                    f"aicm.delivery.{name}",
                    callbacks=[callback],
                    unit=_UNITS.get(name, "{record}"),
                    description=f"Process-wide: {what}.",
                )
            )

    def snapshot(self, *, refresh: bool = False) -> DeliveryHealth:
        """The health the instruments report; ``refresh`` takes a new one."""
        with self._lock:
            if refresh or self._health is None:
                self._health = get_global_delivery_health()
            return self._health

    def _callback(self, name: str, refresh: bool) -> Any:
        # The SDK reads instruments in the order they were made: the first takes this
        # collection's snapshot (one pass over every engine, a SQLite count for persistent
        # queues), the others reuse it.
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            value = getattr(self.snapshot(refresh=refresh), name)
            if value is None:
                return []
            return [Observation(float(value) if isinstance(value, bool) else value)]

        return observe

    def _discarded(self, options: CallbackOptions) -> Iterable[Observation]:
        discarded: Mapping[str, int] = self.snapshot().discarded
        return [Observation(n, {"reason": reason}) for reason, n in sorted(discarded.items())]


def register_metrics(meter_provider: metrics.MeterProvider | None = None) -> DeliveryMetrics:
    """Publish [`get_global_delivery_health`][aicm.get_global_delivery_health] as
    ``aicm.delivery.*`` metrics.

    Counters (``sent``, ``retried``, ``failed``, ``dead_lettered``, ``limits_refused``,
    ``discarded`` by ``reason``) and gauges (``queued``, ``in_flight``,
    ``oldest_pending_age``, ``queue_utilisation``, ``worker_alive``, ``auth_paused``,
    ``engines``) are read when the provider collects. ``meter_provider`` defaults to the
    global one.
    """
    meter = metrics.get_meter("aicm", __version__, meter_provider=meter_provider)
    return DeliveryMetrics(meter)
