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
    "DEFAULTS",
    "DeliveryType",
    "OnFull",
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
    """Wait for room (up to ``block_timeout``, then :class:`QueueFullError`)."""
    RAISE = "raise"
    """Raise :class:`QueueFullError` at once."""
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


def _optional_positive_float(name: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    return _positive_float(name, value)


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


def _optional_str(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _str(name, value)


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


@attrs.frozen(kw_only=True)
class _Option:
    default: Any
    convert: Callable[[str, Any], Any]
    env: str | None = None
    ini: bool = True


# The one place every default lives.
_OPTIONS: dict[str, _Option] = {
    "api_key": _Option(default=None, convert=_optional_str, env="AICM_API_KEY", ini=False),
    "api_base": _Option(
        default="https://aicostmanager.com", convert=_api_base, env="AICM_API_BASE"
    ),
    "api_url": _Option(default="/api/v1", convert=_api_url, env="AICM_API_URL"),
    "delivery_type": _Option(default=None, convert=_enum(DeliveryType), env="AICM_DELIVERY_TYPE"),
    "delivery_on_full": _Option(
        default=OnFull.BLOCK, convert=_enum(OnFull), env="AICM_DELIVERY_ON_FULL"
    ),
    "db_path": _Option(default=None, convert=_optional_str, env="AICM_DB_PATH"),
    "log_level": _Option(default=None, convert=_log_level, env="AICM_LOG_LEVEL"),
    "log_file": _Option(default=None, convert=_optional_str, env="AICM_LOG_FILE"),
    "log_bodies": _Option(default=False, convert=_bool, env="AICM_LOG_BODIES"),
    "timeout": _Option(default=10.0, convert=_positive_float, env="AICM_TIMEOUT"),
    "queue_size": _Option(default=10_000, convert=_positive_int, env="AICM_QUEUE_SIZE"),
    "max_batch_size": _Option(default=1000, convert=_positive_int, env="AICM_MAX_BATCH_SIZE"),
    "batch_interval": _Option(default=0.5, convert=_positive_float, env="AICM_BATCH_INTERVAL"),
    "block_timeout": _Option(
        default=None, convert=_optional_positive_float, env="AICM_BLOCK_TIMEOUT"
    ),
    "max_attempts": _Option(default=3, convert=_positive_int, env="AICM_MAX_ATTEMPTS"),
    "max_record_bytes": _Option(
        default=64 * 1024, convert=_positive_int, env="AICM_MAX_RECORD_BYTES"
    ),
    "backoff_base": _Option(default=0.5, convert=_positive_float, env="AICM_BACKOFF_BASE"),
    "backoff_cap": _Option(default=60.0, convert=_positive_float, env="AICM_BACKOFF_CAP"),
    "auth_retry_interval": _Option(
        default=60.0, convert=_positive_float, env="AICM_AUTH_RETRY_INTERVAL"
    ),
    "lease_seconds": _Option(default=60.0, convert=_positive_float, env="AICM_LEASE_SECONDS"),
    "max_age": _Option(default=None, convert=_optional_positive_float, env="AICM_MAX_AGE"),
    "close_timeout": _Option(default=2.0, convert=_positive_float, env="AICM_CLOSE_TIMEOUT"),
    "track_format": _Option(
        default=TrackFormat.CURRENT, convert=_enum(TrackFormat), env="AICM_TRACK_FORMAT"
    ),
}

DEFAULTS: Mapping[str, Any] = {name: opt.default for name, opt in _OPTIONS.items()}
"""Every setting's default value, by name."""


@attrs.frozen(kw_only=True)
class Settings:
    """Resolved settings. Build with :func:`resolve_settings`; the repr never shows the key."""

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
    ini_path: str | None = None

    @property
    def api_root(self) -> str:
        """``api_base`` + ``api_url``: the prefix of every endpoint."""
        return self.api_base + self.api_url

    def require_api_key(self) -> str:
        """Return the API key, or raise :class:`MissingApiKeyError` saying where to set it."""
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
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except IsADirectoryError:
        raise ConfigError("is a directory, not an INI file", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot be read: {exc}", path=str(path)) from exc
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(
            "expected a [section] header first", path=str(path), line=exc.lineno
        ) from exc
    except configparser.ParsingError as exc:
        line = exc.errors[0][0] if exc.errors else None
        raise ConfigError("not a valid INI line", path=str(path), line=line) from exc
    except (configparser.DuplicateOptionError, configparser.DuplicateSectionError) as exc:
        raise ConfigError(str(exc.message), path=str(path), line=exc.lineno) from exc
    except configparser.Error as exc:
        raise ConfigError(str(exc), path=str(path)) from exc
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
    :func:`default_ini_path`; a missing file is fine, a malformed one raises
    :class:`ConfigError` naming the file and line.
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
        elif opt.env is not None and env.get(opt.env, "") != "":
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
