"""The process's shared delivery worker: one event loop in a daemon thread (layer 3).

Started by the first sync facade and shared by every ``Tracker``, ``CostManager`` and
REST wrapper: anyio's ``start_blocking_portal``, entered once for the life of the
process, with one task group hosting every facade's delivery actor. At interpreter exit
it closes every engine within ``close_timeout``; a forked child starts a fresh one.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import selectors
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._core.exceptions import AicmError
from .._core.forks import after_fork_in_child, check

__all__ = ["SharedRuntime", "shared_runtime"]

logger = logging.getLogger("aicm.runtime")


@attrs.frozen
class _Loop:
    portal: BlockingPortal
    task_group: anyio.abc.TaskGroup  # hosts the facades' actors
    thread: threading.Thread  # the loop's own
    holder: threading.Thread  # holds the portal's context open...
    release: threading.Event  # ...until this lets it leave


class SharedRuntime:
    """The portal and the task group that hosts the facades' actors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: _Loop | None = None
        # Strong references: an owner dropped without close() still has queued records,
        # and its actor is still running; exit must deliver them.
        self._closables: set[Any] = set()
        self._generation = 0
        self.close_timeout = 2.0

    @property
    def generation(self) -> int:
        """Bumped in every forked child: objects built on an older one are the parent's.
        Reading it notices a fork that skipped Python's hooks, and does their work then."""
        check()
        return self._generation

    @property
    def running(self) -> bool:
        """True while the loop thread is alive."""
        return self._loop is not None and self._loop.thread.is_alive()

    def _ensure(self) -> _Loop:
        loop = self._loop
        if loop is not None and loop.thread.is_alive():
            return loop
        with self._lock:
            loop = self._loop
            if loop is not None and loop.thread.is_alive():
                return loop
            started: Future[tuple[BlockingPortal, anyio.abc.TaskGroup, threading.Thread]]
            started = Future()
            release = threading.Event()
            holder = threading.Thread(
                target=self._hold, args=(started, release), name="aicm-portal", daemon=True
            )
            holder.start()
            try:
                portal, task_group, thread = started.result()
            except BaseException as exc:
                raise AicmError("the aicm delivery runtime failed to start") from exc
            thread.name = "aicm-delivery"
            self._loop = loop = _Loop(portal, task_group, thread, holder, release)
            _close_at_process_exit()
            return loop

    def _hold(
        self,
        started: Future[tuple[BlockingPortal, anyio.abc.TaskGroup, threading.Thread]],
        release: threading.Event,
    ) -> None:
        # The portal's context is entered (and left) in a thread of its own rather than
        # held as an object: a forked child must never run its exit, which would wait on
        # the parent's loop; the frames of threads a fork left behind are never run again.
        try:
            options = {"loop_factory": _delivery_loop}
            with start_blocking_portal(backend="asyncio", backend_options=options) as portal:
                _, task_group = portal.start_task(self._host, name="aicm-delivery")
                started.set_result((portal, task_group, portal.call(threading.current_thread)))
                release.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            else:
                logger.exception("the aicm delivery runtime stopped with an error")

    async def _host(self, *, task_status: anyio.abc.TaskStatus[anyio.abc.TaskGroup]) -> None:
        async with anyio.create_task_group() as tg:
            task_status.started(tg)
            await anyio.sleep_forever()  # until shutdown() stops the portal, cancelling this

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """The task group that hosts the facades' actors (starts the runtime if needed)."""
        return self._ensure().task_group

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` on the runtime's loop and wait for its result."""
        loop = self._ensure()
        if loop.thread is threading.current_thread():
            raise AicmError("a sync aicm method was called from aicm's own delivery loop")
        return loop.portal.call(func, *args)

    def on_loop_thread(self) -> bool:
        """True when called from the runtime's own loop thread."""
        return self._loop is not None and self._loop.thread is threading.current_thread()

    def register(self, closable: Any) -> None:
        """Close ``closable`` (an object with ``aclose(timeout)``) at interpreter exit."""
        self._closables.add(closable)

    def unregister(self, closable: Any) -> None:
        """Forget ``closable`` (it was closed by its owner)."""
        self._closables.discard(closable)

    async def _close_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for closable in list(self._closables):
            remaining = max(0.0, deadline - time.monotonic())
            try:
                await closable.aclose(remaining)
            except Exception:
                logger.exception("closing %r at exit failed", closable)

    def shutdown(self, timeout: float | None = None) -> None:
        """Close every registered engine within ``timeout`` s, then stop the loop."""
        timeout = self.close_timeout if timeout is None else timeout
        loop = self._loop
        if loop is None or not loop.thread.is_alive():
            return
        try:
            loop.portal.call(self._close_all, timeout)
            # Whatever is still running after the deadline is cancelled, not waited for.
            loop.portal.call(loop.portal.stop, True)
        except Exception:
            logger.exception("stopping the aicm delivery runtime failed")
        loop.release.set()
        loop.holder.join(timeout)
        self._loop = None

    def _after_fork_in_child(self) -> None:
        # The loop thread did not survive the fork; its objects belong to the parent.
        for closable in list(self._closables):
            reset = getattr(closable, "after_fork_in_child", None)
            if reset is not None:
                try:
                    reset()
                except Exception:
                    pass
        self._closables = set()
        self._lock = threading.Lock()
        self._loop = None
        self._generation += 1


# How many loop iterations in a row may skip the OS poll while callbacks are ready.
_SKIPPED_POLLS = 16


class _PollWhenIdle(selectors.DefaultSelector):
    """The runtime loop's selector: no OS poll while the loop has callbacks ready to run.

    asyncio polls once per loop iteration, and every poll releases the GIL; the actor's
    send of one batch takes a dozen iterations. In a process whose own threads are busy
    (a web app's loop calling ``track_async``), each release costs both threads a GIL
    handoff. Polling only when the loop would otherwise wait (and at least every
    ``_SKIPPED_POLLS`` iterations, so ready callbacks never starve I/O) keeps a batch's
    work in one stretch. Readiness is only seen a few callbacks later: nothing is missed.
    """

    _skipped = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0 and self._skipped < _SKIPPED_POLLS:
            self._skipped += 1
            return []
        self._skipped = 0
        return super().select(timeout)


def _delivery_loop() -> asyncio.AbstractEventLoop:
    if sys.platform == "win32":  # the proactor loop has no selector
        return asyncio.new_event_loop()
    return asyncio.SelectorEventLoop(_PollWhenIdle())


_runtime = SharedRuntime()


def shared_runtime() -> SharedRuntime:
    """The process's runtime (not started until first used)."""
    return _runtime


def _at_exit() -> None:
    _runtime.shutdown()


def _close_at_process_exit() -> None:
    # A multiprocessing child (a Pool or Celery-style prefork worker) ends in os._exit,
    # which skips atexit; multiprocessing runs its own finalizers first, so hook in there.
    import multiprocessing
    import multiprocessing.util

    if multiprocessing.parent_process() is not None:
        multiprocessing.util.Finalize(None, _at_exit, exitpriority=100)


atexit.register(_at_exit)
after_fork_in_child(_runtime._after_fork_in_child)
