"""Tracker defaults and anonymisation: a customer key and context for every call, and
sensitive usage fields replaced before a record is built (layer 3, pure).

A tracker holds one `TrackDefaults`. Its `prepare()` runs on a
``track`` call's arguments before the record is built, so an anonymised value never
reaches the queue (memory or file), the log, or the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .._core.exceptions import RecordError, shown
from .._core.jsonplain import to_plain

__all__ = [
    "Anonymizer",
    "SaltedHash",
    "TrackConveniences",
    "TrackDefaults",
    "anonymize",
    "check_anonymize_options",
]

Anonymizer = Callable[[Any], Any]

_salt_lock = threading.Lock()
_process_salt: bytes | None = None


def _salt_of_this_process() -> bytes:
    global _process_salt
    with _salt_lock:
        if _process_salt is None:
            _process_salt = secrets.token_bytes(32)
        return _process_salt


class SaltedHash:
    """The default anonymizer: a value becomes ``"anon:"`` and 32 hex digits of its salted
    HMAC-SHA256, so equal values stay equal (and countable) but cannot be read back.

    Without ``salt`` the salt is random and kept for the life of the process: hashes match
    within a run, not across runs or processes. Give a ``salt`` (kept secret, like a key)
    to have them match everywhere. ``None`` stays ``None``.
    """

    def __init__(self, salt: str | bytes | None = None) -> None:
        if salt is not None and not isinstance(salt, (str, bytes)):
            raise TypeError(f"salt must be str or bytes, got {type(salt).__name__}")
        if isinstance(salt, str):
            salt = salt.encode()
        if salt is not None and len(salt) < 16:
            raise ValueError("salt must be at least 16 bytes: a short salt is guessable")
        self._salt = salt

    def __repr__(self) -> str:
        return "SaltedHash(salt=<configured>)" if self._salt else "SaltedHash()"

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        # The value's canonical JSON: 1 and 1.0, or dicts in another order, hash alike.
        text = json.dumps(to_plain(value, field="anonymized value"), sort_keys=True)
        salt = self._salt if self._salt is not None else _salt_of_this_process()
        digest = hmac.new(salt, text.encode(), hashlib.sha256).hexdigest()
        return f"anon:{digest[:32]}"


_DEFAULT_ANONYMIZER = SaltedHash()


def _fields(fields: Iterable[str] | None, where: str) -> tuple[str, ...]:
    if fields is None:
        return ()
    if isinstance(fields, (str, bytes)):
        raise TypeError(f"{where} takes a list of field paths, not one string: [{fields!r}]")
    out: list[str] = []
    for field in fields:
        if not isinstance(field, str) or not field or "" in field.split("."):
            raise TypeError(
                f"{where}: a field path is a non-empty dotted string, got {shown(field)}"
            )
        out.append(field)
    return tuple(out)


def _anonymizer(anonymizer: Anonymizer | None, where: str) -> Anonymizer:
    if anonymizer is None:
        return _DEFAULT_ANONYMIZER
    if not callable(anonymizer):
        raise TypeError(f"{where} must be callable, got {shown(anonymizer)}")
    return anonymizer


def _replace(value: Any, path: Sequence[str], anywhere: bool, apply: Callable[[Any], Any]) -> Any:
    """``value`` with the field at ``path`` replaced (a copy where it changed).

    Lists are walked item by item; a one-name path (``anywhere``) matches that key at any depth.
    """
    if isinstance(value, Mapping):
        name = path[0]
        out: dict[Any, Any] | None = None
        for key, inner in value.items():
            if key == name and len(path) == 1:
                new = apply(inner)
            elif key == name:
                new = _replace(inner, path[1:], False, apply)
            elif anywhere:
                new = _replace(inner, path, True, apply)
            else:
                continue
            if new is not inner:
                if out is None:
                    out = dict(value)
                out[key] = new
        return value if out is None else out
    if isinstance(value, (list, tuple)):
        items = [_replace(item, path, anywhere, apply) for item in value]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return items
    return value


def anonymize(usage: Any, fields: Iterable[str], anonymizer: Anonymizer) -> Any:
    """``usage`` with each field in ``fields`` replaced by ``anonymizer(value)``.

    ``"user.email"`` addresses ``usage["user"]["email"]``; a path without a dot
    (``"email"``) matches that key at any depth. Missing fields are skipped. The caller's
    objects are never changed.
    """
    for field in fields:

        def apply(value: Any, field: str = field) -> Any:
            try:
                return anonymizer(value)
            except Exception as exc:
                raise RecordError(
                    f"the anonymizer failed: {type(exc).__name__}: {exc}", field=f"usage.{field}"
                ) from exc

        path = field.split(".")
        usage = _replace(usage, path, len(path) == 1, apply)
    return usage


def check_anonymize_options(
    anonymize_fields: Iterable[str] | None, anonymizer: Anonymizer | None, where: str
) -> None:
    """Raise ``TypeError`` now for options a later ``track()`` call would refuse (a stream's
    record is made when it ends, where an error would reach the caller's loop)."""
    _fields(anonymize_fields, f"{where}(anonymize_fields=...)")
    if anonymizer is not None:
        _anonymizer(anonymizer, f"{where}(anonymizer=...)")


_OPTION_NAMES = ("anonymize_fields", "anonymizer")


class TrackDefaults:
    """What a tracker adds to every ``track`` call: a default customer key and context,
    and the usage fields to anonymise (and how)."""

    def __init__(
        self,
        *,
        anonymize_fields: Iterable[str] | None = None,
        anonymizer: Anonymizer | None = None,
    ) -> None:
        self.customer_key: str | None = None
        self.context: dict[str, Any] | None = None
        self.anonymize_fields = _fields(anonymize_fields, "anonymize_fields")
        self.anonymizer = _anonymizer(anonymizer, "anonymizer")
        #: whether any call needs `prepare()` (read on every track's fast path)
        self.active = bool(self.anonymize_fields)

    def copy(self) -> TrackDefaults:
        """An independent copy (a forked child's new tracker keeps the parent's defaults)."""
        twin = TrackDefaults(anonymize_fields=self.anonymize_fields, anonymizer=self.anonymizer)
        twin.customer_key, twin.context = self.customer_key, self.context
        twin._refresh()
        return twin

    def _refresh(self) -> None:
        self.active = bool(
            self.anonymize_fields or self.customer_key is not None or self.context is not None
        )

    def prepare(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], *, usage_at: int
    ) -> tuple[Sequence[Any], Mapping[str, Any]]:
        """A call's arguments with the defaults filled in and its usage anonymised.

        ``usage_at`` is the usage's position among ``args`` (it may come as ``usage=``).
        Per-call ``anonymize_fields`` add to the tracker's; a per-call ``anonymizer``
        replaces its anonymizer for that call.
        """
        if not self.active and not any(name in kwargs for name in _OPTION_NAMES):
            return args, kwargs
        options = dict(kwargs)
        fields = self.anonymize_fields + _fields(
            options.pop("anonymize_fields", None), "track(anonymize_fields=...)"
        )
        anonymizer = options.pop("anonymizer", None)
        if anonymizer is not None:
            anonymizer = _anonymizer(anonymizer, "track(anonymizer=...)")
        else:
            anonymizer = self.anonymizer
        if (
            self.customer_key is not None
            and options.get("customer_key") is None
            and options.get("client_customer_key") is None
        ):
            options["customer_key"] = self.customer_key
        if self.context is not None and options.get("context") is None:
            options["context"] = self.context
        if fields:
            if len(args) > usage_at:
                changed = list(args)
                changed[usage_at] = anonymize(args[usage_at], fields, anonymizer)
                args = changed
            elif "usage" in options:
                options["usage"] = anonymize(options["usage"], fields, anonymizer)
        return args, options


class TrackConveniences:
    """``set_customer_key``, ``set_context``, ``set_anonymize_fields``, ``set_anonymizer``:
    mixed into the trackers, whose calls then get these defaults."""

    track_defaults: TrackDefaults

    def set_customer_key(self, customer_key: str | None) -> None:
        """Send ``customer_key`` with every record whose call names no customer (None: stop)."""
        if customer_key is not None and (not isinstance(customer_key, str) or not customer_key):
            raise RecordError(
                f"must be a non-empty string or None, got {shown(customer_key)}",
                field="customer_key",
            )
        self.track_defaults.customer_key = customer_key
        self.track_defaults._refresh()

    def set_context(self, context: Mapping[str, Any] | None) -> None:
        """Send ``context`` with every record whose call gives none (None: stop).

        The mapping is copied now: changing it later changes nothing.
        """
        if context is not None and not isinstance(context, Mapping):
            raise RecordError(f"context must be a mapping, got {shown(context)}", field="context")
        plain = None if context is None else to_plain(context, field="context")
        self.track_defaults.context = plain  # type: ignore[assignment]  # a mapping in, a dict out
        self.track_defaults._refresh()

    def set_anonymize_fields(self, fields: Iterable[str] | None) -> None:
        """Anonymise these usage fields (dotted paths) in every record from now on."""
        self.track_defaults.anonymize_fields = _fields(fields, "set_anonymize_fields()")
        self.track_defaults._refresh()

    def set_anonymizer(self, anonymizer: Anonymizer | None) -> None:
        """Replace anonymised values with ``anonymizer(value)`` (None: the salted hash)."""
        self.track_defaults.anonymizer = _anonymizer(anonymizer, "set_anonymizer()")
