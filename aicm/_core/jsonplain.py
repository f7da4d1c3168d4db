"""Turn user values into plain JSON data, rejecting what JSON cannot carry (layer 1, pure).

Plain data is ``dict`` (string keys), ``list``, ``str``, ``int``, ``float`` (finite),
``bool`` and ``None``. The result is always a fresh copy, so a caller who mutates their
dict after ``track`` returns cannot change a queued record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import importlib
import json
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeAlias

from .exceptions import (
    InvalidKeyError,
    NonFiniteNumberError,
    NotSerializableError,
    RecordError,
    RecordTooLargeError,
    shown,
)

__all__ = [
    "JSONValue",
    "check_size",
    "dumps",
    "dumps_bytes",
    "dumps_canonical",
    "loads",
    "plain_mapping",
    "plain_size_bound",
    "stdlib_dumps",
    "stdlib_loads",
    "to_plain",
]

JSONValue: TypeAlias = "dict[str, JSONValue] | list[JSONValue] | str | int | float | bool | None"

_MAX_DEPTH = 64
# An upper bound of the JSON bytes one scalar takes, so most records skip a real dumps().
_NUMBER_BOUND = 32


# orjson, when installed (the ``speedups`` extra), encodes a record in a tenth of the
# stdlib's time; it is an accelerator, never a requirement. Records reaching these
# functions are already plain and finite (to_plain), so both give the same JSON.
_orjson: Any
try:
    _orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


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


def stdlib_dumps(value: Any) -> bytes:
    """Encode compact UTF-8 JSON with the stdlib, as orjson writes it (floats aside)."""
    return _ENCODER.encode(value).encode()


def dumps(value: Any) -> str:
    """Serialise plain data compactly; NaN and Infinity are refused."""
    if _orjson is not None:
        try:
            text: str = _orjson.dumps(value).decode()
            return text
        except (TypeError, _orjson.JSONEncodeError):
            pass  # e.g. an int beyond 64 bits: the stdlib writes it
    return _ENCODER.encode(value)


def dumps_bytes(value: Any) -> bytes:
    """`dumps()` as UTF-8 bytes (an HTTP body)."""
    if _orjson is not None:
        try:
            data: bytes = _orjson.dumps(value)
            return data
        except (TypeError, _orjson.JSONEncodeError):
            pass
    return _ENCODER.encode(value).encode()


def dumps_canonical(value: Any) -> bytes:
    """Encode JSON with sorted keys, so equal documents give equal bytes (and ETags)."""
    if _orjson is not None:
        try:
            data: bytes = _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)
            return data
        except (TypeError, _orjson.JSONEncodeError):
            pass
    return _CANONICAL_ENCODER.encode(value).encode()


def loads(text: str | bytes) -> Any:
    """Parse JSON (orjson when installed); ``ValueError`` when it is not JSON (NaN,
    Infinity and lone surrogates included, with or without orjson)."""
    if _orjson is not None:
        return _orjson.loads(text)
    return stdlib_loads(text)


def to_plain(value: Any, *, field: str = "usage") -> JSONValue:
    """Return ``value`` as a fresh tree of plain JSON data.

    Dataclasses, objects with ``model_dump()`` (pydantic v2) or ``dict()`` (pydantic v1),
    enums, datetimes, dates, UUIDs, Decimals, tuples and sets are converted; anything else
    raises [`NotSerializableError`][aicm.NotSerializableError] naming the path of the offending
    value.
    """
    return _plain(value, field, 0)


def plain_mapping(value: Any, *, field: str) -> tuple[dict[str, JSONValue], int]:
    """Return ``value`` (a mapping) as a fresh plain dict, and an upper bound of its JSON size.

    The common case, a flat dict of strings and numbers, takes one pass; anything else
    goes through `to_plain()`.
    """
    if type(value) is dict:
        bound = 2
        flat = True
        for k, v in value.items():
            t = type(v)
            if type(k) is not str or not k.isascii():
                flat = False
                break
            if t is str:
                if not v.isascii():
                    flat = False
                    break
                bound += 6 * (len(k) + len(v)) + 8
            elif (
                (t is int and v.bit_length() <= _FAST_INT_BITS)
                or t is bool
                or v is None
                or (t is float and math.isfinite(v))
            ):
                bound += 6 * len(k) + 40
            else:
                flat = False
                break
        if flat:
            return dict(value), bound
    plain = to_plain(value, field=field)
    if type(plain) is not dict:
        raise NotSerializableError(
            f"{field} must be a mapping, got {type(value).__name__}", field=field
        )
    return plain, _size_bound(plain, 1 << 62)


def check_size(value: JSONValue, *, field: str, limit: int) -> int:
    """Raise [`RecordTooLargeError`][aicm.RecordTooLargeError] when ``value`` serialises to more
    than ``limit`` bytes.

    Returns an upper bound of the size (the exact size when it had to be computed).
    """
    bound = _size_bound(value, limit)
    if bound <= limit:
        return bound
    # Measured with the stdlib encoder: the limit means the same with or without orjson.
    size = len(_ENCODER.encode(value).encode("utf-8"))
    if size > limit:
        raise RecordTooLargeError(
            f"record is {size} bytes as JSON, over the limit of {limit} bytes",
            field=field,
            size=size,
            limit=limit,
        )
    return size


def _size_bound(value: JSONValue, limit: int) -> int:
    # Worst case per character is 4 UTF-8 bytes; escapes (\uXXXX) are 6 but only for
    # control characters, so 6 per character is a true upper bound.
    t = type(value)
    if t is str:
        return 6 * len(value) + 2  # type: ignore[arg-type]
    if t is dict:
        total = 2
        for k, v in value.items():  # type: ignore[union-attr]
            total += 6 * len(k) + 4 + _size_bound(v, limit)
            if total > limit:
                return total
        return total
    if t is list:
        total = 2
        for v in value:  # type: ignore[union-attr]
            total += _size_bound(v, limit) + 1
            if total > limit:
                return total
        return total
    if t is int and value.bit_length() > _FAST_INT_BITS:  # type: ignore[union-attr]
        return len(str(value)) + 2
    return _NUMBER_BOUND


def plain_size_bound(value: Any) -> int:
    """An upper bound of ``value``'s JSON size in bytes when `to_plain()` would return an
    equal copy of it (str-keyed dicts, lists, ASCII strings, ints of at most 60 bits, bools,
    None, finite floats); -1 otherwise (then `to_plain()` converts it or names the
    problem). One walk, for data that is plain already (an extracted payload)."""
    return _plain_bound(value, 0)


def _plain_bound(value: Any, depth: int) -> int:
    t = type(value)
    if t is dict:
        if depth >= _MAX_DEPTH:
            return -1
        total = 2
        for k, v in value.items():
            if type(k) is not str or not k.isascii():
                return -1
            tv = type(v)
            if tv is str and v.isascii():
                total += 6 * (len(k) + len(v)) + 8
            elif (tv is int and v.bit_length() <= _FAST_INT_BITS) or tv is bool or v is None:
                total += 6 * len(k) + 4 + _NUMBER_BOUND
            else:
                inner = _plain_bound(v, depth + 1)
                if inner < 0:
                    return -1
                total += 6 * len(k) + 4 + inner
        return total
    if t is list:
        if depth >= _MAX_DEPTH:
            return -1
        total = 2
        for v in value:
            inner = _plain_bound(v, depth + 1)
            if inner < 0:
                return -1
            total += inner + 1
        return total
    if t is str:
        return 6 * len(value) + 2 if value.isascii() else -1
    if t is int:
        return _NUMBER_BOUND if value.bit_length() <= _FAST_INT_BITS else -1
    if t is float:
        return _NUMBER_BOUND if math.isfinite(value) else -1
    return _NUMBER_BOUND if t is bool or value is None else -1


# Ints beyond this many bits go through an exact check: str() of them is costly, and
# past Python's digit limit it raises, so JSON could not carry them at send time.
_FAST_INT_BITS = 60


def _check_str(value: str, path: str) -> str:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NotSerializableError(
                f"string is not valid Unicode (lone surrogate at {exc.start})", field=path
            ) from None
    return value


# JSON parsers commonly read integers as 64-bit (the service's among them): beyond that
# a record would only be refused later, by the service, and dead-lettered.
_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1


def _check_int(value: int, path: str) -> int:
    if value.bit_length() > _FAST_INT_BITS and not _MIN_INT <= value <= _MAX_INT:
        raise NotSerializableError(
            "integer is outside the 64-bit range JSON readers accept", field=path
        )
    return value


def _key(k: Any, path: str) -> str:
    if isinstance(k, enum.Enum) and isinstance(k.value, str):
        return _check_str(k.value, path)  # as json.dumps writes a str-enum key
    if isinstance(k, str):
        return _check_str(str(k), path)
    raise InvalidKeyError(
        f"mapping keys must be strings, got {type(k).__name__} {shown(k)}", field=path
    )


def _plain(value: Any, path: str, depth: int) -> JSONValue:
    t = type(value)
    if t is str:
        return _check_str(value, path)
    if t is int:
        return _check_int(value, path)
    if t is bool or value is None:
        return value  # type: ignore[no-any-return]
    if t is float:
        if math.isfinite(value):
            return value  # type: ignore[no-any-return]
        raise NonFiniteNumberError(f"{value!r} is not a finite number", field=path)
    if depth >= _MAX_DEPTH:
        raise NotSerializableError(f"nested deeper than {_MAX_DEPTH} levels", field=path)
    try:
        return _plain_container(value, path, depth)
    except RecordError:
        raise
    except Exception as exc:
        # A caller's object whose __getitem__, __iter__, items(), model_dump() or tzinfo
        # raises: a RecordError naming the field, never the object's own exception.
        raise NotSerializableError(
            f"reading a {type(value).__module__}.{type(value).__qualname__} raised "
            f"{type(exc).__name__}",
            field=path,
        ) from exc


def _plain_container(value: Any, path: str, depth: int) -> JSONValue:
    if isinstance(value, Mapping):
        out: dict[str, JSONValue] = {}
        for k, v in value.items():
            if type(k) is not str or not k.isascii():
                k = _key(k, path)
            tv = type(v)
            # Plain scalars are copied inline: no recursion, no child path string.
            if (
                (tv is str and v.isascii())
                or (tv is int and v.bit_length() <= _FAST_INT_BITS)
                or tv is bool
                or v is None
                or (tv is float and math.isfinite(v))
            ):
                out[k] = v
            else:
                out[k] = _plain(v, f"{path}.{k}", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    return _plain_other(value, path, depth)


# A double's range: about 4.9e-324 (subnormal) to 1.8e308. Decimal's adjusted() exponent
# is checked first, so 1e1000000 is refused at once instead of being built as an int.
_MAX_ADJUSTED = 308
_MIN_ADJUSTED = -324
# Integral Decimals below 10**19 go out as integers (the 64-bit range); larger ones as
# doubles, like every JSON reader would read them.
_INT_ADJUSTED = 18


def _decimal(value: Decimal, path: str) -> int | float:
    if not value.is_finite():
        raise NonFiniteNumberError(f"{shown(value)} is not a finite number", field=path)
    if value.is_zero():
        return 0
    adjusted = value.adjusted()
    number: int | float
    if _MIN_ADJUSTED <= adjusted <= _INT_ADJUSTED and value == value.to_integral_value():
        number = _check_int(int(value), path)
        return number
    if _MIN_ADJUSTED <= adjusted <= _MAX_ADJUSTED:
        number = float(value)
        if number != 0.0 and math.isfinite(number):
            return number
    digits = len(value.as_tuple().digits)
    named = shown(value) if digits <= 40 else f"a Decimal of {digits} digits (10**{adjusted})"
    raise NonFiniteNumberError(
        f"{named} is beyond what a JSON number (a double, about 4.9e-324 to 1.8e308 in size) holds",
        field=path,
    )


def _plain_other(value: Any, path: str, depth: int) -> JSONValue:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value, path, depth + 1)
    if isinstance(value, int):
        return _check_int(int(value), path)
    if isinstance(value, float):
        return _plain(float(value), path, depth)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Decimal):
        return _decimal(value, path)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        text: str = value.astimezone(dt.timezone.utc).isoformat()
        return text.replace("+00:00", "Z")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset)):
        items = [_plain(v, f"{path}[]", depth + 1) for v in value]
        try:
            return sorted(items)  # type: ignore[type-var]
        except TypeError:
            return items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _plain(fields, path, depth + 1)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        dumped: Any = dump(mode="json")
        return _plain(dumped, path, depth + 1)
    legacy = getattr(value, "dict", None)
    if callable(legacy) and hasattr(value, "__fields__") and not isinstance(value, type):
        return _plain(legacy(), path, depth + 1)
    raise NotSerializableError(
        f"{type(value).__module__}.{type(value).__qualname__} is not JSON-serialisable",
        field=path,
    )
