"""``AsyncCostManager``: wrap any API client and record the usage of its tracked calls (layer 4).

``tracker.client`` is a transparent proxy of the wrapped client. When a call's dotted
path (``chat.completions.create``) is tracked by one of the ``api_id``'s handling configs,
the [`UniversalExtractor`][aicm.UniversalExtractor] turns the call and its response (or, for a
stream, the chunks seen) into ``/track-usage`` payloads, which are queued for delivery. Nothing that
goes wrong in tracking ever reaches the user's call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio

from .._core.exceptions import AicmError, MissingApiKeyError, UsageLimitExceeded, shown
from .._core.extractor import CallTags, UniversalExtractor, accumulate_stream, resolve_path
from .._core.handling import HandlingConfig
from .._core.models import ServiceConfig, WireRecord
from .._core.settings import DeliveryType
from .._providers.hook import BuiltinTracking
from .configs import CostManagerConfig
from .limits import LimitGuard, refresh_soon
from .proxy import Call, TrackedProxy
from .recorder import AsyncRecorder, DeliveryOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncCostManager", "ManagerHook", "WrapsClient"]

logger = logging.getLogger("aicm.cost_manager")

ClientT = TypeVar("ClientT")

# Methods whose empty extraction was already reported at WARNING (later ones go to DEBUG).
_MAX_WARNED_METHODS = 1024

# Retrying configs the service could not give at startup: 1 s, doubling, at most 5 min.
_CONFIG_RETRY_FIRST = 1.0
_CONFIG_RETRY_CAP = 300.0


class WrapsClient(Generic[ClientT]):
    """The tracked ``client`` and the untracked ``wrapped`` of a cost manager."""

    _wrapped: ClientT
    _proxy: Any

    def _wrap(self, client: ClientT, hook: ManagerHook | None) -> None:
        """Track ``client``'s calls through ``hook``; None (the kill switch): do not wrap."""
        self._wrapped = client
        self._proxy = client if hook is None else TrackedProxy(client, extractor_hook=hook)

    @property
    def client(self) -> ClientT:
        """The wrapped client, tracked: use it exactly as the client itself (with the kill
        switch on, the client itself)."""
        proxy: ClientT = self._proxy
        return proxy

    @property
    def wrapped(self) -> ClientT:
        """The client itself, untracked."""
        return self._wrapped


class ManagerHook:
    """The proxy hook of a cost manager (see ``proxy.ExtractorHook``).

    It asks the manager `_tracking()` gives (None once closed: calls pass through
    untracked) and queues the records it makes with `_emit()`. The async manager is
    its own hook; the sync facade's hook queues from the caller's thread.
    """

    __slots__ = ()

    def _tracking(self) -> AsyncCostManager[Any] | None:
        """The manager that tracks calls now; None once closed."""
        raise NotImplementedError

    def _recording(self, began: AsyncCostManager[Any] | None) -> AsyncCostManager[Any] | None:
        """The manager that records a tracked call that has just ended (``began``: the one
        its `begin_call()` found, if any); None: not recorded."""
        return self._tracking()

    def _emit(self, records: Sequence[WireRecord]) -> None:
        """Queue ``records`` without blocking."""
        raise NotImplementedError

    def should_track(self, path: str) -> bool:
        """True when a config (or the built-in) tracks calls of ``path`` and the manager is
        open."""
        manager = self._tracking()
        if manager is None:
            return False
        extractor = manager.extractor
        return extractor.tracks(path) or manager.builtin.tracks(extractor, path)

    def begin_call(self, call: Call) -> bool:
        """True when the call is tracked (the proxy asks this alone, not `should_track()`);
        raise [`UsageLimitExceeded`][aicm.UsageLimitExceeded] when a hard usage limit covers
        it. The manager found is kept for the call's end."""
        manager = self._tracking()
        if manager is None:
            return False
        extractor, path = manager.extractor, call.path
        if not (extractor.tracks(path) or manager.builtin.tracks(extractor, path)):
            return False
        call.tracker = manager
        guard = manager.limit_guard
        if guard.book.limits:  # the call's customer key is asked only when it matters
            try:
                guard.before_call(call.kwargs, manager.tags()[0])
            except UsageLimitExceeded:
                raise
            except Exception:
                logger.exception("checking usage limits for %s failed; the call is made", path)
        return True

    def on_call(self, call: Call, response: Any) -> None:
        """A tracked call returned: queue its records without blocking."""
        manager = self._recording(call.tracker)
        if manager is not None:
            self._emit(manager.records_after_call(call, response))

    def on_stream_end(self, call: Call, chunks: list[Any]) -> None:
        """A tracked stream ended: queue its records without blocking."""
        manager = self._recording(call.tracker)
        if manager is not None:  # None: a stream that outlived its manager
            self._emit(manager.records_after_stream(call, chunks))


class AsyncCostManager(AsyncRecorder, ManagerHook, WrapsClient[ClientT]):
    """Wrap ``client``; every tracked call yields usage records delivered in the background.

    ``api_id`` defaults to the client's class name in lower case (``google-genai`` for a
    ``google.genai.Client``, ``bedrock-runtime`` for boto3's Bedrock runtime). A client aicm
    knows (OpenAI and compatible vendors, Anthropic, Gemini, Bedrock) is tracked by its
    built-in while no config for its ``api_id`` is loaded; a config always wins. Configs
    come from the service (``GET /configs?api_id=...``) when delivery starts, or, offline, from
    ``configs`` (a JSON file path or a list). Delivery defaults to ``MEM_QUEUE``; any
    [`DeliveryType`][aicm.DeliveryType] works. ``client_customer_key`` and ``context`` tag every
    record; `scope()` tags the calls made inside a ``with`` block.

    Use ``async with AsyncCostManager(client) as tracker:`` (or `start()` in a task
    group of yours): configs load and delivery runs there. Calls made before that, or
    after it is closed, are passed through untracked.
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
        if api_id is not None and (not isinstance(api_id, str) or not api_id):
            raise TypeError(f"api_id must be a non-empty string, got {shown(api_id)}")
        super().__init__(client_customer_key=client_customer_key, context=context, **options)
        self.builtin = BuiltinTracking.for_client(client, self)
        self.api_id = api_id or self.builtin.default_api_id or type(client).__name__.lower()
        self.config_source = CostManagerConfig(self.aicm_client, configs=configs)
        self.extractor = UniversalExtractor(())
        self._wrap(client, None if self.disabled else self)
        self._warned_no_config = False
        self._warned_methods: set[str] = set()
        self.limit_guard = LimitGuard(
            self.aicm_client.limits,
            self.settings,
            lambda: self.engine.stats,
            api_id=self.api_id,
            vendor=self.builtin.vendor,
            refresh=lambda: refresh_soon(self),
        )

    def __repr__(self) -> str:
        return f"AsyncCostManager({type(self._wrapped).__name__}, api_id={self.api_id!r})"

    # -- configs ---------------------------------------------------------------------------

    async def _prepare(self) -> None:
        if self.settings.enforce_limits:
            await self.aicm_client.refresh_limits()  # known before the first call is checked
        try:
            await self.load_configs()
        except MissingApiKeyError:
            raise  # no retry can fix this: say so where the manager is started
        except AicmError as exc:
            # The service may be briefly away at startup: keep the app running and keep
            # trying in the background, or every call until a restart would go unrecorded.
            logger.error(
                "could not load configs for %r (%s); retrying in the background", self.api_id, exc
            )
            self._start_background(self._load_configs_until_done, "aicm-config-retry")

    async def _load_configs_until_done(self) -> None:
        delay = _CONFIG_RETRY_FIRST
        while True:
            await anyio.sleep(delay)
            try:
                await self.load_configs()
                return
            except AicmError as exc:
                logger.warning("loading configs for %r failed again: %s", self.api_id, exc)
                delay = min(delay * 2, _CONFIG_RETRY_CAP)

    async def load_configs(self) -> list[ServiceConfig]:
        """(Re)load the handling configs and rebuild the extractor; return the configs used.

        A malformed handling config from the service is skipped and logged; offline
        configs were checked when the manager was built.
        """
        if self.disabled:
            return []  # turned off: GET /configs is never asked
        configs = await self.config_source.get_config(self.api_id)
        self.extractor = UniversalExtractor(configs)
        logger.info("%d config(s) loaded for %r", len(configs), self.api_id)
        if self.builtin.active(self.extractor):
            logger.info(
                "no handling config for %r: the built-in %s tracking records its calls",
                self.api_id,
                self.builtin.name,
            )
        elif not self.extractor.configs and not self._warned_no_config:
            self._warned_no_config = True
            logger.warning(
                "no handling config for api_id %r: calls of the wrapped %s are not tracked. "
                "Serve a config with a handling_config for %r from the service, pass "
                "configs=[...], or pass api_id= naming one that has a config",
                self.api_id,
                type(self._wrapped).__name__,
                self.api_id,
            )
        return configs

    # -- what the proxy's hook asks (see ManagerHook) --------------------------------------

    def _tracking(self) -> AsyncCostManager[Any] | None:
        return None if self._closed else self

    def _recording(self, began: AsyncCostManager[Any] | None) -> AsyncCostManager[Any] | None:
        return self  # a call that was in flight when the manager closed is still recorded

    _emit = AsyncRecorder.emit_nowait

    def records_for_call(self, call: Call, response: Any) -> list[WireRecord]:
        """The records one tracked call yields (pure: no I/O, no queueing)."""
        return self._records(call, response, None)

    def records_for_stream(self, call: Call, chunks: list[Any]) -> list[WireRecord]:
        """The records a tracked stream yields once it ended (pure)."""
        return self._records(call, None, chunks)

    def _records(self, call: Call, response: Any, chunks: list[Any] | None) -> list[WireRecord]:
        """The records of a call that returned ``response``, or of a stream that yielded
        ``chunks`` (when not None)."""
        path, kwargs = call.path, call.kwargs
        key, ctx = tags = self.tags()
        if not self.extractor.tracks(path):
            if chunks is not None:
                return self.builtin.records_for_stream(path, kwargs, chunks, tags)
            return self.builtin.records_for_call(path, kwargs, response, tags)
        if chunks is None:
            sized = self.extractor.extract_sized(
                path,
                args=call.args,
                kwargs=kwargs,
                response=response,
                func=call.func,
                api_id=self.api_id,
                client_customer_key=key,
                context=ctx,
            )
            if len(sized) == 1:  # one config, no list_path: the common case
                record = self.usage_record(sized[0][0], sized[0][1], key, ctx)
                if record is not None:
                    return [record]
                payloads, bounds = [], []
            else:
                payloads = [payload for payload, _ in sized]
                bounds = [bound for _, bound in sized]
        else:
            payloads = _extract(
                self.extractor,
                call,
                None,
                chunks,
                api_id=self.api_id,
                client_customer_key=key,
                context=ctx,
            )
            bounds = []
        records = cast("list[WireRecord]", self.usage_records(payloads, tags, bounds))
        if not records:
            self._report_no_record(call, response, chunks)
        return records

    def _report_no_record(self, call: Call, response: Any, chunks: list[Any] | None) -> None:
        """Say why a config-tracked call gave no record, naming each config and its paths."""

        def why() -> str | None:
            reasons = [
                f"config {config.config_id!r}: {reason}"
                for config in self.extractor.configs_for(call.path)
                if (reason := _why_no_record(config, call, response, chunks)) is not None
            ]
            # None: e.g. a list_path that resolved to an empty list, nothing to bill
            return "; ".join(reasons) if reasons else None

        self.warn_no_record(call.path, why)

    def warn_no_record(self, path: str, why: Callable[[], str | None]) -> None:
        """Log that a tracked call of ``path`` gave no record, and ``why()``: at WARNING the
        first time for each method, then at DEBUG. ``why()`` returning None logs nothing."""
        warned = path in self._warned_methods
        level = logging.DEBUG if warned else logging.WARNING
        if not logger.isEnabledFor(level):
            return
        reason = why()
        if reason is None:
            return
        if not warned:
            if len(self._warned_methods) >= _MAX_WARNED_METHODS:
                self._warned_methods.clear()
            self._warned_methods.add(path)
        logger.log(
            level,
            "a tracked call of %s (api_id %r) gave no usage record; %s",
            path,
            self.api_id,
            reason,
        )

    def records_after_call(self, call: Call, response: Any) -> list[WireRecord]:
        """What a proxy hook (this manager's or its sync facade's) queues for a call that
        returned: the usage limits learn of it, and an answer that holds a stream (boto3's
        ``converse_stream``) gives its records through the call's hook when that stream
        ends."""
        if self.builtin.defers(self.extractor, call.path, response):
            self.limit_guard.after_call(call.kwargs, response)
            self.builtin.wrap_inner_stream(call, response)
            return []
        records = self._records(call, response, None)
        self.limit_guard.after_call(call.kwargs, response, records)
        return records

    def records_after_stream(self, call: Call, chunks: list[Any]) -> list[WireRecord]:
        """What a proxy hook queues for a stream that ended (the usage limits learn of it)."""
        records = self._records(call, None, chunks)
        self.limit_guard.after_call(call.kwargs, chunks[-1] if chunks else None, records)
        return records


def _extract(
    extractor: UniversalExtractor,
    call: Call,
    response: Any,
    chunks: list[Any] | None,
    **tags: Unpack[CallTags],
) -> list[dict[str, Any]]:
    """The payloads ``extractor`` makes of a call's ``response``, or of a stream's ``chunks``."""
    path, args, kwargs, func = call.path, call.args, call.kwargs, call.func
    if chunks is not None:
        return extractor.extract_stream_end(
            path, chunks, args=args, kwargs=kwargs, func=func, **tags
        )
    return extractor.extract(path, args=args, kwargs=kwargs, response=response, func=func, **tags)


def _why_no_record(
    config: HandlingConfig,
    call: Call,
    response: Any,
    chunks: list[Any] | None,
) -> str | None:
    """Why ``config`` made no record of a call, naming the paths that did not resolve."""
    payloads = _extract(UniversalExtractor([config]), call, response, chunks)
    if chunks is not None:
        fields = config.streaming.final_fields if config.streaming else ()
        response = accumulate_stream(chunks, fields)
    if not payloads and config.list_path is not None:
        items = resolve_path(response, config.list_path)
        if isinstance(items, (list, tuple)):
            return None  # an empty list: nothing happened that could be billed
        where = ".".join(step for step, _ in config.list_path)
        return f"list_path {where!r} did not resolve to a list"
    unresolved = [
        f"{source.key} <- {source.source}"
        for source in config.payload_mapping
        if all(source.key not in payload for payload in payloads)
    ]
    if payloads:
        what = "its payload was not recordable (see the warning before this one)"
    else:
        what = "extraction failed (see the error before this one)"
    return f"{what}; unresolved: {', '.join(unresolved)}" if unresolved else what
