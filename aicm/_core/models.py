"""The records that travel to and from the service, and the one cattrs converter (layer 1, pure)."""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn
from cattrs.v import format_exception, transform_error

from .exceptions import (
    ConfigError,
    InvalidTimestampError,
    NotSerializableError,
    RecordError,
    shown,
)
from .forks import after_fork_in_child
from .forks import check as check_fork
from .jsonplain import JSONValue, check_size, plain_mapping, plain_size_bound, to_plain
from .wire import ACCEPTED_STATUSES, BATCH_KEYS

__all__ = [
    "API_VENDORS",
    "ConfigsResponse",
    "Endpoint",
    "RecordResult",
    "ServiceConfig",
    "TrackRecord",
    "TrackResult",
    "UsageRecord",
    "WireRecord",
    "converter",
    "enqueued_result",
    "new_response_id",
    "normalize_timestamp",
    "one_customer_key",
    "structure_config",
    "utc_now_iso",
    "vendor_service_key",
]

_T = TypeVar("_T")

converter = cattrs.Converter(omit_if_default=False)
"""The converter for every (un)structuring in aicm; never cattrs' global one."""


class Endpoint(str, enum.Enum):
    """The ingest endpoint a record is sent to (relative to the API root)."""

    TRACK = "/track"
    TRACK_USAGE = "/track-usage"

    @property
    def body_key(self) -> str:
        """The key of the record list in the request body."""
        return BATCH_KEYS["track" if self is Endpoint.TRACK else "track_usage"]


# A generated response id is a version-4 UUID string made of a per-process random prefix
# (74 random bits, from os.urandom; new in every forked child) and a 48-bit counter: unique
# across processes and calls at a third of the cost of random bits per call. Ids are
# idempotency keys, not secrets.
_ids = itertools.count()
_id_prefix = ""
_ID_SPAN = 1 << 48  # counter values per prefix


def _new_prefix() -> None:
    global _ids, _id_prefix
    bits = int.from_bytes(os.urandom(10), "big")  # 80 bits; 6 become the version/variant
    h = f"{bits:020x}"
    variant = "89ab"[int(h[16], 16) & 3]
    _id_prefix = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-"
    _ids = itertools.count()


_new_prefix()
after_fork_in_child(_new_prefix)


def new_response_id() -> str:
    """A fresh UUID (version 4 format), unique to this call: the default idempotency key."""
    check_fork()  # a child forked without Python's hooks must not reuse the parent's ids
    n = next(_ids)
    if n >= _ID_SPAN:  # 2.8e14 ids later: a new prefix (a lost race only skips numbers)
        _new_prefix()
        n = next(_ids)
    return f"{_id_prefix}{n:012x}"


# What utc_now_iso() and normalize_timestamp() write: such a value needs no re-parsing.
_CANONICAL_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z\Z")

_clock_second = -1
_clock_prefix = ""
# The last utc_now_iso() value: canonical by construction, so a record built from it
# skips the pattern check (another thread's newer value just means the check runs).
_last_now = ""


def utc_now_iso() -> str:
    """The current time as ISO-8601 UTC with microseconds and a ``Z`` suffix."""
    global _clock_second, _clock_prefix, _last_now
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    if second != _clock_second:
        # Formatting the date part is the costly bit, and it changes once a second.
        _clock_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _clock_second = second
    now = _last_now = f"{_clock_prefix}.{micros:06d}Z"
    return now


def _iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def normalize_timestamp(value: object, *, field: str = "timestamp") -> str:
    """Return ``value`` as an ISO-8601 UTC string.

    Accepts a ``datetime`` (a naive one is taken as UTC), an ISO-8601 string, or an epoch
    number in seconds. ``None`` means now.
    """
    if value is None:
        return utc_now_iso()
    if isinstance(value, dt.datetime):
        try:
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
            return _iso(value.astimezone(dt.timezone.utc))
        except Exception as exc:  # a caller's tzinfo (or datetime subclass) that raises
            raise InvalidTimestampError(
                f"reading the datetime's time zone raised {type(exc).__name__}", field=field
            ) from exc
    if isinstance(value, bool):
        raise InvalidTimestampError(
            "expected a datetime, ISO-8601 string or epoch number, got bool", field=field
        )
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidTimestampError(f"{value!r} is not a finite epoch number", field=field)
        try:
            return _iso(dt.datetime.fromtimestamp(value, dt.timezone.utc))
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidTimestampError(
                f"epoch {shown(value)} is out of range", field=field
            ) from exc
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise InvalidTimestampError(
                f"{value!r} is not an ISO-8601 timestamp", field=field
            ) from exc
        return normalize_timestamp(parsed, field=field)
    raise InvalidTimestampError(
        f"expected a datetime, ISO-8601 string or epoch number, got {type(value).__name__}",
        field=field,
    )


def _check_id(value: object, field: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise RecordError(f"must be a non-empty string, got {shown(value)}", field=field)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise NotSerializableError(
                "is not valid Unicode (a lone surrogate)", field=field
            ) from None
    return value


#: The vendor of an ``api_id``, as the service's ``"vendor::model"`` service keys name it;
#: any other ``api_id`` is its own vendor (``"openai"`` -> ``"openai::gpt-5-mini"``).
API_VENDORS: Mapping[str, str] = {
    "openai_chat": "openai",
    "openai_responses": "openai",
    "gemini": "google",
}


def vendor_service_key(api_id: str, service_key: str) -> str:
    """``"vendor::model"`` for a record's ``api_id`` and ``service_key``.

    A ``service_key`` that already holds ``::`` is returned as it is.
    """
    if "::" in service_key:
        return service_key
    return f"{API_VENDORS.get(api_id, api_id)}::{service_key}"


def one_customer_key(client_customer_key: Any, customer_key: str) -> str:
    """The customer of a record given ``customer_key`` (another name for
    ``client_customer_key``: give one, or both equal), or a [`RecordError`][aicm.RecordError]."""
    if client_customer_key is not None and client_customer_key != customer_key:
        raise RecordError(
            "give client_customer_key or customer_key, not two different keys",
            field="customer_key",
        )
    return customer_key


@attrs.frozen(kw_only=True, slots=True)
class TrackRecord:
    """One usage event for ``POST /track``. Build it with `build()` to validate.

    `wire()` sends the service's current record (``service_key`` ``"vendor::model"``,
    ``customer_key``), or with ``legacy`` the older one (``api_id``, the bare
    ``service_key``, ``client_customer_key``).
    """

    endpoint: ClassVar[Endpoint] = Endpoint.TRACK

    api_id: str
    service_key: str
    response_id: str
    timestamp: str
    payload: dict[str, JSONValue]
    client_customer_key: str | None = None
    context: dict[str, JSONValue] | None = None
    legacy: bool = False

    @classmethod
    def build(
        cls,
        api_id: str,
        service_key: str,
        usage: Any,
        *,
        response_id: str | None = None,
        timestamp: object = None,
        client_customer_key: str | None = None,
        context: Any = None,
        max_bytes: int = 65536,
        customer_key: str | None = None,
        legacy: bool = False,
    ) -> TrackRecord:
        """Validate every field and return the record, or raise a [`RecordError`][aicm.RecordError].

        ``customer_key`` is another name for ``client_customer_key`` (give one, or both
        equal); ``legacy`` picks the older wire record.
        """
        if customer_key is not None:
            client_customer_key = one_customer_key(client_customer_key, customer_key)
        if type(api_id) is not str or not api_id or not api_id.isascii():
            _check_id(api_id, "api_id")
        if type(service_key) is not str or not service_key or not service_key.isascii():
            _check_id(service_key, "service_key")
        if response_id is None:
            response_id = new_response_id()
        elif type(response_id) is not str or not response_id or not response_id.isascii():
            _check_id(response_id, "response_id")
        payload, usage_size = plain_mapping(usage, field="usage")
        size = usage_size + 6 * len(response_id)
        ctx = None
        ctx_size = 0
        if context is not None:
            ctx, ctx_size = plain_mapping(context, field="context")
            size += ctx_size
        if client_customer_key is not None:
            _check_id(client_customer_key, "client_customer_key")
            size += 6 * len(client_customer_key)
        # Every field is checked above: fill the slots directly (attrs' frozen __init__
        # costs twice as much, and this is every track()'s path).
        record = _new_object(cls)
        _set_api_id(record, api_id)
        _set_service_key(record, service_key)
        _set_response_id(record, response_id)
        _set_timestamp(
            record, utc_now_iso() if timestamp is None else normalize_timestamp(timestamp)
        )
        _set_payload(record, payload)
        _set_client_customer_key(record, client_customer_key)
        _set_context(record, ctx)
        _set_legacy(record, legacy is True)
        # ``size`` bounds the JSON bytes from above; only a record near the limit pays
        # for an exact measurement.
        if size + 6 * (len(api_id) + len(service_key)) + 200 > max_bytes:
            # Name the part that weighs most, so the caller knows what to trim.
            parts = {
                "usage": usage_size,
                "context": ctx_size,
                "response_id": 6 * len(response_id),
                "api_id": 6 * len(api_id),
                "service_key": 6 * len(service_key),
                "client_customer_key": 6 * len(client_customer_key or ""),
            }
            check_size(record.wire(), field=max(parts, key=parts.__getitem__), limit=max_bytes)
        return record

    @property
    def vendor_service_key(self) -> str:
        """The ``"vendor::model"`` service key the current record sends."""
        return vendor_service_key(self.api_id, self.service_key)

    def wire(self) -> dict[str, JSONValue]:
        """The record as the wire contract sends it (optional fields left out when unset)."""
        if self.legacy:
            out: dict[str, JSONValue] = {
                "api_id": self.api_id,
                "service_key": self.service_key,
                "response_id": self.response_id,
                "timestamp": self.timestamp,
                "payload": self.payload,
            }
            if self.client_customer_key is not None:
                out["client_customer_key"] = self.client_customer_key
        else:
            out = {
                "service_key": vendor_service_key(self.api_id, self.service_key),
                "response_id": self.response_id,
                "timestamp": self.timestamp,
                "payload": self.payload,
            }
            if self.client_customer_key is not None:
                out["customer_key"] = self.client_customer_key
        if self.context is not None:
            out["context"] = self.context
        return out


_new_object = object.__new__
_set_api_id = TrackRecord.__dict__["api_id"].__set__
_set_service_key = TrackRecord.__dict__["service_key"].__set__
_set_response_id = TrackRecord.__dict__["response_id"].__set__
_set_timestamp = TrackRecord.__dict__["timestamp"].__set__
_set_payload = TrackRecord.__dict__["payload"].__set__
_set_client_customer_key = TrackRecord.__dict__["client_customer_key"].__set__
_set_context = TrackRecord.__dict__["context"].__set__
_set_legacy = TrackRecord.__dict__["legacy"].__set__


@attrs.frozen(kw_only=True, slots=True)
class UsageRecord:
    """One record for ``POST /track-usage``: the mapping a handling config produced."""

    endpoint: ClassVar[Endpoint] = Endpoint.TRACK_USAGE

    response_id: str
    payload: dict[str, JSONValue]

    @classmethod
    def build(
        cls,
        payload: Mapping[str, Any],
        *,
        max_bytes: int = 65536,
        plain: bool = False,
        bound: int = -1,
    ) -> UsageRecord:
        """Validate ``payload``; without a ``response_id`` it gets a fresh one.

        ``plain=True`` says ``payload`` is already a fresh dict of plain JSON data that
        the record may own (what the extractor builds): it is not converted again. With
        it, ``bound`` may give an upper bound of its JSON size that the extractor counted
        while building it (its plain leaves checked alike): the payload is not walked again.
        """
        if not plain or type(payload) is not dict:
            bound = -1
        elif bound < 0:
            bound = plain_size_bound(payload)
        if bound >= 0:
            return cls._checked(payload, max_bytes, bound)
        return cls._checked(to_plain(payload, field="payload"), max_bytes, -1)

    @classmethod
    def _checked(cls, plain: Any, max_bytes: int, bound: int) -> UsageRecord:
        """The record of ``plain``, whose JSON size is at most ``bound`` (-1: not known)."""
        if type(plain) is not dict:
            raise NotSerializableError("a usage record must be a mapping", field="payload")
        rid = plain.get("response_id")
        if rid is None:
            rid = plain["response_id"] = new_response_id()
        elif not isinstance(rid, str) or not rid:
            if isinstance(rid, int) and not isinstance(rid, bool):
                rid = plain["response_id"] = str(rid)
            else:
                raise RecordError(
                    f"must be a non-empty string, got {shown(rid)}", field="response_id"
                )
        last = _last_now  # read once: another thread may set a newer one meanwhile
        ts = plain.get("timestamp", last)
        if ts is not last and not (type(ts) is str and _CANONICAL_TS.match(ts)):
            plain["timestamp"] = normalize_timestamp(ts)
        if bound < 0 or bound + _ID_AND_TIME_SLACK > max_bytes:
            check_size(plain, field="payload", limit=max_bytes)
        # Checked above: built without attrs' __init__, as TrackRecords are (one per call).
        record: UsageRecord = _new_object(cls)
        _set_usage_id(record, rid)
        _set_usage_payload(record, plain)
        return record

    def wire(self) -> dict[str, JSONValue]:
        """The record as the wire contract sends it."""
        return self.payload


_set_usage_id = UsageRecord.__dict__["response_id"].__set__
_set_usage_payload = UsageRecord.__dict__["payload"].__set__

WireRecord = TrackRecord | UsageRecord

# What setting response_id (a new uuid, or an int made text) and normalising the timestamp
# may add to a payload's JSON size, at most.
_ID_AND_TIME_SLACK = 1024


@attrs.frozen(kw_only=True, slots=True)
class RecordResult:
    """The service's verdict on one record."""

    response_id: str
    status: str
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the service accepted the record."""
        return self.status in ACCEPTED_STATUSES


_set_result_id = RecordResult.__dict__["response_id"].__set__
_set_result_status = RecordResult.__dict__["status"].__set__
_set_result_errors = RecordResult.__dict__["errors"].__set__


def enqueued_result(response_id: str) -> RecordResult:
    """``RecordResult(response_id=response_id, status="enqueued")``, built for the hot path."""
    result: RecordResult = _new_object(RecordResult)
    _set_result_id(result, response_id)
    _set_result_status(result, "enqueued")
    _set_result_errors(result, ())
    return result


@attrs.frozen(kw_only=True, slots=True)
class TrackResult:
    """The service's answer to one ingest request."""

    results: tuple[RecordResult, ...] = ()
    triggered_limits: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, slots=True)
class ServiceConfig:
    """A config from ``GET /configs``: how to extract usage, and the manual usage schema."""

    config_id: str
    api_id: str
    handling_config: dict[str, Any] | None = None
    manual_usage_schema: dict[str, Any] | None = None


@attrs.frozen(kw_only=True, slots=True)
class ConfigsResponse:
    """The answer of ``GET /configs``."""

    service_configs: tuple[ServiceConfig, ...] = ()
    triggered_limits: dict[str, Any] = attrs.field(factory=dict)


def _structure_result(value: Any, _: type) -> RecordResult:
    if not isinstance(value, Mapping):
        raise TypeError(f"a record result must be an object, got {type(value).__name__}")
    errors = value.get("errors")
    if errors is None:
        errs: tuple[str, ...] = ()
    elif isinstance(errors, str):
        errs = (errors,)
    elif isinstance(errors, Sequence):
        errs = tuple(str(e) for e in errors)
    else:
        errs = (str(errors),)
    return RecordResult(
        response_id=str(value.get("response_id", "")),
        status=str(value.get("status", "")),
        errors=errs,
    )


converter.register_structure_hook(RecordResult, _structure_result)
converter.register_unstructure_hook(TrackRecord, TrackRecord.wire)
converter.register_unstructure_hook(UsageRecord, UsageRecord.wire)


# -- configs: strict shapes, and errors that name the field at fault ---------------------------
#
# cattrs alone would turn {"config_id": 7} into "7", iterate a string given for a list, and
# report a string given for an object as "While structuring ServiceConfig (1 sub-exception)".
# These hooks check each JSON shape; structure_config() turns the failures into one
# ConfigError naming every path at fault.


class _ShapeError(TypeError):
    """A value of the wrong JSON type; the message is what the user reads."""


def _type_name(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _strict_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise _ShapeError(f"expected a string, got {_type_name(value)}")
    return value


def _object(value: object, _: type) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _ShapeError(f"expected an object, got {_type_name(value)}")
    return {str(k): v for k, v in value.items()}


def _object_first(base: Callable[[Any, type], _T]) -> Callable[[Any, type], _T]:
    def structure(value: Any, cls: type) -> _T:
        if not isinstance(value, Mapping):
            raise _ShapeError(f"expected an object, got {_type_name(value)}")
        return base(value, cls)

    return structure


def _config_list(value: Any, cls: type) -> tuple[ServiceConfig, ...]:
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise _ShapeError(f"expected a list, got {_type_name(value)}")
    configs: list[ServiceConfig] = []
    errors: list[Exception] = []
    for index, item in enumerate(value):
        try:
            configs.append(converter.structure(item, ServiceConfig))
        except Exception as exc:  # every fault is reported, each under its index
            note = IterableValidationNote(f"Structuring item @ index {index}", index, ServiceConfig)
            exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
            errors.append(exc)
    if errors:
        raise IterableValidationError("While structuring the configs", errors, cls)
    return tuple(configs)


converter.register_structure_hook(str, _strict_str)
converter.register_structure_hook_func(lambda t: t == dict[str, Any], _object)
converter.register_structure_hook_func(lambda t: t == tuple[ServiceConfig, ...], _config_list)
# Built after the hooks above, which the generated functions look up when they are made.
for _cls in (ServiceConfig, ConfigsResponse):
    converter.register_structure_hook(_cls, _object_first(make_dict_structure_fn(_cls, converter)))


def _describe(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, _ShapeError):
        return str(exc)
    return format_exception(exc, type_)


def _at(line: str) -> str:
    # transform_error() gives "problem @ $.path.to[0].field"; we say "path.to[0].field: problem".
    problem, _, path = line.rpartition(" @ ")
    path = path.removeprefix("$").removeprefix(".")
    return f"{path}: {problem}" if path else problem


_Config = TypeVar("_Config", ServiceConfig, ConfigsResponse)


def structure_config(data: Any, cls: type[_Config], *, where: str) -> _Config:
    """Structure ``data`` as ``cls``, or raise [`ConfigError`][aicm.ConfigError] naming every field
    at fault.

    The message reads ``<where>: handling_config: expected an object, got str``, one
    ``path: problem`` per fault, joined by ``; ``.
    """
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError, AttributeError) as exc:
        problems = [_at(line) for line in transform_error(exc, format_exception=_describe)]
        raise ConfigError(f"{where}: {'; '.join(problems)}") from exc
