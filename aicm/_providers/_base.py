"""What every built-in provider shares: the answer it reads and plain usage (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .._core.extractor import is_http_object
from .._core.handling import is_credential_name

__all__ = ["Builtin", "Usage", "builtin", "first_attr", "found", "plain_usage", "read_answer"]


@attrs.frozen(kw_only=True, slots=True)
class Usage:
    """What one provider call consumed: the model that answered, its id, its usage object."""

    vendor: str
    model: str
    response_id: str | None
    payload: dict[str, Any]


def plain_usage(value: Any) -> dict[str, Any]:
    """A provider's usage object as plain JSON data, with null fields dropped.

    Like a handling config's values, it never carries a credential: credential-named keys
    (``api_key``, ``access_token``, ``*_headers``...; a proxy may echo them as extra
    fields) and HTTP header or message objects are left out.
    """
    if is_http_object(value):
        return {}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            value = dump(mode="json", exclude_none=True)
        except TypeError:
            value = dump()
    elif not isinstance(value, Mapping) and hasattr(value, "__dict__"):
        value = {k: v for k, v in vars(value).items() if not k.startswith("_")}
    plain = _plain(value)
    return plain if isinstance(plain, dict) else {}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): _plain(v)
            for k, v in value.items()
            if v is not None and not is_credential_name(str(k)) and not is_http_object(v)
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value if v is not None and not is_http_object(v)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _plain(dump(mode="json", exclude_none=True))
    return str(value)


def first_attr(obj: Any, *names: str) -> Any:
    """The first of ``names`` that ``obj`` has (attribute or mapping key) and is not None."""
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


#: What a reader finds in an answer: (model, response id, plain usage), or None.
Found = tuple[str | None, str | None, dict[str, Any]]
Reader = Callable[[str, Mapping[str, Any], Any], "Found | None"]
StreamReader = Callable[[str, Mapping[str, Any], Sequence[Any]], "Found | None"]


def found(model: Any, response_id: Any, usage: Any) -> Found:
    """What a reader found: the model and id where they are strings, the usage made plain."""
    return (
        model if isinstance(model, str) else None,
        response_id if isinstance(response_id, str) else None,
        plain_usage(usage) if usage is not None else {},
    )


def read_answer(path: str, kwargs: Mapping[str, Any], response: Any) -> Found | None:
    """The ``model``, ``id`` and ``usage`` attributes of an answer (OpenAI's and Anthropic's
    SDK objects)."""
    return found(
        getattr(response, "model", None),
        getattr(response, "id", None),
        getattr(response, "usage", None),
    )


@attrs.frozen(kw_only=True)
class Builtin:
    """A provider's built-in tracking: which calls it reads and how.

    ``read(path, kwargs, response)`` and ``read_stream(path, kwargs, chunks)`` find the
    model, id and usage of one call; `usage()` and `stream_usage()` give them as a
    `Usage` under this built-in's vendor, or None when no model is known.
    """

    name: str
    vendor: str
    paths: frozenset[str]
    read: Reader
    read_stream: StreamReader
    default_api_id: str | None = None
    stream_paths: frozenset[str] = frozenset()

    def tracks(self, path: str) -> bool:
        """True when calls of ``path`` are read by this built-in."""
        return path in self.paths

    def usage(self, path: str, kwargs: Mapping[str, Any], response: Any) -> Usage | None:
        """The `Usage` of a call that returned ``response``."""
        return self._usage(self.read(path, kwargs, response), kwargs)

    def stream_usage(
        self, path: str, kwargs: Mapping[str, Any], chunks: Sequence[Any]
    ) -> Usage | None:
        """The `Usage` of a streamed call, from the ``chunks`` it yielded."""
        return self._usage(self.read_stream(path, kwargs, chunks), kwargs)

    def _usage(self, found: Found | None, kwargs: Mapping[str, Any]) -> Usage | None:
        if found is None:
            return None
        model, response_id, payload = found
        if not model:
            # The answer did not name its model (a stream left before its first chunk):
            # the model asked for is the best that is known.
            requested = kwargs.get("model", kwargs.get("modelId"))
            model = requested if isinstance(requested, str) else None
        if not model:
            return None
        return Usage(
            vendor=self.vendor,
            model=model,
            response_id=response_id if isinstance(response_id, str) and response_id else None,
            payload=payload,
        )

    def with_vendor(self, vendor: str) -> Builtin:
        """The same built-in recording under another vendor name."""
        return attrs.evolve(self, vendor=vendor)


def builtin(
    name: str,
    methods: Iterable[str],
    read: Reader,
    read_stream: StreamReader,
    *,
    vendor: str | None = None,
    **options: Any,
) -> Builtin:
    """The ``Builtin`` ``name`` (recording under ``vendor``, ``name`` by default) that
    reads calls of ``methods``; ``options`` are its other fields."""
    return Builtin(
        name=name,
        vendor=vendor or name,
        paths=frozenset(methods),
        read=read,
        read_stream=read_stream,
        **options,
    )


def paths_under(prefixes: Iterable[str], methods: Iterable[str]) -> frozenset[str]:
    """Every ``prefix + method`` (``""`` and ``"aio."`` prefixes for sync and async twins)."""
    return frozenset(p + m for p in prefixes for m in methods)
