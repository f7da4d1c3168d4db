"""Handling configs: parse and validate them, and match method keys against them (layer 1, pure).

A handling config comes from the service (``GET /configs``) and says which methods of a
wrapped client are tracked and how a call becomes usage payloads. Everything here is
checked once, when the config is read, so extraction later never meets a malformed rule.
Paths are compiled into tuples of steps so the extractor walks them without parsing.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

import attrs

from .exceptions import HandlingConfigError, RecordError
from .jsonplain import JSONValue, to_plain
from .private_names import (
    TRANSPORT_ARGUMENTS,
    is_credential_name,
    is_private_name,
    refused_segment,
)

__all__ = [
    "TRANSPORT_ARGUMENTS",
    "FieldPath",
    "HandlingConfig",
    "MethodMatcher",
    "PayloadSource",
    "ResponseField",
    "SourceKind",
    "Step",
    "StreamingConfig",
    "is_credential_name",
    "is_private_name",
    "parse_path",
    "refused_segment",
]

Step: TypeAlias = tuple[str, int | None]
"""One step of a path: the segment as written, and its value as a list index if it is one."""

FieldPath: TypeAlias = tuple[Step, ...]
"""A compiled dotted path; ``()`` (from ``""``) is the whole object."""

logger = logging.getLogger("aicm.extractor")

# A segment is anything without dots, brackets or whitespace; brackets are refused so that
# ``choices[0]`` gets a clear message instead of silently never resolving.
_SEGMENT = re.compile(r"[^\s.\[\]]+")
_INDEX = re.compile(r"-?[0-9]+")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED_METHOD = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_REST_METHOD = re.compile(r"([A-Za-z]+) (/\S*)")
_TEMPLATE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


class SourceKind(str, enum.Enum):
    """Where a ``payload_mapping`` value comes from."""

    CONFIG_IDENTIFIER = "config_identifier"
    TIMESTAMP = "timestamp"
    SERVICE_ID = "service_id"
    API_ID = "api_id"
    RESPONSE_ID = "response_id"
    CLIENT_CUSTOMER_KEY = "client_customer_key"
    CONTEXT = "context"
    BASE_URL = "base_url"
    REQUEST_DATA = "request_data"
    RESPONSE_DATA = "response_data"
    USAGE_DATA = "usage_data"


# Only these roots take a ``.path`` after them.
_PATH_SOURCES = frozenset(
    {SourceKind.REQUEST_DATA, SourceKind.RESPONSE_DATA, SourceKind.USAGE_DATA}
)
_KNOWN_KEYS = frozenset(
    {
        "tracked_methods",
        "request_fields",
        "response_fields",
        "payload_mapping",
        "static_payload_fields",
        "list_path",
        "streaming",
        "only_success",
    }
)


@attrs.frozen(kw_only=True)
class ResponseField:
    """A value taken from the response (or a list element) and stored under ``key``."""

    key: str
    path: str
    steps: FieldPath


@attrs.frozen(kw_only=True)
class PayloadSource:
    """One ``payload_mapping`` entry: payload ``key`` <- ``source``, compiled.

    ``name`` is the request field or response field key for ``request_data.X`` and
    ``response_data.X``; ``steps`` is the rest of the path walked after it (or after the
    usage for ``usage_data.X``).
    """

    key: str
    source: str
    kind: SourceKind
    name: str | None = None
    steps: FieldPath = ()


@attrs.frozen(kw_only=True)
class StreamingConfig:
    """How a finished stream becomes a response: fields taken from its last chunk(s)."""

    final_fields: tuple[ResponseField, ...] = ()


@attrs.frozen(kw_only=True)
class HandlingConfig:
    """A validated handling config; build it with `from_mapping()`."""

    config_id: str
    tracked_methods: tuple[str, ...]
    request_fields: tuple[str, ...] = ()
    response_fields: tuple[ResponseField, ...] = ()
    payload_mapping: tuple[PayloadSource, ...] = ()
    static_payload_fields: dict[str, JSONValue] = attrs.field(factory=dict, hash=False)
    list_path: FieldPath | None = None
    streaming: StreamingConfig | None = None
    only_success: bool = True
    matcher: MethodMatcher = attrs.field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "matcher", MethodMatcher(self.tracked_methods))

    def tracks(self, method: str) -> bool:
        """True when ``method`` is one of ``tracked_methods`` (exactly, or by template)."""
        return self.matcher.match(method) is not None

    @classmethod
    def from_mapping(cls, data: object, *, config_id: str) -> HandlingConfig:
        """Validate a handling-config mapping and compile it.

        Every problem is collected; a [`HandlingConfigError`][aicm.HandlingConfigError] names the
        config and the first bad field, and its message lists them all.
        """
        if not isinstance(data, Mapping):
            raise HandlingConfigError(
                f"a handling config must be a mapping, got {type(data).__name__}",
                config_id=config_id,
                field="handling_config",
            )
        problems = _Problems()
        unknown = [str(k) for k in data if k not in _KNOWN_KEYS]
        if unknown:
            # Newer services may send keys this version does not know; they are not errors.
            logger.debug("config %r: ignoring unknown handling-config keys %s", config_id, unknown)

        methods = _parse_methods(data.get("tracked_methods"), problems)
        request_fields = _parse_request_fields(data.get("request_fields"), problems)
        response_fields = _parse_response_fields(data.get("response_fields"), problems)
        static = _parse_static(data.get("static_payload_fields"), problems)
        mapping = _parse_mapping(
            data.get("payload_mapping"),
            request_fields=set(request_fields),
            response_keys={f.key for f in response_fields},
            has_static=bool(static),
            problems=problems,
        )
        list_path: FieldPath | None = None
        raw_list_path = data.get("list_path")
        if raw_list_path is not None:
            list_path = _parse_path(raw_list_path, "list_path", problems)
        streaming = _parse_streaming(data.get("streaming"), problems)
        only_success = data.get("only_success", True)
        if not isinstance(only_success, bool):
            problems.add("only_success", f"must be true or false, got {only_success!r}")
        problems.raise_if_any(config_id)
        return cls(
            config_id=config_id,
            tracked_methods=methods,
            request_fields=request_fields,
            response_fields=response_fields,
            payload_mapping=mapping,
            static_payload_fields=static,
            list_path=list_path,
            streaming=streaming,
            only_success=bool(only_success),
        )


def parse_path(text: object, *, config_id: str | None = None, field: str = "path") -> FieldPath:
    """Compile a dotted path (``choices.0.message.content``; ``""`` is the whole object).

    Raises [`HandlingConfigError`][aicm.HandlingConfigError] for a non-string or malformed path.
    """
    problems = _Problems()
    steps = _parse_path(text, field, problems)
    problems.raise_if_any(config_id)
    assert steps is not None
    return steps


class MethodMatcher:
    """Match method keys exactly against tracked methods.

    Dotted keys (``chat.completions.create``) match only themselves: ``create`` does not
    match ``chat.completions.create``. REST keys (``"GET /v2/sessions/{id}"``) compare the
    HTTP method case-insensitively and the path segment by segment, a ``{name}`` segment
    standing for any one non-empty segment; a query string is ignored.
    """

    __slots__ = ("_exact", "_templates")

    def __init__(self, methods: Iterable[str]) -> None:
        self._exact: dict[str, str] = {}
        self._templates: list[tuple[str, tuple[str | None, ...], str]] = []
        for method in methods:
            verb, sep, path = method.partition(" ")
            if not sep:
                self._exact.setdefault(method, method)
                continue
            verb = verb.upper()
            segments = path.split("/")
            if any(_TEMPLATE.fullmatch(s) for s in segments):
                pattern = tuple(None if _TEMPLATE.fullmatch(s) else s for s in segments)
                self._templates.append((verb, pattern, method))
            else:
                self._exact.setdefault(f"{verb} {path}", method)

    def match(self, method: str) -> str | None:
        """The tracked key ``method`` matches, or None."""
        hit = self._exact.get(method)
        if hit is not None:
            return hit
        verb, sep, path = method.partition(" ")
        if not sep:
            return None
        verb = verb.upper()
        path = path.partition("?")[0]
        hit = self._exact.get(f"{verb} {path}")
        if hit is not None or not self._templates:
            return hit
        segments = path.split("/")
        for t_verb, pattern, original in self._templates:
            if t_verb != verb or len(pattern) != len(segments):
                continue
            if all(
                (s != "" if p is None else p == s) for p, s in zip(pattern, segments, strict=True)
            ):
                return original
        return None

    def __contains__(self, method: object) -> bool:
        return isinstance(method, str) and self.match(method) is not None

    def __repr__(self) -> str:
        keys = list(self._exact.values()) + [t[2] for t in self._templates]
        return f"MethodMatcher({keys!r})"


class _Problems:
    """Collects what is wrong with a config so one error can report all of it."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[str | None, str]] = []

    def add(self, field: str | None, message: str) -> None:
        self.items.append((field, message))

    def raise_if_any(self, config_id: str | None) -> None:
        if not self.items:
            return
        field, message = self.items[0]
        if len(self.items) > 1:
            rest = "; ".join(f"{f or 'handling_config'}: {m}" for f, m in self.items[1:])
            message = f"{message} (and {len(self.items) - 1} more: {rest})"
        raise HandlingConfigError(message, config_id=config_id, field=field)


def _parse_path(text: object, field: str, problems: _Problems) -> FieldPath | None:
    if not isinstance(text, str):
        problems.add(field, f"a path must be a string, got {type(text).__name__}")
        return None
    if text == "":
        return ()
    steps: list[Step] = []
    for segment in text.split("."):
        if not _SEGMENT.fullmatch(segment):
            hint = " (write list indexes as dotted segments: choices.0)" if "[" in text else ""
            problems.add(field, f"malformed path {text!r}{hint}")
            return None
        if segment.startswith("__"):
            # Paths come from the service; dunder walks (``__init__.__globals__``) could reach
            # the process's secrets, so they are refused outright.
            problems.add(field, f"path {text!r} may not use the dunder segment {segment!r}")
            return None
        steps.append((segment, int(segment) if _INDEX.fullmatch(segment) else None))
    return tuple(steps)


def _string_list(value: object, field: str, problems: _Problems) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        problems.add(field, f"must be a list, got {type(value).__name__}")
        return None
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            problems.add(f"{field}[{i}]", f"must be a string, got {type(item).__name__}")
        else:
            out.append(item)
    return out


def _parse_methods(value: object, problems: _Problems) -> tuple[str, ...]:
    if value is None:
        problems.add("tracked_methods", "is required")
        return ()
    items = _string_list(value, "tracked_methods", problems)
    if items is None:
        return ()
    if not isinstance(value, Sequence) or len(value) == 0:
        problems.add("tracked_methods", "must list at least one method")
    out: list[str] = []
    for i, method in enumerate(items):
        rest = _REST_METHOD.fullmatch(method)
        if rest is not None:
            bad = [
                s
                for s in rest.group(2).split("/")
                if ("{" in s or "}" in s) and not _TEMPLATE.fullmatch(s)
            ]
            if bad:
                problems.add(
                    f"tracked_methods[{i}]",
                    f"{method!r}: a template must be a whole segment like {{id}}, got {bad[0]!r}",
                )
                continue
            normalized = f"{rest.group(1).upper()} {rest.group(2)}"
        elif _DOTTED_METHOD.fullmatch(method):
            normalized = method
        else:
            problems.add(
                f"tracked_methods[{i}]",
                f"{method!r} is neither a dotted method (chat.completions.create) "
                "nor a REST key ('GET /v2/streaming.list')",
            )
            continue
        if normalized not in out:
            out.append(normalized)
    return tuple(out)


def _parse_request_fields(value: object, problems: _Problems) -> tuple[str, ...]:
    items = _string_list(value, "request_fields", problems)
    if items is None:
        return ()
    out: list[str] = []
    for i, name in enumerate(items):
        if not _SEGMENT.fullmatch(name) or name.startswith("__"):
            problems.add(f"request_fields[{i}]", f"{name!r} is not a usable argument name")
        elif name not in out:
            out.append(name)
    return tuple(out)


def _parse_response_fields(value: object, problems: _Problems) -> tuple[ResponseField, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        problems.add("response_fields", f"must be a list, got {type(value).__name__}")
        return ()
    out: list[ResponseField] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        field = f"response_fields[{i}]"
        path: object
        if isinstance(item, str):
            if item == "":
                problems.add(field, 'a bare path must not be empty (use {"key": ..., "path": ""})')
                continue
            path, key = item, item.rpartition(".")[2]
        elif isinstance(item, Mapping):
            extra = set(item) - {"key", "path"}
            if extra:
                problems.add(field, f"unknown keys {sorted(map(str, extra))}")
                continue
            raw_key, path = item.get("key"), item.get("path")
            if not isinstance(raw_key, str) or not _SEGMENT.fullmatch(raw_key):
                problems.add(f"{field}.key", f"must be a name without dots, got {raw_key!r}")
                continue
            key = raw_key
        else:
            problems.add(
                field, f"must be a path string or {{key, path}}, got {type(item).__name__}"
            )
            continue
        steps = _parse_path(path, f"{field}.path" if isinstance(item, Mapping) else field, problems)
        if steps is None:
            continue
        if key in seen:
            problems.add(field, f"duplicate key {key!r}")
            continue
        seen.add(key)
        out.append(ResponseField(key=key, path=str(path), steps=steps))
    return tuple(out)


def _parse_mapping(
    value: object,
    *,
    request_fields: set[str],
    response_keys: set[str],
    has_static: bool,
    problems: _Problems,
) -> tuple[PayloadSource, ...]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        problems.add("payload_mapping", f"must be a mapping, got {type(value).__name__}")
        return ()
    if not value and not has_static:
        problems.add("payload_mapping", "is empty: the config would send nothing")
        return ()
    out: list[PayloadSource] = []
    for key, source in value.items():
        field = f"payload_mapping.{key}"
        if not isinstance(key, str) or not key:
            problems.add("payload_mapping", f"keys must be non-empty strings, got {key!r}")
            continue
        if not isinstance(source, str):
            problems.add(field, f"a source must be a string, got {type(source).__name__}")
            continue
        parsed = _parse_source(key, source, field, request_fields, response_keys, problems)
        if parsed is not None:
            out.append(parsed)
    return tuple(out)


def _parse_source(
    key: str,
    source: str,
    field: str,
    request_fields: set[str],
    response_keys: set[str],
    problems: _Problems,
) -> PayloadSource | None:
    root, dot, rest = source.partition(".")
    try:
        kind = SourceKind(root)
    except ValueError:
        allowed = ", ".join(k.value for k in SourceKind)
        problems.add(field, f"unknown source {source!r}; sources are {allowed} (+ .path for data)")
        return None
    if not dot:
        return PayloadSource(key=key, source=source, kind=kind)
    if kind not in _PATH_SOURCES:
        problems.add(field, f"source {root!r} takes no path, got {source!r}")
        return None
    if rest == "":
        problems.add(field, f"malformed source {source!r}")
        return None
    steps = _parse_path(rest, field, problems)
    if steps is None:
        return None
    if kind is SourceKind.USAGE_DATA:
        return PayloadSource(key=key, source=source, kind=kind, steps=steps)
    name = steps[0][0]
    declared = request_fields if kind is SourceKind.REQUEST_DATA else response_keys
    if name not in declared:
        where = "request_fields" if kind is SourceKind.REQUEST_DATA else "response_fields"
        problems.add(field, f"{source!r} names {name!r}, which is not in {where}")
        return None
    return PayloadSource(key=key, source=source, kind=kind, name=name, steps=steps[1:])


def _parse_static(value: object, problems: _Problems) -> dict[str, JSONValue]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add("static_payload_fields", f"must be a mapping, got {type(value).__name__}")
        return {}
    try:
        plain = to_plain(value, field="static_payload_fields")
    except RecordError as exc:
        problems.add(exc.field, str(exc).partition(": ")[2] or str(exc))
        return {}
    assert isinstance(plain, dict)
    return plain


def _parse_streaming(value: object, problems: _Problems) -> StreamingConfig | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add("streaming", f"must be a mapping, got {type(value).__name__}")
        return None
    items = _string_list(value.get("final_fields"), "streaming.final_fields", problems)
    if items is None:
        return None
    fields: list[ResponseField] = []
    for i, path in enumerate(items):
        field = f"streaming.final_fields[{i}]"
        if path == "":
            problems.add(field, "must not be empty")
            continue
        steps = _parse_path(path, field, problems)
        if steps is not None:
            key = path.rpartition(".")[2]
            if all(f.key != key for f in fields):
                fields.append(ResponseField(key=key, path=path, steps=steps))
    return StreamingConfig(final_fields=tuple(fields))
