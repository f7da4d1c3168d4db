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


def stdlib_loads(data: bytes | str) -> Any:
    """Decode JSON with the stdlib, refusing NaN and Infinity like orjson."""
    return json.loads(data, parse_constant=_reject_constant)


def stdlib_dumps(obj: Any) -> bytes:
    """Encode compact UTF-8 JSON with the stdlib, byte for byte what orjson writes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


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
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps_canonical(obj: Any) -> bytes:
    """Encode JSON with sorted keys, so equal documents give equal bytes (and ETags)."""
    if HAVE_ORJSON:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return json.dumps(
        obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
    ).encode()
