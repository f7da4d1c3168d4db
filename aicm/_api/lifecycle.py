"""``async with`` for the async API classes: their tasks run in a shielded group (layer 4)."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.abc

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["AsyncWithLifecycle"]


class AsyncWithLifecycle:
    """``async with obj:`` starts ``obj``'s tasks in the caller's task and stops them on exit.

    The tasks run in a task group held by a helper task whose scope is shielded, so that a
    cancelled body still delivers what it queued (``aclose`` is bounded by its own
    deadline); and no exception the body raises, nor one raised while starting, comes
    out wrapped in an ``ExceptionGroup``. Subclasses provide `_before_enter()`,
    `_start_in()` and ``aclose``.
    """

    _exit_stack: contextlib.AsyncExitStack | None = None
    _host_scope: anyio.CancelScope | None = None

    async def _before_enter(self) -> None:
        """Checks and loading done before any task starts (raise to refuse entry)."""

    async def _start_in(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start this object's tasks in ``task_group``."""
        raise NotImplementedError

    async def aclose(self, timeout: float | None = None) -> int:
        """Stop the tasks (subclasses deliver what is pending first)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        try:
            await self._before_enter()
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self._host)
        except BaseException:
            await stack.aclose()
            with anyio.CancelScope(shield=True):
                await self.aclose(0.0)  # the HTTP client is ours to close, or it would leak
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
            with anyio.CancelScope(shield=True):
                await self.aclose()
        finally:
            if self._host_scope is not None:
                self._host_scope.cancel()  # a no-op once everything has stopped
            stack, self._exit_stack = self._exit_stack, None
            if stack is not None:
                # Everything in the group has stopped, so it ends cleanly. The body's own
                # exception is not passed in: it propagates as itself.
                await stack.aclose()

    async def _host(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        failure: Exception | None = None
        with anyio.CancelScope(shield=True) as scope:
            self._host_scope = scope
            async with anyio.create_task_group() as task_group:
                try:
                    await self._start_in(task_group)
                except Exception as exc:
                    # Raised outside the task group, so the caller gets the error itself.
                    failure = exc
                else:
                    task_status.started()
                    # Hold the group open (an IMMEDIATE object runs no actor, yet hooks
                    # spawn sends into it) until __aexit__ cancels this scope.
                    await anyio.sleep_forever()
        if failure is not None:
            raise failure
