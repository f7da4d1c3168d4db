"""Enforcing the usage limits the service triggered: before a wrapped call, after a track (layer 4).

A `LimitGuard` belongs to one tracker or cost manager. It reads the process's
`LimitBook` for its service and key, and raises
[`UsageLimitExceeded`][aicm.UsageLimitExceeded] when a hard limit covers what is about to happen.
Alerts never raise (the book warns once per alert event). ``enforce_limits=False`` turns refusals
off: a hard limit is then reported once per event with a WARNING.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio.from_thread

from .._core.exceptions import UsageLimitExceeded
from .._core.limits import TriggeredLimit, matching, vendor_of
from .._core.models import TrackRecord
from .._core.settings import Settings
from .._delivery.health import DeliveryStats
from .._io.limits_book import LimitBook

__all__ = [
    "REFRESH_AFTER",
    "START_WAIT",
    "LimitGuard",
    "fetch_at_start",
    "refresh_soon",
    "requested_model",
    "served_model",
]

logger = logging.getLogger("aicm.limits")

_SERVED_PER_MODEL = 8  # served model names remembered per requested model

#: Seconds without news from the service after which a refused call asks it again
#: (``GET /triggered-limits``, in the background): refused calls send no records, so no
#: ingest answer would ever say that a limit was lifted or raised.
REFRESH_AFTER = 30.0

#: Longest a tracker or REST wrapper starting waits for its ``GET /triggered-limits``
#: answer (a loopback or nearby service answers well within it); a slower answer is
#: still adopted in the background when it comes, within ``timeout``.
START_WAIT = 0.5


def requested_model(kwargs: Mapping[str, Any]) -> str | None:
    """The model a call asks for: ``model=`` (OpenAI, Anthropic, Gemini) or ``modelId=``
    (Bedrock)."""
    model = kwargs.get("model", kwargs.get("modelId"))
    return model if isinstance(model, str) and model else None


def served_model(response: Any) -> str | None:
    """The model a provider says served a call (``response.model``, Gemini's
    ``model_version``), if it says."""
    is_mapping = isinstance(response, Mapping)  # asked once: an ABC check is not free
    for name in ("model", "model_version"):
        model = response.get(name) if is_mapping else getattr(response, name, None)
        if isinstance(model, str) and model:
            return model
    return None


class LimitGuard:
    """Refuses calls and records that a hard usage limit covers (see the module docstring)."""

    def __init__(
        self,
        book: LimitBook,
        settings: Settings,
        stats: Callable[[], DeliveryStats],
        *,
        api_id: str | None = None,
        vendor: str | None = None,
        refresh: Callable[[], object] | None = None,
    ) -> None:
        self.book = book
        self.settings = settings
        self._stats = stats  # the owner's current engine's: a forked child builds a new one
        self._refresh = refresh
        # The vendor name a built-in records under (``fireworks-ai`` for an OpenAI client on
        # Fireworks' host) wins over the one read from the api_id (the client's class name).
        self.vendor = vendor or (vendor_of(api_id) if api_id else None)
        self._served: dict[str, tuple[str, ...]] = {}
        self._not_enforced: set[str] = set()
        self._lock = threading.Lock()

    # -- a wrapped client -------------------------------------------------------------------

    def service_keys(self, model: object) -> tuple[str, ...]:
        """``vendor::model`` for a requested model and for each model seen serving it; then
        the bare names, which a ``/track-usage`` record's ``service_id`` carries."""
        if self.vendor is None or not isinstance(model, str) or not model:
            return ()
        models = (model, *self._served.get(model, ()))
        return (*(f"{self.vendor}::{m}" for m in models), *models)

    def before_call(self, kwargs: Mapping[str, Any], customer_key: str | None) -> None:
        """Raise [`UsageLimitExceeded`][aicm.UsageLimitExceeded] if a hard limit covers this call
        (before it runs)."""
        if not self.book.limits:
            return
        keys = self.service_keys(requested_model(kwargs))
        self._enforce(keys, customer_key, response_id=None)

    def before_service_call(self, service_key: str, customer_key: str | None) -> None:
        """Raise [`UsageLimitExceeded`][aicm.UsageLimitExceeded] if a hard limit covers a call of
        ``service_key`` (a REST service's ``service_id``) about to be made."""
        if not self.book.limits:
            return
        self._enforce((service_key,), customer_key, response_id=None)

    def after_call(
        self, kwargs: Mapping[str, Any], response: Any, records: Iterable[object] = ()
    ) -> None:
        """Remember which model served the requested one (``gpt-4o`` -> ``gpt-4o-2024-08-06``):
        the answer's ``model``, and the model each ``/track`` record of the call names (a
        built-in reads it where the vendor puts it: Gemini's ``model_version``...)."""
        requested = requested_model(kwargs)
        if requested is None:
            return
        served = [served_model(response)]
        for record in records:
            if isinstance(record, TrackRecord):
                served.append(record.vendor_service_key.partition("::")[2])
        for model in served:
            if model and model != requested:
                self._remember_served(requested, model)

    def _remember_served(self, requested: str, served: str) -> None:
        known = self._served.get(requested, ())
        if served not in known:
            with self._lock:
                self._served[requested] = (served, *known)[:_SERVED_PER_MODEL]

    # -- a tracked record ---------------------------------------------------------------------

    def after_record(self, record: object) -> None:
        """`after_track()` for a built record: a ``/track`` one (its ``"vendor::model"``
        service key as the current record sends it, whatever the record's form) or a
        ``/track-usage`` one (its payload's ``service_id`` and ``client_customer_key``)."""
        if not self.book.limits:
            return
        payload = getattr(record, "payload", None)
        service_key = getattr(record, "service_key", None)
        if service_key is None and isinstance(payload, dict):
            service_key = payload.get("service_id")
            customer_key = payload.get("client_customer_key")
        else:
            if isinstance(record, TrackRecord):
                service_key = record.vendor_service_key  # as the current record sends it
            customer_key = getattr(record, "customer_key", None) or getattr(
                record, "client_customer_key", None
            )
        response_id = getattr(record, "response_id", None)
        self.after_track(
            service_key=service_key if isinstance(service_key, str) else None,
            customer_key=customer_key if isinstance(customer_key, str) else None,
            response_id=response_id if isinstance(response_id, str) else None,
        )

    def after_track(
        self, *, service_key: str | None, customer_key: str | None, response_id: str | None
    ) -> None:
        """Raise [`UsageLimitExceeded`][aicm.UsageLimitExceeded] (with ``response_id``) if a hard
        limit covers a record just handed to delivery."""
        if not self.book.limits:
            return
        self._enforce((service_key,) if service_key else (), customer_key, response_id=response_id)

    # -- shared ---------------------------------------------------------------------------------

    def _enforce(
        self, service_keys: tuple[str, ...], customer_key: str | None, *, response_id: str | None
    ) -> None:
        found = [
            limit
            for limit in matching(
                self.book.limits,
                service_keys=service_keys,
                customer_key=customer_key,
                api_key_id=self.book.api_key_id,
                now=time.time(),
            )
            if limit.hard
        ]
        if not found:
            return
        if not self.settings.enforce_limits:
            self._report_unenforced(found)
            return
        stats = self._stats()
        with stats.lock:
            stats.limits_refused += 1
        if self._refresh is not None and time.monotonic() - self.book.heard_at >= REFRESH_AFTER:
            self.book.heard_at = time.monotonic()
            try:
                self._refresh()
            except Exception:
                logger.exception("could not ask the service for its usage limits again")
        raise _exceeded(found, service_keys, customer_key, response_id)

    def _report_unenforced(self, found: list[TriggeredLimit]) -> None:
        for limit in found:
            if limit.event_id in self._not_enforced:
                continue
            with self._lock:
                self._not_enforced.add(limit.event_id)
            logger.warning(
                "usage limit reached but not enforced (enforce_limits is off): %s",
                limit.describe(),
            )


def _exceeded(
    found: list[TriggeredLimit],
    service_keys: tuple[str, ...],
    customer_key: str | None,
    response_id: str | None,
) -> UsageLimitExceeded:
    first = found[0]
    matched: dict[str, str | None] = {}
    if first.service_key is not None:
        matched["service_key"] = first.service_key
    elif service_keys:
        matched["service_key"] = service_keys[0]
    matched["customer_key"] = customer_key
    what = ", ".join(f"{k} {v!r}" for k, v in matched.items() if v is not None)
    text = f"usage limit {first.limit_id} reached"
    if first.limit_message:
        text += f": {first.limit_message}"
    text += f" ({first.describe(with_message=False)}; matched {what or 'every call'})"
    if len(found) > 1:
        text += f"; and {len(found) - 1} more limit(s)"
    if response_id is not None:
        text += f"; the record {response_id!r} was still handed to delivery"
    else:
        text += "; the call was not made"
    return UsageLimitExceeded(
        text,
        limit_id=first.limit_id,
        limit_message=first.limit_message,
        matched=matched,
        limits=found,
        response_id=response_id,
    )


def refresh_soon(recorder: Any) -> None:
    """Have ``recorder`` (a started cost manager) ask the service for its limits again, in a
    background task of its own; from its loop's thread or any other."""
    group, token = recorder._task_group, recorder._token
    if group is None or token is None:
        return
    task = (recorder.aicm_client.refresh_limits, "aicm-limits-refresh")
    if recorder._on_engine_thread():
        recorder._start_background(*task)
    else:
        anyio.from_thread.run_sync(recorder._start_background, *task, token=token)


async def fetch_at_start(
    client: Any, settings: Settings, start_background: Callable[..., None]
) -> None:
    """Ask the service for the limits in force as a tracker or REST wrapper starts.

    Only with ``enforce_limits`` and an API key, and only when the process's book for this
    service and key is not fresh (nobody here asked or was told in the last
    `REFRESH_AFTER` s, and no shared queue file holds an answer that recent). The
    request runs in the background (``start_background(func, name)``), bounded by
    ``timeout``, its failures logged at INFO; the start waits for it at most
    `START_WAIT` s, so a service that does not answer holds nothing up.
    """
    if not settings.enforce_limits or settings.api_key is None:
        return
    if not client.limits.claim_start_fetch(REFRESH_AFTER):
        return
    done = anyio.Event()

    async def fetch() -> None:
        try:
            await client.refresh_limits()
        finally:
            done.set()

    start_background(fetch, "aicm-limits-at-start")
    with anyio.move_on_after(min(START_WAIT, settings.timeout)):
        await done.wait()
