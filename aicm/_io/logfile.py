"""Attach a log handler to the ``aicm`` logger when a user asks for one (layer 2)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

__all__ = ["configure_logging", "shown_somewhere"]

_lock = threading.Lock()
_files: dict[str, logging.Handler] = {}
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def shown_somewhere(log: logging.Logger) -> bool:
    """Whether something on ``log``'s way up would show its records (not a NullHandler)."""
    current: logging.Logger | None = log
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def _create_private(path: str) -> None:
    """Create the log file readable by its owner only (0600), as the queue file is.

    Records' ids, and with ``log_bodies`` their usage and context, go in it. A file that
    exists already keeps its mode: it is the user's.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def configure_logging(*, log_file: str | None, log_level: str | None) -> None:
    """Set the ``aicm`` logger's level and, once per file, add a file handler.

    A level alone (``AICM_LOG_LEVEL`` with no log file) also shows the logs on stderr,
    unless the application's own logging shows them already. Nothing is attached unless
    asked: by default the library only has a NullHandler.
    """
    root = logging.getLogger("aicm")
    with _lock:
        if log_level is not None:
            root.setLevel(log_level)
        if log_file is None:
            if log_level is not None and not shown_somewhere(root):
                stderr = logging.StreamHandler(sys.stderr)
                stderr.setFormatter(logging.Formatter(_FORMAT))
                root.addHandler(stderr)
            return
        key = str(Path(log_file).expanduser().resolve())
        if key in _files:
            return
        _create_private(key)
        handler = logging.FileHandler(key, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
        _files[key] = handler
