"""The manual-usage schema type language: parsing, value rules, schemas, and properties."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aicm._core.exceptions import AicmError, SchemaError, UsageValidationError
from aicm._core.validator import (
    MAX_TYPE_DEPTH,
    SchemaField,
    TypeSpec,
    TypeValidator,
    UsageSchema,
    compile_schema,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Schema cases draw up to five type trees each, so fewer of them cover as much.
SCHEMA_PROPERTY = settings(PROPERTY, max_examples=100)


class _ReadOnlyMapping(Mapping[str, Any]):
    """A Mapping that is not a dict, to prove ``dict`` means any mapping."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class _Alien:
    """A value no type but ``Any`` accepts."""

    def __repr__(self) -> str:
        return "<alien>"


ALIEN = _Alien()


# ---------------------------------------------------------------------------
# Scalar rules
# ---------------------------------------------------------------------------


def test_bool_is_not_an_int() -> None:
    """``True`` is rejected where an int is expected, and the message says bool."""
    assert TypeValidator.check(True, "int") == "expected int, got bool True"


def test_bool_is_not_a_float() -> None:
    """``False`` is rejected where a float is expected."""
    assert not TypeValidator.is_valid(False, "float")


def test_int_is_a_valid_float() -> None:
    """An int is accepted where a float is expected."""
    assert TypeValidator.is_valid(3, "float")
    assert TypeValidator.is_valid(3.5, "float")


def test_float_is_not_an_int() -> None:
    """A float, even a whole one, is not an int."""
    assert TypeValidator.check(3.0, "int") == "expected int, got float 3.0"


def test_str_mismatch_message_shows_the_value() -> None:
    """A wrong scalar is described by type and value."""
    assert TypeValidator.check("oops", "int") == "expected int, got str 'oops'"


def test_long_values_are_truncated_in_messages() -> None:
    """Messages never carry a whole long string."""
    message = TypeValidator.check("x" * 500, "int")
    assert message is not None
    assert len(message) < 80


@pytest.mark.parametrize("type_string", ["int", "str", "List[int]", "dict", "bool", "float"])
def test_none_is_rejected_by_plain_types(type_string: str) -> None:
    """``None`` is invalid for a type that does not admit it."""
    assert (
        TypeValidator.check(None, type_string)
        == f"expected {TypeValidator.parse(type_string)}, got None"
    )


@pytest.mark.parametrize(
    "type_string",
    [
        "Optional[int]",
        "Union[int, None]",
        "Union[str, NoneType]",
        "int | None",
        "Any",
        "any",
        "None",
    ],
)
def test_none_is_accepted_where_admitted(type_string: str) -> None:
    """``None`` is valid for Optional, a Union with None, ``Any`` and ``None``."""
    assert TypeValidator.is_valid(None, type_string)


def test_any_accepts_everything() -> None:
    """``Any`` and ``any`` accept arbitrary objects."""
    assert TypeValidator.is_valid(ALIEN, "Any")
    assert TypeValidator.is_valid(ALIEN, "any")


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------


def test_list_accepts_only_lists() -> None:
    """``list`` rejects tuples and sets."""
    assert TypeValidator.is_valid([1, "a"], "list")
    assert TypeValidator.check((1,), "list") == "expected list, got tuple"
    assert not TypeValidator.is_valid({1}, "list")


def test_tuple_accepts_tuples_and_lists() -> None:
    """``tuple`` accepts a list too, since JSON carries tuples as arrays."""
    assert TypeValidator.is_valid((1, 2), "tuple")
    assert TypeValidator.is_valid([1, 2], "tuple")
    assert not TypeValidator.is_valid({1, 2}, "tuple")


def test_set_accepts_sets_frozensets_and_lists() -> None:
    """``set`` accepts a frozenset and a list too."""
    for value in ({1}, frozenset({1}), [1, 1]):
        assert TypeValidator.is_valid(value, "set")
    assert not TypeValidator.is_valid((1,), "set")


def test_dict_accepts_any_mapping() -> None:
    """``dict`` and ``Dict[K, V]`` accept any Mapping, not just dict."""
    assert TypeValidator.is_valid(MappingProxyType({"a": 1}), "dict")
    assert TypeValidator.is_valid(_ReadOnlyMapping({"a": 1}), "Dict[str, int]")
    assert not TypeValidator.is_valid([("a", 1)], "dict")


def test_list_of_t_checks_every_item() -> None:
    """``List[int]`` names the first bad item by its index (from 0)."""
    assert TypeValidator.check([1, 2, True], "List[int]") == "item 2: expected int, got bool True"
    assert TypeValidator.is_valid([], "List[int]")


def test_dict_keys_are_checked() -> None:
    """``Dict[str, int]`` rejects a non-string key and says which key."""
    assert TypeValidator.check({1: 2}, "Dict[str, int]") == "key 1: expected str, got int 1"


def test_an_integer_too_long_to_print_is_named_by_its_size() -> None:
    """A key or value past 4300 digits (which Python refuses to print) is described by its
    size: checking it never fails while writing its own message."""
    huge = 10**5000
    assert TypeValidator.check({huge: 2}, "Dict[str, int]") == (
        "key an integer of 16610 bits: expected str, got int an integer of 16610 bits"
    )
    assert TypeValidator.check(huge, "str") == "expected str, got int an integer of 16610 bits"
    with pytest.raises(UsageValidationError) as info:
        compile_schema({"tokens": "int"}).validate({"tokens": 1, huge: 1})
    assert info.value.extra_fields == ["an integer of 16610 bits"]


def test_dict_values_are_checked() -> None:
    """``Dict[str, int]`` rejects a bad value and names its key."""
    message = TypeValidator.check({"a": 1, "b": "x"}, "Dict[str, int]")
    assert message == "value for key 'b': expected int, got str 'x'"


def test_nested_types_report_the_path() -> None:
    """A deep mismatch is reported with every step of the path."""
    type_string = "Optional[List[Dict[str, List[int]]]]"
    assert TypeValidator.is_valid(None, type_string)
    assert TypeValidator.is_valid([{"a": [1, 2]}, {}], type_string)
    message = TypeValidator.check([{"a": [1]}, {"b": [1, "2"]}], type_string)
    assert message == "item 1: value for key 'b': item 1: expected int, got str '2'"


def test_union_names_the_whole_type_when_no_member_fits() -> None:
    """A value matching no member of a union is reported against the union."""
    assert TypeValidator.check(1.5, "Union[int, str]") == "expected Union[int, str], got float 1.5"


def test_lowercase_pep585_forms() -> None:
    """``list[T]``, ``dict[K, V]`` and ``any`` mean the same as their capitalised forms."""
    assert TypeValidator.parse("list[int]") == TypeValidator.parse("List[int]")
    assert TypeValidator.parse("dict[str, any]") == TypeValidator.parse("Dict[str, Any]")
    assert TypeValidator.check(["x"], "list[int]") == "item 0: expected int, got str 'x'"


def test_whitespace_is_tolerated() -> None:
    """Spaces, tabs and newlines between tokens do not matter."""
    assert TypeValidator.parse(" Dict [ str ,\tList[ int ] ]\n") == TypeValidator.parse(
        "Dict[str,List[int]]"
    )


def test_pipe_unions() -> None:
    """``A | B`` is a union, flattened like ``Union``."""
    assert TypeValidator.parse("int | str | None") == TypeValidator.parse("Union[int, str, None]")


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def test_parse_is_cached_and_immutable() -> None:
    """The same string gives the same frozen tree."""
    spec = TypeValidator.parse("Optional[List[Dict[str, int]]]")
    assert TypeValidator.parse("Optional[List[Dict[str, int]]]") is spec
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.kind = "int"  # type: ignore[misc]


def test_parse_renders_canonically() -> None:
    """``str(spec)`` is the canonical spelling; unions are flattened and deduplicated."""
    cases = {
        "list[dict[str,int|None]]": "List[Dict[str, Optional[int]]]",
        "Optional[Optional[int]]": "Optional[int]",
        "Union[int]": "int",
        "Union[int, int, str]": "Union[int, str]",
        "Union[NoneType, int]": "Optional[int]",
        "Union[int, str, None]": "Union[int, str, None]",
        "any": "Any",
    }
    for source, rendered in cases.items():
        assert str(TypeValidator.parse(source)) == rendered


def test_parse_accepts_a_parsed_spec() -> None:
    """Every method also takes a TypeSpec in place of a string."""
    spec = TypeSpec(kind="list", args=(TypeSpec(kind="int"),))
    assert TypeValidator.parse(spec) is spec  # type: ignore[arg-type]
    assert TypeValidator.check(["a"], spec) == "item 0: expected int, got str 'a'"


@pytest.mark.parametrize(
    ("kind", "count"), [("int", 1), ("list", 2), ("dict", 1), ("union", 1), ("none", 1)]
)
def test_hand_built_specs_are_checked(kind: Any, count: int) -> None:
    """A TypeSpec built by hand with the wrong number of parameters is refused."""
    with pytest.raises(SchemaError, match=f"cannot take {count} parameters"):
        TypeSpec(kind=kind, args=(TypeSpec(kind="int"),) * count)


@pytest.mark.parametrize(
    ("type_string", "problem"),
    [
        ("", "empty type string"),
        ("   ", "empty type string"),
        ("integer", "unknown type name 'integer' (did you mean 'int'?) at position 0"),
        ("List[Int]", "unknown type name 'Int' (did you mean 'int'?) at position 5"),
        ("Dict[str]", "Dict takes 2 parameters (key type, value type), got 1 at position 0"),
        ("Dict[str, int, int]", "got 3"),
        ("List[int, str]", "List takes 1 parameter (the item type), got 2"),
        ("Optional", "Optional takes exactly 1 parameter, got 0"),
        ("Optional[int, str]", "Optional takes exactly 1 parameter, got 2"),
        ("Union", "Union takes 1 or more parameters, got 0"),
        ("int[str]", "int takes no parameters, got 1"),
        ("List[int", "expected ',' or ']' to close List[, found the end at end of string"),
        ("List[int]]", "unexpected ']' after a complete type at position 9"),
        ("List[]", "expected a type name, found ']' at position 5"),
        ("List[int,]", "expected a type name, found ']' at position 9"),
        ("int str", "unexpected 'str' after a complete type at position 4"),
        ("int |", "expected a type name, found the end"),
        ("typing.List", "unexpected character '.' at position 6"),
        ("List(int)", "unexpected character '('"),
    ],
)
def test_malformed_strings_raise_schema_error(type_string: str, problem: str) -> None:
    """A malformed type string raises SchemaError naming the string and the problem."""
    with pytest.raises(SchemaError) as info:
        TypeValidator.parse(type_string)
    assert repr(type_string) in str(info.value)
    assert problem in str(info.value)


def test_non_string_type_raises_schema_error() -> None:
    """A type that is not a string is a SchemaError, not a TypeError."""
    with pytest.raises(SchemaError, match="got int 5"):
        TypeValidator.parse(5)  # type: ignore[arg-type]


def test_deep_nesting_is_a_schema_error() -> None:
    """Nesting past the limit raises SchemaError, never RecursionError."""
    depth = MAX_TYPE_DEPTH + 5
    with pytest.raises(SchemaError, match="nested deeper than"):
        TypeValidator.parse("List[" * depth + "int" + "]" * depth)
    ok = MAX_TYPE_DEPTH - 1
    assert TypeValidator.is_valid([[[1]]], "List[" * ok + "int" + "]" * ok) is False


# ---------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------

SCHEMA = {"tokens": "int", "model": "str", "cost": "Optional[float]", "tags": "List[str]"}


def test_valid_usage_passes() -> None:
    """Usage matching the schema validates without error."""
    compile_schema(SCHEMA).validate({"tokens": 3, "model": "m", "cost": 1, "tags": []})


def test_absent_optional_field_is_allowed() -> None:
    """A field whose type admits None may be left out."""
    compile_schema(SCHEMA).validate({"tokens": 3, "model": "m", "tags": ["a"]})


def test_every_problem_is_reported_at_once() -> None:
    """One UsageValidationError lists bad, missing and extra fields together."""
    with pytest.raises(UsageValidationError) as info:
        compile_schema(SCHEMA).validate({"tokens": True, "cost": "x", "tags": [1], "extra": 1})
    error = info.value
    assert error.errors == {
        "tokens": "expected int, got bool True",
        "cost": "expected Optional[float], got str 'x'",
        "tags": "item 0: expected str, got int 1",
    }
    assert error.missing_fields == ["model"]
    assert error.extra_fields == ["extra"]
    for field in ("tokens", "cost", "tags", "model", "extra"):
        assert field in str(error)


def test_usage_validation_error_is_a_value_error() -> None:
    """UsageValidationError is both an AicmError and a ValueError."""
    with pytest.raises(UsageValidationError) as info:
        compile_schema(SCHEMA).validate({})
    assert isinstance(info.value, AicmError)
    assert isinstance(info.value, ValueError)
    assert info.value.missing_fields == ["tokens", "model", "tags"]


def test_allow_extra_accepts_unknown_fields() -> None:
    """With ``allow_extra`` fields outside the schema are accepted."""
    schema = compile_schema({"tokens": "int"}, allow_extra=True)
    schema.validate({"tokens": 1, "whatever": object()})
    attrs.evolve(compile_schema({"tokens": "int"}), allow_extra=True).validate(
        {"tokens": 1, "x": 2}
    )


def test_non_mapping_usage_is_a_validation_error() -> None:
    """Usage that is not a mapping is reported under the ``usage`` key."""
    with pytest.raises(UsageValidationError) as info:
        compile_schema(SCHEMA).validate([1, 2])  # type: ignore[arg-type]
    assert info.value.errors == {"usage": "expected a mapping, got list"}


def test_usage_may_be_any_mapping() -> None:
    """``validate`` accepts any Mapping, not just dict."""
    compile_schema({"a": "int"}).validate(_ReadOnlyMapping({"a": 1}))


def test_nested_fields_form() -> None:
    """The ``{"fields": {...}}`` form accepts type strings and ``{"type", "required"}``."""
    schema = compile_schema(
        {
            "version": 2,
            "fields": {
                "tokens": "int",
                "note": {"type": "Optional[str]", "required": True},
                "seconds": {"type": "float", "required": False},
                "label": {"type": "str"},
            },
        }
    )
    assert schema.field_names == ("tokens", "note", "seconds", "label")
    schema.validate({"tokens": 1, "note": None, "label": "x"})
    with pytest.raises(UsageValidationError) as info:
        schema.validate({"seconds": "slow"})
    assert info.value.missing_fields == ["tokens", "note", "label"]
    assert info.value.errors == {"seconds": "expected float, got str 'slow'"}


def test_field_named_fields_in_flat_form() -> None:
    """A flat schema may have a field called ``fields`` when its type is a string."""
    compile_schema({"fields": "List[str]"}).validate({"fields": ["a"]})


def test_non_string_type_names_the_field() -> None:
    """A field whose type is not a string raises SchemaError naming the field."""
    with pytest.raises(SchemaError, match="field 'tokens': the type must be a string, got int 5"):
        compile_schema({"tokens": 5})


def test_unknown_type_name_names_the_field() -> None:
    """An unknown type name raises SchemaError naming the field and the name."""
    with pytest.raises(SchemaError) as info:
        compile_schema({"tokens": "integer"})
    assert "field 'tokens'" in str(info.value)
    assert "unknown type name 'integer'" in str(info.value)


def test_every_bad_field_is_in_one_schema_error() -> None:
    """All broken fields of a schema are reported together."""
    with pytest.raises(SchemaError) as info:
        compile_schema(
            {
                "fields": {
                    "a": None,
                    "b": "Dict[str]",
                    "c": {"required": True},
                    "d": {"type": "int", "required": "yes"},
                    "ok": "int",
                }
            }
        )
    message = str(info.value)
    for field in ("'a'", "'b'", "'c'", "'d'"):
        assert f"field {field}" in message
    assert "'ok'" not in message


def test_non_string_field_name_is_a_schema_error() -> None:
    """Field names must be strings."""
    with pytest.raises(SchemaError, match="field names must be strings"):
        compile_schema({1: "int"})  # type: ignore[dict-item]


def test_non_mapping_schema_is_a_schema_error() -> None:
    """A schema that is not a mapping is a SchemaError."""
    with pytest.raises(SchemaError, match="must be a mapping"):
        compile_schema(["int"])  # type: ignore[arg-type]


def test_duplicate_fields_are_a_schema_error() -> None:
    """A hand-built UsageSchema cannot name a field twice."""
    field = SchemaField(name="a", type_spec=TypeValidator.parse("int"), required=True)
    with pytest.raises(SchemaError, match="duplicate"):
        UsageSchema(fields=(field, field))


def test_compile_schema_is_cached() -> None:
    """Compiling an equal plain schema twice gives the same object."""
    assert compile_schema({"a": "int", "b": "str"}) is compile_schema({"a": "int", "b": "str"})
    assert compile_schema({"a": "int"}) is not compile_schema({"a": "int"}, allow_extra=True)


def test_cache_does_not_confuse_true_with_one() -> None:
    """``required: 1`` is rejected even after ``required: True`` was compiled."""
    compile_schema({"fields": {"a": {"type": "int", "required": True}}})
    with pytest.raises(SchemaError, match='"required" must be true or false'):
        compile_schema({"fields": {"a": {"type": "int", "required": 1}}})


def test_unhashable_schema_still_compiles() -> None:
    """A schema holding values the cache cannot key on is compiled without the cache."""
    schema = compile_schema({"fields": {"a": {"type": "int", "meta": {1, 2}}}})
    schema.validate({"a": 1})


# ---------------------------------------------------------------------------
# Property-based tests: a test-side type model, renderer and reference checker
# ---------------------------------------------------------------------------

# A tree is a tuple: ("int",) ... ("any",), ("none",), ("List", t), ("Dict", k, v),
# ("Optional", t), ("Union", (t, ...)). Bare "list" and "dict" mean any contents.
Tree = tuple[Any, ...]

LEAF_KINDS = ["int", "float", "str", "bool", "list", "dict", "tuple", "set", "any", "none"]
SPELLINGS = {
    "int": ["int"],
    "float": ["float"],
    "str": ["str"],
    "bool": ["bool"],
    "list": ["list", "List"],
    "dict": ["dict", "Dict"],
    "tuple": ["tuple"],
    "set": ["set"],
    "any": ["Any", "any"],
    "none": ["None", "NoneType"],
}
KEY_LEAVES: list[Tree] = [("str",), ("int",), ("bool",), ("float",), ("any",), ("none",)]

leaves = st.sampled_from([(kind,) for kind in LEAF_KINDS])
key_trees = st.one_of(
    st.sampled_from(KEY_LEAVES), st.sampled_from(KEY_LEAVES).map(lambda t: ("Optional", t))
)
trees: st.SearchStrategy[Tree] = st.recursive(
    leaves,
    lambda children: st.one_of(
        children.map(lambda t: ("List", t)),
        st.tuples(key_trees, children).map(lambda kv: ("Dict", kv[0], kv[1])),
        children.map(lambda t: ("Optional", t)),
        st.lists(children, min_size=1, max_size=3).map(lambda ms: ("Union", tuple(ms))),
    ),
    max_leaves=8,
)


def reference_ok(tree: Tree, value: object) -> bool:
    """The rules, restated independently of the validator."""
    kind = tree[0]
    if kind == "any":
        return True
    if kind == "none":
        return value is None
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list)
    if kind == "tuple":
        return isinstance(value, (tuple, list))
    if kind == "set":
        return isinstance(value, (set, frozenset, list))
    if kind == "dict":
        return isinstance(value, Mapping)
    if kind == "List":
        return isinstance(value, list) and all(reference_ok(tree[1], item) for item in value)
    if kind == "Dict":
        return isinstance(value, Mapping) and all(
            reference_ok(tree[1], k) and reference_ok(tree[2], v) for k, v in value.items()
        )
    if kind == "Optional":
        return value is None or reference_ok(tree[1], value)
    if kind == "Union":
        return any(reference_ok(member, value) for member in tree[1])
    raise AssertionError(kind)


spaces = st.sampled_from(["", " ", "  "])


@functools.cache
def rendered(tree: Tree) -> st.SearchStrategy[str]:
    """Every spelling of ``tree`` the language allows: case variants, pipes, spacing."""
    kind = tree[0]
    if kind in SPELLINGS:
        return st.sampled_from(SPELLINGS[kind])
    if kind == "List":
        return st.tuples(st.sampled_from(["List", "list"]), spaces, rendered(tree[1])).map(
            lambda p: f"{p[0]}[{p[1]}{p[2]}{p[1]}]"
        )
    if kind == "Dict":
        return st.tuples(
            st.sampled_from(["Dict", "dict"]), spaces, rendered(tree[1]), rendered(tree[2])
        ).map(lambda p: f"{p[0]}[{p[2]},{p[1]}{p[3]}]")
    if kind == "Optional":
        inner = rendered(tree[1])
        return st.one_of(
            inner.map(lambda s: f"Optional[{s}]"),
            inner.map(lambda s: f"Union[{s}, None]"),
            inner.map(lambda s: f"{s} | None"),
            inner.map(lambda s: f"NoneType|{s}"),
        )
    members = st.tuples(*(rendered(member) for member in tree[1]))
    return st.one_of(
        members.map(lambda ms: "Union[" + ", ".join(ms) + "]"),
        members.map(" | ".join),
    )


hashables = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.text(max_size=2),
)
any_values = st.recursive(
    hashables | st.just(ALIEN),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(hashables, children, max_size=3),
        st.dictionaries(st.text(max_size=2), children, max_size=2).map(MappingProxyType),
        st.frozensets(st.integers(0, 3), max_size=3),
        st.sets(st.text(max_size=1), max_size=2),
    ),
    max_leaves=6,
)


@functools.cache
def keys_for(tree: Tree, noisy: bool) -> st.SearchStrategy[Any]:
    """Hashable values for a Dict key type (matching when the type allows it)."""
    kind = tree[0]
    simple = {"int": st.integers(), "str": st.text(max_size=3), "bool": st.booleans()}
    if kind in simple:
        base = simple[kind]
    elif kind == "float":
        base = st.floats(allow_nan=False) | st.integers()
    elif kind == "none":
        base = st.none()
    elif kind == "Optional":
        base = st.none() | keys_for(tree[1], noisy)
    elif kind == "Union":
        base = st.one_of(*(keys_for(member, noisy) for member in tree[1]))
    else:
        base = hashables
    return base | hashables if noisy else base


@functools.cache
def values_for(tree: Tree, noisy: bool) -> st.SearchStrategy[Any]:
    """Values of ``tree``; when ``noisy``, any node may instead be an arbitrary value."""
    kind = tree[0]
    base: st.SearchStrategy[Any]
    if kind == "int":
        base = st.integers()
    elif kind == "float":
        base = st.floats(allow_nan=False) | st.integers()
    elif kind == "str":
        base = st.text(max_size=4)
    elif kind == "bool":
        base = st.booleans()
    elif kind == "list":
        base = st.lists(any_values, max_size=3)
    elif kind == "tuple":
        base = st.lists(any_values, max_size=3).map(tuple) | st.lists(any_values, max_size=3)
    elif kind == "set":
        base = st.sets(hashables, max_size=3) | st.frozensets(hashables, max_size=3)
        base = base | st.lists(any_values, max_size=2)
    elif kind == "dict":
        base = st.dictionaries(hashables, any_values, max_size=3)
    elif kind == "any":
        base = any_values
    elif kind == "none":
        base = st.none()
    elif kind == "List":
        base = st.lists(values_for(tree[1], noisy), max_size=3)
    elif kind == "Dict":
        items = st.dictionaries(keys_for(tree[1], noisy), values_for(tree[2], noisy), max_size=3)
        base = items | items.map(MappingProxyType)
    elif kind == "Optional":
        base = st.none() | values_for(tree[1], noisy)
    else:
        base = st.one_of(*(values_for(member, noisy) for member in tree[1]))
    return base | any_values if noisy else base


@PROPERTY
@given(st.data())
def test_is_valid_agrees_with_reference(data: st.DataObject) -> None:
    """For random type trees and values, the validator's verdict equals the reference's."""
    tree = data.draw(trees, label="tree")
    text = data.draw(rendered(tree), label="type string")
    value = data.draw(values_for(tree, noisy=True), label="value")
    message = TypeValidator.check(value, text)
    assert (message is None) == reference_ok(tree, value)
    assert message is None or message.strip()


@PROPERTY
@given(st.data())
def test_matching_values_are_valid(data: st.DataObject) -> None:
    """Values generated to match a type are accepted by it."""
    tree = data.draw(trees, label="tree")
    text = data.draw(rendered(tree), label="type string")
    value = data.draw(values_for(tree, noisy=False), label="value")
    assert TypeValidator.check(value, text) is None


# The grammar oracle is CPython's own parser (ast) plus the language's names and arities,
# written here without reference to the validator's tokenizer or parser.
ORACLE_BARE: dict[str, Tree] = {
    **{name: (kind,) for kind, names in SPELLINGS.items() for name in names},
}


def oracle_parse(text: str) -> Tree | None:
    """The tree ``text`` denotes, or None if the language rejects it."""
    if re.search(r",\s*\]", text):  # Python allows a trailing comma; the language does not
        return None
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    return _oracle_node(node)


def _oracle_node(node: ast.expr) -> Tree | None:
    if isinstance(node, ast.Constant) and node.value is None:
        return ("none",)
    if isinstance(node, ast.Name):
        return ORACLE_BARE.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _oracle_node(node.left), _oracle_node(node.right)
        return None if left is None or right is None else ("Union", (left, right))
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        params = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        args = [_oracle_node(param) for param in params]
        if any(arg is None for arg in args):
            return None
        name, count = node.value.id, len(args)
        if name in ("List", "list") and count == 1:
            return ("List", args[0])
        if name in ("Dict", "dict") and count == 2:
            return ("Dict", args[0], args[1])
        if name == "Optional" and count == 1:
            return ("Optional", args[0])
        if name == "Union" and count >= 1:
            return ("Union", tuple(args))
    return None


UNKNOWN_NAMES = ["integer", "Str", "Tuple", "Set", "number", "x", "Int", "Type", "list2"]
ALL_NAMES = [*ORACLE_BARE, "Optional", "Union", *UNKNOWN_NAMES]
PIECES = [*ALL_NAMES, "[", "]", ",", "|", " ", ", "]

VALID_ARITIES: dict[str, tuple[int, ...]] = {
    **{name: (0,) for name in ORACLE_BARE},
    **{name: (0, 1) for name in ("List", "list")},
    **{name: (0, 2) for name in ("Dict", "dict")},
    "Optional": (1,),
    "Union": (1, 2, 3),
}


@st.composite
def loose_strings(draw: st.DrawFn, depth: int = 0) -> str:
    """Well-bracketed strings, mostly valid, where one node in three has any arity."""
    name = draw(st.sampled_from(sorted(VALID_ARITIES)))
    if draw(st.integers(0, 2)) > 0:
        count = draw(st.sampled_from(VALID_ARITIES[name]))
    else:
        count = draw(st.integers(0, 3))
    if depth >= 3:
        count = 0
    text = name
    if count:
        args = [draw(loose_strings(depth + 1)) for _ in range(count)]
        text = f"{name}[{', '.join(args)}]"
    if depth < 3 and draw(st.integers(0, 5)) == 0:
        text = f"{text} | {draw(loose_strings(depth + 1))}"
    return text


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """``text`` with one or two edits: a character dropped or inserted, a name swapped, a cut."""
    # "subscript" inserts "[name]", which is how a bare-only name gets a parameter.
    for _ in range(draw(st.integers(1, 2))):
        edit = draw(st.sampled_from(["drop", "insert", "subscript", "rename", "truncate"]))
        at = draw(st.integers(0, len(text)))
        if edit == "drop" and text:
            at = min(at, len(text) - 1)
            text = text[:at] + text[at + 1 :]
        elif edit == "insert":
            text = (
                text[:at] + draw(st.sampled_from(["[", "]", ",", "|", *UNKNOWN_NAMES])) + text[at:]
            )
        elif edit == "subscript":
            text = text[:at] + "[" + draw(st.sampled_from(ALL_NAMES)) + "]" + text[at:]
        elif edit == "rename":
            names = list(re.finditer(r"[A-Za-z_]+", text))
            if names:
                match = draw(st.sampled_from(names))
                new = draw(st.sampled_from([*UNKNOWN_NAMES, "int", "List", "Optional"]))
                text = text[: match.start()] + new + text[match.end() :]
        else:
            text = text[:at]
    return text


def _assert_agrees_with_oracle(data: st.DataObject, text: str) -> None:
    expected = oracle_parse(text)
    if expected is None:
        with pytest.raises(SchemaError):
            TypeValidator.parse(text)
        return
    TypeValidator.parse(text)
    for _ in range(3):
        value = data.draw(values_for(expected, noisy=True), label="value")
        assert TypeValidator.is_valid(value, text) == reference_ok(expected, value)


@PROPERTY
@given(st.data())
def test_mutated_strings_are_rejected_or_mean_what_the_oracle_says(data: st.DataObject) -> None:
    """A mutated type string raises SchemaError, or, if still valid, means what the oracle says."""
    tree = data.draw(trees, label="tree")
    text = data.draw(mutated(data.draw(rendered(tree), label="original")), label="mutated")
    _assert_agrees_with_oracle(data, text)


@PROPERTY
@given(st.data(), st.lists(st.sampled_from(PIECES), max_size=10).map("".join))
def test_random_token_soup_agrees_with_oracle(data: st.DataObject, text: str) -> None:
    """Strings of names and punctuation are accepted exactly when the oracle accepts them."""
    _assert_agrees_with_oracle(data, text)


SAMPLE_VALUES: list[Any] = [None, True, 1, 1.5, "s", [], [1], ["s"], (1,), {1}, {}, {"k": 1}, ALIEN]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_name_takes_exactly_its_arities(name: str) -> None:
    """Each name with 0 to 3 parameters is accepted exactly when the oracle accepts it."""
    for count in range(4):
        text = name if count == 0 else f"{name}[{', '.join(['int', 'str', 'None'][:count])}]"
        expected = oracle_parse(text)
        if expected is None:
            with pytest.raises(SchemaError):
                TypeValidator.parse(text)
            continue
        for value in SAMPLE_VALUES:
            assert TypeValidator.is_valid(value, text) == reference_ok(expected, value), text


@PROPERTY
@given(st.data(), loose_strings())
def test_any_name_with_any_arity_agrees_with_oracle(data: st.DataObject, text: str) -> None:
    """Every name is accepted with exactly the parameter counts the oracle allows."""
    _assert_agrees_with_oracle(data, text)


# Field names avoid "fields" (the nested form's key) and "zz" (the extra field below).
field_names = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
schemas = st.dictionaries(field_names, trees, min_size=1, max_size=5)


@st.composite
def schema_and_usage(draw: st.DrawFn) -> tuple[dict[str, Tree], dict[str, Any], dict[str, Any]]:
    """A random schema (flat or nested form), its trees, and usage generated from it."""
    field_trees = draw(schemas)
    type_strings = {name: draw(rendered(tree)) for name, tree in field_trees.items()}
    schema: dict[str, Any] = type_strings if draw(st.booleans()) else {"fields": type_strings}
    usage = {name: draw(values_for(tree, noisy=False)) for name, tree in field_trees.items()}
    for name, tree in field_trees.items():
        if reference_ok(tree, None) and draw(st.booleans()):
            del usage[name]
    return field_trees, schema, usage


@SCHEMA_PROPERTY
@given(schema_and_usage())
def test_usage_generated_from_a_schema_validates(case: tuple[Any, Any, Any]) -> None:
    """Usage built from a schema's own types passes validation."""
    _, schema, usage = case
    compile_schema(schema).validate(usage)


@SCHEMA_PROPERTY
@given(schema_and_usage(), st.data())
def test_breaking_one_field_names_exactly_that_field(
    case: tuple[Any, Any, Any], data: st.DataObject
) -> None:
    """Replacing one field's value with a wrong one makes the error name that field only."""
    field_trees, schema, usage = case
    victim = data.draw(st.sampled_from(sorted(field_trees)), label="victim")
    assume(not reference_ok(field_trees[victim], ALIEN))
    usage = {**usage, victim: ALIEN}
    with pytest.raises(UsageValidationError) as info:
        compile_schema(schema).validate(usage)
    assert list(info.value.errors) == [victim]
    assert info.value.missing_fields == []
    assert info.value.extra_fields == []
    assert f"{victim}: " in str(info.value)


@SCHEMA_PROPERTY
@given(schema_and_usage(), st.data())
def test_dropping_a_required_field_names_exactly_that_field(
    case: tuple[Any, Any, Any], data: st.DataObject
) -> None:
    """Leaving out a field that does not admit None reports it, and only it, as missing."""
    field_trees, schema, usage = case
    required = sorted(name for name, tree in field_trees.items() if not reference_ok(tree, None))
    assume(required)
    victim = data.draw(st.sampled_from(required), label="victim")
    usage = {name: value for name, value in usage.items() if name != victim}
    with pytest.raises(UsageValidationError) as info:
        compile_schema(schema).validate(usage)
    assert info.value.missing_fields == [victim]
    assert info.value.errors == {}
    assert info.value.extra_fields == []


@SCHEMA_PROPERTY
@given(schema_and_usage())
def test_an_extra_field_is_named_exactly(case: tuple[Any, Any, Any]) -> None:
    """A field outside the schema is reported, and only it, as extra."""
    _, schema, usage = case
    with pytest.raises(UsageValidationError) as info:
        compile_schema(schema).validate({**usage, "zz": 1})
    assert info.value.extra_fields == ["zz"]
    assert info.value.errors == {}
    assert info.value.missing_fields == []
    compile_schema(schema, allow_extra=True).validate({**usage, "zz": 1})
