"""Values read out of calls and answers, made plain JSON a record may carry (layer 1, pure).

`resolve_path()` walks a compiled path through mappings, lists and public attributes;
`plain_value()` turns what it found into plain JSON data, leaving out what a record
must never carry: HTTP messages, headers and cookie jars, credential-named keys, and
nested fields that did not resolve (None); `accumulate_stream()` builds the answer of
a finished stream from its chunks. None of them raises for the data it meets.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import ParseResult, SplitResult

from .exceptions import NotSerializableError, RecordError
from .handling import FieldPath, ResponseField
from .jsonplain import _FAST_INT_BITS, _NUMBER_BOUND, JSONValue, to_plain
from .model_plans import MAX_CACHE
from .model_plans import MODEL_PLANS as _MODEL_PLANS
from .model_plans import UNKNOWN as _UNKNOWN
from .model_plans import UNSEEN as _UNSEEN
from .model_plans import NotFast as _NotFast
from .model_plans import model_plan as _model_plan
from .private_names import is_credential_name

__all__ = [
    "MAX_CACHE",
    "MISSING",
    "USAGE_FIELD",
    "accumulate_stream",
    "is_http_object",
    "plain_value",
    "plain_value_sized",
    "resolve_path",
    "warn_once",
]

logger = logging.getLogger("aicm.extractor")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final[Any] = _Missing()
"""What `resolve_path()` returns when a path does not resolve."""


_URL_TYPE_NAMES: Final = frozenset({"URL", "Url", "AnyUrl", "AnyHttpUrl", "HttpUrl", "URLPath"})
# The SDKs' "argument not given" sentinels: absent, not data.
_SENTINEL_TYPE_NAMES: Final = frozenset({"NotGiven", "Omit"})


def resolve_path(obj: Any, steps: FieldPath) -> Any:
    """Walk ``steps`` through mappings (by key), lists (by index) and public attributes.

    Returns `MISSING` when a step cannot be taken; ``None`` part-way is missing too.
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
        elif t in _ATTRIBUTE_TYPES and key[:1] != "_":
            try:
                cur = getattr(cur, key, MISSING)
            except Exception:  # a property that raises: a value we cannot read
                return MISSING
        else:
            cur = _step_other(cur, key, index)
        if cur is MISSING:
            return MISSING
    return cur


# Neither mappings nor sequences (pydantic models, SDK objects): no ABC check per step.
_ATTRIBUTE_TYPES: set[type] = set()


def _step_other(cur: Any, key: str, index: int | None) -> Any:
    try:
        if isinstance(cur, Mapping):
            return cur.get(key, MISSING)
        if isinstance(cur, Sequence):
            if index is not None and not isinstance(cur, (str, bytes)):
                try:
                    return cur[index]
                except IndexError:
                    return MISSING
        else:
            if len(_ATTRIBUTE_TYPES) >= MAX_CACHE:
                _ATTRIBUTE_TYPES.clear()
            _ATTRIBUTE_TYPES.add(type(cur))
        if key.startswith("_"):
            # Configs come from the service: they read public data only, never private state.
            return MISSING
        return getattr(cur, key, MISSING)
    except Exception:  # a property that raises is a value we cannot read, not our failure
        return MISSING


def plain_value(
    value: Any, field: str, config_id: str, source: str = "", *, read: bool = True
) -> Any:
    """``value`` as plain JSON data, or MISSING (logged) when JSON cannot carry it.

    In a value the config ``read`` (from the call or its answer), HTTP messages, headers
    and cookie jars are never delivered (MISSING) and credential keys (``authorization``,
    ``api_key``...) are left out, each logged once per config and field; so are keys whose
    value is None (never sent as null). The caller's own tags (``context``) go as given.
    """
    t = type(value)
    if t is str or t is int or t is bool:
        return value
    return plain_value_sized(value, field, config_id, source, read=read)[0]


def plain_value_sized(
    value: Any, field: str, config_id: str, source: str = "", *, read: bool = True
) -> tuple[Any, int]:
    """`plain_value()` and an upper bound of its JSON size as `plain_size_bound()` counts
    it; -1 when not known (the record checks the value then)."""
    dropped: list[str] | None = [] if read else None
    try:
        plain, bound = _fast_plain(value, 0, dropped)
        bound = max(bound, -1)
    except Exception:  # _NotFast, or a model_dump() that raised: to_plain names the problem
        dropped = [] if read else None
        plain, bound = _slow_plain(value, field, config_id, dropped), -1
    if plain is _HTTP_OBJECT:
        warn_once(
            config_id,
            source or field,
            f"the value is an HTTP {type(value).__name__} object, which is never sent; "
            "left out of the payload",
        )
        return MISSING, -1
    if dropped:
        names = ", ".join(sorted({repr(k) for k in dropped}))
        warn_once(
            config_id,
            source or field,
            f"left out the credential or transport key(s) {names} found inside the value",
        )
    return plain, bound


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
        _strip_unsent(plain, dropped)
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
            if len(_HTTP_VERDICTS) >= MAX_CACHE:
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


def _strip_unsent(plain: Any, dropped: list[str]) -> None:
    """Delete credential keys (listed in ``dropped``) and keys whose value is None from the
    mappings of ``plain``, in place."""
    if type(plain) is dict:
        for k in [k for k, v in plain.items() if v is None or is_credential_name(k)]:
            if plain.pop(k) is not None:
                dropped.append(k)
        for v in plain.values():
            if type(v) is dict or type(v) is list:
                _strip_unsent(v, dropped)
    elif type(plain) is list:
        for v in plain:
            if type(v) is dict or type(v) is list:
                _strip_unsent(v, dropped)


def warn_once(config_id: str, path: str, message: str) -> None:
    """Log ``message`` at WARNING the first time ``config_id`` and ``path`` meet it."""
    key = (config_id, path, message)
    with _verdict_lock:
        if key in _WARNED:
            return
        if len(_WARNED) >= MAX_CACHE:
            _WARNED.clear()
        _WARNED.add(key)
    logger.warning("config %r: path %r: %s", config_id, path, message)


_WARNED: set[tuple[str, str, str]] = set()


def _fast_plain(value: Any, depth: int, dropped: list[str] | None, owned: bool = False) -> Any:
    """``(plain copy, JSON size bound)`` of JSON-shaped data and pydantic models, else
    `_NotFast` (``to_plain`` then converts the value or names the problem; it builds a path
    per value). The bound is `plain_size_bound()`'s, negative where a leaf needs its exact
    checks. Scalars are checked inline: a call per leaf would double the cost. With
    ``dropped`` (a value the config read) credential keys (listed there) and None values
    are left out. ``owned``: a fresh ``model_dump()``, handed back uncopied if nothing is.
    """
    t = type(value)
    if t is dict:
        if depth > 32:
            raise _NotFast
        out: dict[str, Any] | None = None if owned else {}
        size = 2
        for k, v in value.items():
            ks = _KEY_SIZES.get(k)
            if ks is None:  # a key not seen yet, or a credential's
                if type(k) is not str:
                    raise _NotFast
                if dropped is not None and is_credential_name(k):
                    if v is not None:
                        dropped.append(k)
                    if out is None:  # an owned dict loses a key: copy what came before it
                        out = _before(value, k)
                    continue
                ks = _key_size(k)
            if v is None:
                if dropped is not None:  # a field the answer left unset: not sent as null
                    if out is None:
                        out = _before(value, k)
                    continue
                bound = _NUMBER_BOUND
            else:
                tv = type(v)
                if tv is int:
                    bound = _NUMBER_BOUND if v.bit_length() <= _FAST_INT_BITS else _UNKNOWN
                elif tv is str:
                    bound = 6 * len(v) + 2 if v.isascii() else _UNKNOWN
                elif tv is bool or (tv is float and v - v == 0.0):  # NaN, inf: not fast
                    bound = _NUMBER_BOUND
                else:
                    pv, bound = _fast_plain(v, depth + 1, dropped, owned)
                    if pv is not v:
                        if out is None:  # a nested value changed: copy this dict
                            out = _before(value, k)
                        v = pv
            if out is not None:
                out[k] = v
            size += ks + bound
        return (value if out is None else out), size
    if t is str:
        return value, 6 * len(value) + 2 if value.isascii() else _UNKNOWN
    if t is int:
        return value, _NUMBER_BOUND if value.bit_length() <= _FAST_INT_BITS else _UNKNOWN
    if t is bool or value is None:
        return value, _NUMBER_BOUND
    if t is float:
        if value - value == 0.0:  # false for NaN and the infinities
            return value, _NUMBER_BOUND
        raise _NotFast
    if depth > 32:
        raise _NotFast
    if t is list or t is tuple:
        items = []
        size = 2
        for v in value:
            pv, bound = _fast_plain(v, depth + 1, dropped, owned)
            items.append(pv)
            size += bound + 1
        return items, size
    if hasattr(t, "__pydantic_serializer__"):
        plan = _MODEL_PLANS.get(t, _UNSEEN)
        if plan is _UNSEEN:
            plan = _model_plan(t)
        if plan is not None and not value.__pydantic_extra__:
            try:
                return plan(value, depth, dropped)
            except _NotFast:
                pass  # a value model_dump() converts (an enum, a date...): let it
        # None values are left out below anyway (a value the config read): pydantic leaving
        # them out first spares walking them. What model_dump() builds needs no copy.
        dump = value.model_dump(mode="json", exclude_none=dropped is not None)
        return _fast_plain(dump, depth + 1, dropped, True)
    raise _NotFast


def _before(value: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of the entries of ``value`` that come before ``key``."""
    return dict(itertools.takewhile(lambda item: item[0] is not key, value.items()))


# What a key naming no credential adds to a JSON object's size (quotes, colon, comma;
# non-ASCII: unknown): one dict lookup per key on the hot path. Bounded like every cache.
_KEY_SIZES: dict[str, int] = {}


def _key_size(key: str) -> int:
    size = 6 * len(key) + 4 if key.isascii() else _UNKNOWN
    if not is_credential_name(key):
        if len(_KEY_SIZES) >= MAX_CACHE:
            _KEY_SIZES.clear()
        _KEY_SIZES[key] = size
    return size


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


USAGE_FIELD: Final = ResponseField(key="usage", path="usage", steps=(("usage", None),))
"""The answer's ``usage``: every stream's final field."""
# Stream events that wrap a whole message/response (anthropic ``message_start`` and the
# helper's ``message_stop``, openai's ``ChunkEvent`` and Responses ``response.completed``).
_WRAPPER_ATTRS: Final = ("message", "chunk", "response")


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
    fields = {USAGE_FIELD.key: USAGE_FIELD} | {f.key: f for f in final_fields}
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
            plain = plain_value(value, f"stream.{field.key}", "<stream>")
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
