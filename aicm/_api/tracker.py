"""``AsyncTracker``: record usage by hand, free-form or checked against a schema (layer 4).

Two call forms live on one class. Built as ``AsyncTracker()``, ``track(api_id,
service_key, usage)`` sends a ``/track`` record. Built as ``AsyncTracker(config_id,
service_id)``, the config's ``manual_usage_schema`` is loaded from ``GET /configs`` and
``track(usage)`` validates ``usage`` against it, then sends a ``/track-usage`` record
shaped like the service's ``ApiUsageRecord``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, overload

import anyio
import anyio.abc
import httpx

from .._core.exceptions import AicmError, RecordError, UnknownConfigError
from .._core.models import (
    RecordResult,
    TrackRecord,
    UsageRecord,
    WireRecord,
    normalize_timestamp,
)
from .._core.settings import DeliveryType, OnFull, Settings, resolve_settings
from .._core.validator import UsageSchema, compile_schema
from .._delivery.engine import DeadLetterRecord, DeliveryEngine
from .._delivery.health import DeliveryHealth
from .._io.http import AsyncCostManagerClient
from .._io.logfile import configure_logging

__all__ = ["AsyncTracker", "TrackerOptions"]

_ENQUEUED = "enqueued"

TrackerOptions = dict[str, Any]


def _settings_from(
    *,
    aicm_api_key: str | None,
    aicm_api_base: str | None,
    aicm_api_url: str | None,
    aicm_ini_path: str | None,
    delivery_type: DeliveryType | str | None,
    default_delivery: DeliveryType,
    **options: Any,
) -> tuple[Settings, DeliveryType]:
    settings = resolve_settings(
        ini_path=aicm_ini_path,
        api_key=aicm_api_key,
        api_base=aicm_api_base,
        api_url=aicm_api_url,
        delivery_type=delivery_type,
        **{k: v for k, v in options.items() if v is not None},
    )
    return settings, settings.delivery_type or default_delivery


class AsyncTracker:
    """Record usage events and deliver them (see the module docstring).

    Queued delivery (``MEM_QUEUE``, ``PERSISTENT_QUEUE``) runs an actor in a task group,
    so use ``async with AsyncTracker(...) as tracker:``; ``IMMEDIATE`` (the default) also
    works without it. All options are keyword-only and fall back to the environment, the
    INI file and the defaults.
    """

    default_delivery = DeliveryType.IMMEDIATE

    @overload
    def __init__(
        self,
        *,
        aicm_api_key: str | None = ...,
        aicm_api_base: str | None = ...,
        aicm_api_url: str | None = ...,
        aicm_ini_path: str | None = ...,
        delivery_type: DeliveryType | str | None = ...,
        delivery_on_full: OnFull | str | None = ...,
        on_discard: Callable[[WireRecord], object] | None = ...,
        queue_size: int | None = ...,
        max_batch_size: int | None = ...,
        batch_interval: float | None = ...,
        block_timeout: float | None = ...,
        timeout: float | None = ...,
        db_path: str | None = ...,
        max_age: float | None = ...,
        max_record_bytes: int | None = ...,
        log_file: str | None = ...,
        log_level: str | None = ...,
        log_bodies: bool | None = ...,
        transport: httpx.AsyncBaseTransport | None = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        config_id: str,
        service_id: str,
        *,
        aicm_api_key: str | None = ...,
        aicm_api_base: str | None = ...,
        aicm_api_url: str | None = ...,
        aicm_ini_path: str | None = ...,
        delivery_type: DeliveryType | str | None = ...,
        delivery_on_full: OnFull | str | None = ...,
        on_discard: Callable[[WireRecord], object] | None = ...,
        queue_size: int | None = ...,
        max_batch_size: int | None = ...,
        batch_interval: float | None = ...,
        block_timeout: float | None = ...,
        timeout: float | None = ...,
        db_path: str | None = ...,
        max_age: float | None = ...,
        max_record_bytes: int | None = ...,
        log_file: str | None = ...,
        log_level: str | None = ...,
        log_bodies: bool | None = ...,
        transport: httpx.AsyncBaseTransport | None = ...,
    ) -> None: ...

    def __init__(
        self,
        config_id: str | None = None,
        service_id: str | None = None,
        *,
        aicm_api_key: str | None = None,
        aicm_api_base: str | None = None,
        aicm_api_url: str | None = None,
        aicm_ini_path: str | None = None,
        delivery_type: DeliveryType | str | None = None,
        delivery_on_full: OnFull | str | None = None,
        on_discard: Callable[[WireRecord], object] | None = None,
        queue_size: int | None = None,
        max_batch_size: int | None = None,
        batch_interval: float | None = None,
        block_timeout: float | None = None,
        timeout: float | None = None,
        db_path: str | None = None,
        max_age: float | None = None,
        max_record_bytes: int | None = None,
        log_file: str | None = None,
        log_level: str | None = None,
        log_bodies: bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if (config_id is None) != (service_id is None):
            raise TypeError("give both config_id and service_id, or neither")
        for name, value in (("config_id", config_id), ("service_id", service_id)):
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"{name} must be a non-empty string, got {value!r}")
        self.config_id = config_id
        self.service_id = service_id
        self.settings, self.delivery_type = _settings_from(
            aicm_api_key=aicm_api_key,
            aicm_api_base=aicm_api_base,
            aicm_api_url=aicm_api_url,
            aicm_ini_path=aicm_ini_path,
            delivery_type=delivery_type,
            default_delivery=self.default_delivery,
            delivery_on_full=delivery_on_full,
            queue_size=queue_size,
            max_batch_size=max_batch_size,
            batch_interval=batch_interval,
            block_timeout=block_timeout,
            timeout=timeout,
            db_path=db_path,
            max_age=max_age,
            max_record_bytes=max_record_bytes,
            log_file=log_file,
            log_level=log_level,
            log_bodies=log_bodies,
        )
        configure_logging(log_file=self.settings.log_file, log_level=self.settings.log_level)
        self.client = AsyncCostManagerClient(settings=self.settings, transport=transport)
        self.engine = DeliveryEngine(
            self.client, self.settings, delivery_type=self.delivery_type, on_discard=on_discard
        )
        self._max_bytes = self.settings.max_record_bytes
        self._schema: UsageSchema | None = None
        self._api_id: str | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._closed = False

    def __repr__(self) -> str:
        form = f"{self.config_id!r}, {self.service_id!r}, " if self.config_id else ""
        return f"AsyncTracker({form}delivery_type={self.delivery_type.value!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncTracker:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await self.start(task_group)
        except BaseException:
            await stack.aclose()
            raise
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        finally:
            stack, self._exit_stack = self._exit_stack, None
            if stack is not None:
                await stack.__aexit__(exc_type, exc, tb)

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Load the schema (config form) and start delivery in ``task_group``."""
        if self.config_id is not None and self._schema is None:
            await self.load_schema()
        await self.engine.start(task_group)

    async def load_schema(self) -> None:
        """Fetch this tracker's config from ``GET /configs`` and compile its schema."""
        answer = await self.client.get_configs()
        for config in answer.service_configs:
            if config.config_id == self.config_id:
                self._api_id = config.api_id
                schema = config.manual_usage_schema or {}
                # No schema means nothing to check: any usage mapping is accepted.
                self._schema = compile_schema(schema, allow_extra=not schema)
                return
        known = ", ".join(sorted(c.config_id for c in answer.service_configs)) or "none"
        raise UnknownConfigError(f"the service has no config {self.config_id!r} (known: {known})")

    async def flush(self, timeout: float | None = None) -> int:
        """Deliver everything queued within ``timeout`` s; return how many records are left."""
        return await self.engine.flush(timeout)

    async def aclose(self, timeout: float | None = None) -> int:
        """Deliver what is queued within ``timeout`` s (default ``close_timeout``), then stop.

        Returns how many records were left undelivered (see :meth:`DeliveryEngine.aclose`).
        """
        if self._closed:
            return 0
        self._closed = True
        try:
            return await self.engine.aclose(timeout)
        finally:
            await self.client.aclose()

    def health(self) -> DeliveryHealth:
        """A snapshot of this tracker's delivery."""
        return self.engine.health()

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Records the service refused for good (memory queues; persistent ones are in the file)."""
        return self.engine.dead_letters()

    # -- building records (pure, also used by the sync facade in the caller's thread) -------

    def build_record(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> WireRecord:
        """Validate a ``track`` call's arguments and return the record it sends."""
        options = dict(kwargs)
        extra = set(options) - {"client_customer_key", "context", "response_id", "timestamp"}
        if extra:
            raise TypeError(
                f"track() got unexpected keyword argument(s): {', '.join(sorted(extra))}"
            )
        if self.config_id is None:
            if len(args) != 3:
                raise TypeError(
                    "track(api_id, service_key, usage, ...) takes 3 positional arguments; "
                    f"got {len(args)} (build the tracker as Tracker(config_id, service_id) "
                    "to call track(usage))"
                )
            return TrackRecord.build(
                args[0], args[1], args[2], max_bytes=self._max_bytes, **options
            )
        if len(args) != 1:
            raise TypeError(
                f"this tracker is bound to config {self.config_id!r}: call track(usage, ...); "
                f"got {len(args)} positional arguments"
            )
        return self._build_config_record(args[0], **options)

    def _build_config_record(
        self,
        usage: Any,
        *,
        client_customer_key: str | None = None,
        context: Any = None,
        response_id: str | None = None,
        timestamp: object = None,
    ) -> UsageRecord:
        if self._schema is None:
            raise AicmError("the config's schema is not loaded yet: enter the tracker first")
        self._schema.validate(usage)
        payload: dict[str, Any] = {
            "config_id": self.config_id,
            "service_id": self.service_id,
            "timestamp": normalize_timestamp(timestamp),
            "response_id": response_id,
            "usage": usage,
        }
        if response_id is None:
            del payload["response_id"]
        elif not isinstance(response_id, str) or not response_id:
            raise RecordError(
                f"must be a non-empty string, got {response_id!r}", field="response_id"
            )
        if client_customer_key is not None:
            if not isinstance(client_customer_key, str):
                raise RecordError("must be a string", field="client_customer_key")
            payload["client_customer_key"] = client_customer_key
        if context is not None:
            payload["context"] = context
        return UsageRecord.build(payload, max_bytes=self._max_bytes)

    # -- tracking --------------------------------------------------------------------------

    @overload
    async def track(
        self,
        api_id: str,
        service_key: str,
        usage: Mapping[str, Any],
        *,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        response_id: str | None = None,
        timestamp: object = None,
    ) -> RecordResult: ...

    @overload
    async def track(
        self,
        usage: Mapping[str, Any],
        *,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        response_id: str | None = None,
        timestamp: object = None,
    ) -> RecordResult: ...

    async def track(self, *args: Any, **kwargs: Any) -> RecordResult:
        """Record one usage event.

        ``IMMEDIATE`` returns the service's verdict; the queues return
        ``RecordResult(response_id, status="enqueued")`` once the record is queued (on disk,
        for ``PERSISTENT_QUEUE``). Bad input raises before anything is queued.
        """
        if self.config_id is not None and self._schema is None:
            await self.load_schema()
        record = self.build_record(args, kwargs)
        return await self.submit(record)

    async def submit(self, record: WireRecord) -> RecordResult:
        """Deliver an already-built record per this tracker's delivery type."""
        if self.delivery_type is DeliveryType.IMMEDIATE:
            answer = await self.engine.send_now([record])
            for result in answer.results:
                if result.response_id == record.response_id:
                    return result
            return RecordResult(response_id=record.response_id, status="queued")
        await self.engine.aput(record)
        return RecordResult(response_id=record.response_id, status=_ENQUEUED)

    async def track_batch(
        self, records: Iterable[Mapping[str, Any] | TrackRecord]
    ) -> list[RecordResult]:
        """Record many events; each a :class:`TrackRecord` or a mapping of ``track``'s arguments.

        Every record is validated before any is queued or sent.
        """
        built: list[WireRecord] = []
        for index, item in enumerate(records):
            if isinstance(item, (TrackRecord, UsageRecord)):
                built.append(item)
                continue
            if not isinstance(item, Mapping):
                raise TypeError(f"records[{index}] must be a mapping or a TrackRecord")
            data = dict(item)
            if self.config_id is None:
                usage = data.pop("usage", None)
                if usage is None:
                    usage = data.pop("payload", None)
                args: tuple[Any, ...] = (
                    data.pop("api_id", None),
                    data.pop("service_key", None),
                    usage,
                )
            else:
                args = (data.pop("usage", None),)
            built.append(self.build_record(args, data))
        if self.delivery_type is DeliveryType.IMMEDIATE:
            if not built:
                return []
            answer = await self.engine.send_now(built)
            verdicts = {r.response_id: r for r in answer.results}
            return [
                verdicts.get(
                    r.response_id, RecordResult(response_id=r.response_id, status="queued")
                )
                for r in built
            ]
        for record in built:
            await self.engine.aput(record)
        return [RecordResult(response_id=r.response_id, status=_ENQUEUED) for r in built]
