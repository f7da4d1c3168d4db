"""JSON for the collector (layer 6): orjson when it is installed, else the stdlib, same text."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # orjson is optional: the stdlib gives the same results, only slower
    HAVE_ORJSON = False
else:
    HAVE_ORJSON = True

__all__ = ["HAVE_ORJSON", "dumps", "dumps_canonical", "dumps_text", "loads"]


def _reject_constant(name: str) -> Any:
    # JSON has no NaN or Infinity; the stdlib accepts them unless told not to (orjson never does).
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads/dumps with options build a new decoder/encoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_CANONICAL_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
)


def stdlib_loads(data: bytes | str) -> Any:
    """Decode JSON with the stdlib, refusing NaN, Infinity and lone surrogates like orjson."""
    if isinstance(data, bytes):
        data = data.decode(json.detect_encoding(data))  # invalid UTF-8 is a ValueError
    value = _DECODER.decode(data)
    if "\\ud" in data or "\\uD" in data:  # rare: only then look for an unpaired surrogate
        _ENCODER.encode(value).encode()  # UnicodeEncodeError (a ValueError) if there is one
    return value


def stdlib_dumps(obj: Any) -> bytes:
    """Encode compact UTF-8 JSON with the stdlib, as orjson writes it (floats aside)."""
    return _ENCODER.encode(obj).encode()


def loads(data: bytes | str) -> Any:
    """Decode JSON; raise ``ValueError`` when it is not valid JSON."""
    if HAVE_ORJSON:
        return orjson.loads(data)
    return stdlib_loads(data)


def dumps(obj: Any) -> bytes:
    """Encode compact UTF-8 JSON."""
    if HAVE_ORJSON:
        return orjson.dumps(obj)
    return stdlib_dumps(obj)


def dumps_text(obj: Any) -> str:
    """Encode compact JSON as text, the form stored in SQLite."""
    if HAVE_ORJSON:
        return orjson.dumps(obj).decode()
    return _ENCODER.encode(obj)


def dumps_canonical(obj: Any) -> bytes:
    """Encode JSON with sorted keys, so equal documents give equal bytes (and ETags)."""
    if HAVE_ORJSON:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return _CANONICAL_ENCODER.encode(obj).encode()
