"""Turn a tracked call or a finished stream into usage payloads by handling configs (layer 1, pure).

[`UniversalExtractor`][aicm.UniversalExtractor] compiles every config once: paths become step tuples
and each ``payload_mapping`` entry a small getter, so a call costs a dict lookup per config plus the
getters it needs. Nothing here does I/O or raises for the data it meets: a path that does
not resolve is left out of the payload (logged at debug on ``aicm.extractor``), a value JSON
cannot carry is left out with a warning. Only a malformed config raises, when the extractor
is built.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypedDict

import attrs

from .handling import (
    FieldPath,
    HandlingConfig,
    PayloadSource,
    ResponseField,
    SourceKind,
    is_private_name,
    refused_segment,
)
from .jsonplain import _FAST_INT_BITS, _NUMBER_BOUND, JSONValue, plain_size_bound, to_plain
from .model_plans import UNKNOWN as _UNKNOWN
from .models import ServiceConfig, utc_now_iso
from .values import (
    MAX_CACHE,
    MISSING,
    USAGE_FIELD,
    accumulate_stream,
    is_http_object,
    plain_value_sized,
    resolve_path,
    warn_once,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "MISSING",
    "CallTags",
    "UniversalExtractor",
    "accumulate_stream",
    "is_http_object",
    "resolve_path",
]

logger = logging.getLogger("aicm.extractor")


_ID_STEPS: FieldPath = (("id", None),)

Getter = Callable[["_Call", Any, Any], Any]
# A payload and an upper bound of its JSON size in bytes (-1: not known).
Sized = tuple[dict[str, Any], int]
PayloadBuilder = Callable[["_Call", Any, Any], Sized]


class CallTags(TypedDict, total=False):
    """What a call's payloads carry besides the call itself (each source of the same name)."""

    service_id: str | None
    api_id: str | None
    base_url: str | None
    client_customer_key: str | None
    context: Mapping[str, Any] | None
    timestamp: str | None


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
        if len(_SIGNATURES) >= MAX_CACHE:
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

    __slots__ = ("_positional", "_timestamp", "args", "func", "kwargs", "method", "tags")

    def __init__(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None,
        func: Callable[..., Any] | None,
        tags: CallTags,
    ) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.func = func
        # Read only by the sources a config maps (most map one or two of them).
        self.tags = tags
        self._timestamp: str | None = None
        self._positional: dict[str, int] | None = None

    def timestamp(self) -> str:
        ts = self._timestamp
        if ts is None:
            ts = self.tags.get("timestamp")
            ts = self._timestamp = utc_now_iso() if ts is None else ts
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
    usage = resolve_path(item, USAGE_FIELD.steps)
    if (usage is MISSING or usage is None) and item is not response:
        usage = resolve_path(response, USAGE_FIELD.steps)
    return usage


def _compile_getter(source: PayloadSource, config: HandlingConfig) -> Getter:
    kind, steps = source.kind, source.steps
    if kind is SourceKind.CONFIG_IDENTIFIER:
        config_id = config.config_id
        return lambda call, item, response: config_id
    if kind is SourceKind.TIMESTAMP:
        return lambda call, item, response: call.timestamp()
    if kind is SourceKind.SERVICE_ID:
        return lambda call, item, response: call.tags.get("service_id")
    if kind is SourceKind.API_ID:
        return lambda call, item, response: call.tags.get("api_id")
    if kind is SourceKind.BASE_URL:
        return lambda call, item, response: call.tags.get("base_url")
    if kind is SourceKind.CLIENT_CUSTOMER_KEY:
        return lambda call, item, response: call.tags.get("client_customer_key")
    if kind is SourceKind.CONTEXT:
        return lambda call, item, response: call.tags.get("context")
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
        warn_once(
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

    __slots__ = ("build", "config", "final_fields", "list_steps", "refused")

    def __init__(self, original: HandlingConfig) -> None:
        self.config = original
        config = _trusted_part(original)
        # A list_path through a credential or transport name: the config yields nothing.
        self.refused = config.list_path is not None and config.list_path != original.list_path
        self.build = _compile_payload(config)  # (call, item, response) -> Sized
        self.list_steps = config.list_path
        final = {f.key: f for f in (config.streaming.final_fields if config.streaming else ())}
        self.final_fields: tuple[ResponseField, ...] = tuple(
            ({"usage": USAGE_FIELD} | final).values()
        )

    def payloads(self, call: _Call, response: Any) -> list[Sized]:
        if self.refused:
            return []
        if self.list_steps is None:
            return [self.build(call, response, response)]
        items = resolve_path(response, self.list_steps)
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
            logger.debug(
                "config %r: list_path %r is not a list for %s; nothing extracted",
                self.config.config_id,
                ".".join(s for s, _ in self.list_steps),
                call.method,
            )
            return []
        return [self.build(call, item, response) for item in items]


def _left_out(config_id: str, key: str, source: str, call: _Call) -> None:
    logger.debug(
        "config %r: %s <- %s did not resolve for %s; left out", config_id, key, source, call.method
    )


# One payload_mapping entry of a payload builder, ``v`` its source's value: ``{i}`` indexes
# the names bound in the builder's namespace, ``{read}``: a value the config read.
_ENTRY_CODE: Final = """
    if v is MISSING or v is None:
        _left_out(CID, K{i}, S{i}, call)
    else:
        t = type(v)
        if t is str:  # most values: plain already
            payload[K{i}] = v
            size += KS{i} + (6 * len(v) + 2 if v.isascii() else _UNKNOWN)
        elif t is int or t is bool:
            payload[K{i}] = v
            if t is bool or v.bit_length() <= _FAST_INT_BITS:
                size += KS{i} + _NUMBER_BOUND
            else:
                size = _UNKNOWN
        else:
            plain, bound = plain_value_sized(v, F{i}, CID, S{i}, read={read})
            if plain is not MISSING:
                payload[K{i}] = plain
                size += KS{i} + (bound if bound >= 0 else _UNKNOWN)"""


def _compile_payload(config: HandlingConfig) -> PayloadBuilder:
    """The function that builds one payload of ``config`` from a call, an item of its
    answer (the answer itself without ``list_path``) and the answer: ``(payload, bound)``,
    the bound an upper bound of its JSON size as plain_size_bound counts it (-1: unknown).

    Generated once per config: a call runs the entries in order with no loop, and reads
    the config's own id without a getter. What the config says (keys, sources, ids)
    enters the code only as names bound in its namespace, never as text.
    """
    config_id, static = config.config_id, config.static_payload_fields
    names: dict[str, Any] = {
        "CID": config_id,
        "MISSING": MISSING,
        "_left_out": _left_out,
        "_UNKNOWN": _UNKNOWN,
        "_NUMBER_BOUND": _NUMBER_BOUND,
        "_FAST_INT_BITS": _FAST_INT_BITS,
        "plain_value_sized": plain_value_sized,
        "to_plain": to_plain,
    }
    lines = ["def build(call, item, response):", "    payload = {}", "    size = 2"]
    for i, source in enumerate(config.payload_mapping):
        key = source.key
        names.update({f"K{i}": key, f"S{i}": source.source, f"F{i}": f"payload.{key}"})
        names[f"G{i}"] = _usage_object(source, config, _compile_getter(source, config))
        names[f"KS{i}"] = 6 * len(key) + 4 if key.isascii() else _UNKNOWN  # quotes, colon, comma
        own_id = source.kind is SourceKind.CONFIG_IDENTIFIER and key != "usage"
        if own_id and isinstance(config_id, str):  # always the same str: its size is known
            size = 6 * len(config_id) + 2 if config_id.isascii() else _UNKNOWN
            names[f"C{i}"] = names[f"KS{i}"] + size
            lines += [f"    payload[K{i}] = CID", f"    size += C{i}"]
            continue
        if source.kind is SourceKind.TIMESTAMP and key != "usage":
            lines.append("    v = call.timestamp()")
        else:
            lines.append(f"    v = G{i}(call, item, response)")
        lines.extend(_ENTRY_CODE.format(i=i, read=source.kind in _READ_SOURCES).splitlines()[1:])
    if static:
        flat = all(not isinstance(v, (dict, list)) for v in static.values())
        # Keys the mapping also fills are counted twice: still an upper bound.
        static_size = plain_size_bound(to_plain(static))
        names["STATIC"] = static
        names["STATIC_SIZE"] = static_size if static_size >= 0 else _UNKNOWN
        # A fresh copy per payload, so no two records share a nested value.
        update = "STATIC" if flat else "to_plain(STATIC)"
        lines += [f"    payload.update({update})", "    size += STATIC_SIZE"]
    lines.append("    return payload, (size if size >= 0 else -1)")
    exec(compile("\n".join(lines), "<aicm payload builder>", "exec"), names)
    built: PayloadBuilder = names["build"]
    return built


class UniversalExtractor:
    """Config-driven extraction of usage payloads from calls of a wrapped client.

    Configs without a ``handling_config`` are skipped; a malformed one raises
    `HandlingConfigError` here, naming the config and field.
    """

    __slots__ = ("_compiled", "_configs", "_routes")

    def __init__(self, configs: Iterable[ServiceConfig | HandlingConfig]) -> None:
        compiled: list[_CompiledConfig] = []
        for cfg in configs:
            if isinstance(cfg, HandlingConfig):
                compiled.append(_CompiledConfig(cfg))
            elif cfg.handling_config is not None:
                parsed = HandlingConfig.from_mapping(cfg.handling_config, config_id=cfg.config_id)
                compiled.append(_CompiledConfig(parsed))
        self._compiled = tuple(compiled)
        self._configs = tuple(c.config for c in compiled)
        self._routes: dict[str, tuple[_CompiledConfig, ...]] = {}

    @property
    def configs(self) -> tuple[HandlingConfig, ...]:
        """The parsed handling configs, in the order given."""
        return self._configs

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
            if len(self._routes) >= MAX_CACHE:
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
        **tags: Unpack[CallTags],
    ) -> list[dict[str, Any]]:
        """The payloads of every config tracking ``method`` for one call and its response.

        ``request_fields`` are read from ``kwargs``, then from ``args`` bound to ``func``'s
        signature; ``response`` is what the call returned (for REST, the decoded JSON body).
        With ``list_path`` a config yields one payload per element of that list. ``tags``
        give the payload_mapping's own sources (``service_id``, ``timestamp``...).
        """
        return [
            payload
            for payload, _ in self.extract_sized(
                method, args=args, kwargs=kwargs, response=response, func=func, **tags
            )
        ]

    def extract_sized(
        self,
        method: str,
        *,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        response: Any,
        func: Callable[..., Any] | None = None,
        **tags: Unpack[CallTags],
    ) -> list[Sized]:
        """`extract()`, each payload with an upper bound of its JSON size in bytes (-1 when
        not known), which spares the record a second walk of the payload."""
        routes = self._routes.get(method)
        if routes is None:
            routes = self._route(method)
        if not routes:
            return []
        call = _Call(method, args, kwargs, func, tags)
        if len(routes) == 1:
            compiled = routes[0]
            if compiled.list_steps is None and not compiled.refused:  # the common case
                try:
                    return [compiled.build(call, response, response)]
                except Exception:
                    return _failed(compiled, call)
            return _run(compiled, call, response)
        out: list[Sized] = []
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
        **tags: Unpack[CallTags],
    ) -> list[dict[str, Any]]:
        """The payloads for a stream that ended (exhausted, closed early or failed).

        Each config sees the response `accumulate_stream()` builds from ``chunks`` with
        its ``streaming.final_fields``. A stream left before its first chunk was still a
        request the provider billed: its payloads come from the request alone (an empty
        response), with no usage and no response id.
        """
        routes = self._route(method)
        if not routes:
            return []
        call = _Call(method, args, kwargs, func, tags)
        built: dict[tuple[ResponseField, ...], dict[str, JSONValue]] = {}
        out: list[dict[str, Any]] = []
        for compiled in routes:
            response = built.get(compiled.final_fields)
            if response is None:
                response = built[compiled.final_fields] = accumulate_stream(
                    chunks, compiled.final_fields
                )
            out.extend(payload for payload, _ in _run(compiled, call, response))
        return out


def _run(compiled: _CompiledConfig, call: _Call, response: Any) -> list[Sized]:
    try:
        return compiled.payloads(call, response)
    except Exception:
        return _failed(compiled, call)


def _failed(compiled: _CompiledConfig, call: _Call) -> list[Sized]:
    # A bug here must cost one config's payloads, never the caller's call.
    logger.exception("config %r: extraction failed for %s", compiled.config.config_id, call.method)
    return []
