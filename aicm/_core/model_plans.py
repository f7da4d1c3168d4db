"""Plans that read a pydantic model as its JSON dump gives it, made once per model class
(layer 1, pure): `model_plan()` is None for a model whose dump is not its stored fields.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any, Final, Union, get_args, get_origin

from .jsonplain import _FAST_INT_BITS, _NUMBER_BOUND
from .private_names import is_credential_name

__all__ = ["MAX_CACHE", "MODEL_PLANS", "UNKNOWN", "UNSEEN", "NotFast", "Plan", "model_plan"]

MAX_CACHE: Final = 4096
"""The bound of every per-key cache here, in `.values` and the extractor (REST keys carry ids)."""

UNKNOWN: Final = -(1 << 50)
"""A size bound no sum of real sizes brings back to zero or more: "needs the exact checks"."""

UNSEEN: Final[Any] = object()
"""What `MODEL_PLANS` gives for a class not planned yet."""


class NotFast(Exception):
    """The value needs `to_plain()`'s full treatment (or its error message)."""


def model_plan(t: type[Any]) -> Plan | None:
    """The converter of model ``t`` (see `_compile_plan`), when ``model_dump()`` gives its
    fields as stored (no serializer, encoder, metadata, computed, excluded, aliased or
    credential-named field; each field an int, str, bool, float or model, alone or with
    None); else None."""
    plan: Plan | None = None
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    try:
        decorators = t.__pydantic_decorators__
        if (
            base is not None
            and getattr(t, "model_dump", None) is base.model_dump
            and not getattr(t, "__pydantic_root_model__", False)
            and not t.model_computed_fields
            and not decorators.field_serializers
            and not decorators.model_serializers
            and not t.model_config.get("json_encoders")
        ):
            fields = t.model_fields
            kinds = {name: _declared(info.annotation, base) for name, info in fields.items()}
            if all(
                kinds[name] is not None
                and not info.exclude
                and getattr(info, "exclude_if", None) is None
                and not info.metadata
                and info.alias is None
                and info.serialization_alias is None
                and not is_credential_name(name)
                and name.isascii()
                for name, info in fields.items()
            ):
                plan = _compile_plan(t, [(n, k) for n, k in kinds.items() if k is not None])
    except Exception:  # a model class of a shape not foreseen here: model_dump() it
        plan = None
    if len(MODEL_PLANS) >= MAX_CACHE:
        MODEL_PLANS.clear()
    MODEL_PLANS[t] = plan
    return plan


def _declared(annotation: Any, base: type[Any]) -> type[Any] | None:
    """The scalar type or pydantic model class ``annotation`` names, alone or with None."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    if annotation in (int, str, bool, float):
        return annotation  # type: ignore[no-any-return]
    return annotation if isinstance(annotation, type) and issubclass(annotation, base) else None


# ``(model, depth, dropped) -> (model_dump(mode="json"), size bound)`` of one model class.
Plan = Callable[[Any, int, "list[str] | None"], tuple[dict[str, Any], int]]
MODEL_PLANS: dict[type[Any], Plan | None] = {}


# One field of a planned model, by its declared type: ``v`` is the field's value, not None.
# A value the dump converts or types by its field (a subclass, another type than declared,
# NaN, a model with extra fields or too deep) raises `NotFast`. ``{n}``: the field name's
# literal, ``{k}``: its size, ``{i}``: the index naming its declared type (``T{i}``).
_FIELD_CODE: Final = {
    int: """
    elif type(v) is int:
        out[{n}] = v
        size += {k} + ({number} if -{limit} < v < {limit} else {unknown})""",
    str: """
    elif type(v) is str:
        out[{n}] = v
        size += {k} + (6 * len(v) + 2 if v.isascii() else {unknown})""",
    bool: """
    elif type(v) is bool:
        out[{n}] = v
        size += {k} + {number}""",
    float: """
    elif type(v) is float and v - v == 0.0:
        out[{n}] = v
        size += {k} + {number}""",
}
_MODEL_FIELD_CODE: Final = """
    elif type(v) is T{i}:
        if depth >= 32 or v.__pydantic_extra__:
            raise NotFast
        inner = MODEL_PLANS.get(T{i}, UNSEEN)
        if inner is UNSEEN:
            inner = model_plan(T{i})
        if inner is None:
            raise NotFast
        out[{n}], bound = inner(v, depth + 1, dropped)
        size += {k} + bound"""


def _compile_plan(t: type[Any], fields: list[tuple[str, type[Any]]]) -> Plan:
    """A function that reads model ``t``'s ``fields`` (name, declared type) in order and
    returns what ``model_dump(mode="json")`` gives and its JSON size bound, as
    `_fast_plain()` counts it; with ``dropped``, None fields are left out.

    Generated once per model class, so a call is straight reads of constants: a loop over
    the fields costs twice as much. Field names enter the code as ``repr()`` literals
    (always valid Python), types only as names bound in its namespace (``T0``).
    """
    names: dict[str, Any] = {
        "NotFast": NotFast,
        "MODEL_PLANS": MODEL_PLANS,
        "UNSEEN": UNSEEN,
        "model_plan": model_plan,
    }
    consts = {
        "number": _NUMBER_BOUND,
        "unknown": UNKNOWN,
        "limit": 1 << _FAST_INT_BITS,  # |v| < 2**bits: v.bit_length() <= bits
    }
    lines = ["def plan(value, depth, dropped):", "    fields = value.__dict__", "    out = {}"]
    lines.append("    size = 2")
    lines.append("    try:")
    body = []
    for i, (name, declared) in enumerate(fields):
        names[f"T{i}"] = declared
        n, k = repr(str(name)), 6 * len(name) + 4
        body.append(f"""
    v = fields[{n}]
    if v is None:
        if dropped is None:  # a field the answer left unset: not sent as null when read
            out[{n}] = None
            size += {k} + {_NUMBER_BOUND}""")
        body.append(_FIELD_CODE.get(declared, _MODEL_FIELD_CODE).format(i=i, n=n, k=k, **consts))
        body.append("""
    else:
        raise NotFast""")
    lines.extend("    " + line for line in "".join(body).splitlines() if line)
    lines.append("    except KeyError:  # a field never set (model_construct): the dump decides")
    lines.append("        raise NotFast from None")
    lines.append("    return out, size")
    exec(compile("\n".join(lines), f"<aicm plan of {t.__qualname__}>", "exec"), names)
    plan: Plan = names["plan"]
    return plan
