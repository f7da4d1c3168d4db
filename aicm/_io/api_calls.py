"""How a management API method is declared, and the descriptors that run it (layer 2).

A method of `ServiceApiMethods` is a function returning a `Call` (method, path, arguments,
how to read the answer); `Api` and `PagesApi` turn it into the coroutine function (or async
iterator) callers use, and the sync client builds its twins from the same declarations.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload
from urllib.parse import quote, urlencode

import attrs

from .._core.exceptions import UnexpectedAnswerError
from .._core.jsonplain import dumps, to_plain
from .._core.service_models import Page, structure_answer, structure_page

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "Api",
    "Call",
    "DateLike",
    "Declared",
    "PagesApi",
    "Reader",
    "Sender",
    "document",
    "get",
    "items",
    "model",
    "nothing",
    "page",
]

_T = TypeVar("_T")
_R = TypeVar("_R")
_P = ParamSpec("_P")
_M = TypeVar("_M")
# A declaration's ``**filters: Unpack[Name]`` (annotations are strings here).
_UNPACK = re.compile(r"Unpack\[(\w+)\]")

DateLike = dt.date | str
"""A date filter: a `datetime.date` (or datetime) or an ISO-8601 string."""

FilterValue = str | int | bool | dt.date | Iterable[str] | None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"  # the service's (Python's) spelling
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _query(filters: Mapping[str, FilterValue]) -> str:
    """Filters as a query string: None left out, a list as repeated keys, booleans
    as ``True`` / ``False``."""
    pairs: list[tuple[str, str]] = []
    for name, value in filters.items():
        if value is None:
            continue
        if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
            pairs.extend((name, _query_value(v)) for v in value)
        else:
            pairs.append((name, _query_value(value)))
    return urlencode(pairs)


def _segment(value: str, what: str) -> str:
    """An id as one path segment (a ``/`` or ``..`` in it cannot reach another endpoint)."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a non-empty string, got {type(value).__name__}")
    return quote(value, safe="")


def _field(value: Any) -> Any:
    # Money as the exact string, a time as ISO-8601, any other iterable of values as a list.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping, list)):
        return list(value)
    return value


def _body(fields: Mapping[str, Any], what: str) -> bytes:
    plain = to_plain({k: _field(v) for k, v in fields.items() if v is not None}, field=what)
    return dumps(plain).encode()


# -- what a method declares --------------------------------------------------------------------

Reader = Callable[[Any, str], _R]
"""Reads a decoded answer (the second argument names the request, for errors)."""


@attrs.frozen
class Call(Generic[_R]):
    """One request of the management API, as a method declares it.

    ``path`` names its id segments ``{like_this}``, taken from ``arguments`` (the method's
    ``locals()``, so a declaration holds no other variable: it would be sent) and escaped.
    The other arguments that are not None go in the query of a GET or DELETE, in the JSON
    body (``what`` in errors) of a POST or PUT. ``read`` makes the method's result of the
    decoded answer. A POST is sent once (a retry could create a second object).
    """

    method: str
    path: str
    arguments: Mapping[str, Any]
    read: Reader[_R]
    what: str = "body"

    def target(self) -> tuple[str, bytes | None]:
        """The path (with its query) and the body to send."""
        rest = {k: v for k, v in self.arguments.items() if k != "self"}
        segments = {
            name: _segment(rest.pop(name), name)
            for name in list(rest)
            if "{" + name + "}" in self.path
        }
        path = self.path.format(**segments)
        if self.method in ("POST", "PUT"):
            return path, _body(rest, self.what)
        query = _query(rest)
        return (f"{path}?{query}" if query else path), None


def model(cls: type[_T]) -> Reader[_T]:
    """Read an answer as one ``cls``."""
    return lambda data, where: structure_answer(data, cls, where=where)


def items(cls: type[_T]) -> Reader[list[_T]]:
    """Read an answer as a list of ``cls``."""
    many: Any = tuple[cls, ...]  # type: ignore[valid-type]
    return lambda data, where: list(structure_answer(data, many, where=where))


def page(cls: type[_T]) -> Reader[Page[_T]]:
    """Read a paginated answer of ``cls``."""
    return lambda data, where: structure_page(data, cls, where=where)


def document(data: Any, where: str) -> dict[str, Any]:
    """Read an answer as a JSON object, as sent."""
    if not isinstance(data, dict):
        raise UnexpectedAnswerError(f"{where}: expected an object")
    return data


def nothing(data: Any, where: str) -> None:
    """Ignore the answer (a delete's)."""


class Sender(Protocol):
    """What runs a declared call: the async client."""

    async def _send(self, call: Call[_R]) -> _R: ...

    def _iterate(self, page: Page[_T]) -> AsyncIterator[_T]: ...


def _signature(declare: Callable[..., Any]) -> inspect.Signature:
    """A declaration's signature as its method's callers see it: no ``self``, no ``Call``,
    and ``**filters: Unpack[SomeFilters]`` spelled out as its keyword-only parameters."""
    signature = inspect.signature(declare)
    parameters: list[inspect.Parameter] = []
    for parameter in list(signature.parameters.values())[1:]:
        unpacked = _UNPACK.fullmatch(str(parameter.annotation))
        if parameter.kind is not parameter.VAR_KEYWORD or unpacked is None:
            parameters.append(parameter)
            continue
        fields: dict[str, Any] = declare.__globals__[unpacked[1]].__annotations__
        keywords = [  # a TypedDict holds its string annotations as ForwardRefs
            inspect.Parameter(
                name, parameter.KEYWORD_ONLY, default=None, annotation=kind.__forward_arg__
            )
            for name, kind in fields.items()
        ]
        first_keyword = next(
            (i for i, p in enumerate(parameters) if p.kind is p.KEYWORD_ONLY), len(parameters)
        )
        parameters[first_keyword:first_keyword] = keywords
    return signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)


class Declared(Generic[_P, _R, _M]):
    """A method built from its declaration (a function returning a `Call`), with its
    name, signature and docstring; on an instance, the ``_M`` the subclass's `_bind()`
    makes: the async client's method, or the sync client's twin of it."""

    def __init__(self, declare: Callable[Concatenate[Any, _P], Call[_R]]) -> None:
        self.declare = declare
        self.__doc__ = declare.__doc__
        self.signature = _signature(declare)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Self: ...
    @overload
    def __get__(self, instance: Any, owner: type) -> _M: ...
    def __get__(self, instance: Any, owner: type) -> Self | _M:
        if instance is None:
            return self
        method = self._bind(instance)
        functools.update_wrapper(method, self.declare)  # type: ignore[arg-type]
        method.__signature__ = self.signature  # type: ignore[attr-defined]
        return method

    def _bind(self, instance: Any) -> _M:
        raise NotImplementedError


class Api(Declared[_P, _R, Callable[_P, Coroutine[Any, Any, _R]]]):
    """A method of the API from its declaration: on an instance, the coroutine function
    that sends the call and reads the answer."""

    def _bind(self, instance: Sender) -> Callable[_P, Coroutine[Any, Any, _R]]:
        declare = self.declare

        async def method(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            return await instance._send(declare(instance, *args, **kwargs))

        return method


class PagesApi(Declared[_P, Page[_T], Callable[_P, AsyncIterator[_T]]]):
    """An ``iter_*`` method from the declaration of its first page: on an instance, an
    async iterator over every item, fetching the next page as the caller reaches it."""

    def _bind(self, instance: Sender) -> Callable[_P, AsyncIterator[_T]]:
        declare = self.declare

        async def method(*args: _P.args, **kwargs: _P.kwargs) -> AsyncIterator[_T]:
            first = await instance._send(declare(instance, *args, **kwargs))
            async for item in instance._iterate(first):
                yield item

        return method


def get(path: str, arguments: Mapping[str, Any], read: Reader[_R]) -> Call[_R]:
    """A ``GET`` `Call`."""
    return Call("GET", path, arguments, read)
