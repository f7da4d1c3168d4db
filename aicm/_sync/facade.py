"""What every sync facade shares: its async twin, built and run on the shared runtime (layer 5)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio.to_thread

from .._api.owner import DeliveryOwner, built_with, resolved
from .._api.recorder import AsyncRecorder
from .._core.exceptions import ClosedError
from .._core.settings import DeliveryType
from .._delivery.engine import DeadLetterRecord
from .._delivery.health import DeliveryHealth
from .._delivery.worker import SharedRuntime, shared_runtime

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["OnRuntime", "RecorderFacade", "SyncFacade"]


#: The async twin: an ``AsyncTracker``, or an ``AsyncRecorder`` (cost managers, REST).
A = TypeVar("A", bound=DeliveryOwner)
T = TypeVar("T")
R = TypeVar("R", bound=AsyncRecorder)


class OnRuntime(Generic[T]):
    """An async object built on the shared runtime's loop and called through its portal;
    ``with obj:`` closes it at the end of the block.

    A forked child builds a fresh one on first use: the parent's belongs to a loop that
    is gone.
    """

    _async: T

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._runtime: SharedRuntime = shared_runtime()
        self._start()

    def _start(self) -> None:
        self._generation = self._runtime.generation
        self._async = self._runtime.call(self._factory)

    def _forked(self) -> bool:
        """True in a forked child until the object is rebuilt."""
        return self._generation != self._runtime.generation

    def _live(self) -> T:
        if self._forked():
            self._start()
        return self._async

    def __repr__(self) -> str:
        return repr(self._async).replace(type(self._async).__name__, type(self).__name__, 1)

    def close(self) -> object:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncFacade(OnRuntime[A]):
    """Starts the async owner in the runtime's task group and forwards lifecycle calls.

    With the kill switch on (``disabled``) the runtime is never started: the owner is
    built in the caller's thread, and every call is answered there.
    """

    def __init__(
        self, factory: Callable[[], A], options: Mapping[str, Any], *, tracker: bool = False
    ) -> None:
        self._closed = False
        # Resolved once, here: the kill switch decides whether the runtime starts, and the
        # owner is built with these very settings.
        self._settings = resolved(options, owner=type(self).__name__, tracker=tracker)
        #: True when the kill switch is on: calls are accepted and nothing is recorded.
        self.disabled = self._settings.disabled
        super().__init__(functools.partial(built_with, self._settings, factory))

    def _start(self) -> None:
        runtime = self._runtime
        if self.disabled:
            # Nothing to run, so no worker thread: the owner only holds settings and state.
            self._generation = runtime.generation
            self._async = self._factory()
            return
        super()._start()
        try:
            runtime.call(self._async._start_on_worker, runtime, self)
        except BaseException:
            runtime.call(self._async.aclose, 0.0)
            raise

    def _live(self) -> A:
        if self._closed:
            raise ClosedError(
                f"this {type(self).__name__} is closed; create a new one to track more"
            )
        return super()._live()

    @property
    def closed(self) -> bool:
        """True once `close()` was called."""
        return self._closed

    @property
    def delivery_type(self) -> DeliveryType:
        """How this object delivers."""
        return self._async.delivery_type

    def flush(self, timeout: float | None = None) -> int:
        """Deliver everything queued within ``timeout`` s; return how many records are left."""
        if self._closed or self.disabled or self._forked():
            return 0
        left: int = self._runtime.call(self._async.flush, timeout)
        return left

    def close(self, timeout: float | None = None) -> int:
        """Deliver what is queued within ``timeout`` s, then stop; return how many were left."""
        if self._closed:
            return 0
        self._closed = True
        self._runtime.unregister(self)
        if self.disabled or self._forked():
            return 0
        left: int = self._runtime.call(self._async.aclose, timeout)
        return left

    async def aclose(self, timeout: float | None = None) -> int:
        """`close()` for async code (asyncio or trio): waits in a worker thread, never
        on the caller's loop. On the runtime's own loop (closing at interpreter exit) it
        closes there."""
        if self.disabled:
            return self.close(timeout)
        if self._runtime.on_loop_thread():
            self._closed = True
            self._runtime.unregister(self)
            return await self._async.aclose(timeout)
        left: int = await anyio.to_thread.run_sync(self.close, timeout)
        return left

    def after_fork_in_child(self) -> None:
        """Drop the parent's engine state in a forked child (called by the runtime)."""
        self._async.engine.after_fork_in_child()

    def health(self) -> DeliveryHealth:
        """A snapshot of this object's delivery."""
        return self._async.health()

    def dead_letters(self) -> list[DeadLetterRecord]:
        """Records the service refused for good (memory queues)."""
        return self._async.dead_letters()


class RecorderFacade(SyncFacade[R]):
    """A facade over a recorder (cost managers, REST wrappers): tags its calls' records."""

    def __init__(
        self,
        build: Callable[..., R],
        configs: Any,
        client_customer_key: str | None,
        context: Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> None:
        """``build`` takes the keywords every recorder takes besides its own."""
        tags = {"client_customer_key": client_customer_key, "context": context}
        super().__init__(functools.partial(build, configs=configs, **tags, **options), options)

    def _open(self) -> R:
        # Once closed, calls pass through untracked: the twin still answers, nothing starts.
        return self._async if self._closed else self._live()

    def scope(
        self, *, client_customer_key: str | None = None, context: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with obj.scope(client_customer_key="acme"):`` tags the calls made inside."""
        return self._open().scope(client_customer_key=client_customer_key, context=context)
