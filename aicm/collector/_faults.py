"""Fault injection for the collector (layer 6): the ``Faults`` options and the seeded dice."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

__all__ = ["FaultInjector", "Faults", "RequestFaults", "faults_from_mapping", "faults_to_json"]


def _check_rate(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _check_non_negative(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


def _check_error_status(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 400 <= value <= 599:
        raise ValueError(f"{attribute.name} must be an HTTP error status (400-599), got {value!r}")


def _check_reject_status(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not (200 <= value <= 299 or 400 <= value <= 599):
        raise ValueError(f"{attribute.name} must be 2xx, 4xx or 5xx, got {value!r}")


def _check_api_key(_instance: object, attribute: attrs.Attribute[str | None], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{attribute.name} must be a non-empty string or None")


def _to_id_set(values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, str):  # a lone string would become a set of characters
        raise TypeError("reject_response_ids must be a collection of strings, not a string")
    ids = frozenset(values)
    if not all(isinstance(v, str) for v in ids):
        raise TypeError("reject_response_ids must hold strings")
    return ids


def _mask(value: str | None) -> str:
    return "None" if value is None else "'***'"


@attrs.frozen(kw_only=True)
class Faults:
    """What the collector does wrong on purpose; every option defaults to off.

    ``failure_rate`` of requests (0..1) answer ``failure_status`` (with ``Retry-After:
    retry_after`` when set); ``fail_first`` makes the next N requests fail the same way
    first. ``latency`` seconds are added to each request. ``drop_rate`` of requests lose
    their connection mid-answer (the client sees a transport error); with
    ``drop_after_store`` the records are stored before the drop. Records whose
    ``response_id`` is in ``reject_response_ids`` get status ``error``: with a 2xx
    ``reject_status`` the rest of the batch is stored, with any other the whole batch is
    refused with that status. ``require_api_key`` answers 401 to requests without
    ``Authorization: Bearer <that key>``. ``forge_limits`` signs the ``triggered_limits``
    of answers with a throwaway key sent along instead of the collector's own, as a man in
    the middle would: an SDK that pins the collector's key must ignore them.
    ``GET /triggered-limits``, which every tracker sends once as it starts, gets none of the
    failures, drops or latency, and does not count toward ``fail_first``.
    """

    failure_rate: float = attrs.field(default=0.0, converter=float, validator=_check_rate)
    failure_status: int = attrs.field(default=503, validator=_check_error_status)
    retry_after: float | None = attrs.field(default=None, validator=_check_non_negative)
    latency: float = attrs.field(default=0.0, converter=float, validator=_check_non_negative)
    drop_rate: float = attrs.field(default=0.0, converter=float, validator=_check_rate)
    drop_after_store: bool = False
    reject_response_ids: frozenset[str] = attrs.field(default=frozenset(), converter=_to_id_set)
    reject_status: int = attrs.field(default=202, validator=_check_reject_status)
    require_api_key: str | None = attrs.field(default=None, validator=_check_api_key, repr=_mask)
    fail_first: int = attrs.field(default=0, validator=_check_non_negative)
    forge_limits: bool = False


_FIELD_NAMES = frozenset(a.name for a in attrs.fields(Faults))


def faults_from_mapping(data: Mapping[str, Any]) -> Faults:
    """Build ``Faults`` from JSON-like data; unknown or ill-typed fields raise ``ValueError``."""
    unknown = sorted(set(data) - _FIELD_NAMES)
    if unknown:
        raise ValueError(f"unknown fault option(s): {', '.join(unknown)}")
    ints = ("failure_status", "reject_status", "fail_first")
    for name in ints:
        if name in data and (type(data[name]) is not int):
            raise ValueError(f"{name} must be an integer")
    for name in ("drop_after_store", "forge_limits"):
        if name in data and type(data[name]) is not bool:
            raise ValueError(f"{name} must be true or false")
    try:
        return Faults(**data)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc


def faults_to_json(faults: Faults) -> dict[str, Any]:
    """The faults as JSON-ready data, with the API key masked."""
    data = attrs.asdict(faults)
    data["reject_response_ids"] = sorted(faults.reject_response_ids)
    if faults.require_api_key is not None:
        data["require_api_key"] = "***"
    return data


FailureKind = Literal["fail_first", "failure"]


@attrs.frozen(kw_only=True)
class RequestFaults:
    """The faults one request gets: decided once, when it arrives."""

    faults: Faults
    failure: FailureKind | None = None
    drop: bool = False


class FaultInjector:
    """Holds the current ``Faults`` and rolls the dice for each request, thread-safely.

    The random generator is re-seeded whenever the faults change, so a given sequence of
    requests meets the same failures on every run.
    """

    def __init__(self, faults: Faults | None = None, *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._faults = Faults()
        self._rng = random.Random(seed)
        self._fail_first_left = 0
        self.set(faults or Faults())

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._faults

    def set(self, faults: Faults) -> None:
        """Put ``faults`` in force from the next request on; ``fail_first`` counts afresh."""
        if not isinstance(faults, Faults):
            raise TypeError(f"expected Faults, got {type(faults).__name__}")
        with self._lock:
            self._faults = faults
            self._rng = random.Random(self._seed)
            self._fail_first_left = faults.fail_first

    def plan(self) -> RequestFaults:
        """Decide the faults of one arriving request."""
        with self._lock:
            faults = self._faults
            failure: FailureKind | None = None
            if self._fail_first_left > 0:
                self._fail_first_left -= 1
                failure = "fail_first"
            elif faults.failure_rate and self._rng.random() < faults.failure_rate:
                failure = "failure"
            drop = bool(
                failure is None and faults.drop_rate and self._rng.random() < faults.drop_rate
            )
        return RequestFaults(faults=faults, failure=failure, drop=drop)
