"""The collector's usage limits (layer 6): what they are, where they are kept, when they trigger.

A limit is an amount in dollars per day or per month (UTC), for one service and/or one
customer (absent: any), and for one API key (absent: any key). It is an ``alert`` or a
``limit``: the collector reports both once the period's priced usage reaches the amount;
what an SDK does with each is its own business. A limit may carry an explicit
``expires_at``: its event then ends at that moment rather than at the end of the period.

Limits live in ``limits.json`` in the collector's data directory, written atomically.
Usage is priced with the price table ``aicm report`` uses (`aicm.cli._pricing`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs

from aicm._core.limits import api_key_id_of
from aicm._core.service_models import LimitTerms
from aicm._core.settings import key_fingerprint
from aicm._core.wire import record_moment
from aicm.cli._pricing import PriceTable, price_usage

__all__ = [
    "LimitBook",
    "LimitError",
    "UsageLimit",
    "UsageRow",
    "api_key_id",
    "period_bounds",
]

PERIODS = ("day", "month")
THRESHOLD_TYPES = ("alert", "limit")
_FILE_NAME = "limits.json"
_FILE_VERSION = 1
# Fields a create or update may hold. The service's own names come first; customer_key
# (for its "client"), service (for "service_key") and api_key_id (for "api_key_uuid")
# are accepted too, as are the collector's own expires_at and limit_message.
_INPUT_FIELDS = frozenset(
    {
        "threshold_type",
        "amount",
        "period",
        "service_key",
        "service",
        "client",
        "customer_key",
        "team_uuid",
        "api_key_uuid",
        "api_key_id",
        "notification_list",
        "active",
        "expires_at",
        "limit_message",
        "limit_context",
    }
)
_ALIASES = {"service": "service_key", "client": "customer_key", "api_key_uuid": "api_key_id"}


class LimitError(ValueError):
    """A usage limit the collector refuses; the message names every field at fault."""


def api_key_id(token: str) -> str:
    """The id of an API key: the part after its last dot, as the service names keys.

    A key without one gets a one-way fingerprint (the one ``aicm`` gives keys in queue
    files), so the key itself never appears in an answer. The SDK computes the same id
    (`aicm._core.limits.api_key_id_of()`): the limits it is sent name its key.
    """
    return api_key_id_of(token) or key_fingerprint(token)


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def period_bounds(period: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The UTC day or month holding ``now``: ``(start, end)``."""
    now = now.astimezone(dt.timezone.utc)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + dt.timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


@attrs.frozen(kw_only=True)
class UsageLimit(LimitTerms):
    """One stored usage limit: its terms, whom it concerns, and until when."""

    service_key: str | None = None
    customer_key: str | None = None
    api_key_id: str | None = None
    notification_list: tuple[str, ...] | None = None
    active: bool = True
    expires_at: str | None = None
    limit_message: str | None = None
    limit_context: str | None = None

    def out(self) -> dict[str, Any]:
        """The limit as the service answers it (``UsageLimitOut``), plus the collector's fields."""
        return {
            "uuid": self.uuid,
            "threshold_type": self.threshold_type,
            "amount": _number(self.amount),
            "period": self.period,
            "service": self.service_key,
            "client": self.customer_key,
            "notification_list": None
            if self.notification_list is None
            else list(self.notification_list),
            "active": self.active,
            "service_key": self.service_key,
            "customer_key": self.customer_key,
            "api_key_id": self.api_key_id,
            "expires_at": self.expires_at,
            "limit_message": self.limit_message,
            "limit_context": self.limit_context,
        }

    def applies_to(self, key_id: str) -> bool:
        """Whether the limit concerns the API key with id ``key_id``."""
        return self.active and (self.api_key_id is None or self.api_key_id == key_id)

    def counts(self, service: str, customer: str | None) -> bool:
        """Whether a record of ``service`` for ``customer`` counts against this limit."""
        return (self.service_key is None or self.service_key == service) and (
            self.customer_key is None or self.customer_key == customer
        )


def _number(amount: Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _optional_text(data: Mapping[str, Any], name: str, problems: list[str]) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        problems.append(f"{name}: expected a non-empty string or null, got {value!r}")
        return None
    return value


def _amount(value: Any, problems: list[str]) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        problems.append(f"amount: expected a number of dollars, got {value!r}")
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        problems.append(f"amount: expected a number of dollars, got {value!r}")
        return None
    if not amount.is_finite() or amount <= 0:
        problems.append(f"amount: must be a positive number of dollars, got {value!r}")
        return None
    return amount


def _expires_at(value: Any, problems: list[str]) -> str | None:
    if value is None:
        return None
    moment = record_moment(value) if isinstance(value, str) else None
    if moment is None:
        problems.append(f"expires_at: expected an ISO-8601 time with an offset, got {value!r}")
        return None
    return _utc(moment)


def build_limit(data: Any, *, base: UsageLimit | None = None) -> UsageLimit:
    """A limit from a create (``base`` None) or a partial update of ``base``.

    Raises `LimitError` naming every problem at once.
    """
    if not isinstance(data, Mapping):
        raise LimitError("a usage limit must be a JSON object")
    problems = [f"{name}: unknown field" for name in data if name not in _INPUT_FIELDS]
    fields: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key)
        target = _ALIASES.get(name, name)
        if target in fields and fields[target] != value:
            problems.append(f"{name}: given twice, with different values")
        fields[target] = value
    current = attrs.asdict(base, recurse=False) if base is not None else {}
    merged = {**current, **{k: v for k, v in fields.items() if k in attrs.fields_dict(UsageLimit)}}
    for name in ("threshold_type", "amount", "period"):
        if base is None and name not in fields:
            problems.append(f"{name}: required")
    threshold = merged.get("threshold_type", "limit")
    if threshold not in THRESHOLD_TYPES:
        problems.append(f"threshold_type: expected 'alert' or 'limit', got {threshold!r}")
    period = merged.get("period", "day")
    if period not in PERIODS:
        problems.append(f"period: expected 'day' or 'month', got {period!r}")
    amount = merged.get("amount")
    if "amount" in fields:
        amount = _amount(fields["amount"], problems)
    texts = {
        name: _optional_text(merged, name, problems)
        for name in ("service_key", "customer_key", "api_key_id", "limit_message", "limit_context")
    }
    active = merged.get("active", True)
    if active is None:
        active = True
    if not isinstance(active, bool):
        problems.append(f"active: expected true or false, got {active!r}")
    notify = merged.get("notification_list")
    if notify is not None and (
        not isinstance(notify, (list, tuple)) or not all(isinstance(n, str) for n in notify)
    ):
        problems.append(f"notification_list: expected a list of strings, got {notify!r}")
    expires = merged.get("expires_at")
    if "expires_at" in fields:
        expires = _expires_at(fields["expires_at"], problems)
    if problems:
        raise LimitError("; ".join(problems))
    assert isinstance(amount, Decimal)
    return UsageLimit(
        uuid=base.uuid if base is not None else str(uuid.uuid4()),
        threshold_type=str(threshold),
        amount=amount,
        period=str(period),
        notification_list=None if notify is None else tuple(notify),
        active=bool(active),
        expires_at=expires,
        **texts,
    )


@attrs.frozen(kw_only=True)
class UsageRow:
    """One stored record, as limits see it: service, customer, when, and its usage."""

    service: str
    customer: str | None
    moment: dt.datetime
    usage: Any


class LimitBook:
    """The usage limits of one collector, kept in ``limits.json`` in its data directory."""

    def __init__(self, directory: str | os.PathLike[str], prices: Callable[[], PriceTable]) -> None:
        self.path = Path(directory) / _FILE_NAME
        #: The price table in force (the collector's, with its custom services), read
        #: when spend is counted.
        self.prices = prices
        self._lock = threading.Lock()
        self._limits: dict[str, UsageLimit] = {}
        # Set once any limit existed: from then on every answer carries a signed list,
        # so an SDK learns when a limit it holds is gone.
        self.ever_had_limits = False
        # When each (limit, period, key) event was first seen triggered.
        self._triggered_at: dict[str, str] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            items = document["limits"] if isinstance(document, dict) else None
            if not isinstance(items, list):
                raise LimitError("expected {'limits': [...]}")
            for item in items:
                uid = item.get("uuid") if isinstance(item, dict) else None
                limit = build_limit({k: v for k, v in item.items() if k != "uuid"})
                if isinstance(uid, str) and uid:
                    limit = attrs.evolve(limit, uuid=uid)
                self._limits[limit.uuid] = limit
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LimitError(f"{self.path}: cannot read the usage limits: {exc}") from exc
        self.ever_had_limits = bool(self._limits)

    def _write(self) -> None:
        items = []
        for limit in self._limits.values():
            data = attrs.asdict(limit, recurse=False)
            data["amount"] = str(limit.amount)
            data["notification_list"] = (
                None if limit.notification_list is None else list(limit.notification_list)
            )
            items.append(data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(
            json.dumps({"version": _FILE_VERSION, "limits": items}, indent=2), encoding="utf-8"
        )
        os.replace(tmp, self.path)

    # -- the service's CRUD ------------------------------------------------------------

    def all(self) -> list[UsageLimit]:
        """Every limit, oldest first."""
        with self._lock:
            return list(self._limits.values())

    def get(self, uid: str) -> UsageLimit | None:
        """The limit ``uid``, or None."""
        with self._lock:
            return self._limits.get(uid)

    def create(self, data: Any) -> UsageLimit:
        """Store a new limit from a create body; `LimitError` if it is not one."""
        limit = build_limit(data)
        with self._lock:
            self._limits[limit.uuid] = limit
            self.ever_had_limits = True
            self._write()
        return limit

    def update(self, uid: str, data: Any) -> UsageLimit | None:
        """Change the given fields of limit ``uid``; None when there is no such limit."""
        with self._lock:
            base = self._limits.get(uid)
            if base is None:
                return None
            limit = build_limit(data, base=base)
            self._limits[uid] = limit
            self._write()
        return limit

    def delete(self, uid: str) -> bool:
        """Remove limit ``uid``; False when there was none."""
        with self._lock:
            if self._limits.pop(uid, None) is None:
                return False
            self._write()
            return True

    def clear(self) -> None:
        """Forget every limit, and that there were any: answers are ``{}`` again."""
        with self._lock:
            self._limits.clear()
            self._triggered_at.clear()
            self.ever_had_limits = False
            if self.path.exists():
                self._write()

    # -- evaluation ----------------------------------------------------------------------

    def spend(self, limit: UsageLimit, rows: Iterable[UsageRow], now: dt.datetime) -> float:
        """Dollars of ``rows`` that count against ``limit`` in its current period."""
        return self._spend(limit, rows, now)[0]

    def _spend(
        self, limit: UsageLimit, rows: Iterable[UsageRow], now: dt.datetime
    ) -> tuple[float, int]:
        """The priced spend against ``limit`` in its period, and how many of its records
        have no price (they add nothing: an unknown price is not $0)."""
        start, end = period_bounds(limit.period, now)
        prices = self.prices()
        costs = []
        unpriced = 0
        for row in rows:
            if start <= row.moment < end and limit.counts(row.service, row.customer):
                price = price_usage(prices, row.service, row.usage)
                if price.priced:
                    costs.append(price.cost)
                else:
                    unpriced += 1
        return math.fsum(costs), unpriced

    def progress(self, rows: list[UsageRow], now: dt.datetime) -> list[dict[str, Any]]:
        """Each limit with its period's ``current_spend`` and ``remaining_amount``, and
        ``unpriced_events``: the records counted by the limit that have no price."""
        out = []
        for limit in self.all():
            spent, unpriced = self._spend(limit, rows, now)
            remaining = max(0.0, float(limit.amount) - spent)
            out.append(
                {
                    **limit.out(),
                    "current_spend": round(spent, 9),
                    "remaining_amount": round(remaining, 9),
                    "unpriced_events": unpriced,
                }
            )
        return out

    def triggered(
        self, key_id: str, rows: list[UsageRow], now: dt.datetime
    ) -> list[dict[str, Any]]:
        """The events of the limits ``key_id``'s usage has reached, as the service's claims
        name them; an event whose ``expires_at`` has passed is left out."""
        events = []
        for limit in self.all():
            if not limit.applies_to(key_id):
                continue
            start, end = period_bounds(limit.period, now)
            expires = limit.expires_at or _utc(end)
            ends = record_moment(expires)
            if ends is not None and ends <= now:
                continue
            # A nano-dollar of slack: sums of float prices land a hair either side.
            if self.spend(limit, rows, now) < float(limit.amount) - 1e-9:
                continue
            event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{limit.uuid}/{start}/{key_id}"))
            with self._lock:
                triggered_at = self._triggered_at.setdefault(event_id, _utc(now))
            events.append(
                {
                    "event_id": event_id,
                    "limit_id": limit.uuid,
                    "threshold_type": limit.threshold_type,
                    "amount": _number(limit.amount),
                    "period": limit.period,
                    "limit_context": limit.limit_context,
                    "limit_message": limit.limit_message,
                    "service_key": limit.service_key,
                    "customer_key": limit.customer_key,
                    "api_key_id": key_id,
                    "triggered_at": triggered_at,
                    "expires_at": expires,
                }
            )
        return events

    def earliest_start(self, now: dt.datetime) -> dt.datetime | None:
        """The start of the longest period any limit looks at (None: no limits)."""
        starts = [period_bounds(limit.period, now)[0] for limit in self.all()]
        return min(starts) if starts else None


def rows_from_records(
    track: Iterable[Mapping[str, Any]], track_usage: Iterable[Mapping[str, Any]]
) -> list[UsageRow]:
    """Stored records of both endpoints as `UsageRow` (those with a readable time).

    A ``/track`` record's service is its ``"vendor::model"`` key (the older record's is
    built from its ``api_id``), a ``/track-usage`` record's its ``service_id``, else its
    ``config_id``; the time is the record's ``timestamp``, else when it arrived.
    """
    from aicm._core.models import vendor_service_key

    rows = []
    for r in track:
        service = str(r["service_key"])
        api_id = r.get("api_id")
        if isinstance(api_id, str):
            service = vendor_service_key(api_id, service)
        moment = _moment(r)
        if moment is not None:
            customer = r.get("client_customer_key", r.get("customer_key"))
            rows.append(
                UsageRow(service=service, customer=customer, moment=moment, usage=r.get("payload"))
            )
    for r in track_usage:
        moment = _moment(r)
        if moment is not None:
            service = str(r.get("service_id") or r.get("config_id") or "")
            rows.append(
                UsageRow(
                    service=service,
                    customer=r.get("client_customer_key"),
                    moment=moment,
                    usage=r.get("usage"),
                )
            )
    return rows


def _moment(record: Mapping[str, Any]) -> dt.datetime | None:
    moment = record_moment(record.get("timestamp"))
    if moment is None:
        with contextlib.suppress(TypeError, ValueError, OverflowError, OSError):
            moment = dt.datetime.fromtimestamp(float(record["received_at"]), dt.timezone.utc)
    return moment
