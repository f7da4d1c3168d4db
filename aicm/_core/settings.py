"""Every default, and how settings resolve: argument > environment > INI > default (layer 1).

Nothing here writes a file, and the API key is only ever read from an argument or the
``AICM_API_KEY`` environment variable, never from disk.
"""

from __future__ import annotations

import configparser
import enum
import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from .exceptions import ConfigError, MissingApiKeyError, shown

__all__ = [
    "ARGUMENTS",
    "DEFAULTS",
    "OPTIONS",
    "DeliveryType",
    "OnFull",
    "Option",
    "Settings",
    "TrackFormat",
    "default_db_path",
    "default_ini_path",
    "key_fingerprint",
    "resolve_settings",
]

logger = logging.getLogger("aicm")


class DeliveryType(str, enum.Enum):
    """How records travel to the service."""

    IMMEDIATE = "immediate"
    """``track`` sends now and returns the service's verdict (3 attempts)."""
    MEM_QUEUE = "mem_queue"
    """A bounded in-memory queue, delivered in the background in batches."""
    PERSISTENT_QUEUE = "persistent_queue"
    """A durable SQLite queue: a record is on disk before ``track`` returns."""


class OnFull(str, enum.Enum):
    """What ``track`` does when the queue is full."""

    BLOCK = "block"
    """Wait for room (up to ``block_timeout``, then [`QueueFullError`][aicm.QueueFullError])."""
    RAISE = "raise"
    """Raise [`QueueFullError`][aicm.QueueFullError] at once."""
    BACKPRESSURE = "backpressure"
    """Drop the oldest queued record, count it, and call ``on_discard(record)``."""


class TrackFormat(str, enum.Enum):
    """Which ``/track`` record ``Tracker.track(api_id, service_key, usage)`` sends."""

    CURRENT = "current"
    """``{service_key: "vendor::model", response_id, timestamp, payload, customer_key?,
    context?}``: what the service takes since September 2025."""
    LEGACY = "legacy"
    """``{api_id, service_key, response_id, timestamp, payload, client_customer_key?,
    context?}``: the older record, for services that still take it."""


def default_ini_path() -> Path:
    """``$XDG_CONFIG_HOME/aicm/AICM.INI`` (``~/.config/aicm/AICM.INI``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aicm" / "AICM.INI"


def default_db_path() -> Path:
    """``$XDG_CACHE_HOME/aicm/queue.db`` (``~/.cache/aicm/queue.db``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aicm" / "queue.db"


def key_fingerprint(api_key: str) -> str:
    """A short one-way fingerprint of an API key: lets rows name their key without holding it."""
    return hashlib.sha256(b"aicm-key-v1:" + api_key.encode("utf-8")).hexdigest()[:16]


def _positive_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {shown(value)}") from None
    except OverflowError:  # an int beyond any float
        raise ConfigError(f"{name} must be a positive finite number, got {shown(value)}") from None
    if not number > 0 or number != number or number == float("inf"):
        raise ConfigError(f"{name} must be a positive finite number, got {shown(value)}")
    return number


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a float infinity
        raise ConfigError(f"{name} must be a positive integer, got {shown(value)}") from None
    if number <= 0 or (isinstance(value, float) and value != number):
        raise ConfigError(f"{name} must be a positive integer, got {shown(value)}")
    return number


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


_E = TypeVar("_E", bound=enum.Enum)


def _enum(kind: type[_E]) -> Callable[[str, Any], _E]:
    def convert(name: str, value: Any) -> _E:
        if isinstance(value, kind):
            return value
        text = str(value).strip().lower()
        for member in kind:
            if text in (str(member.value), member.name.lower()):
                return member
        choices = ", ".join(str(m.value) for m in kind)
        raise ConfigError(f"{name} must be one of {choices}; got {value!r}")

    return convert


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {type(value).__name__}")
    return value


_V = TypeVar("_V")


def _optional(convert: Callable[[str, Any], _V]) -> Callable[[str, Any], _V | None]:
    """``convert``, taking None or "" (an empty environment variable or INI value) as unset."""

    def optional(name: str, value: Any) -> _V | None:
        return None if value is None or value == "" else convert(name, value)

    return optional


_optional_str = _optional(_str)
_optional_positive_float = _optional(_positive_float)


def _api_base(name: str, value: Any) -> str:
    text = _str(name, value).strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", text):
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    return text


def _api_url(name: str, value: Any) -> str:
    text = _str(name, value).strip()
    if not text:
        return ""
    return "/" + text.strip("/")


def _log_level(name: str, value: Any) -> str:
    text = _str(name, value).strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"{name} must be a logging level name, got {value!r}")
    return text


def _public_key(name: str, value: Any) -> str | None:
    text = _optional_str(name, value)
    if text is None:
        return None
    # An environment variable or INI value often carries the PEM's newlines as "\n".
    text = text.strip().replace("\\n", "\n")
    if not text.startswith("-----BEGIN PUBLIC KEY-----"):
        raise ConfigError(
            f"{name} must be a PEM public key (-----BEGIN PUBLIC KEY-----...), got {text[:60]!r}"
        )
    return text


_FLAG = "`1/0`, `true/false`, `yes/no`, `on/off`"


@attrs.frozen(kw_only=True)
class Option:
    """One setting: its default, how a value is checked, and where it may come from.

    ``OPTIONS`` below is the one list: settings resolution reads it, and
    ``python scripts/options.py`` writes from it the ``Settings`` fields, the classes' keyword
    options (``DeliveryOptions``, ``TrackerOptions``) and the table in docs/settings.md; a test
    fails while any of them is stale.
    """

    name: str
    default: Any
    convert: Callable[[str, Any], Any]
    #: the keyword the classes take (``aicm_api_key``...); None: environment and INI only
    argument: str | None = attrs.field()
    ini: bool = True
    #: the docs table's "default" and "accepts" cells
    shown_default: str
    accepts: str
    #: the ``Settings`` field's type, as Python source (``"float | None"``)
    type_hint: str
    #: the keyword option's type, ``| None`` added; None: ``type_hint`` without ``| None``
    argument_hint: str | None = None
    #: the ``Settings`` field has the option's default (older code builds it without one)
    field_default: bool = False
    #: the ``Settings`` field and its repr hide the value (a key)
    secret: bool = False
    #: only the trackers take the keyword (``TrackerOptions``), not every class
    tracker_only: bool = False

    @argument.default
    def _argument(self) -> str | None:
        return self.name

    @property
    def env(self) -> str:
        """The environment variable: ``AICM_`` and the name in capitals."""
        return "AICM_" + self.name.upper()


#: The ``Settings`` type of an option whose converter says it.
_TYPE_HINTS: Mapping[Callable[[str, Any], Any], str] = {
    _positive_float: "float",
    _positive_int: "int",
    _bool: "bool",
    _optional_str: "str | None",
    _optional_positive_float: "float | None",
    _log_level: "str | None",
    _public_key: "str | None",
    _api_base: "str",
    _api_url: "str",
}


def _option(name: str, default: Any, convert: Callable[[str, Any], Any], **rest: Any) -> Option:
    if convert in _TYPE_HINTS:
        rest.setdefault("type_hint", _TYPE_HINTS[convert])
    if convert is _positive_int:
        rest.setdefault("accepts", "a positive integer")
    return Option(name=name, default=default, convert=convert, **rest)


def _seconds(name: str, default: float, accepts: str = "a positive number", **rest: Any) -> Option:
    """A duration in seconds."""
    shown = f"`{default}` s"
    return _option(name, default, _positive_float, shown_default=shown, accepts=accepts, **rest)


def _no_limit(name: str, unset: str, accepts: str = "a positive number") -> Option:
    """A duration in seconds that is unset (no limit) by default."""
    return _option(name, None, _optional_positive_float, shown_default=unset, accepts=accepts)


def _count(name: str, default: int, **rest: Any) -> Option:
    """A positive integer."""
    return _option(name, default, _positive_int, shown_default=f"`{default}`", **rest)


def _flag(name: str, default: bool, accepts: str = _FLAG, **rest: Any) -> Option:
    """A true/false setting."""
    shown = f"`{str(default).lower()}`"
    return _option(name, default, _bool, shown_default=shown, accepts=accepts, **rest)


# The one place every setting and its default live.
OPTIONS: tuple[Option, ...] = (
    _option(
        "api_key",
        None,
        _optional_str,
        argument="aicm_api_key",
        ini=False,
        shown_default="none",
        accepts="any string",
        secret=True,
    ),
    _option(
        "api_base",
        "https://aicostmanager.com",
        _api_base,
        argument="aicm_api_base",
        shown_default="`https://aicostmanager.com`",
        accepts="an `http://` or `https://` URL; a trailing `/` is dropped",
    ),
    _option(
        "api_url",
        "/api/v1",
        _api_url,
        argument="aicm_api_url",
        shown_default="`/api/v1`",
        accepts="a path; `v1/` becomes `/v1`",
    ),
    _option(
        "delivery_type",
        None,
        _enum(DeliveryType),
        shown_default="per class: `immediate` for `Tracker`, `mem_queue` for `CostManager` "
        "and the REST wrappers",
        accepts="`immediate`, `mem_queue`, `persistent_queue` (any case)",
        type_hint="DeliveryType | None",
        argument_hint="DeliveryType | str",
    ),
    _option(
        "delivery_on_full",
        OnFull.BLOCK,
        _enum(OnFull),
        shown_default="`block`",
        accepts="`block`, `raise`, `backpressure`",
        type_hint="OnFull",
        argument_hint="OnFull | str",
    ),
    _option(
        "db_path",
        None,
        _optional_str,
        shown_default="`$XDG_CACHE_HOME/aicm/queue.db` (`~/.cache/aicm/queue.db`)",
        accepts="a file path (`~` is expanded)",
    ),
    _option(
        "log_level",
        None,
        _log_level,
        shown_default="none (no handler is attached)",
        accepts="`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL` (any case)",
    ),
    _option("log_file", None, _optional_str, shown_default="none", accepts="a file path"),
    _flag("log_bodies", False),
    _seconds(
        "timeout",
        10.0,
        accepts="a positive number: each phase of a request (connect, write, read); a whole "
        "request is bounded by twice it",
    ),
    _count("queue_size", 10_000),
    _count("max_batch_size", 1000),
    _seconds("batch_interval", 0.5),
    _no_limit("block_timeout", "none (wait for room without limit)"),
    _count("max_attempts", 3, argument=None),
    _count("max_record_bytes", 64 * 1024),
    _seconds("backoff_base", 0.5, argument=None),
    _seconds("backoff_cap", 60.0, argument=None),
    _seconds("auth_retry_interval", 60.0, argument=None),
    _seconds(
        "lease_seconds",
        60.0,
        argument=None,
        accepts="a positive number; keep it above twice `timeout` (a warning says so)",
    ),
    _no_limit("max_age", "none (records never expire)", "a positive number of seconds"),
    _seconds("close_timeout", 2.0, argument=None),
    _option(
        "track_format",
        TrackFormat.CURRENT,
        _enum(TrackFormat),
        shown_default="`current`",
        accepts="`current` (the service's `/track` record since September 2025: "
        '`service_key` `"vendor::model"`, `customer_key`) or `legacy` (the older one: '
        "`api_id`, bare `service_key`, `client_customer_key`); see "
        "[the /track record](tracker.md#the-track-record)",
        type_hint="TrackFormat",
        argument_hint="TrackFormat | str",
        field_default=True,
    ),
    _flag(
        "disabled",
        False,
        accepts=_FLAG + "; `true`: aicm records and sends nothing, wrapped clients work "
        "untouched; see [turning aicm off](#turning-aicm-off)",
        field_default=True,
    ),
    # Usage limits the service triggers (docs/limits.md).
    _flag(
        "enforce_limits",
        True,
        accepts=_FLAG + "; `false`: usage limits are reported (one WARNING per event), never "
        "enforced; see [usage limits](limits.md)",
        field_default=True,
    ),
    _option(
        "limits_public_key",
        None,
        _public_key,
        shown_default="none (the key sent with each answer is used)",
        accepts="the service's PEM public key (`\\n` may stand for its line breaks); only "
        "limits it signed are trusted; see "
        "[usage limits](limits.md#where-limits-come-from-and-how-aicm-trusts-them)",
        field_default=True,
        secret=True,
    ),
)

_OPTIONS: Mapping[str, Option] = {option.name: option for option in OPTIONS}

#: The keyword each class takes for a setting -> the setting's name.
ARGUMENTS: Mapping[str, str] = {o.argument: o.name for o in OPTIONS if o.argument is not None}


DEFAULTS: Mapping[str, Any] = {name: opt.default for name, opt in _OPTIONS.items()}
"""Every setting's default value, by name."""


@attrs.frozen(kw_only=True)
class Settings:
    """Resolved settings. Build with [`resolve_settings()`][aicm.resolve_settings]; the repr never
    shows the key."""

    # BEGIN generated from OPTIONS by scripts/options.py: do not edit
    api_key: str | None = attrs.field(repr=False)
    api_base: str
    api_url: str
    delivery_type: DeliveryType | None
    delivery_on_full: OnFull
    db_path: str | None
    log_level: str | None
    log_file: str | None
    log_bodies: bool
    timeout: float
    queue_size: int
    max_batch_size: int
    batch_interval: float
    block_timeout: float | None
    max_attempts: int
    max_record_bytes: int
    backoff_base: float
    backoff_cap: float
    auth_retry_interval: float
    lease_seconds: float
    max_age: float | None
    close_timeout: float
    track_format: TrackFormat = TrackFormat.CURRENT
    disabled: bool = False
    enforce_limits: bool = True
    limits_public_key: str | None = attrs.field(default=None, repr=False)
    # END generated
    ini_path: str | None = None

    @property
    def api_root(self) -> str:
        """``api_base`` + ``api_url``: the prefix of every endpoint."""
        return self.api_base + self.api_url

    def require_api_key(self) -> str:
        """Return the API key, or raise [`MissingApiKeyError`][aicm.MissingApiKeyError] saying where
        to set it."""
        if not self.api_key:
            raise MissingApiKeyError(
                "no API key: pass aicm_api_key=... or set the AICM_API_KEY environment "
                "variable (the SDK never reads keys from files)"
            )
        return self.api_key

    @property
    def key_fingerprint(self) -> str:
        """A one-way fingerprint of the API key ('' when there is none)."""
        return key_fingerprint(self.api_key) if self.api_key else ""

    @property
    def resolved_db_path(self) -> Path:
        """The SQLite queue path: ``db_path`` or the default under the user's cache dir."""
        return Path(self.db_path).expanduser() if self.db_path else default_db_path()


def _read_ini(path: Path) -> dict[str, tuple[str, int]]:
    """Read the ``[aicm]`` section: name -> (raw value, line). A missing file is empty."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except IsADirectoryError:
        raise ConfigError("is a directory, not an INI file", path=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc}", path=str(path)) from exc
    undecodable: tuple[str, int] | None = None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The decode error holds the file's bytes (in its args and repr): not chained.
        undecodable = (exc.reason, data.count(b"\n", 0, exc.start) + 1)
    if undecodable is not None:
        raise ConfigError(
            f"is not UTF-8 text ({undecodable[0]})", path=str(path), line=undecodable[1]
        )
    parser = configparser.ConfigParser(interpolation=None)
    # configparser's errors quote the offending line, which may hold a credential pasted
    # into the file: only the line number and a fixed message leave here, and the error is
    # raised outside the handler so that neither __cause__ nor __context__ carries it.
    failure: tuple[str, int | None] | None = None
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as exc:
        failure = ("expected a [section] header first", exc.lineno)
    except configparser.ParsingError as exc:
        failure = ("not a valid INI line", exc.errors[0][0] if exc.errors else None)
    except configparser.DuplicateOptionError as exc:
        failure = (f"setting {exc.option!r} appears twice in [{exc.section}]", exc.lineno)
    except configparser.DuplicateSectionError as exc:
        failure = (f"section [{exc.section}] appears twice", exc.lineno)
    except configparser.Error as exc:
        failure = (f"not a valid INI file ({type(exc).__name__})", None)
    if failure is not None:
        raise ConfigError(failure[0], path=str(path), line=failure[1])
    section = next((s for s in parser.sections() if s.lower() in ("aicm", "aicostmanager")), None)
    if section is None:
        return {}
    lines = text.splitlines()
    found: dict[str, tuple[str, int]] = {}
    for raw_key, value in parser.items(section):
        key = raw_key.lower()
        name = key[len("aicm_") :] if key.startswith("aicm_") else key
        line = _line_of(lines, section, raw_key)
        opt = _OPTIONS.get(name)
        if opt is None:
            logger.warning("%s:%s: unknown setting %r ignored", path, line, raw_key)
            continue
        if not opt.ini:
            logger.warning(
                "%s:%s: %r ignored: the SDK never reads API keys from files", path, line, raw_key
            )
            continue
        found[name] = (value, line)
    return found


def _line_of(lines: list[str], section: str, key: str) -> int:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*[=:]", re.IGNORECASE)
    current = None
    for number, text in enumerate(lines, start=1):
        header = re.match(r"^\s*\[([^\]]+)\]", text)
        if header:
            current = header.group(1).strip()
        elif current == section and pattern.match(text):
            return number
    return 0


def resolve_settings(
    *,
    ini_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **explicit: Any,
) -> Settings:
    """Resolve every setting: explicit argument > environment > INI file > default.

    ``explicit`` takes setting names (``api_key``, ``api_base``, ``delivery_type``...);
    ``None`` means "not given". The INI file is ``ini_path``, else ``AICM_INI_PATH``, else
    `default_ini_path()`; a missing file is fine, a malformed one raises
    [`ConfigError`][aicm.ConfigError] naming the file and line.
    """
    env = os.environ if environ is None else environ
    unknown = set(explicit) - set(_OPTIONS)
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    chosen_ini = ini_path if ini_path is not None else env.get("AICM_INI_PATH") or None
    ini_file = Path(chosen_ini).expanduser() if chosen_ini else default_ini_path()
    ini = _read_ini(ini_file)
    values: dict[str, Any] = {}
    for name, opt in _OPTIONS.items():
        given = explicit.get(name)
        if given is not None:
            values[name] = opt.convert(name, given)
        elif env.get(opt.env, "") != "":
            values[name] = opt.convert(opt.env, env[opt.env])
        elif name in ini:
            raw, line = ini[name]
            try:
                values[name] = opt.convert(name, raw)
            except ConfigError as exc:
                raise ConfigError(str(exc), path=str(ini_file), line=line) from None
        else:
            values[name] = opt.default
    return Settings(ini_path=str(ini_file), **values)
