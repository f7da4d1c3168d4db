"""The keyword options every tracker, cost manager and wrapper takes, and their resolution
(layer 4).

The settings among them are declared once, in `aicm._core.settings.OPTIONS`; the
``TypedDict`` here is their static type, so that ``mypy`` checks a user's call
(``Tracker(timeout="soon")`` and a misspelled name are type errors). Their lines for those
settings are written from that list by ``python scripts/options.py`` (a test fails while
they are stale); the three options that are not settings (``aicm_ini_path``,
``on_discard``, ``transport``) and the trackers' anonymisation are written by hand.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final, TypedDict

import httpx

from .._core.exceptions import ConfigError
from .._core.models import WireRecord
from .._core.settings import ARGUMENTS, OPTIONS, DeliveryType, OnFull, Settings, TrackFormat
from .._core.settings import resolve_settings as _resolve_settings
from .conveniences import Anonymizer

#: What ``timestamp=`` accepts: a datetime (naive means UTC), an ISO-8601 string, epoch seconds.
Timestamp = dt.datetime | str | int | float

__all__ = [
    "NOT_SETTINGS",
    "Timestamp",
    "DeliveryOptions",
    "LlmTrackOptions",
    "TrackOptions",
    "TrackerOptions",
    "UnknownOptionError",
    "check_option_names",
    "resolve_options",
]


class DeliveryOptions(TypedDict, total=False):
    """The connection and delivery options every tracker, cost manager and wrapper takes.

    ``None`` means "not given": the environment, the INI file and the default decide.
    """

    aicm_ini_path: str | None
    on_discard: Callable[[WireRecord], object] | None
    # BEGIN generated from OPTIONS by scripts/options.py: do not edit
    aicm_api_key: str | None
    aicm_api_base: str | None
    aicm_api_url: str | None
    delivery_type: DeliveryType | str | None
    delivery_on_full: OnFull | str | None
    db_path: str | None
    log_level: str | None
    log_file: str | None
    log_bodies: bool | None
    timeout: float | None
    queue_size: int | None
    max_batch_size: int | None
    batch_interval: float | None
    block_timeout: float | None
    max_record_bytes: int | None
    max_age: float | None
    track_format: TrackFormat | str | None
    disabled: bool | None
    enforce_limits: bool | None
    limits_public_key: str | None
    # END generated
    transport: httpx.AsyncBaseTransport | None


class TrackerOptions(DeliveryOptions, total=False):
    """`DeliveryOptions`, and the anonymisation every ``track`` call of a tracker gets."""

    # BEGIN generated from OPTIONS by scripts/options.py: do not edit
    # END generated

    anonymize_fields: Iterable[str] | None
    anonymizer: Anonymizer | None


class TrackOptions(TypedDict, total=False):
    """What one ``track`` call of a tracker takes besides its usage (all keyword-only)."""

    client_customer_key: str | None
    customer_key: str | None
    context: Mapping[str, Any] | None
    response_id: str | None
    timestamp: Timestamp | None
    anonymize_fields: Iterable[str] | None
    anonymizer: Anonymizer | None


class LlmTrackOptions(TypedDict, total=False):
    """What ``track_llm_usage`` and ``track_llm_stream_usage`` take besides the answer."""

    response_id: str | None
    timestamp: Timestamp | None
    customer_key: str | None
    context: Mapping[str, Any] | None
    anonymize_fields: Iterable[str] | None
    anonymizer: Anonymizer | None


#: Options that are not settings: what the object is built with.
NOT_SETTINGS: Final = frozenset({"aicm_ini_path", "on_discard", "transport"})
#: Options only the trackers take: their anonymisation and any setting declared tracker-only.
_TRACKER_ONLY: Final = frozenset({"anonymize_fields", "anonymizer"}) | {
    o.argument for o in OPTIONS if o.tracker_only and o.argument is not None
}
_EVERY_CLASS: Final = (ARGUMENTS.keys() - _TRACKER_ONLY) | NOT_SETTINGS


class UnknownOptionError(ConfigError, TypeError):
    """A keyword option no class takes (a ``TypeError`` too, as Python raises for one)."""


def check_option_names(owner: str, names: Collection[str], *, tracker: bool = False) -> None:
    """Raise `UnknownOptionError` naming ``owner`` for any name that is no option."""
    known = _EVERY_CLASS | (_TRACKER_ONLY if tracker else frozenset())
    unknown = sorted(set(names) - known)
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        if close:
            hints.append(f"{name!r}: did you mean {close[0]!r}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    raise UnknownOptionError(
        f"{owner}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}{hint}"
    )


def resolve_options(
    options: Mapping[str, Any], *, owner: str = "this class", tracker: bool = False
) -> Settings:
    """Check option names and resolve the settings among them (argument > env > INI > default)."""
    check_option_names(owner, options, tracker=tracker)
    values = {ARGUMENTS[k]: v for k, v in options.items() if k in ARGUMENTS and v is not None}
    return _resolve_settings(ini_path=options.get("aicm_ini_path"), **values)
