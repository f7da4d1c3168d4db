"""The usage limits this process knows, per service and key; shared through a queue file (layer 2).

Every tracker and cost manager of one service and API key reads the same `LimitBook`: an
answer any of them receives updates what all of them enforce. Only a payload whose
signature checks out is adopted (`aicm._core.limits.verify_answer()`); another is ignored
with one WARNING, and what was known before stays in force.

With a persistent queue the book is also kept in a table of the queue's SQLite file, so
processes sharing that file learn a limit within a second (each verifies it itself).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import anyio.to_thread

from .._core.forks import after_fork_in_child
from .._core.limits import (
    LimitsPayloadError,
    LimitsUnavailableError,
    TriggeredLimit,
    api_key_id_of,
    verify_answer,
)
from .._core.settings import Settings

__all__ = ["LimitBook", "SharedLimits", "limit_book"]

logger = logging.getLogger("aicm.limits")

# How often a book sharing a queue file looks at what other processes stored.
POLL_INTERVAL = 1.0
_TABLE = "aicm_triggered_limits"
_NONE = "{}"  # an answer saying no limit is in force
_REMEMBERED = 256  # bad payloads and alert events a book remembers having warned about

_unavailable_warned = False  # once per process (two threads racing may both say it)


def _warn_unavailable(exc: LimitsUnavailableError) -> None:
    global _unavailable_warned
    if _unavailable_warned:
        return
    _unavailable_warned = True
    logger.warning(
        "the service reports usage limits, but they are NOT enforced: %s; install"
        " aicm-sdk[limits] (pyjwt and cryptography)",
        exc.reason,
    )


def _canonical(answer: Mapping[str, object]) -> str:
    return json.dumps(answer, sort_keys=True, separators=(",", ":"), default=str)


class SharedLimits:
    """The last ``triggered_limits`` answer for one service and key, in a queue file.

    One row per (API root, key fingerprint); the raw answer is stored, never the key. The
    table is only created in a file that holds a queue of this aicm's schema.
    """

    def __init__(self, path: Path, *, api_root: str, key_fp: str) -> None:
        self.path = path
        self.api_root = api_root
        self.key_fp = key_fp
        self._failed = False

    def _trouble(self, what: str, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            logger.warning("cannot %s the usage limits in %s: %s", what, self.path, exc)

    def write(self, raw: str, updated_at: float) -> None:
        """Store ``raw`` (an answer's JSON) unless a newer one is there already."""
        if not self.path.exists():
            return  # the queue makes its file; this table never does
        try:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        except sqlite3.Error as exc:
            self._trouble("store", exc)
            return
        from .sqlite.schema import SCHEMA_VERSION  # only a persistent queue shares limits

        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version != SCHEMA_VERSION:
                return  # not (yet) a queue file of ours: nothing is added to it
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_TABLE} (api_root TEXT NOT NULL, key_fp TEXT"
                " NOT NULL, answer TEXT NOT NULL, updated_at REAL NOT NULL,"
                " PRIMARY KEY (api_root, key_fp))"
            )
            conn.execute(
                f"INSERT INTO {_TABLE} (api_root, key_fp, answer, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (api_root, key_fp) DO UPDATE SET"
                " answer = excluded.answer, updated_at = excluded.updated_at"
                " WHERE excluded.updated_at > updated_at",
                (self.api_root, self.key_fp, raw, updated_at),
            )
        except sqlite3.Error as exc:
            self._trouble("store", exc)
        finally:
            conn.close()

    def read(self) -> tuple[str, float] | None:
        """The stored answer and when it was stored, or None."""
        if not self.path.exists():
            return None
        from .sqlite.schema import open_existing  # only a persistent queue shares limits

        try:
            conn = open_existing(self.path, timeout=0.2)
        except sqlite3.Error as exc:
            self._trouble("read", exc)
            return None
        try:
            row = conn.execute(
                f"SELECT answer, updated_at FROM {_TABLE} WHERE api_root = ? AND key_fp = ?",
                (self.api_root, self.key_fp),
            ).fetchone()
        except sqlite3.OperationalError:
            return None  # no table yet (or busy for longer than a poll may wait)
        except sqlite3.Error as exc:
            self._trouble("read", exc)
            return None
        finally:
            conn.close()
        if row is None or not isinstance(row[0], str):
            return None
        return str(row[0]), float(row[1])


class LimitBook:
    """The limits in force for one service and API key; thread-safe."""

    def __init__(
        self, *, api_root: str, key_fp: str, api_key_id: str | None, pinned_key: str | None
    ) -> None:
        self.api_root = api_root
        self.key_fp = key_fp
        self.api_key_id = api_key_id
        self.pinned_key = pinned_key
        self._lock = threading.Lock()
        self._limits: tuple[TriggeredLimit, ...] = ()
        self._raw: str | None = None
        self._updated_at = 0.0
        self._known_key: str | None = None
        #: time.monotonic() when the service last said anything about limits (or was asked).
        self.heard_at = time.monotonic()
        # time.monotonic() when this process last asked the service or was told its limits.
        self._fetched_at: float | None = None
        self._shared: SharedLimits | None = None
        self._polled = 0.0
        self._bad: dict[str, None] = {}
        self._alerted: dict[str, None] = {}

    def __repr__(self) -> str:
        return f"LimitBook(api_root={self.api_root!r}, limits={len(self._limits)})"

    @property
    def limits(self) -> tuple[TriggeredLimit, ...]:
        """Every limit adopted so far (expired ones included: callers pass the time)."""
        shared = self._shared
        if shared is not None and time.monotonic() - self._polled >= POLL_INTERVAL:
            self._poll(shared)
        return self._limits

    def share_through(self, path: Path) -> None:
        """Keep this book in the queue file at ``path`` too (persistent queues)."""
        with self._lock:
            if self._shared is None or self._shared.path != path:
                self._shared = SharedLimits(path, api_root=self.api_root, key_fp=self.key_fp)
                self._polled = 0.0

    def note_asked(self) -> None:
        """Note that the service is being asked for its limits now."""
        self.heard_at = self._fetched_at = time.monotonic()

    def claim_start_fetch(self, fresh_for: float) -> bool:
        """True when a starting tracker should ask the service for its limits (the book
        then counts as asked); False when it was asked or told, here or through the shared
        queue file, less than ``fresh_for`` s ago."""
        self.limits  # noqa: B018  # a shared queue file is read first
        now = time.monotonic()
        with self._lock:
            if self._fetched_at is not None and now - self._fetched_at < fresh_for:
                return False
            if time.time() - self._updated_at < fresh_for:
                return False
            self._fetched_at = now
            return True

    def absorb(self, answer: object) -> str | None:
        """Adopt a ``triggered_limits`` answer if its signature checks out; its JSON when
        that changed the limits in force (to share), else None.

        ``{}`` (no limit in force) is believed only without a pinned key: unsigned, it could
        come from anyone. An answer without a ``public_key`` is checked with the last key
        that verified one (the service may send it only with ``GET /triggered-limits``).
        """
        self.heard_at = time.monotonic()
        if answer is None:
            return None
        self._fetched_at = self.heard_at
        if not isinstance(answer, Mapping):
            self._reject(repr(answer)[:200], f"it is {type(answer).__name__}, not an object")
            return None
        if not answer:
            return _NONE if self._clear(time.time()) else None
        if not answer.get("public_key") and self._known_key is not None:
            answer = {**answer, "public_key": self._known_key}
        raw = _canonical(answer)
        if raw == self._raw:
            return None
        return raw if self._adopt(raw, answer, time.time()) else None

    async def aabsorb(self, answer: object) -> None:
        """`absorb()`, then store what was adopted in the shared queue file, if any."""
        raw, shared = self.absorb(answer), self._shared
        if raw is not None and shared is not None:
            await anyio.to_thread.run_sync(shared.write, raw, self._updated_at)

    def absorb_blocking(self, answer: object) -> None:
        """`aabsorb()` from a plain thread (the write, if any, in this thread)."""
        raw, shared = self.absorb(answer), self._shared
        if raw is not None and shared is not None:
            shared.write(raw, self._updated_at)

    def _adopt(self, raw: str, answer: Mapping[str, object], updated_at: float) -> bool:
        """Verify and adopt; True when the limits in force changed."""
        try:
            verified = verify_answer(answer, pinned_key=self.pinned_key)
        except LimitsUnavailableError as exc:
            _warn_unavailable(exc)
            return False
        except LimitsPayloadError as exc:
            self._reject(raw, exc.reason)
            return False
        alerts: list[TriggeredLimit] = []
        # The last answer wins, whatever its iat: a service may answer with a token it
        # signed earlier for the same list (the collector keeps them), and that list is
        # as current as any.
        with self._lock:
            changed = verified.limits != self._limits
            key = answer.get("public_key")
            if self.pinned_key is None and isinstance(key, str):
                self._known_key = key
            self._limits = verified.limits
            self._raw = raw
            self._updated_at = updated_at
            for limit in verified.limits:
                if limit.hard or limit.event_id in self._alerted:
                    continue
                if limit.api_key_id is not None and self.api_key_id not in (
                    None,
                    limit.api_key_id,
                ):
                    continue
                self._remember(self._alerted, limit.event_id)
                alerts.append(limit)
        for limit in alerts:
            logger.warning("usage alert from the service: %s", limit.describe())
        logger.debug("%d triggered limit(s) in force for %s", len(verified.limits), self.api_root)
        return changed

    def _clear(self, updated_at: float) -> bool:
        """Believe an unsigned "no limits" (never with a pinned key); True if any were."""
        if self.pinned_key is not None:
            return False
        with self._lock:
            had = bool(self._limits)
            self._limits = ()
            self._raw = _NONE
            self._updated_at = updated_at
        return had

    def _reject(self, raw: str, reason: str) -> None:
        with self._lock:
            if raw in self._bad:
                return
            self._remember(self._bad, raw)
        logger.warning(
            "ignored a triggered_limits payload from %s that could not be verified (%s);"
            " the limits known before stay in force",
            self.api_root,
            reason,
        )

    @staticmethod
    def _remember(seen: dict[str, None], key: str) -> None:
        seen[key] = None
        if len(seen) > _REMEMBERED:
            del seen[next(iter(seen))]

    def _poll(self, shared: SharedLimits) -> None:
        self._polled = time.monotonic()
        found = shared.read()
        if found is None:
            return
        raw, updated_at = found
        if raw == self._raw or updated_at <= self._updated_at:
            return
        if raw == _NONE:
            self._clear(updated_at)
            return
        try:
            answer = json.loads(raw)
        except ValueError:
            self._reject(raw, "the shared copy is not JSON")
            return
        if isinstance(answer, Mapping):
            self._adopt(raw, answer, updated_at)


_books: dict[tuple[str, str, str | None], LimitBook] = {}
_books_lock = threading.Lock()


def limit_book(settings: Settings) -> LimitBook:
    """The process's book for ``settings``' service, API key and pinned key."""
    key = (settings.api_root, settings.key_fingerprint, settings.limits_public_key)
    with _books_lock:
        book = _books.get(key)
        if book is None:
            book = _books[key] = LimitBook(
                api_root=settings.api_root,
                key_fp=settings.key_fingerprint,
                api_key_id=api_key_id_of(settings.api_key),
                pinned_key=settings.limits_public_key,
            )
        return book


def _after_fork_in_child() -> None:
    # A lock another thread held at the fork would stay held in the child forever; the
    # limits themselves stay valid there.
    global _books_lock
    _books_lock = threading.Lock()
    for book in _books.values():
        book._lock = threading.Lock()


after_fork_in_child(_after_fork_in_child)
