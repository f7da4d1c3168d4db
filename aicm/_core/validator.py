"""The manual-usage schema type language: check values against type strings (layer 1, pure).

A type string is parsed into an immutable `TypeSpec` tree (``typespec.py``); each
tree is compiled once into a checker closure, and a ``manual_usage_schema`` is compiled
into a `UsageSchema` whose ``validate`` reports every problem of a usage dict in
one [`UsageValidationError`][aicm.UsageValidationError].
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final

import attrs

from .exceptions import SchemaError, UsageValidationError, shown
from .typespec import ANY, MAX_TYPE_DEPTH, TypeSpec, parse_type

__all__ = [
    "MAX_TYPE_DEPTH",
    "SchemaField",
    "TypeSpec",
    "TypeValidator",
    "UsageSchema",
    "compile_schema",
]

_Check = Callable[[object], "str | None"]
_Shape = Callable[[object], bool]


# ---------------------------------------------------------------------------
# Checkers: each TypeSpec is compiled once into a closure
# ---------------------------------------------------------------------------


def _describe(value: object) -> str:
    """``str 'oops'``, ``bool True``, ``None``, ``list``: enough to spot the mistake."""
    if value is None:
        return "None"
    name = type(value).__name__
    if isinstance(value, (str, int, float)):
        text = shown(value)
        if len(text) > 40:
            text = text[:37] + "..."
        return f"{name} {text}"
    return name


def _is_int(value: object) -> bool:
    # bool subclasses int, but True is never a token count.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _always(value: object) -> bool:
    return True


# JSON has no tuples or sets: a usage dict that went through JSON holds lists where the
# user wrote tuples or sets, so ``tuple`` and ``set`` accept lists too.
_SHAPES: Final[dict[str, tuple[_Shape, frozenset[type]]]] = {
    "int": (_is_int, frozenset({int})),
    "float": (_is_number, frozenset({int, float})),
    "str": (lambda v: isinstance(v, str), frozenset({str})),
    "bool": (lambda v: isinstance(v, bool), frozenset({bool})),
    "list": (lambda v: isinstance(v, list), frozenset({list})),
    "tuple": (lambda v: isinstance(v, (tuple, list)), frozenset({tuple, list})),
    "set": (lambda v: isinstance(v, (set, frozenset, list)), frozenset({set, frozenset, list})),
    "dict": (lambda v: isinstance(v, Mapping), frozenset({dict})),
    "none": (lambda v: v is None, frozenset({type(None)})),
    "any": (_always, frozenset()),
}


def _accept_all(value: object) -> str | None:
    return None


@functools.lru_cache(maxsize=1024)
def _compile(spec: TypeSpec) -> tuple[_Check, _Shape]:
    """The checker of ``spec`` and the test of its outer shape (used to explain unions)."""
    expected = str(spec)
    if spec.kind == "any":
        return _accept_all, _always
    if spec.kind == "union":
        return _compile_union(spec, expected)
    shape, fast_types = _SHAPES[spec.kind]

    def mismatch(value: object) -> str:
        return f"expected {expected}, got {_describe(value)}"

    if spec.kind == "list" and spec.args and spec.args[0].kind != "any":
        check_item = _compile(spec.args[0])[0]

        def check_list(value: object) -> str | None:
            if not isinstance(value, list):
                return mismatch(value)
            for index, item in enumerate(value):
                message = check_item(item)
                if message is not None:
                    return f"item {index}: {message}"
            return None

        return check_list, shape

    if spec.kind == "dict" and spec.args and spec.args != (ANY, ANY):
        check_key = _compile(spec.args[0])[0]
        check_value = _compile(spec.args[1])[0]

        def check_dict(value: object) -> str | None:
            if type(value) is not dict and not isinstance(value, Mapping):
                return mismatch(value)
            for key, item in value.items():
                message = check_key(key)
                if message is not None:
                    return f"key {shown(key)}: {message}"
                message = check_value(item)
                if message is not None:
                    return f"value for key {shown(key)}: {message}"
            return None

        return check_dict, shape

    def check_scalar(value: object) -> str | None:
        if type(value) in fast_types or shape(value):
            return None
        return mismatch(value)

    return check_scalar, shape


def _compile_union(spec: TypeSpec, expected: str) -> tuple[_Check, _Shape]:
    compiled = [_compile(member) for member in spec.args]
    if any(member.kind == "any" for member in spec.args):
        return _accept_all, _always
    checks = [check for check, _ in compiled]

    def shape(value: object) -> bool:
        return any(member_shape(value) for _, member_shape in compiled)

    def check_union(value: object) -> str | None:
        for check in checks:
            if check(value) is None:
                return None
        # When only one member has the right outer shape (a list for Optional[List[int]]),
        # its own message points at the bad item; otherwise name the whole union.
        candidates = [check for check, member_shape in compiled if member_shape(value)]
        if len(candidates) == 1:
            message = candidates[0](value)
            if message is not None:
                return message
        return f"expected {expected}, got {_describe(value)}"

    return check_union, shape


@functools.lru_cache(maxsize=1024)
def _checker_for(text: str) -> _Check:
    return _compile(parse_type(text))[0]


def _spec_of(type_string: str | TypeSpec) -> TypeSpec:
    if isinstance(type_string, TypeSpec):
        return type_string
    if not isinstance(type_string, str):
        raise SchemaError(f"a type must be a string, got {_describe(type_string)}")
    return parse_type(type_string)


class TypeValidator:
    """Parse type strings and check values against them.

    Names: ``int``, ``float``, ``str``, ``bool``, ``list``/``List[T]``,
    ``dict``/``Dict[K, V]``, ``tuple``, ``set``, ``Optional[T]``, ``Union[A, B, ...]``,
    ``A | B``, ``None``/``NoneType`` and ``Any``/``any``; ``list[T]`` and ``dict[K, V]``
    are the same as their capitalised forms. Rules: ``bool`` is neither an ``int`` nor a
    ``float``; an ``int`` is a valid ``float``; ``None`` is valid only where the type
    admits it; ``tuple`` also accepts a list and ``set`` a frozenset or a list, since JSON
    carries both as arrays; ``dict`` accepts any mapping.

    Every method also takes an already parsed `TypeSpec`. Parsing and compiling
    are cached by type string.
    """

    __slots__ = ()

    @staticmethod
    def parse(type_string: str) -> TypeSpec:
        """The tree of ``type_string``; [`SchemaError`][aicm.SchemaError] if it is malformed."""
        return _spec_of(type_string)

    @staticmethod
    def check(value: object, type_string: str | TypeSpec) -> str | None:
        """``None`` when ``value`` has the type, else what is wrong with it.

        For example ``"expected int, got str 'oops'"`` or
        ``"item 2: expected int, got bool True"`` (items count from 0).
        """
        if isinstance(type_string, str):
            return _checker_for(type_string)(value)
        return _compile(_spec_of(type_string))[0](value)

    @staticmethod
    def is_valid(value: object, type_string: str | TypeSpec) -> bool:
        """Whether ``value`` has the type of ``type_string``."""
        return TypeValidator.check(value, type_string) is None


# ---------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SchemaField:
    """One field of a compiled schema.

    A field is ``required`` unless its schema says otherwise or its type admits ``None``.
    """

    name: str
    type_spec: TypeSpec
    required: bool


_ABSENT: Final = object()


@attrs.frozen(kw_only=True)
class UsageSchema:
    """A compiled ``manual_usage_schema``: ``validate`` checks one usage dict.

    Fields not in the schema are errors unless ``allow_extra`` is true;
    ``attrs.evolve(schema, allow_extra=True)`` gives a tolerant copy.
    """

    fields: tuple[SchemaField, ...]
    allow_extra: bool = False
    _rules: tuple[tuple[str, _Check, bool], ...] = attrs.field(init=False, eq=False, repr=False)
    _names: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        names = [field.name for field in self.fields]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise SchemaError(f"manual_usage_schema: duplicate fields {duplicates}")
        rules = tuple(
            (field.name, _compile(field.type_spec)[0], field.required) for field in self.fields
        )
        object.__setattr__(self, "_rules", rules)
        object.__setattr__(self, "_names", frozenset(names))

    @property
    def field_names(self) -> tuple[str, ...]:
        """The schema's fields, in schema order."""
        return tuple(field.name for field in self.fields)

    def validate(self, usage: Mapping[str, Any]) -> None:
        """Return if ``usage`` matches; else raise one
        [`UsageValidationError`][aicm.UsageValidationError].

        The error lists every problem: ``errors`` (field -> message), ``missing_fields``
        and ``extra_fields``.
        """
        if not isinstance(usage, Mapping):
            raise UsageValidationError({"usage": f"expected a mapping, got {_describe(usage)}"})
        errors: dict[str, str] = {}
        missing: list[str] = []
        present = 0
        for name, check, required in self._rules:
            try:
                value = usage.get(name, _ABSENT)
                if value is _ABSENT:
                    if required:
                        missing.append(name)
                    continue
                present += 1
                message = check(value)
            except Exception as exc:  # a caller's mapping or value whose methods raise
                message = f"reading it raised {type(exc).__name__}"
            if message is not None:
                errors[name] = message
        extra: list[str] = []
        try:
            # Counting avoids a pass over the usage keys in the common all-known case.
            if not self.allow_extra and present != len(usage):
                extra = [
                    key if type(key) is str else shown(key)
                    for key in usage
                    if key not in self._names
                ]
        except Exception as exc:
            errors["usage"] = f"reading its keys raised {type(exc).__name__}"
        if errors or missing or extra:
            raise UsageValidationError(errors, missing_fields=missing, extra_fields=extra)


def compile_schema(schema: Mapping[str, Any], *, allow_extra: bool = False) -> UsageSchema:
    """Compile a ``manual_usage_schema`` into a `UsageSchema`.

    Two forms are accepted: ``{field: type_string}``, and
    ``{"fields": {field: type_string | {"type": type_string, "required": bool}}}`` (other
    top-level keys of the second form are ignored, so the service may add metadata).
    Every bad field is reported in one [`SchemaError`][aicm.SchemaError] that names each field.
    Results are cached when the schema holds only plain JSON values.
    """
    if not isinstance(schema, Mapping):
        raise SchemaError(f"manual_usage_schema must be a mapping, got {_describe(schema)}")
    try:
        key = _freeze(schema)
    except _Unfreezable:
        return _compile_schema(schema, allow_extra)
    return _compile_schema_cached(key, allow_extra)


class _Unfreezable(Exception):
    pass


def _freeze(obj: object) -> Hashable:
    # Tags keep 1, 1.0 and True (equal, same hash) from sharing a cache entry, and a
    # list from passing for a mapping.
    if isinstance(obj, str):
        return obj
    if isinstance(obj, Mapping):
        return ("m", tuple((_freeze(k), _freeze(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return ("l", tuple(_freeze(item) for item in obj))
    if obj is None or isinstance(obj, (bool, int, float)):
        return (type(obj).__name__, obj)
    raise _Unfreezable


def _thaw(key: Any) -> Any:
    if isinstance(key, str):
        return key
    tag, body = key
    if tag == "m":
        return {_thaw(k): _thaw(v) for k, v in body}
    if tag == "l":
        return [_thaw(item) for item in body]
    return body


@functools.lru_cache(maxsize=256)
def _compile_schema_cached(key: Hashable, allow_extra: bool) -> UsageSchema:
    return _compile_schema(_thaw(key), allow_extra)


def _compile_schema(schema: Mapping[Any, Any], allow_extra: bool) -> UsageSchema:
    nested = schema.get("fields")
    entries: Mapping[Any, Any] = nested if isinstance(nested, Mapping) else schema
    fields: list[SchemaField] = []
    problems: list[str] = []
    for name, entry in entries.items():
        try:
            fields.append(_compile_field(name, entry))
        except SchemaError as exc:
            problems.append(f"field {name!r}: {exc}")
    if problems:
        raise SchemaError("manual_usage_schema: " + "; ".join(problems))
    return UsageSchema(fields=tuple(fields), allow_extra=allow_extra)


def _compile_field(name: object, entry: object) -> SchemaField:
    if not isinstance(name, str):
        raise SchemaError(f"field names must be strings, got {_describe(name)}")
    required: bool | None = None
    if isinstance(entry, Mapping):
        if "type" not in entry:
            raise SchemaError('a field given as a mapping needs a "type"')
        required = entry.get("required")
        if required is not None and not isinstance(required, bool):
            raise SchemaError(f'"required" must be true or false, got {_describe(required)}')
        entry = entry["type"]
    if not isinstance(entry, str):
        raise SchemaError(f"the type must be a string, got {_describe(entry)}")
    spec = parse_type(entry)
    if required is None:
        required = not spec.admits_none
    return SchemaField(name=name, type_spec=spec, required=required)
