"""The manual-usage schema's type strings, parsed into `TypeSpec` trees (layer 1, pure).

A type string such as ``"Optional[List[Dict[str, int]]]"`` is tokenized and parsed by a
small recursive-descent parser; nothing is ever ``eval``-ed. ``validator.py`` compiles the
trees into checkers.

Grammar (whitespace allowed between tokens)::

    type    := primary ("|" primary)*
    primary := NAME ("[" type ("," type)* "]")?
"""

from __future__ import annotations

import difflib
import functools
from typing import Final, Literal

import attrs

from .exceptions import SchemaError

__all__ = ["ANY", "MAX_TYPE_DEPTH", "TypeSpec", "parse_type"]

TypeKind = Literal[
    "any", "none", "int", "float", "str", "bool", "list", "dict", "tuple", "set", "union"
]

# Deep enough for any real schema, shallow enough that neither the parser nor a checker
# can hit Python's recursion limit on hostile input.
MAX_TYPE_DEPTH: Final = 64


@attrs.frozen(kw_only=True, cache_hash=True)
class TypeSpec:
    """One node of a parsed type string; ``str(spec)`` renders it canonically.

    ``kind`` is the node type. ``args`` holds the element type of ``List[T]`` (one), the
    key and value types of ``Dict[K, V]`` (two), or the members of a union (two or more);
    it is empty for bare names, so ``list`` and ``dict`` accept any contents.
    ``Optional[T]`` is the union of ``T`` and ``none``.
    """

    kind: TypeKind
    args: tuple[TypeSpec, ...] = ()

    def __attrs_post_init__(self) -> None:
        # Trees are also built by hand; a malformed one would only fail later, deep in a
        # checker, so it is refused here.
        count = len(self.args)
        allowed = {"list": count in (0, 1), "dict": count in (0, 2), "union": count >= 2}
        if not allowed.get(self.kind, count == 0):
            raise SchemaError(f"a {self.kind!r} type cannot take {count} parameters")

    @property
    def admits_none(self) -> bool:
        """Whether ``None`` is a valid value of this type."""
        if self.kind in ("none", "any"):
            return True
        return self.kind == "union" and any(arg.admits_none for arg in self.args)

    def __str__(self) -> str:
        return _render(self)


_BARE_NAMES: Final = {
    "none": "None",
    "any": "Any",
    "int": "int",
    "float": "float",
    "str": "str",
    "bool": "bool",
    "list": "list",
    "dict": "dict",
    "tuple": "tuple",
    "set": "set",
}


def _render(spec: TypeSpec) -> str:
    if not spec.args:
        return _BARE_NAMES[spec.kind]
    inner = [_render(arg) for arg in spec.args]
    if spec.kind == "list":
        return f"List[{inner[0]}]"
    if spec.kind == "dict":
        return f"Dict[{inner[0]}, {inner[1]}]"
    if len(spec.args) == 2 and _NONE in spec.args:
        other = spec.args[0] if spec.args[1] == _NONE else spec.args[1]
        return f"Optional[{_render(other)}]"
    return f"Union[{', '.join(inner)}]"


_NONE: Final = TypeSpec(kind="none")
ANY: Final = TypeSpec(kind="any")
"""The tree of ``Any``: every value has it."""


def _union(members: list[TypeSpec]) -> TypeSpec:
    # Flattened and deduplicated like typing.Union, so ``Optional[Optional[int]]`` and
    # ``Union[int]`` mean what a Python user expects.
    flat: list[TypeSpec] = []
    for member in members:
        for part in member.args if member.kind == "union" else (member,):
            if part not in flat:
                flat.append(part)
    if len(flat) == 1:
        return flat[0]
    return TypeSpec(kind="union", args=tuple(flat))


# ---------------------------------------------------------------------------
# Tokenizer and parser
# ---------------------------------------------------------------------------


@attrs.frozen
class _Token:
    kind: str  # "name", "end", or the punctuation character itself
    text: str
    pos: int


_PUNCTUATION: Final = frozenset("[],|")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in _PUNCTUATION:
            tokens.append(_Token(char, char, i))
            i += 1
        elif char.isalpha() or char == "_":
            start = i
            while i < n and (text[i].isalnum() or text[i] == "_"):
                i += 1
            tokens.append(_Token("name", text[start:i], start))
        else:
            raise _syntax_error(text, f"unexpected character {char!r}", i)
    tokens.append(_Token("end", "", n))
    return tokens


def _syntax_error(text: str, problem: str, pos: int) -> SchemaError:
    where = "at end of string" if pos >= len(text) else f"at position {pos}"
    excerpt = text if len(text) <= 80 else text[:77] + "..."
    return SchemaError(f"invalid type {excerpt!r}: {problem} {where}")


# name -> (kind, parameter counts allowed; None means "one or more")
_NAMES: Final[dict[str, tuple[TypeKind | Literal["optional"], frozenset[int] | None]]] = {
    "int": ("int", frozenset({0})),
    "float": ("float", frozenset({0})),
    "str": ("str", frozenset({0})),
    "bool": ("bool", frozenset({0})),
    "tuple": ("tuple", frozenset({0})),
    "set": ("set", frozenset({0})),
    "None": ("none", frozenset({0})),
    "NoneType": ("none", frozenset({0})),
    "Any": ("any", frozenset({0})),
    "any": ("any", frozenset({0})),
    "list": ("list", frozenset({0, 1})),
    "List": ("list", frozenset({0, 1})),
    "dict": ("dict", frozenset({0, 2})),
    "Dict": ("dict", frozenset({0, 2})),
    "Optional": ("optional", frozenset({1})),
    "Union": ("union", None),
}

_ARITY_HINTS: Final = {
    "list": "takes 1 parameter (the item type)",
    "dict": "takes 2 parameters (key type, value type)",
    "optional": "takes exactly 1 parameter",
    "union": "takes 1 or more parameters",
}


class _Parser:
    """Recursive descent over the token list; one instance per type string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    def parse(self) -> TypeSpec:
        if self.tokens[0].kind == "end":
            raise SchemaError(f"invalid type {self.text!r}: empty type string")
        spec = self._type(depth=1)
        tail = self.tokens[self.index]
        if tail.kind != "end":
            raise self._error(f"unexpected {tail.text!r} after a complete type", tail)
        return spec

    def _type(self, depth: int) -> TypeSpec:
        members = [self._primary(depth)]
        while self.tokens[self.index].kind == "|":
            self.index += 1
            members.append(self._primary(depth))
        return members[0] if len(members) == 1 else _union(members)

    def _primary(self, depth: int) -> TypeSpec:
        token = self.tokens[self.index]
        if token.kind != "name":
            found = "the end" if token.kind == "end" else repr(token.text)
            raise self._error(f"expected a type name, found {found}", token)
        self.index += 1
        entry = _NAMES.get(token.text)
        if entry is None:
            raise self._error(f"unknown type name {token.text!r}{_suggest(token.text)}", token)
        kind, arities = entry
        args: list[TypeSpec] = []
        if self.tokens[self.index].kind == "[":
            if depth >= MAX_TYPE_DEPTH:
                raise self._error(f"types nested deeper than {MAX_TYPE_DEPTH} levels", token)
            self.index += 1
            args.append(self._type(depth + 1))
            while self.tokens[self.index].kind == ",":
                self.index += 1
                args.append(self._type(depth + 1))
            closing = self.tokens[self.index]
            if closing.kind != "]":
                found = "the end" if closing.kind == "end" else repr(closing.text)
                raise self._error(
                    f"expected ',' or ']' to close {token.text}[, found {found}", closing
                )
            self.index += 1
        count = len(args)
        if (count == 0) if arities is None else (count not in arities):
            hint = _ARITY_HINTS.get(kind, "takes no parameters")
            raise self._error(f"{token.text} {hint}, got {count}", token)
        if kind == "optional":
            return _union([args[0], _NONE])
        if kind == "union":
            return _union(args)
        return TypeSpec(kind=kind, args=tuple(args))

    def _error(self, problem: str, token: _Token) -> SchemaError:
        return _syntax_error(self.text, problem, token.pos)


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, _NAMES, n=1, cutoff=0.6)
    lowered = [known for known in _NAMES if known.lower() == name.lower()]
    match = lowered[0] if lowered else (close[0] if close else None)
    return f" (did you mean {match!r}?)" if match else ""


@functools.lru_cache(maxsize=1024)
def parse_type(text: str) -> TypeSpec:
    """The tree of ``text``; [`SchemaError`][aicm.SchemaError] naming the problem if it is
    malformed."""
    return _Parser(text).parse()
