"""Turn a tracked call or a finished stream into usage payloads by handling configs (layer 1, pure).

:class:`UniversalExtractor` compiles every config once: paths become step tuples and each
``payload_mapping`` entry a small getter, so a call costs a dict lookup per config plus the
getters it needs. Nothing here does I/O or raises for the data it meets: a path that does
not resolve is left out of the payload (logged at debug on ``aicm.extractor``), a value JSON
cannot carry is left out with a warning. Only a malformed config raises, when the extractor
is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import ParseResult, SplitResult

import attrs

from .exceptions import NotSerializableError, RecordError
from .handling import (
    FieldPath,
    HandlingConfig,
    PayloadSource,
    ResponseField,
    SourceKind,
    is_credential_name,
    is_private_name,
    refused_segment,
)
from .jsonplain import JSONValue, to_plain
from .models import ServiceConfig, utc_now_iso

__all__ = [
    "MISSING",
    "UniversalExtractor",
    "accumulate_stream",
    "is_http_object",
    "resolve_path",
]

logger = logging.getLogger("aicm.extractor")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final[Any] = _Missing()
"""What :func:`resolve_path` returns when a path does not resolve."""

_MAX_CACHE = 4096
# REST keys carry ids (``GET /v2/sessions/abc``), so per-key caches are bounded.
_URL_TYPE_NAMES: Final = frozenset({"URL", "Url", "AnyUrl", "AnyHttpUrl", "HttpUrl", "URLPath"})
# The SDKs' "argument not given" sentinels: absent, not data.
_SENTINEL_TYPE_NAMES: Final = frozenset({"NotGiven", "Omit"})
_USAGE_STEPS: FieldPath = (("usage", None),)
_ID_STEPS: FieldPath = (("id", None),)
_USAGE_FIELD = ResponseField(key="usage", path="usage", steps=_USAGE_STEPS)
# Stream events that wrap a whole message/response (anthropic ``message_start`` and the
# helper's ``message_stop``, openai's ``ChunkEvent`` and Responses ``response.completed``).
_WRAPPER_ATTRS: Final = ("message", "chunk", "response")

Getter = Callable[["_Call", Any, Any], Any]


def resolve_path(obj: Any, steps: FieldPath) -> Any:
    """Walk ``steps`` through mappings (by key), lists (by index) and public attributes.

    Returns :data:`MISSING` when a step cannot be taken; ``None`` part-way is missing too.
    """
    cur = obj
    for key, index in steps:
        if cur is None:
            return MISSING
        t = type(cur)
        if t is dict:
            cur = cur.get(key, MISSING)
        elif index is not None and (t is list or t is tuple):
            try:
                cur = cur[index]
            except IndexError:
                return MISSING
        else:
            cur = _step_other(cur, key, index)
        if cur is MISSING:
            return MISSING
    return cur


def _step_other(cur: Any, key: str, index: int | None) -> Any:
    try:
        if isinstance(cur, Mapping):
            return cur.get(key, MISSING)
        if index is not None and isinstance(cur, Sequence) and not isinstance(cur, (str, bytes)):
            try:
                return cur[index]
            except IndexError:
                return MISSING
        if key.startswith("_"):
            # Configs come from the service: they read public data only, never private state.
            return MISSING
        return getattr(cur, key, MISSING)
    except Exception:  # a property that raises is a value we cannot read, not our failure
        return MISSING


def _plain(value: Any, field: str, config_id: str, source: str = "", *, read: bool = True) -> Any:
    """``value`` as plain JSON data, or MISSING (logged) when JSON cannot carry it.

    For a value the config ``read`` (from the call's arguments or its answer), an HTTP
    message, header or cookie object is never delivered (MISSING), and credential keys
    (``authorization``, ``api_key``, ``headers``...) are left out of the mappings inside
    it: both are logged once per config and field. The caller's own tags (``context``)
    are sent as given.
    """
    t = type(value)
    if t is str or t is int or t is bool:
        return value
    dropped: list[str] | None = [] if read else None
    try:
        plain = _fast_plain(value, 0, dropped)
    except Exception:  # _NotFast, or a model_dump() that raised: to_plain names the problem
        dropped = [] if read else None
        plain = _slow_plain(value, field, config_id, dropped)
    if plain is _HTTP_OBJECT:
        _warn_once(
            config_id,
            source or field,
            f"the value is an HTTP {type(value).__name__} object, which is never sent; "
            "left out of the payload",
        )
        return MISSING
    if dropped:
        names = ", ".join(sorted({repr(k) for k in dropped}))
        _warn_once(
            config_id,
            source or field,
            f"left out the credential or transport key(s) {names} found inside the value",
        )
    return plain


def _slow_plain(value: Any, field: str, config_id: str, dropped: list[str] | None) -> Any:
    if dropped is not None and _holds_http_object(value, 0):
        return _HTTP_OBJECT
    t = type(value)
    if t is not tuple and isinstance(value, (ParseResult, SplitResult)):
        return value.geturl()
    try:
        plain: Any = to_plain(value, field=field)
    except NotSerializableError as first:
        if type(value).__name__ in _SENTINEL_TYPE_NAMES:
            return MISSING
        try:
            plain = to_plain(_urls_to_text(value, 0), field=field)
        except RecordError as exc:
            logger.warning("config %r: %s; left out of the payload", config_id, exc)
            return MISSING
        except Exception:  # the caller's object raised again while URLs were looked for
            logger.warning("config %r: %s; left out of the payload", config_id, first)
            return MISSING
    except RecordError as exc:
        logger.warning("config %r: %s; left out of the payload", config_id, exc)
        return MISSING
    if dropped is not None:
        _strip_credentials(plain, dropped)
    return plain


# HTTP messages, headers and cookie jars: a config never delivers one, whatever its path
# is called (``(module root, class name)`` anywhere in the value type's MRO).
_HTTP_TYPES: Final = frozenset(
    {
        ("aiohttp", "ClientRequest"),
        ("aiohttp", "ClientResponse"),
        ("anthropic", "APIResponse"),
        ("anthropic", "AsyncAPIResponse"),
        ("anthropic", "LegacyAPIResponse"),
        ("http", "CookieJar"),
        ("http", "HTTPMessage"),
        ("http", "HTTPResponse"),
        ("httpx", "Cookies"),
        ("httpx", "Headers"),
        ("httpx", "Request"),
        ("httpx", "Response"),
        ("multidict", "CIMultiDict"),
        ("multidict", "CIMultiDictProxy"),
        ("openai", "APIResponse"),
        ("openai", "AsyncAPIResponse"),
        ("openai", "LegacyAPIResponse"),
        ("requests", "CaseInsensitiveDict"),
        ("requests", "PreparedRequest"),
        ("requests", "Request"),
        ("requests", "RequestsCookieJar"),
        ("requests", "Response"),
        ("urllib3", "HTTPHeaderDict"),
        ("urllib3", "HTTPResponse"),
    }
)
_HTTP_OBJECT: Final[Any] = object()
_HTTP_VERDICTS: dict[type, bool] = {}
_verdict_lock = threading.Lock()


def _is_http_type(t: type) -> bool:
    verdict = _HTTP_VERDICTS.get(t)
    if verdict is None:
        verdict = any(
            (str(getattr(c, "__module__", "")).partition(".")[0], c.__name__) in _HTTP_TYPES
            for c in getattr(t, "__mro__", (t,))
        )
        with _verdict_lock:
            if len(_HTTP_VERDICTS) >= _MAX_CACHE:
                _HTTP_VERDICTS.clear()
            _HTTP_VERDICTS[t] = verdict
    return verdict


def is_http_object(value: Any) -> bool:
    """True when ``value`` is an HTTP message, header mapping or cookie jar: never sent."""
    return _is_http_type(type(value))


def _holds_http_object(value: Any, depth: int) -> bool:
    """True when ``value`` is, or holds in its mappings, lists and dataclasses, an HTTP object."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None or depth > 64:
        return False
    if _is_http_type(t):
        return True
    try:
        if isinstance(value, Mapping):
            return any(_holds_http_object(v, depth + 1) for v in value.values())
        if isinstance(value, (list, tuple, set, frozenset)):
            return any(_holds_http_object(v, depth + 1) for v in value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return any(
                _holds_http_object(getattr(value, f.name, None), depth + 1)
                for f in dataclasses.fields(value)
            )
    except Exception:  # an odd container: to_plain will judge it
        return False
    return False


def _strip_credentials(plain: Any, dropped: list[str]) -> None:
    """Delete credential keys from the mappings of ``plain``, in place."""
    if type(plain) is dict:
        for k in [k for k in plain if is_credential_name(k)]:
            dropped.append(k)
            del plain[k]
        for v in plain.values():
            if type(v) is dict or type(v) is list:
                _strip_credentials(v, dropped)
    elif type(plain) is list:
        for v in plain:
            if type(v) is dict or type(v) is list:
                _strip_credentials(v, dropped)


def _warn_once(config_id: str, path: str, message: str) -> None:
    """Log ``message`` at WARNING the first time ``config_id`` and ``path`` meet it."""
    key = (config_id, path, message)
    with _verdict_lock:
        if key in _WARNED:
            return
        if len(_WARNED) >= _MAX_CACHE:
            _WARNED.clear()
        _WARNED.add(key)
    logger.warning("config %r: path %r: %s", config_id, path, message)


_WARNED: set[tuple[str, str, str]] = set()


class _NotFast(Exception):
    """The value needs :func:`to_plain`'s full treatment (or its error message)."""


def _fast_plain(value: Any, depth: int, dropped: list[str] | None) -> Any:
    """A fresh plain copy of JSON-shaped data and pydantic models, else :class:`_NotFast`.

    ``to_plain`` builds a path string for every value it visits, which costs ~15 us for an
    openai usage block; this handles the common shapes without it and leaves everything
    else, and every error, to ``to_plain``. Scalars are checked inline: a call per leaf
    would double the cost. With a ``dropped`` list, credential keys are left out (and
    listed there).
    """
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        if value - value == 0.0:  # false for NaN and the infinities
            return value
        raise _NotFast
    if depth > 32:
        raise _NotFast
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _NotFast
            if dropped is not None and is_credential_name(k):
                dropped.append(k)
                continue
            tv = type(v)
            if tv is str or tv is int or tv is bool or v is None or (tv is float and v - v == 0.0):
                out[k] = v
            else:
                out[k] = _fast_plain(v, depth + 1, dropped)
        return out
    if t is list or t is tuple:
        return [_fast_plain(v, depth + 1, dropped) for v in value]
    if hasattr(t, "__pydantic_serializer__"):
        return _fast_plain(value.model_dump(mode="json"), depth + 1, dropped)
    raise _NotFast


def _urls_to_text(value: Any, depth: int) -> Any:
    """A copy of ``value`` with URL objects (httpx, yarl, pydantic, urllib) as strings."""
    if depth > 64:
        return value
    if isinstance(value, (ParseResult, SplitResult)):
        return value.geturl()
    if type(value).__name__ in _URL_TYPE_NAMES:
        return str(value)
    if type(value).__name__ in _SENTINEL_TYPE_NAMES:
        return None
    if isinstance(value, Mapping):
        return {k: _urls_to_text(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_urls_to_text(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _urls_to_text(getattr(value, f.name), depth + 1)
            for f in dataclasses.fields(value)
        }
    return value


_SIGNATURES: dict[Any, dict[str, int]] = {}


def _positional_names(func: Callable[..., Any]) -> dict[str, int]:
    """Parameter name -> position for ``func``'s positional parameters, cached.

    A ``*args`` parameter maps to ``-(position + 1)``: it takes the rest of the arguments.
    """
    # Bound methods are new objects on every attribute access; their function is not.
    underlying = getattr(func, "__func__", None)
    key: Any = (underlying, getattr(func, "__self__", None) is not None) if underlying else func
    try:
        hit = _SIGNATURES.get(key)
    except TypeError:  # an unhashable callable: inspect it every time
        return _inspect_positional(func)
    if hit is None:
        hit = _inspect_positional(func)
        if len(_SIGNATURES) >= _MAX_CACHE:
            _SIGNATURES.clear()
        _SIGNATURES[key] = hit
    return hit


def _inspect_positional(func: Callable[..., Any]) -> dict[str, int]:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return {}
    names: dict[str, int] = {}
    for i, p in enumerate(params):
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names[p.name] = i
        elif p.kind is p.VAR_POSITIONAL:
            names[p.name] = -(i + 1)
            break
    return names


class _Call:
    """What one call gives every config: its arguments, ids and a shared timestamp."""

    __slots__ = (
        "_positional",
        "_timestamp",
        "api_id",
        "args",
        "base_url",
        "client_customer_key",
        "context",
        "func",
        "kwargs",
        "method",
        "service_id",
    )

    def __init__(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None,
        func: Callable[..., Any] | None,
        service_id: str | None,
        api_id: str | None,
        base_url: str | None,
        client_customer_key: str | None,
        context: Mapping[str, Any] | None,
        timestamp: str | None,
    ) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.func = func
        self.service_id = service_id
        self.api_id = api_id
        self.base_url = base_url
        self.client_customer_key = client_customer_key
        self.context = context
        self._timestamp = timestamp
        self._positional: dict[str, int] | None = None

    def timestamp(self) -> str:
        ts = self._timestamp
        if ts is None:
            ts = self._timestamp = utc_now_iso()
        return ts

    def argument(self, name: str) -> Any:
        if is_private_name(name):  # transport options and credentials are never data
            return MISSING
        kwargs = self.kwargs
        if kwargs is not None and name in kwargs:
            return kwargs[name]
        args = self.args
        if args and self.func is not None:
            positions = self._positional
            if positions is None:
                positions = self._positional = _positional_names(self.func)
            index = positions.get(name)
            if index is not None:
                if index < 0:
                    return args[-index - 1 :]
                if index < len(args):
                    return args[index]
        return MISSING


def _usage_of(item: Any, response: Any) -> Any:
    usage = resolve_path(item, _USAGE_STEPS)
    if (usage is MISSING or usage is None) and item is not response:
        usage = resolve_path(response, _USAGE_STEPS)
    return usage


def _compile_getter(source: PayloadSource, config: HandlingConfig) -> Getter:
    kind, steps = source.kind, source.steps
    if kind is SourceKind.CONFIG_IDENTIFIER:
        config_id = config.config_id
        return lambda call, item, response: config_id
    if kind is SourceKind.TIMESTAMP:
        return lambda call, item, response: call.timestamp()
    if kind is SourceKind.SERVICE_ID:
        return lambda call, item, response: call.service_id
    if kind is SourceKind.API_ID:
        return lambda call, item, response: call.api_id
    if kind is SourceKind.BASE_URL:
        return lambda call, item, response: call.base_url
    if kind is SourceKind.CLIENT_CUSTOMER_KEY:
        return lambda call, item, response: call.client_customer_key
    if kind is SourceKind.CONTEXT:
        return lambda call, item, response: call.context
    if kind is SourceKind.RESPONSE_ID:
        return lambda call, item, response: resolve_path(item, _ID_STEPS)
    if kind is SourceKind.REQUEST_DATA:
        if source.name is None:
            names = config.request_fields

            def request_data(call: _Call, item: Any, response: Any) -> Any:
                out = {}
                for name in names:
                    value = call.argument(name)
                    if value is not MISSING and value is not None:
                        out[name] = value
                return out

            return request_data
        name = source.name
        if not steps:
            return lambda call, item, response: call.argument(name)
        return lambda call, item, response: resolve_path(call.argument(name), steps)
    if kind is SourceKind.RESPONSE_DATA:
        if source.name is None:
            fields = tuple((f.key, f.steps) for f in config.response_fields)

            def response_data(call: _Call, item: Any, response: Any) -> Any:
                out = {}
                for key, field_steps in fields:
                    value = resolve_path(item, field_steps)
                    if value is not MISSING and value is not None:
                        out[key] = value
                return out

            return response_data
        field = next(f for f in config.response_fields if f.key == source.name)
        full = field.steps + steps
        return lambda call, item, response: resolve_path(item, full)
    if not steps:
        return lambda call, item, response: _usage_of(item, response)
    return lambda call, item, response: resolve_path(_usage_of(item, response), steps)


_SCALARS = (int, float, str, bool, list, tuple)


def _usage_object(source: PayloadSource, config: HandlingConfig, getter: Getter) -> Getter:
    """Name a single metric taken from inside the response when it is mapped to ``usage``.

    The AICostManager docs' HeyGen config maps ``"usage": "response_data.duration"`` (the
    streaming session's ``duration``) and sends ``{"duration": 12}``. A value that *is* the
    whole response (``{"key": "value", "path": ""}``) is sent as it is.
    """
    if source.key != "usage":
        return getter
    label = source.steps[-1][0] if source.steps else source.name
    if not label:
        return getter
    if source.kind is SourceKind.RESPONSE_DATA and not source.steps:
        field = next((f for f in config.response_fields if f.key == source.name), None)
        if field is None or not field.steps:
            return getter

    def named(call: _Call, item: Any, response: Any) -> Any:
        value = getter(call, item, response)
        if isinstance(value, _SCALARS):
            return {label: value}
        return value

    return named


# Sources a config reads from the call or its answer; the rest are the wrapper's own ids
# and the caller's tags, sent as given.
_READ_SOURCES: Final = frozenset(
    {
        SourceKind.REQUEST_DATA,
        SourceKind.RESPONSE_DATA,
        SourceKind.USAGE_DATA,
        SourceKind.RESPONSE_ID,
    }
)


def _trusted_part(config: HandlingConfig) -> HandlingConfig:
    """``config`` without the paths that enter a credential-named or transport name.

    Each refused path is logged once at WARNING, naming the config and the path; its
    ``payload_mapping`` entries are left out, the rest of the config works as written. A
    refused ``list_path`` is kept (the caller turns the config off): it cannot be dropped
    without changing what every payload is.
    """
    cid = config.config_id

    def refused(path: str, steps: Iterable[Any]) -> bool:
        segment = refused_segment(steps)
        if segment is None:
            return False
        _warn_once(
            cid,
            path,
            f"enters {segment!r}, a credential or transport name a config may not read; skipped",
        )
        return True

    request_fields = tuple(n for n in config.request_fields if not refused(n, (n,)))
    response_fields = tuple(f for f in config.response_fields if not refused(f.path, f.steps))
    kept_requests, kept_responses = set(request_fields), {f.key for f in response_fields}
    mapping = []
    for source in config.payload_mapping:
        if source.kind is SourceKind.REQUEST_DATA and source.name is not None:
            if source.name not in kept_requests or refused(source.source, source.steps):
                continue
        elif source.kind is SourceKind.RESPONSE_DATA and source.name is not None:
            if source.name not in kept_responses or refused(source.source, source.steps):
                continue
        elif source.kind is SourceKind.USAGE_DATA and refused(source.source, source.steps):
            continue
        mapping.append(source)
    list_path = config.list_path
    if list_path is not None and refused(".".join(k for k, _ in list_path), list_path):
        list_path = ((_REFUSED_SEGMENT, None),)
    streaming = config.streaming
    if streaming is not None:
        final = tuple(f for f in streaming.final_fields if not refused(f.path, f.steps))
        streaming = attrs.evolve(streaming, final_fields=final)
    if (
        request_fields == config.request_fields
        and response_fields == config.response_fields
        and len(mapping) == len(config.payload_mapping)
        and list_path == config.list_path
        and streaming == config.streaming
    ):
        return config
    return attrs.evolve(
        config,
        request_fields=request_fields,
        response_fields=response_fields,
        payload_mapping=tuple(mapping),
        list_path=list_path,
        streaming=streaming,
    )


# Stands in for a refused list_path: no payload is built from it.
_REFUSED_SEGMENT: Final = "\x00refused"


class _CompiledConfig:
    """One handling config ready to run: getters, static fields, list and stream rules."""

    __slots__ = (
        "config",
        "entries",
        "final_fields",
        "list_steps",
        "refused",
        "static",
        "static_is_flat",
    )

    def __init__(self, original: HandlingConfig) -> None:
        self.config = original
        config = _trusted_part(original)
        # A list_path through a credential or transport name: the config yields nothing.
        self.refused = config.list_path is not None and config.list_path != original.list_path
        self.entries: tuple[tuple[str, Getter, str, str, bool], ...] = tuple(
            (
                s.key,
                _usage_object(s, config, _compile_getter(s, config)),
                f"payload.{s.key}",
                s.source,
                s.kind in _READ_SOURCES,
            )
            for s in config.payload_mapping
        )
        self.static = config.static_payload_fields
        self.static_is_flat = all(not isinstance(v, (dict, list)) for v in self.static.values())
        self.list_steps = config.list_path
        final = {f.key: f for f in (config.streaming.final_fields if config.streaming else ())}
        self.final_fields: tuple[ResponseField, ...] = tuple(
            ({"usage": _USAGE_FIELD} | final).values()
        )

    def payloads(self, call: _Call, response: Any) -> list[dict[str, Any]]:
        if self.refused:
            return []
        if self.list_steps is None:
            return [self._payload(call, response, response)]
        items = resolve_path(response, self.list_steps)
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
            logger.debug(
                "config %r: list_path %r is not a list for %s; nothing extracted",
                self.config.config_id,
                ".".join(s for s, _ in self.list_steps),
                call.method,
            )
            return []
        return [self._payload(call, item, response) for item in items]

    def _payload(self, call: _Call, item: Any, response: Any) -> dict[str, Any]:
        config_id = self.config.config_id
        payload: dict[str, Any] = {}
        for key, getter, field, source, read in self.entries:
            value = getter(call, item, response)
            if value is MISSING or value is None:
                logger.debug(
                    "config %r: %s <- %s did not resolve for %s; left out",
                    config_id,
                    key,
                    source,
                    call.method,
                )
                continue
            plain = _plain(value, field, config_id, source, read=read)
            if plain is not MISSING:
                payload[key] = plain
        if self.static:
            # A fresh copy per payload, so no two records share a nested value.
            payload.update(self.static if self.static_is_flat else to_plain(self.static))  # type: ignore[arg-type]
        return payload


def accumulate_stream(
    chunks: Sequence[Any], final_fields: Iterable[ResponseField] = ()
) -> dict[str, JSONValue]:
    """Build the response of a finished stream from the chunks it yielded.

    The result has the ``id`` and ``model`` of the first chunk carrying them and ``usage``
    merged over every chunk that carries one, later values winning key by key and None
    never overwriting (openai sends usage in its last chunk when asked with
    ``stream_options={"include_usage": True}``; anthropic sends input tokens in
    ``message_start`` and output tokens in ``message_delta``). Events wrapping a whole
    message (``message_start.message``, a ``ChunkEvent.chunk``, ``response.completed``'s
    ``response``) are read through. Each of ``final_fields`` (a path, stored under its key)
    is taken the same way: from the last chunk(s) that have it, mappings merged; a whole
    message that lacks the path but has the key at its top (a final snapshot's
    ``stop_reason`` for ``delta.stop_reason``) counts as having it.
    """
    fields = {_USAGE_FIELD.key: _USAGE_FIELD} | {f.key: f for f in final_fields}
    inner = [_unwrap_event(chunk) for chunk in chunks]
    response: dict[str, JSONValue] = {}
    for name in ("id", "model"):
        for obj in inner:
            value = resolve_path(obj, ((name, None),))
            if isinstance(value, str) and value:
                response[name] = value
                break
    for field in fields.values():
        merged: Any = MISSING
        by_key: FieldPath = ((field.key, None),)
        for raw, obj in zip(chunks, inner, strict=True):
            value = resolve_path(obj, field.steps)
            if (value is MISSING or value is None) and obj is not raw:
                value = resolve_path(raw, field.steps)
            if (value is MISSING or value is None) and len(field.steps) > 1:
                # A whole message (a snapshot, message_start's message) holds at its top
                # what events carry deeper: ``delta.stop_reason`` is its ``stop_reason``.
                value = resolve_path(obj, by_key)
            if value is MISSING or value is None:
                continue
            plain = _plain(value, f"stream.{field.key}", "<stream>")
            if plain is MISSING:
                continue
            if isinstance(plain, dict):
                fresh = {k: v for k, v in plain.items() if v is not None}
                if isinstance(merged, dict):
                    merged.update(fresh)
                else:
                    merged = fresh
            else:
                merged = plain
        if merged is not MISSING:
            response[field.key] = merged
    return response


def _unwrap_event(chunk: Any) -> Any:
    for attr in _WRAPPER_ATTRS:
        wrapped = resolve_path(chunk, ((attr, None),))
        if wrapped is MISSING or wrapped is None:
            continue
        if isinstance(wrapped, Mapping):
            if "usage" in wrapped:
                return wrapped
        elif hasattr(wrapped, "usage"):
            return wrapped
    return chunk


class UniversalExtractor:
    """Config-driven extraction of usage payloads from calls of a wrapped client.

    Configs without a ``handling_config`` are skipped; a malformed one raises
    :class:`~aicm._core.exceptions.HandlingConfigError` here, naming the config and field.
    """

    __slots__ = ("_compiled", "_routes")

    def __init__(self, configs: Iterable[ServiceConfig | HandlingConfig]) -> None:
        compiled: list[_CompiledConfig] = []
        for cfg in configs:
            if isinstance(cfg, HandlingConfig):
                compiled.append(_CompiledConfig(cfg))
            elif cfg.handling_config is not None:
                parsed = HandlingConfig.from_mapping(cfg.handling_config, config_id=cfg.config_id)
                compiled.append(_CompiledConfig(parsed))
        self._compiled = tuple(compiled)
        self._routes: dict[str, tuple[_CompiledConfig, ...]] = {}

    @property
    def configs(self) -> tuple[HandlingConfig, ...]:
        """The parsed handling configs, in the order given."""
        return tuple(c.config for c in self._compiled)

    def tracks(self, method: str) -> bool:
        """True when some config tracks ``method`` (cached per method key)."""
        routes = self._routes.get(method)
        if routes is None:
            routes = self._route(method)
        return bool(routes)

    def configs_for(self, method: str) -> tuple[HandlingConfig, ...]:
        """The configs that track ``method``."""
        return tuple(c.config for c in self._route(method))

    def _route(self, method: str) -> tuple[_CompiledConfig, ...]:
        routes = self._routes.get(method)
        if routes is None:
            routes = tuple(c for c in self._compiled if c.config.matcher.match(method) is not None)
            if len(self._routes) >= _MAX_CACHE:
                self._routes.clear()
            self._routes[method] = routes
        return routes

    def extract(
        self,
        method: str,
        *,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        response: Any,
        func: Callable[..., Any] | None = None,
        service_id: str | None = None,
        api_id: str | None = None,
        base_url: str | None = None,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: str | None = None,
    ) -> list[dict[str, Any]]:
        """The payloads of every config tracking ``method`` for one call and its response.

        ``request_fields`` are read from ``kwargs``, then from ``args`` bound to ``func``'s
        signature; ``response`` is what the call returned (for REST, the decoded JSON
        body). With ``list_path`` a config yields one payload per element of that list.
        """
        routes = self._routes.get(method)
        if routes is None:
            routes = self._route(method)
        if not routes:
            return []
        call = _Call(
            method,
            args,
            kwargs,
            func,
            service_id,
            api_id,
            base_url,
            client_customer_key,
            context,
            timestamp,
        )
        out: list[dict[str, Any]] = []
        for compiled in routes:
            out.extend(_run(compiled, call, response))
        return out

    def extract_stream_end(
        self,
        method: str,
        chunks: Sequence[Any],
        *,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        func: Callable[..., Any] | None = None,
        service_id: str | None = None,
        api_id: str | None = None,
        base_url: str | None = None,
        client_customer_key: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: str | None = None,
    ) -> list[dict[str, Any]]:
        """The payloads for a stream that ended (exhausted, closed early or failed).

        Each config sees the response :func:`accumulate_stream` builds from ``chunks`` with
        its ``streaming.final_fields``. A stream left before its first chunk was still a
        request the provider billed: its payloads come from the request alone (an empty
        response), with no usage and no response id.
        """
        routes = self._route(method)
        if not routes:
            return []
        call = _Call(
            method,
            args,
            kwargs,
            func,
            service_id,
            api_id,
            base_url,
            client_customer_key,
            context,
            timestamp,
        )
        built: dict[tuple[ResponseField, ...], dict[str, JSONValue]] = {}
        out: list[dict[str, Any]] = []
        for compiled in routes:
            response = built.get(compiled.final_fields)
            if response is None:
                response = built[compiled.final_fields] = accumulate_stream(
                    chunks, compiled.final_fields
                )
            out.extend(_run(compiled, call, response))
        return out


def _run(compiled: _CompiledConfig, call: _Call, response: Any) -> list[dict[str, Any]]:
    try:
        return compiled.payloads(call, response)
    except Exception:
        # A bug here must cost one config's payloads, never the caller's call.
        logger.exception(
            "config %r: extraction failed for %s", compiled.config.config_id, call.method
        )
        return []
