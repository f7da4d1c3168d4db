"""Every error aicm raises (layer 1, pure). The tree, with what raises each::

    AicmError
    ├── ConfigError (ValueError)          settings, INI file, handling config malformed
    │   ├── MissingApiKeyError            no API key where one is needed
    │   └── HandlingConfigError           a handling config that cannot be used
    ├── UnknownConfigError (LookupError)  a config_id / api_id the service does not know
    ├── RecordError (ValueError)          a usage record rejected before it is queued
    │   ├── NotSerializableError (TypeError)  a value JSON cannot carry
    │   ├── NonFiniteNumberError          NaN, Infinity, or beyond a double's range
    │   ├── InvalidKeyError (TypeError)   a mapping key that is not a string
    │   ├── InvalidTimestampError         a timestamp that cannot be read
    │   └── RecordTooLargeError           a record over the size limit
    ├── SchemaError (ValueError)          a manual_usage_schema that cannot be parsed
    ├── UsageValidationError (ValueError) usage that breaks a manual_usage_schema
    ├── UsageLimitExceeded                a usage limit the service triggered applies
    ├── QueueFullError                    the delivery queue is full (policy ``raise``)
    ├── QueueStoreError                   the SQLite queue file cannot be used
    ├── DeliveryError                     records that could not be delivered
    │   ├── FlushTimeoutError (TimeoutError)  flush/close deadline passed with records left
    │   └── ClosedError (RuntimeError)    the tracker was closed; nothing more is accepted
    ├── TransportError (ConnectionError)  no HTTP answer: connect, read, timeout
    ├── UnexpectedAnswerError (ValueError) a 2xx answer that is not what the API promises
    └── APIStatusError                    the service answered with an error status
        ├── ServiceRedirectError          3xx: ``api_base`` is wrong; delivery pauses
        ├── AuthenticationError           401 / 403: delivery pauses, records are kept
        ├── RateLimitedError              429, with ``retry_after``
        ├── ServerError                   5xx, 408, 425
        └── ClientRequestError            other 4xx: permanent for the batch
            └── NotFoundError (LookupError)   404: no such customer, webhook, event, ...

Foreign exceptions (httpx, sqlite3, ExceptionGroup) never leave a public method
unwrapped: they are chained as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "APIStatusError",
    "AicmError",
    "AuthenticationError",
    "ClientRequestError",
    "ClosedError",
    "ConfigError",
    "DeliveryError",
    "FlushTimeoutError",
    "HandlingConfigError",
    "InvalidKeyError",
    "InvalidTimestampError",
    "MissingApiKeyError",
    "NonFiniteNumberError",
    "NotFoundError",
    "NotSerializableError",
    "QueueFullError",
    "QueueStoreError",
    "RateLimitedError",
    "RecordError",
    "RecordTooLargeError",
    "SchemaError",
    "ServerError",
    "ServiceRedirectError",
    "TransportError",
    "UnexpectedAnswerError",
    "UnknownConfigError",
    "UsageLimitExceeded",
    "UsageValidationError",
]


def shown(value: object) -> str:
    """``repr(value)`` for an error message, which must not fail while it is being built:
    an integer too long to print whole (Python refuses past 4300 digits) is named by its
    size, and a value whose ``repr`` raises (holding such an integer, or a caller's
    object with a broken ``__repr__``) by its type."""
    if type(value) is int and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    try:
        return repr(value)
    except Exception:
        return f"a {type(value).__name__} that cannot be printed"


class AicmError(Exception):
    """The root of every error aicm raises."""


class ConfigError(AicmError, ValueError):
    """A setting, the INI file or a config is malformed.

    ``path`` and ``line`` name the file and line when the problem is in a file.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class MissingApiKeyError(ConfigError):
    """No API key was given, found in ``AICM_API_KEY``, or usable for this call."""


class HandlingConfigError(ConfigError):
    """A handling config cannot be used; ``config_id`` and ``field`` say where."""

    def __init__(self, message: str, *, config_id: str | None = None, field: str | None = None):
        self.config_id = config_id
        self.field = field
        parts = []
        if config_id is not None:
            parts.append(f"config {config_id!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class UnknownConfigError(AicmError, LookupError):
    """The service has no config with the given ``config_id`` or ``api_id``."""


class RecordError(AicmError, ValueError):
    """A usage record was rejected before anything was queued; ``field`` names where."""

    def __init__(self, message: str, *, field: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class NotSerializableError(RecordError, TypeError):
    """A value cannot be carried as JSON (an arbitrary object, bytes, ...)."""


class NonFiniteNumberError(RecordError):
    """A number is NaN, infinite, or (a Decimal) beyond what a JSON double holds."""


class InvalidKeyError(RecordError, TypeError):
    """A mapping key is not a string."""


class InvalidTimestampError(RecordError):
    """A timestamp is neither a datetime, an ISO-8601 string nor an epoch number."""


class RecordTooLargeError(RecordError):
    """A record's JSON form is over the size limit (``max_record_bytes``)."""

    def __init__(self, message: str, *, field: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message, field=field)


class SchemaError(AicmError, ValueError):
    """A ``manual_usage_schema`` or type string cannot be parsed."""


class UsageValidationError(AicmError, ValueError):
    """Usage does not match the config's ``manual_usage_schema``.

    ``errors`` maps a field to what is wrong with it; ``missing_fields`` and
    ``extra_fields`` list the fields absent and not allowed. Nothing was queued.
    """

    def __init__(
        self,
        errors: Mapping[str, str],
        *,
        missing_fields: Sequence[str] = (),
        extra_fields: Sequence[str] = (),
    ) -> None:
        self.errors = dict(errors)
        self.missing_fields = list(missing_fields)
        self.extra_fields = list(extra_fields)
        parts = [f"{field}: {msg}" for field, msg in self.errors.items()]
        if self.missing_fields:
            parts.append("missing fields: " + ", ".join(self.missing_fields))
        if self.extra_fields:
            parts.append("unexpected fields: " + ", ".join(self.extra_fields))
        super().__init__("usage does not match the schema: " + "; ".join(parts))


class UsageLimitExceeded(AicmError):
    """A usage limit the service triggered covers this call or record.

    ``limit_id`` and ``limit_message`` name the first limit that applies (``limits``
    holds every one, as [`aicm.TriggeredLimit`][aicm.TriggeredLimit]); ``matched`` says what
    matched it (``service_key``, ``customer_key``). Raised before the provider call by a
    wrapped client, so nothing was spent; raised by ``Tracker.track`` after its record
    was handed to delivery, with that record's ``response_id``.
    """

    def __init__(
        self,
        message: str,
        *,
        limit_id: str,
        limit_message: str | None = None,
        matched: Mapping[str, str | None] | None = None,
        limits: Sequence[object] = (),
        response_id: str | None = None,
    ) -> None:
        self.limit_id = limit_id
        self.limit_message = limit_message
        self.matched = dict(matched or {})
        self.limits = tuple(limits)
        self.response_id = response_id
        super().__init__(message)


class QueueFullError(AicmError):
    """The delivery queue is full and the on-full policy is ``raise``."""


class QueueStoreError(AicmError):
    """The SQLite queue file cannot be opened, read or written."""


class DeliveryError(AicmError):
    """Records could not be delivered; ``pending`` counts those left.

    ``response_ids`` names the records whose fate is unknown when the service may have
    stored them without its answer coming back (IMMEDIATE delivery): tracking them again
    with these same ids is safe, the service counts a repeated ``response_id`` once.
    """

    def __init__(
        self, message: str, *, pending: int = 0, response_ids: tuple[str, ...] = ()
    ) -> None:
        self.pending = pending
        self.response_ids = response_ids
        super().__init__(message)


class FlushTimeoutError(DeliveryError, TimeoutError):
    """``flush``/``close`` reached its deadline with records still pending."""


class ClosedError(DeliveryError, RuntimeError):
    """The tracker (or its delivery engine) is closed and accepts no more records."""


class TransportError(AicmError, ConnectionError):
    """The service could not be reached or did not answer (connect, read, timeout)."""


class UnexpectedAnswerError(AicmError, ValueError):
    """The service answered 2xx with a body that is not what its API promises."""


class APIStatusError(AicmError):
    """The service answered with an error status.

    ``status_code`` and ``body`` (text, truncated) say what it answered; ``retry_after``
    is the delay it asked for in seconds, if any.
    """

    #: the service's own explanation (its JSON error's ``detail``), when it gave one
    detail: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str = "",
        retry_after: float | None = None,
        results: Sequence[object] = (),
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.retry_after = retry_after
        #: per-record results the service sent with the error, when it sent any
        self.results = tuple(results)
        super().__init__(f"HTTP {status_code}: {message}")


class ServiceRedirectError(APIStatusError):
    """3xx: the service sent the request elsewhere (``location``, the ``Location`` header).

    aicm never follows a redirect (a POST must not silently become a GET, nor the key go
    to another host): ``aicm_api_base`` / ``AICM_API_BASE`` must name where the service
    answers. No record is at fault, so queued records are kept, as for a refused key.
    """

    def __init__(
        self, message: str, *, status_code: int, location: str | None = None, body: str = ""
    ) -> None:
        self.location = location
        super().__init__(message, status_code=status_code, body=body)


class AuthenticationError(APIStatusError):
    """401 or 403: the API key was refused. Queued records are kept, not dropped."""


class RateLimitedError(APIStatusError):
    """429: the service asked us to slow down (see ``retry_after``)."""


class ServerError(APIStatusError):
    """5xx, 408 or 425: a transient failure on the service's side."""


class ClientRequestError(APIStatusError):
    """Another 4xx: the request is wrong and retrying it as is will not help."""


class NotFoundError(ClientRequestError, LookupError):
    """404: the customer, webhook, usage event, ... asked for does not exist."""
