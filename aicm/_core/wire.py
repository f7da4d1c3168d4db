"""The ingest wire contract, as the service applies it (layer 1, pure): no sockets, no SQLite.

The request body of ``/track`` and ``/track-usage`` (``{"tracked": [...]}``,
``{"usage_records": [...]}``, at most 1000 records), the per-record checks the service
makes, the dedup key, the per-record results and the answer, and the ``GET /configs``
document with its ETag. The local collector and the in-memory fake of
`aicm.testing` both answer through these functions, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

import attrs

from .exceptions import ConfigError
from .jsonplain import dumps_bytes, dumps_canonical, loads

__all__ = [
    "ACCEPTED_STATUSES",
    "BATCH_KEYS",
    "KINDS",
    "MAX_BATCH_RECORDS",
    "BadRequest",
    "BatchPlan",
    "Kind",
    "check_track_record",
    "check_usage_record",
    "configs_document",
    "dedup_key",
    "etag_for",
    "etag_matches",
    "is_legacy_track_record",
    "json_type",
    "normalise_configs",
    "parse_batch",
    "plan_batch",
    "record_moment",
    "usage_service",
]

Kind = Literal["track", "track_usage"]
KINDS: tuple[Kind, ...] = ("track", "track_usage")
#: The wire contract's limit on records per request.
MAX_BATCH_RECORDS = 1000
#: The JSON key holding the records, per kind of batch.
BATCH_KEYS: Mapping[Kind, str] = {"track": "tracked", "track_usage": "usage_records"}
SUCCESS_STATUS = "queued"
#: The per-record statuses that mean the service accepted the record.
ACCEPTED_STATUSES = ("queued", "completed")
REJECTED_MESSAGE = "response_id rejected by the collector (fault injection: reject_response_ids)"


class BadRequest(Exception):
    """A request the collector refuses as a whole; ``status_code`` and ``detail`` say why."""

    def __init__(self, detail: str, *, status_code: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (``object``, ``array``, ...), for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_batch(body: bytes, kind: Kind) -> list[Any]:
    """The records of a ``/track`` or ``/track-usage`` body; ``BadRequest`` if malformed."""
    key = BATCH_KEYS[kind]
    try:
        document = loads(body)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest(
            f'request body must be a JSON object {{"{key}": [...]}}, got {json_type(document)}'
        )
    if key not in document:
        raise BadRequest(f'request body must have the key "{key}" holding a list of records')
    records = document[key]
    if not isinstance(records, list):
        raise BadRequest(f'"{key}" must be a list of records, got {json_type(records)}')
    if len(records) > MAX_BATCH_RECORDS:
        raise BadRequest(
            f"too many records: {len(records)} in one request, at most {MAX_BATCH_RECORDS}",
            status_code=413,
        )
    return records


def _check_timestamp(value: str, *, epoch: bool = False) -> str | None:
    if epoch and _is_epoch_seconds(value):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None and value[-1:] in ("Z", "z"):  # Python 3.10 reads no "Z"
        try:
            moment = datetime.fromisoformat(value[:-1] + "+00:00")
        except ValueError:
            pass
    if moment is None:
        if epoch:
            return f"field 'timestamp' is neither ISO-8601 nor epoch seconds: {value!r}"
        return f"field 'timestamp' is not an ISO-8601 date-time: {value!r}"
    if moment.tzinfo is None:
        return f"field 'timestamp' has no UTC offset: {value!r}"
    return None


def _is_epoch_seconds(value: str) -> bool:
    # The service's own SDK sends str(datetime.timestamp()): "1733590000.123456".
    try:
        number = float(value)
    except ValueError:
        return False
    return math.isfinite(number) and 0 <= number < 253402300800  # before year 10000


def record_moment(timestamp: Any) -> datetime | None:
    """When a stored record says its event happened (UTC): ISO-8601 or epoch seconds."""
    if not isinstance(timestamp, str):
        return None
    if _is_epoch_seconds(timestamp):
        return datetime.fromtimestamp(float(timestamp), tz=timezone.utc)
    text = timestamp[:-1] + "+00:00" if timestamp[-1:] in ("Z", "z") else timestamp
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(timezone.utc)


_Field = tuple[str, type, str]  # name, JSON type, how a message names it
# The current /track record (the service's own SDK sends it): no api_id, a
# "vendor::model" service_key, customer_key, a timestamp in ISO-8601 or epoch seconds.
_CURRENT_REQUIRED: tuple[_Field, ...] = (
    ("service_key", str, "a string"),
    ("response_id", str, "a string"),
    ("timestamp", str, "a string"),
    ("payload", dict, "an object"),
)
_CONTEXT: _Field = ("context", dict, "an object")
_CURRENT_OPTIONAL: tuple[_Field, ...] = (("customer_key", str, "a string"), _CONTEXT)
# The older /track record: api_id, a bare service_key, client_customer_key.
_LEGACY_REQUIRED: tuple[_Field, ...] = (("api_id", str, "a string"), *_CURRENT_REQUIRED)
_LEGACY_OPTIONAL: tuple[_Field, ...] = (("client_customer_key", str, "a string"), _CONTEXT)
_LEGACY_FIELDS = frozenset(name for name, _, _ in _LEGACY_REQUIRED + _LEGACY_OPTIONAL)
_CURRENT_FIELDS = frozenset(name for name, _, _ in _CURRENT_REQUIRED + _CURRENT_OPTIONAL)

# /track-usage records are free-form, but these fields, when present, are strings (or null).
_USAGE_STRING_FIELDS = (
    "config_id",
    "service_id",
    "timestamp",
    "client_customer_key",
    "base_url",
)


def is_legacy_track_record(record: Mapping[str, Any]) -> bool:
    """Whether a ``/track`` record is the older form: it names an ``api_id``."""
    return "api_id" in record


def check_track_record(record: Any) -> list[str]:
    """Every problem of one ``/track`` record against the contract; empty when it is fine.

    A record with an ``api_id`` is checked as the older record, any other as the current
    one (``service_key`` ``"vendor::model"``, ``customer_key``).
    """
    # The fast path: a well-formed record (nearly all of them) costs a few type checks.
    if type(record) is dict and len(record) <= len(_LEGACY_FIELDS):
        get = record.get
        api_id, service_key, response_id = get("api_id"), get("service_key"), get("response_id")
        timestamp, context = get("timestamp"), get("context")
        legacy = api_id is not None
        customer = get("client_customer_key") if legacy else get("customer_key")
        if (
            (not legacy or (type(api_id) is str and api_id))
            and type(service_key) is str
            and service_key
            and (legacy or "::" in service_key)
            and type(response_id) is str
            and response_id
            and type(timestamp) is str
            and type(get("payload")) is dict
            and (customer is None or type(customer) is str)
            and (context is None or type(context) is dict)
            and (_LEGACY_FIELDS if legacy else _CURRENT_FIELDS).issuperset(record)
            and _check_timestamp(timestamp, epoch=not legacy) is None
        ):
            return []
    return _track_record_problems(record)


def _track_record_problems(record: Any) -> list[str]:
    if not isinstance(record, dict):
        return [f"record must be a JSON object, got {json_type(record)}"]
    legacy = is_legacy_track_record(record)
    required, optional, fields = (
        (_LEGACY_REQUIRED, _LEGACY_OPTIONAL, _LEGACY_FIELDS)
        if legacy
        else (_CURRENT_REQUIRED, _CURRENT_OPTIONAL, _CURRENT_FIELDS)
    )
    errors: list[str] = []
    for name, type_, type_name in required:
        value = record.get(name)
        if value is None:
            errors.append(
                f"missing field '{name}'" if name not in record else f"field '{name}' is null"
            )
        elif not isinstance(value, type_):
            errors.append(f"field '{name}' must be {type_name}, got {json_type(value)}")
        elif type_ is str and not value:
            errors.append(f"field '{name}' must not be empty")
        elif name == "timestamp":
            problem = _check_timestamp(str(value), epoch=not legacy)
            if problem:
                errors.append(problem)
        elif name == "service_key" and not legacy and "::" not in str(value):
            errors.append(
                f"field 'service_key' must be 'vendor::model', got {value!r} (a record"
                " without api_id is the current record)"
            )
    for name, type_, type_name in optional:
        value = record.get(name)
        if value is not None and not isinstance(value, type_):
            errors.append(f"field '{name}' must be {type_name} or null, got {json_type(value)}")
    if len(record) > len(fields) or not fields.issuperset(record):
        errors.extend(f"unexpected field '{name}'" for name in record if name not in fields)
    return errors


def check_usage_record(record: Any) -> list[str]:
    """Every problem of one ``/track-usage`` record; empty when it is fine."""
    if not isinstance(record, dict):
        return [f"record must be a JSON object, got {json_type(record)}"]
    errors: list[str] = []
    response_id = record.get("response_id")
    if response_id is None:
        errors.append(
            "missing field 'response_id'"
            if "response_id" not in record
            else "field 'response_id' is null"
        )
    elif not isinstance(response_id, str):
        errors.append(f"field 'response_id' must be a string, got {json_type(response_id)}")
    elif not response_id:
        errors.append("field 'response_id' must not be empty")
    for name in _USAGE_STRING_FIELDS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            errors.append(f"field '{name}' must be a string or null, got {json_type(value)}")
    return errors


def usage_service(record: Mapping[str, Any]) -> str:
    """The service a ``/track-usage`` record belongs to, for dedup: service_id, else config_id."""
    service = record.get("service_id")
    if service is None:
        service = record.get("config_id")
    return service if isinstance(service, str) else ""


def dedup_key(kind: Kind, record: Mapping[str, Any]) -> tuple[str, str]:
    """What makes two checked records the same event: (service, response_id).

    The service is the ``service_key`` of a ``/track`` record, the ``service_id`` (else
    ``config_id``) of a ``/track-usage`` one. The store keeps these pairs to dedup on.
    """
    service = record["service_key"] if kind == "track" else usage_service(record)
    return service, record["response_id"]


@attrs.frozen
class BatchPlan:
    """What to do with one batch: the answer's results and which records to store."""

    status_code: int
    results: list[dict[str, Any]]
    to_store: list[dict[str, Any]]
    errors: int
    rejected: int

    def body(self, triggered_limits: Mapping[str, Any] | None = None) -> bytes:
        """The answer's JSON body, carrying ``triggered_limits`` (``{}``: none)."""
        return dumps_bytes({"results": self.results, "triggered_limits": triggered_limits or {}})


def plan_batch(
    records: Sequence[Any],
    kind: Kind,
    *,
    reject_ids: Collection[str] = frozenset(),
    reject_status: int = 202,
) -> BatchPlan:
    """Check every record and decide the per-record results, in order.

    Valid records are to be stored and answered ``queued`` (a duplicate too: it is the
    same event); invalid ones get ``error`` with their problems. Records whose
    ``response_id`` is in ``reject_ids`` get ``error`` too; if ``reject_status`` is not
    2xx and any was rejected, nothing is stored and the batch answers ``reject_status``.
    """
    check = check_track_record if kind == "track" else check_usage_record
    results: list[dict[str, Any]] = []
    to_store: list[dict[str, Any]] = []
    errors = rejected = 0
    for record in records:
        problems = check(record)
        if not problems:  # a checked record is a dict with a string response_id
            response_id = record["response_id"]
            if not reject_ids or response_id not in reject_ids:
                to_store.append(record)
                results.append({"response_id": response_id, "status": SUCCESS_STATUS})
                continue
            problems = [REJECTED_MESSAGE]
            rejected += 1
        else:
            response_id = record.get("response_id") if isinstance(record, dict) else None
            if not isinstance(response_id, str):
                response_id = None
        errors += 1
        results.append({"response_id": response_id, "status": "error", "errors": problems})
    status_code = 202
    if rejected:
        status_code = reject_status
        if not 200 <= reject_status <= 299:
            to_store = []
    return BatchPlan(status_code, results, to_store, errors, rejected)


def normalise_configs(document: Any, *, source: str = "configs") -> list[dict[str, Any]]:
    """The service configs from ``{"service_configs": [...]}`` or a bare list.

    Each config must be an object with string ``config_id`` and ``api_id``;
    ``handling_config`` defaults to ``{}`` and ``manual_usage_schema`` to ``None``.
    Raises `ConfigError` (a ``ValueError``) naming the first
    problem.
    """
    if isinstance(document, dict):
        if "service_configs" not in document:
            raise ConfigError(f'{source}: an object must have the key "service_configs"')
        document = document["service_configs"]
    if not isinstance(document, list):
        raise ConfigError(
            f"{source}: expected a list of service configs, got {json_type(document)}"
        )
    configs: list[dict[str, Any]] = []
    for index, config in enumerate(document):
        if not isinstance(config, Mapping):
            raise ConfigError(f"{source}[{index}]: a config must be an object")
        for name in ("config_id", "api_id"):
            if not isinstance(config.get(name), str) or not config[name]:
                raise ConfigError(f"{source}[{index}]: '{name}' must be a non-empty string")
        handling = config.get("handling_config", {})
        if handling is not None and not isinstance(handling, dict):
            raise ConfigError(f"{source}[{index}]: 'handling_config' must be an object")
        configs.append(
            {
                **config,
                "handling_config": handling if handling is not None else {},
                "manual_usage_schema": config.get("manual_usage_schema"),
            }
        )
    return configs


def configs_document(configs: Sequence[Mapping[str, Any]], api_id: str | None) -> bytes:
    """The ``GET /configs`` body, optionally only the configs of ``api_id``; canonical bytes."""
    chosen = [c for c in configs if api_id is None or c["api_id"] == api_id]
    return dumps_canonical({"service_configs": chosen, "triggered_limits": {}})


def etag_for(body: bytes) -> str:
    """A strong ETag for a body: the quoted start of its SHA-256."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False
