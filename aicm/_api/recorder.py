"""What every async API class shares: settings, service client, engine, lifecycle (layer 4)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from .._core.exceptions import AicmError, QueueFullError, RecordError
from .._core.models import UsageRecord, WireRecord
from .._core.settings import DeliveryType, OnFull, Settings, resolve_settings
from .._delivery.engine import DeadLetterRecord, DeliveryEngine
from .._delivery.health import DeliveryHealth
from .._io.http import AsyncCostManagerClient
from .._io.logfile import configure_logging

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["AsyncRecorder", "DeliveryOptions"]

logger = logging.getLogger("aicm")


class DeliveryOptions(TypedDict, total=False):
    """The connection and delivery options every tracker, cost manager and wrapper takes."""

    aicm_api_key: str | None
    aicm_api_base: str | None
    aicm_api_url: str | None
    aicm_ini_path: str | None
    delivery_type: DeliveryType | str | None
    delivery_on_full: OnFull | str | None
    on_discard: Callable[[WireRecord], object] | None
    queue_size: int | None
    max_batch_size: int | None
    batch_interval: float | None
    block_timeout: float | None
    timeout: float | None
    db_path: str | None
    max_age: float | None
    max_record_bytes: int | None
    log_file: str | None
    log_level: str | None
    log_bodies: bool | None
    transport: httpx.AsyncBaseTransport | None


_SETTING_NAMES = {
    "aicm_api_key": "api_key",
    "aicm_api_base": "api_base",
    "aicm_api_url": "api_url",
}


def resolve_options(options: Mapping[str, Any]) -> Settings:
    """Resolve :class:`DeliveryOptions` into settings (argument > env > INI > default)."""
    unknown = set(options) - set(DeliveryOptions.__annotations__)
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(sorted(unknown))}")
    values = {
        _SETTING_NAMES.get(k, k): v
        for k, v in options.items()
        if k not in ("aicm_ini_path", "on_discard", "transport") and v is not None
    }
    return resolve_settings(ini_path=options.get("aicm_ini_path"), **values)


class AsyncRecorder:
    """Owns a :class:`DeliveryEngine` and its lifecycle; subclasses decide what to record.

    ``async with`` starts delivery in a task group of the caller's task and closes it on
    exit; :meth:`start` does the same in a task group the caller supplies.
    """

    default_delivery: ClassVar[DeliveryType] = DeliveryType.MEM_QUEUE

    def __init__(self, **options: Any) -> None:
        self.settings = resolve_options(options)
        self.delivery_type = self.settings.delivery_type or self.default_delivery
        configure_logging(log_file=self.settings.log_file, log_level=self.settings.log_level)
        self.aicm_client = AsyncCostManagerClient(
            settings=self.settings, transport=options.get("transport")
        )
        self.engine = DeliveryEngine(
            self.aicm_client,
            self.settings,
            delivery_type=self.delivery_type,
            on_discard=options.get("on_discard"),
        )
        self._task_group: anyio.abc.TaskGroup | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._closed = False
        self._detached = False
        self._attach_lock: anyio.Lock | None = None

    async def __aenter__(self) -> Self:
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
        """Prepare (see :meth:`_prepare`) and start delivery in ``task_group``."""
        self._task_group = task_group
        await self._prepare()
        await self.engine.start(task_group)

    async def _prepare(self) -> None:
        """Load what the subclass needs before delivery starts (configs...)."""

    # -- used without `async with`: the process's shared delivery worker ------------------

    @property
    def detached(self) -> bool:
        """True when delivery runs on the shared worker because no task group was given."""
        return self._detached

    async def attach(self) -> None:
        """Start delivery on the process's shared worker (for use without ``async with``).

        Everything that touches the network then runs on that worker's loop, so this
        object can be used from any event loop, asyncio or trio, without blocking it.
        """
        if self._task_group is not None or self._closed:
            return
        if self._attach_lock is None:
            self._attach_lock = anyio.Lock()
        async with self._attach_lock:
            if self._task_group is not None:
                return
            # Imported here: the shared worker is the sync facades' runtime (layer 5); an
            # async object only reaches for it when the caller gave it no task group.
            from .._sync.runtime import shared_runtime

            runtime = shared_runtime()
            await anyio.to_thread.run_sync(runtime.call, self._start_on, runtime)
            self._detached = True

    async def _start_on(self, runtime: Any) -> None:
        await self.start(runtime.task_group)
        runtime.register(self)

    async def on_worker(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` on the delivery loop (the shared worker's when detached)."""
        if not self._detached:
            return await func(*args)
        from .._sync.runtime import shared_runtime

        return await anyio.to_thread.run_sync(shared_runtime().call, func, *args)

    async def emit(self, records: Sequence[WireRecord]) -> None:
        """Queue records from a task of any loop without blocking it."""
        if not records:
            return
        if not self._detached:
            self.emit_nowait(records)
            return
        buffer = self.engine.buffer
        rest = [r for r in records if buffer is None or not buffer.try_put(r)]
        if not rest:
            return
        if self.delivery_type is DeliveryType.IMMEDIATE:
            await self.on_worker(self._send_all, rest)
        else:
            await anyio.to_thread.run_sync(self.emit_blocking, rest)

    async def _send_all(self, records: list[WireRecord]) -> None:
        try:
            await self.engine.send_now(records)
        except AicmError as exc:
            logger.warning("immediate delivery of %d record(s) failed: %s", len(records), exc)

    async def flush(self, timeout: float | None = None) -> int:
        """Deliver everything queued within ``timeout`` s; return how many records are left."""
        return await self.engine.flush(timeout)

    async def aclose(self, timeout: float | None = None) -> int:
        """Deliver what is queued within ``timeout`` s (default ``close_timeout``), then stop."""
        if self._closed:
            return 0
        self._closed = True
        try:
            return await self.engine.aclose(timeout)
        finally:
            await self.aicm_client.aclose()

    def health(self) -> DeliveryHealth:
        """A snapshot of this object's delivery."""
        return self.engine.health()

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Records the service refused for good (memory queues; persistent ones are in the file)."""
        return self.engine.dead_letters()

    # -- recording extracted payloads --------------------------------------------------

    def usage_records(self, payloads: Iterable[Mapping[str, Any]]) -> list[UsageRecord]:
        """Build ``/track-usage`` records from extracted payloads; bad ones are logged, skipped."""
        records = []
        for payload in payloads:
            try:
                records.append(UsageRecord.build(payload, max_bytes=self.settings.max_record_bytes))
            except RecordError as exc:
                self.engine.stats.discard("invalid_payload")
                logger.warning("an extracted payload was not recordable: %s", exc)
        return records

    def emit_nowait(self, records: Iterable[WireRecord]) -> None:
        """Queue records from code on the engine's loop that cannot await (a sync hook).

        Never blocks the loop: when the queue cannot take a record at once (full, with the
        ``block`` policy; or a SQLite commit), a task in this object's task group waits.
        """
        buffer = self.engine.buffer
        if self._task_group is None and not self._closed:
            self.engine.stats.discard("not_started", len(list(records)))
            logger.warning("records dropped: start delivery first (`async with ...`)")
            return
        for record in records:
            try:
                if buffer is not None and buffer.try_put(record):
                    continue
                if self.delivery_type is DeliveryType.IMMEDIATE:
                    self._spawn(self._send_now, record)
                elif buffer is not None and buffer.on_full is OnFull.RAISE:
                    raise QueueFullError(f"the delivery queue is full ({buffer.maxsize} records)")
                else:
                    self._spawn(self.engine.aput, record)
            except AicmError as exc:
                self.engine.stats.discard("queue_error")
                logger.warning("record %s not queued: %s", record.response_id, exc)

    def _spawn(self, func: Callable[[WireRecord], Any], record: WireRecord) -> None:
        if self._task_group is None or self._detached:
            raise AicmError("not started: use `async with` before making tracked calls")
        self._task_group.start_soon(self._guarded, func, record)

    async def _guarded(self, func: Callable[[WireRecord], Any], record: WireRecord) -> None:
        try:
            await func(record)
        except AicmError as exc:
            logger.warning("record %s not delivered: %s", record.response_id, exc)

    async def _send_now(self, record: WireRecord) -> None:
        await self.engine.send_now([record])

    def emit_blocking(self, records: Iterable[WireRecord]) -> None:
        """Queue records from a plain thread (sync facades); may block per the on-full policy."""
        for record in records:
            try:
                self.engine.put(record)
            except AicmError as exc:
                self.engine.stats.discard("queue_error")
                logger.warning("record %s not queued: %s", record.response_id, exc)
