"""What the cost manager and the REST wrappers share: settings, engine, lifecycle, tags (layer 4).

An :class:`AsyncRecorder` owns one :class:`DeliveryEngine`. It runs either in a task group
of the caller (``async with``, or :meth:`AsyncRecorder.start`), or, *detached*, on the
process's shared delivery worker (the sync facades' runtime) when it is used without
``async with``: then everything that touches the engine or the service runs on the
worker's loop, and the caller's loop (asyncio or trio) only waits for it in a thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from .._core.exceptions import AicmError, ClosedError, RecordError, shown
from .._core.jsonplain import to_plain
from .._core.models import UsageRecord, WireRecord
from .._core.settings import DeliveryType
from .._delivery.engine import DeadLetterRecord, DeliveryEngine
from .._delivery.health import DeliveryHealth
from .._delivery.worker import shared_runtime
from .._io.http import AsyncCostManagerClient
from .._io.logfile import configure_logging
from .lifecycle import AsyncWithLifecycle
from .options import DeliveryOptions, resolve_options

__all__ = ["AsyncRecorder", "CallScope", "DeliveryOptions", "resolve_options"]

logger = logging.getLogger("aicm")

Tags = tuple[str | None, dict[str, Any] | None]


def _customer_key(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"client_customer_key must be a non-empty string, got {shown(value)}")
    return value


def _context(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"context must be a mapping, got {type(value).__name__}")
    plain = to_plain(value, field="context")
    assert isinstance(plain, dict)
    return plain


class CallScope:
    """Customer key and context for the calls made inside a ``with`` block.

    A ``contextvars`` value, so it is local to the task (asyncio or trio) or thread that
    entered the block, and nested blocks override the outer one key by key.
    """

    def __init__(self) -> None:
        self._var: contextvars.ContextVar[Tags] = contextvars.ContextVar(
            f"aicm_scope_{id(self)}", default=(None, None)
        )

    def get(self) -> Tags:
        """The customer key and context set for the current scope."""
        return self._var.get()

    @contextlib.contextmanager
    def set(
        self, client_customer_key: str | None, context: Mapping[str, Any] | None
    ) -> Iterator[None]:
        """Within the block, tracked calls carry this customer key and context."""
        key = _customer_key(client_customer_key)
        ctx = _context(context)
        outer_key, outer_ctx = self._var.get()
        if key is None:
            key = outer_key
        if outer_ctx is not None:
            ctx = outer_ctx if ctx is None else {**outer_ctx, **ctx}
        token = self._var.set((key, ctx))
        try:
            yield
        finally:
            self._var.reset(token)


class AsyncRecorder(AsyncWithLifecycle):
    """Owns a :class:`DeliveryEngine` and its lifecycle; subclasses decide what to record.

    ``async with`` starts delivery in a task group of the caller's task and closes it on
    exit; :meth:`start` does the same in a task group the caller supplies; :meth:`attach`
    starts it on the process's shared worker instead.

    ``client_customer_key`` and ``context`` tag every record; :meth:`scope` tags the calls
    made inside a ``with`` block. A handling config may map them itself; when it does not,
    they are added to the record as ``client_customer_key`` and ``context``.
    """

    default_delivery: ClassVar[DeliveryType] = DeliveryType.MEM_QUEUE

    def __init__(
        self,
        *,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self.settings = resolve_options(options, owner=type(self).__name__)
        self.delivery_type = self.settings.delivery_type or self.default_delivery
        self._options = options
        configure_logging(log_file=self.settings.log_file, log_level=self.settings.log_level)
        self.client_customer_key = _customer_key(client_customer_key)
        self.context = _context(context)
        self._scope = CallScope()
        self._build_delivery()

    def _build_delivery(self) -> None:
        self.aicm_client = AsyncCostManagerClient(
            settings=self.settings, transport=self._options.get("transport")
        )
        self.engine = DeliveryEngine(
            self.aicm_client,
            self.settings,
            delivery_type=self.delivery_type,
            on_discard=self._options.get("on_discard"),
        )
        self._task_group: anyio.abc.TaskGroup | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._background: set[anyio.CancelScope] = set()
        # Records a sync hook handed to a task (_spawn_enqueue) and not yet queued or sent,
        # and those tasks' scopes: close waits for them until its deadline, then cancels.
        self._handed_off = 0
        self._handed_off_done: anyio.Event | None = None
        self._handoff_scopes: set[anyio.CancelScope] = set()
        self._closed = False
        self._detached = False
        self._attach_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def _before_enter(self) -> None:
        if self._closed:
            raise ClosedError(f"this {type(self).__name__} is closed")

    async def _start_in(self, task_group: anyio.abc.TaskGroup) -> None:
        await self.start(task_group)

    @property
    def started(self) -> bool:
        """True once delivery runs (in a task group, or on the shared worker)."""
        return self._task_group is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Prepare (see :meth:`_prepare`) and start delivery in ``task_group``.

        Everything this object spawns is cancelled by :meth:`aclose`, so the task group
        can end once it is closed.
        """
        if self._closed:
            raise ClosedError(f"this {type(self).__name__} is closed")
        if self._task_group is not None:
            raise AicmError(f"this {type(self).__name__} is already started")
        self._task_group = task_group
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        try:
            # Configs first: if they raise, no actor is left running in the caller's group.
            await self._prepare()
            await self.engine.start(task_group)
        except BaseException:
            self._cancel_background()
            self._task_group = self._token = self._loop_thread = None
            raise

    async def _prepare(self) -> None:
        """Load what the subclass needs before delivery starts (configs...)."""

    def _start_background(self, func: Callable[[], Awaitable[object]], name: str) -> None:
        """Run ``func`` in the task group until it returns or :meth:`aclose` cancels it.

        It must not raise: a failing task would tear down the caller's task group, or the
        shared worker every facade of the process relies on.
        """
        assert self._task_group is not None
        scope = anyio.CancelScope()
        self._background.add(scope)

        async def run() -> None:
            try:
                with scope:
                    await func()
            except Exception:
                logger.exception("background task %s of %r failed", name, self)
            finally:
                self._background.discard(scope)

        self._task_group.start_soon(run, name=name)

    def _cancel_background(self) -> None:
        for scope in list(self._background):
            scope.cancel()
        self._background.clear()

    async def aclose(self, timeout: float | None = None) -> int:
        """Deliver what is queued within ``timeout`` s (default ``close_timeout``), then stop.

        Returns how many records were left undelivered.
        """
        if self._closed:
            return 0
        self._closed = True
        left: int = await self.on_worker(self._shutdown, timeout)
        return left

    async def _shutdown(self, timeout: float | None) -> int:
        self._cancel_background()
        if timeout is None:
            timeout = self.settings.close_timeout
        deadline = anyio.current_time() + timeout
        try:
            await self._wait_handed_off(timeout)
            unsent = self._handed_off
            for scope in list(self._handoff_scopes):
                scope.cancel()
            left = await self.engine.aclose(max(0.0, deadline - anyio.current_time()))
            return unsent + left
        finally:
            with anyio.CancelScope(shield=True):
                await self.aicm_client.aclose()
            if self._detached:
                shared_runtime().unregister(self)

    async def flush(self, timeout: float | None = None) -> int:
        """Deliver everything queued within ``timeout`` s; return how many records are left."""
        left: int = await self.on_worker(self._flush, timeout)
        return left

    async def _flush(self, timeout: float | None) -> int:
        start = anyio.current_time()
        await self._wait_handed_off(timeout)
        remaining = None if timeout is None else max(0.0, timeout - (anyio.current_time() - start))
        return self._handed_off + await self.engine.flush(remaining)

    async def _wait_handed_off(self, timeout: float | None) -> None:
        with anyio.move_on_after(timeout):
            while self._handed_off:
                self._handed_off_done = event = anyio.Event()
                await event.wait()

    def health(self) -> DeliveryHealth:
        """A snapshot of this object's delivery."""
        return self.engine.health()

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Records the service refused for good (memory queues; persistent ones are in the file)."""
        return self.engine.dead_letters()

    # -- detached: the process's shared worker -----------------------------------------------

    @property
    def detached(self) -> bool:
        """True when delivery runs on the shared worker because no task group was given."""
        return self._detached

    async def attach(self) -> None:
        """Start delivery on the process's shared worker (for use without ``async with``).

        Everything that touches the engine or the network then runs on that worker's loop,
        so this object can be used from any event loop, asyncio or trio, without blocking
        it. Does nothing when already started or closed.
        """
        if self._task_group is not None or self._closed:
            return
        # A thread lock, not an anyio one: callers may come from different event loops.
        await anyio.to_thread.run_sync(self._attach_blocking)

    def _attach_blocking(self) -> None:
        # The shared worker (the sync facades' loop) hosts an async object only when the
        # caller gave it no task group.
        with self._attach_lock:
            if self._task_group is not None or self._closed:
                return
            runtime = shared_runtime()
            # Set before start() publishes the task group, so that no caller ever sees a
            # started object that still runs its work on the caller's own loop.
            self._detached = True
            try:
                runtime.call(self._start_on_worker, runtime)
            except BaseException:
                self._detached = False
                raise

    async def _start_on_worker(self, runtime: Any) -> None:
        await self.start(runtime.task_group)
        runtime.close_timeout = max(runtime.close_timeout, self.settings.close_timeout)
        runtime.register(self)

    def _on_engine_thread(self) -> bool:
        return self._loop_thread is not None and threading.get_ident() == self._loop_thread

    async def on_worker(self, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Await ``func(*args)`` on the engine's loop (the shared worker's when detached)."""
        if not self._detached or self._on_engine_thread():
            return await func(*args)

        return await anyio.to_thread.run_sync(shared_runtime().call, func, *args)

    def after_fork_in_child(self) -> None:
        """In a forked child, forget the parent's worker, queue and connections.

        Called by the shared runtime for a detached object; the next call attaches afresh.
        """
        self.engine.after_fork_in_child()
        self._build_delivery()

    # -- tags and records ----------------------------------------------------------------------

    def scope(
        self, *, client_customer_key: str | None = None, context: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with recorder.scope(client_customer_key="acme"):`` tags the calls made inside.

        The scope's customer key replaces the object's; its context is merged over the
        object's, key by key.
        """
        return self._scope.set(client_customer_key, context)

    def tags(self) -> Tags:
        """The customer key and context for a call made now (scope over object)."""
        key, ctx = self._scope.get()
        if key is None:
            key = self.client_customer_key
        if self.context is not None:
            ctx = self.context if ctx is None else {**self.context, **ctx}
        return key, ctx

    def usage_records(
        self, payloads: Iterable[Mapping[str, Any]], tags: Tags | None = None
    ) -> list[UsageRecord]:
        """Build ``/track-usage`` records from extracted payloads (pure).

        The customer key and context are added where the config did not map them; a
        payload that cannot be recorded is logged and skipped.
        """
        key, ctx = self.tags() if tags is None else tags
        records = []
        for payload in payloads:
            if (key is not None and payload.get("client_customer_key") is None) or (
                ctx is not None and payload.get("context") is None
            ):
                payload = dict(payload)
                if key is not None and payload.get("client_customer_key") is None:
                    payload["client_customer_key"] = key
                if ctx is not None and payload.get("context") is None:
                    payload["context"] = ctx
            try:
                records.append(UsageRecord.build(payload, max_bytes=self.settings.max_record_bytes))
            except RecordError as exc:
                self.engine.stats.discard("invalid_payload")
                logger.warning("an extracted payload was not recordable: %s", exc)
        return records

    # -- queueing ------------------------------------------------------------------------------

    def _try_put(self, record: WireRecord) -> bool:
        """Queue ``record`` if the memory queue takes it at once (any thread, never blocks)."""
        buffer = self.engine.buffer
        if buffer is None:
            return False
        try:
            return buffer.try_put(record)
        except AicmError as exc:  # closed
            self._dropped([record], exc)
            return True

    def _dropped(self, records: Sequence[WireRecord], exc: BaseException) -> None:
        self.engine.stats.discard("queue_error", len(records))
        logger.warning("%d record(s) not queued: %s", len(records), exc)

    async def _enqueue(self, records: Sequence[WireRecord]) -> None:
        """Queue (or, IMMEDIATE, send) records from a task on the engine's loop; never raises."""
        if self.delivery_type is DeliveryType.IMMEDIATE:
            # Nobody waits for this answer (a wrapped call already returned its own), so a
            # failure is a loss: counted in health and said out loud like any other drop.
            try:
                answer = await self.engine.send_now(records)
            except Exception as exc:
                self.engine.stats.discard("immediate_failed", len(records))
                logger.warning("immediate delivery of %d record(s) failed: %s", len(records), exc)
                return
            refused = [r for r in answer.results if not r.ok]
            if refused:
                self.engine.stats.discard("immediate_refused", len(refused))
                for result in refused:
                    logger.warning(
                        "the service refused record %s (%s): %s",
                        result.response_id,
                        result.status,
                        "; ".join(result.errors) or "no reason given",
                    )
            return
        for i, record in enumerate(records):
            try:
                await self.engine.aput(record)  # waits, raises or drops per the on-full policy
            except AicmError as exc:
                self._dropped(records[i : i + 1], exc)
            except Exception as exc:
                self._dropped(records[i:], exc)
                return

    async def emit(self, records: Sequence[WireRecord]) -> None:
        """Queue records from a task of any loop without blocking it; never raises."""
        if not records:
            return
        rest = [r for r in records if not self._try_put(r)]
        if rest:
            await self.on_worker(self._enqueue, rest)

    def emit_nowait(self, records: Sequence[WireRecord]) -> None:
        """Queue records from code that cannot await (a sync hook); never blocks, never raises.

        What the memory queue cannot take at once (full with the ``block`` policy, a
        SQLite commit, IMMEDIATE sending) is left to a task in this object's task group.
        """
        if not records:
            return
        if self._task_group is None:
            self.engine.stats.discard("not_started", len(records))
            logger.warning(
                "%d record(s) dropped: start delivery first (`async with ...`)", len(records)
            )
            return
        rest = [r for r in records if not self._try_put(r)]
        if not rest:
            return
        if self._on_engine_thread():
            self._spawn_enqueue(rest)
        elif self.delivery_type is not DeliveryType.IMMEDIATE:
            self.emit_blocking(rest)  # a plain thread (a sync client run in a worker thread)
        else:
            try:
                anyio.from_thread.run_sync(self._spawn_enqueue, rest, token=self._token)
            except Exception as exc:
                self._dropped(rest, exc)

    def _spawn_enqueue(self, records: Sequence[WireRecord]) -> None:
        """Hand records to a task on the engine's loop; flush and close wait for it."""
        assert self._task_group is not None
        scope = anyio.CancelScope()
        self._handoff_scopes.add(scope)
        self._handed_off += len(records)
        self._task_group.start_soon(self._enqueue_handed_off, records, scope)

    async def _enqueue_handed_off(
        self, records: Sequence[WireRecord], scope: anyio.CancelScope
    ) -> None:
        done = False
        try:
            with scope:
                await self._enqueue(records)
                done = True
        finally:
            if not done:
                # Cancelled by close (or by the group around it): these never went out.
                self.engine.stats.discard("closed", len(records))
                logger.error("closed with %d record(s) not yet sent: lost", len(records))
            self._handoff_scopes.discard(scope)
            self._handed_off -= len(records)
            event = self._handed_off_done
            if not self._handed_off and event is not None:
                event.set()

    def emit_blocking(self, records: Iterable[WireRecord]) -> None:
        """Queue records from a plain thread (sync facades); may block per the on-full policy."""
        for record in records:
            try:
                self.engine.put(record)
            except AicmError as exc:
                self._dropped([record], exc)

    async def send_guarded(self, records: Sequence[WireRecord]) -> None:
        """Send records now (IMMEDIATE) on the engine's loop; a failure is logged, not raised."""
        await self._enqueue(records)
