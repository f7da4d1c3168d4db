"""The management API's request side on the collector (layer 6): query parameters, pages,
bodies and their field checks, and the objects kept as given (customers, webhooks, custom
services) in the collector's store.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from aicm._core.jsonplain import dumps_bytes, loads
from aicm.collector._logic import Answer

if TYPE_CHECKING:
    from aicm.collector._store import RecordStore

__all__ = ["ApiError", "ApiObjects", "answer_response", "json_response"]

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def json_response(data: Any, status_code: int = 200) -> Response:
    """``data`` as a JSON answer (None: an empty body, for a 204)."""
    if data is None:
        return Response(status_code=status_code)
    return Response(dumps_bytes(data), status_code=status_code, media_type="application/json")


def answer_response(answer: Answer) -> Response:
    """A ready `Answer` as a Starlette response."""
    return Response(
        answer.body,
        status_code=answer.status_code,
        headers=dict(answer.headers),
        media_type="application/json" if answer.body else None,
    )


class ApiError(Exception):
    """An error answer: ``status_code`` and the ``detail`` the client reads."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


# -- objects kept as given ------------------------------------------------------------------


class ApiObjects:
    """Customers, webhooks and custom services, by uuid, kept in the collector's store (so
    they outlive a restart on the same database file)."""

    def __init__(self, store: RecordStore) -> None:
        # Held across a uniqueness check and the write it allows.
        self._lock = threading.Lock()
        self._store = store

    def all(self, kind: str) -> list[dict[str, Any]]:
        return self._store.objects(kind)

    def get(self, kind: str, key: str, what: str) -> dict[str, Any]:
        for found in self._store.objects(kind):
            if found.get("uuid") == key:
                return found
        raise ApiError(404, f"no {what} {key!r}")

    def put(
        self, kind: str, key: str, value: dict[str, Any], unique: tuple[str, str] | None = None
    ) -> None:
        with self._lock:
            if unique is not None:
                field, what = unique
                for other in self._store.objects(kind):
                    if other.get("uuid") != key and other.get(field) == value.get(field):
                        raise ApiError(400, f"a {what} with {field} {value.get(field)!r} exists")
            self._store.put_object(kind, key, value)

    def delete(self, kind: str, key: str, what: str) -> None:
        with self._lock:
            if not self._store.delete_object(kind, key):
                raise ApiError(404, f"no {what} {key!r}")


# -- request helpers -----------------------------------------------------------------------


def flag(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ApiError(422, f"{name}: expected True or False, got {value!r}")


def int_param(request: Request, name: str, default: int, *, most: int | None = None) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(422, f"{name}: expected an integer, got {value!r}") from None
    if number < 0 or (name == "limit" and number == 0):
        raise ApiError(422, f"{name}: expected a positive integer, got {value!r}")
    return min(number, most) if most is not None else number


def date_param(request: Request, name: str) -> dt.date | None:
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise ApiError(422, f"{name}: expected a date (YYYY-MM-DD), got {value!r}") from None


def date_window(request: Request) -> Callable[[dt.datetime], bool]:
    """Whether a moment falls on the days ``start_date``..``end_date`` (read, and checked, once)."""
    start, end = date_param(request, "start_date"), date_param(request, "end_date")

    def within(moment: dt.datetime) -> bool:
        day = moment.date()
        return (start is None or day >= start) and (end is None or day <= end)

    return within


def paginate(request: Request, items: Sequence[Any]) -> dict[str, Any]:
    """``{"count", "next", "previous", "results"}`` by ``limit``/``offset``; absolute links."""
    limit = int_param(request, "limit", DEFAULT_PAGE, most=MAX_PAGE)
    offset = int_param(request, "offset", 0)
    url = request.url
    following = None
    if offset + limit < len(items):
        following = str(url.include_query_params(limit=limit, offset=offset + limit))
    preceding = None
    if offset > 0:
        preceding = str(url.include_query_params(limit=limit, offset=max(offset - limit, 0)))
    return {
        "count": len(items),
        "next": following,
        "previous": preceding,
        "results": list(items[offset : offset + limit]),
    }


async def object_body(request: Request) -> dict[str, Any]:
    try:
        data = loads(await request.body())
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    return data


def check_fields(
    data: Mapping[str, Any],
    types: Mapping[str, type | tuple[type, ...]],
    *,
    required: Iterable[str] = (),
) -> None:
    """422 naming every problem: unknown fields, missing required ones, wrong types."""
    problems = [f"{name}: unknown field" for name in data if name not in types]
    problems += [f"{name}: required" for name in required if data.get(name) is None]
    for name, expected in types.items():
        value = data.get(name)
        if value is None:
            continue
        bad_bool = isinstance(value, bool) and expected in (int, (int, float, str))
        if bad_bool or not isinstance(value, expected):
            problems.append(f"{name}: wrong type ({type(value).__name__})")
    if problems:
        raise ApiError(422, "; ".join(problems))


# -- the bodies the endpoints take ----------------------------------------------------------

CUSTOMER_FIELDS: Mapping[str, type] = {
    "customer_key": str,
    "name": str,
    "phone": str,
    "email": str,
}
WEBHOOK_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "url": str,
    "secret": str,
    "active": bool,
    "tolerance": int,
}
CUSTOM_SERVICE_FIELDS: Mapping[str, type] = {
    "custom_service_key": str,
    "configuration": dict,
    "is_active": bool,
}
COST_UNIT_DEFAULTS: Mapping[str, Any] = {
    "per_quantity": 1,
    "min_units": 0,
    "max_units": 10_000_000,
    "currency": "USD",
    "is_active": True,
}
COST_UNIT_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "name": str,
    "cost": (int, float, str),
    "unit": str,
    "per_quantity": int,
    "min_units": int,
    "max_units": int,
    "currency": str,
    "is_active": bool,
}


def matches(wanted: str | None, value: str | None) -> bool:
    return wanted is None or wanted == "" or wanted == value


def is_price(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number >= 0


def cost_units(configuration: Any) -> list[dict[str, Any]]:
    units = configuration.get("cost_units") if isinstance(configuration, Mapping) else None
    if not isinstance(units, list):
        raise ApiError(422, "configuration.cost_units: required, a list of cost units")
    out = []
    for index, unit in enumerate(units):
        if not isinstance(unit, dict):
            raise ApiError(422, f"configuration.cost_units[{index}]: expected an object")
        try:
            check_fields(unit, COST_UNIT_FIELDS, required=("name", "cost", "unit"))
        except ApiError as exc:
            raise ApiError(422, f"configuration.cost_units[{index}]: {exc.detail}") from None
        if not is_price(unit["cost"]):
            raise ApiError(422, f"configuration.cost_units[{index}].cost: expected a number >= 0")
        out.append({**COST_UNIT_DEFAULTS, **unit})
    return out
