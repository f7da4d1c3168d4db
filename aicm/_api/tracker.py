"""``AsyncTracker``: record usage by hand, free-form or checked against a schema (layer 4).

Two call forms live on one class. Built as ``AsyncTracker()``, ``track(api_id,
service_key, usage)`` sends a ``/track`` record. Built as ``AsyncTracker(config_id,
service_id)``, the config's ``manual_usage_schema`` is loaded once from ``GET /configs``
and ``track(usage)`` validates ``usage`` against it, then sends a ``/track-usage`` record
``{config_id, service_id, timestamp, response_id, usage, client_customer_key?, context?}``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, overload

import anyio
import anyio.abc

from .._core.exceptions import (
    AicmError,
    ClosedError,
    NotSerializableError,
    RecordError,
    UnknownConfigError,
    shown,
)
from .._core.models import (
    ConfigsResponse,
    RecordResult,
    TrackRecord,
    UsageRecord,
    WireRecord,
    enqueued_result,
    normalize_timestamp,
    one_customer_key,
)
from .._core.policy import RetryPolicy
from .._core.settings import DeliveryType, TrackFormat
from .._delivery.immediate import failure_logged, log_sending, verdicts
from .._io.http import AsyncCostManagerClient
from .._io.retrying import retrying_or_raise
from .conveniences import TrackConveniences, TrackDefaults, check_anonymize_options
from .limits import LimitGuard, fetch_at_start
from .options import (
    LlmTrackOptions,
    Timestamp,
    TrackerOptions,
    TrackOptions,
    check_option_names,
)
from .owner import DeliveryOwner

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .._core.validator import UsageSchema

__all__ = ["DISABLED_STATUS", "AsyncTracker", "Timestamp", "batch_items", "disabled_result"]

logger = logging.getLogger("aicm.tracker")
_delivery_logger = logging.getLogger("aicm.delivery")


# What a record is built from besides its usage (anonymisation is applied before that).
_TRACK_OPTIONS: Final = tuple(
    name for name in TrackOptions.__annotations__ if name not in ("anonymize_fields", "anonymizer")
)
_TRACK_OPTION_SET: Final = frozenset(_TRACK_OPTIONS)
_build_track = TrackRecord.build
_FREE_FORM: Final = ("api_id", "service_key", "usage")
_CONFIG_FORM: Final = ("usage",)
# Loading a config happens while the caller waits: never sleep long between attempts.
_MAX_CONFIG_RETRY_DELAY: Final = 2.0
_KNOWN_CONFIGS_SHOWN: Final = 10
#: The status of a record a tracker accepted with the kill switch on: nothing was sent.
DISABLED_STATUS: Final = "disabled"


def disabled_result(record: WireRecord) -> RecordResult:
    """What ``track`` returns with the kill switch on: ``status="disabled"``, ``ok`` False."""
    return RecordResult(response_id=record.response_id, status=DISABLED_STATUS)


def llm_options(
    method: str, options: Mapping[str, Any], *, stream: bool = False
) -> tuple[str | None, dict[str, Any]]:
    """The ``response_id`` of a ``track_llm_*`` call, and the options of the ``track()``
    call that records its answer (an unknown name is a TypeError naming ``method``)."""
    unknown = sorted(set(options) - LlmTrackOptions.__annotations__.keys())
    if unknown:
        raise TypeError(
            f"{method}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}"
        )
    rest = dict(options)
    response_id = rest.pop("response_id", None)
    if stream:  # its record is made once it ends: bad options raise now, not then
        check_anonymize_options(rest.get("anonymize_fields"), rest.get("anonymizer"), method)
    from .._providers import llm_usage as _llm  # only LLM answers need the providers

    return response_id, _llm.track_options(**rest)


def batch_items(
    records: Iterable[Mapping[str, Any] | TrackRecord | UsageRecord],
) -> list[Mapping[str, Any] | TrackRecord | UsageRecord]:
    """The items of a ``track_batch()`` call (a TypeError for a single record given alone)."""
    if isinstance(records, (Mapping, str, bytes)):
        raise TypeError(
            "track_batch() takes an iterable of records (mappings or built records), "
            f"not a single {type(records).__name__}"
        )
    return list(records)


def _unknown_config_message(config_id: str, answer: ConfigsResponse) -> str:
    known = sorted(c.config_id for c in answer.service_configs)
    if not known:
        return f"the service has no config {config_id!r} (it serves no configs for this key)"
    close = difflib.get_close_matches(config_id, known, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    shown = ", ".join(map(repr, known[:_KNOWN_CONFIGS_SHOWN]))
    more = len(known) - _KNOWN_CONFIGS_SHOWN
    if more > 0:
        shown += f" and {more} more"
    return f"the service has no config {config_id!r}{hint} (it has {shown})"


class AsyncTracker(TrackConveniences, DeliveryOwner):
    """Record usage events and deliver them (see the module docstring).

    Queued delivery (``MEM_QUEUE``, ``PERSISTENT_QUEUE``) runs an actor in a task group,
    so use ``async with AsyncTracker(...) as tracker:`` (or `start()` in a task group
    of your own); ``IMMEDIATE`` (the default) also works without it. All options are
    keyword-only and fall back to the environment, the INI file and the defaults.
    """

    default_delivery: ClassVar[DeliveryType] = DeliveryType.IMMEDIATE

    @overload
    def __init__(self, **options: Unpack[TrackerOptions]) -> None: ...

    @overload
    def __init__(
        self, config_id: str, service_id: str, **options: Unpack[TrackerOptions]
    ) -> None: ...

    def __init__(
        self,
        config_id: str | None = None,
        service_id: str | None = None,
        **options: Unpack[TrackerOptions],
    ) -> None:
        if (config_id is None) != (service_id is None):
            raise TypeError(
                "give both config_id and service_id (to track(usage) against the config's "
                "schema), or neither (to track(api_id, service_key, usage) free-form)"
            )
        for name, value in (("config_id", config_id), ("service_id", service_id)):
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"{name} must be a non-empty string, got {shown(value)}")
        on_discard = options.get("on_discard")
        if on_discard is not None and not callable(on_discard):
            raise TypeError(f"on_discard must be callable, got {on_discard!r}")
        check_option_names(type(self).__name__, options, tracker=True)
        anonymize_fields = options.pop("anonymize_fields", None)
        anonymizer = options.pop("anonymizer", None)
        self.config_id = config_id
        self.service_id = service_id
        super().__init__(**options)
        self.limit_guard = LimitGuard(
            self.aicm_client.limits, self.settings, lambda: self.engine.stats
        )
        self._max_bytes = self.settings.max_record_bytes
        self._legacy = self.settings.track_format is TrackFormat.LEGACY
        #: the customer key, context and anonymisation every call gets (set_customer_key, ...)
        self.track_defaults = TrackDefaults(
            anonymize_fields=anonymize_fields, anonymizer=anonymizer
        )
        self._schema: UsageSchema | None = None
        # Turned off, no config is fetched: usage is recorded as if the config had no schema.
        self._schema_loaded = self.disabled
        self._api_id: str | None = None

    def __repr__(self) -> str:
        form = f"{self.config_id!r}, {self.service_id!r}, " if self.config_id else ""
        return f"AsyncTracker({form}delivery_type={self.delivery_type.value!r})"

    @property
    def client(self) -> AsyncCostManagerClient:
        """The HTTP client this tracker delivers with."""
        return self.aicm_client

    @property
    def api_id(self) -> str | None:
        """The ``api_id`` of this tracker's config (config form, once loaded)."""
        return self._api_id

    @property
    def schema(self) -> UsageSchema | None:
        """The compiled ``manual_usage_schema`` (config form, once loaded; None: no schema)."""
        return self._schema

    # -- lifecycle -------------------------------------------------------------------------

    async def _before_enter(self) -> None:
        self._check_open()
        if self.config_id is not None and not self._schema_loaded:
            await self.load_schema()

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Load the schema (config form) and start delivery in ``task_group``.

        ``async with`` does this for you. Call it to run the delivery actor in a task group
        you already have, and call `aclose()` before that task group ends.
        """
        self._check_open()
        await super().start(task_group)

    async def _prepare(self) -> None:
        if self.config_id is not None and not self._schema_loaded:
            await self.load_schema()

    async def _after_start(self) -> None:
        # The limits in force (a persistent queue's file may hold a fresh answer, so only
        # once it is open), asked in the background; aclose cancels the request.
        await fetch_at_start(self.aicm_client, self.settings, self._start_background)

    async def load_schema(self) -> UsageSchema | None:
        """Fetch this tracker's config from ``GET /configs`` and compile its schema.

        Returns the compiled schema, or None when the config has no ``manual_usage_schema``
        (usage is then not checked). Raises [`UnknownConfigError`][aicm.UnknownConfigError] when the
        service has no such config. Transient failures are retried like an ``IMMEDIATE`` send.
        """
        if self.config_id is None:
            raise TypeError("a free-form tracker has no config; build it with a config_id")
        if self.disabled:
            return None  # turned off: GET /configs is never asked
        answer = await self._fetch_configs()
        for config in answer.service_configs:
            if config.config_id == self.config_id:
                schema = config.manual_usage_schema
                # No schema: nothing to check. An empty one, {}, accepts only {} (as
                # docs/validation.md says), so the two are told apart.
                from .._core.validator import compile_schema  # only a config's schema

                self._schema = None if schema is None else compile_schema(schema)
                self._api_id = config.api_id
                self._schema_loaded = True
                return self._schema
        raise UnknownConfigError(_unknown_config_message(self.config_id, answer))

    async def _fetch_configs(self) -> ConfigsResponse:
        settings = self.settings
        policy = RetryPolicy(
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            attempts=settings.max_attempts,
            max_sleep=_MAX_CONFIG_RETRY_DELAY,
        )

        def retried(exc: Exception, attempt: int, delay: float) -> None:
            delay = min(delay, _MAX_CONFIG_RETRY_DELAY)
            logger.info("loading configs failed (%s); retrying in %.2fs", exc, delay)

        return await retrying_or_raise(self.aicm_client.get_configs, policy, on_retry=retried)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this tracker is closed; create a new one to track more")

    # -- building records (pure, also used by the sync facade in the caller's thread) -------

    def build_record(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> WireRecord:
        """Check a ``track`` call's arguments and return the record it would send.

        Raises `TypeError` for a call that fits neither form, and a
        [`RecordError`][aicm.RecordError] or [`UsageValidationError`][aicm.UsageValidationError] for
        bad values.
        """
        if (
            len(args) == 3
            and not kwargs
            and self.config_id is None
            and not self.track_defaults.active
        ):
            # The common call, inlined: every queued track() of both trackers comes here.
            return _build_track(
                args[0], args[1], args[2], max_bytes=self._max_bytes, legacy=self._legacy
            )
        # The tracker's defaults and anonymisation, before anything is built or queued.
        args, kwargs = self.track_defaults.prepare(
            args, kwargs, usage_at=2 if self.config_id is None else 0
        )
        if (
            len(args) == 3
            and self.config_id is None
            and (not kwargs or kwargs.keys() <= _TRACK_OPTION_SET)
        ):
            # The common call, track(api_id, service_key, usage, ...): no binding needed.
            return TrackRecord.build(
                args[0], args[1], args[2], max_bytes=self._max_bytes, legacy=self._legacy, **kwargs
            )
        names = _FREE_FORM if self.config_id is None else _CONFIG_FORM
        if len(args) > len(names):
            raise TypeError(self._form_message(f"got {len(args)} positional arguments"))
        values: dict[str, Any] = dict(zip(names, args, strict=False))
        options: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in kwargs.items():
            if key in names:
                if key in values:
                    raise TypeError(f"track() got multiple values for argument {key!r}")
                values[key] = value
            elif key in _TRACK_OPTIONS:
                options[key] = value
            else:
                unknown.append(key)
        if unknown:
            wrong = ", ".join(map(repr, sorted(unknown)))
            raise TypeError(
                f"track() got unexpected keyword argument(s) {wrong}; "
                f"it takes {', '.join(_TRACK_OPTIONS)}"
            )
        missing = [name for name in names if name not in values]
        if missing:
            raise TypeError(
                self._form_message(f"missing argument(s): {', '.join(map(repr, missing))}")
            )
        if self.config_id is None:
            return TrackRecord.build(
                values["api_id"],
                values["service_key"],
                values["usage"],
                max_bytes=self._max_bytes,
                legacy=self._legacy,
                **options,
            )
        return self._build_config_record(values["usage"], **options)

    def _form_message(self, problem: str) -> str:
        if self.config_id is None:
            return (
                f"track(api_id, service_key, usage, ...) {problem}; to call track(usage), "
                "build the tracker for a config: Tracker(config_id, service_id)"
            )
        return (
            f"this tracker is bound to config {self.config_id!r}: call track(usage, ...); "
            f"{problem} (free-form track(api_id, service_key, usage) needs a tracker "
            "built without config_id and service_id)"
        )

    def _build_config_record(
        self,
        usage: Any,
        *,
        client_customer_key: str | None = None,
        customer_key: str | None = None,
        context: Any = None,
        response_id: str | None = None,
        timestamp: object = None,
    ) -> UsageRecord:
        if not self._schema_loaded:
            raise AicmError(
                "the config's schema is not loaded yet: use `async with`, start() or "
                "load_schema() first"
            )
        if self._schema is not None:
            self._schema.validate(usage)
        elif not isinstance(usage, Mapping):
            raise NotSerializableError(
                f"usage must be a mapping, got {type(usage).__name__}", field="usage"
            )
        payload: dict[str, Any] = {
            "config_id": self.config_id,
            "service_id": self.service_id,
            "timestamp": normalize_timestamp(timestamp),
            "usage": usage,
        }
        if response_id is not None:
            if not isinstance(response_id, str) or not response_id:
                raise RecordError(
                    f"must be a non-empty string, got {shown(response_id)}", field="response_id"
                )
            payload["response_id"] = response_id
        if customer_key is not None:
            client_customer_key = one_customer_key(client_customer_key, customer_key)
        if client_customer_key is not None:
            if not isinstance(client_customer_key, str) or not client_customer_key:
                raise RecordError(
                    f"must be a non-empty string, got {shown(client_customer_key)}",
                    field="client_customer_key",
                )
            payload["client_customer_key"] = client_customer_key
        if context is not None:
            if not isinstance(context, Mapping):
                raise NotSerializableError(
                    f"context must be a mapping, got {type(context).__name__}", field="context"
                )
            payload["context"] = context
        return UsageRecord.build(payload, max_bytes=self._max_bytes)

    # -- tracking --------------------------------------------------------------------------

    @overload
    async def track(
        self,
        api_id: str,
        service_key: str,
        usage: Mapping[str, Any],
        **options: Unpack[TrackOptions],
    ) -> RecordResult: ...

    @overload
    async def track(
        self,
        usage: Mapping[str, Any],
        **options: Unpack[TrackOptions],
    ) -> RecordResult: ...

    async def track(self, *args: Any, **kwargs: Any) -> RecordResult:
        """Record one usage event.

        Free-form trackers take ``track(api_id, service_key, usage, ...)``; trackers built
        for a config take ``track(usage, ...)``. ``IMMEDIATE`` returns the service's
        verdict; the queues return ``RecordResult(response_id, status="enqueued")`` once
        the record is queued (on disk, for ``PERSISTENT_QUEUE``). Bad input raises before
        anything is queued or sent. With the kill switch on, the call is checked the same
        way and returns ``RecordResult(response_id, status="disabled")``: nothing is sent.
        """
        if self._closed:
            self._check_open()
        if self.config_id is not None and not self._schema_loaded:
            await self.load_schema()
        record = self.build_record(args, kwargs)
        buffer = self.engine.buffer
        if buffer is not None and self._task_group is not None and buffer.try_put(record):
            # The memory queue took it at once: no await on the hot path.
            if _delivery_logger.isEnabledFor(logging.DEBUG):
                _delivery_logger.debug("enqueued %s", record.response_id)
            return self.queued(record)
        result = await self.submit(record)
        if not self.disabled:
            self.limit_guard.after_record(record)
        return result

    async def track_llm_usage(
        self, service_key: str, response: Any, **options: Unpack[LlmTrackOptions]
    ) -> Any:
        """Record the usage a provider's answer reports; return ``response``.

        ``service_key`` is ``"vendor::model"`` (recorded as given) or a vendor such as
        ``"openai"``, ``"anthropic"``, ``"google"``, ``"amazon-bedrock"`` (the model is read
        from the answer). The record carries the answer's id and its usage object; an answer
        without usage records nothing. ``response.aicm_response_id`` is set where the object
        allows. ``anonymize_fields`` name usage fields replaced by ``anonymizer(value)``.
        """
        response_id, track_options = llm_options("track_llm_usage", options)
        from .._providers import llm_usage as _llm  # only LLM answers need the providers

        return await _llm.atrack_response(
            self.track, service_key, response, response_id=response_id, options=track_options
        )

    def track_llm_stream_usage(
        self, service_key: str, stream: Any, **options: Unpack[LlmTrackOptions]
    ) -> AsyncIterator[Any]:
        """Yield an async ``stream``'s events untouched; record its usage once it ends.

        ``async for event in tracker.track_llm_stream_usage("openai", stream):``. A stream
        left early is recorded with what it reported so far. See `track_llm_usage()`.
        """
        response_id, track_options = llm_options("track_llm_stream_usage", options, stream=True)
        from .._providers import llm_usage as _llm  # only LLM answers need the providers

        recorder = _llm.stream_recorder(self.track, track_options)
        return _llm.atrack_stream(recorder, service_key, stream, response_id=response_id)

    def queued(self, record: WireRecord) -> RecordResult:
        """What `track()` returns for a record just queued (a usage limit may raise now)."""
        self.limit_guard.after_record(record)  # raises once the record is on its way
        return enqueued_result(record.response_id)

    async def submit(self, record: WireRecord) -> RecordResult:
        """Deliver an already-built record per this tracker's delivery type."""
        self._check_open()
        if self.disabled:
            return disabled_result(record)
        if self.delivery_type is DeliveryType.IMMEDIATE:
            return (await self._send_now([record]))[0]
        self._check_started()
        await self.engine.aput(record)
        return enqueued_result(record.response_id)

    def _check_started(self) -> None:
        if self._task_group is None:
            raise AicmError(
                f"a {self.delivery_type.value} tracker delivers from a background task: use "
                "`async with AsyncTracker(...) as tracker:` (or start(task_group)) first"
            )
        if not self.engine.running:
            raise AicmError(
                "this tracker's delivery task is not running (its task group has ended); "
                "create a new tracker"
            )

    async def _send_now(self, records: Sequence[WireRecord]) -> list[RecordResult]:
        log_sending(records, log_bodies=self.settings.log_bodies)
        with failure_logged(len(records)):
            # The engine splits by endpoint (a batch may mix /track and /track-usage) and
            # into requests of at most 1000 records.
            answer = await self.engine.send_now(records)
        return verdicts(records, answer)

    def track_from_thread(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> RecordResult | None:
        """`track()` from a thread outside the engine's loop (the sync facade), not going to
        that loop: queued (blocking per the on-full policy), sent with the blocking client
        (IMMEDIATE), or only checked (kill switch). None, with nothing done, when it must
        run on the loop (a config not loaded yet, a client with an injected transport)."""
        if self._closed:
            self._check_open()
        engine = self.engine
        if engine.store is not None:
            record = self.build_record(args, kwargs)
            engine.put(record)
            return self.queued(record)
        if self.disabled:
            return disabled_result(self.build_record(args, kwargs))
        if (self.config_id is not None and not self._schema_loaded) or not engine.client.can_block:
            return None
        record = self.build_record(args, kwargs)
        self._check_open()
        log_sending((record,), log_bodies=self.settings.log_bodies)
        with failure_logged(1):
            answer = engine.send_now_blocking((record,))
        result = verdicts((record,), answer)[0]
        self.limit_guard.after_record(record)
        return result

    async def track_batch(
        self, records: Iterable[Mapping[str, Any] | TrackRecord | UsageRecord]
    ) -> list[RecordResult]:
        """Record many events; each a mapping of ``track``'s arguments, or a built record.

        A free-form tracker's mappings hold ``api_id``, ``service_key``, ``usage`` (or
        ``payload``) and any of ``track``'s options; a config tracker's hold ``usage`` and
        the options. Every record is checked before any is queued or sent. ``IMMEDIATE``
        sends them in requests of at most 1000 records and returns each verdict, in order.
        """
        self._check_open()
        records = batch_items(records)
        if self.config_id is not None and not self._schema_loaded:
            await self.load_schema()
        built = self.build_batch(records)
        if self.disabled:
            return [disabled_result(r) for r in built]
        if not built:
            return []
        if self.delivery_type is DeliveryType.IMMEDIATE:
            return await self._send_now(built)
        self._check_started()
        for record in built:
            await self.engine.aput(record)
        return [enqueued_result(r.response_id) for r in built]

    def build_batch(
        self, records: Iterable[Mapping[str, Any] | TrackRecord | UsageRecord]
    ) -> list[WireRecord]:
        """Check every item of a `track_batch()` call and return the records (pure)."""
        built: list[WireRecord] = []
        for index, item in enumerate(records):
            if isinstance(item, (TrackRecord, UsageRecord)):
                built.append(item)
                continue
            if not isinstance(item, Mapping):
                raise TypeError(
                    f"records[{index}] must be a mapping or a built record, "
                    f"got {type(item).__name__}"
                )
            data = dict(item)
            if self.config_id is None and "payload" in data and "usage" not in data:
                data["usage"] = data.pop("payload")  # the wire name, accepted as an alias
            try:
                built.append(self.build_record((), data))
            except TypeError as exc:
                if isinstance(exc, AicmError):  # NotSerializableError and kin keep their type
                    raise
                raise TypeError(f"records[{index}]: {exc}") from None
        return built
