"""What the cost managers and the REST wrappers share on top of a delivery owner: the
customer key and context that tag their records, and queueing records from any thread or
loop without blocking the wrapped call (layer 4).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from .._core.exceptions import AicmError, RecordError, shown
from .._core.jsonplain import to_plain
from .._core.models import TrackResult, UsageRecord, WireRecord
from .._core.settings import DeliveryType
from .options import DeliveryOptions, resolve_options
from .owner import DeliveryOwner

__all__ = ["AsyncRecorder", "CallScope", "DeliveryOptions", "DeliveryOwner", "resolve_options"]

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


class AsyncRecorder(DeliveryOwner):
    """A `DeliveryOwner` that records what wrapped calls yield (cost managers, REST).

    ``client_customer_key`` and ``context`` tag every record; `scope()` tags the calls
    made inside a ``with`` block. A handling config may map them itself; when it does not,
    they are added to the record as ``client_customer_key`` and ``context``.
    """

    def __init__(
        self,
        *,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.client_customer_key = _customer_key(client_customer_key)
        self.context = _context(context)
        self._scope = CallScope()

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
        self,
        payloads: Iterable[Mapping[str, Any]],
        tags: Tags | None = None,
        bounds: Sequence[int] = (),
    ) -> list[UsageRecord]:
        """Build ``/track-usage`` records from extracted payloads (pure).

        The customer key and context are added where the config did not map them; a
        payload that cannot be recorded is logged and skipped. ``bounds``: the
        extractor's upper bound of each payload's JSON size (-1: not known).
        """
        key, ctx = self.tags() if tags is None else tags
        records = []
        for i, payload in enumerate(payloads):
            record = self.usage_record(payload, bounds[i] if i < len(bounds) else -1, key, ctx)
            if record is not None:
                records.append(record)
        return records

    def usage_record(
        self, payload: Mapping[str, Any], bound: int, key: str | None, ctx: dict[str, Any] | None
    ) -> UsageRecord | None:
        """One of `usage_records()`: the record of ``payload`` tagged with ``key`` and
        ``ctx``, or None (logged and counted) when it cannot be recorded."""
        if (key is not None and payload.get("client_customer_key") is None) or (
            ctx is not None and payload.get("context") is None
        ):
            payload = dict(payload)
            if key is not None and payload.get("client_customer_key") is None:
                payload["client_customer_key"] = key
                # the key's entry: its name and value quoted, a colon and a comma
                ok = bound >= 0 and key.isascii()
                bound = bound + 6 * (19 + len(key)) + 6 if ok else -1
            if ctx is not None and payload.get("context") is None:
                payload["context"] = to_plain(ctx, field="context")  # the record's own
                bound = -1  # counted where the record is built
        try:
            # Extracted payloads are fresh plain dicts already: not converted again.
            return UsageRecord.build(
                payload, max_bytes=self.settings.max_record_bytes, plain=True, bound=bound
            )
        except RecordError as exc:
            self.engine.stats.discard("invalid_payload")
            logger.warning("an extracted payload was not recordable: %s", exc)
            return None

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
            try:
                answer = await self.engine.send_now(records)
            except Exception as exc:
                self._send_failed(records, exc)
            else:
                self._count_refused(answer)
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
        rest = None  # a plain loop: most calls queue their one record at once
        for record in records:
            if not self._try_put(record):
                if rest is None:
                    rest = []
                rest.append(record)
        if rest is None:
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

    def emit_blocking(self, records: Sequence[WireRecord]) -> None:
        """Queue records from a plain thread (sync facades); may block per the on-full policy.

        IMMEDIATE sends them from this thread with the client's blocking twin (on the
        engine's loop when the client cannot block). Never raises: a record that cannot be
        queued or sent is logged and counted.
        """
        if not records:
            return
        if self.delivery_type is not DeliveryType.IMMEDIATE:
            for record in records:
                try:
                    self.engine.put(record)
                except AicmError as exc:
                    self._dropped([record], exc)
        elif not self.engine.client.can_block:
            try:
                anyio.from_thread.run(self._enqueue, records, token=self._token)
            except Exception as exc:
                self._dropped(records, exc)
        else:
            try:
                answer = self.engine.send_now_blocking(records)
            except Exception as exc:
                self._send_failed(records, exc)
            else:
                self._count_refused(answer)

    def _send_failed(self, records: Sequence[WireRecord], exc: Exception) -> None:
        # Nobody waits for this answer (a wrapped call already returned its own), so a
        # failure is a loss: counted in health and said out loud like any other drop.
        self.engine.stats.discard("immediate_failed", len(records))
        logger.warning("immediate delivery of %d record(s) failed: %s", len(records), exc)

    def _count_refused(self, answer: TrackResult) -> None:
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
