"""``AsyncCostManager``: wrap any API client and record the usage of its tracked calls (layer 4).

``tracker.client`` is a transparent proxy of the wrapped client. When a call's dotted
path (``chat.completions.create``) is tracked by one of the ``api_id``'s handling configs,
the :class:`UniversalExtractor` turns the call and its response (or, for a stream, the
chunks seen) into ``/track-usage`` payloads, which are queued for delivery. Nothing that
goes wrong in tracking ever reaches the user's call.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from .._core.exceptions import AicmError, HandlingConfigError
from .._core.extractor import UniversalExtractor
from .._core.jsonplain import to_plain
from .._core.models import ServiceConfig, UsageRecord
from .._core.settings import DeliveryType
from .configs import CostManagerConfig
from .proxy import TrackedProxy
from .recorder import AsyncRecorder, DeliveryOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncCostManager", "CallScope"]

logger = logging.getLogger("aicm.cost_manager")

ClientT = TypeVar("ClientT")

_CONFIG_RETRY_CAP = 300.0


class CallScope:
    """Per-call-scope customer and context (a ``contextvars`` value: task- and thread-local)."""

    def __init__(self) -> None:
        self._var: contextvars.ContextVar[tuple[str | None, dict[str, Any] | None]] = (
            contextvars.ContextVar(f"aicm_scope_{id(self)}", default=(None, None))
        )

    def get(self) -> tuple[str | None, dict[str, Any] | None]:
        """The customer key and context set for the current scope."""
        return self._var.get()

    @contextlib.contextmanager
    def set(
        self, client_customer_key: str | None, context: Mapping[str, Any] | None
    ) -> Iterator[None]:
        """Within the block, tracked calls carry this customer key and context."""
        plain = None
        if context is not None:
            value = to_plain(context, field="context")
            if not isinstance(value, dict):
                raise TypeError("context must be a mapping")
            plain = value
        token = self._var.set((client_customer_key, plain))
        try:
            yield
        finally:
            self._var.reset(token)


class AsyncCostManager(AsyncRecorder, Generic[ClientT]):
    """Wrap ``client``; every tracked call yields usage records delivered in the background.

    ``api_id`` defaults to the client's class name in lower case. Configs come from the
    service (``GET /configs?api_id=...``) or, offline, from ``configs`` (a JSON file
    path or a list). Delivery defaults to ``MEM_QUEUE``; any :class:`DeliveryType` works.
    ``client_customer_key`` and ``context`` apply to every record; :meth:`scope` sets them
    for the calls made inside a ``with`` block.
    """

    default_delivery = DeliveryType.MEM_QUEUE

    def __init__(
        self,
        client: ClientT,
        *,
        api_id: str | None = None,
        configs: Any = None,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        **options: Unpack[DeliveryOptions],
    ) -> None:
        super().__init__(**options)
        if api_id is not None and (not isinstance(api_id, str) or not api_id):
            raise TypeError(f"api_id must be a non-empty string, got {api_id!r}")
        self.api_id = api_id or type(client).__name__.lower()
        self.config_source = CostManagerConfig(self.aicm_client, configs=configs)
        self.extractor = UniversalExtractor(())
        self.client_customer_key = client_customer_key
        self.context: dict[str, Any] | None = None
        if context is not None:
            plain = to_plain(context, field="context")
            if not isinstance(plain, dict):
                raise TypeError("context must be a mapping")
            self.context = plain
        self._scope = CallScope()
        self._wrapped = client
        self._proxy: Any = TrackedProxy(client, extractor_hook=self)

    def __repr__(self) -> str:
        return f"AsyncCostManager({type(self._wrapped).__name__}, api_id={self.api_id!r})"

    @property
    def client(self) -> ClientT:
        """The wrapped client, tracked: use it exactly as the client itself."""
        proxy: ClientT = self._proxy
        return proxy

    @property
    def wrapped(self) -> ClientT:
        """The client itself, untracked."""
        return self._wrapped

    def scope(
        self, *, client_customer_key: str | None = None, context: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with manager.scope(client_customer_key="acme"):`` tags the calls made inside."""
        return self._scope.set(client_customer_key, context)

    # -- configs ---------------------------------------------------------------------------

    async def _prepare(self) -> None:
        try:
            await self.load_configs()
        except AicmError as exc:
            if self.config_source.offline:
                raise
            # The service may be briefly away at startup: keep the app running and keep
            # trying in the background, or every call until a restart would go unrecorded.
            logger.error(
                "could not load configs for %r (%s); retrying in the background", self.api_id, exc
            )
            assert self._task_group is not None
            self._task_group.start_soon(self._load_configs_until_done)

    async def _load_configs_until_done(self) -> None:
        delay = 1.0
        while not self._closed:
            await anyio.sleep(delay)
            try:
                await self.load_configs()
                return
            except AicmError as exc:
                logger.warning("loading configs for %r failed again: %s", self.api_id, exc)
                delay = min(delay * 2, _CONFIG_RETRY_CAP)

    async def load_configs(self) -> list[ServiceConfig]:
        """(Re)load the handling configs and rebuild the extractor; returns the configs."""
        configs = await self.config_source.get_config(self.api_id)
        usable = []
        for config in configs:
            try:
                UniversalExtractor([config])
            except HandlingConfigError as exc:
                if self.config_source.offline:
                    raise
                self.engine.stats.discard("bad_config")
                logger.error("skipping config %r: %s", config.config_id, exc)
                continue
            usable.append(config)
        self.extractor = UniversalExtractor(usable)
        logger.info("%d config(s) loaded for %r", len(usable), self.api_id)
        return usable

    # -- the proxy's hook ------------------------------------------------------------------

    def _who(self) -> tuple[str | None, dict[str, Any] | None]:
        key, ctx = self._scope.get()
        if key is None:
            key = self.client_customer_key
        if self.context is not None:
            ctx = self.context if ctx is None else {**self.context, **ctx}
        return key, ctx

    def should_track(self, path: str) -> bool:
        """True when a config tracks calls of ``path``."""
        return self.extractor.tracks(path)

    def records_for_call(
        self,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        response: Any,
        func: Callable[..., Any],
    ) -> list[UsageRecord]:
        """The records one tracked call yields (pure: no I/O, no queueing)."""
        key, ctx = self._who()
        payloads = self.extractor.extract(
            path,
            args=args,
            kwargs=kwargs,
            response=response,
            func=func,
            api_id=self.api_id,
            client_customer_key=key,
            context=ctx,
        )
        return self.usage_records(payloads)

    def records_for_stream(
        self,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chunks: list[Any],
        func: Callable[..., Any],
    ) -> list[UsageRecord]:
        """The records a tracked stream yields once it ended (pure)."""
        key, ctx = self._who()
        payloads = self.extractor.extract_stream_end(
            path,
            chunks,
            args=args,
            kwargs=kwargs,
            func=func,
            api_id=self.api_id,
            client_customer_key=key,
            context=ctx,
        )
        return self.usage_records(payloads)

    def on_call(
        self,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        response: Any,
        func: Callable[..., Any],
    ) -> None:
        """A tracked call returned: queue its records without blocking the loop."""
        self.emit_nowait(self.records_for_call(path, args, kwargs, response, func))

    def on_stream_end(
        self,
        path: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chunks: list[Any],
        func: Callable[..., Any],
    ) -> None:
        """A tracked stream ended: queue its records without blocking the loop."""
        self.emit_nowait(self.records_for_stream(path, args, kwargs, chunks, func))
